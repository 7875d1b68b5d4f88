"""RedisStore against a live redis-server: MemoryStore's behaviour, atomic batches, id
allocation and item deltas across concurrent writers, passwords and a dead server.

Each test uses its own key namespace (``unique_prefix``) and deletes it afterwards.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from _item_table_checks import check_bad_partials, check_source_versions, partial_script
from _item_table_checks import item_batch as _items

from kdstream.errors import ConfigError, ModelError, ServiceError
from kdstream.stream import MemoryStore, Store, StoreBatch, top_k_from_store
from kdstream.stream._redis_store import RedisStore, mask_url


@pytest.fixture
def store(redis_url: str, unique_prefix: str) -> Iterator[RedisStore]:
    s = RedisStore(redis_url, namespace=unique_prefix)
    try:
        yield s
    finally:
        s.clear()
        s.close()


def _other(redis_url: str, store: RedisStore) -> RedisStore:
    """A second client on the same namespace (another process's view)."""
    return RedisStore(redis_url, namespace=store.namespace)


def _same_state(a: Store, b: Store, users: list[str], offsets: list[tuple[str, int]]) -> None:
    ids_a, vec_a, bias_a = a.item_table()
    ids_b, vec_b, bias_b = b.item_table()
    assert ids_a == ids_b
    np.testing.assert_array_equal(vec_a, vec_b)
    np.testing.assert_array_equal(bias_a, bias_b)
    pop_a, pop_b = a.popularity(), b.popularity()
    assert (pop_a is None) == (pop_b is None)
    if pop_a is not None and pop_b is not None:
        np.testing.assert_array_equal(pop_a, pop_b)
    assert a.versions() == b.versions()
    for topic, partition in offsets:
        assert a.applied_offset(topic, partition) == b.applied_offset(topic, partition)
    for user in users:
        ua, ub = a.user_vector(user), b.user_vector(user)
        assert (ua is None) == (ub is None)
        if ua is not None and ub is not None:
            assert ub.dtype == np.float32
            np.testing.assert_array_equal(ua, ub)
        assert a.seen(user) == b.seen(user)
        assert a.last_event_ts(user) == b.last_event_ts(user)
        for exclude in (True, False):
            ra, rb = a.recommend(user, 5, exclude), b.recommend(user, 5, exclude)
            assert ra[0] == rb[0]
            np.testing.assert_array_equal(ra[1], rb[1])


# -- the Store behaviour, against MemoryStore -------------------------------------------------


def test_is_a_store_and_empty(store: RedisStore) -> None:
    assert isinstance(store, Store)
    _same_state(store, MemoryStore(), ["u"], [("kd.events", 0)])
    ids, vectors, bias = store.item_table()
    assert ids == [] and vectors.size == 0 and bias.size == 0
    assert store.recommend("u", 5)[0] == []


def test_round_trip_of_every_field(store: RedisStore) -> None:
    batch = _items()
    batch.user_vectors = {"u1": np.array([1, 0, 0, 0], dtype=np.float64), "ü 2": np.ones(4)}
    batch.seen = {"u1": ["i1", "i2"], "ü 2": ["i5"]}
    batch.last_event_ts = {"u1": 100.25, "ü 2": 1.0e9 + 0.125}
    batch.offsets = {"kd.events:0": 10, "kd.events:1": 4}
    batch.versions = {"student": 1, "teacher": 0}
    store.write_batch(batch)
    memory = MemoryStore()
    memory.write_batch(batch)
    _same_state(store, memory, ["u1", "ü 2", "nobody"], [("kd.events", p) for p in range(3)])
    assert store.n_users() == 2
    assert store.last_event_ts("ü 2") == 1.0e9 + 0.125
    # a second client (another process) reads the same state
    assert store.item_version() > 0


def test_batches_merge_like_memory_store(store: RedisStore) -> None:
    memory = MemoryStore()
    rng = np.random.default_rng(7)
    batches = [
        _items(n=5, d=3, seed=1),
        StoreBatch(user_vectors={"a": rng.normal(size=3)}, seen={"a": ["i1"]},
                   last_event_ts={"a": 5.0}, offsets={"t:0": 3}, versions={"student": 1}),
        StoreBatch(seen={"a": ["i2", "i1"], "b": ["i0"]}, last_event_ts={"a": 4.0, "b": 2.0},
                   offsets={"t:0": 2, "t:1": 1}, versions={"student": 2, "teacher": 1}),
        # the table grows (ids appended) without a bias: zero prior, as MemoryStore
        StoreBatch(item_ids=[f"i{j}" for j in range(7)], item_vectors=rng.normal(size=(7, 3))),
        StoreBatch(item_bias=rng.normal(size=7), popularity=rng.normal(size=7)),
        # a reordered table replaces the id map
        StoreBatch(item_ids=[f"i{j}" for j in reversed(range(7))],
                   item_vectors=rng.normal(size=(7, 3)), item_bias=rng.normal(size=7)),
        StoreBatch(user_vectors={"b": rng.normal(size=3)}, offsets={"t:1": 9}),
    ]
    for batch in batches:
        store.write_batch(batch)
        memory.write_batch(batch)
        _same_state(store, memory, ["a", "b", "c"], [("t", 0), ("t", 1)])
    assert store.index_of("item", ["i6", "i0", "x"]) == [0, 6, -1]


@pytest.mark.parametrize(
    "bad",
    [
        StoreBatch(item_ids=["a", "a"], item_vectors=np.zeros((2, 2))),
        StoreBatch(item_ids=["a"]),
        StoreBatch(item_ids=["a"], item_vectors=np.zeros(2)),
        StoreBatch(item_ids=["a"], item_vectors=np.zeros((1, 2)), item_bias=np.zeros(2)),
        StoreBatch(item_ids=["a"], item_vectors=np.zeros((1, 2)), popularity=np.zeros(3)),
        StoreBatch(offsets={"no-partition": 1}),
        StoreBatch(offsets={"t:0": -1}),
        StoreBatch(last_event_ts={"u": float("nan")}),
        StoreBatch(versions={"student": "one"}),  # type: ignore[dict-item]
    ],
)
def test_bad_batches_are_rejected_whole(store: RedisStore, bad: StoreBatch) -> None:
    bad.seen = {"u": ["x"]}
    bad.offsets = {"ok:0": 1, **bad.offsets}
    with pytest.raises(ConfigError):
        store.write_batch(bad)
    assert store.seen("u") == set()
    assert store.item_table()[0] == []
    assert store.applied_offset("ok", 0) is None


def test_non_finite_and_wrong_dimension(store: RedisStore) -> None:
    store.write_batch(_items())
    with pytest.raises(ModelError):
        store.write_batch(StoreBatch(user_vectors={"u": np.array([np.nan, 0, 0, 0])}))
    with pytest.raises(ConfigError):
        store.write_batch(StoreBatch(user_vectors={"u": np.zeros(3)}))
    assert store.user_vector("u") is None


def test_top_k_matches_memory_store(store: RedisStore) -> None:
    rng = np.random.default_rng(11)
    n, d = 300, 8
    memory = MemoryStore()
    batch = _items(n=n, d=d, seed=11)
    batch.popularity = rng.integers(0, 5, size=n).astype(np.float32)  # ties
    users = [f"u{j}" for j in range(12)]
    batch.user_vectors = {u: rng.normal(size=d).astype(np.float32) for u in users[:8]}
    batch.seen = {u: [f"i{j}" for j in rng.choice(n, 40, replace=False)] for u in users}
    for s in (store, memory):
        s.write_batch(batch)
    for user in [*users, "stranger"]:
        for k in (0, 1, 10, 299, 400):
            ours, ref = store.recommend(user, k), memory.recommend(user, k)
            assert ours[0] == ref[0], (user, k)
            np.testing.assert_array_equal(ours[1], ref[1])
            assert top_k_from_store(store, user, k)[0] == ref[0]


# -- atomicity and offsets --------------------------------------------------------------------


class _CrashBeforeExec(redis.connection.Connection):
    """Sends MULTI and the queued commands, then drops the connection instead of EXEC."""

    armed = False
    exec_cmd = b"*1\r\n$4\r\nEXEC\r\n"
    dropped = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if type(self).armed:
            data = b"".join(bytes(c) for c in command) if isinstance(command, list) else command
            if isinstance(data, bytes) and data.endswith(self.exec_cmd):
                super().send_packed_command([data[: -len(self.exec_cmd)]], check_health)
                type(self).dropped += 1
                self.disconnect()
                raise redis.exceptions.ConnectionError("simulated crash before EXEC")
        super().send_packed_command(command, check_health)


@pytest.mark.parametrize("table_write", [False, True])
def test_a_batch_interrupted_before_exec_leaves_nothing(
    redis_url: str, store: RedisStore, table_write: bool
) -> None:
    store.write_batch(_items(n=4))
    version = store.item_version()
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=_CrashBeforeExec)
    crashing = RedisStore(redis_url, namespace=store.namespace,
                          client=redis.Redis(connection_pool=pool))
    batch = StoreBatch(
        user_vectors={"u": np.ones(4)}, seen={"u": ["i1"]}, last_event_ts={"u": 9.0},
        offsets={"kd.events:0": 100}, versions={"student": 5},
    )
    if table_write:
        batch.item_ids = [f"i{j}" for j in range(6)]
        batch.item_vectors = np.ones((6, 4))
        batch.popularity = np.ones(6)
    _CrashBeforeExec.armed, _CrashBeforeExec.dropped = True, 0
    try:
        with pytest.raises(ServiceError, match="unreachable"):
            crashing.write_batch(batch)
    finally:
        _CrashBeforeExec.armed = False
    assert _CrashBeforeExec.dropped >= 1
    assert store.applied_offset("kd.events", 0) is None
    assert store.user_vector("u") is None and store.seen("u") == set()
    assert store.last_event_ts("u") is None and store.versions() == {}
    assert store.item_table()[0] == [f"i{j}" for j in range(4)]
    assert store.item_version() == version
    crashing.write_batch(batch)  # the same batch on a healthy connection applies whole
    assert store.applied_offset("kd.events", 0) == 100 and store.seen("u") == {"i1"}
    crashing.close()


