"""MemoryStore and top_k_from_store: atomic batches, offsets, exact top-k."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _item_table_checks import check_bad_partials, check_source_versions, partial_script, whole_of
from _item_table_checks import item_batch as _items
from hypothesis import given, settings
from hypothesis import strategies as st

from kdstream.errors import ConfigError, ModelError
from kdstream.stream import (
    MemoryStore,
    Store,
    StoreBatch,
    offset_key,
    parse_offset_key,
    top_k_from_store,
)


def test_is_a_store() -> None:
    assert isinstance(MemoryStore(), Store)


def test_empty_store() -> None:
    store = MemoryStore()
    ids, vectors, bias = store.item_table()
    assert ids == [] and vectors.size == 0 and bias.size == 0
    assert store.user_vector("u") is None
    assert store.seen("u") == set()
    assert store.last_event_ts("u") is None
    assert store.popularity() is None
    assert store.applied_offset("kd.events", 0) is None
    assert store.versions() == {}
    ids, scores = store.recommend("u", 5)
    assert ids == [] and scores.shape == (0,)


def test_batch_round_trip() -> None:
    store = MemoryStore()
    batch = _items()
    batch.user_vectors = {"u1": np.array([1, 0, 0, 0], dtype=np.float64)}
    batch.seen = {"u1": ["i1", "i2"]}
    batch.last_event_ts = {"u1": 100.0}
    batch.offsets = {"kd.events:0": 10, "kd.events:1": 4}
    batch.versions = {"student": 1, "teacher": 0}
    store.write_batch(batch)

    ids, vectors, bias = store.item_table()
    assert ids == batch.item_ids
    np.testing.assert_array_equal(vectors, batch.item_vectors)
    np.testing.assert_array_equal(bias, batch.item_bias)
    vec = store.user_vector("u1")
    assert vec is not None and vec.dtype == np.float32
    np.testing.assert_array_equal(vec, [1, 0, 0, 0])
    assert store.seen("u1") == {"i1", "i2"}
    assert store.last_event_ts("u1") == 100.0
    assert store.applied_offset("kd.events", 0) == 10
    assert store.applied_offset("kd.events", 1) == 4
    assert store.versions() == {"student": 1, "teacher": 0}
    popularity = store.popularity()
    assert popularity is not None
    np.testing.assert_array_equal(popularity, np.arange(6))


def test_later_batches_merge() -> None:
    store = MemoryStore()
    store.write_batch(_items())
    store.write_batch(StoreBatch(seen={"u1": ["i1"]}, last_event_ts={"u1": 50.0}))
    store.write_batch(StoreBatch(seen={"u1": ["i3"]}, last_event_ts={"u1": 40.0},
                                 versions={"student": 2}))
    assert store.seen("u1") == {"i1", "i3"}
    assert store.last_event_ts("u1") == 50.0  # a replayed older batch does not move it back
    assert store.versions() == {"student": 2}
    assert len(store.item_table()[0]) == 6  # unchanged table kept


def test_offsets_keep_max() -> None:
    store = MemoryStore()
    store.write_batch(StoreBatch(offsets={offset_key("kd.events", 2): 30}))
    store.write_batch(StoreBatch(offsets={offset_key("kd.events", 2): 12}))  # replayed batch
    assert store.applied_offset("kd.events", 2) == 30
    store.write_batch(StoreBatch(offsets={"kd.events:2": 31}))
    assert store.applied_offset("kd.events", 2) == 31


def test_offset_keys() -> None:
    assert parse_offset_key(offset_key("kd.events.v2", 11)) == ("kd.events.v2", 11)
    for bad in ("kd.events", ":1", "t:x", "t:-1"):
        with pytest.raises(ConfigError):
            parse_offset_key(bad)


def test_readers_cannot_mutate_state() -> None:
    store = MemoryStore()
    batch = _items()
    batch.user_vectors = {"u1": np.ones(4, dtype=np.float32)}
    batch.seen = {"u1": ["i0"]}
    store.write_batch(batch)
    batch.item_vectors[:] = 0  # the caller's arrays were copied
    assert store.item_table()[1].any()
    with pytest.raises(ValueError):
        store.item_table()[1][0, 0] = 5.0
    vec = store.user_vector("u1")
    assert vec is not None
    with pytest.raises(ValueError):
        vec[0] = 5.0
    store.seen("u1").add("i5")
    store.item_table()[0].append("zzz")
    assert store.seen("u1") == {"i0"}
    assert len(store.item_table()[0]) == 6


@pytest.mark.parametrize(
    "bad",
    [
        StoreBatch(item_ids=["a", "b"], item_vectors=np.zeros((3, 2))),
        StoreBatch(item_ids=["a", "a"], item_vectors=np.zeros((2, 2))),
        StoreBatch(item_ids=["a"]),
        StoreBatch(item_ids=["a"], item_vectors=np.zeros(2)),
        StoreBatch(item_ids=["a"], item_vectors=np.zeros((1, 2)), item_bias=np.zeros(2)),
        StoreBatch(item_ids=["a"], item_vectors=np.zeros((1, 2)), popularity=np.zeros(3)),
        StoreBatch(offsets={"no-partition": 1}),
        StoreBatch(offsets={"t:0": -1}),
        StoreBatch(last_event_ts={"u": float("nan")}),
    ],
)
def test_bad_batches_are_rejected_whole(bad: StoreBatch) -> None:
    store = MemoryStore()
    bad.seen = {"u": ["x"]}
    with pytest.raises(ConfigError):
        store.write_batch(bad)
    assert store.seen("u") == set()  # nothing of a rejected batch was applied
    assert store.item_table()[0] == []


def test_non_finite_vectors_are_a_model_error() -> None:
    store = MemoryStore()
    store.write_batch(_items())
    with pytest.raises(ModelError):
        store.write_batch(StoreBatch(user_vectors={"u": np.array([np.nan, 0, 0, 0])}))
    with pytest.raises(ModelError):
        table = _items()
        assert table.item_vectors is not None
        table.item_vectors[0, 0] = np.inf
        store.write_batch(table)
    with pytest.raises(ConfigError):  # wrong dimension
        store.write_batch(StoreBatch(user_vectors={"u": np.zeros(3)}))


def test_growing_item_table_without_bias_gets_zero_bias() -> None:
    store = MemoryStore()
    store.write_batch(_items(n=3))
    store.write_batch(StoreBatch(item_ids=["a", "b", "c", "d"], item_vectors=np.ones((4, 4))))
    ids, _, bias = store.item_table()
    assert ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(bias, np.zeros(4))


# -- top-k ------------------------------------------------------------------------------------


def test_top_k_scores_and_excludes_seen() -> None:
    store = MemoryStore()
    batch = _items(n=20, d=8, seed=3)
    query = np.random.default_rng(4).normal(size=8).astype(np.float32)
    batch.user_vectors = {"u1": query}
    batch.seen = {"u1": ["i0", "i5", "unknown-item"]}
    store.write_batch(batch)
    assert batch.item_vectors is not None and batch.item_bias is not None
    full = batch.item_vectors @ query + batch.item_bias
    order = [j for j in np.argsort(-full, kind="stable") if j not in (0, 5)]

    ids, scores = store.recommend("u1", 5)
    assert ids == [f"i{j}" for j in order[:5]]
    np.testing.assert_allclose(scores, full[order[:5]], rtol=1e-6)
    assert scores.dtype == np.float32

    ids_all, _ = store.recommend("u1", 5, exclude_seen=False)
    assert ids_all == [f"i{j}" for j in np.argsort(-full, kind="stable")[:5]]


def test_unknown_user_gets_popularity() -> None:
    store = MemoryStore()
    store.write_batch(_items(n=6))  # popularity = 0..5
    ids, scores = store.recommend("nobody", 3)
    assert ids == ["i5", "i4", "i3"]
    np.testing.assert_array_equal(scores, [5, 4, 3])
    # an unknown user with seen items (e.g. events applied before any vector) still skips them
    store.write_batch(StoreBatch(seen={"new": ["i5"]}))
    assert store.recommend("new", 2)[0] == ["i4", "i3"]


def test_unknown_user_without_popularity_gets_bias_order() -> None:
    store = MemoryStore()
    batch = _items(n=5)
    batch.popularity = None
    store.write_batch(batch)
    assert batch.item_bias is not None
    ids, _ = store.recommend("nobody", 5)
    assert ids == [f"i{j}" for j in np.argsort(-batch.item_bias, kind="stable")]


def test_k_edge_cases() -> None:
    store = MemoryStore()
    store.write_batch(_items(n=4))
    assert store.recommend("u", 0)[0] == []
    assert len(store.recommend("u", 100)[0]) == 4
    store.write_batch(StoreBatch(seen={"u": ["i0", "i1", "i2", "i3"]}))
    ids, scores = store.recommend("u", 3)
    assert ids == [] and scores.shape == (0,)
    with pytest.raises(ConfigError):
        store.recommend("u", -1)


def test_ties_break_by_item_index() -> None:
    store = MemoryStore()
    store.write_batch(StoreBatch(item_ids=list("abcdef"), item_vectors=np.zeros((6, 2)),
                                 popularity=np.array([1, 2, 2, 2, 0, 2], dtype=np.float32)))
    assert store.recommend("nobody", 2)[0] == ["b", "c"]
    assert store.recommend("nobody", 4)[0] == ["b", "c", "d", "f"]


class _PlainStore:
    """A Store without ``item_indices`` and ``item_table_shared``: top-k must take the generic
    path (a copied id list, ids checked one by one)."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        if name in ("item_indices", "item_table_shared"):
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_the_shared_id_list_is_not_copied_and_top_k_keeps_to_its_snapshot() -> None:
    store = MemoryStore()
    batch = _items(n=4, d=2, seed=1)
    batch.user_vectors = {"u": np.array([1.0, 0.0], np.float32)}
    store.write_batch(batch)
    ids, vectors, bias = store.item_table_shared()
    assert store.item_table_shared()[0] is ids and store.item_table()[0] is not ids
    assert ids == store.item_table()[0]
    # ids appended later grow the shared list in place, never the snapshot's arrays
    store.write_batch(StoreBatch(item_ids=["new"], item_ids_from=4, item_rows=np.array([4]),
                                 item_row_vectors=np.array([[100.0, 0.0]], np.float32)))
    assert len(ids) == 5 and len(vectors) == 4

    class Frozen:  # a reader between the two writes: the old snapshot, the grown list
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def item_table_shared(self) -> tuple[list[str], np.ndarray, np.ndarray]:
            return ids, vectors, bias

    got = top_k_from_store(Frozen(), "u", 10)[0]  # type: ignore[arg-type]
    assert sorted(got) == sorted(ids[:4])  # "new" (the best now) is not in the snapshot
    assert top_k_from_store(store, "u", 1)[0] == ["new"]


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(0, 45),
    seed=st.integers(0, 2**16),
    n_seen=st.integers(0, 40),
    known=st.booleans(),
)
def test_top_k_matches_a_full_sort(n: int, k: int, seed: int, n_seen: int, known: bool) -> None:
    rng = np.random.default_rng(seed)
    store = MemoryStore()
    batch = _items(n=n, d=3, seed=seed)
    # coarse values so that ties occur
    batch.popularity = rng.integers(0, 4, size=n).astype(np.float32)
    seen = [f"i{j}" for j in rng.choice(n, size=min(n_seen, n), replace=False)]
    batch.seen = {"u": seen}
    if known:
        batch.user_vectors = {"u": rng.integers(-2, 3, size=3).astype(np.float32)}
    store.write_batch(batch)
    assert batch.item_vectors is not None and batch.item_bias is not None
    if known:
        full = batch.item_vectors @ batch.user_vectors["u"] + batch.item_bias
    else:
        full = batch.popularity
    expected = [f"i{j}" for j in np.argsort(-full, kind="stable") if f"i{j}" not in seen][:k]
    assert store.recommend("u", k)[0] == expected
    assert top_k_from_store(_PlainStore(store), "u", k)[0] == expected  # type: ignore[arg-type]


