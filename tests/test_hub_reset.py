"""Processors over an item hub whose tables are wiped and rebuilt under them (a Redis restarted
without persistence, its keys deleted): ids keep one row each, learned vectors stay under
their ids, and every processor ends with the hub's id -> index map.

Each case runs on the in-process :class:`LocalItemHub` (``clear()``) and on a RedisStore hub
(``RedisStore.clear()``; skipped where redis-server is not installed).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from kdstream.online import LearnerConfig
from kdstream.stream import MemoryStore, Record, SoftLabels
from kdstream.stream._item_hub import HubReset
from kdstream.stream._processor import (
    ItemChanges,
    LocalItemHub,
    ProcessorConfig,
    ProcessorCore,
    StoreItemHub,
)
from kdstream.stream._redis_store import RedisStore
from kdstream.student import StudentConfig

TOPIC = "kd.events"
DIM = 8
REDIS_PW = "hub-reset-test-pw"
Hubs = tuple[Callable[[], object], Callable[[], None]]


@pytest.fixture
def redis_password() -> str:
    """The password of the ``password_redis`` server (tests/conftest.py)."""
    return REDIS_PW


@pytest.fixture(params=["local", "redis"])
def hubs(request: pytest.FixtureRequest) -> Iterator[Hubs]:
    """``(make, wipe)``: ``make()`` a client of one shared hub (one per processor, as
    processes have), ``wipe()`` deletes the hub's tables."""
    if request.param == "local":
        hub = LocalItemHub()
        yield (lambda: hub), hub.clear
        return
    port = request.getfixturevalue("password_redis")
    url = f"redis://:{REDIS_PW}@127.0.0.1:{port}/0"
    namespace = f"t{uuid.uuid4().hex[:12]}"
    stores: list[RedisStore] = []

    def make() -> StoreItemHub:
        stores.append(RedisStore(url, namespace=namespace))
        return StoreItemHub(stores[-1], DIM)

    def wipe() -> None:
        admin = RedisStore(url, namespace=namespace)
        assert admin.clear() > 0
        admin.close()

    yield make, wipe
    for store in stores:
        store.close()


def _config(**kw: object) -> ProcessorConfig:
    base: dict[str, object] = {
        # one negative: a batch writes few rows besides its own items
        "student": StudentConfig(dim=DIM, n_negatives=1, seed=0),
        "learner": LearnerConfig(seed=0),
        "retry_backoff_s": 0.0,
        "sync_every_batches": 10_000,
        "sync_every_s": 1e9,
    }
    base.update(kw)
    return ProcessorConfig(**base)  # type: ignore[arg-type]


class _Feeder:
    """Records of one partition with running offsets."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.offset = 0

    def __call__(self, core: ProcessorCore, pairs: list[tuple[str, str]]) -> None:
        records = []
        for user, item in pairs:
            value = json.dumps({"user": user, "item": item, "type": "click",
                                "ts": 1000.0 + self.offset}).encode()
            records.append(Record(TOPIC, self.partition, self.offset, None, value, 0.0))
            self.offset += 1
        core.process(records)


def _sync(core: ProcessorCore) -> None:
    """A sync whose served table is written (as a batch that carries it)."""
    batch = core.sync_items()
    core._write(batch)
    core._served_written(batch)


def _served(store: MemoryStore) -> dict[str, tuple[np.ndarray, float]]:
    ids, vectors, bias = store.item_table()
    assert len(set(ids)) == len(ids)
    return {item: (vectors[j].copy(), float(bias[j])) for j, item in enumerate(ids)}


def _local(core: ProcessorCore) -> dict[str, tuple[np.ndarray, float]]:
    st = core.learner.student
    return {item: (st.Q[i].copy(), float(st.b[i])) for item, i in core._item_index.items()}


def _hub_ids(make: Callable[[], object]) -> list[str]:
    ids, _ = make().pull_item_offsets()  # type: ignore[attr-defined]
    return list(ids)


def _check_map(core: ProcessorCore, hub_ids: list[str]) -> None:
    """One row per id, and the hub's index for every id."""
    index = core._item_index
    assert len(set(index.values())) == len(index)
    for item, idx in index.items():
        assert hub_ids[idx] == item, (item, idx)
        assert core._item_ids[idx] == item


