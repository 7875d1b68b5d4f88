"""Seen (user, item) pairs: vectorised inserts, membership and per-user listing.

Two stores behind one interface, :class:`SeenPairs`:

* where the student's C extension is built, an open-addressing hash set with a chain of entries
  per user (``_kernel_seen.c``): O(1) per insert and lookup at any size;
* otherwise sorted int64 keys in two levels (a large sorted ``main`` array and a small sorted
  ``tail`` merged into it when it grows), inserts amortised without a Python loop over users, a
  user's items a contiguous range found with ``searchsorted``. It is also the reference the
  tests hold the hash set to.

Keys are ``user << 32 | item``: users below 2**31, items below 2**32.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._arrays import isin_sorted, unique_sorted
from ._fused import _bounds

_SHIFT = np.int64(32)
_TAIL_MAX = 16_384


def _keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    return (users.astype(np.int64) << _SHIFT) | items.astype(np.int64)


def _merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge sorted ``b`` (disjoint from ``a``) into sorted ``a``: O(len(a)), no re-sort."""
    if not len(a) or not len(b):
        return b.copy() if not len(a) else a
    return np.insert(a, np.searchsorted(a, b), b)


class SortedPairs:
    """Set of (user, item) pairs as sorted keys (the numpy store)."""

    def __init__(self) -> None:
        self._main = np.empty(0, np.int64)
        self._tail = np.empty(0, np.int64)

    def __len__(self) -> int:
        return len(self._main) + len(self._tail)

    def add(self, users: np.ndarray, items: np.ndarray) -> None:
        if len(users) == 0:
            return
        new = unique_sorted(_keys(users, items))
        new = new[~self._contains_keys(new)]
        self._tail = _merge(self._tail, new)
        if len(self._tail) > max(_TAIL_MAX, len(self._main) // 8):
            self._main = _merge(self._main, self._tail)
            self._tail = np.empty(0, np.int64)

    def _contains_keys(self, keys: np.ndarray) -> np.ndarray:
        out = np.zeros(len(keys), bool)
        for level in (self._main, self._tail):
            out |= isin_sorted(keys, level)
        return out

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean mask: which (users[k], items[k]) pairs were seen."""
        return self._contains_keys(_keys(np.asarray(users), np.asarray(items)))

    def pairs_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All seen items of ``users`` as ``(row, item)``: row indexes into ``users``."""
        users = np.asarray(users, np.int64)
        rows_out, items_out = [], []
        for level in (self._main, self._tail):
            if not len(level):
                continue
            lo = np.searchsorted(level, users << _SHIFT)
            hi = np.searchsorted(level, (users + 1) << _SHIFT)
            counts = hi - lo
            total = int(counts.sum())
            if total == 0:
                continue
            rows = np.repeat(np.arange(len(users)), counts)
            # positions lo[r] .. hi[r]-1 for every row, without a Python loop
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            keys = level[np.repeat(lo, counts) + offsets]
            rows_out.append(rows)
            items_out.append((keys & 0xFFFFFFFF).astype(np.int64))
        if not rows_out:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(rows_out), np.concatenate(items_out)

    def items_of(self, user: int) -> np.ndarray:
        _, items = self.pairs_of(np.array([user]))
        return np.sort(items)

    def to_array(self) -> np.ndarray:
        return unique_sorted(np.concatenate([self._main, self._tail]))

    @classmethod
    def from_array(cls, keys: np.ndarray) -> SortedPairs:
        s = cls()
        s._main = unique_sorted(np.asarray(keys, np.int64))
        return s


class _Tables(NamedTuple):
    """The hash set's arrays, swapped as one object so a reader never pairs old and new ones."""

    slots: np.ndarray  # (cap,) a key or -1; cap a power of two, load kept under 1/2
    keys: np.ndarray  # (entries,) user << 32 | item
    next: np.ndarray  # (entries,) the same user's previous entry, -1 = none
    head: np.ndarray  # (users,) the user's last entry, -1 = none
    count: np.ndarray  # (users,) entries of the user


def _grown(a: np.ndarray, n: int, fill: int | None = None) -> np.ndarray:
    if len(a) >= n:
        return a
    out = np.empty(max(n, 2 * len(a)), np.int64) if fill is None else np.full(
        max(n, 2 * len(a)), fill, np.int64
    )
    out[: len(a)] = a
    return out


class HashedPairs:
    """Set of (user, item) pairs in the C hash set (needs the compiled ``_kernel``)."""

    def __init__(self) -> None:
        from ._fused import _kernel

        if _kernel is None:
            raise RuntimeError("HashedPairs needs the compiled student kernel")
        self._k = _kernel
        empty = np.empty(0, np.int64)
        self._t = _Tables(np.full(64, -1, np.int64), np.empty(32, np.int64),
                          np.empty(32, np.int64), empty, empty)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, users: np.ndarray, items: np.ndarray) -> None:
        users, items, max_user = _checked(users, items)
        if len(users) == 0:
            return
        t, need = self._t, self._n + len(users)
        if need > len(t.keys) or 2 * need > len(t.slots) or max_user >= len(t.head):
            keys, nxt = _grown(t.keys, need), _grown(t.next, need)
            cap = len(t.slots)
            while 2 * need > cap:
                cap *= 2
            slots = t.slots
            if cap != len(slots):
                slots = np.empty(cap, np.int64)
                self._k.seen_rehash(slots, keys, self._n)
            n_users = max_user + 1
            t = _Tables(slots, keys, nxt, _grown(t.head, n_users, -1), _grown(t.count, n_users, 0))
            self._t = t  # one assignment: readers see the old tables or the new ones
        self._n += self._k.seen_add(t.slots, t.keys, t.next, t.head, t.count, self._n, users, items)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean mask: which (users[k], items[k]) pairs were seen."""
        users, items, _ = _checked(users, items)
        out = np.zeros(len(users), np.uint8)
        if len(users):
            t = self._t
            self._k.seen_contains(t.slots, t.keys, users, items, out)
        return out.view(bool)

    def pairs_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All seen items of ``users`` as ``(row, item)``: row indexes into ``users``."""
        users = np.asarray(users, np.int64)
        t = self._t
        known = (users >= 0) & (users < len(t.head))
        rows = np.flatnonzero(known)
        total = int(t.count[users[rows]].sum()) if len(rows) else 0
        out_rows, out_items = np.empty(total, np.int64), np.empty(total, np.int64)
        if total:
            self._k.seen_list(t.keys, t.next, t.head, users[rows], out_rows, out_items)
            out_rows = rows[out_rows]
        return out_rows, out_items

    def items_of(self, user: int) -> np.ndarray:
        _, items = self.pairs_of(np.array([user]))
        return np.sort(items)

    def to_array(self) -> np.ndarray:
        return np.sort(self._t.keys[: self._n])

    @classmethod
    def from_array(cls, keys: np.ndarray) -> HashedPairs:
        s = cls()
        keys = np.asarray(keys, np.int64)
        s.add(keys >> _SHIFT, keys & 0xFFFFFFFF)
        return s