def test_concurrent_writes_and_reads() -> None:
    store = MemoryStore()
    store.write_batch(_items(n=10))
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        for i in range(200):
            store.write_batch(StoreBatch(
                seen={f"u{worker}": [f"i{i % 10}"]},
                offsets={f"t:{worker}": i + 1},
                user_vectors={f"u{worker}": np.full(4, i, dtype=np.float32)},
            ))

    def reader() -> None:
        try:
            for _ in range(200):
                store.recommend("u0", 3)
                store.recommend("nobody", 3)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [store.applied_offset("t", w) for w in range(3)] == [200, 200, 200]
    assert store.seen("u1") == {f"i{j}" for j in range(10)}


# -- partial item updates -----------------------------------------------------------------


def test_partial_updates_leave_the_table_of_a_whole_write() -> None:
    store = MemoryStore()
    for j, batch in enumerate(partial_script()):
        store.write_batch(batch)
        if j == 2:  # rows appended but not written read as zero
            assert not store.item_table()[1][6].any() and store.item_table()[2][6] == 0
    fresh = MemoryStore()
    fresh.write_batch(whole_of(store))
    _ids, vectors, bias = store.item_table()
    assert store.item_table()[0] == [f"i{j}" for j in range(8)]
    assert fresh.item_table()[0] == store.item_table()[0]
    np.testing.assert_array_equal(fresh.item_table()[1], vectors)
    np.testing.assert_array_equal(fresh.item_table()[2], bias)
    # appended rows written without a bias have none; biases not sent keep their value
    assert bias[5] == 0 and bias[0] == np.float32(-2.0)
    assert store.item_indices(["i7", "i6", "x"]).tolist() == [7, 6, -1]


