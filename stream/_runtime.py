"""The embedded runtime: the whole pipeline in one process, no servers.

events --> EmbeddedLog topic ``kd.events`` --> consumer (micro-batches) --> decode (bad -> DLQ)
       --> Prequential: every variant ranks, then learns --> MemoryStore (serving state)
       --> teacher window --> TeacherWorker (background thread) --> ``kd.soft-labels`` topic
       --> consumer --> soft labels applied to the learners

The same topics, codecs and Learner run under Kafka and faust in the distributed runtime.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kdstream.online import (
    Learner,
    LearnerConfig,
    PopularityVariant,
    Prequential,
    StudentVariant,
    TeacherVariant,
    Variant,
)
from kdstream.student import StudentConfig
from kdstream.teacher import RefreshPolicy, TeacherConfig, TeacherJob, TeacherResult

from ._codec import decode_records, decode_soft_labels, encode_event, encode_soft_labels
from ._deadletter import DeadLetter
from ._event import Event
from ._log import EmbeddedConsumer, EmbeddedLog, EmbeddedProducer
from ._soft_labels import soft_label_messages

RECENT_DEAD_LETTERS = 1000

_log = logging.getLogger(__name__)

VARIANTS = ("popularity", "student", "student+kd", "teacher")


@dataclass(frozen=True)
class PipelineConfig:
    """Wiring of the embedded pipeline.

    Parameters
    ----------
    batch_size
        Events per micro-batch (scoring uses the parameters from the start of the batch).
    k
        Cut-off of the prequential HR@k / NDCG@k.
    partitions
        Partitions of the events and soft-label topics (keyed by user).
    deterministic
        Soft labels of a refresh started at event n become visible at event
        n + ``label_delay_events``; the stream waits there if the teacher is late. Makes runs
        reproducible (same seed, same metrics). Off: labels apply whenever they arrive and the
        stream never waits (production behaviour).
    label_delay_events
        See ``deterministic``.
    transition_items
        Most frequent window items that get item-keyed transition labels (0 = none).
    variants
        Which of ``popularity``, ``student``, ``student+kd``, ``teacher`` to run side by side.
    """

    batch_size: int = 256
    k: int = 10
    partitions: int = 4
    events_topic: str = "kd.events"
    soft_labels_topic: str = "kd.soft-labels"
    dlq_topic: str = "kd.events.dlq"
    deterministic: bool = True
    label_delay_events: int = 2_000
    transition_items: int = 5_000
    variants: tuple[str, ...] = VARIANTS
    student: StudentConfig = field(default_factory=StudentConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    popularity_half_life_s: float | None = None


@dataclass
class PipelineStats:
    events: int = 0
    dead_lettered: int = 0
    teacher_refreshes: int = 0
    soft_labels_applied: int = 0
    student_seconds: float = 0.0
    seconds: float = 0.0
    refresh_positions: list[int] = field(default_factory=list)
    refresh_seconds: list[float] = field(default_factory=list)


class _TimedStudent(StudentVariant):
    """A student variant that accounts the time spent learning."""

    def __init__(self, name: str, learner: Learner) -> None:
        super().__init__(name, learner)
        self.seconds = 0.0

    def learn_many(self, users, items, ts, weights) -> None:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        super().learn_many(users, items, ts, weights)
        self.seconds += time.perf_counter() - start


def scaled_config(
    n_events: int,
    seed: int = 0,
    *,
    refreshes: int = 10,
    teacher_epochs: int = 8,
    window_intervals: float = 2.0,
    **overrides: object,
) -> PipelineConfig:
    """The pipeline for replaying a stream of ``n_events`` (demo, evaluate): one definition.

    ``refreshes`` teacher refreshes over the stream, each training on a window of
    ``window_intervals`` refresh intervals (with 2, every event is trained on by two refreshes;
    warm starts carry the rest) for a fixed number of epochs, so that runs are reproducible (a
    wall-clock budget would not be). 8 epochs: measured on ML-100K, ML-1M-subset and the
    synthetic stream, the published teacher's HR@10 rose from 3 to 8 epochs on all three, and
    more gave little. Deterministic label timing; the same seed everywhere. The teacher uses
    two threads: in deterministic mode the stream waits for it at each label deadline anyway.
    """
    from dataclasses import replace

    base = PipelineConfig()
    every = max(2_000, n_events // refreshes)
    teacher = replace(
        base.teacher,
        seed=seed,
        time_budget_s=1e9,
        epochs=teacher_epochs,
        window_events=min(int(window_intervals * every), 200_000),
        num_threads=2,
    )
    cfg = replace(
        base,
        deterministic=True,
        refresh=RefreshPolicy(every_events=every, min_events=min(every, 5_000)),
        label_delay_events=max(500, every // 10),
        teacher=teacher,
        student=replace(base.student, seed=seed),
        learner=replace(base.learner, seed=seed),
    )
    return replace(cfg, **overrides)  # type: ignore[arg-type]


class EmbeddedPipeline:
    """Runs the pipeline over an in-process log, with the teacher on a background thread."""

    def __init__(self, config: PipelineConfig | None = None, log: EmbeddedLog | None = None):
        self.config = cfg = config or PipelineConfig()
        self.log = log or EmbeddedLog()
        for topic in (cfg.events_topic, cfg.soft_labels_topic):
            self.log.create_topic(topic, cfg.partitions, compacted=topic == cfg.soft_labels_topic)
        self.log.create_topic(cfg.dlq_topic, 1)
        self.producer = EmbeddedProducer(self.log)
        self.events = EmbeddedConsumer(self.log, [cfg.events_topic], "kd-processor")
        self.soft = EmbeddedConsumer(self.log, [cfg.soft_labels_topic], "kd-processor-soft")
        self.variants = self._build_variants()
        self.prequential = Prequential(self.variants, k=cfg.k)
        self.stats = PipelineStats()
        # the latest dead letters, for inspection; all of them are on the DLQ topic and counted
        # in stats.dead_lettered, so hostile input cannot grow this without bound
        self.dead_letters: deque[DeadLetter] = deque(maxlen=RECENT_DEAD_LETTERS)
        self._window_users: list[np.ndarray] = []
        self._window_items: list[np.ndarray] = []
        self._window_len = 0
        self._since_refresh = 0
        self._last_refresh_wall = time.monotonic()
        self._pending_at: int | None = None
        self._teacher = None
        self._worker = None
        self._lock = threading.Lock()
        self.on_batch: Callable[[EmbeddedPipeline], None] | None = None

    def _build_variants(self) -> list[Variant]:
        cfg = self.config
        out: list[Variant] = []
        for name in cfg.variants:
            if name == "popularity":
                out.append(PopularityVariant(half_life_s=cfg.popularity_half_life_s))
            elif name == "student":
                lc = LearnerConfig(**{**cfg.learner.__dict__, "distill": False})
                out.append(_TimedStudent(name, Learner(cfg.student, lc)))
            elif name == "student+kd":
                out.append(_TimedStudent(name, Learner(cfg.student, cfg.learner)))
            elif name == "teacher":
                out.append(TeacherVariant())
            else:
                raise ValueError(f"unknown variant {name!r}; expected one of {VARIANTS}")
        return out

    @property
    def lock(self) -> threading.Lock:
        """Held while a batch is scored/learned or soft labels are applied: readers (the API)
        take it to see a consistent model."""
        return self._lock

    @property
    def needs_teacher(self) -> bool:
        return any(v in self.config.variants for v in ("student+kd", "teacher"))

    def learner(self, name: str = "student+kd") -> Learner:
        for v in self.variants:
            if v.name == name and isinstance(v, StudentVariant):
                return v.learner
        raise KeyError(name)

    # ----------------------------------------------------------------- feeding
    def produce(self, events: Iterable[Event]) -> int:
        n = 0
        for e in events:
            self.producer.send(self.config.events_topic, encode_event(e), key=e.user, ts=e.ts)
            n += 1
        return n

    def produce_raw(self, raws: Sequence[bytes], keys: Sequence[str | None]) -> None:
        for raw, key in zip(raws, keys, strict=True):
            self.producer.send(self.config.events_topic, raw, key=key)

    # ---------------------------------------------------------------- consuming
    def step(self, max_records: int | None = None, timeout_s: float = 0.0) -> int:
        """Consume, score and learn one micro-batch; returns the records consumed."""
        cfg = self.config
        start = time.perf_counter()
        self._apply_soft_labels()
        records = self.events.poll(max_records or cfg.batch_size, timeout_s=timeout_s)
        if not records:
            return 0
        decoded, dead = decode_records(records, ts=time.time())
        for d in dead:
            self.producer.send(cfg.dlq_topic, d.to_bytes())
        self.dead_letters.extend(dead)
        self.stats.dead_lettered += len(dead)
        if decoded:
            events = [e for _, e in decoded]
            users = [e.user for e in events]
            items = [e.item for e in events]
            ts = np.fromiter((e.ts for e in events), np.float64, len(events))
            w = np.fromiter((e.signal() for e in events), np.float32, len(events))
            with self._lock:
                b = self.prequential.process(users, items, ts, w)
            self.stats.events += len(events)
            self._window_users.append(b.users)
            self._window_items.append(b.items)
            self._window_len += len(b.users)
            # Trimmed here, not only when a job is made: a busy (slow) teacher skips jobs, and
            # the window must not grow with the stream meanwhile. Amortised: once per window.
            if self._window_len > 2 * self.config.teacher.window_events:
                self._trim_window()
            self._since_refresh += len(b.users)
            self._maybe_refresh(float(ts[-1]))
        self.events.commit()
        self.stats.seconds += time.perf_counter() - start
        if self.on_batch is not None:
            self.on_batch(self)
        return len(records)

    def run(self, progress: Callable[[int], None] | None = None) -> PipelineStats:
        """Drain the events topic, then wait for the last teacher refresh's labels."""
        while True:
            n = self.step()
            if n == 0:
                break
            if progress is not None:
                progress(n)
        self.close()
        for v in self.variants:
            if isinstance(v, _TimedStudent) and v.name == "student+kd":
                self.stats.student_seconds = v.seconds
        return self.stats

    # ----------------------------------------------------------------- teacher
    def _maybe_refresh(self, stream_time: float) -> None:
        if not self.needs_teacher:
            return
        cfg = self.config
        if cfg.deterministic and self._pending_at is not None:
            if self.stats.events < self._pending_at:
                return
            self._wait_teacher()
        elif self._worker is not None and self._worker.busy:
            return
        seconds = time.monotonic() - self._last_refresh_wall
        if not cfg.refresh.due(self._since_refresh, seconds, self.stats.events):
            return
        job = self._make_job(stream_time)
        if job is None:
            return
        worker = self._ensure_worker()
        if worker.submit(job):
            self._since_refresh = 0
            self._last_refresh_wall = time.monotonic()
            self.stats.refresh_positions.append(self.stats.events)
            if cfg.deterministic:
                self._pending_at = self.stats.events + cfg.label_delay_events

    def _wait_teacher(self) -> None:
        if self._worker is not None:
            self._worker.join()
        self._pending_at = None
        self._apply_soft_labels()

    def _ensure_worker(self):  # type: ignore[no-untyped-def]
        if self._worker is None:
            from kdstream.teacher import SASRecTeacher, TeacherWorker

            self._teacher = SASRecTeacher(self.config.teacher)
            self._worker = TeacherWorker(self._teacher, self._publish)
        return self._worker

    def _trim_window(self) -> tuple[np.ndarray, np.ndarray]:
        """Keep the teacher's window (its last ``window_events`` events) and return it."""
        keep = self.config.teacher.window_events
        users = np.concatenate(self._window_users)[-keep:]
        items = np.concatenate(self._window_items)[-keep:]
        self._window_users, self._window_items = [users], [items]
        self._window_len = len(users)
        return users, items

    def _make_job(self, stream_time: float) -> TeacherJob | None:
        users, items = self._trim_window()
        if len(users) < 2:
            return None
        cfg = self.config
        return TeacherJob.from_window(
            users,
            items,
            n_items=len(self.prequential.items),
            trained_until=stream_time,
            max_len=cfg.teacher.max_len,
            transition_items=cfg.transition_items if cfg.learner.transitions else 0,
        )

    def _publish(self, result: TeacherResult) -> None:
        """Worker thread: turn a refresh's index arrays into wire soft labels on the topic."""
        topic = self.config.soft_labels_topic
        users, items = self.prequential.users.ids, self.prequential.items.ids
        for labels in soft_label_messages(result, users, items):
            self.producer.send(topic, encode_soft_labels(labels), key=labels.key)
        self.stats.teacher_refreshes += 1
        self.stats.refresh_seconds.append(result.seconds)
        _log.info("teacher v%d published (%.1fs)", result.version, result.seconds)

    def _apply_soft_labels(self) -> None:
        records = self.soft.poll(1_000_000)
        if not records:
            return
        decoded, dead = decode_records(records, decode=decode_soft_labels, ts=time.time())
        self.dead_letters.extend(dead)
        with self._lock:
            self.stats.soft_labels_applied += self.prequential.apply_soft_labels(
                [s for _, s in decoded]
            )
        self.soft.commit()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


__all__ = ["VARIANTS", "EmbeddedPipeline", "PipelineConfig", "PipelineStats", "scaled_config"]