def _checked(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The pairs as int64 arrays, checked, and the largest user (-1 for none)."""
    users = np.ascontiguousarray(users, np.int64)
    items = np.ascontiguousarray(items, np.int64)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError(f"seen pairs: users and items must be two 1-d arrays of one length, "
                         f"got shapes {users.shape} and {items.shape}")
    (u_lo, u_hi), (i_lo, i_hi) = _bounds(users), _bounds(items)
    if u_lo < 0 or u_hi >= 2**31 or i_lo < 0 or i_hi >= 2**32:
        raise ValueError("seen pairs: user indices must be in [0, 2**31), items in [0, 2**32)")
    return users, items, u_hi


class SeenPairs:
    """Set of (user index, item index) pairs: the hash set where the C extension is built (and
    ``KDSTREAM_STUDENT_KERNEL`` is not 0), else the sorted store.

    Examples
    --------
    >>> s = SeenPairs()
    >>> s.add(np.array([0, 0, 1]), np.array([5, 3, 5]))
    >>> s.items_of(0).tolist()
    [3, 5]
    >>> s.contains(np.array([0, 1]), np.array([5, 3])).tolist()
    [True, False]
    """

    def __init__(self, store: SortedPairs | HashedPairs | None = None) -> None:
        from ._fused import kernel_available

        if store is None:
            store = HashedPairs() if kernel_available() else SortedPairs()
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def add(self, users: np.ndarray, items: np.ndarray) -> None:
        self.store.add(users, items)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean mask: which (users[k], items[k]) pairs were seen."""
        return self.store.contains(users, items)

    def pairs_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All seen items of ``users`` as ``(row, item)``: row indexes into ``users``."""
        return self.store.pairs_of(users)

    def items_of(self, user: int) -> np.ndarray:
        """The user's seen items, sorted."""
        return self.store.items_of(user)

    def to_array(self) -> np.ndarray:
        """Every pair as a sorted ``user << 32 | item`` key (what ``from_array`` reads)."""
        return self.store.to_array()

    @classmethod
    def from_array(cls, keys: np.ndarray) -> SeenPairs:
        from ._fused import kernel_available

        store = HashedPairs if kernel_available() else SortedPairs
        return cls(store.from_array(keys))


__all__ = ["HashedPairs", "SeenPairs", "SortedPairs"]
