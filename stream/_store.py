"""The serving-state Store protocol, its write batch, and top-k on any Store.

The online learner writes one :class:`StoreBatch` per micro-batch; the API reads. A batch is
applied atomically, and records the partition offsets it covers so that a re-applied batch
(after a crash, or faust's ``take()`` re-delivering) is recognisable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from kdstream.errors import ConfigError, StateError
from kdstream.types import FloatArray


@dataclass(slots=True)
class StoreBatch:
    """Writes of one micro-batch; every field is optional (empty / None = unchanged).

    Parameters
    ----------
    user_vectors
        user -> float32 *query* vector (user vector plus context, already summed).
    item_vectors
        The full item table ``(n, d)`` float32, or None when unchanged.
    item_bias
        The full ``(n,)`` item bias, or None when unchanged.
    item_ids
        The full list of item ids in index order, when it changed; with ``item_ids_from``,
        only the ids from that index on (appended; see below).
    seen
        user -> items to add to the user's seen set.
    last_event_ts
        user -> time of the user's latest event (the store keeps the max).
    popularity
        Popularity scores aligned with the item index (the fallback for unknown users).
    offsets
        ``"topic:partition"`` -> next offset applied (the store keeps the max).
    versions
        Model versions, e.g. ``{"student": 12, "teacher": 3}``.
    item_rows, item_row_vectors, item_row_bias
        A partial item update instead of a whole table: ``(k,)`` distinct row indices, their
        ``(k, d)`` float32 vectors and (optional, None = unchanged) ``(k,)`` biases. Rows must
        lie within the table after ``item_ids`` are appended; appended rows the update does
        not write read as zero. Cannot be combined with ``item_vectors`` / ``item_bias``.
    item_ids_from
        Index of ``item_ids[0]``: the ids are appended to the stored list, which must hold
        at least ``item_ids_from`` ids (the overlap must match; the list is append-only).
        None: ``item_ids`` is the whole list.
    source_since, source_version
        Versions of the table the item part was taken from (the processors' item hub).
        A whole table records ``source_version`` (None: unknown). A partial update with
        ``source_since`` carries every row that changed after source version
        ``source_since``: it applies to a stored table of source version ``s`` when
        ``source_since <= s <= source_version`` (and records ``source_version``); the
        store raises :class:`StaleItemBase`, writing nothing, when ``s`` is unknown or older
        than ``source_since``, and skips the item part (ids, rows, popularity), writing the
        rest, when ``s`` is newer than ``source_version``: it already serves a later table.
    ledger
        Debug only (``ProcessorConfig.debug_ledger``): keys of the events learned by this
        batch, appended to the store's ledger list in the same transaction (duplicates kept,
        so an event learned twice shows up twice).

    Examples
    --------
    >>> StoreBatch(seen={"u1": ["i1"]}, offsets={"kd.events:0": 10}).offsets
    {'kd.events:0': 10}
    """

    user_vectors: dict[str, np.ndarray] = field(default_factory=dict)
    item_vectors: np.ndarray | None = None
    item_bias: np.ndarray | None = None
    item_ids: list[str] | None = None
    seen: dict[str, list[str]] = field(default_factory=dict)
    last_event_ts: dict[str, float] = field(default_factory=dict)
    popularity: np.ndarray | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    ledger: list[str] = field(default_factory=list)
    item_rows: np.ndarray | None = None
    item_row_vectors: np.ndarray | None = None
    item_row_bias: np.ndarray | None = None
    item_ids_from: int | None = None
    source_since: int | None = None
    source_version: int | None = None


class StaleItemBase(StateError):
    """A partial item update's ``source_since`` is newer than the stored table's source
    version (or that is unknown): the update does not carry every row that changed since.
    The writer sends the whole table instead; nothing was written."""


def check_item_update(batch: StoreBatch) -> None:
    """Checks of a batch's item fields that need no stored state (both stores run them)."""
    for name in ("item_ids_from", "source_since", "source_version"):
        value = getattr(batch, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0
        ):
            raise ConfigError(f"{name}: expected an integer >= 0 or None, got {value!r}")
    if batch.item_ids_from is not None and batch.item_ids is None:
        raise ConfigError("item_ids_from: set, but no item_ids to append")
    if (
        batch.source_since is not None
        and (batch.source_version is None or batch.source_since > batch.source_version)
    ):
        raise ConfigError(
            f"source_since: expected <= source_version, got {batch.source_since!r} > "
            f"{batch.source_version!r}"
        )
    if batch.item_rows is None:
        for name in ("item_row_vectors", "item_row_bias", "source_since"):
            if getattr(batch, name) is not None:
                raise ConfigError(f"{name}: set without item_rows (a partial update)")
        return
    if batch.item_vectors is not None or batch.item_bias is not None:
        raise ConfigError(
            "item_rows: a partial update cannot carry item_vectors / item_bias as well"
        )
    if batch.item_row_vectors is None:
        raise ConfigError("item_row_vectors: expected (k, d) vectors for item_rows, got None")


