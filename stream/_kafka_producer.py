"""A kafka-python producer with the embedded producer's ``send``/``flush``/``close`` shape.

Replay, the HTTP ingest and the teacher's publisher use it the same way as
``EmbeddedProducer``; delivery failures are collected by callback and raised by ``flush``.
"""

from __future__ import annotations

import threading
from typing import Any

from kdstream.errors import ConfigError, ServiceError
from kdstream.stream._kafka_admin import bootstrap_servers

_COMPRESSIONS = ("auto", "gzip", "lz4", "zstd", "snappy", "none")
_MAX_ERRORS_KEPT = 20


def available_compressions() -> list[str]:
    """Codecs kafka-python can use in this environment (gzip needs nothing; the rest need
    the ``lz4``, ``zstandard`` or ``python-snappy`` packages)."""
    from kafka import codec

    found = ["gzip"] if codec.has_gzip() else []
    found += [name for name in ("lz4", "zstd", "snappy") if getattr(codec, f"has_{name}")()]
    return found


def _resolve_compression(name: str | None) -> str | None:
    if name is None or name == "none":
        return None
    if name not in _COMPRESSIONS:
        raise ConfigError(f"compression must be one of {_COMPRESSIONS}, got {name!r}")
    have = available_compressions()
    if name == "auto":
        # lz4 and zstd cost far less CPU than gzip for the same batches; gzip always works.
        return next((c for c in ("lz4", "zstd", "gzip") if c in have), None)
    if name not in have:
        raise ConfigError(f"compression {name!r} needs an extra package; available here: {have}")
    return name


def _supports_idempotence() -> bool:
    from kafka import KafkaProducer

    # kafka-python gained the idempotent producer (KIP-98) in 2.2.0.
    return "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG


class KafkaEventProducer:
    """Keyed, batched, compressed, acknowledged producing to Kafka.

    Parameters
    ----------
    bootstrap
        ``host:port[,host:port]`` or ``kafka://host:port``.
    linger_ms
        How long a batch waits for more records before it is sent.
    batch_size
        Maximum bytes per partition batch.
    compression
        ``"auto"`` (lz4, else zstd, else gzip: whatever is importable), a codec name, or
        ``"none"``/``None``.
    acks
        ``"all"`` (default: every in-sync replica), ``1`` or ``0``.
    enable_idempotence
        Idempotent producing (no duplicates from retries; needs ``acks="all"``). ``None``
        means "when the installed kafka-python supports it".
    retries
        Retries per batch; ``None`` keeps kafka-python's default (unbounded, limited by
        ``delivery_timeout_ms``).
    delivery_timeout_ms
        Upper bound from ``send`` to a reported success or failure.
    max_block_ms
        How long ``send`` may block when the buffer is full or metadata is missing.
    event_time_as_timestamp
        Stamp each record with the ``ts`` given to :meth:`send` (Kafka's CreateTime) instead of
        the time it is produced (the default). Off by default because a broker applies its
        time-based retention (7 days unless configured) to record timestamps: a replayed log
        whose events are years old would be deleted at the broker's next retention check,
        minutes after the replay, before processors read it (and brokers that set
        ``log.message.timestamp.before.max.ms`` refuse such records). The event time travels in
        the record's JSON either way, and kdstream reads it from there.
    client
        An object with kafka-python's ``send``/``flush``/``close`` to use instead of building a
        ``KafkaProducer`` (tests inject fakes here).
    **extra
        Further ``KafkaProducer`` settings, passed as given.

    Examples
    --------
    >>> class FakeFuture:
    ...     def add_callback(self, fn): fn(None)
    ...     def add_errback(self, fn): pass
    >>> class FakeClient:
    ...     def send(self, topic, **kw): return FakeFuture()
    ...     def flush(self, timeout=None): pass
    ...     def close(self, timeout=None): pass
    >>> producer = KafkaEventProducer("127.0.0.1:9092", client=FakeClient())
    >>> producer.send("kd.events", b"{}", key="u1", ts=1.5)
    >>> producer.flush()
    >>> producer.n_sent, producer.n_delivered
    (1, 1)
    >>> producer.close()
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        linger_ms: int = 5,
        batch_size: int = 64 * 1024,
        compression: str | None = "auto",
        acks: str | int = "all",
        enable_idempotence: bool | None = None,
        retries: int | None = None,
        delivery_timeout_ms: int = 120_000,
        max_block_ms: int = 60_000,
        event_time_as_timestamp: bool = False,
        client: Any | None = None,
        **extra: Any,
    ) -> None:
        if linger_ms < 0:
            raise ConfigError(f"linger_ms must be >= 0, got {linger_ms!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
        if acks not in ("all", -1, 0, 1):
            raise ConfigError(f"acks must be 'all', 1 or 0, got {acks!r}")
        if retries is not None and retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries!r}")
        self.bootstrap = bootstrap_servers(bootstrap)
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._n_completed = 0  # delivered + failed, ever
        self._errors: list[BaseException] = []
        self._n_failed = 0
        self._n_delivered = 0
        self._n_sent = 0
        self._closed = False
        self.event_time_as_timestamp = event_time_as_timestamp
        if client is not None:
            self._client = client
            self.config: dict[str, Any] = {}
            return
        if enable_idempotence is None:
            enable_idempotence = _supports_idempotence() and acks in ("all", -1)
        elif enable_idempotence and not _supports_idempotence():
            raise ConfigError("enable_idempotence needs kafka-python >= 2.2")
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "client_id": "kdstream-producer",
            "linger_ms": linger_ms,
            "batch_size": batch_size,
            "compression_type": _resolve_compression(compression),
            "acks": acks,
            "delivery_timeout_ms": delivery_timeout_ms,
            "max_block_ms": max_block_ms,
            **extra,
        }
        # Every delivery guarantee is set explicitly: kafka-python 3.x changed the defaults
        # (KIP-679: acks=all, idempotence on), 2.x had acks=1 and no idempotence.
        if _supports_idempotence():
            config["enable_idempotence"] = bool(enable_idempotence)
        if retries is not None:
            config["retries"] = retries
        self.config = config
        from kafka import KafkaProducer
        from kafka.errors import KafkaConfigurationError, KafkaError

        try:
            self._client = KafkaProducer(**config)
        except KafkaConfigurationError as exc:
            raise ConfigError(f"bad Kafka producer settings: {exc}") from exc
        except KafkaError as exc:
            raise ServiceError(
                f"cannot create a Kafka producer for {self.bootstrap}: {exc}"
            ) from exc

    # Delivery callbacks run on kafka-python's sender thread.
    def _on_delivered(self, _metadata: object) -> None:
        with self._lock:
            self._n_delivered += 1
            self._n_completed += 1
            self._done.notify_all()

    def _on_failed(self, exc: BaseException) -> None:
        with self._lock:
            self._n_failed += 1
            self._n_completed += 1
            if len(self._errors) < _MAX_ERRORS_KEPT:
                self._errors.append(exc)
            self._done.notify_all()

    @property
    def n_sent(self) -> int:
        """Records handed to ``send``."""
        return self._n_sent

    @property
    def n_delivered(self) -> int:
        """Records the broker acknowledged."""
        with self._lock:
            return self._n_delivered

    @property
    def n_failed(self) -> int:
        """Records whose delivery failed (raised by the next ``flush``)."""
        with self._lock:
            return self._n_failed

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        ts: float | None = None,
    ) -> None:
        """Queue one record; ``key`` picks the partition (murmur2), ``ts`` is the event's epoch
        seconds (the record's timestamp only with ``event_time_as_timestamp``)."""
        if self._closed:
            raise ServiceError("send on a closed KafkaEventProducer")
        from kafka.errors import KafkaError

        key_bytes = key.encode() if isinstance(key, str) else key
        timestamp_ms = None  # the producer's clock: see event_time_as_timestamp
        if ts is not None and self.event_time_as_timestamp:
            timestamp_ms = round(ts * 1000)
        try:
            future = self._client.send(topic, value=value, key=key_bytes, timestamp_ms=timestamp_ms)
        except KafkaError as exc:
            raise ServiceError(f"could not send to {topic!r} on {self.bootstrap}: {exc}") from exc
        self._n_sent += 1
        future.add_callback(self._on_delivered)
        future.add_errback(self._on_failed)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued record is acknowledged or failed.

        Raises ``ServiceError`` when the wait times out or any record failed since the last
        flush (the failures are reported once, then cleared).
        """
        from kafka.errors import KafkaError

        try:
            self._client.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise ServiceError(f"flush to {self.bootstrap} did not finish: {exc}") from exc
        with self._lock:
            # Some kafka-python versions (3.x) can return from flush() before the delivery
            # callbacks have run; wait for them so that no failure slips past this flush.
            completed = self._done.wait_for(
                lambda: self._n_completed >= self._n_sent,
                timeout=30.0 if timeout_s is None else timeout_s,
            )
            if not completed:
                raise ServiceError(
                    f"flush to {self.bootstrap} did not finish: "
                    f"{self._n_sent - self._n_completed} record(s) still unacknowledged"
                )
            errors, n_failed = self._errors, self._n_failed
            self._errors, self._n_failed = [], 0
        if n_failed:
            shown = "; ".join(f"{type(e).__name__}: {e}" for e in errors[:3])
            raise ServiceError(
                f"{n_failed} record(s) were not delivered to {self.bootstrap}: {shown}"
            ) from errors[0]

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then release the client (raises like ``flush`` if records were lost)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout_s)
        finally:
            self._client.close(timeout=timeout_s)

    def __enter__(self) -> KafkaEventProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["KafkaEventProducer", "available_compressions"]