def _close(got: dict[str, tuple[np.ndarray, float]], want: dict[str, tuple[np.ndarray, float]],
           ids: list[str]) -> None:
    for item in ids:
        np.testing.assert_allclose(got[item][0], want[item][0], rtol=0, atol=2e-6, err_msg=item)
        assert abs(got[item][1] - want[item][1]) < 2e-6, item


def _by_id(core: ProcessorCore) -> dict[str, object]:
    """The item-indexed state beside the tables, by id: histories, seen pairs, popularity,
    optimizer accumulators, transition labels."""
    st, lr = core.learner.student, core.learner
    name = core._item_ids
    users = core.users.ids
    keys = st.seen.to_array()
    labels = lr.item_labels
    return {
        "hist": {users[u]: [name[i] for i in st.hist[u] if i >= 0] for u in range(len(users))},
        "seen": {(users[int(k >> 32)], name[int(k & 0xFFFFFFFF)]) for k in keys},
        "pop": {item: float(lr.counts.view(len(name))[i]) for item, i in core._item_index.items()},
        "acc": {item: (float(st.gQ[i]), float(st.gC[i]), float(st.gb[i]))
                for item, i in core._item_index.items()},
        "labels": {
            name[k]: [name[i] for i in labels.items[k] if i >= 0]
            for k in np.flatnonzero(labels.has).tolist()
        },
    }


def _learn_old_catalogue(core: ProcessorCore, feed: _Feeder) -> None:
    rng = np.random.default_rng(7)
    for _ in range(4):
        feed(core, [(f"u{rng.integers(5)}", f"i{rng.integers(20)}") for _ in range(30)])
        _sync(core)
    assert sorted(core._item_index) == sorted(f"i{j}" for j in range(20))


def test_new_ids_after_a_wipe_never_share_a_row(
    hubs: Hubs, caplog: pytest.LogCaptureFixture
) -> None:
    """The wiped hub answers index 0.. to new ids, rows this processor's ids hold: it
    re-registers its ids, moves its state to the hub's indices, and restores the hub."""
    make, wipe = hubs
    store = MemoryStore()
    core = ProcessorCore(store, _config(sync_every_batches=1), hub=make())
    feed = _Feeder(0)
    _learn_old_catalogue(core, feed)
    old = sorted(core._item_index)
    before = _served(store)
    _close(_local(core), before, old)
    hub_before = dict(zip(*make().pull_item_offsets(), strict=True))  # type: ignore[attr-defined]
    wipe()
    caplog.set_level(logging.WARNING)
    new = [f"n{j}" for j in range(5)]
    feed(core, [(f"fresh{j}", item) for j, item in enumerate(new)])  # new users: no contexts
    assert any("item hub reset" in r.getMessage() for r in caplog.records)
    assert core.stats.hub_resets == 1
    touched = {core._item_ids[int(r)] for rows in core.learner.last_item_rows for r in rows}
    hub_ids = _hub_ids(make)
    assert sorted(hub_ids) == sorted(old + new)
    _check_map(core, hub_ids)
    after = _served(store)
    assert sorted(after) == sorted(old + new)
    untouched = [item for item in old if item not in touched]
    assert len(untouched) >= 18
    _close(after, before, untouched)
    _close(_local(core), after, sorted(after))
    # the hub has this processor's knowledge back, under the hub's new indices
    hub_after = dict(zip(*make().pull_item_offsets(), strict=True))  # type: ignore[attr-defined]
    init = core._init_q_cache(len(hub_ids))
    for item in untouched:
        idx = core._item_index[item]
        np.testing.assert_allclose(init[idx] + hub_after[item][:DIM], before[item][0], atol=2e-6)
        np.testing.assert_allclose(hub_after[item][DIM:], hub_before[item][DIM:], atol=2e-6)


