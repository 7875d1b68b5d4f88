"""The item hub: the shared table of learned item offsets that processors push their deltas to
and pull the merged table from (see :mod:`kdstream.stream._processor`, "Item tables" and "Hub
resets"), in process (:class:`LocalItemHub`) or on a store (:class:`StoreItemHub`, Redis).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from kdstream.errors import KdstreamError
from kdstream.online import Vocab


class HubReset(KdstreamError, RuntimeError):
    """A push made on the rows of one table epoch found the hub's table of another (wiped,
    rebuilt or rewritten since, or gone): the hub wrote nothing. Not a :class:`ServiceError`:
    retrying cannot help, the caller's indices must be re-registered first."""


@runtime_checkable
class ItemHub(Protocol):
    """Shared item state of several processors: global ids and additive row deltas."""

    def allocate_ids(self, kind: str, ids: Sequence[str]) -> list[int]:
        """Global index of each id; new ids get the next indices atomically."""
        ...

    def push_item_deltas(self, rows: np.ndarray, deltas: np.ndarray) -> None:
        """Add ``deltas[j]`` to row ``rows[j]`` (rows missing so far start at zero).

        A hub whose table can be deleted and rebuilt under its callers (see
        :meth:`pull_item_offsets_since`) also takes an ``epoch`` keyword: when not ``""``, it
        adds nothing and raises :class:`HubReset` unless its table is of that epoch, checked
        atomically with the write (the caller's indices are of that table).
        """
        ...

    def pull_item_offsets(self) -> tuple[list[str], np.ndarray]:
        """``(ids in index order, (n, width) float32 summed deltas)``."""
        ...

    def pull_item_offsets_since(self, version: int, n_ids: int) -> ItemChanges:
        """The rows changed after table ``version`` and the ids from index ``n_ids`` on.

        ``version`` is a previous answer's :attr:`ItemChanges.version` (0: everything ever
        pushed); ``n_ids`` how many ids the caller has. A hub that cannot tell what changed
        (its table was rewritten) answers with every row and every id (``start = 0``).

        A hub whose table can be deleted and rebuilt under its callers (versions restart)
        tags its answers with :attr:`ItemChanges.epoch` and takes an ``epoch`` keyword: the
        caller passes the epoch of its ``version`` (when not ``""``) and a hub of another
        epoch answers with everything.
        """
        ...

    # Optional, for hubs whose tables can be wiped under their callers (looked up with
    # getattr; see ProcessorCore's "hub resets"):
    #
    # item_table_state() -> (epoch, number of item ids): a cheap check made before each push.
    # restore_item_offsets(rows, offsets, epoch=""): write ``offsets`` into the rows no push
    #     reached since the table was created, atomically; other rows are left as they are
    #     (``epoch`` as in push_item_deltas: a table of another epoch takes nothing).


class ItemChanges(NamedTuple):
    """An :meth:`ItemHub.pull_item_offsets_since` answer, all of one table version.

    Attributes
    ----------
    start
        Global index of ``ids[0]`` (the caller's ``n_ids``, or 0 when the hub sends all).
    ids
        The item ids from index ``start`` on, in index order.
    rows
        (k,) int64 indices of the rows changed after the asked version (no repeats).
    offsets
        (k, width) float32 summed deltas of those rows (width 0 before any push).
    version
        The table version this answer reflects; pass it to the next call.
    epoch
        The table's epoch (``""``: a hub whose versions never restart); pass it to the next
        call with ``version``.
    """

    start: int
    ids: list[str]
    rows: np.ndarray
    offsets: np.ndarray
    version: int
    epoch: str = ""


