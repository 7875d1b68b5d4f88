"""The processor against a real Kafka and Redis, under both engines (``--engine kafka|faust``).

The learn/DLQ/soft-label test runs once per engine; the SIGKILL restarts stay one per engine
(their streams and checks differ) and the two-processors-in-a-group test is Kafka's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdstream.stream import DeadLetter, Event, SoftLabels, encode_event, encode_soft_labels
from kdstream.stream._kafka_admin import create_topics, default_topics
from kdstream.stream._kafka_producer import KafkaEventProducer
from kdstream.stream._processor import store_counts
from kdstream.stream._redis_store import RedisStore

PARTITIONS = 4
ROOT = Path(__file__).resolve().parents[2]
ENGINES = [pytest.param("kafka", id="kafka"), pytest.param("faust", id="faust")]


def _topics(bootstrap: str, prefix: str) -> dict[str, str]:
    create_topics(bootstrap, default_topics(prefix, partitions=PARTITIONS))
    return {
        "events": f"{prefix}.events",
        "soft": f"{prefix}.soft-labels",
        "dlq": f"{prefix}.events.dlq",
    }


def _processor(
    bootstrap: str, redis_url: str, prefix: str, topics: dict[str, str], idle_exit_s: float,
    group: str | None = None, batch_size: int = 200, engine: str = "kafka",
) -> subprocess.Popen[str]:
    cmd = [
        sys.executable, "-m", "kdstream.cli_runtime", "processor", "--engine", engine,
        "--broker", f"kafka://{bootstrap}", "--store", redis_url, "--namespace", prefix,
        "--events-topic", topics["events"], "--soft-labels-topic", topics["soft"],
        "--dlq-topic", topics["dlq"], "--group", group or f"{prefix}-{engine}",
        "--batch-size", str(batch_size), "--dim", "16", "--idle-exit-s", str(idle_exit_s),
        "--sync-every-s", "0.5",
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_members(bootstrap: str, group: str, n: int, timeout: float = 60) -> None:
    """Until ``group`` is stable with ``n`` members (a fixed sleep raced a slow start: the first
    processor took every partition and drained them before the second one joined)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout
        seen: object = "no answer yet"
        while time.monotonic() < deadline:
            try:  # before the first member joins, the group has no coordinator yet
                (info,) = admin.describe_consumer_groups([group])
            except KafkaError as exc:
                seen = exc
            else:
                if info.state == "Stable" and len(info.members) == n:
                    return
                seen = (info.state, len(info.members))
            time.sleep(0.2)
        pytest.fail(f"group {group} did not reach {n} stable members in {timeout}s: {seen}")
    finally:
        admin.close()


def _finish(proc: subprocess.Popen[str], timeout: float = 90) -> dict[str, int]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _produce(bootstrap: str, topic: str, values: list[tuple[str, bytes]]) -> None:
    with KafkaEventProducer(bootstrap) as producer:
        for key, value in values:
            producer.send(topic, value, key=key)


def _events(n: int, n_users: int = 40, n_items: int = 60, t0: float = 1.7e9) -> list[Event]:
    return [
        Event(f"u{(7 * i) % n_users}", f"i{(i * i) % n_items}", "click", t0 + i) for i in range(n)
    ]


def _read_dlq(bootstrap: str, topic: str, expect: int, timeout: float = 20) -> list[DeadLetter]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        out: list[DeadLetter] = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out += [DeadLetter.from_bytes(r.value) for r in batch]
        return out
    finally:
        consumer.close()


