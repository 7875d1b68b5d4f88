"""Cold-start top-k from a cached popularity prefix, and RedisStore's popularity cache.

The fast path (``popularity_ranked``) must give exactly the answers of the full ranking
(``popularity()`` and a scan of the catalogue): ids, scores, order, ties by index, seen items,
``k`` past the prefix, popularity whose length does not match the table. RedisStore tests run
against a throwaway redis-server (``password_redis``, tests/conftest.py; skipped without one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
import redis.connection
from _redis_calls import REFRESH_THREAD, Calls, wait_until

from kdstream.stream import MemoryStore, StoreBatch, _store, top_k_from_store
from kdstream.stream._redis_store import RedisStore
from kdstream.stream._store import RankedPopularity, popularity_prefix

REDIS_PW = "popularity-test-pw"


class _FullPath:
    """The store without ``popularity_ranked``: top-k ranks the whole catalogue, as before."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        if name == "popularity_ranked":
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.fixture
def fast_answers(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per cold-start request that reached the prefix: whether the prefix answered it."""
    answered: list[bool] = []
    real = _store._top_from_prefix

    def spy(*args: Any) -> Any:
        out = real(*args)
        answered.append(out is not None)
        return out

    monkeypatch.setattr(_store, "_top_from_prefix", spy)
    return answered


@pytest.fixture
def small_prefix(monkeypatch: pytest.MonkeyPatch) -> int:
    """A prefix of 8 items (at least): small tables take both the fast and the full path."""
    monkeypatch.setattr(_store, "_POP_PREFIX_MIN", 8)
    return 8


def _reference(pop: np.ndarray, ids: list[str], seen: set[str], k: int) -> list[str]:
    return [ids[j] for j in np.argsort(-pop, kind="stable") if ids[j] not in seen][:k]


def _same(got: tuple[list[str], np.ndarray], want: tuple[list[str], np.ndarray]) -> None:
    assert got[0] == want[0]
    assert got[1].dtype == want[1].dtype == np.float32
    np.testing.assert_array_equal(got[1], want[1])


def _random_batch(rng: np.random.Generator, n: int, users: list[str]) -> StoreBatch:
    seen = {u: [f"i{j}" for j in rng.choice(n, size=int(rng.integers(0, n + 1)),
                                            replace=False)] for u in users}
    seen["ghost"] = ["nope", *seen[users[0]][:2]]  # unknown ids are ignored
    return StoreBatch(
        item_ids=[f"i{j}" for j in range(n)],
        item_vectors=rng.normal(size=(n, 3)).astype(np.float32),
        item_bias=rng.integers(-2, 3, size=n).astype(np.float32),
        popularity=rng.integers(0, 4, size=n).astype(np.float32),  # coarse: many ties
        seen=seen,
    )


# -- popularity_prefix ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 1024, 1025, 5000, 250_000])
def test_the_prefix_is_the_head_of_a_full_stable_sort(n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.integers(0, 50, size=n).astype(np.float32)  # ties across the boundary
    prefix = popularity_prefix(values)
    m = min(n, max(1024, n // 100))
    assert len(prefix) == m and prefix.dtype == np.int64 and not prefix.flags.writeable
    np.testing.assert_array_equal(prefix, np.argsort(-values, kind="stable")[:m])


def test_the_prefix_of_all_equal_scores_is_index_order() -> None:
    np.testing.assert_array_equal(popularity_prefix(np.zeros(3000, np.float32)), np.arange(1024))
    # -0.0 ties with 0.0, as in the full ranking
    values = np.array([0.0, -0.0, 1.0, -0.0], np.float32)
    assert popularity_prefix(values).tolist() == [2, 0, 1, 3]


def test_a_ranked_popularity_computes_its_prefix_once() -> None:
    snap = RankedPopularity(np.arange(5, dtype=np.float32))
    first = snap.prefix()
    assert first is not None and first.tolist() == [4, 3, 2, 1, 0]
    assert snap.prefix() is first
    assert RankedPopularity(None).prefix() is None
    assert RankedPopularity(np.ones(3, np.float32), ranked=False).prefix() is None


# -- top-k: the fast path against the full ranking (MemoryStore) ------------------------------


@pytest.mark.parametrize("seed", range(60))
def test_memory_store_fast_path_matches_the_full_ranking(
    seed: int, small_prefix: int, fast_answers: list[bool]
) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    users = ["a", "b", "c"]
    batch = _random_batch(rng, n, users)
    store = MemoryStore()
    store.write_batch(batch)
    assert batch.popularity is not None
    ids = store.item_table()[0]
    for user in [*users, "ghost", "stranger"]:
        for k in (1, 2, 5, 8, 9, n - 1, n, n + 3):
            if k < 1:
                continue
            for exclude in (True, False):
                got = top_k_from_store(store, user, k, exclude)
                _same(got, top_k_from_store(_FullPath(store), user, k, exclude))  # type: ignore[arg-type]
                seen = store.seen(user) if exclude else set()
                assert got[0] == _reference(batch.popularity, ids, seen, k)
                _same(store.recommend(user, k, exclude), got)


def test_both_paths_are_taken(small_prefix: int, fast_answers: list[bool]) -> None:
    """The comparison above covers both paths: the prefix answers, and falls back when the
    seen items and k do not fit in it."""
    store = MemoryStore()
    n = 30
    store.write_batch(StoreBatch(
        item_ids=[f"i{j}" for j in range(n)], item_vectors=np.zeros((n, 2)),
        popularity=np.arange(n, dtype=np.float32), seen={"u": ["i29", "i28", "i0"]},
    ))
    assert store.recommend("u", 5)[0] == ["i27", "i26", "i25", "i24", "i23"]
    assert store.recommend("u", 6)[0] == [f"i{j}" for j in range(27, 21, -1)]  # 6 + 2 seen
    assert fast_answers == [True, True]
    assert store.recommend("u", 7)[0] == [f"i{j}" for j in range(27, 20, -1)]  # 7 + 2 > 8
    assert store.recommend("u", 40)[0] == [f"i{j}" for j in range(27, 0, -1)]
    assert fast_answers == [True, True, False, False]


def test_a_prefix_that_covers_the_catalogue_answers_any_k(fast_answers: list[bool]) -> None:
    store = MemoryStore()
    store.write_batch(StoreBatch(
        item_ids=list("abcd"), item_vectors=np.zeros((4, 2)),
        popularity=np.array([1, 3, 3, 0], np.float32), seen={"u": list("abcd")},
    ))
    assert store.recommend("x", 10)[0] == ["b", "c", "a", "d"]
    ids, scores = store.recommend("u", 3)
    assert ids == [] and scores.shape == (0,) and scores.dtype == np.float32
    assert fast_answers == [True, True]


def test_popularity_of_another_length_falls_back_to_the_bias(fast_answers: list[bool]) -> None:
    store = MemoryStore()
    store.write_batch(StoreBatch(
        item_ids=list("abc"), item_vectors=np.zeros((3, 2)),
        item_bias=np.array([0, 1, 2], np.float32), popularity=np.array([5, 4, 3], np.float32),
    ))
    assert store.recommend("x", 2)[0] == ["a", "b"]
    # an appended item without a popularity write: popularity is stale, the bias ranks
    store.write_batch(StoreBatch(item_ids=["d"], item_ids_from=3, item_rows=np.array([3]),
                                 item_row_vectors=np.zeros((1, 2)),
                                 item_row_bias=np.array([9], np.float32)))
    got = store.recommend("x", 3)
    assert got[0] == ["d", "c", "b"]
    _same(got, top_k_from_store(_FullPath(store), "x", 3))  # type: ignore[arg-type]
    assert fast_answers == [True]  # the stale popularity never reached the prefix


def test_a_store_without_an_index_map_takes_the_full_path(fast_answers: list[bool]) -> None:
    class NoIndex(_FullPath):
        def __getattr__(self, name: str) -> object:
            if name == "item_indices":
                raise AttributeError(name)
            return getattr(self._inner, name)

    store = MemoryStore()
    store.write_batch(StoreBatch(
        item_ids=list("abc"), item_vectors=np.zeros((3, 2)),
        popularity=np.array([1, 2, 3], np.float32), seen={"u": ["c"]},
    ))
    wrapped = NoIndex(store)
    wrapped.popularity_ranked = store.popularity_ranked  # type: ignore[attr-defined]
    assert top_k_from_store(wrapped, "u", 2)[0] == ["b", "a"]  # type: ignore[arg-type]
    assert fast_answers == []


def test_memory_store_ranks_once_per_popularity_write() -> None:
    store = MemoryStore()
    assert store.popularity_ranked() == (None, None)
    store.write_batch(StoreBatch(item_ids=list("ab"), item_vectors=np.zeros((2, 2)),
                                 popularity=np.array([1, 2], np.float32)))
    values, prefix = store.popularity_ranked()
    assert values is store.popularity() and prefix is not None and prefix.tolist() == [1, 0]
    store.write_batch(StoreBatch(seen={"u": ["a"]}))  # popularity unchanged
    assert store.popularity_ranked()[1] is prefix
    store.write_batch(StoreBatch(popularity=np.array([3, 2], np.float32)))
    new_values, new_prefix = store.popularity_ranked()
    assert new_values is store.popularity()
    assert new_prefix is not None and new_prefix.tolist() == [0, 1]
    # the snapshots handed out before are unchanged
    assert values is not None and values.tolist() == [1, 2] and prefix.tolist() == [1, 0]


# -- RedisStore ------------------------------------------------------------------------------


@pytest.fixture
def redis_password() -> str:
    return REDIS_PW


@pytest.fixture
def stores(password_redis_url: str) -> Iterator[tuple[RedisStore, RedisStore]]:
    """``(writer, reader)`` on one namespace, empty."""
    writer = RedisStore(password_redis_url, namespace="p")
    reader = RedisStore(password_redis_url, namespace="p")
    try:
        yield writer, reader
    finally:
        reader.close()
        writer.clear()
        writer.close()


@pytest.fixture
def raw(password_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(password_redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    return Calls(monkeypatch)


def _table(n: int, pop: np.ndarray | None = None) -> StoreBatch:
    return StoreBatch(
        item_ids=[f"i{j}" for j in range(n)], item_vectors=np.zeros((n, 2), np.float32),
        popularity=np.arange(n, dtype=np.float32) if pop is None else pop,
    )


def test_redis_reader_rereads_popularity_only_when_it_changed(
    stores: tuple[RedisStore, RedisStore], calls: Calls
) -> None:
    writer, reader = stores
    assert reader.popularity() is None and reader.popularity_ranked() == (None, None)
    writer.write_batch(_table(5))
    first = reader.popularity()
    assert first is not None and first.tolist() == [0, 1, 2, 3, 4] and not first.flags.writeable
    calls.main = 0
    values, prefix = reader.popularity_ranked()
    assert values is first and prefix is not None and prefix.tolist() == [4, 3, 2, 1, 0]
    assert calls.main == 1  # the version check, not the blob
    assert reader.popularity_ranked()[1] is prefix  # ranked once per version
    writer.write_batch(StoreBatch(seen={"u": ["i1"]}, item_ids=[f"i{j}" for j in range(5)]))
    assert reader.popularity() is first  # a write without popularity keeps the version
    writer.write_batch(StoreBatch(popularity=np.array([4, 3, 2, 1, 0], np.float32)))
    second, second_prefix = reader.popularity_ranked()
    assert second is not None and second.tolist() == [4, 3, 2, 1, 0]
    assert second_prefix is not None and second_prefix.tolist() == [0, 1, 2, 3, 4]
    # the snapshot handed out before is unchanged
    assert first.tolist() == [0, 1, 2, 3, 4] and prefix.tolist() == [4, 3, 2, 1, 0]


def test_redis_popularity_written_before_versions_is_read_every_time(
    stores: tuple[RedisStore, RedisStore], raw: redis.Redis, calls: Calls
) -> None:
    writer, reader = stores
    writer.write_batch(_table(4))
    raw.delete("p:pop:ver")  # as an older kdstream left it
    values, prefix = reader.popularity_ranked()
    assert values is not None and values.tolist() == [0, 1, 2, 3] and prefix is None
    raw.set("p:pop", np.array([9, 8, 7, 6], np.float32).tobytes())  # an older writer
    assert reader.popularity().tolist() == [9, 8, 7, 6]  # type: ignore[union-attr]
    assert reader.recommend("x", 2)[0] == ["i0", "i1"]
    # a version written by a newer writer: cached from then on
    writer.write_batch(StoreBatch(popularity=np.array([1, 1, 2, 2], np.float32)))
    assert reader.popularity_ranked()[1] is not None
    assert reader.recommend("x", 3)[0] == ["i2", "i3", "i0"]
    # a version names its blob: the cached one is served until the version changes
    raw.delete("p:pop")
    assert reader.popularity().tolist() == [1, 1, 2, 2]  # type: ignore[union-attr]
    # a version without its blob (deleted by hand), for a new reader: no popularity
    other = RedisStore(writer._url, namespace="p")
    try:
        assert other.popularity() is None and other.popularity_ranked() == (None, None)
        assert other.recommend("x", 1)[0] == ["i0"]  # the (zero) bias ranks
    finally:
        other.close()


def test_a_blob_rewritten_without_a_new_version_is_read_once_the_cache_is_old(
    stores: tuple[RedisStore, RedisStore], raw: redis.Redis, calls: Calls
) -> None:
    # a processor not yet upgraded (rolling upgrade) writes pop without renewing pop:ver
    writer, reader = stores
    writer.write_batch(_table(4))
    first, prefix = reader.popularity_ranked()
    assert first is not None and first.tolist() == [0, 1, 2, 3] and prefix is not None
    raw.set("p:pop", np.array([3, 2, 1, 0], np.float32).tobytes())
    assert reader.popularity() is first  # within the cache's age: the version check only
    reader.pop_cache_max_age_s = 0.0
    values, new_prefix = reader.popularity_ranked()
    assert values is not None and values.tolist() == [3, 2, 1, 0]
    assert new_prefix is not None and new_prefix.tolist() == [0, 1, 2, 3]
    assert reader.recommend("x", 2)[0] == ["i0", "i1"]
    # an expired entry whose blob is unchanged keeps its snapshot: ranked once, not per read
    assert reader.popularity_ranked()[0] is values
    assert reader.popularity_ranked()[1] is new_prefix
    reader.pop_cache_max_age_s = 3600.0
    calls.main = 0
    assert reader.popularity() is values and calls.main == 1


def test_redis_popularity_after_a_clear_is_not_taken_for_the_cached_one(
    stores: tuple[RedisStore, RedisStore]
) -> None:
    writer, reader = stores
    writer.write_batch(_table(3))
    assert reader.popularity().tolist() == [0, 1, 2]  # type: ignore[union-attr]
    writer.clear()  # another client's clear: a counter would restart at the same value
    writer.write_batch(_table(3, np.array([2, 1, 0], np.float32)))
    assert reader.popularity().tolist() == [2, 1, 0]  # type: ignore[union-attr]
    assert reader.recommend("x", 1)[0] == ["i0"]


@pytest.mark.parametrize("seed", range(6))
def test_redis_fast_path_matches_the_full_ranking_and_memory_store(
    stores: tuple[RedisStore, RedisStore], seed: int, small_prefix: int,
    fast_answers: list[bool]
) -> None:
    writer, reader = stores
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(20, 60))
    users = ["a", "b"]
    memory = MemoryStore()
    for _ in range(2):  # a second popularity version replaces the first
        batch = _random_batch(rng, n, users)
        writer.write_batch(batch)
        memory.write_batch(batch)
        for user in [*users, "ghost", "stranger"]:
            for k in (1, 3, 8, 12, n, n + 2):
                got = reader.recommend(user, k)
                _same(got, top_k_from_store(_FullPath(reader), user, k))  # type: ignore[arg-type]
                _same(got, memory.recommend(user, k))
    assert True in fast_answers and False in fast_answers


def test_redis_stale_popularity_falls_back_to_the_bias(
    stores: tuple[RedisStore, RedisStore]
) -> None:
    writer, reader = stores
    batch = _table(3, np.array([5, 4, 3], np.float32))
    batch.item_bias = np.array([0, 1, 2], np.float32)
    writer.write_batch(batch)
    assert reader.recommend("x", 2)[0] == ["i0", "i1"]
    writer.write_batch(StoreBatch(item_ids=["i3"], item_ids_from=3, item_rows=np.array([3]),
                                  item_row_vectors=np.zeros((1, 2)),
                                  item_row_bias=np.array([9], np.float32)))
    got = reader.recommend("x", 3)
    assert got[0] == ["i3", "i2", "i1"]
    _same(got, top_k_from_store(_FullPath(reader), "x", 3))  # type: ignore[arg-type]


def test_the_refresher_keeps_popularity_current_without_requests(
    stores: tuple[RedisStore, RedisStore], calls: Calls
) -> None:
    writer, reader = stores
    writer.write_batch(_table(6))
    reader.start_item_refresh(every_s=0.01, max_age_s=60.0)
    wait_until(lambda: reader._served_pop is not None)
    calls.main = 0
    values, prefix = reader.popularity_ranked()
    assert values is not None and values.tolist() == [0, 1, 2, 3, 4, 5]
    assert prefix is not None and prefix.tolist() == [5, 4, 3, 2, 1, 0]
    assert reader.popularity() is values and calls.main == 0
    writer.write_batch(StoreBatch(popularity=np.array([0, 0, 0, 0, 0, 1], np.float32)))
    calls.main = 0
    wait_until(lambda: reader.popularity().tolist() == [0, 0, 0, 0, 0, 1])  # type: ignore[union-attr]
    assert calls.main == 0
    assert values.tolist() == [0, 1, 2, 3, 4, 5]  # the old snapshot is unchanged


def test_a_stale_refresher_snapshot_reads_popularity_inline(
    stores: tuple[RedisStore, RedisStore], calls: Calls
) -> None:
    writer, reader = stores
    writer.write_batch(_table(3))
    reader.start_item_refresh(every_s=0.01, max_age_s=60.0)
    wait_until(lambda: reader._served_pop is not None)
    block = threading.Event()
    real = reader._table

    def stuck() -> Any:  # the refresher hangs in its next check
        if threading.current_thread().name.startswith(REFRESH_THREAD):
            block.wait()
        return real()

    reader._table = stuck  # type: ignore[method-assign]
    time.sleep(0.05)
    writer.write_batch(StoreBatch(popularity=np.array([2, 1, 0], np.float32)))
    calls.main = 0
    assert reader.popularity().tolist() == [0, 1, 2] and calls.main == 0  # type: ignore[union-attr]
    checked_at, pop = reader._served_pop  # type: ignore[misc]
    reader._served_pop = (checked_at - 61.0, pop)  # past the bound
    assert reader.popularity().tolist() == [2, 1, 0] and calls.main > 0  # type: ignore[union-attr]
    block.set()
    reader.stop_item_refresh(timeout_s=5.0)
    assert reader._served_pop is None


def test_the_refresher_leaves_unversioned_popularity_to_requests(
    stores: tuple[RedisStore, RedisStore], raw: redis.Redis
) -> None:
    writer, reader = stores
    writer.write_batch(_table(3))
    raw.delete("p:pop:ver")
    reader.start_item_refresh(every_s=0.01, max_age_s=60.0)
    wait_until(lambda: reader.item_refresh_status()["age_s"] is not None)
    time.sleep(0.03)
    assert reader._served_pop is None and reader.item_refresh_status()["errors"] == 0
    raw.set("p:pop", np.array([5, 6, 7], np.float32).tobytes())
    assert reader.popularity().tolist() == [5, 6, 7]  # type: ignore[union-attr]
    assert reader.recommend("x", 1)[0] == ["i2"]
