"""The embedded log: Kafka's partitioning, offsets, consumer groups and blocking polls."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdstream.errors import ConfigError
from kdstream.stream import (
    EmbeddedConsumer,
    EmbeddedLog,
    EmbeddedProducer,
    murmur2,
    partition_for_key,
)

kafka_default = pytest.importorskip("kafka.partitioner.default")


def _log(partitions: int = 3, topic: str = "t") -> EmbeddedLog:
    log = EmbeddedLog()
    log.create_topic(topic, partitions=partitions)
    return log


# -- partitioning -----------------------------------------------------------------------------

# Fixed vector from Kafka's own test of Utils.murmur2 (clients/src/test/.../UtilsTest.java):
# the Java int values as unsigned 32-bit.
KAFKA_JAVA_VECTOR = {
    b"21": -973932308 & 0xFFFFFFFF,
    b"foobar": -790332482 & 0xFFFFFFFF,
    b"a-little-bit-long-string": -985981536 & 0xFFFFFFFF,
    b"a-little-bit-longer-string": -1486304829 & 0xFFFFFFFF,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971 & 0xFFFFFFFF,
    bytes([ord("a"), ord("b"), ord("c")]): 479470107,
}


def test_murmur2_matches_kafka_java_vector() -> None:
    for key, expected in KAFKA_JAVA_VECTOR.items():
        assert murmur2(key) == expected, key
        assert kafka_default.murmur2(key) == expected, key


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(1, 64))
def test_partition_matches_kafka_python(key: bytes, n: int) -> None:
    assert murmur2(key) == kafka_default.murmur2(key)
    expected = kafka_default.DefaultPartitioner()(key, list(range(n)), list(range(n)))
    assert partition_for_key(key, n) == expected


def test_keyed_records_land_on_the_kafka_partition() -> None:
    log = _log(partitions=6)
    for user in [f"u{i}" for i in range(50)]:
        partition, _ = log.produce("t", b"x", key=user)
        expected = (kafka_default.murmur2(user.encode()) & 0x7FFFFFFF) % 6
        assert partition == expected
        # same key, same partition, every time (str and bytes keys alike)
        assert log.produce("t", b"y", key=user.encode())[0] == partition


def test_none_keys_go_round_robin() -> None:
    log = _log(partitions=3)
    parts = [log.produce("t", b"v")[0] for _ in range(7)]
    assert parts == [0, 1, 2, 0, 1, 2, 0]


def test_explicit_partition() -> None:
    log = _log(partitions=3)
    assert log.produce("t", b"v", key="u1", partition=2) == (2, 0)
    with pytest.raises(ConfigError):
        log.produce("t", b"v", partition=3)


# -- offsets and reads ------------------------------------------------------------------------


def test_offsets_increase_per_partition_from_zero() -> None:
    log = _log(partitions=4)
    rng = random.Random(7)
    seen: dict[int, list[int]] = {p: [] for p in range(4)}
    for i in range(200):
        partition, offset = log.produce("t", str(i).encode(), key=str(rng.random()), ts=float(i))
        seen[partition].append(offset)
    for offsets in seen.values():
        assert offsets == list(range(len(offsets)))
    assert log.end_offsets("t") == {p: len(o) for p, o in seen.items()}


def test_reading_again_gives_the_same_records() -> None:
    log = _log(partitions=1)
    for i in range(10):
        log.produce("t", str(i).encode(), key="k", ts=float(i))
    first = log.read("t", 0, 3, 4)
    assert [r.offset for r in first] == [3, 4, 5, 6]
    assert [r.value for r in first] == [b"3", b"4", b"5", b"6"]
    assert log.read("t", 0, 3, 4) == first
    assert log.read("t", 0, 10, 5) == []
    assert log.read("t", 0, 8, 100)[-1].offset == 9


def test_topic_config() -> None:
    log = EmbeddedLog()
    log.create_topic("a", partitions=2)
    log.create_topic("a", partitions=2)  # idempotent
    with pytest.raises(ConfigError, match="partitions=2"):
        log.create_topic("a", partitions=3)
    with pytest.raises(ConfigError):
        log.create_topic("a", partitions=2, compacted=True)
    for bad_name in ("", "a b", "x" * 250):
        with pytest.raises(ConfigError):
            log.create_topic(bad_name)
    with pytest.raises(ConfigError):
        log.create_topic("b", partitions=0)
    log.create_topic("b", compacted=True)
    assert log.topics() == ["a", "b"]
    assert log.partitions_for("a") == [0, 1]
    with pytest.raises(ConfigError, match="does not exist"):
        log.produce("missing", b"x")


def test_values_must_be_bytes() -> None:
    log = _log()
    with pytest.raises(TypeError):
        log.produce("t", "text")  # type: ignore[arg-type]


def test_compacted_latest_by_key() -> None:
    log = EmbeddedLog()
    log.create_topic("labels", partitions=2, compacted=True)
    log.produce("labels", b"u1-v1", key="u1")
    log.produce("labels", b"u2-v1", key="u2")
    log.produce("labels", b"u1-v2", key="u1")
    log.produce("labels", b"no-key")
    latest = log.latest_by_key("labels")
    assert {k: r.value for k, r in latest.items()} == {b"u1": b"u1-v2", b"u2": b"u2-v1"}
    # offsets never change: every record is still readable
    assert sum(log.end_offsets("labels").values()) == 4
    assert log.is_compacted("labels")


# -- consumers --------------------------------------------------------------------------------


def test_consumer_reads_everything_once() -> None:
    log = _log(partitions=3)
    sent = {str(i).encode() for i in range(100)}
    for value in sent:
        log.produce("t", value, key=value)
    consumer = EmbeddedConsumer(log, ["t"], group="g")
    got: list[bytes] = []
    while batch := consumer.poll(max_records=7):
        assert len(batch) <= 7
        got.extend(r.value for r in batch)
    assert sorted(got) == sorted(sent)
    assert consumer.lag() == 0


def test_poll_is_fair_across_partitions() -> None:
    log = _log(partitions=2)
    for i in range(100):
        log.produce("t", b"hot", partition=0, ts=float(i))
    for i in range(5):
        log.produce("t", b"cold", partition=1, ts=float(i))
    batch = EmbeddedConsumer(log, ["t"], group="g").poll(max_records=10)
    assert len(batch) == 10
    assert sum(r.partition == 1 for r in batch) == 5  # the cold partition is not starved
    # each partition's records arrive in offset order
    for p in (0, 1):
        offsets = [r.offset for r in batch if r.partition == p]
        assert offsets == sorted(offsets)


def test_group_offsets_survive_a_new_consumer() -> None:
    log = _log(partitions=2)
    for i in range(10):
        log.produce("t", str(i).encode())
    first = EmbeddedConsumer(log, ["t"], group="g")
    assert len(first.poll(max_records=4)) == 4
    first.commit()
    committed = {p: first.committed("t", p) for p in (0, 1)}
    assert sum(v or 0 for v in committed.values()) == 4
    first.poll()  # polled but never committed: redelivered to the next member

    second = EmbeddedConsumer(log, ["t"], group="g")
    assert {p: second.position("t", p) for p in (0, 1)} == committed
    assert len(second.poll()) == 6
    # another group starts at the beginning
    assert EmbeddedConsumer(log, ["t"], group="other").lag() == 10


def test_commit_explicit_offsets_and_seek() -> None:
    log = _log(partitions=1)
    for i in range(5):
        log.produce("t", str(i).encode())
    consumer = EmbeddedConsumer(log, ["t"], group="g")
    consumer.commit({("t", 0): 2})
    assert consumer.committed("t", 0) == 2
    with pytest.raises(ConfigError):
        consumer.commit({("t", 0): 6})
    consumer.seek("t", 0, 3)
    assert [r.value for r in consumer.poll()] == [b"3", b"4"]
    consumer.seek_to_beginning()
    assert consumer.lag() == 5
    consumer.seek_to_end()
    assert consumer.lag() == 0
    with pytest.raises(ConfigError):
        consumer.seek("t", 0, 99)
    with pytest.raises(ConfigError):
        consumer.position("t", 1)


def test_poll_with_timeout_wakes_when_another_thread_produces() -> None:
    log = _log(partitions=2)
    consumer = EmbeddedConsumer(log, ["t"], group="g")
    assert consumer.poll(timeout_s=0.0) == []
    # produce shortly after the poll starts waiting; the poll must wake up for it
    timer = threading.Timer(0.05, lambda: EmbeddedProducer(log).send("t", b"late", key="u1"))
    timer.start()
    try:
        # a generous timeout: the poll returns as soon as the record lands, long before this
        batch = consumer.poll(timeout_s=60.0)
    finally:
        timer.join()
    assert [r.value for r in batch] == [b"late"]


def test_poll_timeout_expires_empty() -> None:
    consumer = EmbeddedConsumer(_log(), ["t"], group="g")
    assert consumer.poll(timeout_s=0.01) == []


def test_consumer_over_several_topics() -> None:
    log = _log(partitions=2, topic="a")
    log.create_topic("b", partitions=1)
    log.produce("a", b"a1")
    log.produce("b", b"b1")
    consumer = EmbeddedConsumer(log, ["a", "b", "a"], group="g")
    assert consumer.assignment() == [("a", 0), ("a", 1), ("b", 0)]
    assert sorted(r.value for r in consumer.poll()) == [b"a1", b"b1"]
    with pytest.raises(ConfigError):
        EmbeddedConsumer(log, "a", group="g")
    with pytest.raises(ConfigError):
        EmbeddedConsumer(log, ["missing"], group="g")


def test_concurrent_producers_lose_nothing() -> None:
    log = _log(partitions=4)

    def produce(worker: int) -> None:
        producer = EmbeddedProducer(log)
        for i in range(250):
            producer.send("t", f"{worker}:{i}".encode(), key=f"u{i % 17}")
        producer.flush()

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(log.end_offsets("t").values()) == 1000
    for p in range(4):
        records = log.read("t", p, 0, 10_000)
        assert [r.offset for r in records] == list(range(len(records)))