def _kill_when_learned(
    proc: subprocess.Popen[str], store: RedisStore, topic: str, learned: int
) -> tuple[dict[str, int], str]:
    """SIGKILL ``proc`` once the store counts ``learned`` events; the counts after, and stderr."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if store_counts(store, topic, range(PARTITIONS))["learned"] >= learned:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _out, err = proc.communicate(timeout=10)
    return store_counts(store, topic, range(PARTITIONS)), err


@pytest.mark.parametrize("engine", ENGINES)
def test_events_are_learned_and_bad_records_dead_lettered(
    engine: str, kafka_bootstrap: str, redis_url: str, unique_prefix: str
) -> None:
    topics = _topics(kafka_bootstrap, unique_prefix)
    good = _events(600)
    values: list[tuple[str, bytes]] = []
    bad = 0
    for n, e in enumerate(good):
        values.append((e.user, encode_event(e)))
        if n % 50 == 0:  # malformed records between good ones
            values.append((e.user, b'{"user": "x", "item": '))
            values.append((e.user, b'{"user": "x", "item": "i", "ts": "yesterday"}'))
            bad += 2
    _produce(kafka_bootstrap, topics["events"], values)
    # soft labels for u7 on the compacted topic: consumed (by faust into its changelog Table)
    # and applied to the learner
    label = SoftLabels(items=("i1", "i4"), logits=(2.0, 1.0), temperature=1.0,
                       teacher_version=1, trained_until=1.7e9 + 600, user="u7")
    _produce(kafka_bootstrap, topics["soft"], [("u7", encode_soft_labels(label))])
    store = RedisStore(redis_url, namespace=unique_prefix)
    assert store.user_vector("u7") is None
    stats = _finish(
        _processor(kafka_bootstrap, redis_url, unique_prefix, topics, 6.0, engine=engine)
    )
    counts = store_counts(store, topics["events"], range(PARTITIONS))
    assert counts == {"applied": len(values), "learned": len(good), "dead": bad}
    assert stats["learned"] == len(good) and stats["dead_lettered"] == bad
    assert stats["skipped_duplicates"] == 0
    vector = store.user_vector("u7")
    assert vector is not None and vector.shape == (16,) and float(abs(vector).sum()) > 0
    # every item u7 clicked is in its seen set (so the set is not empty either)
    assert {e.item for e in good if e.user == "u7"} <= set(store.seen("u7"))
    assert stats["soft_labels_applied"] >= 1
    letters = _read_dlq(kafka_bootstrap, topics["dlq"], bad)
    assert len(letters) == bad
    reasons = {d.reason.split(":")[0] for d in letters}
    assert "record is not valid JSON" in reasons
    assert any(d.field == "ts" for d in letters)
    assert all(d.source == topics["events"] and d.offset is not None for d in letters)
    assert len({(d.partition, d.offset) for d in letters}) == bad  # each dead-lettered once


@pytest.mark.parametrize("engine", ENGINES)
def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    kafka_bootstrap: str, redis_url: str, unique_prefix: str, engine: str
) -> None:
    topics = _topics(kafka_bootstrap, unique_prefix)
    events = _events(12_000, n_users=500, n_items=300)
    values = [(e.user, encode_event(e)) for e in events]
    for n in range(0, len(values), 997):  # a few malformed ones, so dead counts cross the kill
        values.insert(n, ("u1", b"not json"))
    bad = len(values) - len(events)
    _produce(kafka_bootstrap, topics["events"], values)
    store = RedisStore(redis_url, namespace=unique_prefix)
    proc = _processor(kafka_bootstrap, redis_url, unique_prefix, topics, 30.0,
                      batch_size=100, engine=engine)
    before, err = _kill_when_learned(proc, store, topics["events"], 2000)
    assert 0 < before["learned"] < len(events), (before, err[-3000:])  # killed mid-stream
    assert before["applied"] == before["learned"] + before["dead"]
    stats = _finish(
        _processor(kafka_bootstrap, redis_url, unique_prefix, topics, 6.0, engine=engine)
    )
    after = store_counts(store, topics["events"], range(PARTITIONS))
    assert after == {"applied": len(values), "learned": len(events), "dead": bad}
    # the restarted process learned exactly the rest; what Kafka re-delivered was skipped
    assert stats["learned"] == len(events) - before["learned"]
    assert stats["dead_lettered"] == bad - before["dead"]


def test_two_processors_split_the_partitions_and_learn_every_event(
    kafka_bootstrap: str, redis_url: str, unique_prefix: str
) -> None:
    topics = _topics(kafka_bootstrap, unique_prefix)
    events = _events(8000, n_users=300, n_items=200)
    group = f"{unique_prefix}-shared"
    procs = [
        _processor(kafka_bootstrap, redis_url, unique_prefix, topics, 8.0, group=group)
        for _ in range(2)
    ]
    _wait_for_members(kafka_bootstrap, group, 2)  # both hold partitions before data arrives
    _produce(kafka_bootstrap, topics["events"], [(e.user, encode_event(e)) for e in events])
    stats = [_finish(p) for p in procs]
    store = RedisStore(redis_url, namespace=unique_prefix)
    counts = store_counts(store, topics["events"], range(PARTITIONS))
    assert counts == {"applied": len(events), "learned": len(events), "dead": 0}
    assert sum(s["learned"] for s in stats) == len(events)
    assert all(s["learned"] > 0 for s in stats), stats  # both got partitions
    ids, vectors, _bias = store.item_table()
    n_items = len({e.item for e in events})
    assert len(ids) == n_items and vectors.shape == (n_items, 16)


@pytest.fixture(autouse=True)
def _quiet_numpy_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
