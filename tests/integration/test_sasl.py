"""Kafka SASL for real: a broker with a SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256 users).

With the right password, ``kdstream replay`` delivers through the SASL listener and both
processor engines (kafka-python and faust) learn the events; with a wrong one, each command
fails within seconds with "Kafka authentication failed", and no password reaches any output.

The session-scoped ``sasl_cluster`` fixture starts its own local cluster (SASL on, free ports,
a temporary home) next to the PLAINTEXT one of ``conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdstream.local_cluster import ClusterInfo, LocalClusterConfig
from kdstream.replay import SyntheticConfig, generate
from kdstream.stream import encode_event

from .conftest import _free_ports, local_cluster

ROOT = Path(__file__).resolve().parents[2]
USER = "kd"
PASSWORD = "sasl-pw-5e1b7d"
WRONG = "wrong-pw-91c3aa"
N_EVENTS = 400
PARTITIONS = 2


@pytest.fixture(scope="session")
def sasl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterInfo]:
    kafka_port, controller_port, redis_port, sasl_port = _free_ports(4)
    cfg = LocalClusterConfig.from_env(
        home=tmp_path_factory.mktemp("kdstream-sasl"),
        kafka_port=kafka_port,
        controller_port=controller_port,
        redis_port=redis_port,
        sasl_port=sasl_port,
        sasl_users={USER: PASSWORD},
    )
    with local_cluster(cfg, "local Kafka with SASL") as info:
        yield info


@dataclass(frozen=True)
class Replayed:
    """A topic set filled through the SASL listener by ``kdstream replay``."""

    prefix: str
    sasl_url: str
    redis_url: str
    env: dict[str, str]
    users: frozenset[str]


def _env(prefix: str, password: str, mechanism: str = "SCRAM-SHA-256") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDSTREAM_")}
    env.update({
        "OPENBLAS_NUM_THREADS": "1",
        "KDSTREAM_EVENTS_TOPIC": f"{prefix}.events",
        "KDSTREAM_SOFT_LABELS_TOPIC": f"{prefix}.soft-labels",
        "KDSTREAM_DLQ_TOPIC": f"{prefix}.events.dlq",
        "KDSTREAM_PARTITIONS": str(PARTITIONS),
        "KDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KDSTREAM_KAFKA_SASL_MECHANISM": mechanism,
        "KDSTREAM_KAFKA_SASL_USERNAME": USER,
        "KDSTREAM_KAFKA_SASL_PASSWORD": password,
    })  # fmt: skip
    return env


def _kdstream(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kdstream", *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _done(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} hung past {timeout}s:\n{err[-3000:]}")
    for secret in (PASSWORD, WRONG):  # no password in any output, whatever happened
        assert secret not in out + err, f"{proc.args} printed a password"
    return proc.returncode, out, err


def _processor(replayed: Replayed, engine: str, env: dict[str, str]) -> subprocess.Popen[str]:
    namespace = f"{replayed.prefix}-{engine}"
    return _kdstream([
        "processor", "--engine", engine, "--broker", replayed.sasl_url,
        "--store", replayed.redis_url, "--namespace", namespace, "--group", namespace,
        "--dim", "8", "--idle-exit-s", "3", "--batch-size", "100",
    ], env)  # fmt: skip


@pytest.fixture(scope="module")
def replayed(sasl_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    assert sasl_cluster.kafka_sasl_bootstrap is not None
    prefix = f"t{uuid.uuid4().hex[:10]}"
    cols = generate(SyntheticConfig(n_users=40, n_items=50, n_events=N_EVENTS, seed=5))
    log = tmp_path_factory.mktemp("sasl-log") / "events.jsonl"
    log.write_bytes(b"\n".join(encode_event(e) for e in cols.to_events()) + b"\n")
    sasl_url = f"kafka://{sasl_cluster.kafka_sasl_bootstrap}"
    env = _env(prefix, PASSWORD)
    rc, out, err = _done(
        _kdstream(["replay", str(log), "--broker", sasl_url, "--no-progress"], env), 60
    )
    assert rc == 0, err[-3000:]
    assert f"sent {N_EVENTS} events to {prefix}.events on {sasl_url}" in out
    users = frozenset(e.user for e in cols.to_events())
    return Replayed(prefix, sasl_url, sasl_cluster.redis_url, env, users)


def test_local_cluster_sasl_config_keeps_the_password_private(sasl_cluster: ClusterInfo) -> None:
    props = sasl_cluster.home / "kafka" / "server.properties"
    assert props.stat().st_mode & 0o077 == 0  # the JAAS lines hold the password
    assert "inter.broker.listener.name=PLAINTEXT" in props.read_text()
    cfg = LocalClusterConfig(sasl_users={USER: PASSWORD})
    assert PASSWORD not in repr(cfg)
    assert LocalClusterConfig().kafka_sasl_bootstrap is None  # default: no SASL listener


def test_replay_over_sasl_delivers_every_event(
    replayed: Replayed, sasl_cluster: ClusterInfo
) -> None:
    from kafka import KafkaConsumer, TopicPartition

    # read back through the SASL listener with the other mechanism, PLAIN
    consumer = KafkaConsumer(
        bootstrap_servers=sasl_cluster.kafka_sasl_bootstrap, enable_auto_commit=False,
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
        sasl_plain_username=USER, sasl_plain_password=PASSWORD, consumer_timeout_ms=3000,
    )  # fmt: skip
    try:
        parts = [TopicPartition(f"{replayed.prefix}.events", p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        keys = [r.key.decode() for r in consumer]
    finally:
        consumer.close()
    assert len(keys) == N_EVENTS
    assert set(keys) == replayed.users


def test_both_engines_learn_through_the_sasl_listener(replayed: Replayed) -> None:
    from kdstream.stream._redis_store import RedisStore

    # both engines at once, each in its own group and namespace: each learns every event
    procs = {engine: _processor(replayed, engine, replayed.env) for engine in ("kafka", "faust")}
    for engine, proc in procs.items():
        rc, out, err = _done(proc, 60)
        assert rc == 0, f"{engine}: {err[-3000:]}"
        stats = out.strip().splitlines()[-1]
        assert f'"learned": {N_EVENTS},' in stats, (engine, stats)
        store = RedisStore(replayed.redis_url, namespace=f"{replayed.prefix}-{engine}")
        user = sorted(replayed.users)[0]
        vector = store.user_vector(user)
        assert vector is not None and float(abs(vector).sum()) > 0, engine


def test_a_wrong_password_fails_fast_with_a_clear_error(replayed: Replayed, tmp_path: Path) -> None:
    log = tmp_path / "one.jsonl"
    log.write_bytes(b'{"user": "u1", "item": "i1", "ts": 1}\n')
    # PLAIN for the replay, SCRAM for the processors: both mechanisms refuse it
    procs = {
        "replay": _kdstream(
            ["replay", str(log), "--broker", replayed.sasl_url, "--no-progress"],
            _env(replayed.prefix, WRONG, mechanism="PLAIN"),
        ),
        "kafka": _processor(replayed, "kafka", _env(replayed.prefix, WRONG)),
        "faust": _processor(replayed, "faust", _env(replayed.prefix, WRONG)),
    }
    for name, proc in procs.items():
        rc, _out, err = _done(proc, 45)
        assert rc == 2, f"{name}: rc={rc}\n{err[-3000:]}"
        assert "kdstream: error: Kafka authentication failed for user 'kd'" in err, (name, err)
        assert "Invalid username or password" in err or "invalid credentials" in err, err
