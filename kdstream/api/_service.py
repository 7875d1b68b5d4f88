"""What the HTTP API needs from a runtime: the ServingService protocol and two implementations.

* :class:`EmbeddedServingService` serves straight from an in-process
  :class:`~kdstream.stream._runtime.EmbeddedPipeline` (the API threads and the learning loop share
  its lock), and can run the pipeline's loop on a background thread so POSTed events are learned
  within milliseconds.
* :class:`StoreServingService` serves from any :class:`~kdstream.stream.Store` (MemoryStore
  today, the Redis store of the distributed runtime): stateless API processes that scale out.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from kdstream.errors import DecodeError, ServiceError
from kdstream.online import Popularity
from kdstream.stream import (
    DEFAULT_DLQ_TOPIC,
    DeadLetter,
    Event,
    RawRecord,
    Store,
    decode_event,
    encode_event,
    item_table_view,
    top_k_from_store,
    user_view,
)

from ._metrics import Histogram, Sample, render_histogram, render_samples
from ._settings import ApiSettings

if TYPE_CHECKING:
    from kdstream.online import Learner
    from kdstream.stream._runtime import EmbeddedPipeline

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recommendation:
    """One user's top-k, with the model versions and the user's freshness.

    Parameters
    ----------
    user
        The user asked about.
    items, scores
        Best first.
    cold_start
        The user is unknown: the items are (time-decayed) popular ones.
    student_version, teacher_version
        Student update steps so far; version of the latest teacher soft labels (0 = none).
    last_event_ts
        Event time of the user's latest learned event, or None.
    """

    user: str
    items: list[str]
    scores: list[float]
    cold_start: bool
    student_version: int
    teacher_version: int
    last_event_ts: float | None


@dataclass(frozen=True)
class RecordError:
    """Why record ``index`` (0-based, in the request) was rejected."""

    index: int
    reason: str
    field: str = ""


@dataclass
class IngestResult:
    """Counts of one ingest call and the rejected records (sent to the dead-letter topic)."""

    received: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: list[RecordError] = field(default_factory=list)


class EventSink(Protocol):
    """Where ingested records go: an embedded or a Kafka producer."""

    def send(self, topic: str, value: bytes, key: Any = None) -> Any: ...


@runtime_checkable
class ServingService(Protocol):
    """Everything the HTTP layer asks of a runtime.

    Methods must be thread-safe: the API calls them from a thread pool.
    """

    def recommend(self, user: str, k: int, exclude_seen: bool = True) -> Recommendation:
        """Top-``k`` for ``user``; unknown users get popular items with ``cold_start=True``."""
        ...

    def ingest(self, records: Sequence[RawRecord]) -> IngestResult:
        """Validate records: produce the valid ones, dead-letter the rest."""
        ...

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "down", "checks": {...}}``."""
        ...

    def stats(self) -> dict[str, Any]:
        """A JSON-able snapshot for the dashboard.

        Besides the counters, ``item_refresh``: the store's background item refresher
        (``RedisStore.start_item_refresh``, ``kdstream api --item-refresh-s``) as
        ``{"running", "age_s", "max_age_s", "every_s", "errors"}`` (``age_s``: of the item-table
        snapshot requests are handed, None before its first; ``errors``: failed refreshes since
        it started), or None where the store has none (MemoryStore, the embedded pipeline, a
        refresher not started or stopped).
        """
        ...

    def metrics_text(self) -> str:
        """Prometheus text of the runtime's metrics."""
        ...


# ---------------------------------------------------------------------------- request bodies


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not valid JSON")


def split_body(body: bytes) -> list[RawRecord]:
    """The records of a ``POST /v1/events`` body: a JSON array, or JSON lines.

    Array elements come back parsed (mappings, or whatever the element was, which then fails
    validation on its own); JSONL lines come back as bytes, blank lines skipped. A body that
    starts with ``[`` but is not a valid JSON array raises :class:`DecodeError` (the request as a
    whole is bad; there are no records to report by index).

    Examples
    --------
    >>> split_body(b'{"user": 1}\\n\\n{"user": 2}')
    [b'{"user": 1}', b'{"user": 2}']
    >>> split_body(b' [{"user": 1}, 7]')
    [{'user': 1}, 7]
    """
    text = body.lstrip()
    if text.startswith(b"["):
        try:
            doc = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"body is not a valid JSON array: {exc}") from exc
        if not isinstance(doc, list):  # pragma: no cover - '[' always parses to a list
            raise DecodeError("body: expected a JSON array")
        return doc
    return [line.rstrip(b"\r") for line in body.split(b"\n") if line.strip()]


