"""MemoryStore: the in-process :class:`~kdstream.stream.Store` of the embedded runtime."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np

from kdstream.errors import ConfigError, ModelError
from kdstream.types import FloatArray

from ._store import (
    RankedPopularity,
    StaleItemBase,
    StoreBatch,
    UserView,
    appended_ids,
    check_item_update,
    offset_key,
    parse_offset_key,
    partial_rows,
    top_k_from_store,
    with_rows,
)


def _frozen(array: np.ndarray, name: str, ndim: int) -> FloatArray:
    """A read-only float32 copy, checked for shape and finiteness.

    Stored arrays are never mutated (writes replace them), so readers can get them without
    copying.
    """
    out = np.array(array, dtype=np.float32, copy=True)
    if out.ndim != ndim:
        raise ConfigError(f"{name}: expected a {ndim}-D array, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ModelError(f"{name}: non-finite values; refusing to serve them")
    out.setflags(write=False)
    return out


def _changes_items(batch: StoreBatch) -> bool:
    return (
        batch.item_ids is not None
        or batch.item_vectors is not None
        or batch.item_bias is not None
        or batch.item_rows is not None
    )


class MemoryStore:
    """Serving state in memory; thread-safe (one lock around writes and reads).

    Examples
    --------
    >>> import numpy as np
    >>> store = MemoryStore()
    >>> store.write_batch(StoreBatch(
    ...     item_ids=["a", "b", "c"],
    ...     item_vectors=np.eye(3, 2, dtype=np.float32),
    ...     user_vectors={"u1": np.array([1.0, 2.0], dtype=np.float32)},
    ...     seen={"u1": ["b"]},
    ... ))
    >>> store.recommend("u1", 2)
    (['a', 'c'], array([1., 0.], dtype=float32))
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: recommend() calls the readers
        self._users: dict[str, FloatArray] = {}
        self._item_ids: list[str] = []
        self._item_index: dict[str, int] = {}
        self._item_vectors: FloatArray | None = None
        self._item_bias: FloatArray | None = None
        self._item_source: int | None = None  # StoreBatch.source_version of the table
        self._seen: dict[str, set[str]] = {}
        self._last_ts: dict[str, float] = {}
        self._popularity: FloatArray | None = None
        # _popularity with its cold-start prefix, built on the first ranked read after a write
        self._ranked = RankedPopularity(None)
        self._offsets: dict[str, int] = {}
        self._versions: dict[str, int] = {}
        self._ledger: list[str] = []

    # -- writes -----------------------------------------------------------------------------

    def write_batch(self, batch: StoreBatch) -> None:
        """Apply ``batch`` atomically: everything is validated before anything changes.

        A partial item update (``item_rows``) copies the table once and writes its rows into
        the copy: stored arrays stay immutable, so a reader's snapshot never changes.
        """
        check_item_update(batch)
        users = {u: _frozen(v, f"user_vectors[{u!r}]", 1) for u, v in batch.user_vectors.items()}
        with self._lock:
            skip = self._stale_source(batch)
            table = (
                (None, [], self._item_vectors, self._item_bias) if skip else self._items(batch)
            )
            whole_ids, appended, vectors, bias = table
            n = len(self._item_ids if whole_ids is None else whole_ids) + len(appended)
            dim = None if vectors is None else vectors.shape[1]
            for user, vec in users.items():
                if dim is not None and vec.shape[0] != dim:
                    raise ConfigError(
                        f"user_vectors[{user!r}]: expected dimension {dim}, got {vec.shape[0]}"
                    )
            popularity = self._popularity
            if batch.popularity is not None and not skip:
                popularity = _frozen(batch.popularity, "popularity", 1)
            if popularity is not None and batch.popularity is not None and not skip and (
                len(popularity) != n
            ):
                raise ConfigError(f"popularity: expected {n} values, got {len(popularity)}")
            for key, offset in batch.offsets.items():
                parse_offset_key(key)
                if isinstance(offset, bool) or not isinstance(offset, int | np.integer) or (
                    offset < 0
                ):
                    raise ConfigError(f"offsets[{key!r}]: expected an integer >= 0, got {offset!r}")
            for user, ts in batch.last_event_ts.items():
                if not math.isfinite(ts):
                    raise ConfigError(f"last_event_ts[{user!r}]: expected finite, got {ts!r}")

            # validated: apply
            if whole_ids is not None:
                self._item_ids = whole_ids
                self._item_index = {item: i for i, item in enumerate(whole_ids)}
            if appended:  # in place: readers get copies of the list (item_table)
                start = len(self._item_ids)
                self._item_ids.extend(appended)
                self._item_index.update((item, start + j) for j, item in enumerate(appended))
            if not skip and _changes_items(batch):
                self._item_source = batch.source_version
            self._item_vectors = vectors
            self._item_bias = bias
            self._popularity = popularity
            self._users.update(users)
            for user, items in batch.seen.items():
                self._seen.setdefault(user, set()).update(str(i) for i in items)
            for user, ts in batch.last_event_ts.items():
                prior = self._last_ts.get(user)
                self._last_ts[user] = float(ts) if prior is None else max(prior, float(ts))
            for key, offset in batch.offsets.items():
                self._offsets[key] = max(self._offsets.get(key, 0), int(offset))
            self._versions.update({k: int(v) for k, v in batch.versions.items()})
            self._ledger.extend(batch.ledger)

    def _stale_source(self, batch: StoreBatch) -> bool:
        """Whether to skip a partial update's item part (the table is of a later source);
        :class:`StaleItemBase` when the update lacks rows the stored table needs."""
        if batch.item_rows is None or batch.source_since is None:
            return False
        assert batch.source_version is not None  # check_item_update
        have = self._item_source
        if have is None or have < batch.source_since:
            raise StaleItemBase(
                f"item_rows: the update carries the rows changed after source version "
                f"{batch.source_since}, the stored table is of source version {have}"
            )
        return have > batch.source_version

    def _items(
        self, batch: StoreBatch
    ) -> tuple[list[str] | None, list[str], FloatArray | None, FloatArray | None]:
        """``(whole new id list or None, ids appended, vectors, bias)`` after ``batch``,
        validated (nothing applied)."""
        n_cur = len(self._item_ids)
        whole: list[str] | None = None
        appended: list[str] = []
        start = batch.item_ids_from
        if start is None and batch.item_rows is not None:
            start = 0  # a partial update keeps the indices: the list may only grow
        if batch.item_ids is not None:
            given = [str(i) for i in batch.item_ids]
            if start is None:
                whole = given
                if len(set(whole)) != len(whole):
                    raise ConfigError("item_ids: expected unique ids")
            else:
                index = self._item_index
                appended = appended_ids(
                    given, int(start), n_cur, lambda i, j: self._item_ids[i:j],
                    lambda new: any(i in index for i in new),
                )
        n = len(self._item_ids if whole is None else whole) + len(appended)
        if batch.item_rows is not None:
            vectors, bias = self._rows_written(batch, n_cur, n)
            return whole, appended, vectors, bias
        vectors = (
            self._item_vectors
            if batch.item_vectors is None
            else _frozen(batch.item_vectors, "item_vectors", 2)
        )
        bias = self._item_bias
        if batch.item_bias is not None:
            bias = _frozen(batch.item_bias, "item_bias", 1)
        if vectors is None:
            if n:
                raise ConfigError(f"item_ids: {n} ids but no item_vectors were ever written")
        elif vectors.shape[0] != n:
            raise ConfigError(
                f"item_vectors: expected {n} rows (one per item id), got {vectors.shape[0]}"
            )
        if bias is None or (batch.item_bias is None and len(bias) != n):
            # no bias written yet, or the table grew without one: zero prior
            bias = np.zeros(n, dtype=np.float32)
            bias.setflags(write=False)
        elif len(bias) != n:
            raise ConfigError(f"item_bias: expected {n} values, got {len(bias)}")
        return whole, appended, vectors, bias

    def _rows_written(
        self, batch: StoreBatch, n_cur: int, n: int
    ) -> tuple[FloatArray | None, FloatArray | None]:
        """The table with a partial update's rows written (appended rows start at zero)."""
        rows, vecs, row_bias = partial_rows(batch, _frozen)
        k = len(rows)
        if k and int(rows.max()) >= n:
            raise ConfigError(f"item_rows: row {int(rows.max())} outside the {n} items")
        old = self._item_vectors
        d = old.shape[1] if old is not None else (vecs.shape[1] if k else None)
        if k and vecs.shape[1] != d:
            raise ConfigError(f"item_row_vectors: expected dimension {d}, got {vecs.shape[1]}")
        if d is None:  # nothing ever written, no rows now: ids only
            if n:
                raise ConfigError(f"item_ids: {n} ids but no item_vectors were ever written")
            return old, self._item_bias
        if k == 0 and n == n_cur and old is not None:
            return old, self._item_bias
        return with_rows(old, self._item_bias, n, d, rows, vecs, row_bias)

    def ledger(self) -> list[str]:
        """Debug ledger: event keys learned, in write order (see ``StoreBatch.ledger``)."""
        with self._lock:
            return list(self._ledger)

    # -- reads ------------------------------------------------------------------------------

    def user_vector(self, user: str) -> FloatArray | None:
        """The user's query vector (read-only), or None."""
        with self._lock:
            return self._users.get(user)

    def item_table(self) -> tuple[list[str], FloatArray, FloatArray]:
        """``(ids, vectors, bias)``; the arrays are read-only snapshots."""
        ids, vectors, bias = self.item_table_shared()
        return list(ids), vectors, bias

    def item_table_shared(self) -> tuple[list[str], FloatArray, FloatArray]:
        """:meth:`item_table` without the copy of the id list: the stored list itself, which
        only ever grows in place (a whole write replaces it), so its first ``len(vectors)``
        ids are this snapshot's. For readers that do not change it (``top_k_from_store``)."""
        with self._lock:
            if self._item_vectors is None:
                return [], np.empty((0, 0), dtype=np.float32), np.empty(0, dtype=np.float32)
            assert self._item_bias is not None
            return self._item_ids, self._item_vectors, self._item_bias

    def item_indices(self, items: Sequence[str]) -> np.ndarray:
        """Index of each item id, ``-1`` for unknown ones (lets top-k skip an O(n) scan)."""
        with self._lock:
            get = self._item_index.get
            return np.fromiter((get(i, -1) for i in items), dtype=np.int64, count=len(items))

    def seen(self, user: str) -> set[str]:
        """A copy of the user's seen items."""
        with self._lock:
            return set(self._seen.get(user, ()))

    def last_event_ts(self, user: str) -> float | None:
        """Time of the user's latest event, or None."""
        with self._lock:
            return self._last_ts.get(user)

    def user_view(self, user: str) -> UserView:
        """The user's vector, seen items, last event time and the versions, of one moment."""
        with self._lock:
            return UserView(self._users.get(user), set(self._seen.get(user, ())),
                            self._last_ts.get(user), dict(self._versions))

    def popularity(self) -> FloatArray | None:
        """Popularity aligned with the item index (read-only), or None."""
        with self._lock:
            return self._popularity

    def popularity_ranked(self) -> tuple[FloatArray | None, np.ndarray | None]:
        """``(popularity, its popularity_prefix)`` for cold-start top-k; the prefix is
        computed once per popularity write (stored arrays are replaced, never changed)."""
        with self._lock:
            if self._ranked.values is not self._popularity:
                self._ranked = RankedPopularity(self._popularity)
            return self._ranked.values, self._ranked.prefix()

    def applied_offset(self, topic: str, partition: int) -> int | None:
        """The highest next-offset applied for ``topic:partition``, or None."""
        with self._lock:
            return self._offsets.get(offset_key(topic, partition))

    def versions(self) -> dict[str, int]:
        """A copy of the model versions."""
        with self._lock:
            return dict(self._versions)

    def n_users(self) -> int:
        """Number of users with a query vector."""
        with self._lock:
            return len(self._users)

    def recommend(
        self, user: str, k: int, exclude_seen: bool = True
    ) -> tuple[list[str], FloatArray]:
        """Top-``k`` ``(ids, scores)``; see :func:`~kdstream.stream.top_k_from_store`."""
        with self._lock:  # one consistent snapshot across the reads
            return top_k_from_store(self, user, k, exclude_seen)


__all__ = ["MemoryStore"]
