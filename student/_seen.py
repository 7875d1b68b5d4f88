"""Seen (user, item) pairs as sorted int64 keys: vectorised membership and per-user listing.

A two-level structure (a large sorted ``main`` array and a small sorted ``tail`` that is merged
into ``main`` when it grows) keeps inserts amortised O(log n) per pair without a Python loop
over users, and lists a user's items as a contiguous range found with ``searchsorted``.
"""

from __future__ import annotations

import numpy as np

from ._arrays import isin_sorted, unique_sorted

_SHIFT = np.int64(32)
_TAIL_MAX = 16_384


def _keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    return (users.astype(np.int64) << _SHIFT) | items.astype(np.int64)


def _merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge sorted ``b`` (disjoint from ``a``) into sorted ``a``: O(len(a)), no re-sort."""
    if not len(a) or not len(b):
        return b.copy() if not len(a) else a
    return np.insert(a, np.searchsorted(a, b), b)


class SeenPairs:
    """Set of (user index, item index) pairs.

    Examples
    --------
    >>> s = SeenPairs()
    >>> s.add(np.array([0, 0, 1]), np.array([5, 3, 5]))
    >>> s.items_of(0).tolist()
    [3, 5]
    >>> s.contains(np.array([0, 1]), np.array([5, 3])).tolist()
    [True, False]
    """

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
    def from_array(cls, keys: np.ndarray) -> SeenPairs:
        s = cls()
        s._main = unique_sorted(np.asarray(keys, np.int64))
        return s


__all__ = ["SeenPairs"]
