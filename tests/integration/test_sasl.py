"""Kafka SASL and TLS for real: a broker with a SASL_PLAINTEXT listener (PLAIN and
SCRAM-SHA-256 users) and an SSL listener (a private CA made by ``kdstream local up``).

With the right password, ``kdstream replay`` delivers through the SASL listener and both
processor engines (kafka-python and faust) learn the events; with a wrong one, each command
fails within seconds with "Kafka authentication failed", and no password reaches any output.
With the local CA and the local client certificate, the same holds for the TLS listener, which
requires client certificates (mutual TLS); with an unrelated CA, each command fails within
seconds with "Kafka TLS certificate verification failed"; without a client certificate, or with
one the broker's CA did not sign, with "the broker requires a client certificate" or "the broker
rejected the client certificate". The SASL_SSL listener (SASL over TLS, no client certificate)
takes the SASL users over the same certificate: replay and both engines work through it, and a
wrong password or an unrelated CA fails there too.

The session-scoped ``sasl_cluster`` fixture starts its own local cluster (SASL and TLS on, free
ports, a temporary home) next to the PLAINTEXT one of ``conftest.py``: one broker for both, as
each start costs CI time.
"""

from __future__ import annotations

import os
import ssl
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
from kdstream.stream._kafka_auth import kafka_ssl_context

from .conftest import _free_ports, local_cluster

ROOT = Path(__file__).resolve().parents[2]
USER = "kd"
PASSWORD = "sasl-pw-5e1b7d"
WRONG = "wrong-pw-91c3aa"
N_EVENTS = 400
PARTITIONS = 2


@pytest.fixture(scope="session")
def sasl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterInfo]:
    kafka_port, controller_port, redis_port, sasl_port, tls_port, sasl_ssl_port = _free_ports(6)
    cfg = LocalClusterConfig.from_env(
        home=tmp_path_factory.mktemp("kdstream-sasl"),
        kafka_port=kafka_port,
        controller_port=controller_port,
        redis_port=redis_port,
        sasl_port=sasl_port,
        sasl_users={USER: PASSWORD},
        tls=True,
        tls_port=tls_port,
        tls_client_auth=True,
        sasl_ssl_port=sasl_ssl_port,
    )
    with local_cluster(cfg, "local Kafka with SASL, mutual TLS and SASL_SSL") as info:
        yield info


@dataclass(frozen=True)
class Replayed:
    """A topic set filled through the SASL (or TLS) listener by ``kdstream replay``."""

    prefix: str
    url: str
    redis_url: str
    env: dict[str, str]
    users: frozenset[str]


