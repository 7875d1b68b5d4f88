"""The embedded log: an in-process, thread-safe stand-in for Kafka with the same semantics.

Topics have a fixed number of partitions; each partition is an append-only list whose
offsets start at 0 and never change. Keyed records land on ``murmur2(key) % n`` exactly like
Kafka's default partitioner (so a user's events and soft labels meet on one partition in both
runtimes); unkeyed records go round-robin. Consumer groups keep committed offsets in the log,
so a new consumer of a group resumes where the last one committed.

Unlike Kafka there is no partition assignment between members of a group: every
``EmbeddedConsumer`` reads all partitions of its topics, so run one consumer per group.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kdstream.errors import ConfigError

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (Java ``Utils.murmur2``), as an unsigned 32-bit int.

    Same algorithm and output as ``kafka.partitioner.default.murmur2``; reimplemented so the
    embedded runtime does not import the Kafka client (a test compares the two).

    Examples
    --------
    >>> murmur2(b"21")
    3321034988
    """
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & 3
    base = length & ~3
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


@functools.lru_cache(maxsize=1 << 16)  # keys (users) repeat; pure-Python murmur2 is ~µs
def partition_for_key(key: bytes, n_partitions: int) -> int:
    """Kafka's default partition of a keyed record: ``toPositive(murmur2(key)) % n``."""
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a topic partition.

    Examples
    --------
    >>> log = EmbeddedLog()
    >>> log.create_topic("t")
    >>> log.produce("t", b"hello", key="u1", ts=5.0)
    (0, 0)
    >>> log.read("t", 0, 0, 10)[0]
    Record(topic='t', partition=0, offset=0, key=b'u1', value=b'hello', ts=5.0)
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    ts: float


@dataclass(slots=True)
class _Topic:
    partitions: list[list[Record]]
    compacted: bool
    next_round_robin: int = 0


@dataclass(slots=True)
class _Groups:
    # (group, topic, partition) -> committed next offset
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)


def _as_key(key: bytes | bytearray | str | None) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    raise TypeError(f"key: expected bytes, str or None, got {type(key).__name__}")


