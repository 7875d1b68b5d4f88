"""The stream processor's core: broker records -> Learner steps -> one store write per batch.

No faust or broker import here: the faust agent (``_faust_app.py``) and the kafka-python loop
(:class:`KafkaProcessorLoop`, which imports kafka-python lazily) both feed
:meth:`ProcessorCore.process` with micro-batches of records that have ``topic``, ``partition``,
``offset`` and ``value``.

Exactly-once effects over at-least-once delivery
------------------------------------------------
faust's ``stream.take()`` acknowledges a batch even when its body raises, and any consumer
re-delivers records after a crash. So a batch's effects are keyed by partition offsets: the
store batch of every micro-batch carries ``offsets["topic:partition"] = last offset + 1`` and
the cumulative counters ``versions["learned:topic:partition"]`` / ``versions["dead:..."]``,
written in the *same* store transaction (``Store.write_batch`` is atomic; Redis uses one
MULTI/EXEC). On (re)assignment :meth:`ProcessorCore.assign` reads them back, and every record
below the applied offset is skipped and counted as a duplicate. A store write that fails is
retried with backoff (:meth:`ProcessorCore.process` never learns a batch twice: it keeps the
prepared write and retries only that); a batch whose *learning* fails is dead-lettered record by
record with reason ``internal: ...`` and its offsets still advance, so nothing is dropped
silently. Dead letters are published before the store write: after a crash between the two they
are published again, with the same ``(partition, offset)``, which is how a DLQ reader dedupes.

Several processors: merging the shared item tables
--------------------------------------------------
Partitions are keyed by user, so a user's vector has one owner (its partition's processor).
Item rows (vectors ``Q``, context vectors ``C``, biases ``b``) are learned by every processor.
Each processor keeps a local copy and, every ``sync_every_batches`` batches or
``sync_every_s`` seconds (whichever comes first), *pushes* what it changed since its last sync
(local minus the last pulled table) to an :class:`ItemHub`, which adds the deltas server-side,
then *pulls* the merged table and continues from it. Item indices are global (the hub
allocates them atomically), and a new item's initial vector is a deterministic function of its
index, so the hub only ever holds learned offsets and two processors never double an init.

A sync costs what changed, not the catalogue (``ProcessorConfig.incremental_sync``): the
processor marks the rows each step could write (the learner's
:attr:`~kdstream.online.Learner.last_item_rows` and the context rows) and diffs only those;
the hub versions its rows, and :meth:`ItemHub.pull_item_offsets_since` returns only the rows
changed (by anyone) after the version of the last pull, plus the ids allocated since. Rows it
does not return still hold the hub's value locally: they changed neither here (not marked)
nor in the hub. Marked rows are rewritten from the hub too, so the local table ends up
bit-identical to a full pull's. A row's learned change is measured against the local value
the last pull produced (``init + offset``, rounded), so the float32 round trip of that sum is
never pushed back as a change.

Hub resets
----------
The hub's tables can be wiped under running processors (Redis restarted without persistence,
its keys deleted): it then allocates indices from 0 again, while each processor still holds
its rows at the old indices. A processor notices at a sync (the hub's table epoch changed,
it lists fewer ids than the processor holds, its versions went back, or a whole answer lists
other ids at the processor's indices; the check before the push is one cheap
``item_table_state`` call, and a hub whose ``push_item_deltas`` takes an ``epoch`` rejects,
atomically and writing nothing, a push whose rows belong to another table than its own: a
wipe and rebuild between that check and the push never adds deltas to another item's row) or
when an allocation answers a new id with a row that holds another id here; it then logs a
warning and (:meth:`ProcessorCore._recover_hub_reset`) re-registers every id it knows in its
own index order (so a hub rebuilt from empty by one processor gets the old order back),
moves all its item-indexed state to the hub's indices where they differ (tables, optimizer
accumulators, pulled base, popularity, histories, seen pairs, soft-label tables; learned
vectors keep their values), restores its last pulled offsets into the hub rows no processor
restored yet (atomic on the hub: never doubled), and its next sync pushes every row's
change, pulls all and writes the served table whole. That restore and push name the epoch
the ids were re-registered in, so a second wipe before them is rejected and recovered from
again rather than written into the rebuilt table. Knowledge no processor held is lost
with the wipe (rows changed by others after a processor's last pull). Item indices only:
user rows are local to each processor.

Staleness bound: an update a processor makes reaches every other processor's model within
``2 * T`` of wall time, where ``T = min(sync_every_s, time of sync_every_batches batches)``
(at most ``T`` until its next push, plus at most ``T`` until each other processor's next pull),
and reaches the served item table within ``T`` + one batch. Concurrent deltas to one row add
up (Hogwild-style); with few processors and small steps that matches one learner's quality
(``tests/test_processor_core.py`` checks two processors against one).
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from kdstream.errors import ConfigError, ServiceError
from kdstream.online import (
    IndexedSoftLabels,
    Learner,
    LearnerConfig,
    ScoringHistory,
    Vocab,
    ranks_from_scores,
)
from kdstream.student import StudentConfig

from ._codec import (
    _BAD_ID_CHARS,
    MAX_ID_CHARS,
    MAX_RECORD_BYTES,
    TS_MAX,
    TS_MIN,
    RecordLike,
    _dead_letter,
    decode_records,
    decode_soft_labels,
)
from ._deadletter import DeadLetter
from ._event import EVENT_TYPES, RATING_POSITIVE_AT, Event, SoftLabels
from ._item_hub import HubReset, ItemChanges, ItemHub, LocalItemHub, StoreItemHub
from ._item_moves import move_labels, moved, moved_pairs
from ._store import StaleItemBase, Store, StoreBatch, offset_key, parse_offset_key

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_LOGIT_CLIP = 1e4  # |logit| bound: softmax of such gaps is already one-hot
_MIN_TEMPERATURE = 1e-2


def learned_key(topic: str, partition: int) -> str:
    """``versions`` key of the cumulative count of events learned from a partition."""
    return f"learned:{topic}:{partition}"


def event_key(e: Event) -> str:
    """The debug-ledger key of an event: user, item and ``repr(ts)`` joined by tabs."""
    return f"{e.user}\t{e.item}\t{e.ts!r}"


def dead_key(topic: str, partition: int) -> str:
    """``versions`` key of the cumulative count of records dead-lettered from a partition."""
    return f"dead:{topic}:{partition}"


def prequential_keys(topic: str, partition: int) -> tuple[str, str, str]:
    """``versions`` keys of a partition's cumulative prequential counters: events scored,
    hits@k and the NDCG@k sum in millionths (``ProcessorConfig.prequential_k``)."""
    return (
        f"pq_scored:{topic}:{partition}",
        f"pq_hits:{topic}:{partition}",
        f"pq_ndcg_ppm:{topic}:{partition}",
    )


@dataclass(frozen=True)
class ProcessorConfig:
    """Settings of one stream processor.

    Parameters
    ----------
    events_topic, soft_labels_topic, dlq_topic
        Topic names (the offsets and counters in the store are keyed by ``events_topic``).
    sync_every_batches, sync_every_s
        Item-table sync period (push deltas, pull the merged table, write the served item
        table); the first trigger wins. See the module docstring for the staleness bound.
    write_retries
        Store write attempts per batch before :class:`ServiceError` is raised (``0`` = retry
        forever, which the faust agent uses: its ``take()`` must never see an exception).
    retry_backoff_s
        First retry delay; doubles per attempt up to 5 s.
    student, learner
        The model's hyper-parameters.
    debug_ledger
        Also write the key of every learned event (:func:`event_key`) to the store's ledger
        list in the batch's transaction, for fault-injection tests that check per event that
        nothing was lost or learned twice. Off in production (the list only grows).
    prequential_k
        Cut-off of the prequential (test-then-train) HR@k / NDCG@k the processor records
        (``0`` = off). Each batch's positive events of users with earlier events are ranked by
        the student *before* it learns the batch, with the protocol of
        :class:`kdstream.online.Prequential`, and the per-partition hits and counts go into
        the batch's store transaction (exactly-once, like the learned counters). Costs one
        ``(scored events x items)`` scoring per batch and keeps every (user, item) pair seen
        in memory, so it is meant for evaluation runs.
    incremental_sync
        Item syncs cost what changed (see the module docstring): push the rows the steps
        marked, pull the rows changed since the last pull. ``False``: diff the whole local
        table and pull the whole hub table at every sync (the earlier path, kept for
        comparison; both leave bit-identical tables).
    """

    events_topic: str = "kd.events"
    soft_labels_topic: str = "kd.soft-labels"
    dlq_topic: str = "kd.events.dlq"
    sync_every_batches: int = 20
    sync_every_s: float = 2.0
    write_retries: int = 5
    retry_backoff_s: float = 0.2
    student: StudentConfig = field(default_factory=StudentConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    debug_ledger: bool = False
    prequential_k: int = 0
    incremental_sync: bool = True

    def __post_init__(self) -> None:
        if self.prequential_k < 0:
            raise ConfigError(
                f"ProcessorConfig.prequential_k: expected >= 0, got {self.prequential_k!r}"
            )
        if self.sync_every_batches < 1:
            raise ConfigError(
                "ProcessorConfig.sync_every_batches: expected >= 1, "
                f"got {self.sync_every_batches!r}"
            )
        if not self.sync_every_s > 0:
            raise ConfigError(
                f"ProcessorConfig.sync_every_s: expected > 0, got {self.sync_every_s!r}"
            )
        if self.write_retries < 0:
            raise ConfigError(
                f"ProcessorConfig.write_retries: expected >= 0, got {self.write_retries!r}"
            )


@dataclass
class ProcessorStats:
    """Counters of one processor since it started (the store keeps the durable ones)."""

    records: int = 0
    learned: int = 0
    dead_lettered: int = 0
    skipped_duplicates: int = 0
    batches: int = 0
    write_retries: int = 0
    failed_batches: int = 0
    item_syncs: int = 0
    soft_labels_applied: int = 0
    seconds_learning: float = 0.0
    seconds_writing: float = 0.0
    seconds_syncing: float = 0.0  # item-table syncs (hub push + pull), part of the batches
    max_batch_s: float = 0.0  # the slowest process() call: a latency tail's upper bound
    seconds_writing_items: float = 0.0  # the store writes that carried the served item table
    hub_resets: int = 0  # item hub resets recovered from (ProcessorCore._recover_hub_reset)


@dataclass
class BatchResult:
    """What one :meth:`ProcessorCore.process` call did."""

    learned: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    skipped: int = 0
    offsets: dict[str, int] = field(default_factory=dict)


_WEIGHTS = dict(EVENT_TYPES)


def _signal(e: Event) -> float:
    w = _WEIGHTS[e.type]
    if e.type == "rating" and e.value is not None and e.value < RATING_POSITIVE_AT:
        return -abs(w)
    return w


_FAST_FIELDS = frozenset({"user", "item", "type", "ts", "value", "v"})
_loads = json.loads  # the C decoder; the strict one (hooks, Python level) is ~10x slower


def _fast_event(obj: object, raw: bytes) -> Event | None:
    """The common, plainly valid event at C-decoder speed; None = let the strict decoder judge.

    ``obj`` is ``raw`` parsed by the C decoder, and ``raw`` has no backslash. Accepts only what
    :func:`decode_event` accepts unchanged: string ids, a lower-case known type, numeric ``ts``
    in range, a numeric ``value``. A duplicate key is ruled out by counting quotes: without
    backslashes every quote delimits one of the object's keys or string values, so a repeated
    key leaves more quotes than the parsed dict explains.
    """
    if type(obj) is not dict or not obj.keys() <= _FAST_FIELDS:
        return None
    user, item = obj.get("user"), obj.get("item")
    kind, ts, value = obj.get("type", "view"), obj.get("ts"), obj.get("value")
    if not (
        type(user) is str
        and type(item) is str
        and type(kind) is str
        and kind in _WEIGHTS
        and (type(ts) is float or type(ts) is int)
        and TS_MIN <= ts <= TS_MAX
        and 0 < len(user) <= MAX_ID_CHARS
        and 0 < len(item) <= MAX_ID_CHARS
    ):
        return None
    version = obj.get("v", 1)
    if type(version) is not int or version != 1:
        return None
    if value is not None and not (type(value) is float or type(value) is int):
        return None
    if kind == "rating" and value is None:
        return None
    if _BAD_ID_CHARS.search(user) or _BAD_ID_CHARS.search(item):
        return None
    n_str = 2 + ("type" in obj)  # user, item and type are the string values
    if raw.count(b'"') != 2 * (len(obj) + n_str):
        return None
    return Event(user, item, kind, float(ts), None if value is None else float(value))


def _one_object(raw: object) -> bool:
    """Bytes that can only be one flat JSON object (safe to parse joined with others)."""
    return (
        type(raw) is bytes
        and len(raw) <= MAX_RECORD_BYTES
        and raw[:1] == b"{"
        and raw[-1:] == b"}"
        and raw.count(b"{") == 1
        and raw.count(b"}") == 1
        and b"\\" not in raw
    )


def decode_event_records(
    records: Sequence[RecordLike], now: float
) -> tuple[list[tuple[RecordLike, Event]], list[DeadLetter]]:
    """:func:`decode_records` for events, with a bulk path for the common, valid shape.

    The flat single-object records of a batch are parsed with ONE C-decoder call on their
    comma-joined array (per-call overhead dominates for ~100-byte records); whatever that path
    does not positively accept goes through the strict decoder, so results and dead letters
    are the strict decoder's.
    """
    bulk = [r for r in records if _one_object(r.value)]
    objs: list[object] | None = None
    if bulk:
        try:
            objs = _loads(b"[" + b",".join([r.value for r in bulk]) + b"]")
        except ValueError:
            objs = None
        if objs is not None and len(objs) != len(bulk):
            objs = None
    good: list[tuple[RecordLike, Event]] = []
    slow: list[RecordLike] = []
    if objs is None:
        slow = list(records)
    else:
        fast_ok: set[int] = set()
        for r, obj in zip(bulk, objs, strict=True):
            e = _fast_event(obj, r.value)
            if e is not None:
                good.append((r, e))
                fast_ok.add(id(r))
        if len(good) != len(records):
            slow = [r for r in records if id(r) not in fast_ok]
    if not slow:
        return good, []
    strict, dead = decode_records(slow, ts=now)
    if strict:  # keep stream order within each partition
        good.extend(strict)
        good.sort(key=lambda pair: (pair[0].partition, pair[0].offset))
    return good, dead


class ProcessorCore:
    """Decode, dedupe by offset, learn and write one store batch per micro-batch.

    Parameters
    ----------
    store
        Serving state; written once per batch, atomically, with the offsets the batch covers.
    config
        See :class:`ProcessorConfig`.
    hub
        Shared item state for several processors (``None``: a private :class:`LocalItemHub`).
    dead_letter
        Called with each dead letter before the store write (e.g. produce it to the DLQ).
    clock, sleep
        Injectable for tests.

    Examples
    --------
    >>> from kdstream.stream import MemoryStore, Record
    >>> store = MemoryStore()
    >>> core = ProcessorCore(store, ProcessorConfig(student=StudentConfig(dim=4)))
    >>> core.assign([0])
    {0: 0}
    >>> recs = [Record("kd.events", 0, 0, None, b'{"user":"u1","item":"i1","ts":1}', 0.0),
    ...         Record("kd.events", 0, 1, None, b'oops', 0.0)]
    >>> r = core.process(recs)
    >>> r.learned, len(r.dead), store.applied_offset("kd.events", 0)
    (1, 1, 2)
    >>> core.process(recs).skipped
    2
    """

    def __init__(
        self,
        store: Store,
        config: ProcessorConfig | None = None,
        *,
        hub: ItemHub | None = None,
        dead_letter: Callable[[DeadLetter], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = cfg = config or ProcessorConfig()
        self.store = store
        self.hub: ItemHub = hub if hub is not None else LocalItemHub()
        # whether its pushes take the epoch their rows belong to (hubs of the bare protocol
        # do not: a reset between the check and their push is found by the pull)
        self._push_takes_epoch = _takes_epoch(self.hub.push_item_deltas)
        self.learner = Learner(cfg.student, cfg.learner)
        self.users = Vocab()
        self._item_index: dict[str, int] = {}
        self._item_ids: list[str] = []  # global index -> id, as far as known here
        self.stats = ProcessorStats()
        self._dead_letter = dead_letter
        #: called after a batch's dead letters were handed to ``dead_letter``, before its write
        self.flush_dead_letters: Callable[[], None] | None = None
        self._clock = clock
        self._sleep = sleep
        self._applied: dict[int, int] = {}
        self._learned: dict[int, int] = {}
        self._dead: dict[int, int] = {}
        self._base = np.zeros((0, self._width), np.float32)  # table at the last pull
        # rows a step may have written since the last sync (incremental_sync); a learning
        # failure may have written anywhere, so it marks the whole table
        self._dirty = np.zeros(0, bool)
        self._dirty_all = False
        self._hub_version: int | None = None  # the hub table version of the last pull
        self._hub_epoch = ""  # ... and its epoch ("" for hubs that never restart versions)
        # ids the last pull listed: _item_ids may run further, with gaps ("") where other
        # processors allocated indices this one has not pulled yet
        self._hub_ids = 0
        # the served table (incremental_sync): rows pulled since the last store write that
        # carried it, that write's hub version (None: the next write sends it whole) and ids
        self._served = np.zeros(0, bool)
        self._served_version: int | None = None
        self._served_n = 0
        self._init_rows = 0  # rows of Q whose deterministic init is in place
        self._q0 = np.zeros((0, cfg.student.dim), np.float32)  # cached deterministic inits
        self._batches_since_sync = 0
        self._last_sync = clock()
        self.soft_labels: dict[str, SoftLabels] = {}  # latest per key (the "table")
        self.teacher_seen_at = 0.0  # epoch seconds the current teacher version arrived
        self.teacher_trained_until = 0.0  # event time of the freshest soft labels applied
        self._synced_once = False
        self._sync_now = False  # a hub reset was recovered from mid-batch: sync at its end
        self._marked = np.zeros(0, np.int64)  # rows the current sync pushed from
        self._to_restore: np.ndarray | None = None  # rows a hub reset left to restore
        # prequential evaluation (config.prequential_k): per partition (scored, hits, ndcg sum)
        self._pq: dict[int, tuple[int, int, float]] = {}
        self._pq_pending: dict[int, tuple[int, int, float]] = {}
        self._pq_history = ScoringHistory()

    @property
    def _width(self) -> int:
        return 2 * self.config.student.dim + 1

    # ------------------------------------------------------------- partitions
    def assign(self, partitions: Iterable[int]) -> dict[int, int]:
        """Take over partitions: read their applied offsets and counters from the store.

        Returns ``{partition: offset to seek to}`` (0 for a partition never applied).
        """
        topic = self.config.events_topic
        versions = self.store.versions()
        out = {}
        for p in partitions:
            applied = self.store.applied_offset(topic, p) or 0
            self._applied[p] = applied
            self._learned[p] = versions.get(learned_key(topic, p), 0)
            self._dead[p] = versions.get(dead_key(topic, p), 0)
            ks, kh, kn = prequential_keys(topic, p)
            self._pq[p] = (versions.get(ks, 0), versions.get(kh, 0), versions.get(kn, 0) / 1e6)
            out[p] = applied
        if not self._synced_once:
            self.sync_items()  # start from the merged item table, not from random rows
        return out

    def revoke(self, partitions: Iterable[int]) -> None:
        """Give partitions up (their state stays in the store for the next owner)."""
        for p in partitions:
            self._applied.pop(p, None)
            self._learned.pop(p, None)
            self._dead.pop(p, None)
            self._pq.pop(p, None)

    def applied(self, partition: int) -> int | None:
        """Next offset to apply on ``partition`` (None when not assigned here)."""
        return self._applied.get(partition)

    # ------------------------------------------------------------ soft labels
    def apply_soft_labels(self, records: Sequence[RecordLike]) -> int:
        """Decode soft-label records, keep the latest per key and feed them to the Learner."""
        decoded, dead = decode_records(records, decode=decode_soft_labels, ts=time.time())
        for d in dead:
            _log.warning("bad soft-label record dropped: %s", d.reason)
        return self.apply_soft_label_values([s for _, s in decoded])

    def apply_soft_label_values(self, labels: Sequence[SoftLabels]) -> int:
        """Feed decoded soft labels to the Learner (users are added; unknown items -> -1)."""
        for s in labels:
            self.soft_labels[s.key] = s
        before = self.learner.teacher_version
        groups: dict[tuple[int, bool, float, float], list[SoftLabels]] = {}
        for s in labels:
            # a tiny temperature would blow the clipped logits up past float32 again
            temperature = min(max(s.temperature, _MIN_TEMPERATURE), 1e6)
            key = (s.teacher_version, s.user is None, s.trained_until, temperature)
            groups.setdefault(key, []).append(s)
        n = 0
        get = self._item_index.get
        for (version, transition, trained_until, temperature), msgs in sorted(groups.items()):
            width = max(len(m.items) for m in msgs)
            keys: list[int] = []
            items = np.full((len(msgs), width), -1, np.int64)
            logits = np.full((len(msgs), width), -np.inf, np.float32)
            for m in msgs:
                if transition:
                    key = get(m.after_item or "")
                    if key is None:
                        continue
                else:
                    key = self.users.add(m.user or "")
                row = len(keys)
                keys.append(key)
                idx = np.fromiter((get(i, -1) for i in m.items), np.int64, len(m.items))
                items[row, : len(idx)] = idx
                # finite float64 logits can still overflow float32 (and exp): clip them
                clipped = np.clip(np.asarray(m.logits, np.float64), -_LOGIT_CLIP, _LOGIT_CLIP)
                logits[row, : len(idx)] = np.where(idx >= 0, clipped, -np.inf)
            if not keys:
                continue
            k = len(keys)
            self.learner.apply_soft_labels(
                IndexedSoftLabels(
                    version=version,
                    trained_until=trained_until,
                    temperature=temperature,
                    keys=np.asarray(keys, np.int64),
                    items=items[:k],
                    logits=logits[:k],
                    transition=transition,
                )
            )
            n += k
        self.stats.soft_labels_applied += n
        if n:
            newest = max(s.trained_until for s in labels)
            self.teacher_trained_until = max(self.teacher_trained_until, newest)
        if self.learner.teacher_version > before:
            # wall time a new teacher version arrived: the API's /healthz reports its age
            self.teacher_seen_at = time.time()
        return n

    # ----------------------------------------------------------------- items
    def _item_indices(self, ids: list[str]) -> np.ndarray:
        get = self._item_index.get
        missing = list(dict.fromkeys(i for i in ids if get(i) is None))
        if missing:
            allocated = self._retrying(
                "item id allocation", lambda: self.hub.allocate_ids("item", missing)
            )
            here, n_here = self._item_ids, len(self._item_ids)
            for item, idx in zip(missing, allocated, strict=True):
                if idx < n_here and here[idx]:  # a row of another id: the hub was reset
                    self._recover_hub_reset(
                        f"it gave new item {item!r} index {idx}, the row of {here[idx]!r} here",
                        fresh=dict(zip(missing, allocated, strict=True)),
                    )
                    return np.fromiter((get(i) for i in ids), np.int64, len(ids))  # type: ignore[misc]
            for item, idx in zip(missing, allocated, strict=True):
                self._item_index[item] = idx
                if idx >= len(self._item_ids):
                    self._item_ids.extend([""] * (idx + 1 - len(self._item_ids)))
                self._item_ids[idx] = item
        return np.fromiter((get(i) for i in ids), np.int64, len(ids))  # type: ignore[misc]

    def _init_q(self, rows: np.ndarray) -> np.ndarray:
        """Deterministic initial item vectors from global indices (equal in every process)."""
        cfg = self.config.student
        seed = 0 if cfg.seed is None else cfg.seed
        out = np.empty((len(rows), cfg.dim), np.float32)
        for j, r in enumerate(rows.tolist()):
            out[j] = np.random.default_rng((seed, 7919, r)).standard_normal(cfg.dim)
        return out * np.float32(cfg.init_std)

    def _grow(self, n_users: int, n_items: int) -> None:
        st = self.learner.student
        st.grow(n_users, n_items)
        cap = len(st.Q)
        if cap > self._init_rows:
            new = np.arange(self._init_rows, cap)
            st.Q[new] = self._init_q_cache(cap)[new]
            self._init_rows = cap
        if len(self._base) < cap:
            grown = np.zeros((cap, self._width), np.float32)
            grown[: len(self._base)] = self._base
            self._base = grown
        if len(self._dirty) < cap:
            dirty = np.zeros(cap, bool)
            dirty[: len(self._dirty)] = self._dirty
            self._dirty = dirty
        if len(self._served) < cap:
            served = np.zeros(cap, bool)
            served[: len(self._served)] = self._served
            self._served = served

    def _local_deltas(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), width)`` learned change of ``rows`` since the last pull.

        Q is measured against ``init + offset`` as the pull rounded it (the value the row
        held), not against the offset: ``(init + offset) - init`` is not ``offset`` in
        float32, and that residue is no change (an untouched row's delta is exactly 0).
        """
        st = self.learner.student
        d = self.config.student.dim
        base = self._base[rows]
        out = np.empty((len(rows), self._width), np.float32)
        n = int(rows.max()) + 1 if len(rows) else 0
        out[:, :d] = st.Q[rows] - (self._init_q_cache(n)[rows] + base[:, :d])
        out[:, d : 2 * d] = st.C[rows] - base[:, d : 2 * d]
        out[:, 2 * d] = st.b[rows] - base[:, 2 * d]
        return out

    def _mark_dirty(self, parts: Iterable[np.ndarray]) -> None:
        dirty = self._dirty
        for rows in parts:
            flat = np.asarray(rows).ravel()
            dirty[flat[flat >= 0]] = True  # -1 pads contexts

    def _init_q_cache(self, n: int) -> np.ndarray:
        have = len(self._q0)
        if have < n:
            extra = self._init_q(np.arange(have, max(n, 2 * have)))
            self._q0 = np.concatenate([self._q0, extra])
        return self._q0[:n]

    def sync_items(self, *, full: bool | None = None) -> StoreBatch:
        """Push local item changes since the last pull, pull the merged table.

        ``full`` overrides ``ProcessorConfig.incremental_sync`` for this call (``True``: diff
        and pull the whole table). Returns a store batch with the served item table for the
        caller to write along with its next batch: whole (``item_ids``, ``item_vectors``,
        ``item_bias``) on the first sync, with ``incremental_sync=False`` or ``full=True``;
        otherwise a partial update (``item_rows`` ...) of the rows pulled since the last
        write :meth:`process` made of it, with the ids allocated since, tagged with the hub
        versions it spans (``source_since``, ``source_version``; see :class:`StoreBatch`).
        Popularity is whole in both (4 bytes per item).

        A hub found reset (see :meth:`_recover_hub_reset`) before the push, by the push
        (a hub that takes the epoch of the rows pushed rejects them when its table is of
        another: a reset between the check and the push) or by the pull is recovered from,
        and the sync starts over (pushing every row, pulling all).
        """
        incremental = self.config.incremental_sync if full is None else not full
        since = getattr(self.hub, "pull_item_offsets_since", None)
        reason = self._hub_reset_before_push()
        for _ in range(_RESET_ATTEMPTS):
            if reason is not None:
                self._recover_hub_reset(reason)
            reason = self._restore_offsets()  # a no-op unless a recovery's restore failed
            if reason is None:
                reason = self._push_item_changes(incremental)
            if reason is not None:  # reset after the check: the hub wrote nothing
                continue
            pulled = self._pull_item_changes(incremental, since)
            reason = pulled[0]
            if reason is None:
                return self._apply_pull(*pulled[1:])
        raise ServiceError(
            f"item hub: reset again while this processor re-registered its ids "
            f"({_RESET_ATTEMPTS} times; last: {reason}); check the hub's persistence and "
            "that nothing deletes its keys, then restart the processors"
        )

    def _push_item_changes(self, incremental: bool) -> str | None:
        """Push the rows changed since the last pull (marked ones, or all), on the condition
        that the hub's table is still of the last pull's epoch (where the hub takes one).
        Returns why the hub looks reset when it rejected the push (it wrote nothing), else
        None."""
        n_local = self.learner.student.n_items
        if incremental and not self._dirty_all:
            marked = np.flatnonzero(self._dirty[:n_local])
        else:
            marked = np.arange(n_local)
        self._marked = marked
        if len(marked):
            delta = self._local_deltas(marked)
            changed = np.any(delta != 0, axis=1)
            rows, delta = marked[changed], delta[changed]
            epoch = self._conditional_epoch()
            if len(rows) and epoch:
                try:
                    self._retrying("item hub push",
                                   lambda: self.hub.push_item_deltas(rows, delta, epoch=epoch))
                except HubReset as exc:
                    return f"it rejected a push of epoch {epoch!r}: {exc}"
            elif len(rows):
                self._retrying(
                    "item hub push", lambda: self.hub.push_item_deltas(rows, delta)
                )
        return None

    def _pull_item_changes(
        self, incremental: bool, since: Callable[..., ItemChanges] | None
    ) -> tuple[str | None, ItemChanges | None, int, list[str], np.ndarray, np.ndarray]:
        """``(reset reason or None, changes or None (a full pull), start, ids, rows,
        offsets)`` of a pull; the reason says why the hub looks reset (nothing applied)."""
        changes: ItemChanges | None = None
        reason = None
        if incremental and since is not None:
            version = 0 if self._hub_version is None else self._hub_version
            epoch = self._hub_epoch
            if epoch:
                changes = self._retrying(
                    "item hub pull", lambda: since(version, self._hub_ids, epoch=epoch)
                )
            else:  # hubs without epochs take no epoch argument
                changes = self._retrying(
                    "item hub pull", lambda: since(version, self._hub_ids)
                )
            if self._hub_version is not None and changes.version < version:
                reason = f"its item table version went back from {version} to {changes.version}"
            elif epoch and changes.epoch != epoch:
                reason = f"its item table epoch changed from {epoch!r} to {changes.epoch!r}"
        if changes is None:
            ids, offsets = self._retrying("item hub pull", self.hub.pull_item_offsets)
            start, new_ids, pulled = 0, ids, np.arange(len(ids))
        else:
            start, new_ids, pulled, offsets = (
                changes.start, changes.ids, changes.rows, changes.offsets
            )
        if reason is None and start == 0:
            reason = self._map_disagrees(new_ids)
        return reason, changes, start, new_ids, pulled, offsets

    def _apply_pull(
        self,
        changes: ItemChanges | None,
        start: int,
        new_ids: list[str],
        pulled: np.ndarray,
        offsets: np.ndarray,
    ) -> StoreBatch:
        """Take a pull's rows and ids into the local table; the served table to write."""
        st = self.learner.student
        d = self.config.student.dim
        marked = self._marked
        if changes is None:
            self._hub_version = None
            self._hub_epoch = ""
        else:
            self._hub_version = changes.version
            self._hub_epoch = changes.epoch
        n = start + len(new_ids)
        for j, item in enumerate(new_ids):
            if item not in self._item_index:
                self._item_index[item] = start + j
        self._item_ids[start:] = new_ids
        self._hub_ids = n
        self._grow(len(self.users), n)
        if len(pulled) and offsets.shape[1] == 0:  # ids allocated, nothing pushed yet
            offsets = np.zeros((len(pulled), self._width), np.float32)
        if len(pulled) and offsets.shape[1] != self._width:
            raise ServiceError(
                f"item hub rows have width {offsets.shape[1]}, expected {self._width} "
                f"(2 * dim + 1): another processor runs with another student dim"
            )
        if changes is not None and len(marked):
            # marked rows the hub did not send still hold its value there: rewrite them from
            # it as a full pull would (a change below float32 resolution pushes nothing)
            dirty = self._dirty
            dirty[pulled] = False
            extra = marked[dirty[marked]]
            if len(extra):
                pulled = np.concatenate([pulled, extra])
                offsets = np.concatenate([offsets, self._base[extra]])
        if len(pulled):
            q0 = self._init_q_cache(max(n, st.n_items))
            if changes is None:  # every row, in order: slices instead of gathers
                st.Q[:n] = q0[:n] + offsets[:, :d]
                st.C[:n] = offsets[:, d : 2 * d]
                st.b[:n] = offsets[:, 2 * d]
                self._base[:n] = offsets
            else:
                st.Q[pulled] = q0[pulled] + offsets[:, :d]
                st.C[pulled] = offsets[:, d : 2 * d]
                st.b[pulled] = offsets[:, 2 * d]
                self._base[pulled] = offsets
                self._served[pulled] = True
        self._dirty[:] = False
        self._dirty_all = False
        self._sync_now = False
        self._batches_since_sync = 0
        self._last_sync = self._clock()
        self._synced_once = True
        self.stats.item_syncs += 1
        if not n:
            return StoreBatch()
        version = None if changes is None else changes.version
        # after a hub reset (_served_version None) the next write is whole
        return self._served_table(n, version, partial=changes is not None)

    # ------------------------------------------------------------ hub resets
    def _hub_reset_before_push(self) -> str | None:
        """Why the hub looks reset since the last pull, from its ``item_table_state`` (a hub
        without one is checked by the pull only); None when it does not."""
        if not self._synced_once:
            return None
        state = self._table_state()
        if state is None:
            return None
        epoch, n_ids = state
        if n_ids < len(self._item_ids):
            return (f"it lists {n_ids} item ids, this processor holds indices up to "
                    f"{len(self._item_ids) - 1}")
        if self._hub_epoch and epoch != self._hub_epoch:
            return f"its item table epoch changed from {self._hub_epoch!r} to {epoch!r}"
        return None

    def _table_state(self) -> tuple[str, int] | None:
        """The hub's ``item_table_state()`` (epoch, number of ids), None where it has none."""
        state = getattr(self.hub, "item_table_state", None)
        return None if state is None else self._retrying("item hub check", state)

    def _table_epoch(self) -> str:
        """The hub's table epoch now; "" for a hub without epochs or conditional pushes."""
        state = self._table_state() if self._push_takes_epoch else None
        return "" if state is None else str(state[0])

    def _conditional_epoch(self) -> str:
        """The epoch this processor's pushes and restores name ("": unconditional)."""
        return self._hub_epoch if self._push_takes_epoch else ""

    def _map_disagrees(self, ids: list[str]) -> str | None:
        """Why the hub's whole id list ``ids`` contradicts the local map; None when it
        does not. Gaps ("": allocated elsewhere, not pulled yet) lie past the last pull."""
        mine = self._item_ids
        if len(ids) < len(mine):
            return (f"it lists {len(ids)} item ids, this processor holds indices up to "
                    f"{len(mine) - 1}")
        head = min(self._hub_ids, len(mine))
        if ids[:head] != mine[:head]:
            j = next(j for j in range(head) if ids[j] != mine[j])
            return f"it lists {ids[j]!r} at index {j}, which holds {mine[j]!r} here"
        for j in range(head, len(mine)):
            if mine[j] and ids[j] != mine[j]:
                return f"it lists {ids[j]!r} at index {j}, which holds {mine[j]!r} here"
        return None

    def _recover_hub_reset(self, reason: str, fresh: Mapping[str, int] | None = None) -> None:
        """The hub's tables were wiped (and maybe rebuilt by others) since this processor
        took its indices: re-register every id it knows, in its own index order (a hub
        rebuilt from empty by it gets the old order back), move all local item state to the
        hub's indices where they differ, and restore the hub's offsets of its rows where no
        other processor has yet. The next sync pushes every row's change and pulls all.

        ``fresh``: ids the hub just allocated (their indices are the hub's already).
        """
        known = sorted(self._item_index.items(), key=lambda kv: kv[1])
        _log.warning("item hub reset detected (%s): re-registering %d item ids and restoring "
                     "their offsets", reason, len(known))
        ids = [item for item, _ in known]
        old = np.fromiter((idx for _, idx in known), np.int64, len(known))
        answers: list[int] = []
        for j in range(0, len(ids), _REREGISTER_CHUNK):  # in order, in bounded calls
            chunk = ids[j : j + _REREGISTER_CHUNK]
            answers += self._retrying(
                "item id re-registration", lambda c=chunk: self.hub.allocate_ids("item", c)
            )
        new = np.asarray(answers, np.int64)
        index = dict(zip(ids, new.tolist(), strict=True))
        index.update(fresh or {})
        if len(set(index.values())) != len(index):
            raise ServiceError(
                "item hub: it answered one index for two item ids while this processor "
                "re-registered its ids after a reset (its tables were wiped again?); check the "
                "hub's persistence and that nothing deletes its keys, then restart the processors"
            )
        if not np.array_equal(old, new):
            self._remap_items(old, new)
        self._item_index = index
        self._item_ids = [""] * (max(index.values()) + 1 if index else 0)
        for item, idx in index.items():
            self._item_ids[idx] = item
        # rows past the last id are no item's now (a move freed them): out of the catalogue,
        # so no step draws them and no push sends them
        self._grow(len(self.users), len(self._item_ids))
        self.learner.student.n_items = len(self._item_ids)
        # the hub's table is another one now: pull it all, serve it whole, push every row;
        # that push is conditional too, on the epoch of the table the ids were just
        # registered in, so a second wipe before it is rejected by the hub, not written over
        self._hub_version = None
        self._hub_epoch = self._table_epoch()
        self._hub_ids = 0
        self._served_version = None
        self._dirty_all = True
        self._sync_now = True
        self.stats.hub_resets += 1
        self._to_restore = new  # kept until the hub took it (a sync retries a failed one)
        self._restore_offsets()  # a rejection (wiped again) is found by the sync's checks

    def _restore_offsets(self) -> str | None:
        """Give the hub this processor's last pulled offsets of the rows a recovery left to
        restore where it has none (another processor may have restored them first: theirs
        stand, not doubled), on the condition that the table is still of the epoch the ids
        were re-registered in. Returns why the hub looks reset when it rejected the restore
        (it wrote nothing, and the rows stay to restore), else None."""
        rows = self._to_restore
        if rows is None:
            return None
        base = self._base[rows]
        keep = np.any(base != 0, axis=1)
        rows, base = rows[keep], base[keep]
        restore = getattr(self.hub, "restore_item_offsets", None)
        epoch = self._conditional_epoch()
        if not len(rows):
            pass
        elif restore is not None and epoch and _takes_epoch(restore):
            try:
                self._retrying("item hub restore", lambda: restore(rows, base, epoch=epoch))
            except HubReset as exc:
                return f"it rejected a restore of epoch {epoch!r}: {exc}"
        elif restore is not None:
            self._retrying("item hub restore", lambda: restore(rows, base))
        else:
            self._restore_by_push(rows, base)
        self._to_restore = None
        return None

    def _restore_by_push(self, rows: np.ndarray, base: np.ndarray) -> None:
        """The restore on a hub without ``restore_item_offsets``: push into the rows its
        table holds zero in (not atomic: two processors restoring one row at once would
        both add theirs)."""
        _, table = self._retrying("item hub pull", self.hub.pull_item_offsets)
        empty = rows >= len(table)
        inside = rows[~empty]
        empty[~empty] = ~np.any(table[inside] != 0, axis=1) if table.shape[1] else True
        if empty.any():
            self._retrying("item hub restore",
                           lambda: self.hub.push_item_deltas(rows[empty], base[empty]))

    def _remap_items(self, old: np.ndarray, new: np.ndarray) -> None:
        """Move every item-indexed piece of local state from rows ``old`` to rows ``new``:
        the student's tables and optimizer accumulators, the pulled base, popularity, the
        users' histories, seen pairs, soft-label tables (keys and candidates). Learned
        vectors move as they are, so the offsets against the new rows' inits change; rows
        no known id moves to start afresh (init, zero)."""
        lr = self.learner
        st = lr.student
        d = self.config.student.dim
        self._grow(len(self.users), max(int(new.max()) + 1, st.n_items))
        cap = len(st.Q)
        src = np.full(cap, -1, np.int64)
        src[new] = old
        lut = np.full(cap + 1, -1, np.int64)  # old row -> new row; the last entry for -1
        lut[old] = new
        q0 = self._init_q_cache(cap)
        pulled_q = q0[old] + self._base[old, :d]  # the Q values the last pull left
        st.Q[:] = moved(st.Q, src, q0)
        for table in (st.C, st.b, st.gQ, st.gC, st.gb, self._base):
            table[:] = moved(table, src, 0)
        self._base[new, :d] = pulled_q - q0[new]
        lr.counts._grow(cap)
        lr.counts._s[:] = moved(lr.counts._s, src, 0)
        lr.negatives._p = np.zeros(0)  # rebuilt from the moved counts at the next draw
        lr.last_item_rows = ()
        hist = st.hist
        hist[:] = np.where(hist >= 0, lut[np.minimum(hist, cap)], -1)
        st.seen = moved_pairs(st.seen, lut)
        self._pq_history.seen = moved_pairs(self._pq_history.seen, lut)
        move_labels(lr.user_labels, lut, None)
        move_labels(lr.item_labels, lut, src)
        self._served[:] = False

    def _served_table(self, n: int, version: int | None, *, partial: bool) -> StoreBatch:
        """The served item table of the first ``n`` items, at hub ``version``: a partial
        update when asked and a write of it since a known version stands."""
        st = self.learner.student
        pop = self.learner.counts.scores(n).astype(np.float32)
        since = self._served_version
        if partial and version is not None and since is not None and self._served_n <= n:
            rows = np.flatnonzero(self._served[:n])
            if self._served_n < n:  # new items: their rows hold inits the store lacks
                rows = np.union1d(rows, np.arange(self._served_n, n))
            return StoreBatch(
                item_ids=list(self._item_ids[self._served_n : n]),
                item_ids_from=self._served_n,
                item_rows=rows,
                item_row_vectors=st.Q[rows],
                item_row_bias=st.b[rows],
                popularity=pop,
                source_since=since,
                source_version=version,
            )
        return StoreBatch(
            item_ids=list(self._item_ids[:n]),
            item_vectors=st.Q[:n].copy(),
            item_bias=st.b[:n].copy(),
            popularity=pop,
            source_version=version,
        )

    def _served_written(self, batch: StoreBatch) -> None:
        """A store write carried the served table of ``batch``: later partial updates
        start from it."""
        self._served_version = batch.source_version
        self._served_n = self._hub_ids
        self._served[:] = False

    def _sync_due(self) -> bool:
        return (
            self._sync_now
            or self._batches_since_sync >= self.config.sync_every_batches
            or self._clock() - self._last_sync >= self.config.sync_every_s
        )

    # --------------------------------------------------------------- batches
    def process(self, records: Sequence[RecordLike], now: float | None = None) -> BatchResult:
        """Apply one micro-batch; returns what was learned, dead-lettered and skipped.

        Records of partitions not assigned yet are assigned on the fly (their applied offset
        read from the store first). Every record ends up learned, dead-lettered, or skipped as
        a duplicate of an applied one.
        """
        t0 = time.perf_counter()
        try:
            return self._process(records, now)
        finally:
            self.stats.max_batch_s = max(self.stats.max_batch_s, time.perf_counter() - t0)

    def _process(self, records: Sequence[RecordLike], now: float | None) -> BatchResult:
        topic = self.config.events_topic
        now = time.time() if now is None else now
        new_parts = {r.partition for r in records} - set(self._applied)
        if new_parts:
            self.assign(sorted(new_parts))
        fresh = [r for r in records if r.offset >= self._applied[r.partition]]
        result = BatchResult(skipped=len(records) - len(fresh))
        self.stats.skipped_duplicates += result.skipped
        self.stats.records += len(records)
        if not fresh:
            return result
        decoded, dead = decode_event_records(fresh, now)
        start = time.perf_counter()
        self._pq_pending = {}
        try:
            batch = self._learn([r for r, _ in decoded], [e for _, e in decoded])
        except ServiceError:
            raise  # the item hub is down: not the records' fault; the caller retries
        except Exception as exc:  # a learning failure must not drop the batch silently
            batch, dead = self._fail_batch(fresh, exc, now)
            decoded = []
            self._pq_pending = {}
        self.stats.seconds_learning += time.perf_counter() - start
        if self._sync_due():
            t_sync = time.perf_counter()
            item_batch = self.sync_items()
            self.stats.seconds_syncing += time.perf_counter() - t_sync
            _set_items(batch, item_batch)
        else:
            item_batch = None
        learned_by_p: dict[int, int] = {}
        for r, _ in decoded:
            learned_by_p[r.partition] = learned_by_p.get(r.partition, 0) + 1
        dead_by_p: dict[int, int] = {}
        for d in dead:
            p = int(d.partition or 0)
            dead_by_p[p] = dead_by_p.get(p, 0) + 1
        last: dict[int, int] = {}
        for r in fresh:
            last[r.partition] = max(last.get(r.partition, -1), r.offset)
        for p, off in last.items():
            batch.offsets[offset_key(topic, p)] = off + 1
            batch.versions[learned_key(topic, p)] = self._learned[p] + learned_by_p.get(p, 0)
            batch.versions[dead_key(topic, p)] = self._dead[p] + dead_by_p.get(p, 0)
            if self.config.prequential_k:
                scored, hits, ndcg = self._pq_total(p)
                ks, kh, kn = prequential_keys(topic, p)
                batch.versions[ks] = scored
                batch.versions[kh] = hits
                batch.versions[kn] = round(ndcg * 1e6)
        if self.config.debug_ledger:
            batch.ledger = [event_key(e) for _, e in decoded]
        if self._dead_letter is not None and dead:
            for d in dead:
                self._dead_letter(d)
            if self.flush_dead_letters is not None:
                self.flush_dead_letters()  # durable in the DLQ before marked applied
        try:
            self._write(batch)
        except StaleItemBase as exc:
            # the store serves a table older than this partial update's base (another
            # writer's whole table of an earlier version): send the whole table
            assert item_batch is not None
            _log.info("served item table: %s; writing it whole", exc)
            _set_items(batch, self._served_table(self._hub_ids, batch.source_version,
                                                 partial=False))
            self._write(batch)
        if item_batch is not None and (batch.item_rows is not None or batch.item_vectors
                                       is not None):
            self._served_written(batch)
        for p, off in last.items():
            self._applied[p] = off + 1
            self._learned[p] += learned_by_p.get(p, 0)
            self._dead[p] += dead_by_p.get(p, 0)
            if self.config.prequential_k:
                self._pq[p] = self._pq_total(p)
        self._batches_since_sync += 1
        self.stats.batches += 1
        self.stats.learned += len(decoded)
        self.stats.dead_lettered += len(dead)
        result.learned = len(decoded)
        result.dead = dead
        result.offsets = dict(batch.offsets)
        return result

    def _fail_batch(
        self, records: Sequence[RecordLike], exc: BaseException, now: float
    ) -> tuple[StoreBatch, list[DeadLetter]]:
        _log.error("learning a batch of %d records failed; dead-lettering it: %r",
                   len(records), exc)
        self.stats.failed_batches += 1
        self._dirty_all = True  # the step may have written rows before it failed
        dead = []
        for r in records:
            d = _dead_letter(r.value, RuntimeError(str(exc)), r.topic, r.partition, r.offset, now)
            dead.append(d)
        return StoreBatch(), dead

    def _learn(self, records: Sequence[RecordLike], events: Sequence[Event]) -> StoreBatch:
        if not events:
            return StoreBatch()
        users = self.users.add_many([e.user for e in events])
        item_ids = [e.item for e in events]
        n_before = len(self._item_ids)  # the catalogue before this batch (global indices)
        items = self._item_indices(item_ids)
        ts = np.fromiter((e.ts for e in events), np.float64, len(events))
        w = np.fromiter((_signal(e) for e in events), np.float32, len(events))
        self._grow(int(users.max()) + 1, max(int(items.max()) + 1, self.learner.student.n_items))
        if self.config.prequential_k:
            self._pq_pending = self._prequential(records, users, items, w, n_before)
        st = self.learner.student
        # the C rows the step's contexts read: each user's history before it (and the
        # batch's own items, which last_item_rows holds)
        history = st.hist[users]
        self.learner.learn_many(users, items, ts, w)
        self._mark_dirty((*self.learner.last_item_rows, history))
        if self.config.prequential_k:
            self._pq_history.add(users, items)
        uniq = np.unique(users)
        last_ts: dict[str, float] = {}
        seen: dict[str, list[str]] = {}
        uid = self.users.ids
        for e in events:
            seen.setdefault(e.user, []).append(e.item)
            prior = last_ts.get(e.user)
            if prior is None or e.ts > prior:
                last_ts[e.user] = e.ts
        q = st.query_vectors(uniq, st.hist[uniq])
        versions = {"student": st.step}
        if self.learner.teacher_version:
            # read-only figures of distillation for the API's /healthz and the fault tests
            # (left out before any soft label, so a fresh processor does not reset them)
            versions["teacher"] = self.learner.teacher_version
            versions["teacher_seen_at"] = int(self.teacher_seen_at)
            # the mixing weight the freshest labels get at this batch's latest event time
            alpha = self.learner.alpha_for(
                np.array([self.teacher_trained_until]), np.array([float(ts.max())])
            )
            versions["kd_alpha_ppm"] = round(float(alpha[0]) * 1e6)
        return StoreBatch(
            user_vectors={uid[u]: q[j] for j, u in enumerate(uniq.tolist())},
            seen=seen,
            last_event_ts=last_ts,
            versions=versions,
        )

    def _pq_total(self, p: int) -> tuple[int, int, float]:
        s0, h0, n0 = self._pq.get(p, (0, 0, 0.0))
        s1, h1, n1 = self._pq_pending.get(p, (0, 0, 0.0))
        return s0 + s1, h0 + h1, n0 + n1

    def _prequential(
        self,
        records: Sequence[RecordLike],
        users: np.ndarray,
        items: np.ndarray,
        w: np.ndarray,
        n_before: int,
    ) -> dict[int, tuple[int, int, float]]:
        """Test before train: rank the batch's scorable events with the current student.

        The protocol of :meth:`kdstream.online.Prequential.process` (``shared/EVALUATION.md``):
        positive events of users with an earlier event are scored; candidates are the items
        seen before the event (global indices are in order of first appearance) minus the
        user's earlier items. Returns ``{partition: (scored, hits, ndcg sum)}``.
        """
        n_cand, scored = self._pq_history.plan(users, items, w, n_before)
        rows = np.flatnonzero(scored)
        if len(rows) == 0:
            return {}
        qu, qi = users[rows], items[rows]
        ex_r, ex_c = self._pq_history.exclusions(users, items, rows)
        n_items = max(len(self._item_ids), int(items.max()) + 1)
        scores = self.learner.scores(qu, qi, n_items)
        ranks = ranks_from_scores(scores, qi, n_cand[rows], ex_r, ex_c)
        k = self.config.prequential_k
        hit = ranks <= k
        gain = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 1.0) + 1.0), 0.0)
        parts = np.fromiter((records[j].partition for j in rows.tolist()), np.int64, len(rows))
        out = {}
        for p in np.unique(parts).tolist():
            m = parts == p
            out[p] = (int(m.sum()), int(hit[m].sum()), float(gain[m].sum()))
        return out

    def prequential(self) -> dict[str, float]:
        """Prequential totals over the assigned partitions (this process's view):
        ``{"scored", "hits", "hr", "ndcg"}`` (see ``ProcessorConfig.prequential_k``)."""
        return _prequential_totals(
            sum(v[0] for v in self._pq.values()),
            sum(v[1] for v in self._pq.values()),
            sum(v[2] for v in self._pq.values()),
        )

    def _write(self, batch: StoreBatch) -> None:
        start = time.perf_counter()
        retry = False

        def attempt() -> None:
            nonlocal retry
            # A failed attempt may have committed before its reply was lost (the connection
            # dropped after EXEC). The batch's offsets are in its own transaction, so if they
            # already stand the batch is in the store: writing it again would learn it twice.
            if retry and batch.offsets and self._written(batch):
                return
            retry = True
            self.store.write_batch(batch)

        self._retrying("store write", attempt)
        took = time.perf_counter() - start
        self.stats.seconds_writing += took
        if batch.item_vectors is not None or batch.item_rows is not None:
            self.stats.seconds_writing_items += took

    def _written(self, batch: StoreBatch) -> bool:
        for key, offset in batch.offsets.items():
            topic, partition = parse_offset_key(key)
            applied = self.store.applied_offset(topic, partition)
            if applied is None or applied < offset:
                return False
        return True

    def _retrying(self, what: str, fn: Callable[[], _T]) -> _T:
        """``fn()``, retried with backoff while it raises :class:`ServiceError` (the store or
        hub is down): the batch waits, nothing is dropped. ``write_retries`` attempts at most
        (``0`` = until it succeeds); every failed attempt is logged."""
        attempt = 0
        delay = self.config.retry_backoff_s
        while True:
            try:
                return fn()
            except ServiceError as exc:
                attempt += 1
                self.stats.write_retries += 1
                limit = self.config.write_retries
                if limit and attempt >= limit:
                    raise ServiceError(
                        f"{what} failed {attempt} times; last error: {exc}"
                    ) from exc
                _log.warning("%s failed (attempt %d): pausing the batch, retrying in %.1fs: %s",
                             what, attempt, delay, exc)
                self._sleep(delay)
                delay = min(delay * 2, 5.0)

    # ---------------------------------------------------------------- counts
    def counts(self) -> dict[int, tuple[int, int, int]]:
        """``{partition: (applied offset, learned, dead-lettered)}`` of assigned partitions."""
        return {p: (self._applied[p], self._learned[p], self._dead[p]) for p in self._applied}