def _raw_bytes(raw: Any) -> bytes:
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    return json.dumps(raw, default=repr, ensure_ascii=True).encode("ascii")


def ingest_records(
    records: Sequence[RawRecord],
    sink: EventSink,
    events_topic: str,
    dlq_topic: str,
    now: float | None = None,
) -> tuple[IngestResult, list[Event]]:
    """Decode ``records``; send valid events (keyed by user) and dead letters to ``sink``.

    Events without ``ts`` get ``now`` (default: the wall clock). Never raises for a bad record.
    """
    now = time.time() if now is None else now
    result = IngestResult(received=len(records))
    good: list[Event] = []
    for index, raw in enumerate(records):
        try:
            if not isinstance(raw, bytes | bytearray | memoryview | str | Mapping):
                raise DecodeError(f"record: expected a JSON object, got {type(raw).__name__}")
            event = decode_event(raw, default_ts=now)
        except DecodeError as exc:
            result.errors.append(RecordError(index, exc.reason, exc.field))
            letter = DeadLetter(
                _raw_bytes(raw), exc.reason, exc.field, source="api", offset=index, ts=now
            )
            sink.send(dlq_topic, letter.to_bytes())
            continue
        sink.send(events_topic, encode_event(event), key=event.user)
        good.append(event)
    result.accepted = len(good)
    result.rejected = len(result.errors)
    return result, good


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best positive scores, best first, ties by index."""
    idx = np.flatnonzero(scores > 0)
    if len(idx) > k:
        part = np.argpartition(-scores[idx], k - 1)[:k]
        threshold = scores[idx[part]].min()
        idx = idx[scores[idx] >= threshold]
    return idx[np.lexsort((idx, -scores[idx]))][:k]


# ---------------------------------------------------------------------------- embedded runtime


class EmbeddedServingService:
    """Serves from an in-process :class:`EmbeddedPipeline`, optionally running its loop.

    Parameters
    ----------
    pipeline
        The runtime. Build it with ``deterministic=False`` for live serving: the deterministic
        mode makes the stream wait for the teacher.
    settings
        Limits, the cold-start half-life and the teacher staleness threshold.

    Notes
    -----
    The learning loop (``start()``, or a caller driving :meth:`step_once`) tails each consumed
    micro-batch from the log to keep what the pipeline does not: the last event time per user
    and the time-decayed popularity that unknown users get.
    """

    def __init__(self, pipeline: EmbeddedPipeline, settings: ApiSettings | None = None) -> None:
        self.pipeline = pipeline
        self.settings = settings or ApiSettings()
        # the pipeline's own lock guards the learners and vocabularies (held while it learns)
        self._model_lock: threading.Lock = pipeline.lock
        self._state_lock = threading.Lock()  # what this service keeps: times, popularity, rates
        self._last_ts: dict[str, float] = {}
        self._popularity = Popularity(self.settings.cold_start_half_life_s)
        topic = pipeline.config.events_topic
        self._cursor = {
            p: pipeline.events.position(topic, p) for p in pipeline.log.partitions_for(topic)
        }
        self.update_latency = Histogram()
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._refreshes_seen = 0
        self._refresh_wall: float | None = None
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -------------------------------------------------------------------- the loop
    def learner(self) -> Learner:
        name = self.settings.learner
        try:
            return self.pipeline.learner(name)
        except KeyError:
            return self.pipeline.learner("student")

    def step_once(self, timeout_s: float = 0.0) -> int:
        """One micro-batch of the pipeline plus this service's bookkeeping; records consumed."""
        start = time.perf_counter()
        n = self.pipeline.step(timeout_s=timeout_s)
        if n:
            self.update_latency.observe(time.perf_counter() - start)
            self._tail()
        self._note_progress()
        return n

    def start(self) -> None:
        """Run the learning loop on a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="kdstream-learner", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loop and the teacher worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.pipeline.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                # blocks until records arrive (or 50 ms pass): the latency of a POSTed event
                self.step_once(timeout_s=0.05)
            except Exception as exc:  # surfaced by /healthz rather than lost in a thread
                _log.exception("learning loop stopped")
                self.error = exc
                return

    def _tail(self) -> None:
        """Read the records the consumer just passed: last event time per user, popularity."""
        p = self.pipeline
        topic = p.config.events_topic
        users: list[str] = []
        items: list[str] = []
        ts: list[float] = []
        w: list[float] = []
        for part, cur in self._cursor.items():
            pos = p.events.position(topic, part)
            if pos <= cur:
                continue
            for rec in p.log.read(topic, part, cur, pos - cur):
                try:
                    e = decode_event(rec.value)
                except DecodeError:
                    continue  # the pipeline dead-lettered it
                users.append(e.user)
                items.append(e.item)
                ts.append(e.ts)
                w.append(e.signal())
            self._cursor[part] = pos
        if not users:
            return
        idx = p.prequential.items.lookup(items)  # loop thread: the vocabulary is stable here
        known = idx >= 0
        with self._state_lock:
            for user, t in zip(users, ts, strict=True):
                if t > self._last_ts.get(user, -math.inf):
                    self._last_ts[user] = t
            order = np.argsort(np.asarray(ts), kind="stable")  # decay needs time order
            sel = order[known[order]]
            self._popularity.learn_many(
                idx[sel], (np.asarray(w)[sel] > 0).astype(np.float64), np.asarray(ts)[sel]
            )

    def _note_progress(self) -> None:
        now = time.monotonic()
        stats = self.pipeline.stats
        with self._state_lock:
            if stats.teacher_refreshes > self._refreshes_seen:
                self._refreshes_seen = stats.teacher_refreshes
                self._refresh_wall = now
            if not self._rate or now - self._rate[-1][0] >= 0.25:
                self._rate.append((now, stats.events))

    # -------------------------------------------------------------------- serving
    #: recommend() never blocks on I/O or locks: the API may call it on its event loop
    nonblocking = True

    def recommend(self, user: str, k: int, exclude_seen: bool = True) -> Recommendation:
        # No model lock: a request must not wait for a learning step. Reads see each table
        # either before or after a step's in-place row updates (at worst a row mid-update),
        # and Student.recommend tolerates tables that grow meanwhile.
        learner = self.learner()
        st = learner.student
        uidx = self.pipeline.prequential.users.get(user)
        # A user counts as known once a step has finished learning its events: the step adds
        # them to the seen set last, after the vectors, so a read in the middle of a step still
        # serves the cold-start list rather than one that could contain the user's new items.
        known = (
            uidx is not None and uidx < st.n_users and len(st.seen.items_of(uidx)) > 0
        )
        n_items = len(self.pipeline.prequential.items)
        item_ids = self.pipeline.prequential.items.ids
        teacher_version = int(learner.teacher_version)
        student_version = int(st.step)
        if known:
            assert uidx is not None
            top, scores = st.recommend(uidx, k, exclude_seen)
            ids = [item_ids[i] for i in top]
        if not known:
            with self._state_lock:
                pop = self._popularity.scores(n_items)
            total = pop.sum()
            top = _top_k(pop, k)
            ids = [item_ids[i] for i in top]
            scores = (pop[top] / total if total > 0 else pop[top]).astype(np.float32)
        with self._state_lock:
            last = self._last_ts.get(user)
        return Recommendation(
            user=user,
            items=ids,
            scores=[float(s) for s in scores],
            cold_start=not known,
            student_version=student_version,
            teacher_version=teacher_version,
            last_event_ts=last,
        )

    def ingest(self, records: Sequence[RawRecord]) -> IngestResult:
        cfg = self.pipeline.config
        result, _ = ingest_records(
            records, self.pipeline.producer, cfg.events_topic, cfg.dlq_topic
        )
        return result

    # -------------------------------------------------------------------- observing
    def _teacher_age(self) -> float | None:
        with self._state_lock:
            wall = self._refresh_wall
        return None if wall is None else time.monotonic() - wall

    def _events_per_s(self) -> float:
        with self._state_lock:
            samples = list(self._rate)
        if len(samples) < 2:
            return 0.0
        now = samples[-1][0]
        recent = [s for s in samples if now - s[0] <= 5.0]
        first = recent[0] if len(recent) >= 2 else samples[-2]
        dt = now - first[0]
        return (samples[-1][1] - first[1]) / dt if dt > 0 else 0.0

    def _dlq_count(self) -> int:
        p = self.pipeline
        return sum(p.log.end_offsets(p.config.dlq_topic).values())

    def stats(self) -> dict[str, Any]:
        p = self.pipeline
        with self._model_lock:
            learner = self.learner()
            hr = {name: m.rolling_hr for name, m in p.prequential.report.metrics.items()}
            teacher_version = int(learner.teacher_version)
            alpha = float(learner.last_alpha)
            student_version = int(learner.student.step)
            users, items = len(p.prequential.users), len(p.prequential.items)
            scored = p.prequential.report.scored
        p50, p99 = self.update_latency.quantile(0.5), self.update_latency.quantile(0.99)
        return {
            "time": time.time(),
            "uptime_s": time.monotonic() - self._started,
            "running": self.running,
            "events": p.stats.events,
            "events_per_s": self._events_per_s(),
            "scored": scored,
            "users": users,
            "items": items,
            "dead_lettered": self._dlq_count(),
            "consumer_lag": p.events.lag(),
            "hr_at_10": hr,
            "teacher": {
                "version": teacher_version,
                "refreshes": p.stats.teacher_refreshes,
                "age_s": self._teacher_age(),
                "soft_labels_applied": p.stats.soft_labels_applied,
            },
            "mixing_weight": alpha,
            "student_version": student_version,
            "update_latency_ms": {
                "p50": None if p50 is None else p50 * 1e3,
                "p99": None if p99 is None else p99 * 1e3,
            },
            "item_refresh": None,  # no store, so no item refresher
        }

    def health(self) -> dict[str, Any]:
        loop_ok = self.error is None
        age = self._teacher_age()
        uptime = time.monotonic() - self._started
        stale = self.settings.teacher_stale_s
        if not self.pipeline.needs_teacher:
            teacher_ok = True
        else:
            teacher_ok = (age if age is not None else uptime) <= stale
        checks = {
            "broker": {
                "ok": loop_ok,
                "kind": "embedded",
                "loop_running": self.running,
                "consumer_lag": self.pipeline.events.lag(),
                "error": None if self.error is None else repr(self.error),
            },
            "store": {"ok": True, "kind": "in-process"},
            "teacher": {
                "ok": teacher_ok,
                "version": int(self.learner().teacher_version),
                "age_s": age,
                "stale_after_s": stale,
            },
        }
        status = "down" if not loop_ok else ("ok" if teacher_ok else "degraded")
        return {"status": status, "checks": checks}

    def metrics_text(self) -> str:
        s = self.stats()
        age = s["teacher"]["age_s"]
        samples = [
            Sample("kdstream_events_learned_total", "counter", "Events learned by the student.",
                   s["events"]),
            Sample("kdstream_dead_letters_total", "counter",
                   "Records sent to the dead-letter topic.", s["dead_lettered"]),
            Sample("kdstream_consumer_lag", "gauge", "Event records not yet consumed.",
                   s["consumer_lag"]),
            Sample("kdstream_teacher_version", "gauge", "Version of the latest soft labels.",
                   s["teacher"]["version"]),
            Sample("kdstream_teacher_refreshes_total", "counter", "Teacher refreshes published.",
                   s["teacher"]["refreshes"]),
            Sample("kdstream_teacher_age_seconds", "gauge",
                   "Seconds since the last teacher refresh (NaN before the first).",
                   math.nan if age is None else age),
            Sample("kdstream_mixing_weight", "gauge",
                   "Mean distillation weight of the last student update.", s["mixing_weight"]),
            Sample("kdstream_student_version", "gauge", "Student update steps.",
                   s["student_version"]),
        ]
        hr = [
            Sample("kdstream_rolling_hr_at_10", "gauge", "Rolling prequential HR@10 per variant.",
                   v, {"variant": name})
            for name, v in s["hr_at_10"].items()
        ]
        return render_samples([*samples, *hr]) + render_histogram(
            "kdstream_update_latency_seconds",
            "Wall time of one micro-batch (consume, score, learn).",
            self.update_latency,
        )


# ---------------------------------------------------------------------------- store-backed


class StoreServingService:
    """Serves from a :class:`~kdstream.stream.Store`; ingests through an optional producer.

    Parameters
    ----------
    store
        Serving state written by the processors (MemoryStore, the Redis store).
    sink
        Producer for ``POST /v1/events`` (e.g. the Kafka producer); without one, ingest raises
        :class:`ServiceError` (the API answers 503).
    events_topic, dlq_topic
        Where valid and rejected records go.

    Examples
    --------
    >>> from kdstream.stream import MemoryStore
    >>> StoreServingService(MemoryStore()).recommend("u1", 5).cold_start
    True
    """

    def __init__(
        self,
        store: Store,
        sink: EventSink | None = None,
        events_topic: str = "kd.events",
        dlq_topic: str = DEFAULT_DLQ_TOPIC,
        teacher_stale_s: float = 3_600.0,
    ) -> None:
        self.store = store
        self.teacher_stale_s = teacher_stale_s
        self.sink = sink
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self._accepted = 0
        self._rejected = 0
        # when /healthz first saw the item refresher running without a snapshot (a first
        # check stuck or failing): the age its check counts until one arrives
        self._refresh_pending_since: float | None = None
        self._lock = threading.Lock()

    def recommend(self, user: str, k: int, exclude_seen: bool = True) -> Recommendation:
        # the user's reads in one round trip where the store can (RedisStore: five before)
        view = user_view(self.store, user)
        ids, scores = top_k_from_store(self.store, user, k, exclude_seen, view=view)
        return Recommendation(
            user=user,
            items=list(ids),
            scores=[float(s) for s in scores],
            cold_start=view.vector is None,
            student_version=int(view.versions.get("student", 0)),
            teacher_version=int(view.versions.get("teacher", 0)),
            last_event_ts=view.last_event_ts,
        )

    def ingest(self, records: Sequence[RawRecord]) -> IngestResult:
        if self.sink is None:
            raise ServiceError("this API has no event producer configured (read-only)")
        result, _ = ingest_records(records, self.sink, self.events_topic, self.dlq_topic)
        with self._lock:
            self._accepted += result.accepted
            self._rejected += result.rejected
        return result

    def _store_ok(self) -> tuple[bool, str | None]:
        try:
            self.store.versions()
        except Exception as exc:  # any failure of the backing store is "down"
            return False, repr(exc)
        return True, None

    def health(self) -> dict[str, Any]:
        ok, error = self._store_ok()
        versions = self.store.versions() if ok else {}
        checks = {
            "broker": {"ok": True, "kind": "producer" if self.sink is not None else "none"},
            "store": {"ok": ok, "kind": type(self.store).__name__, "error": error},
            "teacher": self._teacher_check(versions),
        }
        refresh = self._item_refresh_status()
        if refresh is not None:
            checks["item_refresh"] = self._item_refresh_check(refresh)
        # a stale refresher degrades, never downs: requests then read the table inline
        status = "ok" if all(c["ok"] for c in checks.values()) else "degraded"
        return {"status": status if ok else "down", "checks": checks}

    def _item_refresh_status(self) -> dict[str, Any] | None:
        """The store's item refresher status (``RedisStore.item_refresh_status``) when one
        is configured: running, or its thread dead with a snapshot left; None for a store
        without one (MemoryStore), a refresher never started, or one stopped."""
        status_of = getattr(self.store, "item_refresh_status", None)
        if not callable(status_of):
            return None
        status: dict[str, Any] = status_of()
        if not status.get("running") and status.get("age_s") is None:
            return None
        return status

    def _item_refresh_check(self, status: dict[str, Any]) -> dict[str, Any]:
        """Ok while the refresher runs and its snapshot is at most ``max_age_s`` old; before
        its first snapshot, the age counts from when this check first saw it missing."""
        age, bound = status["age_s"], float(status["max_age_s"])
        now = time.monotonic()
        with self._lock:
            if age is not None or not status["running"]:
                self._refresh_pending_since = None
            elif self._refresh_pending_since is None:
                self._refresh_pending_since = now
            pending = self._refresh_pending_since
        reason = None
        if not status["running"]:
            reason = "the refresher thread is not running; requests read the table inline"
        elif age is None and pending is not None and now - pending > bound:
            reason = f"no snapshot after {now - pending:.1f}s (> max_age_s); requests read inline"
        elif age is not None and age > bound:
            reason = f"snapshot {age:.1f}s old (> max_age_s); requests read the table inline"
        return {
            "ok": reason is None,
            "running": bool(status["running"]),
            "age_s": age,
            "max_age_s": bound,
            "errors": int(status["errors"]),
            "reason": reason,
        }

    def _teacher_check(self, versions: dict[str, int]) -> dict[str, Any]:
        """The teacher's age: wall seconds since a processor first applied the current
        version's soft labels (``teacher_seen_at``); unknown (and ok) before any label."""
        seen_at = versions.get("teacher_seen_at", 0)
        age = max(time.time() - seen_at, 0.0) if seen_at else None
        return {
            "ok": age is None or age <= self.teacher_stale_s,
            "version": int(versions.get("teacher", 0)),
            "age_s": age,
            "stale_after_s": self.teacher_stale_s,
        }

    def stats(self) -> dict[str, Any]:
        versions = self.store.versions()
        n_users = getattr(self.store, "n_users", None)
        with self._lock:
            accepted, rejected = self._accepted, self._rejected
        return {
            "time": time.time(),
            "events": accepted,
            "events_per_s": 0.0,
            "users": n_users() if callable(n_users) else None,
            "items": len(item_table_view(self.store)[1]),  # no copy of the id list
            "dead_lettered": rejected,
            "consumer_lag": None,
            "hr_at_10": {},
            "teacher": {"version": int(versions.get("teacher", 0)), "refreshes": None,
                        "age_s": None},
            "mixing_weight": None,
            "student_version": int(versions.get("student", 0)),
            "item_refresh": self._item_refresh_stats(),
        }

    def _item_refresh_stats(self) -> dict[str, Any] | None:
        """The refresher's status for ``/v1/stats`` (see :meth:`ServingService.stats`)."""
        status = self._item_refresh_status()
        if status is None:
            return None
        every = status.get("every_s")  # a store whose status lacks it: unknown
        return {
            "running": bool(status["running"]),
            "age_s": status["age_s"],
            "max_age_s": float(status["max_age_s"]),
            "every_s": None if every is None else float(every),
            "errors": int(status["errors"]),
        }

    def metrics_text(self) -> str:
        versions = self.store.versions()
        with self._lock:
            accepted, rejected = self._accepted, self._rejected
        return render_samples([
            Sample("kdstream_api_events_accepted_total", "counter",
                   "Events accepted by this API process.", accepted),
            Sample("kdstream_dead_letters_total", "counter",
                   "Records this API process sent to the dead-letter topic.", rejected),
            Sample("kdstream_student_version", "gauge", "Student version in the store.",
                   versions.get("student", 0)),
            Sample("kdstream_teacher_version", "gauge", "Teacher version in the store.",
                   versions.get("teacher", 0)),
            *self._item_refresh_samples(),
        ])

    def _item_refresh_samples(self) -> list[Sample]:
        """The item refresher's gauges; none without a configured refresher."""
        status = self._item_refresh_status()
        if status is None:
            return []
        age = status["age_s"]
        return [
            Sample("kdstream_item_refresh_running", "gauge",
                   "1 while the item-table refresher thread runs.", int(bool(status["running"]))),
            Sample("kdstream_item_refresh_age_seconds", "gauge",
                   "Age of the refresher's item-table snapshot (NaN before the first).",
                   math.nan if age is None else age),
            Sample("kdstream_item_refresh_max_age_seconds", "gauge",
                   "Snapshot age past which requests read the item table inline.",
                   status["max_age_s"]),
            Sample("kdstream_item_refresh_errors_total", "counter",
                   "Failed item refresher checks since it started.", status["errors"]),
        ]


__all__ = [
    "EmbeddedServingService",
    "EventSink",
    "IngestResult",
    "Recommendation",
    "RecordError",
    "ServingService",
    "StoreServingService",
    "ingest_records",
    "split_body",
]