def test_a_wipe_found_at_a_sync_rebuilds_the_old_order(hubs: Hubs) -> None:
    """No new id after the wipe: the sync finds the hub empty, re-registers this processor's
    ids in its own order (the old indices: nothing moves) and pushes its offsets back."""
    make, wipe = hubs
    store = MemoryStore()
    core = ProcessorCore(store, _config(), hub=make())
    feed = _Feeder(0)
    _learn_old_catalogue(core, feed)
    ids_before = list(core._item_ids)
    state_before = _by_id(core)
    hub_before = make().pull_item_offsets()  # type: ignore[attr-defined]
    wipe()
    _sync(core)
    assert core.stats.hub_resets == 1
    assert core._item_ids == ids_before
    hub_after = make().pull_item_offsets()  # type: ignore[attr-defined]
    assert hub_after[0] == hub_before[0]
    np.testing.assert_allclose(hub_after[1], hub_before[1], atol=1e-6)
    assert _by_id(core) == state_before
    _sync(core)  # and then syncs as before
    assert core.stats.hub_resets == 1


def test_two_processors_end_with_the_hub_map_and_their_vectors(hubs: Hubs) -> None:
    """A knows i0..i19 (i0..i9 at 0..9), B knows only i10..i19 (at 10..19, unsynced). After
    the wipe B re-registers first (i10..i19 at 0..9), then A finds its map differs and
    moves its state. Both end with the hub's map and every learned vector under its id."""
    make, wipe = hubs
    store_a, store_b = MemoryStore(), MemoryStore()
    a = ProcessorCore(store_a, _config(), hub=make())
    b = ProcessorCore(store_b, _config(), hub=make())
    feed_a, feed_b = _Feeder(0), _Feeder(1)
    b.assign([1])  # B's first pull: an empty hub
    feed_a(a, [(f"a{k % 4}", f"i{k % 10}") for k in range(40)])
    _sync(a)
    feed_b(b, [(f"b{k % 4}", f"i{10 + k % 10}") for k in range(40)])
    _sync(a)  # A lists i10..i19 (B pushed nothing yet)
    assert sorted(b._item_index) == [f"i{j}" for j in range(10, 20)]
    assert b._item_index["i10"] == 10 and a._item_index["i0"] == 0
    want = _local(a)
    want.update({item: v for item, v in _local(b).items()})
    wipe()
    _sync(b)
    assert b._item_index["i10"] == 0  # B's ids first, in B's order
    _sync(a)
    _sync(b)  # B pulls what A restored
    assert a.stats.hub_resets == b.stats.hub_resets == 1
    hub_ids = _hub_ids(make)
    assert sorted(hub_ids) == sorted(want)
    for core, store in ((a, store_a), (b, store_b)):
        _check_map(core, hub_ids)
        assert core._item_index == {item: j for j, item in enumerate(hub_ids)}
        _close(_local(core), want, sorted(want))
        _close(_served(store), want, sorted(want))


def test_state_beside_the_tables_moves_with_the_ids(hubs: Hubs) -> None:
    """Histories, seen pairs, popularity, optimizer accumulators and transition labels keyed
    and valued by item rows follow their ids through a move."""
    make, wipe = hubs
    core = ProcessorCore(MemoryStore(), _config(), hub=make())
    feed = _Feeder(0)
    _learn_old_catalogue(core, feed)
    labels = [
        SoftLabels(("i3", "i7", "i11"), (1.0, 0.5, 0.1), 1.0, 1, 1e9, after_item="i2"),
        SoftLabels(("i19", "i0"), (0.3, 0.2), 1.0, 1, 1e9, after_item="i15"),
    ]
    assert core.apply_soft_label_values(labels) == 2
    state = _by_id(core)
    assert state["labels"] == {"i2": ["i3", "i7", "i11"], "i15": ["i19", "i0"]}
    wipe()
    other = make()
    other.allocate_ids("item", [f"i{j}" for j in range(19, -1, -1)])  # type: ignore[attr-defined]
    _sync(core)
    assert core.stats.hub_resets == 1
    assert core._item_index["i19"] == 0 and core._item_index["i0"] == 19  # moved
    assert _by_id(core) == state
    _check_map(core, _hub_ids(make))


