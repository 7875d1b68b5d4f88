"""The teacher process: ``kd.events`` (own consumer group) -> window -> train -> soft labels.

Run it with ``kdstream teacher --broker kafka://127.0.0.1:9092 [--teacher-every-events N]``.

It reads the event history with a kafka-python consumer in its own group, keeps the last
``window_events`` events, and when the refresh policy fires trains the SASRec teacher on the
window and publishes one soft-label message per active user of the window (key = user) and one
per frequent item (key = ``item:<id>``, transition labels) to the compacted soft-label topic,
with the teacher's version. Restarts: after each refresh the model, the id maps and the window
are saved under ``state_dir``, with the window's positions, *before* the consumer's offsets are
committed, so a restarted process loads them and resumes at those positions (or at the committed
offsets when they are further on): events after the last save are re-read into the window, none
is folded twice, and nothing is published twice for a refresh that was saved.

Refreshes by event count happen at exact counts: every valid event on the topic counts (also
the non-positive ones, which the window leaves out by default), and a poll that crosses the
``every_events`` boundary is split there, so refresh ``k`` trains on exactly the first
``k * every_events`` events (if ``min_events`` allows) whatever the poll sizes were, and the
offsets committed after it are those of the boundary. That makes runs comparable with the
embedded runtime, whose refresh policy counts the same way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdstream.online import Vocab
from kdstream.teacher import RefreshPolicy, TeacherConfig, TeacherJob, run_job

from ._codec import decode_records, encode_soft_labels
from ._event import Event
from ._soft_labels import soft_label_messages

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherProcessConfig:
    """Settings of the teacher process.

    Parameters
    ----------
    bootstrap
        Kafka ``host:port``.
    events_topic, soft_labels_topic
        Where events come from and soft labels go.
    group
        The teacher's own consumer group (independent of the processors').
    state_dir
        Saved model, id maps and window.
    every_events, every_seconds, min_events
        Refresh policy (see :class:`~kdstream.teacher.RefreshPolicy`).
    window_events
        Events kept for training.
    epochs, dim, top_m, transition_items
        Teacher training budget, width, labels per key and items given transition labels.
    teacher
        A complete :class:`~kdstream.teacher.TeacherConfig` instead of the one built from
        ``dim``, ``epochs``, ``top_m`` and ``window_events`` (e.g. the embedded runtime's, to
        compare the two runtimes).
    window_positives_only
        Train on positive events only (default); ``False`` keeps every valid event in the
        window, as the embedded runtime does.
    max_refresh_s
        Longest a refresh (training and publishing) may take. The consumer is not polled while
        the teacher trains, and Kafka drops a group member that has not polled within
        ``max.poll.interval.ms`` (5 minutes by default), after which the refresh's offset
        commit would fail; so that interval is set from this bound (default one hour).
    """

    bootstrap: str
    events_topic: str = "kd.events"
    soft_labels_topic: str = "kd.soft-labels"
    group: str = "kd-teacher"
    state_dir: Path = Path(".kdstream/state/teacher")
    every_events: int | None = 20_000
    every_seconds: float | None = None
    min_events: int = 200
    window_events: int = 100_000
    epochs: int = 3
    dim: int = 32
    top_m: int = 20
    transition_items: int = 500
    teacher: TeacherConfig | None = None
    window_positives_only: bool = True
    max_refresh_s: float = 3600.0


class TeacherProcess:
    """Consume, window, train, publish, save; see the module docstring.

    ``security``: extra kafka-python arguments of the consumer and the default producer
    (SASL/TLS; see ``kdstream.settings.kafka_client_kwargs``).
    """

    def __init__(
        self,
        config: TeacherProcessConfig,
        producer: Any | None = None,
        *,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        from kafka import KafkaConsumer

        from ._kafka_admin import bootstrap_servers
        from ._kafka_producer import KafkaEventProducer

        self.config = cfg = config
        servers = bootstrap_servers(cfg.bootstrap)
        self.policy = RefreshPolicy(
            every_events=cfg.every_events, every_seconds=cfg.every_seconds,
            min_events=cfg.min_events,
        )
        self.teacher_config = cfg.teacher or TeacherConfig(
            dim=cfg.dim, n_heads=2, epochs=cfg.epochs, top_m=cfg.top_m, device="cpu",
            window_events=cfg.window_events,
        )
        sec = dict(security or {})
        self.producer = producer or KafkaEventProducer(servers, **sec)
        self.consumer = KafkaConsumer(
            bootstrap_servers=servers,
            group_id=cfg.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
            session_timeout_ms=10_000,
            max_poll_interval_ms=int(cfg.max_refresh_s * 1000),
            **sec,
        )
        self.users = Vocab()
        self.items = Vocab()
        self.window_users = np.zeros(0, np.int64)
        self.window_items = np.zeros(0, np.int64)
        self.last_ts = 0.0
        self.teacher: Any = None
        self.stop = threading.Event()
        self.events_seen = 0
        self.since_refresh = 0
        self.published = 0
        self.refreshes = 0
        #: (topic, partition) -> next offset folded into the window (committed at a refresh)
        self._positions: dict[tuple[str, int], int] = {}
        #: positions of the saved window: where a restart resumes if the commit after the save
        #: did not happen (a crash between the two, or the group dropped a slow refresh)
        self._saved_positions: dict[tuple[str, int], int] = {}
        self._load()
        self.consumer.subscribe([cfg.events_topic], listener=self._listener())

    # ------------------------------------------------------------------ state
    def _load(self) -> None:
        d = self.config.state_dir
        meta = d / "state.json"
        if not meta.exists():
            return
        state = json.loads(meta.read_text())
        self.users = Vocab(state["users"])
        self.items = Vocab(state["items"])
        self.last_ts = float(state["last_ts"])
        self.events_seen = int(state["events_seen"])
        for key, off in state.get("positions", {}).items():  # "topic:partition" -> offset
            topic, partition = key.rsplit(":", 1)
            self._saved_positions[(topic, int(partition))] = int(off)
        with np.load(d / "window.npz", allow_pickle=False) as z:
            self.window_users, self.window_items = z["users"], z["items"]
        if (d / "model").exists():
            from kdstream.teacher import SASRecTeacher

            self.teacher = SASRecTeacher.load(d / "model", device="cpu")
        _log.info("teacher state loaded: %d events in the window, version %s",
                  len(self.window_users), getattr(self.teacher, "version", 0))

    def _save(self) -> None:
        d = self.config.state_dir
        d.mkdir(parents=True, exist_ok=True)
        if self.teacher is not None:
            self.teacher.save(d / "model")
        np.savez(d / "window.npz", users=self.window_users, items=self.window_items)
        tmp = d / "state.json.tmp"
        tmp.write_text(json.dumps({
            "users": self.users.ids, "items": self.items.ids, "last_ts": self.last_ts,
            "events_seen": self.events_seen,
            "positions": {f"{t}:{p}": off for (t, p), off in self._positions.items()},
        }))
        tmp.replace(d / "state.json")  # atomic: a crash leaves the old or the new state

    # --------------------------------------------------------------- refresh
    def _job(self) -> TeacherJob:
        return TeacherJob.from_window(
            self.window_users,
            self.window_items,
            n_items=len(self.items),
            trained_until=self.last_ts,
            max_len=self.teacher_config.max_len,
            transition_items=self.config.transition_items,
        )

    def refresh(self) -> int:
        """Train on the window, publish soft labels, save; returns the messages published."""
        if self.teacher is None:
            from kdstream.teacher import SASRecTeacher

            self.teacher = SASRecTeacher(self.teacher_config)
        result = run_job(self.teacher, self._job())
        topic = self.config.soft_labels_topic
        n = 0
        for labels in soft_label_messages(result, self.users.ids, self.items.ids):
            self.producer.send(topic, encode_soft_labels(labels), key=labels.key)
            n += 1
        self.producer.flush()
        self._save()
        self._commit()  # after the save: a restart resumes with this window and model
        self.published += n
        self.refreshes += 1
        self.since_refresh = 0
        _log.info("teacher v%d: %d soft-label messages (%.1fs)", result.version, n,
                  result.seconds)
        return n

    def _listener(self) -> Any:
        from kafka import ConsumerRebalanceListener

        process = self

        class _ResumeFromSavedState(ConsumerRebalanceListener):  # type: ignore[misc]
            """Start each partition at the saved window's position when that is ahead of the
            committed offset, so a window is never folded twice."""

            def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            def on_partitions_assigned(self, assigned: Any) -> None:
                for tp in assigned:
                    saved = process._saved_positions.get((tp.topic, tp.partition))
                    if saved is None:
                        continue
                    committed = process.consumer.committed(tp)
                    if committed is None or committed < saved:
                        process.consumer.seek(tp, saved)

        return _ResumeFromSavedState()

    def _commit(self) -> None:
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError
        from kafka.structs import OffsetAndMetadata

        from ._processor import _offset_meta

        self._saved_positions = dict(self._positions)
        if not self._positions:
            return
        try:
            self.consumer.commit({
                TopicPartition(t, p): _offset_meta(OffsetAndMetadata, off)
                for (t, p), off in self._positions.items()
            })
        except CommitFailedError as exc:
            # The group dropped us (a refresh longer than max_refresh_s) or rebalanced. The
            # saved state holds these positions, so a restart still resumes after them, and the
            # next refresh commits again once the consumer has rejoined.
            _log.warning("teacher offsets not committed (%s): resuming from the saved state "
                         "positions instead; raise max_refresh_s if refreshes take longer",
                         type(exc).__name__)

    def _fold(self, events: list[Event]) -> None:
        if self.config.window_positives_only:
            events = [e for e in events if e.signal() > 0]
        if not events:
            return
        keep = self.config.window_events
        u = self.users.add_many([e.user for e in events])
        i = self.items.add_many([e.item for e in events])
        self.window_users = np.concatenate([self.window_users, u])[-keep:]
        self.window_items = np.concatenate([self.window_items, i])[-keep:]
        self.last_ts = max([self.last_ts, *(e.ts for e in events)])

    def ingest(self, records: list[Any], max_refreshes: int | None = None) -> bool:
        """Fold polled records into the window, refreshing exactly at each ``every_events``
        boundary; returns False once ``max_refreshes`` is reached (the rest is left unread:
        its offsets are not committed)."""
        decoded, _dead = decode_records(records, ts=time.time())
        by_record = {id(r): e for r, e in decoded}
        segment: list[Event] = []
        by_count = self.policy.every_events is not None
        for r in records:
            self._positions[(r.topic, r.partition)] = r.offset + 1
            e = by_record.get(id(r))
            if e is None:
                continue
            segment.append(e)
            self.events_seen += 1
            self.since_refresh += 1
            if by_count and self.policy.due(self.since_refresh, 0.0, self.events_seen):
                self._fold(segment)
                segment = []
                self.refresh()
                if max_refreshes is not None and self.refreshes >= max_refreshes:
                    return False
        self._fold(segment)
        return True

    def run(self, max_refreshes: int | None = None, idle_exit_s: float | None = None
            ) -> dict[str, Any]:
        """Consume and refresh until stopped, ``max_refreshes`` or ``idle_exit_s``."""
        last_refresh = last_record = time.monotonic()
        try:
            while not self.stop.is_set():
                polled = self.consumer.poll(timeout_ms=500)
                records = [r for batch in polled.values() for r in batch]
                if records:
                    last_record = time.monotonic()
                    before = self.refreshes
                    going = self.ingest(records, max_refreshes)
                    if self.refreshes > before:
                        last_refresh = time.monotonic()
                    if not going:
                        break
                elif idle_exit_s is not None and time.monotonic() - last_record > idle_exit_s:
                    break
                seconds = time.monotonic() - last_refresh
                if self.policy.every_seconds is not None and self.policy.due(
                    self.since_refresh, seconds, self.events_seen
                ):
                    self.refresh()
                    last_refresh = time.monotonic()
                    if max_refreshes is not None and self.refreshes >= max_refreshes:
                        break
        finally:
            self.consumer.close()
            self.producer.close()
        return {
            "events_seen": self.events_seen,
            "refreshes": self.refreshes,
            "published": self.published,
            "version": getattr(self.teacher, "version", 0),
        }


__all__ = ["TeacherProcess", "TeacherProcessConfig"]