def _base_env(prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDSTREAM_")}
    env.update({
        "OPENBLAS_NUM_THREADS": "1",
        "KDSTREAM_EVENTS_TOPIC": f"{prefix}.events",
        "KDSTREAM_SOFT_LABELS_TOPIC": f"{prefix}.soft-labels",
        "KDSTREAM_DLQ_TOPIC": f"{prefix}.events.dlq",
        "KDSTREAM_PARTITIONS": str(PARTITIONS),
    })  # fmt: skip
    return env


def _env(prefix: str, password: str, mechanism: str = "SCRAM-SHA-256") -> dict[str, str]:
    env = _base_env(prefix)
    env.update({
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
        "processor", "--engine", engine, "--broker", replayed.url,
        "--store", replayed.redis_url, "--namespace", namespace, "--group", namespace,
        "--dim", "8", "--idle-exit-s", "3", "--batch-size", "100",
    ], env)  # fmt: skip


def _replay_all(
    cluster: ClusterInfo, url: str, env: dict[str, str], prefix: str, folder: Path
) -> Replayed:
    """``kdstream replay`` of N_EVENTS synthetic events to ``url`` with ``env``'s security."""
    cols = generate(SyntheticConfig(n_users=40, n_items=50, n_events=N_EVENTS, seed=5))
    log = folder / "events.jsonl"
    log.write_bytes(b"\n".join(encode_event(e) for e in cols.to_events()) + b"\n")
    rc, out, err = _done(_kdstream(["replay", str(log), "--broker", url, "--no-progress"], env), 60)
    assert rc == 0, err[-3000:]
    assert f"sent {N_EVENTS} events to {prefix}.events on {url}" in out
    users = frozenset(e.user for e in cols.to_events())
    return Replayed(prefix, url, cluster.redis_url, env, users)


def _engines_learn(replayed: Replayed, engines: tuple[str, ...] = ("kafka", "faust")) -> None:
    from kdstream.stream._redis_store import RedisStore

    # the engines at once, each in its own group and namespace: each learns every event
    procs = {engine: _processor(replayed, engine, replayed.env) for engine in engines}
    try:
        for engine, proc in procs.items():
            rc, out, err = _done(proc, 60)
            assert rc == 0, f"{engine}: {err[-3000:]}"
            stats = out.strip().splitlines()[-1]
            assert f'"learned": {N_EVENTS},' in stats, (engine, stats, err[-3000:])
            store = RedisStore(replayed.redis_url, namespace=f"{replayed.prefix}-{engine}")
            user = sorted(replayed.users)[0]
            vector = store.user_vector(user)
            assert vector is not None and float(abs(vector).sum()) > 0, engine
    finally:  # a failure above must not leave the other engine running into later tests
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(scope="module")
def replayed(sasl_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    assert sasl_cluster.kafka_sasl_bootstrap is not None
    prefix = f"t{uuid.uuid4().hex[:10]}"
    url = f"kafka://{sasl_cluster.kafka_sasl_bootstrap}"
    folder = tmp_path_factory.mktemp("sasl-log")
    return _replay_all(sasl_cluster, url, _env(prefix, PASSWORD), prefix, folder)


def test_local_cluster_sasl_config_keeps_the_password_private(sasl_cluster: ClusterInfo) -> None:
    props = sasl_cluster.home / "kafka" / "server.properties"
    assert props.stat().st_mode & 0o077 == 0  # the JAAS lines hold the password
    assert "inter.broker.listener.name=PLAINTEXT" in props.read_text()
    cfg = LocalClusterConfig(sasl_users={USER: PASSWORD})
    assert PASSWORD not in repr(cfg)
    assert LocalClusterConfig().kafka_sasl_bootstrap is None  # default: no SASL listener


def _event_keys(prefix: str, **security: object) -> list[str]:
    """Every record key of the ``<prefix>.events`` topic, read from the beginning with a
    consumer built from ``security`` (bootstrap and security arguments)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, consumer_timeout_ms=3000, **security)
    try:
        parts = [TopicPartition(f"{prefix}.events", p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return [r.key.decode() for r in consumer]
    finally:
        consumer.close()


def test_replay_over_sasl_delivers_every_event(
    replayed: Replayed, sasl_cluster: ClusterInfo
) -> None:
    # read back through the SASL listener with the other mechanism, PLAIN
    keys = _event_keys(
        replayed.prefix,
        bootstrap_servers=sasl_cluster.kafka_sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN", sasl_plain_username=USER, sasl_plain_password=PASSWORD,
    )  # fmt: skip
    assert len(keys) == N_EVENTS
    assert set(keys) == replayed.users


def test_both_engines_learn_through_the_sasl_listener(replayed: Replayed) -> None:
    _engines_learn(replayed)


def _one_event_log(folder: Path) -> Path:
    """A one-event JSONL log: enough to make a client connect (and fail) for real."""
    log = folder / "one.jsonl"
    log.write_bytes(b'{"user": "u1", "item": "i1", "ts": 1}\n')
    return log


def test_a_wrong_password_fails_fast_with_a_clear_error(replayed: Replayed, tmp_path: Path) -> None:
    log = _one_event_log(tmp_path)
    # PLAIN for the replay, SCRAM for the processors: both mechanisms refuse it
    procs = {
        "replay": _kdstream(
            ["replay", str(log), "--broker", replayed.url, "--no-progress"],
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


# ------------------------------------------------------------------------------------- TLS
def _tls_env(
    prefix: str, cafile: Path | None, client: tuple[Path, Path] | None = None
) -> dict[str, str]:
    """The env of a TLS client: ``cafile`` verifies the broker, ``client`` is the
    (certificate, key) it presents (None: no client certificate)."""
    env = _base_env(prefix)
    env["KDSTREAM_KAFKA_SECURITY_PROTOCOL"] = "SSL"
    if cafile is not None:
        env["KDSTREAM_KAFKA_SSL_CAFILE"] = str(cafile)
    if client is not None:
        env["KDSTREAM_KAFKA_SSL_CERTFILE"] = str(client[0])
        env["KDSTREAM_KAFKA_SSL_KEYFILE"] = str(client[1])
    return env


def _client_cert(cluster: ClusterInfo) -> tuple[Path, Path]:
    """The client certificate and key ``local up`` made for the mutual-TLS listener."""
    cert, key = cluster.tls_client_cert_file, cluster.tls_client_key_file
    assert cert is not None and key is not None
    return cert, key


def _mtls_context(cluster: ClusterInfo, max_tls: str = "1.2") -> ssl.SSLContext:
    cert, key = _client_cert(cluster)
    return kafka_ssl_context(str(cluster.tls_ca_file), str(cert), str(key), max_tls=max_tls)


@pytest.fixture(scope="module")
def tls_replayed(sasl_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    assert sasl_cluster.kafka_tls_bootstrap is not None and sasl_cluster.tls_ca_file is not None
    prefix = f"t{uuid.uuid4().hex[:10]}"
    url = f"kafka://{sasl_cluster.kafka_tls_bootstrap}"
    folder = tmp_path_factory.mktemp("tls-log")
    env = _tls_env(prefix, sasl_cluster.tls_ca_file, _client_cert(sasl_cluster))
    return _replay_all(sasl_cluster, url, env, prefix, folder)


def test_local_cluster_tls_files(sasl_cluster: ClusterInfo) -> None:
    tls = sasl_cluster.home / "tls"
    assert sasl_cluster.tls_ca_file == tls / "ca.pem"
    assert _client_cert(sasl_cluster) == (tls / "client.pem", tls / "client-key.pem")
    for name in ("ca.key", "server.key", "server-keystore.pem", "client-key.pem"):
        assert (tls / name).stat().st_mode & 0o077 == 0, name  # private keys: owner only
    assert (tls / "server-keystore.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    props = (sasl_cluster.home / "kafka" / "server.properties").read_text()
    assert f"SSL://{sasl_cluster.kafka_tls_bootstrap}" in props
    assert "listener.name.ssl.ssl.client.auth=required" in props
    assert f"listener.name.ssl.ssl.truststore.location={tls / 'ca.pem'}" in props
    assert "password" not in props  # PEM keystore and truststore: no store passwords


@pytest.mark.parametrize(("max_tls", "version"), [("1.3", "TLSv1.3"), ("1.2", "TLSv1.2")])
def test_the_tls_listener_offers_1_3_and_kdstream_speaks_1_2(
    sasl_cluster: ClusterInfo, max_tls: str, version: str
) -> None:
    # a plain handshake, no Kafka request: the listener offers TLS 1.3 as real brokers do,
    # and kdstream's default context (kafka_ssl_max_tls="1.2") negotiates 1.2 with it
    import socket

    assert sasl_cluster.kafka_tls_bootstrap is not None
    host, port = sasl_cluster.kafka_tls_bootstrap.rsplit(":", 1)
    context = _mtls_context(sasl_cluster, max_tls=max_tls)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() == version


def test_replay_over_tls_delivers_every_event(
    tls_replayed: Replayed, sasl_cluster: ClusterInfo
) -> None:
    # read back through the TLS listener by name, with kdstream's context (hostname checks,
    # TLS <= 1.2 as the listener offers 1.3 too): the certificate holds DNS:localhost too;
    # the client certificate the listener requires, loaded by kdstream's context
    port = tls_replayed.url.rsplit(":", 1)[1]
    context = _mtls_context(sasl_cluster)
    assert context.maximum_version == ssl.TLSVersion.TLSv1_2
    keys = _event_keys(
        tls_replayed.prefix,
        bootstrap_servers=f"localhost:{port}", security_protocol="SSL", ssl_context=context,
    )  # fmt: skip
    assert len(keys) == N_EVENTS
    assert set(keys) == tls_replayed.users


def test_both_engines_learn_through_the_tls_listener(tls_replayed: Replayed) -> None:
    _engines_learn(tls_replayed)


def _foreign_ca(folder: Path) -> Path:
    """A self-signed CA that has nothing to do with the cluster's (its key: ``other-ca.key``)."""
    ca = folder / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(folder / "other-ca.key"), "-out", str(ca), "-days", "2",
         "-subj", "/CN=unrelated CA"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return ca


def test_an_unrelated_ca_fails_fast_with_a_clear_error(
    tls_replayed: Replayed, sasl_cluster: ClusterInfo, tmp_path: Path
) -> None:
    ca = _foreign_ca(tmp_path)
    log = _one_event_log(tmp_path)
    # with the right client certificate: only the broker's certificate is in question
    client = _client_cert(sasl_cluster)
    env = _tls_env(tls_replayed.prefix, ca, client)
    procs = {
        "replay": _kdstream(
            ["replay", str(log), "--broker", tls_replayed.url, "--no-progress"], env
        ),
        "kafka": _processor(tls_replayed, "kafka", env),
        "faust": _processor(tls_replayed, "faust", env),
        # no CA file at all: the system's CAs do not know the local one either
        "system": _processor(tls_replayed, "kafka", _tls_env(tls_replayed.prefix, None, client)),
    }
    for name, proc in procs.items():
        rc, _out, err = _done(proc, 45)
        assert rc == 2, f"{name}: rc={rc}\n{err[-3000:]}"
        assert "kdstream: error: Kafka TLS certificate verification failed at" in err, (name, err)
        assert "Traceback" not in err, (name, err)
        trust = "the system's CAs" if name == "system" else f"the CA file {ca}"
        assert f"not trusted by {trust}" in err, (name, err)


def test_a_tls_client_on_the_plaintext_port_says_so(
    tls_replayed: Replayed, sasl_cluster: ClusterInfo, tmp_path: Path
) -> None:
    log = _one_event_log(tmp_path)
    env = _tls_env(tls_replayed.prefix, sasl_cluster.tls_ca_file)
    rc, _out, err = _done(
        _kdstream(["replay", str(log), "--broker", sasl_cluster.kafka_url], env), 45
    )
    assert rc == 2, err[-3000:]
    assert "kdstream: error: Kafka TLS handshake failed" in err, err
    assert "not a PLAINTEXT one" in err, err


def _foreign_client_cert(folder: Path) -> tuple[Path, Path]:
    """A client certificate (clientAuth) signed by an unrelated CA: not the broker's."""
    ca = _foreign_ca(folder)
    cert, key = folder / "other-client.pem", folder / "other-client-key.pem"
    ext = folder / "client.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n")
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(folder / "other-client.csr"),
         "-subj", "/CN=unrelated client"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(folder / "other-client.csr"), "-CA", str(ca),
         "-CAkey", str(folder / "other-ca.key"), "-set_serial", "7", "-days", "2",
         "-extfile", str(ext), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_mutual_tls_without_a_trusted_client_certificate_fails_with_a_clear_error(
    tls_replayed: Replayed, sasl_cluster: ClusterInfo, tmp_path: Path
) -> None:
    # the broker's certificate verifies (the local CA): only the client's is in question
    log = _one_event_log(tmp_path)
    no_cert = _tls_env(tls_replayed.prefix, sasl_cluster.tls_ca_file)
    other = _foreign_client_cert(tmp_path)
    foreign = _tls_env(tls_replayed.prefix, sasl_cluster.tls_ca_file, other)
    replay = ["replay", str(log), "--broker", tls_replayed.url, "--no-progress"]
    procs = {
        "replay": _kdstream(replay, no_cert),
        "kafka": _processor(tls_replayed, "kafka", no_cert),
        "faust": _processor(tls_replayed, "faust", no_cert),
        "foreign": _kdstream(replay, foreign),
    }
    for name, proc in procs.items():
        rc, _out, err = _done(proc, 45)
        assert rc == 2, f"{name}: rc={rc}\n{err[-3000:]}"
        assert "Traceback" not in err, (name, err)
        at = sasl_cluster.kafka_tls_bootstrap
        assert f"kdstream: error: Kafka TLS handshake failed at {at}: the broker" in err, err
        if name == "foreign":
            assert f"the broker rejected the client certificate {other[0]}" in err, err
        else:
            assert "the broker requires a client certificate and none is set" in err, (name, err)
            assert "kafka_ssl_certfile / kafka_ssl_keyfile" in err, (name, err)


# -------------------------------------------------------------------------------- SASL_SSL
def _sasl_ssl_env(
    prefix: str, password: str, cafile: Path, mechanism: str = "SCRAM-SHA-256"
) -> dict[str, str]:
    """SASL over TLS: the SASL client's settings plus the CA that verifies the broker."""
    env = _env(prefix, password, mechanism)
    env["KDSTREAM_KAFKA_SECURITY_PROTOCOL"] = "SASL_SSL"
    env["KDSTREAM_KAFKA_SSL_CAFILE"] = str(cafile)
    return env


@pytest.fixture(scope="module")
def sasl_ssl_replayed(
    sasl_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Replayed:
    assert sasl_cluster.kafka_sasl_ssl_bootstrap is not None and sasl_cluster.tls_ca_file
    prefix = f"t{uuid.uuid4().hex[:10]}"
    url = f"kafka://{sasl_cluster.kafka_sasl_ssl_bootstrap}"
    folder = tmp_path_factory.mktemp("sasl-ssl-log")
    env = _sasl_ssl_env(prefix, PASSWORD, sasl_cluster.tls_ca_file)
    return _replay_all(sasl_cluster, url, env, prefix, folder)


def test_replay_over_sasl_ssl_delivers_every_event(
    sasl_ssl_replayed: Replayed, sasl_cluster: ClusterInfo
) -> None:
    # read back with the other mechanism, PLAIN, over TLS verified by the local CA alone: the
    # listener asks for no client certificate
    context = kafka_ssl_context(str(sasl_cluster.tls_ca_file))
    keys = _event_keys(
        sasl_ssl_replayed.prefix,
        bootstrap_servers=sasl_cluster.kafka_sasl_ssl_bootstrap, security_protocol="SASL_SSL",
        ssl_context=context, sasl_mechanism="PLAIN", sasl_plain_username=USER,
        sasl_plain_password=PASSWORD,
    )  # fmt: skip
    assert len(keys) == N_EVENTS
    assert set(keys) == sasl_ssl_replayed.users


def test_both_engines_learn_through_the_sasl_ssl_listener(sasl_ssl_replayed: Replayed) -> None:
    _engines_learn(sasl_ssl_replayed)


def test_sasl_ssl_with_a_wrong_password_or_an_unrelated_ca_fails_fast(
    sasl_ssl_replayed: Replayed, sasl_cluster: ClusterInfo, tmp_path: Path
) -> None:
    assert sasl_cluster.tls_ca_file is not None
    log = _one_event_log(tmp_path)
    prefix, url = sasl_ssl_replayed.prefix, sasl_ssl_replayed.url
    wrong = _sasl_ssl_env(prefix, WRONG, sasl_cluster.tls_ca_file)
    foreign = _sasl_ssl_env(prefix, PASSWORD, _foreign_ca(tmp_path))
    replay = ["replay", str(log), "--broker", url, "--no-progress"]
    procs = {
        "replay, wrong password": (_kdstream(replay, wrong), "Kafka authentication failed"),
        "kafka engine, wrong password": (
            _processor(sasl_ssl_replayed, "kafka", wrong), "Kafka authentication failed"
        ),
        "replay, unrelated CA": (
            _kdstream(replay, foreign), "Kafka TLS certificate verification failed"
        ),
    }
    for name, (proc, message) in procs.items():
        rc, _out, err = _done(proc, 45)
        assert rc == 2, f"{name}: rc={rc}\n{err[-3000:]}"
        assert f"kdstream: error: {message}" in err, (name, err)
        assert "Traceback" not in err, (name, err)