class EmbeddedLog:
    """Append-only, partitioned topics in memory, shared by producers and consumers.

    Thread-safe: one lock guards everything, and a condition on it wakes consumers that wait
    for new records.

    Examples
    --------
    >>> log = EmbeddedLog()
    >>> log.create_topic("kd.events", partitions=3)
    >>> log.produce("kd.events", b"e1", key="u42")
    (2, 0)
    >>> log.end_offsets("kd.events")
    {0: 0, 1: 0, 2: 1}
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._topics: dict[str, _Topic] = {}
        self._groups = _Groups()

    # -- topics -----------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, compacted: bool = False) -> None:
        """Create a topic; a no-op if it exists with the same config, ConfigError otherwise."""
        if not isinstance(name, str) or not _TOPIC_NAME.fullmatch(name):
            raise ConfigError(
                f"topic name: expected 1-249 chars of [A-Za-z0-9._-], got {name!r}"
            )
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ConfigError(f"partitions: expected an integer >= 1, got {partitions!r}")
        with self._cond:
            existing = self._topics.get(name)
            if existing is not None:
                if len(existing.partitions) != partitions or existing.compacted != compacted:
                    raise ConfigError(
                        f"topic {name!r} exists with partitions={len(existing.partitions)}, "
                        f"compacted={existing.compacted}; cannot re-create it with "
                        f"partitions={partitions}, compacted={compacted}"
                    )
                return
            self._topics[name] = _Topic([[] for _ in range(partitions)], bool(compacted))

    def topics(self) -> list[str]:
        """Names of the existing topics, sorted."""
        with self._cond:
            return sorted(self._topics)

    def partitions_for(self, topic: str) -> list[int]:
        """Partition numbers of ``topic`` (ConfigError if it does not exist)."""
        with self._cond:
            return list(range(len(self._topic(topic).partitions)))

    def _topic(self, name: str) -> _Topic:
        # caller holds the lock
        try:
            return self._topics[name]
        except KeyError:
            raise ConfigError(
                f"topic {name!r} does not exist (create it first; topics are never auto-created)"
            ) from None

    def _partition(self, topic: str, partition: int) -> list[Record]:
        parts = self._topic(topic).partitions
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise ConfigError(f"partition: expected an integer, got {partition!r}")
        if not 0 <= partition < len(parts):
            raise ConfigError(
                f"partition {partition} of topic {topic!r}: expected 0..{len(parts) - 1}"
            )
        return parts[partition]

    # -- records ----------------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        ts: float | None = None,
        partition: int | None = None,
    ) -> tuple[int, int]:
        """Append a record and return its ``(partition, offset)``.

        The partition is ``partition`` if given, else ``murmur2(key) % n`` for keyed records,
        else the next one round-robin. ``ts`` defaults to the wall clock.
        """
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"value: expected bytes, got {type(value).__name__}")
        key_bytes = _as_key(key)
        stamp = time.time() if ts is None else float(ts)
        with self._cond:
            spec = self._topic(topic)
            n = len(spec.partitions)
            if partition is not None:
                self._partition(topic, partition)  # validates the number
                part = partition
            elif key_bytes is not None:
                part = partition_for_key(key_bytes, n)
            else:
                part = spec.next_round_robin % n
                spec.next_round_robin = (part + 1) % n
            records = spec.partitions[part]
            offset = len(records)
            records.append(Record(topic, part, offset, key_bytes, bytes(value), stamp))
            self._cond.notify_all()
        return part, offset

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset of each partition (= number of records in it)."""
        with self._cond:
            return {p: len(records) for p, records in enumerate(self._topic(topic).partitions)}

    def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        """Up to ``max_records`` records from ``offset`` on (empty at or past the end)."""
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ConfigError(f"offset: expected an integer >= 0, got {offset!r}")
        if max_records < 0:
            raise ConfigError(f"max_records: expected >= 0, got {max_records!r}")
        with self._cond:
            return self._partition(topic, partition)[offset : offset + max_records]

    def latest_by_key(self, topic: str) -> dict[bytes, Record]:
        """The last record of each key (the view a compacted topic converges to).

        Records without a key are skipped. If one key appears in several partitions (only
        possible with explicit partitions), the record with the latest ``ts`` wins.
        """
        with self._cond:
            latest: dict[bytes, Record] = {}
            for records in self._topic(topic).partitions:
                for record in records:
                    if record.key is None:
                        continue
                    prior = latest.get(record.key)
                    if prior is None or prior.partition == record.partition or (
                        record.ts >= prior.ts
                    ):
                        latest[record.key] = record
            return latest

    def is_compacted(self, topic: str) -> bool:
        """Whether ``topic`` was created with ``compacted=True``."""
        with self._cond:
            return self._topic(topic).compacted

    # -- consumer groups ------------------------------------------------------------------

    def commit_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Record ``group``'s next offsets to read, per ``(topic, partition)``."""
        with self._cond:
            checked: dict[tuple[str, str, int], int] = {}
            for (topic, partition), offset in offsets.items():
                end = len(self._partition(topic, partition))
                if isinstance(offset, bool) or not isinstance(offset, int) or not (
                    0 <= offset <= end
                ):
                    raise ConfigError(
                        f"commit of {topic}:{partition}: expected an offset in 0..{end}, "
                        f"got {offset!r}"
                    )
                checked[(group, topic, partition)] = offset
            self._groups.committed.update(checked)  # all or nothing

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        """``group``'s committed next offset of a partition, or None if it never committed."""
        with self._cond:
            return self._groups.committed.get((group, topic, partition))

    def wait_for_records(self, positions: Mapping[tuple[str, int], int], timeout_s: float) -> bool:
        """Block until a partition has records at or after its position, or ``timeout_s``.

        Returns whether records are available.
        """

        def available() -> bool:
            return any(
                len(self._topics[topic].partitions[partition]) > offset
                for (topic, partition), offset in positions.items()
            )

        with self._cond:
            return self._cond.wait_for(available, timeout=max(0.0, timeout_s))


