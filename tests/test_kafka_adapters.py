"""Unit tests of the local-cluster config, topic specs and producer (no broker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from kdstream.errors import ConfigError, ServiceError
from kdstream.local_cluster import (
    KAFKA_VERSION,
    LocalClusterConfig,
    _pom,
    _server_properties,
    local_down,
    local_status,
    new_cluster_id,
    services_required,
)
from kdstream.stream._kafka_admin import TopicSpec, bootstrap_servers, default_topics
from kdstream.stream._kafka_producer import KafkaEventProducer, available_compressions


class FakeFuture:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def add_callback(self, fn: Any) -> None:
        if self.error is None:
            fn(object())

    def add_errback(self, fn: Any) -> None:
        if self.error is not None:
            fn(self.error)


class FakeClient:
    def __init__(self, fail_values: set[bytes] = frozenset(), flush_error: Exception | None = None):
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail_values = fail_values
        self.flush_error = flush_error
        self.closed = False

    def send(self, topic: str, **kw: Any) -> FakeFuture:
        self.sent.append((topic, kw))
        bad = kw["value"] in self.fail_values
        return FakeFuture(MessageSizeTooLargeError("too big") if bad else None)

    def flush(self, timeout: float | None = None) -> None:
        if self.flush_error is not None:
            raise self.flush_error

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def test_config_validates_and_reads_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kafka_port"):
        LocalClusterConfig(kafka_port=0)
    with pytest.raises(ConfigError, match="distinct"):
        LocalClusterConfig(kafka_port=9000, controller_port=9000)
    with pytest.raises(ConfigError, match="heap"):
        LocalClusterConfig(heap="lots")
    with pytest.raises(ConfigError, match=r"4\.x release"):
        LocalClusterConfig(kafka_version="3.9.0")
    env = {
        "KDSTREAM_LOCAL_HOME": str(tmp_path),
        "KDSTREAM_KAFKA_PORT": "19092",
        "KDSTREAM_REDIS_PORT": "16379",
    }
    cfg = LocalClusterConfig.from_env(env)
    assert (cfg.home, cfg.kafka_bootstrap, cfg.redis_url) == (
        tmp_path,
        "127.0.0.1:19092",
        "redis://127.0.0.1:16379",
    )
    assert cfg.kafka_url == "kafka://127.0.0.1:19092"
    assert LocalClusterConfig.from_env(env, redis_port=1234).redis_port == 1234
    # the default home is relative to where the command runs, made absolute at once (services
    # run with the home as working directory: a relative log path there pointed nowhere)
    assert LocalClusterConfig().home == Path.cwd() / ".kdstream" / "local"
    with pytest.raises(ConfigError, match="KDSTREAM_KAFKA_PORT"):
        LocalClusterConfig.from_env({"KDSTREAM_KAFKA_PORT": "ninety"})


def test_server_properties_and_pom(tmp_path: Path) -> None:
    cfg = LocalClusterConfig(home=tmp_path, kafka_port=19092, controller_port=19093)
    props = dict(line.split("=", 1) for line in _server_properties(cfg).splitlines() if "=" in line)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["log.dirs"].startswith(str(tmp_path.resolve()))
    pom = _pom(KAFKA_VERSION)
    assert f"<version>{KAFKA_VERSION}</version>" in pom
    assert "log4j-slf4j-impl" in pom


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first draw encodes to "-" + ...: the storage tool would take it for an option.
    draws = iter([b"\xf8" + bytes(15), bytes(16)])
    monkeypatch.setattr("kdstream.local_cluster.os.urandom", lambda n: next(draws))
    cluster_id = new_cluster_id()
    assert cluster_id == "A" * 22


@pytest.mark.parametrize(
    ("ci", "require", "want"),
    [(None, None, False), ("true", None, True), ("TRUE", None, True), ("false", None, False),
     (None, "1", True), (None, "0", False)],
)
def test_services_are_required_under_ci_or_when_asked(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, require: str | None, want: bool
) -> None:
    for name, value in (("CI", ci), ("KDSTREAM_REQUIRE_SERVICES", require)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert services_required() is want


def test_down_and_status_of_a_cluster_that_never_ran(tmp_path: Path) -> None:
    cfg = LocalClusterConfig(home=tmp_path / "home", kafka_port=1, controller_port=2, redis_port=3)
    assert local_down(cfg) == {"kafka": False, "redis": False}
    status = local_status(cfg)
    assert not status["kafka"]["alive"] and not status["kafka"]["answering"]
    assert not status["redis"]["alive"] and not status["redis"]["answering"]
    foreign = LocalClusterConfig(home=tmp_path)  # not created by `local up`
    (tmp_path / "precious.txt").write_text("keep")
    with pytest.raises(ServiceError, match="refusing"):
        local_down(foreign, wipe=True)
    assert (tmp_path / "precious.txt").exists()


def test_topic_specs() -> None:
    events, labels, dlq = default_topics("kd", partitions=6)
    assert (events.name, labels.name, dlq.name) == ("kd.events", "kd.soft-labels", "kd.events.dlq")
    assert labels.partitions == events.partitions == 6 and dlq.partitions == 1
    assert labels.configs() == {"cleanup.policy": "compact"} and events.configs() == {}
    with pytest.raises(ConfigError, match="illegal"):
        TopicSpec("bad topic", 1)
    with pytest.raises(ConfigError, match="partitions"):
        TopicSpec("t", 0)
    with pytest.raises(ConfigError, match="bootstrap"):
        bootstrap_servers("kafka://nohost")


def test_producer_stamps_records_when_produced_unless_asked_for_event_time() -> None:
    """A replayed log's years-old event times as record timestamps would let the broker's
    time-based retention delete the records at its next check: by default the record's
    timestamp is the producer's clock (None here), with the option the event's."""
    client = FakeClient()
    producer = KafkaEventProducer("kafka://127.0.0.1:9092", client=client)
    producer.send("t", b"v1", key="u1", ts=1.2345)
    producer.close()
    assert client.sent[0][1]["timestamp_ms"] is None
    client = FakeClient()
    producer = KafkaEventProducer("kafka://127.0.0.1:9092", client=client,
                                  event_time_as_timestamp=True)
    producer.send("t", b"v1", key="u1", ts=1.2345)
    producer.send("t", b"v2", key=b"u2")
    producer.send("t", b"v3")
    producer.close()
    assert [kw["key"] for _, kw in client.sent] == [b"u1", b"u2", None]
    assert [kw["timestamp_ms"] for _, kw in client.sent] == [1234, None, None]
    assert client.closed and producer.n_delivered == 3
    with pytest.raises(ServiceError, match="closed"):
        producer.send("t", b"v4")


def test_delivery_errors_are_raised_once_on_flush() -> None:
    producer = KafkaEventProducer("127.0.0.1:9092", client=FakeClient(fail_values={b"bad"}))
    for value in (b"ok", b"bad", b"ok", b"bad"):
        producer.send("t", value)
    with pytest.raises(ServiceError, match="2 record") as info:
        producer.flush()
    assert isinstance(info.value.__cause__, MessageSizeTooLargeError)
    producer.send("t", b"ok")
    producer.flush()  # the failures were reported; nothing new failed
    assert (producer.n_sent, producer.n_delivered) == (5, 3)


def test_flush_timeout_becomes_service_error() -> None:
    client = FakeClient(flush_error=KafkaTimeoutError("slow"))
    producer = KafkaEventProducer("127.0.0.1:9092", client=client)
    with pytest.raises(ServiceError, match="did not finish"):
        producer.flush(timeout_s=0.1)


def test_compression_choices() -> None:
    assert "gzip" in available_compressions()
    with pytest.raises(ConfigError, match="compression"):
        KafkaEventProducer("127.0.0.1:9092", compression="brotli")
    with pytest.raises(ConfigError, match="linger_ms"):
        KafkaEventProducer("127.0.0.1:9092", linger_ms=-1)
