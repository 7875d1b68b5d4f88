"""Item-table checks shared by the MemoryStore and RedisStore tests.

Imported as a top-level module by tests/test_memory_store.py and
tests/integration/test_redis_store.py (pytest puts tests/ on ``sys.path`` for both); its name
does not match ``test_*.py``, so pytest does not collect it.
"""

from __future__ import annotations

import numpy as np
import pytest

from kdstream.errors import ConfigError, ModelError
from kdstream.stream import StaleItemBase, Store, StoreBatch


def item_batch(n: int = 6, d: int = 4, seed: int = 0) -> StoreBatch:
    """A whole item table of ``n`` items (ids ``i0..``), dimension ``d``, with popularity."""
    rng = np.random.default_rng(seed)
    return StoreBatch(
        item_ids=[f"i{j}" for j in range(n)],
        item_vectors=rng.normal(size=(n, d)).astype(np.float32),
        item_bias=rng.normal(size=n).astype(np.float32),
        popularity=np.arange(n, dtype=np.float32),
    )


def partial_script(seed: int = 0, d: int = 4) -> list[StoreBatch]:
    """Whole and partial item writes, ids appended, biases written or not; replayed on
    both stores."""
    rng = np.random.default_rng(seed)

    def vec(k: int) -> np.ndarray:
        return rng.normal(size=(k, d)).astype(np.float32)

    first = item_batch(5, d, seed)
    first.source_version = 3
    return [
        first,
        StoreBatch(item_rows=np.array([4, 0]), item_row_vectors=vec(2),
                   item_row_bias=np.array([1.5, -2.0], np.float32),
                   source_since=3, source_version=5),
        StoreBatch(item_ids=["i3", "i4", "i5", "i6"], item_ids_from=3,
                   item_rows=np.array([5, 1]), item_row_vectors=vec(2),
                   popularity=np.arange(7, dtype=np.float32), source_since=4, source_version=9),
        StoreBatch(item_rows=np.array([], np.int64), item_row_vectors=np.zeros((0, d))),
        StoreBatch(item_ids=["i7"], item_ids_from=7, item_rows=np.array([7, 6, 2]),
                   item_row_vectors=vec(3), item_row_bias=np.ones(3, np.float32),
                   offsets={"t:0": 4}),
    ]


def whole_of(store: Store) -> StoreBatch:
    """The store's item table as one whole write."""
    ids, vectors, bias = store.item_table()
    return StoreBatch(item_ids=ids, item_vectors=vectors, item_bias=bias)


def check_bad_partials(store: Store) -> None:
    """Every bad partial update raises an error naming its field and writes nothing."""
    store.write_batch(item_batch(4, 3))
    before = whole_of(store)
    ok = {"item_rows": np.array([1, 2]), "item_row_vectors": np.ones((2, 3), np.float32)}
    nan = np.ones((2, 3), np.float32)
    nan[1, 2] = np.nan
    bad: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"item_rows": np.array([1, 4])}, ConfigError, "item_rows"),
        ({"item_rows": np.array([-1, 2])}, ConfigError, "item_rows"),
        ({"item_rows": np.array([1, 1])}, ConfigError, "item_rows"),
        ({"item_rows": np.array([0.5, 1.0])}, ConfigError, "item_rows"),
        ({"item_row_vectors": np.ones((2, 4), np.float32)}, ConfigError, "item_row_vectors"),
        ({"item_row_vectors": np.ones((3, 3), np.float32)}, ConfigError, "item_row_vectors"),
        ({"item_row_vectors": np.ones(3, np.float32)}, ConfigError, "item_row_vectors"),
        ({"item_row_vectors": nan}, ModelError, "item_row_vectors"),
        ({"item_row_bias": np.ones(3, np.float32)}, ConfigError, "item_row_bias"),
        ({"item_row_bias": np.array([1.0, np.inf])}, ModelError, "item_row_bias"),
        ({"item_row_vectors": None}, ConfigError, "item_row_vectors"),
        ({"item_vectors": np.ones((4, 3), np.float32)}, ConfigError, "item_rows"),
        ({"item_ids": ["x"], "item_ids_from": 5}, ConfigError, "item_ids_from"),
        ({"item_ids": ["i3", "x"], "item_ids_from": 2}, ConfigError, "item_ids"),
        ({"item_ids": ["x", "x"], "item_ids_from": 4}, ConfigError, "item_ids"),
        ({"item_ids": ["i0"], "item_ids_from": 4}, ConfigError, "item_ids"),
        ({"popularity": np.ones(3, np.float32)}, ConfigError, "popularity"),
        ({"source_since": 2, "source_version": 1}, ConfigError, "source_since"),
    ]
    for change, kind, field in bad:
        fields = {**ok, "offsets": {"t:0": 9}, **change}
        with pytest.raises(kind, match=field):
            store.write_batch(StoreBatch(**fields))  # type: ignore[arg-type]
        after = whole_of(store)
        assert after.item_ids == before.item_ids, change
        np.testing.assert_array_equal(after.item_vectors, before.item_vectors)
        np.testing.assert_array_equal(after.item_bias, before.item_bias)
        assert store.applied_offset("t", 0) is None, change


def check_source_versions(store: Store) -> None:
    """A partial update applies on a table of source ``since..version``; an older or
    unknown base raises StaleItemBase (nothing written), a newer one skips the item part."""
    whole = item_batch(3, 2)
    store.write_batch(whole)  # no source version
    rows = {"item_rows": np.array([0]), "item_row_vectors": np.full((1, 2), 7.0, np.float32)}
    with pytest.raises(StaleItemBase, match="item_rows"):
        store.write_batch(StoreBatch(**rows, source_since=1, source_version=2,
                                     offsets={"t:0": 1}))
    assert store.applied_offset("t", 0) is None
    store.write_batch(StoreBatch(**rows))  # no source: applies, table source unknown
    assert store.item_table()[1][0].tolist() == [7.0, 7.0]
    whole.source_version = 10
    store.write_batch(whole)
    with pytest.raises(StaleItemBase):
        store.write_batch(StoreBatch(**rows, source_since=11, source_version=12))
    # a later table is served: the item part is skipped, the rest written
    store.write_batch(StoreBatch(**rows, item_ids=["new"], item_ids_from=3,
                                 source_since=5, source_version=8, offsets={"t:0": 2}))
    assert store.applied_offset("t", 0) == 2
    ids, vectors, _ = store.item_table()
    assert ids == whole.item_ids
    np.testing.assert_array_equal(vectors, whole.item_vectors)
    store.write_batch(StoreBatch(**rows, source_since=10, source_version=12))
    store.write_batch(StoreBatch(**rows, source_since=12, source_version=12))
    with pytest.raises(StaleItemBase):  # the table is of source 12 now
        store.write_batch(StoreBatch(**rows, source_since=13, source_version=14))
