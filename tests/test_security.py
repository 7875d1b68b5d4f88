"""Security settings: Kafka SASL/TLS passed to every client, the API's read token, Redis TLS
and passwords, and no secret in any log line, dump or error message."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from kdstream import cli_runtime
from kdstream.api import ApiSettings, StoreServingService, create_app
from kdstream.errors import ConfigError, ServiceError
from kdstream.settings import Settings, faust_broker_credentials, kafka_client_kwargs, make_store
from kdstream.stream import MemoryStore, Record
from kdstream.stream._redis_store import RedisStore

ROOT = Path(__file__).resolve().parents[1]
KAFKA_PW = "kafka-pw-4f2a9c"
REDIS_PW = "redis-pw-77b1e0"
API_PW = "api-token-1c9d33"

SASL = {
    "kafka_security_protocol": "SASL_PLAINTEXT",
    "kafka_sasl_mechanism": "SCRAM-SHA-256",
    "kafka_sasl_username": "kd",
    "kafka_sasl_password": KAFKA_PW,
}


def _sasl_env(**extra: str) -> dict[str, str]:
    env = {f"KDSTREAM_{k.upper()}": v for k, v in SASL.items()}
    env.update(extra)
    return env


#: a self-signed certificate (EC P-256, for IP:127.0.0.1 and DNS:localhost, valid 100 years)
#: and its unencrypted key: a CA, a server and a client certificate for the TLS tests
TEST_CERT_AND_KEY = """\
-----BEGIN CERTIFICATE-----
MIIBpDCCAUmgAwIBAgIUd9Jfg2YvTYlkhB708FdeMcBeHR8wCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNa2RzdHJlYW0gdGVzdDAgFw0yNjExMjMwOTQwMjRaGA8yMTI2
MTAzMDA5NDAyNFowGDEWMBQGA1UEAwwNa2RzdHJlYW0gdGVzdDBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABFQgkvRPHYWULCUVpo8tZSVFOPQa0c5xtxiOnlRQ0uxo
2S8IMBuTV/YWtFShdaoLCagsVoIIKAgbhyAXFQj5atKjbzBtMB0GA1UdDgQWBBR5
ykEjdRf4Jw5YusY0xEKGuaR+vjAfBgNVHSMEGDAWgBR5ykEjdRf4Jw5YusY0xEKG
uaR+vjAPBgNVHRMBAf8EBTADAQH/MBoGA1UdEQQTMBGHBH8AAAGCCWxvY2FsaG9z
dDAKBggqhkjOPQQDAgNJADBGAiEA5003tCj/nMs0USM+47u7iAB64CXGkxj92I+H
euFDUAUCIQC5RUVd7OaAwlRruhXEjWaSOBZTcggarvCe97ZnBOG3ew==
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQNfJ5+ztZh/WBhze
ixQfCyOwKPDZhms7Uuq5TwJSuGWhRANCAARUIJL0Tx2FlCwlFaaPLWUlRTj0GtHO
cbcYjp5UUNLsaNkvCDAbk1f2FrRUoXWqCwmoLFaCCCgIG4cgFxUI+WrS
-----END PRIVATE KEY-----
"""
#: the same key encrypted with TEST_KEY_PASSWORD
TEST_ENCRYPTED_KEY = """\
-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAhT+8me5z6MrwICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEELSXmZ0EKCBrWS5Jk9B0UsEgZCZ
1IVlyShABZjDHPl1/nFw28wMr84PzGngwq9ZN6hlEpVl3rpCLeyVRSxDRYYB7pK0
3Ajtsr8FigZ6xenjBu2O2GLB460KUTjfin2cf0AWfrysGe+pprpDMar+lFaP5lUJ
ikkwyRsGyCnKS3n4c1yT3FEJH6LVC6g8xZDPbDyRxi8A9/DB9QTqNWsiRJZ3Zdk=
-----END ENCRYPTED PRIVATE KEY-----
"""
TEST_KEY_PASSWORD = "keypw-1"


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    # a loadable PEM: kafka_client_kwargs builds the TLS context from it
    path = tmp_path / "ca.pem"
    path.write_text(TEST_CERT_AND_KEY)
    return path


# ------------------------------------------------------------------------------ settings
def test_security_settings_from_env_and_kwargs(pem: Path) -> None:
    env = _sasl_env(
        KDSTREAM_KAFKA_SECURITY_PROTOCOL="SASL_SSL", KDSTREAM_KAFKA_SSL_CAFILE=str(pem)
    )
    s = Settings.load(env=env)
    kwargs = kafka_client_kwargs(s)
    assert isinstance(kwargs.pop("ssl_context"), ssl.SSLContext)
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "kd",
        "sasl_plain_password": KAFKA_PW,
        "ssl_cafile": str(pem),
    }
    tls = Settings(
        kafka_security_protocol="SSL", kafka_ssl_cafile=str(pem), kafka_ssl_certfile=str(pem),
        kafka_ssl_keyfile=str(pem),
    )
    kwargs = kafka_client_kwargs(tls)
    assert isinstance(kwargs.pop("ssl_context"), ssl.SSLContext)
    assert kwargs == {
        "security_protocol": "SSL", "ssl_cafile": str(pem), "ssl_certfile": str(pem),
        "ssl_keyfile": str(pem),
    }
    assert kafka_client_kwargs(Settings()) == {}


def test_kafka_client_kwargs_are_kafka_python_arguments() -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    s = Settings(**SASL)
    for cls in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(kafka_client_kwargs(s)) <= set(cls.DEFAULT_CONFIG), cls


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({**SASL, "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({**SASL, "kafka_sasl_mechanism": None}, "kafka_sasl_mechanism"),
        ({**SASL, "kafka_sasl_username": None}, "kafka_sasl_username"),
        ({**SASL, "kafka_sasl_password": ""}, "kafka_sasl_password"),
        ({"kafka_sasl_username": "kd"}, "kafka_sasl_username"),
        ({"kafka_ssl_cafile": "/etc/hosts"}, "kafka_ssl_cafile"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nope.pem"}, "kafka_ssl_cafile"),
        ({"api_read_token": ""}, "api_read_token"),
    ],
)
def test_bad_security_settings_name_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named) as info:
        Settings(**fields)
    assert KAFKA_PW not in str(info.value)


def test_keyfile_needs_certfile(pem: Path) -> None:
    with pytest.raises(ConfigError, match="kafka_ssl_keyfile"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_keyfile=str(pem))


def test_secrets_masked_in_repr_dict_and_toml() -> None:
    s = Settings(
        store=f"rediss://kd:{REDIS_PW}@127.0.0.1:6380/0", api_token=API_PW,
        api_read_token=API_PW + "r", **SASL,
    )
    for text in (repr(s), str(s.to_dict()), s.to_toml()):
        for secret in (KAFKA_PW, REDIS_PW, API_PW):
            assert secret not in text
    assert s.to_dict()["kafka_sasl_password"] == "***"
    assert s.to_dict()["store"] == "rediss://kd:***@127.0.0.1:6380/0"
    full = s.to_dict(secrets=True)
    assert full["kafka_sasl_password"] == KAFKA_PW
    assert Settings.load(full, env={}) == s  # the unmasked dump round-trips


def test_faust_broker_credentials() -> None:
    assert faust_broker_credentials(Settings()) is None
    creds = faust_broker_credentials(Settings(**SASL))
    assert type(creds).__name__ == "SASLCredentials"
    assert creds.username == "kd" and creds.password == KAFKA_PW
    assert str(creds.mechanism.value) == "SCRAM-SHA-256"
    assert KAFKA_PW not in repr(creds)


# ------------------------------------------------------------------------------ clients
class _Recorder:
    """Stands in for a kafka-python class: records constructor kwargs, does nothing."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]], name: str, default: Any) -> None:
        self.calls, self.name, self.DEFAULT_CONFIG = calls, name, default

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((self.name, kwargs))
        return _FakeClient()