class EmbeddedConsumer:
    """Reads every partition of ``topics`` as member of ``group``.

    Starts at the group's committed offsets, else at the beginning. Positions advance as
    records are polled; nothing is committed until :meth:`commit` (store offsets only after
    the work is done).

    Examples
    --------
    >>> log = EmbeddedLog()
    >>> log.create_topic("t", partitions=2)
    >>> for value in (b"a", b"b", b"c"):
    ...     _ = log.produce("t", value)
    >>> consumer = EmbeddedConsumer(log, ["t"], group="g")
    >>> sorted(r.value for r in consumer.poll())
    [b'a', b'b', b'c']
    >>> consumer.commit()
    >>> EmbeddedConsumer(log, ["t"], group="g").lag()
    0
    """

    def __init__(self, log: EmbeddedLog, topics: Sequence[str], group: str) -> None:
        if isinstance(topics, str):
            raise ConfigError(f"topics: expected a sequence of names, got the string {topics!r}")
        if not topics:
            raise ConfigError("topics: expected at least one topic")
        if not isinstance(group, str) or not group:
            raise ConfigError(f"group: expected a non-empty string, got {group!r}")
        self._log = log
        self._group = group
        self._positions: dict[tuple[str, int], int] = {}
        for topic in dict.fromkeys(topics):  # de-duplicated, order kept
            for partition in log.partitions_for(topic):
                committed = log.committed(group, topic, partition)
                self._positions[(topic, partition)] = 0 if committed is None else committed
        self._order = list(self._positions)
        self._next_start = 0  # rotates so no partition is always served first

    @property
    def group(self) -> str:
        """The consumer group's name."""
        return self._group

    def assignment(self) -> list[tuple[str, int]]:
        """The ``(topic, partition)`` pairs this consumer reads."""
        return list(self._order)

    def _check_assigned(self, topic: str, partition: int) -> tuple[str, int]:
        tp = (topic, partition)
        if tp not in self._positions:
            raise ConfigError(f"{topic}:{partition} is not assigned to this consumer")
        return tp

    def poll(self, max_records: int = 500, timeout_s: float = 0.0) -> list[Record]:
        """Up to ``max_records`` new records, shared fairly across partitions.

        Waits up to ``timeout_s`` for records when none are available. Each partition's
        records come in offset order.
        """
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise ConfigError(f"max_records: expected an integer >= 1, got {max_records!r}")
        if timeout_s > 0 and not self._log.wait_for_records(self._positions, timeout_s):
            return []
        n = len(self._order)
        start = self._next_start
        self._next_start = (start + 1) % n
        rotated = self._order[start:] + self._order[:start]
        out: list[Record] = []
        # rounds of equal shares; partitions with fewer records leave their share to others
        active = rotated
        while active and len(out) < max_records:
            share = max(1, (max_records - len(out)) // len(active))
            still: list[tuple[str, int]] = []
            for tp in active:
                room = max_records - len(out)
                if room <= 0:
                    break
                got = self._log.read(tp[0], tp[1], self._positions[tp], min(share, room))
                if got:
                    out.extend(got)
                    self._positions[tp] = got[-1].offset + 1
                    if len(got) == min(share, room):
                        still.append(tp)
            active = still
        return out

    def commit(self, offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        """Commit ``offsets`` (next offsets to read) for the group; default: current positions."""
        self._log.commit_offsets(self._group, dict(self._positions) if offsets is None else offsets)

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of a partition, or None."""
        return self._log.committed(self._group, topic, partition)

    def position(self, topic: str, partition: int) -> int:
        """The next offset this consumer will read from a partition."""
        return self._positions[self._check_assigned(topic, partition)]

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Move the position of one partition (``0 <= offset <= end``)."""
        tp = self._check_assigned(topic, partition)
        end = self._log.end_offsets(topic)[partition]
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= end:
            raise ConfigError(
                f"seek {topic}:{partition}: expected offset in 0..{end}, got {offset!r}"
            )
        self._positions[tp] = offset

    def seek_to_beginning(self) -> None:
        """Rewind every assigned partition to offset 0."""
        for tp in self._positions:
            self._positions[tp] = 0

    def seek_to_end(self) -> None:
        """Skip to the current end of every assigned partition."""
        for topic in {t for t, _ in self._order}:
            for partition, end in self._log.end_offsets(topic).items():
                self._positions[(topic, partition)] = end

    def lag(self) -> int:
        """Records not yet polled: end offsets minus positions, summed over partitions."""
        total = 0
        for topic in {t for t, _ in self._order}:
            for partition, end in self._log.end_offsets(topic).items():
                total += end - self._positions[(topic, partition)]
        return total

    def close(self) -> None:
        """Nothing to release in process; kept for the same shape as the Kafka consumer."""


class EmbeddedProducer:
    """Sends records to an :class:`EmbeddedLog`; the same shape as the Kafka producer adapter.

    Examples
    --------
    >>> log = EmbeddedLog()
    >>> log.create_topic("t")
    >>> producer = EmbeddedProducer(log)
    >>> producer.send("t", b"x", key="u1")
    (0, 0)
    >>> producer.flush()
    """

    def __init__(self, log: EmbeddedLog) -> None:
        self._log = log

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        ts: float | None = None,
    ) -> tuple[int, int]:
        """Append one record; returns ``(partition, offset)`` (delivery is immediate)."""
        return self._log.produce(topic, value, key=key, ts=ts)

    def flush(self, timeout_s: float | None = None) -> None:
        """No-op: every send is already in the log."""

    def close(self) -> None:
        """No-op, for the same shape as the Kafka producer."""


__all__ = [
    "EmbeddedConsumer",
    "EmbeddedLog",
    "EmbeddedProducer",
    "Record",
    "murmur2",
    "partition_for_key",
]