class _PlainHub:
    """A LocalItemHub behind the bare :class:`ItemHub` protocol: no ``item_table_state``
    check before a push, no atomic ``restore_item_offsets``."""

    def __init__(self) -> None:
        self.inner = LocalItemHub()

    def allocate_ids(self, kind: str, ids: list[str]) -> list[int]:
        return self.inner.allocate_ids(kind, ids)

    def push_item_deltas(self, rows: np.ndarray, deltas: np.ndarray) -> None:
        self.inner.push_item_deltas(rows, deltas)

    def pull_item_offsets(self) -> tuple[list[str], np.ndarray]:
        return self.inner.pull_item_offsets()

    def pull_item_offsets_since(self, version: int, n_ids: int, epoch: str = "") -> ItemChanges:
        return self.inner.pull_item_offsets_since(version, n_ids, epoch=epoch)


def test_a_hub_with_only_the_protocol_is_recovered_by_its_pull() -> None:
    hub = _PlainHub()
    core = ProcessorCore(MemoryStore(), _config(), hub=hub)
    _learn_old_catalogue(core, _Feeder(0))
    ids_before, table_before = hub.pull_item_offsets()
    assert np.any(table_before != 0)
    hub.inner.clear()
    _sync(core)  # the pull finds another epoch; the restore pushes into its empty rows
    assert core.stats.hub_resets == 1
    ids_after, table_after = hub.pull_item_offsets()
    assert ids_after == ids_before
    np.testing.assert_allclose(table_after, table_before, atol=1e-6)


class _ShufflingHub(LocalItemHub):
    """Lists its ids reversed in whole answers: a map no re-registration can agree with."""

    def pull_item_offsets_since(self, version: int, n_ids: int, epoch: str = "") -> ItemChanges:
        got = super().pull_item_offsets_since(version, n_ids, epoch)
        return got._replace(ids=got.ids[::-1]) if got.start == 0 else got


def test_a_hub_that_keeps_looking_reset_is_an_error() -> None:
    from kdstream.errors import ServiceError

    core = ProcessorCore(MemoryStore(), _config(), hub=_ShufflingHub())
    _Feeder(0)(core, [("u0", "i0"), ("u1", "i1"), ("u2", "i2")])
    with pytest.raises(ServiceError, match="reset again"):
        core.sync_items()
    assert core.stats.hub_resets == 2  # the third finding gives up


class _ForgetfulHub(LocalItemHub):
    """Answers every allocation with fresh indices from 0 on: a hub that keeps losing its
    tables, so a processor can never re-register its ids."""

    def allocate_ids(self, kind: str, ids: list[str]) -> list[int]:
        self.clear()
        return super().allocate_ids(kind, ids)


def test_a_hub_that_resets_during_recovery_is_an_error() -> None:
    from kdstream.errors import ServiceError

    hub = _ForgetfulHub()
    core = ProcessorCore(MemoryStore(), _config(), hub=hub)
    feed = _Feeder(0)
    feed(core, [("u0", "i0"), ("u1", "i1")])
    with pytest.raises(ServiceError, match="item hub"):
        feed(core, [("u2", "i2")])


def test_local_hub_clear_starts_a_new_epoch_answered_whole() -> None:
    hub = LocalItemHub()
    hub.allocate_ids("item", ["a", "b"])
    hub.push_item_deltas(np.array([1]), np.ones((1, 3), np.float32))
    first = hub.pull_item_offsets_since(0, 0)
    assert first.epoch and hub.item_table_state() == (first.epoch, 2)
    hub.clear()
    assert hub.item_table_state()[1] == 0
    hub.allocate_ids("item", ["b"])
    got = hub.pull_item_offsets_since(first.version, 2, epoch=first.epoch)
    assert isinstance(got, ItemChanges)
    assert (got.start, got.ids, got.rows.tolist()) == (0, ["b"], [0])
    assert got.epoch != first.epoch
    # restoring writes only rows no push reached in this table
    hub.push_item_deltas(np.array([0]), np.full((1, 3), 2.0, np.float32))
    hub.allocate_ids("item", ["c"])
    hub.restore_item_offsets(np.array([0, 1]), np.full((2, 3), 5.0, np.float32))
    assert hub.pull_item_offsets()[1].tolist() == [[2.0] * 3, [5.0] * 3]