def _takes_epoch(push: Callable[..., object]) -> bool:
    """Whether a hub's ``push_item_deltas`` (or ``restore_item_offsets``) takes an ``epoch``
    keyword."""
    try:
        params = inspect.signature(push).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume the bare protocol
        return False
    return any(p.name == "epoch" or p.kind is p.VAR_KEYWORD for p in params)


_RESET_ATTEMPTS = 3  # hub resets one sync recovers from before it gives up
_REREGISTER_CHUNK = 10_000  # ids per allocation call when re-registering after a reset


_ITEM_FIELDS = (
    "item_ids", "item_vectors", "item_bias", "popularity", "item_rows", "item_row_vectors",
    "item_row_bias", "item_ids_from", "source_since", "source_version",
)


def _set_items(batch: StoreBatch, items: StoreBatch) -> None:
    """Replace the item part of ``batch`` with that of ``items``."""
    for name in _ITEM_FIELDS:
        setattr(batch, name, getattr(items, name))


class KafkaProcessorLoop:
    """The processor as a kafka-python consumer loop with manual commits.

    One consumer in group ``group`` reads the events topic in micro-batches of ``batch_size``;
    partitions handed over in a rebalance are sought to the store's applied offset (the store,
    not Kafka's committed offset, is the truth; Kafka's commit, made after each store write,
    only saves a re-read). A second, group-less consumer reads the whole compacted soft-label
    topic from the start. Dead letters are produced and flushed before the batch's store write.

    Parameters
    ----------
    bootstrap
        ``host:port`` or ``kafka://host:port``.
    core
        The :class:`ProcessorCore` to feed.
    group
        Consumer group shared by every processor.
    batch_size
        Records per micro-batch (``max_poll_records``).
    producer
        For dead letters: an object with ``send(topic, value, key=...)`` and ``flush()``
        (default: a :class:`~kdstream.stream._kafka_producer.KafkaEventProducer`).
    security
        Extra kafka-python arguments of every client built here (SASL/TLS; see
        ``kdstream.settings.kafka_client_kwargs``).
    """

    def __init__(
        self,
        bootstrap: str,
        core: ProcessorCore,
        *,
        group: str = "kd-processor",
        batch_size: int = 1000,
        poll_timeout_ms: int = 200,
        producer: object | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        from kafka import KafkaConsumer

        from ._kafka_admin import bootstrap_servers
        from ._kafka_producer import KafkaEventProducer

        self.core = core
        self.config = core.config
        self.batch_size = batch_size
        self.poll_timeout_ms = poll_timeout_ms
        servers = bootstrap_servers(bootstrap)
        sec = dict(security or {})
        self.producer = producer or KafkaEventProducer(servers, linger_ms=0, **sec)
        core._dead_letter = self._send_dead
        core.flush_dead_letters = self.producer.flush  # type: ignore[attr-defined]
        self.consumer = KafkaConsumer(
            bootstrap_servers=servers,
            group_id=group,
            client_id=f"kdstream-processor-{group}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=batch_size,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # explicit: kafka-python 3.x raised the default to 45 s, which would keep a
            # SIGKILLed member's partitions unassigned that long
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            **sec,
        )
        self.soft = KafkaConsumer(
            bootstrap_servers=servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **sec,
        )
        self._soft_assigned = False
        self.assigned = False
        self.stop = threading.Event()
        self.last_record_at = time.monotonic()

    def _send_dead(self, letter: DeadLetter) -> None:
        self.producer.send(self.config.dlq_topic, letter.to_bytes())  # type: ignore[attr-defined]

    def _listener(self) -> object:
        from kafka import ConsumerRebalanceListener

        loop = self

        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: object) -> None:
                loop.core.revoke([tp.partition for tp in revoked])  # type: ignore[attr-defined]

            def on_partitions_assigned(self, assigned: object) -> None:
                parts = {tp.partition: tp for tp in assigned}  # type: ignore[attr-defined]
                for p, offset in loop.core.assign(sorted(parts)).items():
                    loop.consumer.seek(parts[p], offset)
                loop.assigned = bool(parts)
                loop.last_record_at = time.monotonic()  # idle time counts from here
                _log.info("assigned partitions %s", sorted(parts))

        return _Listener()

    def _poll_soft(self) -> None:
        from kafka import TopicPartition

        if not self._soft_assigned:
            parts = self.soft.partitions_for_topic(self.config.soft_labels_topic)
            if not parts:
                return
            tps = [TopicPartition(self.config.soft_labels_topic, p) for p in sorted(parts)]
            self.soft.assign(tps)
            self.soft.seek_to_beginning(*tps)
            self._soft_assigned = True
        polled = self.soft.poll(timeout_ms=0, max_records=100_000)
        records = [r for batch in polled.values() for r in batch]
        if records:
            self.core.apply_soft_labels(records)

    def run(self, idle_exit_s: float | None = None) -> ProcessorStats:
        """Consume until :attr:`stop` is set (or no record arrived for ``idle_exit_s``)."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        self.consumer.subscribe([self.config.events_topic], listener=self._listener())
        topic = self.config.events_topic
        try:
            while not self.stop.is_set():
                self._poll_soft()
                polled = self.consumer.poll(
                    timeout_ms=self.poll_timeout_ms, max_records=self.batch_size
                )
                records = [r for batch in polled.values() for r in batch]
                if not records:
                    idle = time.monotonic() - self.last_record_at
                    # before the first assignment (a rebalance waiting out a dead member's
                    # session) idleness does not count
                    if idle_exit_s is not None and self.assigned and idle >= idle_exit_s:
                        break
                    continue
                self.last_record_at = time.monotonic()
                result = self.core.process(records)
                commits = {}
                for key, offset in result.offsets.items():
                    p = int(key.rpartition(":")[2])
                    commits[TopicPartition(topic, p)] = _offset_meta(OffsetAndMetadata, offset)
                if commits:
                    try:
                        self.consumer.commit_async(commits)
                    except Exception as exc:  # Kafka's offset is only a hint; the store rules
                        _log.warning("offset commit failed: %r", exc)
            if self.assigned:  # leave the merged item table served and the hub up to date
                self.core._write(self.core.sync_items())
        finally:
            self.close()
        return self.core.stats

    def close(self) -> None:
        for client in (self.consumer, self.soft):
            try:
                client.close()
            except Exception as exc:  # closing must not hide the loop's own error
                _log.warning("consumer close failed: %r", exc)
        try:
            self.producer.close()  # type: ignore[attr-defined]
        except Exception as exc:
            _log.warning("producer close failed: %r", exc)


def _offset_meta(cls: type, offset: int) -> object:
    # kafka-python 2.1+ added leader_epoch to OffsetAndMetadata
    try:
        return cls(offset, "", -1)
    except TypeError:
        return cls(offset, "")


def store_prequential(store: Store, topic: str, partitions: Iterable[int]) -> dict[str, float]:
    """Durable prequential totals over ``partitions``: ``{"scored", "hits", "hr", "ndcg"}``
    (HR@k and NDCG@k with the processors' ``prequential_k``)."""
    versions = store.versions()
    scored = hits = ppm = 0
    for p in partitions:
        ks, kh, kn = prequential_keys(topic, p)
        scored += versions.get(ks, 0)
        hits += versions.get(kh, 0)
        ppm += versions.get(kn, 0)
    return _prequential_totals(scored, hits, ppm / 1e6)


def _prequential_totals(scored: int, hits: int, ndcg_sum: float) -> dict[str, float]:
    return {
        "scored": scored,
        "hits": hits,
        "hr": hits / scored if scored else 0.0,
        "ndcg": ndcg_sum / scored if scored else 0.0,
    }


def store_counts(store: Store, topic: str, partitions: Iterable[int]) -> dict[str, int]:
    """Durable totals over ``partitions``: ``{"applied", "learned", "dead"}``.

    ``applied == learned + dead`` when every record was accounted for (offsets start at 0).
    """
    versions = store.versions()
    out = {"applied": 0, "learned": 0, "dead": 0}
    for p in partitions:
        out["applied"] += store.applied_offset(topic, p) or 0
        out["learned"] += versions.get(learned_key(topic, p), 0)
        out["dead"] += versions.get(dead_key(topic, p), 0)
    return out


__all__ = [
    "BatchResult",
    "ItemHub",
    "KafkaProcessorLoop",
    "LocalItemHub",
    "ProcessorConfig",
    "ProcessorCore",
    "ProcessorStats",
    "StoreItemHub",
    "dead_key",
    "event_key",
    "learned_key",
    "prequential_keys",
    "store_counts",
    "store_prequential",
]