class LocalItemHub:
    """An in-process :class:`ItemHub` (one process, or tests of several cores).

    :meth:`clear` drops its tables as a wiped shared hub would (tests of hub resets); its
    epoch (:attr:`ItemChanges.epoch`) is a token new at creation and at every clear.

    Examples
    --------
    >>> hub = LocalItemHub()
    >>> hub.allocate_ids("item", ["a", "b", "a"])
    [0, 1, 0]
    >>> hub.push_item_deltas(np.array([1]), np.ones((1, 2), np.float32))
    >>> hub.pull_item_offsets()[1].tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    >>> changes = hub.pull_item_offsets_since(1, 2)  # version 1: the allocation
    >>> changes.rows.tolist(), changes.version
    ([1], 2)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._vocab: dict[str, Vocab] = {"item": Vocab(), "user": Vocab()}
        self._table = np.zeros((0, 0), np.float32)
        self._version = 0  # bumped by every item allocation and push
        self._rowver = np.zeros(0, np.int64)  # the version of each row's last push
        self._epoch = uuid.uuid4().hex

    def clear(self) -> None:
        """Drop every id and row: versions restart, in a new epoch."""
        with self._lock:
            self._reset()

    def item_table_state(self) -> tuple[str, int]:
        """``(epoch, number of item ids)``."""
        with self._lock:
            return self._epoch, len(self._vocab["item"])

    def allocate_ids(self, kind: str, ids: Sequence[str]) -> list[int]:
        with self._lock:
            vocab = self._vocab[kind]
            before = len(vocab)
            out = vocab.add_many(list(ids)).tolist()
            if kind == "item" and len(vocab) > before:
                self._version += 1
            return out

    def push_item_deltas(self, rows: np.ndarray, deltas: np.ndarray, epoch: str = "") -> None:
        with self._lock:
            if epoch and epoch != self._epoch:
                raise HubReset(f"item table epoch {self._epoch!r}, the push's {epoch!r}")
            self._add(np.asarray(rows, np.int64), np.asarray(deltas, np.float32))

    def restore_item_offsets(self, rows: np.ndarray, offsets: np.ndarray, epoch: str = "") -> None:
        """Write ``offsets`` into the rows no push reached since the table was created
        (``epoch`` as in :meth:`push_item_deltas`)."""
        rows = np.asarray(rows, np.int64)
        with self._lock:
            if epoch and epoch != self._epoch:
                raise HubReset(f"item table epoch {self._epoch!r}, the restore's {epoch!r}")
            have = len(self._rowver)
            empty = rows >= have
            empty[~empty] = self._rowver[rows[~empty]] == 0
            self._add(rows[empty], np.asarray(offsets, np.float32)[empty])

    def _add(self, rows: np.ndarray, deltas: np.ndarray) -> None:
        n = max(len(self._vocab["item"]), int(rows.max()) + 1 if len(rows) else 0)
        width = deltas.shape[1] if deltas.ndim == 2 else self._table.shape[1]
        if self._table.shape[0] < n or self._table.shape[1] != width:
            grown = np.zeros((n, width), np.float32)
            old = self._table[:, :width]
            grown[: old.shape[0], : old.shape[1]] = old
            self._table = grown
        np.add.at(self._table, rows, deltas)
        self._version += 1
        if len(self._rowver) < n:
            grown = np.zeros(max(n, 2 * len(self._rowver)), np.int64)
            grown[: len(self._rowver)] = self._rowver
            self._rowver = grown
        self._rowver[rows] = self._version

    def pull_item_offsets(self) -> tuple[list[str], np.ndarray]:
        with self._lock:
            ids = list(self._vocab["item"].ids)
            return ids, self._whole(len(ids))

    def _whole(self, n: int) -> np.ndarray:
        out = np.zeros((n, self._table.shape[1]), np.float32)
        m = min(n, self._table.shape[0])
        out[:m] = self._table[:m]
        return out

    def pull_item_offsets_since(self, version: int, n_ids: int, epoch: str = "") -> ItemChanges:
        with self._lock:
            ids = self._vocab["item"].ids
            if (epoch and epoch != self._epoch) or version > self._version or n_ids > len(ids):
                # another table than the caller's (cleared since): all of it
                n = len(ids)
                return ItemChanges(0, list(ids), np.arange(n), self._whole(n), self._version,
                                   self._epoch)
            start = max(n_ids, 0)
            # one comparison over the row versions: in-process, far below a table copy
            rows = np.flatnonzero(self._rowver > version)
            return ItemChanges(start, ids[start:], rows, self._table[rows], self._version,
                               self._epoch)



class StoreItemHub:
    """:class:`ItemHub` on a store with ``allocate_ids`` / ``push_item_deltas`` /
    ``pull_items`` / ``pull_items_since`` (``RedisStore``), in its own namespace: the hub's
    table holds learned offsets ``[Q - init | C]`` with the biases, while the serving
    namespace holds real vectors.
    """

    def __init__(self, store: object, dim: int) -> None:
        self.store = store
        self.dim = dim

    def allocate_ids(self, kind: str, ids: Sequence[str]) -> list[int]:
        return list(self.store.allocate_ids(kind, list(ids)))  # type: ignore[attr-defined]

    def push_item_deltas(self, rows: np.ndarray, deltas: np.ndarray, epoch: str = "") -> None:
        w = 2 * self.dim
        self.store.push_item_deltas(  # type: ignore[attr-defined]
            np.asarray(rows, np.int64), np.ascontiguousarray(deltas[:, :w]),
            np.ascontiguousarray(deltas[:, w]), epoch=epoch,
        )

    def item_table_state(self) -> tuple[str, int]:
        """``(epoch, number of item ids)`` of the hub's table."""
        return self.store.item_table_state()  # type: ignore[attr-defined,no-any-return]

    def restore_item_offsets(self, rows: np.ndarray, offsets: np.ndarray, epoch: str = "") -> None:
        """Write ``offsets`` into the rows that hold nothing (all zero) in the hub's table
        (``epoch`` as in :meth:`push_item_deltas`)."""
        w = 2 * self.dim
        self.store.push_item_deltas(  # type: ignore[attr-defined]
            np.asarray(rows, np.int64), np.ascontiguousarray(offsets[:, :w]),
            np.ascontiguousarray(offsets[:, w]), only_empty=True, epoch=epoch,
        )

    def pull_item_offsets(self) -> tuple[list[str], np.ndarray]:
        ids, vectors, bias, _version = self.store.pull_items()  # type: ignore[attr-defined]
        return ids, self._rows(len(ids), vectors, bias)

    def pull_item_offsets_since(self, version: int, n_ids: int, epoch: str = "") -> ItemChanges:
        start, ids, rows, vectors, bias, now, now_epoch = self.store.pull_items_since(  # type: ignore[attr-defined]
            version, n_ids, epoch
        )
        return ItemChanges(start, ids, rows, self._rows(len(rows), vectors, bias), now, now_epoch)

    def _rows(self, n: int, vectors: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """``n`` hub rows ``[offsets | bias]`` from the store's vectors and biases (a missing
        tail reads as zero)."""
        out = np.zeros((n, 2 * self.dim + 1), np.float32)
        if vectors.size:
            out[: vectors.shape[0], : vectors.shape[1]] = vectors
        if bias.size:
            out[: len(bias), 2 * self.dim] = bias
        return out


__all__ = ["HubReset", "ItemChanges", "ItemHub", "LocalItemHub", "StoreItemHub"]