def test_redis_restore_writes_only_empty_rows(password_redis: int) -> None:
    store = RedisStore(f"redis://:{REDIS_PW}@127.0.0.1:{password_redis}/0",
                       namespace=f"t{uuid.uuid4().hex[:12]}")
    try:
        assert store.item_table_state() == ("", 0)
        store.allocate_ids("item", ["a", "b", "c"])
        store.push_item_deltas(np.array([0]), np.ones((1, 2)), np.zeros(1))
        store.push_item_deltas(np.array([1]), np.zeros((1, 2)), np.ones(1))  # bias only
        hub = StoreItemHub(store, 1)
        hub.restore_item_offsets(np.array([0, 1, 2]), np.full((3, 3), 5.0, np.float32))
        ids, vectors, bias, _ = store.pull_items()
        assert ids == ["a", "b", "c"]
        assert vectors.tolist() == [[1, 1], [0, 0], [5, 5]] and bias.tolist() == [0, 1, 5]
        epoch, n_ids = store.item_table_state()
        assert len(epoch) == 32 and n_ids == 3
    finally:
        store.clear()
        store.close()


class _WipedAtPush:
    """A hub that runs ``armed()`` (a wipe and rebuild) inside its next push, before the
    push reaches the hub: after the processor's check, before its write; and
    ``armed_restore()`` likewise inside its next offset restore."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.armed: Callable[[], None] | None = None
        self.armed_restore: Callable[[], None] | None = None
        self.epochs: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def push_item_deltas(self, rows: np.ndarray, deltas: np.ndarray, epoch: str = "") -> None:
        self.epochs.append(epoch)
        armed, self.armed = self.armed, None
        if armed is not None:
            armed()
        self.inner.push_item_deltas(rows, deltas, epoch=epoch)  # type: ignore[attr-defined]

    def restore_item_offsets(self, rows: np.ndarray, offsets: np.ndarray, epoch: str = "") -> None:
        self.epochs.append(epoch)
        armed, self.armed_restore = self.armed_restore, None
        if armed is not None:
            armed()
        self.inner.restore_item_offsets(rows, offsets, epoch=epoch)  # type: ignore[attr-defined]


def _theirs(n: int) -> np.ndarray:
    """Another processor's offsets: row j holds j + 1 everywhere."""
    return np.arange(1, n + 1, dtype=np.float32)[:, None] * np.ones((1, 2 * DIM + 1), np.float32)


def _racing(make: Callable[[], object]) -> tuple[MemoryStore, _WipedAtPush, ProcessorCore,
                                                  _Feeder, list[str], dict[str, Any]]:
    """A processor that learned the old catalogue and changed its rows since its last sync
    (known ids: no allocation), on a hub that can be wiped inside a push or a restore:
    ``(store, hub, core, feed, its ids in index order, its rows by id)``."""
    store = MemoryStore()
    hub = _WipedAtPush(make())
    core = ProcessorCore(store, _config(), hub=hub)  # type: ignore[arg-type]
    feed = _Feeder(0)
    _learn_old_catalogue(core, feed)
    old = list(core._item_ids)
    feed(core, [(f"u{k % 5}", f"i{k % 20}") for k in range(40)])
    return store, hub, core, feed, old, _local(core)


def _rebuild(make: Callable[[], object], wipe: Callable[[], None], ids: list[str], *,
             push: bool = True) -> None:
    """Another processor wipes the hub, allocates ``ids`` (rows 0..) and pushes its offsets."""
    wipe()
    other = make()
    assert other.allocate_ids("item", ids) == list(range(len(ids)))  # type: ignore[attr-defined]
    if push:
        other.push_item_deltas(np.arange(len(ids)), _theirs(len(ids)))  # type: ignore[attr-defined]