class _FakeClient:
    def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return []

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def kafka_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    import kafka

    calls: list[tuple[str, dict[str, Any]]] = []
    for name in ("KafkaProducer", "KafkaConsumer", "KafkaAdminClient"):
        real = getattr(kafka, name)
        monkeypatch.setattr(kafka, name, _Recorder(calls, name, real.DEFAULT_CONFIG))
    return calls


def _has_sasl(kwargs: dict[str, Any]) -> bool:
    want = kafka_client_kwargs(Settings(**SASL))
    return all(kwargs.get(k) == v for k, v in want.items())


def test_processor_loop_passes_security_to_every_client(
    kafka_calls: list[tuple[str, dict[str, Any]]],
) -> None:
    from kdstream.stream._processor import KafkaProcessorLoop, ProcessorCore

    sec = kafka_client_kwargs(Settings(**SASL))
    KafkaProcessorLoop("127.0.0.1:9092", ProcessorCore(MemoryStore()), security=sec)
    names = sorted(name for name, _ in kafka_calls)
    assert names == ["KafkaConsumer", "KafkaConsumer", "KafkaProducer"]
    assert all(_has_sasl(kw) for _, kw in kafka_calls), kafka_calls


def test_teacher_process_passes_security(
    kafka_calls: list[tuple[str, dict[str, Any]]], tmp_path: Path
) -> None:
    from kdstream.stream._teacher_process import TeacherProcess, TeacherProcessConfig

    sec = kafka_client_kwargs(Settings(**SASL))
    TeacherProcess(TeacherProcessConfig("127.0.0.1:9092", state_dir=tmp_path), security=sec)
    assert sorted(n for n, _ in kafka_calls) == ["KafkaConsumer", "KafkaProducer"]
    assert all(_has_sasl(kw) for _, kw in kafka_calls), kafka_calls