def test_offsets_and_event_times_never_go_backwards(redis_url: str, store: RedisStore) -> None:
    store.write_batch(StoreBatch(offsets={"kd.events:0": 50}, last_event_ts={"u": 10.5}))
    store.write_batch(StoreBatch(offsets={"kd.events:0": 7}, last_event_ts={"u": 3.0}))
    assert store.applied_offset("kd.events", 0) == 50 and store.last_event_ts("u") == 10.5
    store.write_batch(StoreBatch(offsets={"kd.events:0": 2**40}))
    assert store.applied_offset("kd.events", 0) == 2**40

    # concurrent writers with interleaved, out-of-order offsets: the max wins
    rng = np.random.default_rng(3)
    values = [rng.permutation(500) + 1 for _ in range(3)]

    def writer(vals: np.ndarray) -> None:
        other = _other(redis_url, store)
        for v in vals:
            other.write_batch(StoreBatch(offsets={"kd.events:1": int(v)}))
        other.close()

    threads = [threading.Thread(target=writer, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.applied_offset("kd.events", 1) == 500


# -- id allocation ----------------------------------------------------------------------------


def test_allocation_keeps_existing_indices(store: RedisStore) -> None:
    assert store.allocate_ids("item", []) == []
    assert store.allocate_ids("item", ["a", "b", "a"]) == [0, 1, 0]
    assert store.allocate_ids("item", ["c", "b"]) == [2, 1]
    assert store.index_of("item", ["c", "zz"]) == [2, -1]
    assert [store.id_of("item", i) for i in range(4)] == ["a", "b", "c", None]
    assert store.allocate_ids("user", ["a"]) == [0]  # users have their own map
    with pytest.raises(ConfigError):
        store.allocate_ids("shop", ["a"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        store.id_of("item", -1)


def test_concurrent_allocation_is_one_consistent_mapping(
    redis_url: str, store: RedisStore
) -> None:
    universe = [f"item-{j}" for j in range(400)]
    rng = np.random.default_rng(5)
    lists = [[universe[j] for j in rng.choice(400, 250, replace=False)] for _ in range(4)]
    results: list[list[tuple[str, int]]] = [[] for _ in lists]

    def worker(w: int) -> None:
        other = _other(redis_url, store)
        for start in range(0, len(lists[w]), 10):  # many small calls interleave
            chunk = lists[w][start : start + 10]
            results[w] += list(zip(chunk, other.allocate_ids("item", chunk), strict=True))
        other.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mapping: dict[str, int] = {}
    for pairs in results:
        for item, index in pairs:
            assert mapping.setdefault(item, index) == index  # one index per id
    assert sorted(mapping.values()) == list(range(len(mapping)))  # dense, no duplicates
    assert store.index_of("item", list(mapping)) == list(mapping.values())
    assert store.item_table()[0] == [store.id_of("item", i) for i in range(len(mapping))]


# -- shared item table ------------------------------------------------------------------------


def test_item_deltas_from_two_writers_sum_exactly(redis_url: str, store: RedisStore) -> None:
    n, d = 50, 8
    ids = [f"i{j}" for j in range(n)]
    start = np.random.default_rng(1).integers(-64, 64, size=(n, d)).astype(np.float32) / 8
    store.write_batch(StoreBatch(item_ids=ids, item_vectors=start, item_bias=np.zeros(n)))
    # dyadic deltas: float32 sums are exact, so any interleaving gives the same table
    plans = []
    for seed in (10, 20):
        rng = np.random.default_rng(seed)
        plans.append([
            (rng.integers(0, n, size=16),  # repeats within a push add up
             rng.integers(-8, 9, size=(16, d)).astype(np.float32) / 16,
             rng.integers(-8, 9, size=16).astype(np.float32) / 16)
            for _ in range(30)
        ])
    expected = start.copy()
    expected_bias = np.zeros(n, dtype=np.float32)
    for plan in plans:
        for rows, deltas, bias in plan:
            np.add.at(expected, rows, deltas)
            np.add.at(expected_bias, rows, bias)

    def writer(plan: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        other = _other(redis_url, store)
        for rows, deltas, bias in plan:
            other.push_item_deltas(rows, deltas, bias)
        other.close()

    version = store.item_version()
    threads = [threading.Thread(target=writer, args=(p,)) for p in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got_ids, vectors, got_bias, got_version = store.pull_items()
    assert got_ids == ids and got_version == version + 60
    np.testing.assert_array_equal(vectors, expected)
    np.testing.assert_array_equal(got_bias, expected_bias)
    np.testing.assert_array_equal(store.item_table()[1], expected)  # serving sees the merge


def test_item_deltas_grow_allocated_rows_and_are_idempotent(store: RedisStore) -> None:
    rows = np.array(store.allocate_ids("item", ["a", "b", "c"]))
    version = store.push_item_deltas(rows[2:], np.full((1, 2), 0.5), token="batch-1")
    assert store.push_item_deltas(rows[2:], np.full((1, 2), 0.5), token="batch-1") == -1
    ids, vectors, bias, pulled = store.pull_items()
    assert ids == ["a", "b", "c"] and pulled == version
    np.testing.assert_array_equal(vectors, [[0, 0], [0, 0], [0.5, 0.5]])  # unset rows read 0
    np.testing.assert_array_equal(bias, [0, 0, 0])
    with pytest.raises(ConfigError, match="row 3"):
        store.push_item_deltas(np.array([3]), np.ones((1, 2)))  # not allocated
    with pytest.raises(ConfigError, match="dimension"):
        store.push_item_deltas(np.array([0]), np.ones((1, 3)))
    with pytest.raises(ConfigError):
        store.push_item_deltas(np.array([0, 1]), np.ones((1, 2)))
    with pytest.raises(ModelError):
        store.push_item_deltas(np.array([0]), np.array([[np.inf, 0]]))
    assert store.pull_items()[3] == version  # rejected pushes changed nothing


def test_readers_cache_the_table_until_it_changes(redis_url: str, store: RedisStore) -> None:
    store.write_batch(_items(n=5))
    reader = _other(redis_url, store)
    first = reader.item_table()
    assert reader.item_table()[1] is first[1]  # cached: the same array object
    shared = reader.item_table_shared()
    assert shared[0] == first[0] and reader.item_table_shared()[0] is shared[0]  # no copy
    assert first[0] is not reader.item_table()[0]  # item_table copies the list it hands out
    store.push_item_deltas(np.array([0]), np.ones((1, 4)))
    second = reader.item_table()
    assert second[1] is not first[1]
    np.testing.assert_array_equal(second[1][0], first[1][0] + 1)
    assert reader.item_table_shared()[1] is reader.item_table()[1]
    reader.close()


def test_namespaces_are_isolated(redis_url: str, store: RedisStore, unique_prefix: str) -> None:
    other = RedisStore(redis_url, namespace=unique_prefix + "-b")
    try:
        store.write_batch(_items())
        store.write_batch(StoreBatch(offsets={"t:0": 3}, seen={"u": ["i1"]}))
        assert other.item_table()[0] == [] and other.applied_offset("t", 0) is None
        assert other.seen("u") == set()
    finally:
        other.clear()
        other.close()


# -- URLs, passwords, failures ----------------------------------------------------------------


def test_bad_urls_and_namespaces() -> None:
    for url in ("http://h:1", "redis://", "redis://h:1/db", "memory://"):
        with pytest.raises(ConfigError):
            RedisStore(url)
    for namespace in ("", "a:b", "x" * 65):
        with pytest.raises(ConfigError):
            RedisStore(namespace=namespace)
    assert mask_url("rediss://user:pw@h:6380/2") == "rediss://user:***@h:6380/2"
    assert mask_url("redis://h:1") == "redis://h:1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dead_redis_raises_service_error() -> None:
    port = _free_port()  # nothing listens there
    dead = RedisStore(f"redis://:pw@127.0.0.1:{port}/0", timeout_s=1.0, retries=0)
    with pytest.raises(ServiceError, match="unreachable") as info:
        dead.write_batch(StoreBatch(offsets={"t:0": 1}))
    assert "pw" not in str(info.value).replace("***", "")
    assert info.value.__cause__ is not None
    with pytest.raises(ServiceError):
        dead.user_vector("u")


@pytest.fixture
def redis_password() -> str:
    """The password of the ``password_redis`` server (tests/conftest.py)."""
    return "s3cret"


def test_password(password_redis: int) -> None:
    port = password_redis
    wrong = RedisStore(f"redis://:nope@127.0.0.1:{port}/0", namespace="pw", retries=0)
    assert "nope" not in repr(wrong)
    with pytest.raises(ServiceError) as info:
        wrong.ping()
    assert "nope" not in str(info.value)
    with pytest.raises(ServiceError):
        RedisStore(f"redis://127.0.0.1:{port}/0", namespace="pw", retries=0).seen("u")
    right = RedisStore(f"redis://:s3cret@127.0.0.1:{port}/3", namespace="pw")
    assert repr(right) == f"RedisStore(url='redis://:***@127.0.0.1:{port}/3', namespace='pw')"
    right.ping()
    right.write_batch(StoreBatch(seen={"u": ["i"]}, offsets={"t:0": 4}))
    assert right.seen("u") == {"i"} and right.applied_offset("t", 0) == 4
    right.close()


# -- pulls since a version (processors' incremental item syncs) -------------------------------


def test_pull_since_returns_rows_pushed_after_the_version_and_new_ids(store: RedisStore) -> None:
    store.allocate_ids("item", ["a", "b", "c"])
    # held no epoch: the whole table (no pushes yet: no width)
    start, ids, rows, vectors, bias, v1, epoch = store.pull_items_since(0, 0)
    assert (start, ids, rows.tolist(), vectors.shape) == (0, ["a", "b", "c"], [0, 1, 2], (3, 0))
    assert bias.tolist() == [0, 0, 0]
    assert v1 == store.item_version() == 1 and len(epoch) == 32
    start, ids, rows, vectors, bias, _, same_epoch = store.pull_items_since(0, 0, epoch)
    assert (start, ids, rows.tolist(), vectors.size, bias.size) == (0, ["a", "b", "c"], [], 0, 0)
    assert same_epoch == epoch
    v2 = store.push_item_deltas(np.array([2, 0]), np.array([[1, 2], [3, 4]]), np.array([5, 6]))
    store.allocate_ids("item", ["d"])
    v4 = store.push_item_deltas(np.array([3, 2]), np.array([[0.5, 0.5], [1, 1]]))
    assert (v2, v4) == (2, 4)
    start, ids, rows, vectors, bias, now, _ = store.pull_items_since(v1, 3, epoch)
    assert (start, ids, rows.tolist(), now) == (3, ["d"], [0, 2, 3], 4)
    np.testing.assert_array_equal(vectors, [[3, 4], [2, 3], [0.5, 0.5]])
    np.testing.assert_array_equal(bias, [6, 5, 0])  # a push without biases leaves them
    # only what came after the version: row 2's second push, row 3
    start, ids, rows, vectors, _, _, _ = store.pull_items_since(v2, 4, epoch)
    assert (start, ids, rows.tolist()) == (4, [], [2, 3])
    np.testing.assert_array_equal(vectors, [[2, 3], [0.5, 0.5]])
    start, ids, rows, _, _, same, _ = store.pull_items_since(v4, 4, epoch)
    assert (start, ids, rows.tolist(), same) == (4, [], [], v4)
    # the rows agree with a full pull's
    full_ids, full_vec, _, full_v = store.pull_items()
    assert full_v == now and full_ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(full_vec[[0, 2, 3]], [[3, 4], [2, 3], [0.5, 0.5]])
    with pytest.raises(ConfigError):
        store.pull_items_since(0, -1)


def test_pull_since_after_a_whole_table_write_sends_everything(store: RedisStore) -> None:
    store.allocate_ids("item", ["a", "b"])
    version = store.push_item_deltas(np.array([1]), np.ones((1, 2)))
    epoch = store.pull_items_since(0, 0)[6]
    store.write_batch(StoreBatch(item_ids=["a", "b", "c"], item_vectors=np.full((3, 2), 7.0)))
    start, ids, rows, vectors, _, now, new_epoch = store.pull_items_since(version, 2, epoch)
    assert (start, ids, rows.tolist(), now) == (0, ["a", "b", "c"], [0, 1, 2], version + 1)
    assert new_epoch != epoch  # a whole write starts a new epoch
    np.testing.assert_array_equal(vectors, np.full((3, 2), 7.0))
    # from then on, pushes are versioned again
    later = store.push_item_deltas(np.array([0]), np.ones((1, 2)))
    start, ids, rows, vectors, _, _, _ = store.pull_items_since(now, 3, new_epoch)
    assert (start, ids, rows.tolist(), later) == (3, [], [0], now + 1)
    np.testing.assert_array_equal(vectors, [[8, 8]])
    # an emptied table (older than the caller's version) also sends everything there is
    store.clear()
    store.allocate_ids("item", ["x"])
    start, ids, rows, _, _, _, _ = store.pull_items_since(later, 3, new_epoch)
    assert (start, ids, rows.tolist()) == (0, ["x"], [0])


def test_pulls_since_under_concurrent_pushes_rebuild_the_table(
    redis_url: str, store: RedisStore
) -> None:
    """Two clients push (and allocate) while a third follows with pulls since its last
    version: its copy, built from changed rows only, ends equal to a full pull, bit for bit."""
    d = 4
    store.allocate_ids("item", [f"i{j}" for j in range(20)])
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        other = _other(redis_url, store)
        rng = np.random.default_rng(seed)
        try:
            for step in range(40):
                if step % 5 == 0:
                    other.allocate_ids("item", [f"w{seed}-{step}-{j}" for j in range(3)])
                n = len(other.pull_items()[0])
                rows = rng.integers(0, n, size=6)
                other.push_item_deltas(
                    rows, rng.normal(size=(6, d)).astype(np.float32),
                    rng.normal(size=6).astype(np.float32),
                )
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            other.close()

    reader = _other(redis_url, store)
    ids: list[str] = []
    table = np.zeros((0, d), np.float32)
    bias = np.zeros(0, np.float32)
    version = 0
    epoch = ""
    versions_seen = []

    def follow() -> None:
        nonlocal ids, table, bias, version, epoch
        start, new_ids, rows, vec, b, version, epoch = reader.pull_items_since(
            version, len(ids), epoch
        )
        ids = ids[:start] + new_ids
        if len(table) < len(ids):
            table = np.concatenate([table, np.zeros((len(ids) - len(table), d), np.float32)])
            bias = np.concatenate([bias, np.zeros(len(ids) - len(bias), np.float32)])
        if len(rows) and vec.shape[1]:  # (before any push the table has no width yet)
            assert rows.max() < len(ids)
            table[rows] = vec
            bias[rows] = b
        versions_seen.append(version)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        follow()
    for thread in threads:
        thread.join()
    follow()
    assert not errors, errors
    assert versions_seen == sorted(versions_seen) and len(versions_seen) > 2
    full_ids, full_vec, full_bias, full_version = store.pull_items()
    assert version == full_version
    assert ids == full_ids and len(ids) == 20 + 2 * 8 * 3
    np.testing.assert_array_equal(table, full_vec)
    np.testing.assert_array_equal(bias, full_bias)
    reader.close()


def test_processors_on_a_redis_hub_pull_since_as_they_would_pull_all(
    redis_url: str, unique_prefix: str
) -> None:
    """Two processors on a Redis hub: incremental syncs leave the tables of full syncs."""
    import json

    from kdstream.online import LearnerConfig
    from kdstream.stream import Record
    from kdstream.stream._processor import ProcessorConfig, ProcessorCore, StoreItemHub
    from kdstream.student import StudentConfig

    tables = {}
    for incremental in (False, True):
        hub_store = RedisStore(redis_url, namespace=f"{unique_prefix}-hub-{int(incremental)}")
        config = ProcessorConfig(
            student=StudentConfig(dim=8, n_negatives=16, seed=0),
            learner=LearnerConfig(seed=0),
            retry_backoff_s=0.0,
            sync_every_batches=10**6,
            sync_every_s=1e9,
            incremental_sync=incremental,
        )
        cores = [
            ProcessorCore(MemoryStore(), config, hub=StoreItemHub(hub_store, 8))
            for _ in range(2)
        ]
        rng = np.random.default_rng(4)
        offsets = [0, 0]
        try:
            for b in range(12):
                for p, core in enumerate(cores):
                    values = [
                        json.dumps({"user": f"u{p}-{rng.integers(20)}",
                                    "item": f"i{rng.integers(30 + 10 * b)}", "ts": b}).encode()
                        for _ in range(40)
                    ]
                    core.process([
                        Record("kd.events", p, offsets[p] + j, None, v, 0.0)
                        for j, v in enumerate(values)
                    ])
                    offsets[p] += len(values)
                    if b % 3 == 2:
                        core.sync_items()
            for core in cores:
                core.sync_items()
            tables[incremental] = [
                (list(c._item_ids), c.learner.student.Q[: c.learner.student.n_items].copy(),
                 c.learner.student.b[: c.learner.student.n_items].copy()) for c in cores
            ]
            hub_ids = hub_store.pull_items()[0]
            if incremental:  # the last pull saw every push
                assert cores[1]._hub_version == hub_store.item_version()
            assert cores[1]._item_ids == hub_ids
        finally:
            hub_store.clear()
            hub_store.close()
    for (ids_f, q_f, b_f), (ids_i, q_i, b_i) in zip(tables[False], tables[True], strict=True):
        assert ids_i == ids_f and len(ids_f) > 100
        np.testing.assert_array_equal(q_i, q_f)
        np.testing.assert_array_equal(b_i, b_f)


# -- partial item updates and incremental readers -------------------------------------------


def test_partial_updates_match_memory_store_and_readers_refresh_bit_for_bit(
    store: RedisStore, redis_url: str
) -> None:
    memory = MemoryStore()
    reader = _other(redis_url, store)
    index = None
    for j, batch in enumerate(partial_script(seed=2)):
        store.write_batch(batch)
        memory.write_batch(batch)
        ids, vectors, bias = reader.item_table()  # refreshed by the rows changed since
        if j == 0:
            index = reader._cache[4] if reader._cache else None
        fresh = _other(redis_url, store)  # a whole read
        f_ids, f_vectors, f_bias = fresh.item_table()
        assert ids == f_ids == memory.item_table()[0]
        np.testing.assert_array_equal(vectors, f_vectors)
        np.testing.assert_array_equal(bias, f_bias)
        np.testing.assert_array_equal(vectors, memory.item_table()[1])
        np.testing.assert_array_equal(bias, memory.item_table()[2])
        assert reader.item_indices(["i7", "i5", "x"]).tolist() == memory.item_indices(
            ["i7", "i5", "x"]
        ).tolist()
        fresh.close()
    assert reader._cache is not None and reader._cache[4] is index  # never re-read whole
    np.testing.assert_array_equal(store.popularity(), memory.popularity())
    assert store.applied_offset("t", 0) == 4
    # a whole rewrite: the reader falls back to a whole read
    store.write_batch(_items(3, 4, seed=9))
    ids, vectors, _ = reader.item_table()
    assert ids == ["i0", "i1", "i2"]
    np.testing.assert_array_equal(vectors, _items(3, 4, seed=9).item_vectors)
    reader.close()


def test_bad_partial_updates_write_nothing_in_redis(store: RedisStore) -> None:
    check_bad_partials(store)


def test_partial_updates_check_the_source_version_in_redis(store: RedisStore) -> None:
    check_source_versions(store)


def test_processors_serve_the_same_table_from_redis_with_partial_updates(
    redis_url: str, unique_prefix: str
) -> None:
    from kdstream.online import LearnerConfig
    from kdstream.stream import Record
    from kdstream.stream._processor import LocalItemHub, ProcessorConfig, ProcessorCore
    from kdstream.student import StudentConfig

    tables = {}
    for incremental in (False, True):
        store = RedisStore(redis_url, namespace=f"{unique_prefix}-{int(incremental)}")
        try:
            hub = LocalItemHub()
            config = ProcessorConfig(
                student=StudentConfig(dim=8, n_negatives=16, seed=0),
                learner=LearnerConfig(seed=0), sync_every_batches=2, sync_every_s=1e9,
                incremental_sync=incremental, retry_backoff_s=0.0,
            )
            cores = [ProcessorCore(store, config, hub=hub) for _ in range(2)]
            rng = np.random.default_rng(4)
            for b in range(24):
                p = b % 2
                recs = [
                    Record("kd.events", p, 40 * (b // 2) + j, None,
                           (f'{{"user":"u{p}-{rng.integers(30)}",'
                            f'"item":"i{rng.integers(20 + 10 * b)}","ts":{b}}}').encode(), 0.0)
                    for j in range(40)
                ]
                cores[p].process(recs)
            reader = RedisStore(redis_url, namespace=store.namespace)
            tables[incremental] = (reader.item_table(), store.popularity())
            # rows of partial updates only (a whole write drops the set)
            partial_rows = store._client.zcard(store._k("item", "rowver"))
            assert (partial_rows > 0) == incremental, partial_rows
            reader.close()
        finally:
            store.clear()
            store.close()
    (full, pop_f), (inc, pop_i) = tables[False], tables[True]
    assert inc[0] == full[0] and len(full[0]) > 100
    np.testing.assert_array_equal(inc[1], full[1])
    np.testing.assert_array_equal(inc[2], full[2])
    np.testing.assert_array_equal(pop_i, pop_f)


# -- epochs (a table cleared and rebuilt under its readers) and the bounded item:rowver --------


def _assert_same_table(reader: RedisStore, redis_url: str) -> None:
    """``reader``'s table equals a fresh client's whole read, bit for bit."""
    fresh = RedisStore(redis_url, namespace=reader.namespace)
    try:
        ids, vectors, bias = reader.item_table()
        f_ids, f_vectors, f_bias = fresh.item_table()
        assert ids == f_ids
        np.testing.assert_array_equal(vectors, f_vectors)
        np.testing.assert_array_equal(bias, f_bias)
        assert reader.item_indices(ids).tolist() == list(range(len(ids)))
    finally:
        fresh.close()


def _rows(rows: list[int], d: int, value: float) -> StoreBatch:
    k = len(rows)
    return StoreBatch(item_rows=np.array(rows), item_row_vectors=np.full((k, d), value),
                      item_row_bias=np.full(k, value, np.float32))


def test_readers_across_a_clear_and_rebuild_read_the_new_table(
    redis_url: str, store: RedisStore
) -> None:
    """Another client clears the table and rebuilds one reaching the readers' version (or
    past it): their next read is the new table, not the old one merged with its changes."""
    store.write_batch(_items(6, 4, seed=0))
    store.write_batch(_rows([0], 4, 1.0))
    store.write_batch(_rows([1], 4, 2.0))
    same, behind = _other(redis_url, store), _other(redis_url, store)
    for reader in (same, behind):
        reader.item_table()
        assert reader._cache is not None and reader._cache[0] == 3
    other = _other(redis_url, store)
    other.clear()
    other.write_batch(_items(6, 4, seed=1))  # a whole write: version 1 again
    other.write_batch(_rows([2], 4, 3.0))
    other.write_batch(_rows([3], 4, 4.0))
    assert other.item_version() == 3  # the readers' version, of another table
    _assert_same_table(same, redis_url)
    other.write_batch(_rows([4], 4, 5.0))
    other.write_batch(_rows([2, 5], 4, 6.0))
    assert other.item_version() == 5
    _assert_same_table(behind, redis_url)  # old version 3 < 5: not a refresh since 3
    rebuilt = _items(6, 4, seed=1).item_vectors
    assert rebuilt is not None
    np.testing.assert_array_equal(behind.item_table()[1][1], rebuilt[1])
    # a table created from nothing by partial writes also starts a new epoch
    other.clear()
    first = _rows([0, 1], 4, 7.0)
    first.item_ids, first.item_ids_from = ["a", "b"], 0
    for value in (8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0):
        other.write_batch(first)
        first = _rows([1], 4, value)
    assert other.item_version() > 5
    _assert_same_table(behind, redis_url)
    assert behind.item_table()[0] == ["a", "b"]
    # the hub side: a pull since a version of another epoch answers whole
    hub = _other(redis_url, store)
    hub.clear()
    hub.allocate_ids("item", ["x", "y", "z"])
    hub.push_item_deltas(np.array([0, 1, 2]), np.ones((3, 2)))
    _, _, _, _, _, version, epoch = hub.pull_items_since(0, 0)
    other.clear()
    other.allocate_ids("item", ["x", "y", "z"])
    for _ in range(version + 1):
        other.push_item_deltas(np.array([2]), np.full((1, 2), 0.5))
    start, ids, rows, vectors, _, now, new_epoch = hub.pull_items_since(version, 3, epoch)
    assert (start, ids, rows.tolist(), new_epoch != epoch) == (0, ["x", "y", "z"], [0, 1, 2], True)
    assert now > version
    np.testing.assert_array_equal(vectors, other.pull_items()[1])
    for client in (same, behind, other, hub):
        client.close()


def test_a_processor_across_a_hub_clear_and_rebuild_pulls_the_new_table(
    redis_url: str, unique_prefix: str
) -> None:
    """A processor pulling since its hub version: after the hub is cleared and rebuilt past
    that version, its table is the new hub table (as a fresh processor's), bit for bit, and
    its next served write is whole."""
    from kdstream.online import LearnerConfig
    from kdstream.stream._processor import ProcessorConfig, ProcessorCore, StoreItemHub
    from kdstream.student import StudentConfig

    dim, n = 4, 10
    width = 2 * dim + 1
    ids = [f"i{j}" for j in range(n)]
    config = ProcessorConfig(student=StudentConfig(dim=dim, seed=0),
                             learner=LearnerConfig(seed=0), retry_backoff_s=0.0,
                             sync_every_batches=10**6, sync_every_s=1e9)
    hub_store = RedisStore(redis_url, namespace=f"{unique_prefix}-hub")
    other = RedisStore(redis_url, namespace=f"{unique_prefix}-hub")
    rng = np.random.default_rng(7)

    def push(rows: np.ndarray) -> None:
        other.push_item_deltas(rows, rng.normal(size=(len(rows), 2 * dim)).astype(np.float32),
                               rng.normal(size=len(rows)).astype(np.float32))

    def pulled_table(core: ProcessorCore) -> tuple[np.ndarray, np.ndarray]:
        st = core.learner.student
        return st.Q[: st.n_items].copy(), st.b[: st.n_items].copy()

    try:
        other.allocate_ids("item", ids)
        push(np.arange(n))
        core = ProcessorCore(MemoryStore(), config, hub=StoreItemHub(hub_store, dim))
        core._served_written(core.sync_items())  # whole, as the first
        push(np.array([3, 4]))
        batch = core.sync_items()
        assert batch.item_rows is not None and batch.item_rows.tolist() == [3, 4]
        core._served_written(batch)
        held = core._hub_version
        assert held is not None and core._hub_epoch
        other.clear()  # another client deletes the hub table and builds another
        other.allocate_ids("item", ids)
        push(np.arange(n))
        while other.item_version() <= held:
            push(np.array([5]))
        batch = core.sync_items()
        assert batch.item_rows is None and batch.item_vectors is not None  # whole
        fresh = ProcessorCore(MemoryStore(), config, hub=StoreItemHub(other, dim))
        fresh.sync_items()
        assert core._item_ids[:n] == fresh._item_ids[:n] == ids
        for got, want in zip(pulled_table(core), pulled_table(fresh), strict=True):
            np.testing.assert_array_equal(got, want)
        assert core._hub_epoch == fresh._hub_epoch and core._hub_version == other.item_version()
        assert width == core._width
    finally:
        other.clear()
        other.close()
        hub_store.close()


def test_item_rowver_stays_bounded_and_readers_below_its_floor_read_whole(
    redis_url: str, store: RedisStore
) -> None:
    n, d = 3000, 2
    cap = max(1024, n // 8)
    memory = MemoryStore()
    first = _items(n, d, seed=3)
    store.write_batch(first)
    memory.write_batch(first)
    far, near = _other(redis_url, store), _other(redis_url, store)
    far.item_table()
    far_version = far.item_version()
    rng = np.random.default_rng(5)
    meta, rowver = store._k("item", "meta"), store._k("item", "rowver")
    written: list[tuple[int, np.ndarray]] = []  # (version after the write, its rows)
    sizes = []
    for step in range(40):
        rows = rng.choice(n, size=100, replace=False)
        batch = _rows(rows.tolist(), d, float(step))
        store.write_batch(batch)
        memory.write_batch(batch)
        written.append((store.item_version(), np.sort(rows)))
        sizes.append(store._client.zcard(rowver))
        if step % 7 == 0:
            near.item_table()  # keeps up: refreshes from the rows changed since
    assert max(sizes) <= cap and max(sizes) > cap // 2  # trimmed, not emptied
    floor = int(store._client.hget(meta, "rowver_floor"))
    assert far_version < floor < store.item_version()
    epoch = store._client.hget(meta, "epoch").decode()
    # a puller below the floor gets the whole table
    start, _, got_rows, _, _, _, _ = store.pull_items_since(far_version, n, epoch)
    assert start == 0 and len(got_rows) == n
    # one at or above it only the rows changed since its version
    since = next(v for v, _ in written if v >= floor)
    start, new_ids, got_rows, vectors, _, _, _ = store.pull_items_since(since, n, epoch)
    want = np.unique(np.concatenate([r for v, r in written if v > since]))
    assert (start, new_ids) == (n, []) and got_rows.tolist() == want.tolist()
    assert len(got_rows) < n
    np.testing.assert_array_equal(vectors, memory.item_table()[1][want])
    # both readers end equal to a whole read (and to the memory store)
    for reader in (far, near):
        _assert_same_table(reader, redis_url)
        np.testing.assert_array_equal(reader.item_table()[1], memory.item_table()[1])
        np.testing.assert_array_equal(reader.item_table()[2], memory.item_table()[2])
        reader.close()


def test_hub_item_rowver_stays_bounded_and_followers_rebuild_the_table(
    store: RedisStore,
) -> None:
    n, d = 2000, 3
    store.allocate_ids("item", [f"i{j}" for j in range(n)])
    rng = np.random.default_rng(6)
    table = np.zeros((n, d), np.float32)
    version, epoch, pulls = 0, "", []
    for step in range(30):
        rows = rng.choice(n, size=120, replace=False)
        store.push_item_deltas(rows, rng.normal(size=(120, d)).astype(np.float32))
        assert store._client.zcard(store._k("item", "rowver")) <= 1024
        if step % 3 == 0:  # a follower pulling since its version
            start, _, got, vec, _, version, epoch = store.pull_items_since(version, n, epoch)
            pulls.append((start, len(got)))
            table[got] = vec
    start, _, got, vec, _, version, epoch = store.pull_items_since(version, n, epoch)
    table[got] = vec
    np.testing.assert_array_equal(table, store.pull_items()[1])
    assert store._client.hget(store._k("item", "meta"), "rowver_floor") is not None
    assert pulls[0] == (0, n)  # the first pull (no epoch held) is whole
    assert all(k < n for s, k in pulls[1:] if s == n)  # later ones: changed rows