def _check_ours(make: Callable[[], object], store: MemoryStore, core: ProcessorCore,
                old: list[str], want: dict[str, Any], theirs: list[str],
                their_rows: np.ndarray) -> None:
    """The hub lists ``theirs`` then this processor's ids, their rows hold ``their_rows``
    (nothing of this processor's), and this processor's rows, local table and served table
    hold its vectors under its ids."""
    hub_ids, table = make().pull_item_offsets()  # type: ignore[attr-defined]
    assert hub_ids == theirs + old
    np.testing.assert_array_equal(table[: len(theirs)], their_rows)
    _check_map(core, hub_ids)
    assert core._item_index == {item: j for j, item in enumerate(hub_ids)}
    _close(_local(core), want, old)
    _close(_served(store), want, old)
    init = core._init_q_cache(len(hub_ids))
    for item in old:
        idx = core._item_index[item]
        np.testing.assert_allclose(init[idx] + table[idx, :DIM], want[item][0], atol=2e-6)
        assert abs(table[idx, 2 * DIM] - want[item][1]) < 2e-6


def test_a_reset_between_the_check_and_the_push_adds_nothing_to_other_rows(
    hubs: Hubs,
) -> None:
    """The hub is wiped and rebuilt by another processor with other ids (x0..x19 at this
    processor's rows 0..19, holding that processor's offsets) after the check before the
    push: the push, conditional on the epoch of this processor's rows, writes nothing; the
    processor recovers (its ids at 20..39) and ends with its vectors under its ids."""
    make, wipe = hubs
    store, hub, core, feed, old, want = _racing(make)
    others = [f"x{j}" for j in range(20)]
    hub.armed = lambda: _rebuild(make, wipe, others)
    n = len(hub.epochs)
    _sync(core)
    assert hub.armed is None and hub.epochs[n] != ""  # the racing push carried its epoch
    assert core.stats.hub_resets == 1
    _check_ours(make, store, core, old, want, others, _theirs(20))
    epoch = core._hub_epoch
    feed(core, [("u0", "i3")])
    _sync(core)  # and then syncs as before, its pushes on the new table's epoch
    assert core.stats.hub_resets == 1 and hub.epochs[-1] == epoch != ""


def test_a_second_wipe_before_the_recoverys_own_push_adds_nothing_to_other_rows(
    hubs: Hubs,
) -> None:
    """As above, and the hub is wiped and rebuilt again (y0..y39 at rows 0..39) inside the
    recovery's own push: that push is conditional on the epoch the processor re-registered
    in, so it writes nothing either; the processor recovers again (its ids at 40..59)."""
    make, wipe = hubs
    store, hub, core, _, old, want = _racing(make)
    second = [f"y{j}" for j in range(40)]

    def first() -> None:
        _rebuild(make, wipe, [f"x{j}" for j in range(20)])
        hub.armed = lambda: _rebuild(make, wipe, second)  # the recovery's own push

    hub.armed = first
    n = len(hub.epochs)
    _sync(core)
    assert hub.armed is None and "" not in hub.epochs[n:]  # every push and restore named one
    assert core.stats.hub_resets == 2
    _check_ours(make, store, core, old, want, second, _theirs(40))


def test_a_wipe_before_the_recoverys_restore_restores_nothing_into_other_rows(
    hubs: Hubs,
) -> None:
    """The hub is wiped and rebuilt (x0..x19) inside a push; inside the recovery's restore
    it is wiped again and another processor allocates y0..y39 at rows 0..39 without pushing
    yet (empty rows, which a restore fills): the restore, conditional on the epoch the ids
    were re-registered in, writes nothing; the processor recovers again (its ids at 40..59)."""
    make, wipe = hubs
    store, hub, core, _, old, want = _racing(make)
    second = [f"y{j}" for j in range(40)]

    def first() -> None:
        _rebuild(make, wipe, [f"x{j}" for j in range(20)])
        hub.armed_restore = lambda: _rebuild(make, wipe, second, push=False)

    hub.armed = first
    _sync(core)
    assert hub.armed is None and hub.armed_restore is None
    assert core.stats.hub_resets == 2
    _check_ours(make, store, core, old, want, second, np.zeros((40, 2 * DIM + 1), np.float32))