def test_cli_topics_passes_env_security_to_the_admin_client(
    kafka_calls: list[tuple[str, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kdstream.stream import _kafka_auth

    for key, value in _sasl_env().items():
        monkeypatch.setenv(key, value)
    checked: list[Any] = []
    monkeypatch.setattr(_kafka_auth, "check_kafka_login", lambda b, sec: checked.append(sec))
    assert cli_runtime.main(["topics", "describe", "--broker", "kafka://127.0.0.1:9092"]) == 0
    assert [n for n, _ in kafka_calls] == ["KafkaAdminClient"]
    assert _has_sasl(kafka_calls[0][1])
    assert checked == [kafka_client_kwargs(Settings(**SASL))]  # the login is checked first
    out = capsys.readouterr()
    assert KAFKA_PW not in out.out + out.err


def test_cli_faust_engine_gets_the_security_settings(
    kafka_calls: list[tuple[str, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdstream.stream import _faust_app, _kafka_auth
    from kdstream.stream._processor import ProcessorStats

    for key, value in _sasl_env().items():
        monkeypatch.setenv(key, value)
    seen: dict[str, Any] = {}

    def fake_run(bootstrap: str, core: Any, **kw: Any) -> ProcessorStats:
        seen.update(kw, bootstrap=bootstrap)
        return ProcessorStats()

    def fake_check(bootstrap: str, security: Any, **kw: Any) -> None:
        seen["checked"] = dict(security)

    monkeypatch.setattr(_faust_app, "run_faust_processor", fake_run)
    monkeypatch.setattr(_kafka_auth, "check_kafka_login", fake_check)
    argv = ["processor", "--engine", "faust", "--broker", "kafka://h:9092", "--idle-exit-s", "1"]
    assert cli_runtime.main(argv) == 0
    want = kafka_client_kwargs(Settings(**SASL))
    assert seen["bootstrap"] == "h:9092"
    assert seen["security"] == want and seen["checked"] == want


# ------------------------------------------------------------------------------ the API
def _call(app: Any, method: str, url: str, token: str | None = None, **kw: Any) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def go() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return (await client.request(method, url, headers=headers, **kw)).status_code

    return asyncio.run(go())


def test_api_read_token_guards_reads_but_not_probes() -> None:
    app = create_app(
        StoreServingService(MemoryStore()), ApiSettings(token="w-tok", read_token="r-tok")
    )
    rec = "/v1/users/u1/recommendations"
    for url in (rec, "/v1/stats"):
        assert _call(app, "GET", url) == 401
        assert _call(app, "GET", url, "wrong") == 403
        assert _call(app, "GET", url, "r-tok") == 200
        assert _call(app, "GET", url, "w-tok") == 200  # the write token grants reads
    assert _call(app, "GET", "/healthz") == 200
    assert _call(app, "GET", "/metrics") == 200
    one = [{"user": "u1", "item": "i1", "ts": 1}]
    assert _call(app, "POST", "/v1/events", "r-tok", json=one) == 403  # reads only


def test_api_reads_open_without_read_token() -> None:
    app = create_app(StoreServingService(MemoryStore()), ApiSettings(token="w-tok"))
    assert _call(app, "GET", "/v1/users/u1/recommendations") == 200


def test_api_settings_repr_masks_tokens() -> None:
    text = repr(ApiSettings(token=API_PW, read_token=API_PW + "r"))
    assert API_PW not in text and "token='***'" in text
    with pytest.raises(ConfigError, match="read_token"):
        ApiSettings(read_token=" ")


# ------------------------------------------------------------------------------ Redis
def test_rediss_url_makes_a_tls_connection_pool() -> None:
    import redis

    store = make_store(Settings(store=f"rediss://kd:{REDIS_PW}@127.0.0.1:6380/2"))
    assert isinstance(store, RedisStore)
    pool = store._client.connection_pool
    assert issubclass(pool.connection_class, redis.SSLConnection)
    kwargs = pool.connection_kwargs
    assert kwargs["password"] == REDIS_PW and kwargs["username"] == "kd" and kwargs["db"] == 2
    assert REDIS_PW not in repr(store)
    plain = RedisStore(f"redis://:{REDIS_PW}@127.0.0.1:6379/0")
    assert not issubclass(plain._client.connection_pool.connection_class, redis.SSLConnection)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_password() -> str:
    """The password of the ``password_redis`` server (tests/conftest.py)."""
    return REDIS_PW


def _chain(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc} {exc.args!r}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_no_secret_in_logs_when_the_store_refuses_the_password(
    password_redis: int, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    from kdstream.stream._processor import ProcessorConfig, ProcessorCore

    url = f"redis://:{REDIS_PW}@127.0.0.1:{password_redis}/0"
    wrong = RedisStore(f"redis://kd:wrong-{REDIS_PW}@127.0.0.1:{password_redis}/0", retries=0)
    with pytest.raises(ServiceError) as refused:
        wrong.ping()
    assert REDIS_PW not in _chain(refused.value) and ":***@" in str(refused.value)

    caplog.set_level(logging.DEBUG)
    store = RedisStore(url, retries=0)
    core = ProcessorCore(
        store, ProcessorConfig(write_retries=3, retry_backoff_s=0.01), sleep=lambda _s: None
    )
    core.assign([0])
    # the password is rotated on the server and the connections dropped: every write now
    # fails authentication with the password in the store URL
    admin = redis.Redis.from_url(url)
    admin.config_set("requirepass", "rotated-" + REDIS_PW)
    admin.client_kill_filter(_type="normal", skipme=False)
    record = Record("kd.events", 0, 0, None, b'{"user":"u1","item":"i1","ts":1}', 0.0)
    with pytest.raises(ServiceError) as info:
        core.process([record])
    assert "failed 3 times" in str(info.value)
    assert "authentication failed" in str(info.value)
    assert "store write failed" in caplog.text  # the retries were logged ...
    assert REDIS_PW not in caplog.text  # ... without the password
    assert REDIS_PW not in _chain(info.value)


def test_cli_settings_dump_and_startup_log_hold_no_secret(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **_sasl_env(),
        "KDSTREAM_STORE": f"rediss://kd:{REDIS_PW}@127.0.0.1:6380/0",
        "KDSTREAM_API_TOKEN": API_PW,
        "KDSTREAM_API_READ_TOKEN": API_PW + "r",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "kdstream", "settings"], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"kafka_sasl_password": "***"' in proc.stdout
    for secret in (KAFKA_PW, REDIS_PW, API_PW):
        assert secret not in proc.stdout + proc.stderr
    # the processor/teacher commands log their settings at start-up
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    caplog.set_level(logging.INFO)
    settings = cli_runtime._settings(argparse.Namespace(broker="kafka://127.0.0.1:9092"))
    assert settings.kafka_sasl_password == KAFKA_PW
    assert "kafka_sasl_password='***'" in caplog.text
    for secret in (KAFKA_PW, REDIS_PW, API_PW):
        assert secret not in caplog.text


# ------------------------------------------------------------------------------ faust engine
def test_faust_credentials_from_kafka_python_kwargs() -> None:
    """One setting drives both engines: kafka-python kwargs -> faust -> aiokafka arguments."""

    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from kdstream.stream._faust_app import faust_credentials

    assert faust_credentials(None) is None
    assert faust_credentials(kafka_client_kwargs(Settings())) is None
    for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        sec = kafka_client_kwargs(Settings(**{**SASL, "kafka_sasl_mechanism": mechanism}))
        creds = faust_credentials(sec)
        assert isinstance(creds, faust.SASLCredentials)
        assert KAFKA_PW not in repr(creds)
        # what faust's aiokafka driver hands to AIOKafkaConsumer/AIOKafkaProducer
        assert credentials_to_aiokafka_auth(creds) == {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": "kd",
            "sasl_plain_password": KAFKA_PW,
            "ssl_context": None,
        }
        # the same credentials as kdstream.settings builds from the settings themselves
        other = faust_broker_credentials(Settings(**{**SASL, "kafka_sasl_mechanism": mechanism}))
        assert credentials_to_aiokafka_auth(other) == credentials_to_aiokafka_auth(creds)


def test_faust_credentials_tls(monkeypatch: pytest.MonkeyPatch, pem: Path) -> None:
    import ssl

    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from kdstream.stream._faust_app import faust_credentials

    contexts: list[dict[str, Any]] = []
    real = ssl.create_default_context

    def fake_context(purpose: Any = ssl.Purpose.SERVER_AUTH, **kw: Any) -> ssl.SSLContext:
        contexts.append(kw)  # the dummy PEM cannot be loaded: record where it would come from
        return real(purpose)

    monkeypatch.setattr(ssl, "create_default_context", fake_context)
    sasl_ssl = Settings(**{**SASL, "kafka_security_protocol": "SASL_SSL"},
                        kafka_ssl_cafile=str(pem))
    auth = credentials_to_aiokafka_auth(faust_credentials(kafka_client_kwargs(sasl_ssl)))
    assert auth["security_protocol"] == "SASL_SSL"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert auth["sasl_plain_password"] == KAFKA_PW
    assert contexts == [{"cafile": str(pem)}]
    tls = faust_credentials(kafka_client_kwargs(
        Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(pem))
    ))
    assert isinstance(tls, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(tls)["security_protocol"] == "SSL"
    with pytest.raises(ConfigError, match="security_protocol"):
        faust_credentials({"security_protocol": "SASL_TLS"})


def test_faust_app_gets_the_credentials() -> None:
    from kdstream.stream._faust_app import FaustProcessorConfig, faust_credentials, make_app

    creds = faust_credentials(kafka_client_kwargs(Settings(**SASL)))
    app = make_app("kd-sec-test", "127.0.0.1:9092", 2, FaustProcessorConfig(), creds)
    assert app.conf.broker_credentials is creds
    assert make_app("kd-sec-test2", "127.0.0.1:9092", 2, FaustProcessorConfig()).conf \
        .broker_credentials is None


def test_login_check_is_a_no_op_without_sasl(
    kafka_calls: list[tuple[str, dict[str, Any]]],
) -> None:
    from kdstream.stream._kafka_auth import check_kafka_login

    check_kafka_login("127.0.0.1:9", {})
    check_kafka_login("127.0.0.1:9", None)
    assert kafka_calls == []


def test_login_check_reports_an_unreachable_broker_without_the_password() -> None:
    from kdstream.stream._kafka_auth import check_kafka_login

    with pytest.raises(ServiceError, match="cannot reach Kafka") as info:
        check_kafka_login(
            f"127.0.0.1:{_free_port()}", kafka_client_kwargs(Settings(**SASL)), timeout_s=2.0
        )
    assert KAFKA_PW not in _chain(info.value)


# ------------------------------------------------------------------------------ local cluster
def test_local_cluster_sasl_listener_properties() -> None:
    from kdstream.local_cluster import LocalClusterConfig, _server_properties

    plain = _server_properties(LocalClusterConfig())
    assert "SASL" not in plain and "jaas" not in plain  # the default stays PLAINTEXT only
    cfg = LocalClusterConfig(sasl_users={"kd": KAFKA_PW, "ops": "pw2"}, sasl_port=19094)
    props = dict(
        line.split("=", 1) for line in _server_properties(cfg).splitlines() if line
    )
    assert props["listeners"].endswith(",SASL_PLAINTEXT://127.0.0.1:19094")
    assert "SASL_PLAINTEXT://127.0.0.1:19094" in props["advertised.listeners"]
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert "SASL_PLAINTEXT:SASL_PLAINTEXT" in props["listener.security.protocol.map"]
    jaas = props["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert f'user_kd="{KAFKA_PW}"' in jaas and 'user_ops="pw2"' in jaas
    assert KAFKA_PW not in repr(cfg)
    assert cfg.kafka_sasl_bootstrap == "127.0.0.1:19094"


def test_local_cluster_sasl_users_from_env_and_validation() -> None:
    from kdstream.local_cluster import LocalClusterConfig

    env = {"KDSTREAM_LOCAL_SASL_USERS": f"kd:{KAFKA_PW},ops:x", "KDSTREAM_KAFKA_SASL_PORT": "19"}
    cfg = LocalClusterConfig.from_env(env)
    assert cfg.sasl_users == {"kd": KAFKA_PW, "ops": "x"} and cfg.sasl_port == 19
    with pytest.raises(ConfigError, match="KDSTREAM_LOCAL_SASL_USERS=\\*\\*\\*") as info:
        LocalClusterConfig.from_env({"KDSTREAM_LOCAL_SASL_USERS": KAFKA_PW})
    assert KAFKA_PW not in str(info.value)
    for users in ({}, {"k d": "pw"}, {"kd": ""}, {"kd": 'a"b'}, {"kd": "a;b"}):
        with pytest.raises(ConfigError, match="sasl_users"):
            LocalClusterConfig(sasl_users=users)
    with pytest.raises(ConfigError, match="distinct"):
        LocalClusterConfig(sasl_users={"kd": "pw"}, sasl_port=9092)


# ------------------------------------------------------------------------------ local TLS
def test_local_cluster_tls_listener_properties() -> None:
    from kdstream.local_cluster import LocalClusterConfig, _server_properties

    plain = LocalClusterConfig()
    assert "SSL" not in _server_properties(plain)  # the default stays PLAINTEXT only
    assert plain.kafka_tls_bootstrap is None and plain.tls_ca_file is None
    cfg = LocalClusterConfig(home=Path("/tmp/kd-tls-home"), tls=True, tls_port=19095)
    props = dict(line.split("=", 1) for line in _server_properties(cfg).splitlines() if line)
    assert props["listeners"].endswith(",SSL://127.0.0.1:19095")
    assert "SSL://127.0.0.1:19095" in props["advertised.listeners"]
    assert "SSL:SSL" in props["listener.security.protocol.map"]
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.name.ssl.ssl.keystore.type"] == "PEM"
    assert props["listener.name.ssl.ssl.keystore.location"].endswith("tls/server-keystore.pem")
    # 1.2 and 1.3, as real brokers offer: kdstream's clients cap themselves at 1.2
    assert props["listener.name.ssl.ssl.enabled.protocols"] == "TLSv1.2,TLSv1.3"
    # an unencrypted PEM key: Kafka refuses a keystore password and needs no key password
    assert not any("password" in key for key in props)
    assert cfg.kafka_tls_bootstrap == "127.0.0.1:19095"
    assert cfg.tls_ca_file == Path("/tmp/kd-tls-home/tls/ca.pem")


def test_local_cluster_sasl_ssl_listener_with_both_sasl_and_tls() -> None:
    from kdstream.local_cluster import LocalClusterConfig, _server_properties, local_status

    # either alone: no SASL_SSL listener
    for alone in (LocalClusterConfig(tls=True), LocalClusterConfig(sasl_users={"kd": "pw"})):
        assert alone.kafka_sasl_ssl_bootstrap is None
        assert "SASL_SSL" not in _server_properties(alone)
    cfg = LocalClusterConfig(
        home=Path("/tmp/kd-tls-home"), sasl_users={"kd": KAFKA_PW}, sasl_port=19094,
        tls=True, tls_port=19095, sasl_ssl_port=19096,
    )  # fmt: skip
    assert cfg.kafka_sasl_ssl_bootstrap == "127.0.0.1:19096"
    props = dict(line.split("=", 1) for line in _server_properties(cfg).splitlines() if line)
    assert props["listeners"].endswith(",SASL_SSL://127.0.0.1:19096")
    assert "SASL_SSL://127.0.0.1:19096" in props["advertised.listeners"]
    assert "SASL_SSL:SASL_SSL" in props["listener.security.protocol.map"]
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    # the SASL listener's users and mechanisms, the TLS listener's certificate
    for key in ("sasl.enabled.mechanisms", "plain.sasl.jaas.config",
                "scram-sha-256.sasl.jaas.config", "ssl.keystore.type",
                "ssl.keystore.location", "ssl.enabled.protocols"):  # fmt: skip
        ssl_or_sasl = "sasl_plaintext" if "sasl" in key else "ssl"
        assert props[f"listener.name.sasl_ssl.{key}"] == props[
            f"listener.name.{ssl_or_sasl}.{key}"
        ], key
    assert f'user_kd="{KAFKA_PW}"' in props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    # SASL authenticates the client: no client certificate asked for on this listener
    assert "listener.name.sasl_ssl.ssl.client.auth" not in props
    status = local_status(cfg)["kafka"]
    assert status["sasl_ssl_url"] == "kafka://127.0.0.1:19096"
    env = {"KDSTREAM_LOCAL_TLS": "1", "KDSTREAM_LOCAL_SASL_USERS": "kd:pw",
           "KDSTREAM_KAFKA_SASL_SSL_PORT": "19097"}  # fmt: skip
    assert LocalClusterConfig.from_env(env).kafka_sasl_ssl_bootstrap == "127.0.0.1:19097"
    with pytest.raises(ConfigError, match="distinct"):
        LocalClusterConfig(sasl_users={"kd": "pw"}, tls=True, sasl_ssl_port=9092)
    # the port matters only when the listener exists
    assert LocalClusterConfig(tls=True, sasl_ssl_port=9092).kafka_sasl_ssl_bootstrap is None


def test_local_cluster_tls_from_env_and_validation() -> None:
    from kdstream.local_cluster import LocalClusterConfig

    cfg = LocalClusterConfig.from_env({"KDSTREAM_LOCAL_TLS": "1", "KDSTREAM_KAFKA_TLS_PORT": "19"})
    assert cfg.tls and cfg.tls_port == 19
    assert not LocalClusterConfig.from_env({"KDSTREAM_LOCAL_TLS": "off"}).tls
    with pytest.raises(ConfigError, match="KDSTREAM_LOCAL_TLS='maybe'"):
        LocalClusterConfig.from_env({"KDSTREAM_LOCAL_TLS": "maybe"})
    with pytest.raises(ConfigError, match="distinct"):
        LocalClusterConfig(tls=True, tls_port=9092)
    with pytest.raises(ConfigError, match="tls must be a bool"):
        LocalClusterConfig(tls="yes")  # type: ignore[arg-type]
    LocalClusterConfig(tls_port=9092)  # the port is only checked when the listener is on


def test_local_tls_files_are_made_once_private_and_verify(tmp_path: Path) -> None:
    from kdstream.local_cluster import LocalClusterConfig, ensure_tls_files

    if not Path("/usr/bin/openssl").exists():
        pytest.skip("openssl is not installed")
    cfg = LocalClusterConfig(home=tmp_path, tls=True)
    messages: list[str] = []
    ca = ensure_tls_files(cfg, messages.append)
    assert ca == cfg.tls_ca_file and len(messages) == 2  # the CA, then the server certificate
    tls = tmp_path / "tls"
    for name in ("ca.key", "server.key", "server-keystore.pem"):
        assert (tls / name).stat().st_mode & 0o077 == 0, name
    keystore = cfg.tls_keystore.read_text()
    assert keystore.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    assert keystore.count("BEGIN CERTIFICATE") == 2  # the server's, then the CA's
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(tls / "server.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tls / "server.pem")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    before = {p.name: p.read_bytes() for p in tls.iterdir()}
    messages.clear()
    ensure_tls_files(cfg, messages.append)  # a later start reuses them
    assert messages == [] and {p.name: p.read_bytes() for p in tls.iterdir()} == before
    cfg.tls_keystore.unlink()  # a lost keystore: a new server certificate, the same CA
    ensure_tls_files(cfg, messages.append)
    assert len(messages) == 1 and (tls / "ca.pem").read_bytes() == before["ca.pem"]
    assert cfg.tls_keystore.read_bytes() != before["server-keystore.pem"]


def test_local_tls_without_openssl_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdstream import local_cluster

    monkeypatch.setattr(local_cluster.shutil, "which", lambda name: None)
    monkeypatch.setattr(local_cluster, "_OPENSSL_FALLBACK", tmp_path / "no-openssl")
    cfg = local_cluster.LocalClusterConfig(home=tmp_path, tls=True)
    with pytest.raises(ServiceError, match=r"needs the `openssl` command.*apt-get install"):
        local_cluster.ensure_tls_files(cfg)


def test_local_cluster_mutual_tls_properties() -> None:
    from kdstream.local_cluster import LocalClusterConfig, _server_properties

    tls_only = LocalClusterConfig(home=Path("/tmp/kd-tls-home"), tls=True)
    assert "client.auth" not in _server_properties(tls_only)  # off: no client certificates
    assert "truststore" not in _server_properties(tls_only)
    assert tls_only.tls_client_cert_file is None and tls_only.tls_client_key_file is None
    cfg = LocalClusterConfig(home=Path("/tmp/kd-tls-home"), tls=True, tls_client_auth=True)
    props = dict(line.split("=", 1) for line in _server_properties(cfg).splitlines() if line)
    assert props["listener.name.ssl.ssl.client.auth"] == "required"
    # the CA file itself is the (PEM) truststore that checks the clients' certificates
    assert props["listener.name.ssl.ssl.truststore.type"] == "PEM"
    assert props["listener.name.ssl.ssl.truststore.location"] == "/tmp/kd-tls-home/tls/ca.pem"
    assert not any("password" in key for key in props)  # Kafka refuses one for PEM stores
    # only the SSL listener asks for certificates: no broker-wide ssl.client.auth
    assert [k for k in props if "client.auth" in k] == ["listener.name.ssl.ssl.client.auth"]
    assert cfg.tls_client_cert_file == Path("/tmp/kd-tls-home/tls/client.pem")
    assert cfg.tls_client_key_file == Path("/tmp/kd-tls-home/tls/client-key.pem")


def test_local_cluster_mutual_tls_from_env_and_validation() -> None:
    from kdstream.local_cluster import LocalClusterConfig

    env = {"KDSTREAM_LOCAL_TLS": "1", "KDSTREAM_LOCAL_TLS_CLIENT_AUTH": "yes"}
    assert LocalClusterConfig.from_env(env).tls_client_auth
    env["KDSTREAM_LOCAL_TLS_CLIENT_AUTH"] = "0"
    assert not LocalClusterConfig.from_env(env).tls_client_auth
    env["KDSTREAM_LOCAL_TLS_CLIENT_AUTH"] = "maybe"
    with pytest.raises(ConfigError, match="KDSTREAM_LOCAL_TLS_CLIENT_AUTH='maybe'"):
        LocalClusterConfig.from_env(env)
    with pytest.raises(ConfigError, match=r"tls_client_auth needs the TLS listener.*TLS=1"):
        LocalClusterConfig.from_env({"KDSTREAM_LOCAL_TLS_CLIENT_AUTH": "1"})
    with pytest.raises(ConfigError, match="tls_client_auth must be a bool"):
        LocalClusterConfig(tls=True, tls_client_auth=1)  # type: ignore[arg-type]


def test_local_mutual_tls_client_certificate(tmp_path: Path) -> None:
    from kdstream.local_cluster import LocalClusterConfig, ensure_tls_files
    from kdstream.stream._kafka_auth import kafka_ssl_context

    if not Path("/usr/bin/openssl").exists():
        pytest.skip("openssl is not installed")
    # a home made without client auth gains a client certificate, under the same CA
    ensure_tls_files(LocalClusterConfig(home=tmp_path, tls=True))
    tls = tmp_path / "tls"
    before = {p.name: p.read_bytes() for p in tls.iterdir()}
    assert "client.pem" not in before  # off: no client certificate is made
    cfg = LocalClusterConfig(home=tmp_path, tls=True, tls_client_auth=True)
    messages: list[str] = []
    ca = ensure_tls_files(cfg, messages.append)
    assert len(messages) == 1 and "client certificate" in messages[0]
    assert {p.name: p.read_bytes() for p in tls.iterdir() if p.name in before} == before
    cert, key = cfg.tls_client_cert_file, cfg.tls_client_key_file
    assert cert == tls / "client.pem" and key == tls / "client-key.pem"
    assert key.stat().st_mode & 0o077 == 0  # a private key: owner only
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # unencrypted PKCS#8
    verify = subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(ca), str(cert)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    server = subprocess.run(  # a client certificate, not a second server one
        ["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(ca), str(cert)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert server.returncode != 0
    # kdstream's client context loads the pair (kafka_ssl_certfile / kafka_ssl_keyfile)
    kafka_ssl_context(str(ca), str(cert), str(key))
    messages.clear()
    ensure_tls_files(cfg, messages.append)  # a later start reuses it
    assert messages == [] and cert.read_bytes() == (tls / "client.pem").read_bytes()
    old = cert.read_bytes()
    key.unlink()  # a lost key: a new client certificate, the same CA and server certificate
    ensure_tls_files(cfg, messages.append)
    assert len(messages) == 1 and cert.read_bytes() != old and key.exists()
    assert (tls / "ca.pem").read_bytes() == before["ca.pem"]
    assert cfg.tls_keystore.read_bytes() == before["server-keystore.pem"]
    messages.clear()
    for name in ("ca.key", "ca.pem"):  # a new CA: every certificate is made again
        (tls / name).unlink()
    ensure_tls_files(cfg, messages.append)
    assert len(messages) == 3 and cert.read_bytes() != old


def test_local_up_prints_the_client_certificate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdstream import local_cluster

    def fake_up(cfg: Any, log: Any = None) -> local_cluster.ClusterInfo:
        return local_cluster.ClusterInfo(
            kafka_url=cfg.kafka_url, redis_url=cfg.redis_url, kafka_bootstrap=cfg.kafka_bootstrap,
            kafka_pid=1, redis_pid=2, home=cfg.home, already_running=False,
            kafka_tls_bootstrap=cfg.kafka_tls_bootstrap, tls_ca_file=cfg.tls_ca_file,
            tls_client_cert_file=cfg.tls_client_cert_file,
            tls_client_key_file=cfg.tls_client_key_file,
            kafka_sasl_ssl_bootstrap=cfg.kafka_sasl_ssl_bootstrap,
        )  # fmt: skip

    monkeypatch.setattr(local_cluster, "local_up", fake_up)
    monkeypatch.setenv("KDSTREAM_LOCAL_HOME", str(tmp_path))
    monkeypatch.setenv("KDSTREAM_LOCAL_TLS", "1")
    monkeypatch.delenv("KDSTREAM_KAFKA_TLS_PORT", raising=False)
    assert cli_runtime.main(["local", "up"]) == 0
    assert "client certificate" not in capsys.readouterr().out  # TLS alone: no such line
    monkeypatch.setenv("KDSTREAM_LOCAL_TLS_CLIENT_AUTH", "1")
    assert cli_runtime.main(["local", "up"]) == 0
    out = capsys.readouterr().out
    tls = tmp_path / "tls"
    assert f"kafka (SSL, CA {tls / 'ca.pem'}): kafka://127.0.0.1:9095" in out
    assert (
        f"kafka (SSL) requires a client certificate: {tls / 'client.pem'} "
        f"(key {tls / 'client-key.pem'})"
    ) in out
    assert "SASL_SSL" not in out  # TLS without SASL users: no SASL_SSL listener
    monkeypatch.setenv("KDSTREAM_LOCAL_SASL_USERS", "kd:pw")
    monkeypatch.delenv("KDSTREAM_KAFKA_SASL_SSL_PORT", raising=False)
    assert cli_runtime.main(["local", "up"]) == 0
    out = capsys.readouterr().out
    line = f"kafka (SASL_SSL, PLAIN/SCRAM-SHA-256, CA {tls / 'ca.pem'}): kafka://127.0.0.1:9096"
    assert line in out


class _RaisingAdmin:
    """A KafkaAdminClient stand-in whose constructor fails like kafka-python does."""

    error: Exception = OSError()

    def __init__(self, **kwargs: Any) -> None:
        raise self.error


def _tls_login_error(monkeypatch: pytest.MonkeyPatch, error: Exception, **security: Any) -> str:
    import kafka

    from kdstream.stream._kafka_auth import check_kafka_login

    monkeypatch.setattr(kafka, "KafkaAdminClient", type("A", (_RaisingAdmin,), {"error": error}))
    with pytest.raises(ServiceError) as info:
        check_kafka_login("127.0.0.1:9", {"security_protocol": "SSL", **security})
    return str(info.value)


def test_login_check_names_a_tls_certificate_failure(
    monkeypatch: pytest.MonkeyPatch, pem: Path
) -> None:
    import ssl

    bad = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify")
    bad.verify_message = "self-signed certificate in certificate chain"
    message = _tls_login_error(monkeypatch, bad, ssl_cafile=str(pem))
    assert message.startswith("Kafka TLS certificate verification failed at 127.0.0.1:9")
    assert "self-signed certificate in certificate chain" in message
    assert f"not trusted by the CA file {pem} (KDSTREAM_KAFKA_SSL_CAFILE)" in message
    message = _tls_login_error(monkeypatch, bad)
    assert "not trusted by the system's CAs (no ssl_cafile set)" in message


def test_login_check_names_other_tls_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    from kafka.errors import NoBrokersAvailable

    other = ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version")
    other.reason = "TLSV1_ALERT_PROTOCOL_VERSION"
    message = _tls_login_error(monkeypatch, other)
    assert message == "Kafka TLS handshake failed at 127.0.0.1:9: TLSV1_ALERT_PROTOCOL_VERSION"
    # no TLS warning logged: an unreachable broker stays "cannot reach Kafka"
    message = _tls_login_error(monkeypatch, NoBrokersAvailable())
    assert message.startswith("cannot reach Kafka at 127.0.0.1:9 with SSL: NoBrokersAvailable")


def _alert(reason: str) -> ssl.SSLError:
    """The ssl.SSLError of a TLS alert from the peer, as kafka-python's handshake raises it."""
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()} (_ssl.c:1006)")
    error.reason = reason
    return error


@pytest.mark.parametrize(
    "reason", ["SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"]
)
def test_login_check_names_a_missing_client_certificate(
    monkeypatch: pytest.MonkeyPatch, pem: Path, reason: str
) -> None:
    # what a broker with ssl.client.auth=required answers a client without a certificate
    message = _tls_login_error(monkeypatch, _alert(reason), ssl_cafile=str(pem))
    assert message == (
        "Kafka TLS handshake failed at 127.0.0.1:9: the broker requires a client certificate "
        "and none is set (kafka_ssl_certfile / kafka_ssl_keyfile, env "
        f"KDSTREAM_KAFKA_SSL_CERTFILE / KDSTREAM_KAFKA_SSL_KEYFILE; {reason})"
    )


@pytest.mark.parametrize(
    "reason", ["SSLV3_ALERT_CERTIFICATE_UNKNOWN", "SSLV3_ALERT_BAD_CERTIFICATE"]
)
def test_login_check_names_a_rejected_client_certificate(
    monkeypatch: pytest.MonkeyPatch, pem: Path, reason: str
) -> None:
    # a certificate the broker's truststore does not verify (Java: certificate_unknown)
    message = _tls_login_error(
        monkeypatch, _alert(reason), ssl_cafile=str(pem), ssl_certfile=str(pem)
    )
    assert message.startswith(
        f"Kafka TLS handshake failed at 127.0.0.1:9: the broker rejected the client "
        f"certificate {pem} ({reason}); it must be signed by a CA the broker trusts"
    )


def test_login_check_keeps_other_alerts_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    # no client certificate and an alert about another one: no guess about client auth
    message = _tls_login_error(monkeypatch, _alert("SSLV3_ALERT_CERTIFICATE_UNKNOWN"))
    assert message == "Kafka TLS handshake failed at 127.0.0.1:9: SSLV3_ALERT_CERTIFICATE_UNKNOWN"
    message = _tls_login_error(
        monkeypatch, _alert("SSLV3_ALERT_HANDSHAKE_FAILURE"), ssl_certfile="/c.pem"
    )
    assert message == "Kafka TLS handshake failed at 127.0.0.1:9: SSLV3_ALERT_HANDSHAKE_FAILURE"


# ------------------------------------------------------------------------------ TLS version cap
def _handshake(
    tmp_path: Path, settings: Settings, server_hostname: str = "localhost"
) -> tuple[str | None, bool]:
    """A TLS handshake over a socket pair: a server offering TLS 1.2 and 1.3 that requires a
    client certificate, and a client with kafka_client_kwargs' context. Returns the version
    the client negotiated and whether the server got the client's certificate."""
    import threading

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(settings.kafka_ssl_cafile or "")
    server_ctx.load_verify_locations(settings.kafka_ssl_cafile)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    assert server_ctx.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    client_ctx = kafka_client_kwargs(settings)["ssl_context"]
    a, b = socket.socketpair()
    got: dict[str, Any] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as conn:
                got["peer"] = conn.getpeercert()
                conn.sendall(b"k")
        except (ssl.SSLError, OSError) as exc:
            got["error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_hostname) as conn:
            assert conn.recv(1) == b"k"
            version = conn.version()
    finally:
        b.close()
        thread.join(10)
        a.close()
    return version, bool(got.get("peer"))


def _mtls(tmp_path: Path, **extra: Any) -> Settings:
    both = tmp_path / "both.pem"
    both.write_text(TEST_CERT_AND_KEY)
    fields = {"kafka_security_protocol": "SSL", **extra}
    return Settings(kafka_ssl_cafile=str(both), kafka_ssl_certfile=str(both), **fields)


def test_kafka_tls_is_capped_at_1_2_by_default(tmp_path: Path) -> None:
    # kafka-python drops TLS 1.3 connections on the broker's post-handshake session ticket
    # (dpkp/kafka-python#2160, #2369): a broker offering 1.3 is spoken to in 1.2
    s = _mtls(tmp_path)
    assert s.kafka_ssl_max_tls == "1.2"
    ctx = kafka_client_kwargs(s)["ssl_context"]
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    # kafka-python's defaults kept: the certificate and the host name are checked
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] == 1  # the CA file, not the system's CAs
    assert _handshake(tmp_path, s) == ("TLSv1.2", True)


def test_kafka_tls_1_3_when_asked(tmp_path: Path) -> None:
    s = Settings.load({"kafka_security_protocol": "SSL"}, env={
        "KDSTREAM_KAFKA_SSL_MAX_TLS": "1.3",
        "KDSTREAM_KAFKA_SSL_CAFILE": str(_mtls(tmp_path).kafka_ssl_cafile),
        "KDSTREAM_KAFKA_SSL_CERTFILE": str(_mtls(tmp_path).kafka_ssl_certfile),
    })  # fmt: skip
    assert s.kafka_ssl_max_tls == "1.3"
    assert kafka_client_kwargs(s)["ssl_context"].maximum_version == ssl.TLSVersion.TLSv1_3
    assert _handshake(tmp_path, s) == ("TLSv1.3", True)


def test_kafka_tls_checks_the_host_name(tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(tmp_path, _mtls(tmp_path), server_hostname="kafka.example.com")


def test_kafka_tls_context_for_sasl_ssl_and_faust(tmp_path: Path) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from kdstream.stream._faust_app import faust_credentials

    s = _mtls(tmp_path, **{**SASL, "kafka_security_protocol": "SASL_SSL"})
    sec = kafka_client_kwargs(s)
    assert sec["ssl_context"].maximum_version == ssl.TLSVersion.TLSv1_2
    # faust (aiokafka) gets the very same context: same CA, client certificate and cap
    auth = credentials_to_aiokafka_auth(faust_credentials(sec))
    assert auth["ssl_context"] is sec["ssl_context"]
    assert auth["security_protocol"] == "SASL_SSL"
    assert "ssl_context" not in kafka_client_kwargs(Settings(**SASL))  # no TLS, no context


def test_kafka_tls_encrypted_client_key(tmp_path: Path) -> None:
    both = _mtls(tmp_path).kafka_ssl_cafile
    key = tmp_path / "enc.pem"
    key.write_text(TEST_ENCRYPTED_KEY)
    s = Settings(
        kafka_security_protocol="SSL", kafka_ssl_cafile=both, kafka_ssl_certfile=both,
        kafka_ssl_keyfile=str(key), kafka_ssl_password=TEST_KEY_PASSWORD,
    )  # fmt: skip
    assert _handshake(tmp_path, s) == ("TLSv1.2", True)
    for text in (repr(s), str(s.to_dict()), s.to_toml()):
        assert TEST_KEY_PASSWORD not in text
    # a wrong password is a ConfigError naming the files' settings, never the password
    wrong = Settings(**{**s.to_dict(secrets=True), "kafka_ssl_password": "nope-3f1c"})
    with pytest.raises(ConfigError, match="kafka_ssl_certfile / kafka_ssl_keyfile") as info:
        kafka_client_kwargs(wrong)
    assert "nope-3f1c" not in str(info.value)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"kafka_ssl_max_tls": "1.1"}, "kafka_ssl_max_tls"),
        ({"kafka_ssl_max_tls": "TLSv1.3"}, "kafka_ssl_max_tls"),
        ({"kafka_ssl_max_tls": 1.3}, "kafka_ssl_max_tls"),
        ({"kafka_ssl_password": "pw"}, "kafka_ssl_password"),
    ],
)
def test_bad_tls_settings_name_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings(**fields)
    if all(isinstance(v, str) for v in fields.values()):  # env: "1.3" is text, so fine
        env = {f"KDSTREAM_{k.upper()}": v for k, v in fields.items()}
        with pytest.raises(ConfigError, match=named):
            Settings.load(env=env)


def test_unloadable_tls_files_name_the_setting(tmp_path: Path, pem: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    bad_ca = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(junk))
    with pytest.raises(ConfigError, match="kafka_ssl_cafile: cannot load"):
        kafka_client_kwargs(bad_ca)
    bad_cert = Settings(
        kafka_security_protocol="SSL", kafka_ssl_cafile=str(pem), kafka_ssl_certfile=str(junk)
    )
    with pytest.raises(ConfigError, match="kafka_ssl_certfile: cannot load"):
        kafka_client_kwargs(bad_cert)