def partial_rows(
    batch: StoreBatch, as_floats: Callable[[np.ndarray, str, int], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A partial item update's ``(rows, vectors, bias or None)``, checked alike by both stores;
    ``as_floats(array, field, ndim)`` is the store's own float32 conversion (and its checks)."""
    rows = item_rows(batch.item_rows)
    assert batch.item_row_vectors is not None  # check_item_update
    vecs = as_floats(batch.item_row_vectors, "item_row_vectors", 2)
    k = len(rows)
    if vecs.shape[0] != k:
        raise ConfigError(
            f"item_row_vectors: expected {k} rows (one per item row), got {vecs.shape[0]}"
        )
    bias = None
    if batch.item_row_bias is not None:
        bias = as_floats(batch.item_row_bias, "item_row_bias", 1)
        if len(bias) != k:
            raise ConfigError(f"item_row_bias: expected {k} values, got {len(bias)}")
    return rows, vecs, bias


def appended_ids(
    given: list[str],
    start: int,
    n_cur: int,
    stored: Callable[[int, int], list[str]],
    known: Callable[[list[str]], bool],
) -> list[str]:
    """The ids of ``given`` (from index ``start`` on) past the ``n_cur`` stored ones;
    ConfigError when they would leave a gap, or overlap the stored ids with other ids.
    ``stored(start, stop)`` reads stored ids, ``known(ids)`` tells whether any is stored."""
    if start > n_cur:
        raise ConfigError(f"item_ids_from: {start} is past the {n_cur} stored ids (a gap)")
    overlap = min(len(given), n_cur - start)
    if overlap and stored(start, start + overlap) != given[:overlap]:
        raise ConfigError(
            f"item_ids: the ids from index {start} on differ from the stored ones "
            "(the id list is append-only)"
        )
    new = given[overlap:]
    if len(set(new)) != len(new) or (new and known(new)):
        raise ConfigError("item_ids: expected unique ids")
    return new


def with_rows(
    old_vectors: np.ndarray | None,
    old_bias: np.ndarray | None,
    n: int,
    d: int,
    rows: np.ndarray,
    vectors: np.ndarray,
    bias: np.ndarray | None,
) -> tuple[FloatArray, FloatArray]:
    """A read-only copy of a table grown to ``n`` rows (new rows zero) with ``rows`` written:
    a store's stored arrays stay immutable, so snapshots readers hold never change."""
    out = np.empty((n, d), np.float32)  # one pass over the old rows, not two
    n_old = 0 if old_vectors is None else min(len(old_vectors), n)
    if n_old:
        out[:n_old] = old_vectors[:n_old]  # type: ignore[index]
    out[n_old:] = 0
    out_bias = np.zeros(n, np.float32)
    if old_bias is not None:
        m = min(len(old_bias), n_old)
        out_bias[:m] = old_bias[:m]
    out[rows] = vectors
    if bias is not None:
        out_bias[rows] = bias
    out.setflags(write=False)
    out_bias.setflags(write=False)
    return out, out_bias


def item_rows(rows: object) -> np.ndarray:
    """``item_rows`` as distinct int64 indices >= 0; ConfigError naming the field."""
    arr = np.asarray(rows)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ConfigError(
            f"item_rows: expected a 1-D integer array, got {arr.dtype} shape {arr.shape}"
        )
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise ConfigError(f"item_rows: expected indices >= 0, got {int(out.min())}")
    if out.size > 1 and len(np.unique(out)) != out.size:
        raise ConfigError("item_rows: expected distinct rows")
    return out


def offset_key(topic: str, partition: int) -> str:
    """The ``"topic:partition"`` key of :attr:`StoreBatch.offsets`."""
    return f"{topic}:{partition}"


def parse_offset_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`offset_key`; ConfigError on a malformed key."""
    topic, sep, part = key.rpartition(":")
    if not sep or not topic or not part.isdigit():
        raise ConfigError(f"offset key: expected 'topic:partition', got {key!r}")
    return topic, int(part)


@runtime_checkable
class Store(Protocol):
    """Serving state: written per micro-batch by the learner, read by the API."""

    def write_batch(self, batch: StoreBatch) -> None:
        """Apply all writes of ``batch`` atomically."""
        ...

    def user_vector(self, user: str) -> FloatArray | None:
        """The user's query vector, or None for an unknown user."""
        ...

    def item_table(self) -> tuple[list[str], FloatArray, FloatArray]:
        """``(ids, vectors (n, d), bias (n,))``; empty arrays when there are no items."""
        ...

    def seen(self, user: str) -> set[str]:
        """Items the user has interacted with."""
        ...

    def last_event_ts(self, user: str) -> float | None:
        """Time of the user's latest event, or None."""
        ...

    def popularity(self) -> FloatArray | None:
        """Popularity scores aligned with the item index, or None."""
        ...

    def applied_offset(self, topic: str, partition: int) -> int | None:
        """The highest next-offset applied for a partition, or None."""
        ...

    def versions(self) -> dict[str, int]:
        """Model versions written so far."""
        ...

    def recommend(
        self, user: str, k: int, exclude_seen: bool = True
    ) -> tuple[list[str], FloatArray]:
        """Top-``k`` ``(ids, scores)`` for ``user`` (see :func:`top_k_from_store`)."""
        ...


# the popularity prefix a store caches per popularity version: at least this many items
_POP_PREFIX_MIN = 1024
# and at least this share of the catalogue (1 / _POP_PREFIX_SHARE), for users with many seen
_POP_PREFIX_SHARE = 100


def popularity_prefix(values: np.ndarray) -> np.ndarray:
    """The first ``min(n, max(1024, n // 100))`` item indices in cold-start order (popularity
    descending, then index ascending), as :func:`top_k_from_store` ranks them; read-only.

    One argpartition over the catalogue and a sort of the prefix: a store computes it once
    per popularity version, so cold-start requests need not scan the catalogue."""
    n = len(values)
    m = min(n, max(_POP_PREFIX_MIN, n // _POP_PREFIX_SHARE))
    if m == 0:
        out = np.empty(0, dtype=np.int64)
    else:
        scores = np.asarray(values, dtype=np.float32)
        if m < n:
            # the m-th best score; keep everything tied with it so ties break by index below
            part = np.argpartition(-scores, m - 1)[:m]
            pick = np.flatnonzero(scores >= scores[part].min())
        else:
            pick = np.arange(n)
        # flatnonzero is ascending: a stable sort keeps index order among equal scores
        out = pick[np.argsort(-scores[pick], kind="stable")][:m].astype(np.int64, copy=False)
    out.setflags(write=False)
    return out


class RankedPopularity:
    """A popularity snapshot (``values``, never changed) and its :func:`popularity_prefix`,
    computed on first use. Two threads may both compute it: same result, either is kept.
    ``ranked=False``: a snapshot used once, whose prefix would not pay for itself."""

    __slots__ = ("_prefix", "_ranked", "values")

    def __init__(self, values: FloatArray | None, ranked: bool = True) -> None:
        self.values = values
        self._ranked = ranked
        self._prefix: np.ndarray | None = None

    def prefix(self) -> np.ndarray | None:
        """The prefix; None without popularity or for an unranked snapshot."""
        if self.values is None or not self._ranked:
            return None
        if self._prefix is None:
            self._prefix = popularity_prefix(self.values)
        return self._prefix


def _seen_indices(store: Store, seen: set[str], n: int) -> np.ndarray | None:
    """Indices (< n) of the seen items via the store's id -> index map, O(|seen|); None for
    a store without one."""
    indices = getattr(store, "item_indices", None)
    if indices is None:
        return None
    found = np.asarray(indices(list(seen)), dtype=np.int64)
    return found[(found >= 0) & (found < n)]


def _top_from_prefix(
    prefix: np.ndarray, n: int, k: int, excluded: np.ndarray
) -> np.ndarray | None:
    """The top ``k`` of the cold-start order, excluded items skipped, from the cached prefix;
    None when the prefix may not hold them (then the full ranking answers)."""
    # at most len(excluded) of the first k + len(excluded) items are skipped
    head = prefix[: k + len(excluded)]
    if len(excluded):
        head = head[~np.isin(head, excluded)]
    if len(head) < k and len(prefix) < n:
        return None
    return head[:k]


class UserView(NamedTuple):
    """What serving one request reads about its user, of one moment where the store can."""

    vector: FloatArray | None
    seen: set[str]
    last_event_ts: float | None
    versions: dict[str, int]


def user_view(store: Store, user: str) -> UserView:
    """The user's vector, seen items and last event time, and the model versions: in one
    round trip on a store with ``user_view`` (RedisStore pipelines the four reads), else by
    the four reads of the :class:`Store` protocol."""
    own = getattr(store, "user_view", None)
    if own is not None:
        return own(user)  # type: ignore[no-any-return]
    return UserView(store.user_vector(user), store.seen(user), store.last_event_ts(user),
                    store.versions())


def item_table_view(store: Store) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(ids, vectors, bias)`` of the store's item table, read-only: the shared id list where
    the store has one (a copy of a million ids took half the time of a request), else a copy.
    The shared list may grow after the snapshot, so the snapshot's size is ``len(vectors)``."""
    shared = getattr(store, "item_table_shared", None)
    return shared() if shared is not None else store.item_table()  # type: ignore[no-any-return]


def top_k_from_store(
    store: Store, user: str, k: int, exclude_seen: bool = True, view: UserView | None = None
) -> tuple[list[str], FloatArray]:
    """Top-``k`` items for ``user`` from any :class:`Store`.

    Score = query vector · item vectors + item bias; a user without a vector gets popularity
    (or, without popularity, the item bias). Seen items are excluded when ``exclude_seen``.
    Ties break by item index, so results are deterministic. Returns ``([], empty)`` when
    there are no items.

    A store with ``popularity_ranked()`` (``(popularity, its popularity_prefix or None)``)
    answers a user without a vector from the cached prefix when it holds the answer, without
    ranking the catalogue; the result is the same. ``view``: the user's vector and seen items
    already read (:func:`user_view`), so the store is not asked again.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ConfigError(f"k: expected an integer >= 0, got {k!r}")
    ids, vectors, bias = item_table_view(store)
    n = len(vectors)
    if n == 0 or k == 0:
        return [], np.empty(0, dtype=np.float32)
    query = store.user_vector(user) if view is None else view.vector
    if not exclude_seen:
        seen: set[str] = set()
    else:
        seen = store.seen(user) if view is None else view.seen
    found = _seen_indices(store, seen, n) if seen else np.empty(0, dtype=np.int64)
    if query is not None:
        scores = vectors @ query.astype(np.float32, copy=False) + bias
    else:
        ranked = getattr(store, "popularity_ranked", None)
        pop, prefix = ranked() if ranked is not None else (store.popularity(), None)
        if pop is not None and len(pop) == n:
            if prefix is not None and found is not None:
                top = _top_from_prefix(prefix, n, int(k), found)
                if top is not None:
                    return [ids[i] for i in top], pop[top].astype(np.float32, copy=False)
            scores = pop.astype(np.float32, copy=True)
        else:  # no (or stale) popularity: the learned bias is the next-best prior
            scores = bias.astype(np.float32, copy=True)
    scores = np.asarray(scores, dtype=np.float32)
    candidates = np.arange(n)
    if seen:
        if found is not None:  # a store with an id -> index map: O(|seen|), not O(n)
            keep = np.ones(n, dtype=bool)
            keep[found] = False
        else:
            keep = np.fromiter((i not in seen for i in ids), dtype=bool, count=n)
        candidates = candidates[keep]
    if candidates.size == 0:
        return [], np.empty(0, dtype=np.float32)
    cand_scores = scores[candidates]
    k = min(int(k), candidates.size)
    if k < candidates.size:
        # the k-th best score; keep everything tied with it so ties break by index below
        part = np.argpartition(-cand_scores, k - 1)[:k]
        threshold = cand_scores[part].min()
        pick = np.flatnonzero(cand_scores >= threshold)
    else:
        pick = np.arange(candidates.size)
    # sort by score descending, then item index ascending (lexsort: last key is primary)
    order = pick[np.lexsort((candidates[pick], -cand_scores[pick]))][:k]
    top = candidates[order]
    return [ids[i] for i in top], cand_scores[order].astype(np.float32, copy=False)


__all__ = [
    "RankedPopularity",
    "StaleItemBase",
    "Store",
    "StoreBatch",
    "UserView",
    "item_table_view",
    "offset_key",
    "parse_offset_key",
    "popularity_prefix",
    "top_k_from_store",
    "user_view",
]
