"""The local cluster, topic admin and producer against a live Kafka 4.x and Redis."""

from __future__ import annotations

import time

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from kdstream.errors import ServiceError
from kdstream.local_cluster import (
    local_status,
    local_up,
    redis_ping,
    start_kafka,
    start_redis,
    stop_kafka,
    stop_redis,
)
from kdstream.stream._kafka_admin import (
    TopicSpec,
    create_topics,
    default_topics,
    delete_topics,
    describe_topics,
)
from kdstream.stream._kafka_producer import KafkaEventProducer
from kdstream.stream._log import partition_for_key

from .conftest import LiveCluster


def _consume_all(bootstrap: str, topic: str, n_partitions: int, n: int) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(n_partitions)])
        records: list = []
        deadline = time.monotonic() + 60
        while len(records) < n and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        # One more short poll: anything past n would be a duplicate.
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def test_topics_are_created_idempotently_and_described(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    specs = default_topics(unique_prefix, partitions=3)
    first = create_topics(kafka_bootstrap, specs)
    second = create_topics(f"kafka://{kafka_bootstrap}", specs)
    assert [r.created for r in first] == [True, True, True]
    assert [(r.created, r.mismatches) for r in second] == [(False, ())] * 3

    names = [s.name for s in specs]
    described = describe_topics(kafka_bootstrap, [*names, f"{unique_prefix}.missing"])
    events, labels, dlq = (described[n] for n in names)
    assert (events["partitions"], labels["partitions"], dlq["partitions"]) == (3, 3, 1)
    assert labels["configs"]["cleanup.policy"] == "compact"
    assert labels["overrides"] == {"cleanup.policy": "compact"}
    # kafka-python 3.x lists only non-default configs; 2.x lists all.
    assert events["configs"].get("cleanup.policy", "delete") == "delete"
    assert described[f"{unique_prefix}.missing"] == {"exists": False}
    delete_topics(kafka_bootstrap, names)


def test_existing_topic_with_other_partitions_is_reported(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    name = f"{unique_prefix}.events"
    create_topics(kafka_bootstrap, [TopicSpec(name, 2)])
    want = [TopicSpec(name, 4, compacted=True)]
    with pytest.raises(ServiceError, match="2 partitions, spec wants 4"):
        create_topics(kafka_bootstrap, want)
    (result,) = create_topics(kafka_bootstrap, want, strict=False)
    assert not result.created
    assert result.partitions == 2
    assert len(result.mismatches) == 2  # partitions and cleanup.policy
    delete_topics(kafka_bootstrap, [name])


def test_a_replayed_old_log_is_stamped_when_produced(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    """Events from 2003 (MovieLens) keep their time in the JSON, while the records carry the
    time they were produced: the broker's time-based retention (7 days) measured the 2003
    stamps and deleted a whole replay at its first check, half a minute after it started."""
    from kdstream.replay import replay
    from kdstream.stream import Event, decode_event

    topic = f"{unique_prefix}.events"
    create_topics(kafka_bootstrap, [TopicSpec(topic, 2)])
    old = 1_046_000_000.0  # February 2003
    before_ms = int(time.time() * 1000)
    with KafkaEventProducer(kafka_bootstrap, linger_ms=5) as producer:
        replay([Event(f"u{i}", f"i{i}", ts=old + i) for i in range(20)], producer,
               topic=topic, progress=False)
    records = _consume_all(kafka_bootstrap, topic, 2, 20)
    assert sorted(decode_event(r.value).ts for r in records) == [old + i for i in range(20)]
    assert min(r.timestamp for r in records) >= before_ms - 1_000  # our clock, not 2003's
    delete_topics(kafka_bootstrap, [topic])


def test_keyed_messages_round_trip_on_the_murmur2_partition(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    topic, n_partitions, n = f"{unique_prefix}.events", 4, 1000
    create_topics(kafka_bootstrap, [TopicSpec(topic, n_partitions)])
    t0 = 1_700_000_000.0
    with KafkaEventProducer(kafka_bootstrap, linger_ms=5, event_time_as_timestamp=True) as producer:
        for i in range(n):
            key = f"user{i % 37}" if i % 2 else f"user{i % 37}".encode()
            producer.send(topic, f"{i}".encode(), key=key, ts=t0 + i)
        producer.flush(timeout_s=60)
        assert producer.n_delivered == n
    records = _consume_all(kafka_bootstrap, topic, n_partitions, n)

    assert sorted(int(r.value) for r in records) == list(range(n))  # all, exactly once
    for r in records:
        expected = (murmur2(r.key) & 0x7FFFFFFF) % n_partitions
        assert r.partition == expected == partition_for_key(r.key, n_partitions)
        assert r.key == f"user{int(r.value) % 37}".encode()
        assert r.timestamp == int((t0 + int(r.value)) * 1000)
    for key in {r.key for r in records}:  # per-key order is the send order
        values = [int(r.value) for r in records if r.key == key]
        assert values == sorted(values)
    delete_topics(kafka_bootstrap, [topic])


def test_broker_rejections_are_raised_on_flush(kafka_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}.small"
    create_topics(kafka_bootstrap, [TopicSpec(topic, 1, config={"max.message.bytes": "2000"})])
    producer = KafkaEventProducer(kafka_bootstrap, compression=None)
    try:
        producer.send(topic, b"ok", key="u1")
        producer.send(topic, bytes(8000), key="u1")  # over the topic's limit
        with pytest.raises(ServiceError, match="not delivered"):
            producer.flush(timeout_s=30)
        producer.send(topic, b"after", key="u1")
        producer.flush(timeout_s=30)  # failures are reported once, then cleared
    finally:
        producer.close()
    delete_topics(kafka_bootstrap, [topic])


def test_redis_ping_set_get(redis_url: str, unique_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        assert client.ping()
        key = f"{unique_prefix}:k"
        client.set(key, b"\x00\x01v")
        assert client.get(key) == b"\x00\x01v"
        client.delete(key)
    finally:
        client.close()


def _started_here(cluster: LiveCluster) -> LiveCluster:
    if cluster.config is None:
        pytest.skip("servers given by KDSTREAM_TEST_KAFKA/REDIS were not started by this run")
    return cluster


def test_status_reports_both_up_and_up_is_idempotent(cluster: LiveCluster) -> None:
    cfg = _started_here(cluster).config
    assert cfg is not None
    status = local_status(cfg)
    for name in ("kafka", "redis"):
        assert status[name]["alive"] and status[name]["answering"], status
    again = local_up(cfg)
    assert again.already_running
    assert (again.kafka_pid, again.redis_pid) == (status["kafka"]["pid"], status["redis"]["pid"])


def test_services_stop_and_restart_on_their_data(cluster: LiveCluster, unique_prefix: str) -> None:
    cfg = _started_here(cluster).config
    assert cfg is not None
    topic = f"{unique_prefix}.durable"
    create_topics(cluster.kafka_bootstrap, [TopicSpec(topic, 2)])

    assert stop_redis(cfg)
    assert not redis_ping(cfg.redis_port)
    start_redis(cfg)
    assert redis_ping(cfg.redis_port)

    assert stop_kafka(cfg)
    assert not local_status(cfg)["kafka"]["alive"]
    start_kafka(cfg)
    assert describe_topics(cluster.kafka_bootstrap, [topic])[topic]["partitions"] == 2
    delete_topics(cluster.kafka_bootstrap, [topic])


def test_a_relative_home_works(
    cluster: LiveCluster, tmp_path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """`kdstream local up` runs with the default home `.kdstream/local`, relative to where it is
    run; the services start in that folder, so their log paths must not be relative to it."""
    from pathlib import Path

    from kdstream.local_cluster import LocalClusterConfig

    from .conftest import _free_ports

    monkeypatch.chdir(tmp_path)
    kafka_port, controller_port, redis_port = _free_ports(3)
    cfg = LocalClusterConfig(home=Path("rel-home"), kafka_port=kafka_port,
                             controller_port=controller_port, redis_port=redis_port)
    cfg.home.mkdir(parents=True)
    try:
        start_redis(cfg)
        assert redis.Redis(port=redis_port).ping()
        assert "Ready to accept connections" in (tmp_path / "rel-home" / "redis.log").read_text()
    finally:
        stop_redis(cfg, kill=True)
