"""The processor as a faust-streaming agent (``kdstream processor --engine faust``).

One faust app per consumer group (the app id *is* the group id). Its parts:

* an agent on the events topic with ``concurrency=1`` (faust-streaming has an open bug that
  commits past a gap of acked offsets with concurrency > 1) that reads micro-batches with
  ``stream.take_events(batch_size, within=...)`` (the events carry each record's partition
  and offset; ``take()`` would only give the values) and feeds the records to
  :meth:`ProcessorCore.process`, which writes the batch's store effects and the offsets it
  covers in one store transaction;
* an agent on the compacted soft-label topic that keeps the latest soft labels per key in a
  changelog-backed :class:`faust.Table` (``use_partitioner=True``: the changelog partition is
  the key's murmur2 partition, the same partition the user's events and soft labels have, so
  the table is co-partitioned with the events) and feeds them to the Learner; after a table
  recovery (a restart or a rebalance) the recovered labels are fed to the Learner again.

Why the store, not faust, decides where to read from
----------------------------------------------------
``stream.take*()`` acknowledges the whole batch in a ``finally`` -- also when the body raises
-- and faust acks (then commits) records it skips during a rebalance. Kafka's committed
offset can therefore run ahead of what was applied. So the consumer's ``seek_to_committed``
(faust calls it after every rebalance, once table recovery is done, and whenever a fetch
arrives while the flow is stopped) is wrapped: after faust's own seek it seeks every events
partition to the store's applied offset. Re-delivered records below that offset are skipped by
:meth:`ProcessorCore.process`. Inside the agent, a failed batch is retried (store or hub
unreachable: forever, with backoff) and never handed back to ``take_events`` as an
exception; an unexpected error is retried a few times and then crashes the worker, whose
restart resumes from the store's offsets.

The CPU-bound batch runs in a worker thread (``offload=True``) so that faust keeps fetching
and decoding the next batch meanwhile; a lock serialises it with the rebalance callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kdstream.errors import ConfigError, ServiceError

from ._deadletter import DeadLetter
from ._processor import ProcessorCore, ProcessorStats

_log = logging.getLogger(__name__)

#: Unexpected (non-service) errors of one batch before the worker is crashed on purpose.
MAX_UNEXPECTED_FAILURES = 3


@dataclass(frozen=True)
class FaustProcessorConfig:
    """Knobs of the faust engine.

    Parameters
    ----------
    batch_size
        Events per ``take_events`` micro-batch.
    within_s
        ``take_events`` timeout: a partial batch is processed after this long. Short, because
        below ``batch_size`` events per window every event waits for it (0.2 s gave a p50 of
        129 ms at 2,000 events/s, 0.02 s 23 ms); in catch-up batches fill before it ends.
    offload
        Run :meth:`ProcessorCore.process` in a worker thread (faust keeps fetching meanwhile).
    session_timeout_s, heartbeat_s
        Consumer-group session: a SIGKILLed member's partitions move after at most
        ``session_timeout_s`` (faust's default is 60 s).
    retry_backoff_s
        First delay between attempts of a failed batch; doubles up to 5 s.
    soft_labels
        Consume the soft-label topic into the table (off for a bare benchmark).
    loglevel
        faust worker log level.
    """

    batch_size: int = 1000
    within_s: float = 0.02
    offload: bool = True
    session_timeout_s: float = 10.0
    heartbeat_s: float = 3.0
    retry_backoff_s: float = 0.2
    soft_labels: bool = True
    loglevel: str = "WARNING"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"FaustProcessorConfig.batch_size: expected >= 1, got "
                              f"{self.batch_size!r}")
        if not self.within_s > 0:
            raise ConfigError(f"FaustProcessorConfig.within_s: expected > 0, got "
                              f"{self.within_s!r}")


def _broker_url(bootstrap: str) -> str:
    hosts = [h.strip().removeprefix("kafka://") for h in bootstrap.split(",") if h.strip()]
    if not hosts:
        raise ConfigError(f"faust processor: empty bootstrap {bootstrap!r}")
    return ";".join(f"kafka://{h}" for h in hosts)


def topic_partitions(
    bootstrap: str, topic: str, security: Mapping[str, Any] | None = None
) -> int:
    """Partition count of an existing topic (faust needs it for the co-partitioned table).

    ``security``: kafka-python SASL/TLS arguments (``kdstream.settings.kafka_client_kwargs``).
    """
    from ._kafka_admin import describe_topics

    info = describe_topics(bootstrap.removeprefix("kafka://"), [topic], security=security)[topic]
    if not info.get("exists"):
        raise ServiceError(f"topic {topic!r} does not exist: run `kdstream topics create`")
    return int(info["partitions"])


def faust_credentials(security: Mapping[str, Any] | None) -> Any:
    """faust ``broker_credentials`` for kafka-python security arguments (None: PLAINTEXT).

    ``security`` is what ``kdstream.settings.kafka_client_kwargs`` returns, so one setting
    drives both engines: ``SASL_PLAINTEXT``/``SASL_SSL`` -> ``faust.SASLCredentials`` (with a
    TLS context for ``SASL_SSL``), ``SSL`` -> ``faust.SSLCredentials``. faust's aiokafka driver
    turns them into its consumers' and producer's ``security_protocol``, ``sasl_*`` and
    ``ssl_context`` (``credentials_to_aiokafka_auth``). The result holds the password; its
    ``repr`` does not.
    """
    protocol = (security or {}).get("security_protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return None
    if protocol not in ("SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError(f"security_protocol: unknown {protocol!r}")
    import ssl

    import faust

    sec = dict(security or {})
    context = sec.get("ssl_context")  # kafka_client_kwargs' one: same CA, cert and TLS cap
    if context is None and protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=sec.get("ssl_cafile"))
        if sec.get("ssl_certfile") is not None:
            context.load_cert_chain(sec["ssl_certfile"], sec.get("ssl_keyfile"))
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=sec.get("sasl_plain_username"),
        password=sec.get("sasl_plain_password"),
        mechanism=sec.get("sasl_mechanism") or "PLAIN",
        ssl_context=context,  # a context makes faust use SASL_SSL
    )


def make_app(
    app_id: str,
    bootstrap: str,
    partitions: int,
    cfg: FaustProcessorConfig,
    credentials: Any | None = None,
) -> Any:
    """A faust app tuned for kdstream: raw bytes, no web server, memory tables.

    ``credentials``: faust ``broker_credentials`` (see :func:`faust_credentials`).
    """
    import faust

    return faust.App(
        app_id,
        broker=_broker_url(bootstrap),
        broker_credentials=credentials,
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=partitions,
        broker_session_timeout=cfg.session_timeout_s,
        broker_heartbeat_interval=cfg.heartbeat_s,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        # faust keeps table state under <datadir>/<app id>-data; tables are in memory here,
        # so keep those folders out of the working directory
        datadir=str(Path(tempfile.gettempdir()) / "kdstream-faust"),
    )


class FaustProcessor:
    """The faust app around one :class:`ProcessorCore`; :meth:`run` blocks until stopped.

    Parameters
    ----------
    bootstrap
        ``host:port`` (or ``kafka://host:port``; several comma-separated).
    core
        The processor core (its config names the topics). Its store-write retries are set
        to forever: a batch must never leave the agent with an exception.
    group
        Consumer group, also the faust app id.
    config
        See :class:`FaustProcessorConfig`.
    partitions
        Events-topic partition count (default: asked from the broker).
    producer
        Dead-letter producer with ``send(topic, value, key=...)`` and ``flush()`` (default:
        a kafka-python :class:`~kdstream.stream._kafka_producer.KafkaEventProducer`).
    security
        kafka-python SASL/TLS arguments (``kdstream.settings.kafka_client_kwargs``), used by
        the admin lookup and the dead-letter producer, and mapped to faust's
        ``broker_credentials`` (:func:`faust_credentials`). ``kdstream processor`` checks the
        login first (``check_kafka_login``), for either engine.
    """

    def __init__(
        self,
        bootstrap: str,
        core: ProcessorCore,
        *,
        group: str = "kd-processor",
        config: FaustProcessorConfig | None = None,
        partitions: int | None = None,
        producer: Any | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        from ._kafka_admin import bootstrap_servers
        from ._kafka_producer import KafkaEventProducer

        self.cfg = cfg = config or FaustProcessorConfig()
        self.core = core
        core.config = replace(core.config, write_retries=0)  # retry forever, inside the agent
        self.topics = core.config
        self.bootstrap = bootstrap.removeprefix("kafka://")
        sec = dict(security or {})
        credentials = faust_credentials(sec)  # a bad TLS file fails here, before any I/O
        self.partitions = partitions or topic_partitions(
            self.bootstrap, self.topics.events_topic, sec
        )
        self.producer = producer or KafkaEventProducer(
            bootstrap_servers(self.bootstrap), linger_ms=0, **sec
        )
        core._dead_letter = self._send_dead
        core.flush_dead_letters = self.producer.flush
        self.lock = threading.Lock()
        self.assigned: set[int] = set()
        self.ever_assigned = False
        self.last_record_at = time.monotonic()
        self.batches_seen = 0
        self.app = make_app(group, self.bootstrap, self.partitions, cfg, credentials)
        self._wire()

    # ---------------------------------------------------------------- wiring
    def _send_dead(self, letter: DeadLetter) -> None:
        self.producer.send(self.topics.dlq_topic, letter.to_bytes())

    def _wire(self) -> None:
        app, cfg, topics = self.app, self.cfg, self.topics
        events = app.topic(
            topics.events_topic, key_type=bytes, value_type=bytes,
            key_serializer="raw", value_serializer="raw", partitions=self.partitions,
        )

        @app.agent(events, concurrency=1, name="kdstream-learn")
        async def learn(stream: Any) -> None:
            async for batch in stream.take_events(cfg.batch_size, within=cfg.within_s):
                self.last_record_at = time.monotonic()
                await self._process([ev.message for ev in batch])
                self.last_record_at = time.monotonic()

        self.learn_agent = learn
        self.table: Any = None
        if cfg.soft_labels:
            self.table = app.Table(
                "kdstream-soft-labels", default=None, partitions=self.partitions,
                key_type=bytes, value_type=bytes, use_partitioner=True,
            )
            soft = app.topic(
                topics.soft_labels_topic, key_type=bytes, value_type=bytes,
                key_serializer="raw", value_serializer="raw", partitions=self.partitions,
            )

            @app.agent(soft, concurrency=1, name="kdstream-soft-labels")
            async def soft_labels(stream: Any) -> None:
                async for batch in stream.take_events(500, within=0.5):
                    messages = [ev.message for ev in batch if ev.message.value is not None]
                    for m in messages:
                        if m.key is not None:
                            self.table[m.key] = m.value
                    await self._call(self.core.apply_soft_labels, messages)

            self.soft_agent = soft_labels

            @self.table.on_recover
            async def _recovered() -> None:
                values = [_TableRecord(topics.soft_labels_topic, v) for v in self.table.values()
                          if v is not None]
                if values:
                    n = await self._call(self.core.apply_soft_labels, values)
                    _log.info("fed %d recovered soft labels to the learner", n)

        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)

    async def _on_assigned(self, sender: Any, assigned: set[Any], **_kw: Any) -> None:
        parts = sorted(tp.partition for tp in assigned if tp.topic == self.topics.events_topic)
        self._patch_seek()
        with self.lock:
            self.core.assign(parts)
        self.assigned = set(parts)
        self.ever_assigned = self.ever_assigned or bool(parts)
        self.last_record_at = time.monotonic()  # idle time counts from the assignment
        _log.info("assigned partitions %s", parts)

    async def _on_revoked(self, sender: Any, revoked: set[Any], **_kw: Any) -> None:
        parts = [tp.partition for tp in revoked if tp.topic == self.topics.events_topic]
        with self.lock:
            self.core.revoke(parts)
        self.assigned -= set(parts)

    def _patch_seek(self) -> None:
        consumer = self.app.consumer
        if getattr(consumer, "_kdstream_seek", False):
            return
        faust_seek: Callable[[], Awaitable[Mapping[Any, int]]] = consumer.seek_to_committed
        topic = self.topics.events_topic

        async def seek_to_committed() -> Mapping[Any, int]:
            committed = dict(await faust_seek())
            targets = {}
            for tp in consumer.assignment():
                applied = self.core.applied(tp.partition) if tp.topic == topic else None
                if applied is not None:
                    targets[tp] = applied
            if targets:
                await consumer.seek_wait(targets)
                moved = {tp.partition: (committed.get(tp), off) for tp, off in targets.items()
                         if committed.get(tp) != off}
                if moved:
                    _log.info("sought to the store's applied offsets {p: (kafka, store)}: %s",
                              moved)
                committed.update(targets)
            return committed

        consumer.seek_to_committed = seek_to_committed
        consumer._kdstream_seek = True

    # ------------------------------------------------------------- batches
    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        def locked() -> Any:
            with self.lock:
                return fn(*args)

        if self.cfg.offload:
            return await asyncio.get_running_loop().run_in_executor(None, locked)
        return locked()

    async def _process(self, records: Sequence[Any]) -> None:
        delay = self.cfg.retry_backoff_s
        unexpected = 0
        while True:
            try:
                await self._call(self.core.process, records)
                self.batches_seen += 1
                return
            except ServiceError as exc:  # store or hub down: not the records' fault
                _log.warning("batch of %d records failed, retrying in %.1fs: %s",
                             len(records), delay, exc)
            except Exception as exc:
                unexpected += 1
                _log.exception("batch of %d records failed unexpectedly (%d/%d)",
                               len(records), unexpected, MAX_UNEXPECTED_FAILURES)
                if unexpected >= MAX_UNEXPECTED_FAILURES:
                    # take_events would ack the batch: crash instead; a restart resumes from
                    # the store's applied offsets, so the batch is not lost.
                    await self.app.crash(exc)
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # ----------------------------------------------------------------- run
    def run(self, idle_exit_s: float | None = None) -> ProcessorStats:
        """Run the faust worker until SIGTERM/SIGINT (or ``idle_exit_s`` without records)."""
        import faust

        if idle_exit_s is not None:
            self._add_idle_exit(idle_exit_s)
        worker = faust.Worker(
            self.app, loglevel=self.cfg.loglevel, quiet=True, redirect_stdouts=False,
        )
        worker.spinner = None  # it writes cursor escapes to stdout, even when not a tty
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
        finally:
            self._finish()
        return self.core.stats

    def _add_idle_exit(self, idle_exit_s: float) -> None:
        stopping = False

        @self.app.timer(min(0.5, idle_exit_s / 4))
        async def _idle_exit() -> None:
            nonlocal stopping
            idle = time.monotonic() - self.last_record_at
            # before the first assignment (a rebalance waiting out a dead member's session)
            # idleness does not count
            if not stopping and self.assigned and idle >= idle_exit_s:
                stopping = True
                _log.info("idle for %.1fs: stopping", idle)
                os.kill(os.getpid(), signal.SIGTERM)  # exactly the worker's SIGTERM path

    def _finish(self) -> None:
        # leave the merged item table served and the hub up to date
        if self.ever_assigned:
            with self.lock, contextlib.suppress(ServiceError):
                self.core._write(self.core.sync_items())
        try:
            self.producer.close()
        except Exception as exc:  # closing must not hide the worker's own error
            _log.warning("producer close failed: %r", exc)


@dataclass(frozen=True)
class _TableRecord:
    """A soft-label value from the table, shaped as a record for ``apply_soft_labels``."""

    topic: str
    value: bytes
    partition: int = 0
    offset: int = 0
    key: bytes | None = None


def run_faust_processor(
    bootstrap: str,
    core: ProcessorCore,
    group: str = "kd-processor",
    batch_size: int = 1000,
    idle_exit_s: float | None = None,
    *,
    config: FaustProcessorConfig | None = None,
    security: Mapping[str, Any] | None = None,
) -> ProcessorStats:
    """Run ``core`` as a faust worker in this process (blocks; SIGTERM stops it cleanly).

    ``security``: kafka-python SASL/TLS arguments (see :class:`FaustProcessor`).
    """
    cfg = replace(config or FaustProcessorConfig(), batch_size=batch_size)
    processor = FaustProcessor(bootstrap, core, group=group, config=cfg, security=security)
    return processor.run(idle_exit_s)


def run_bare_counter(
    bootstrap: str,
    topic: str,
    group: str,
    expect: int,
    *,
    batch_size: int = 1000,
    within_s: float = 0.2,
    idle_exit_s: float = 10.0,
) -> dict[str, float]:
    """The yardstick: a faust agent that only counts ``topic``'s records in ``take()`` batches.

    Stops after ``expect`` records (or ``idle_exit_s`` idle); returns ``{"count", "seconds",
    "events_per_s"}``: the records after the first batch over the time from it to the last.
    """
    import faust

    cfg = FaustProcessorConfig(batch_size=batch_size, within_s=within_s)
    partitions = topic_partitions(bootstrap, topic)
    app = make_app(group, bootstrap.removeprefix("kafka://"), partitions, cfg)
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=partitions)
    state = {"count": 0, "first_n": 0, "first": 0.0, "last": 0.0, "seen": time.monotonic()}

    @app.agent(source, concurrency=1)
    async def count(stream: Any) -> None:
        async for values in stream.take(batch_size, within=within_s):
            now = time.perf_counter()
            if not state["count"]:  # the clock starts at the first batch: count after it
                state["first"], state["first_n"] = now, len(values)
            state["count"] += len(values)
            state["last"] = now
            state["seen"] = time.monotonic()
            if state["count"] >= expect:
                os.kill(os.getpid(), signal.SIGTERM)

    @app.timer(0.5)
    async def _idle() -> None:
        if state["count"] and time.monotonic() - state["seen"] > idle_exit_s:
            os.kill(os.getpid(), signal.SIGTERM)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
    seconds = max(state["last"] - state["first"], 1e-9)
    return {"count": state["count"], "seconds": seconds,
            "events_per_s": (state["count"] - state["first_n"]) / seconds}


__all__ = [
    "FaustProcessor",
    "FaustProcessorConfig",
    "faust_credentials",
    "make_app",
    "run_bare_counter",
    "run_faust_processor",
    "topic_partitions",
]