def test_a_push_without_an_epoch_writes_into_any_table(hubs: Hubs) -> None:
    """``epoch=""`` (and no epoch) keeps the unconditional push; a wrong epoch writes
    nothing and says so."""
    make, wipe = hubs
    hub = make()
    hub.allocate_ids("item", ["a", "b"])  # type: ignore[attr-defined]
    ones = np.ones((1, 2 * DIM + 1), np.float32)
    hub.push_item_deltas(np.array([0]), ones)  # type: ignore[attr-defined]
    epoch = hub.item_table_state()[0]  # type: ignore[attr-defined]
    with pytest.raises(HubReset):
        hub.push_item_deltas(np.array([1]), ones, epoch="not-" + epoch)  # type: ignore[attr-defined]
    hub.push_item_deltas(np.array([1]), ones, epoch="")  # type: ignore[attr-defined]
    hub.push_item_deltas(np.array([1]), ones, epoch=epoch)  # type: ignore[attr-defined]
    assert make().pull_item_offsets()[1][:, 0].tolist() == [1.0, 2.0]  # type: ignore[attr-defined]
    wipe()
    with pytest.raises(HubReset):  # no table at all
        hub.push_item_deltas(np.array([0]), ones, epoch=epoch)  # type: ignore[attr-defined]
    assert make().item_table_state()[1] == 0  # type: ignore[attr-defined]
    hub.allocate_ids("item", ["c"])  # type: ignore[attr-defined]
    hub.push_item_deltas(np.array([0]), ones)  # type: ignore[attr-defined]
    assert make().pull_item_offsets()[0] == ["c"]  # type: ignore[attr-defined]


def test_redis_push_of_a_stale_epoch_writes_nothing(password_redis: int) -> None:
    """The script checks the epoch with the write: a stale push changes no row, bias,
    version or row version and sets no retry token; a retried push whose first try was
    applied is reported applied (-1), not rejected."""
    store = RedisStore(f"redis://:{REDIS_PW}@127.0.0.1:{password_redis}/0",
                       namespace=f"t{uuid.uuid4().hex[:12]}")
    rowver = f"{store.namespace}:item:rowver"
    try:
        store.allocate_ids("item", ["a", "b", "c"])
        v1 = store.push_item_deltas(np.array([0, 1]), np.ones((2, 2)), np.ones(2), token="t1")
        epoch = store.item_table_state()[0]

        def snapshot() -> tuple[object, ...]:
            ids, vectors, bias, version = store.pull_items()
            scores = store._client.zrange(rowver, 0, -1, withscores=True)
            return ids, vectors.tolist(), bias.tolist(), version, scores

        before = snapshot()
        with pytest.raises(HubReset, match="wrote nothing"):
            store.push_item_deltas(np.array([1, 2]), np.full((2, 2), 5.0), np.ones(2),
                                   token="t2", epoch="stale")
        assert snapshot() == before and store.item_version() == v1
        assert store.pull_items_since(v1, 3, epoch)[2].size == 0  # no row versioned
        # the rejected push left no token: once its epoch is right, it applies
        v2 = store.push_item_deltas(np.array([2]), np.ones((1, 2)), token="t2", epoch=epoch)
        assert v2 > v1
        # a retry of an applied push stays "applied before", whatever the epoch
        assert store.push_item_deltas(np.array([0]), np.ones((1, 2)), token="t1",
                                      epoch="stale") == -1
        assert store.pull_items()[1].tolist() == [[1, 1], [1, 1], [1, 1]]
        from kdstream.errors import ConfigError

        with pytest.raises(ConfigError, match="epoch"):
            store.push_item_deltas(np.array([0]), np.ones((1, 2)), epoch=None)  # type: ignore[arg-type]
    finally:
        store.clear()
        store.close()