def test_a_partial_update_leaves_earlier_snapshots_alone() -> None:
    store = MemoryStore()
    script = partial_script()
    store.write_batch(script[0])
    _ids, vectors, _bias = store.item_table()
    kept = vectors.copy()
    store.write_batch(script[1])
    np.testing.assert_array_equal(vectors, kept)
    assert not store.item_table()[1].flags.writeable


def test_bad_partial_updates_write_nothing() -> None:
    check_bad_partials(MemoryStore())


def test_partial_updates_check_the_source_version() -> None:
    check_source_versions(MemoryStore())


def test_user_view_is_the_four_reads_of_one_moment() -> None:
    from kdstream.stream import user_view

    store = MemoryStore()
    store.write_batch(StoreBatch(
        user_vectors={"u": np.ones(4, np.float32)}, seen={"u": ["a", "b"]},
        last_event_ts={"u": 7.0}, versions={"student": 3},
    ))  # fmt: skip
    view = user_view(store, "u")
    assert view.seen == store.seen("u") == {"a", "b"} and view.last_event_ts == 7.0
    np.testing.assert_array_equal(view.vector, store.user_vector("u"))
    assert view.versions == store.versions() == {"student": 3}
    view.seen.add("c")  # a copy: the store's set is not the view's
    assert store.seen("u") == {"a", "b"}
    assert user_view(store, "nobody") == (None, set(), None, {"student": 3})
