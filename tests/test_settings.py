"""Settings: precedence (overrides > env > TOML > defaults), validation, round trips, secrets."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdstream.errors import ConfigError
from kdstream.settings import CONFIG_ENV, Settings, make_store
from kdstream.stream import MemoryStore
from kdstream.stream._redis_store import RedisStore


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kdstream.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_embedded_runtime() -> None:
    s = Settings.load(env={})
    assert s == Settings()
    assert (s.broker, s.store, s.namespace) == ("embedded://", "memory://", "kd")
    assert (s.events_topic, s.soft_labels_topic, s.dlq_topic) == (
        "kd.events", "kd.soft-labels", "kd.events.dlq"
    )
    assert (s.partitions, s.group, s.api_host, s.api_port) == (4, "kd-processor", "127.0.0.1", 8000)
    assert (s.api_token, s.batch_size, s.teacher_every_events) == (None, 256, 20000)
    assert (s.teacher_every_seconds, s.state_dir) == (None, ".kdstream/state")
    assert (s.broker_kind(), s.store_kind()) == ("embedded", "memory")


def test_every_field_is_documented_in_the_class_docstring() -> None:
    doc = Settings.__doc__ or ""
    for f in fields(Settings):
        assert f.name in doc, f.name


def test_precedence_overrides_env_toml_defaults(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'broker = "kafka://toml:9092"\nstore = "redis://toml:6379"\n'
                           'partitions = 8\nbatch_size = 64\n')
    env = {"KDSTREAM_STORE": "redis://env:6379/1", "KDSTREAM_PARTITIONS": "6",
           CONFIG_ENV: str(path)}
    s = Settings.load({"partitions": 2, "group": None}, env=env)
    assert s.partitions == 2  # override beats env and TOML
    assert s.store == "redis://env:6379/1"  # env beats TOML
    assert s.broker == "kafka://toml:9092"  # TOML beats the default
    assert s.batch_size == 64
    assert s.group == "kd-processor"  # a None override means "flag not given"
    assert s.kafka_bootstrap() == ["toml:9092"]


def test_explicit_path_beats_config_env(tmp_path: Path) -> None:
    a = _toml(tmp_path, "partitions = 3\n")
    b = tmp_path / "other.toml"
    b.write_text("partitions = 5\n")
    assert Settings.load(env={CONFIG_ENV: str(a)}).partitions == 3
    assert Settings.load(env={CONFIG_ENV: str(a)}, path=b).partitions == 5


def test_env_conversions() -> None:
    env = {
        "KDSTREAM_BROKER": "kafka://a:1,b:2",
        "KDSTREAM_API_PORT": "9000",
        "KDSTREAM_TEACHER_EVERY_SECONDS": "2.5",
        "KDSTREAM_API_TOKEN": "tok",
        "KDSTREAM_UNRELATED_THING": "ignored",  # other components own other KDSTREAM_* vars
    }
    s = Settings.load(env=env)
    assert s.kafka_bootstrap() == ["a:1", "b:2"]
    assert s.broker_kind() == "kafka"
    assert s.api_port == 9000 and s.teacher_every_seconds == 2.5 and s.api_token == "tok"
    s = Settings.load(env={"KDSTREAM_TEACHER_EVERY_SECONDS": "none", "KDSTREAM_API_TOKEN": ""})
    assert s.teacher_every_seconds is None and s.api_token is None


@pytest.mark.parametrize(
    ("var", "value"),
    [("KDSTREAM_PARTITIONS", "four"), ("KDSTREAM_API_PORT", "80.5"),
     ("KDSTREAM_TEACHER_EVERY_SECONDS", "soon")],
)
def test_bad_env_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        Settings.load(env={var: value})


def test_toml_unknown_keys_are_rejected_by_name(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'broker = "embedded://"\nbrokr = "x"\n[extra]\na = 1\n')
    with pytest.raises(ConfigError, match="brokr, extra"):
        Settings.load(env={}, path=path)


def test_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(env={}, path=tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"kdstream\.toml"):
        Settings.load(env={}, path=_toml(tmp_path, "partitions = = 3\n"))
    with pytest.raises(ConfigError, match="partitions: expected an integer"):
        Settings.load(env={}, path=_toml(tmp_path, 'partitions = "3"\n'))


def test_unknown_overrides_are_rejected() -> None:
    with pytest.raises(ConfigError, match="stor"):
        Settings.load({"stor": "memory://"}, env={})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("broker", "kafka:/localhost:9092"),
        ("broker", "kafka://localhost"),
        ("broker", "kafka://a:1,"),
        ("broker", "kafka://a:70000"),
        ("broker", "pulsar://a:1"),
        ("broker", "embedded://x"),
        ("store", "memcached://h:1"),
        ("store", "redis://"),
        ("store", "redis://h:1/zero"),
        ("store", "memory"),
        ("namespace", "a:b"),
        ("namespace", ""),
        ("events_topic", "has space"),
        ("dlq_topic", "kd.events"),
        ("partitions", 0),
        ("partitions", True),
        ("partitions", 2.0),
        ("api_port", 70000),
        ("batch_size", 0),
        ("teacher_every_events", -1),
        ("teacher_every_seconds", 0),
        ("teacher_every_seconds", float("inf")),
        ("group", " "),
        ("api_token", ""),
        ("state_dir", 3),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field.split("_topic")[0]):
        Settings.load({field: value}, env={})


def test_bad_scheme_message_shows_the_value_but_not_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(store="redis://:hunter2@h:1/x")
    assert "store" in str(info.value) and "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        Settings(store="http://:hunter2@h:1")
    assert "http://" in str(info.value) and "hunter2" not in str(info.value)


def test_valid_urls() -> None:
    for store in ("redis://127.0.0.1:6379/0", "rediss://:pw@redis.example:6380/2",
                  "redis://user:pw@h", "redis://[::1]:6379"):
        assert Settings(store=store).store_kind() == "redis"
    assert Settings(broker="kafka://[::1]:9092,k2:9093").kafka_bootstrap() == [
        "[::1]:9092", "k2:9093"
    ]
    with pytest.raises(ConfigError, match="kafka"):
        Settings().kafka_bootstrap()


def test_frozen() -> None:
    s = Settings()
    with pytest.raises(FrozenInstanceError):
        s.partitions = 9  # type: ignore[misc]


def test_secrets_are_masked_in_repr_and_dumps() -> None:
    s = Settings(api_token="tok-123", store="redis://:hunter2@127.0.0.1:6379/0")
    for text in (repr(s), str(s), str(s.to_dict()), s.to_toml()):
        assert "tok-123" not in text and "hunter2" not in text
    assert s.to_dict()["api_token"] == "***"
    assert s.to_dict()["store"] == "redis://:***@127.0.0.1:6379/0"
    revealed = s.to_dict(secrets=True)
    assert revealed["api_token"] == "tok-123" and "hunter2" in revealed["store"]
    with pytest.raises(ConfigError) as info:
        Settings(api_token=123)  # type: ignore[arg-type]
    assert "123" not in str(info.value)


_values = {
    "broker": st.sampled_from(["embedded://", "kafka://127.0.0.1:9092", "kafka://a:1,b-2.x:65535"]),
    "store": st.sampled_from(["memory://", "redis://h:6379/0", "rediss://:p%40ss@h:1/3"]),
    "namespace": st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True),
    "partitions": st.integers(1, 64),
    "api_port": st.integers(1, 65535),
    "api_token": st.none() | st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    "teacher_every_seconds": st.none() | st.floats(1e-3, 1e6),
    "state_dir": st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(
        lambda t: bool(t.strip())
    ),
}


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({}, optional=_values))
def test_round_trip_dict_and_toml(values: dict[str, object]) -> None:
    s = Settings(**values)  # type: ignore[arg-type]
    dumped = s.to_dict(secrets=True)
    again = Settings.load(dumped, env={})
    assert again == s and again.to_dict(secrets=True) == dumped
    # masked dumps are stable too (dump -> load -> dump)
    masked = s.to_dict()
    assert Settings.load(masked, env={}).to_dict() == masked


def test_toml_round_trip(tmp_path: Path) -> None:
    s = Settings(broker="kafka://k:9092", store="redis://:p\"w@h:1/0", api_token='a"b\\c',
                 teacher_every_seconds=30.0, partitions=7)
    path = _toml(tmp_path, s.to_toml(secrets=True))
    again = Settings.load(env={}, path=path)
    assert again == s
    assert again.to_toml(secrets=True) == s.to_toml(secrets=True)


def test_make_store() -> None:
    assert isinstance(make_store(Settings()), MemoryStore)
    store = make_store(Settings(store="redis://:pw@127.0.0.1:1/0", namespace="abc"))
    assert isinstance(store, RedisStore)  # connects lazily: nothing answers on port 1
    assert store.namespace == "abc" and "pw" not in repr(store)


def test_importing_settings_imports_neither_torch_nor_redis() -> None:
    code = (
        "import sys, kdstream.settings as s; s.Settings.load(env={}); "
        "print(sorted(m for m in ('torch', 'redis') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
