"""Runtime settings: where the broker and the store are, topic names, the API, the cadence.

Sources, highest priority first:

1. explicit overrides (the CLI's flags; a ``None`` value means "flag not given"),
2. environment variables ``KDSTREAM_<FIELD>`` (e.g. ``KDSTREAM_BROKER``, ``KDSTREAM_STORE``),
   read once by :meth:`Settings.load`,
3. a TOML file: ``--config PATH`` or ``KDSTREAM_CONFIG``; flat ``key = value`` pairs named as
   the fields (unknown keys are a ConfigError naming them),
4. the defaults, which run everything in one process (``embedded://`` + ``memory://``).

Example ``kdstream.toml``::

    broker = "kafka://127.0.0.1:9092"
    store = "redis://127.0.0.1:6379/0"
    partitions = 8
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from kdstream.errors import ConfigError
from kdstream.stream import MemoryStore, Store
from kdstream.stream._kafka_auth import KAFKA_TLS_VERSIONS, kafka_ssl_context
from kdstream.stream._redis_store import RedisStore, _check_url, mask_url

ENV_PREFIX = "KDSTREAM_"
CONFIG_ENV = "KDSTREAM_CONFIG"
SECRET = "***"

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._\-]{1,249}$")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_HOST_PORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})$")
_SECRETS = frozenset(
    {"api_token", "kafka_sasl_password", "api_read_token", "kafka_ssl_password"}
)
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SASL_FIELDS = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
_SSL_FIELDS = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")


@dataclass(frozen=True)
class Settings:
    """Validated, immutable runtime settings (see the module docstring for the sources).

    Parameters
    ----------
    broker
        ``embedded://`` (in-process log) or ``kafka://host:port[,host:port...]``.
    store
        ``memory://`` or ``redis://[:password@]host[:port][/db]`` / ``rediss://...`` (TLS).
    namespace
        Prefix of the store's keys.
    events_topic, soft_labels_topic, dlq_topic
        Topic names of events, the teacher's soft labels and dead letters.
    partitions
        Partitions of the events and soft-label topics.
    group
        Consumer group of the processors.
    api_host, api_port
        Where the HTTP API listens.
    api_token
        Bearer token the API requires (None: no auth). Secret: masked in repr and dumps.
    api_read_token
        Bearer token the API's GET endpoints require, except ``/healthz`` and ``/metrics``
        (None: reads are open). Secret.
    batch_size
        Events per micro-batch.
    teacher_every_events, teacher_every_seconds
        Retrain the teacher after this many events, and/or after this many seconds.
    state_dir
        Where models and checkpoints are saved.
    kafka_security_protocol
        ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
    kafka_sasl_mechanism, kafka_sasl_username, kafka_sasl_password
        SASL login (``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``); all three are required
        with a ``SASL_*`` protocol and refused otherwise. The password is a secret.
    kafka_ssl_cafile, kafka_ssl_certfile, kafka_ssl_keyfile
        PEM files of TLS (``SSL`` / ``SASL_SSL`` only): the CA that signed the brokers'
        certificates, and the client's certificate and key for mutual TLS.
    kafka_ssl_password
        Password of an encrypted ``kafka_ssl_keyfile`` (None: the key is not encrypted).
        Secret.
    kafka_ssl_max_tls
        The highest TLS version Kafka clients offer: ``"1.2"`` (default) or ``"1.3"``.
        kafka-python (2.3.x) drops TLS 1.3 connections when the broker's post-handshake
        session ticket arrives (dpkp/kafka-python#2160, #2369), so brokers that offer 1.3
        (Kafka 2.6+ on Java 11+) are spoken to in 1.2 unless this says otherwise.
        :func:`kafka_client_kwargs` maps all of these to kafka-python's arguments.

    Examples
    --------
    >>> s = Settings.load({"store": "redis://:pw@127.0.0.1:6379/0"}, env={})
    >>> s.broker_kind(), s.store_kind()
    ('embedded', 'redis')
    >>> s.to_dict()["store"]
    'redis://:***@127.0.0.1:6379/0'
    """

    broker: str = "embedded://"
    """``embedded://`` or ``kafka://host:port[,host:port]``. Env: ``KDSTREAM_BROKER``."""
    store: str = "memory://"
    """``memory://``, ``redis://...`` or ``rediss://...``. Env: ``KDSTREAM_STORE``."""
    namespace: str = "kd"
    """Store key prefix (letters, digits, ``_ . -``). Env: ``KDSTREAM_NAMESPACE``."""
    events_topic: str = "kd.events"
    """Events topic (key = user). Env: ``KDSTREAM_EVENTS_TOPIC``."""
    soft_labels_topic: str = "kd.soft-labels"
    """Compacted soft-label topic. Env: ``KDSTREAM_SOFT_LABELS_TOPIC``."""
    dlq_topic: str = "kd.events.dlq"
    """Dead-letter topic. Env: ``KDSTREAM_DLQ_TOPIC``."""
    partitions: int = 4
    """Partitions of the events and soft-label topics (>= 1). Env: ``KDSTREAM_PARTITIONS``."""
    group: str = "kd-processor"
    """Processor consumer group. Env: ``KDSTREAM_GROUP``."""
    api_host: str = "127.0.0.1"
    """API bind address. Env: ``KDSTREAM_API_HOST``."""
    api_port: int = 8000
    """API port (1..65535). Env: ``KDSTREAM_API_PORT``."""
    api_token: str | None = None
    """API bearer token; secret. Env: ``KDSTREAM_API_TOKEN`` (empty = none)."""
    batch_size: int = 256
    """Events per micro-batch (>= 1). Env: ``KDSTREAM_BATCH_SIZE``."""
    teacher_every_events: int = 20000
    """Retrain after this many events (>= 1). Env: ``KDSTREAM_TEACHER_EVERY_EVENTS``."""
    teacher_every_seconds: float | None = None
    """Also retrain after this many seconds (> 0; None: by count only).
    Env: ``KDSTREAM_TEACHER_EVERY_SECONDS`` (empty or ``none`` = None)."""
    state_dir: str = ".kdstream/state"
    """Model and checkpoint folder. Env: ``KDSTREAM_STATE_DIR``."""
    api_read_token: str | None = None
    """API bearer token of reads; secret. Env: ``KDSTREAM_API_READ_TOKEN`` (empty = none)."""
    kafka_security_protocol: str = "PLAINTEXT"
    """Env: ``KDSTREAM_KAFKA_SECURITY_PROTOCOL``."""
    kafka_sasl_mechanism: str | None = None
    """``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``. Env: ``KDSTREAM_KAFKA_SASL_MECHANISM``."""
    kafka_sasl_username: str | None = None
    """Env: ``KDSTREAM_KAFKA_SASL_USERNAME``."""
    kafka_sasl_password: str | None = None
    """Secret. Env: ``KDSTREAM_KAFKA_SASL_PASSWORD``."""
    kafka_ssl_cafile: str | None = None
    """CA bundle (PEM) that verifies the brokers. Env: ``KDSTREAM_KAFKA_SSL_CAFILE``."""
    kafka_ssl_certfile: str | None = None
    """Client certificate (PEM, mutual TLS). Env: ``KDSTREAM_KAFKA_SSL_CERTFILE``."""
    kafka_ssl_keyfile: str | None = None
    """Client key (PEM, mutual TLS). Env: ``KDSTREAM_KAFKA_SSL_KEYFILE``."""
    kafka_ssl_password: str | None = None
    """Password of an encrypted client key; secret. Env: ``KDSTREAM_KAFKA_SSL_PASSWORD``."""
    kafka_ssl_max_tls: str = "1.2"
    """Highest TLS version of Kafka clients, ``1.2`` or ``1.3``.
    Env: ``KDSTREAM_KAFKA_SSL_MAX_TLS``."""

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name))
        if self.teacher_every_seconds is not None:
            object.__setattr__(self, "teacher_every_seconds", float(self.teacher_every_seconds))
        _check_broker(self.broker)
        _check_store(self.store)
        if not _NAMESPACE_RE.match(self.namespace):
            raise ConfigError(
                f"namespace: expected 1-64 letters, digits, '_', '.' or '-', got "
                f"{self.namespace!r}"
            )
        for name in ("events_topic", "soft_labels_topic", "dlq_topic"):
            value = getattr(self, name)
            if not _TOPIC_RE.match(value):
                raise ConfigError(
                    f"{name}: expected a Kafka topic name (1-249 letters, digits, '.', '_', "
                    f"'-'), got {value!r}"
                )
        topics = [self.events_topic, self.soft_labels_topic, self.dlq_topic]
        if len(set(topics)) != 3:
            raise ConfigError(f"events/soft-labels/dlq topics must differ, got {topics}")
        for name in ("partitions", "batch_size", "teacher_every_events"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, got {getattr(self, name)}")
        if not 1 <= self.api_port <= 65535:
            raise ConfigError(f"api_port: expected 1..65535, got {self.api_port}")
        for name in ("group", "api_host", "state_dir"):
            value = getattr(self, name)
            if not value.strip():
                raise ConfigError(f"{name}: expected a non-empty string, got {value!r}")
        for name in ("api_token", "api_read_token"):
            if getattr(self, name) == "":
                raise ConfigError(f"{name}: expected a non-empty string or None, got ''")
        _check_kafka_security(self)
        seconds = self.teacher_every_seconds
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(
                f"teacher_every_seconds: expected a number > 0 or None, got {seconds}"
            )

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        path: Path | str | None = None,
    ) -> Settings:
        """Merge overrides > env > TOML file > defaults and validate.

        Parameters
        ----------
        overrides
            Field -> value, e.g. from CLI flags; ``None`` values are ignored (flag not given).
        env
            The environment to read (default ``os.environ``, read here, once).
        path
            The TOML file; default ``KDSTREAM_CONFIG`` from ``env``; none when neither is set.
        """
        environ = os.environ if env is None else env
        names = {f.name for f in fields(cls)}
        merged: dict[str, Any] = {}
        toml_path = path if path is not None else environ.get(CONFIG_ENV) or None
        if toml_path is not None:
            merged.update(_read_toml(Path(toml_path), names))
        for name in sorted(names):
            var = ENV_PREFIX + name.upper()
            if var in environ:
                merged[name] = _from_env(name, var, environ[var])
        if overrides:
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
            merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**merged)

    # -- dumping ----------------------------------------------------------------------------

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """Field -> value; secrets (the API token, the store password) masked unless asked.

        ``Settings.load(s.to_dict(secrets=True), env={}).to_dict(secrets=True)`` equals
        ``s.to_dict(secrets=True)``.
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if not secrets:
            for name in _SECRETS:
                if out[name] is not None:
                    out[name] = SECRET
            out["store"] = mask_url(self.store)
        return out

    def to_toml(self, *, secrets: bool = False) -> str:
        """The settings as a TOML file :meth:`load` reads back (None values are left out)."""
        lines = []
        for name, value in self.to_dict(secrets=secrets).items():
            if value is None:
                continue
            # JSON string escapes are valid TOML basic-string escapes
            text = json.dumps(value) if isinstance(value, str) else repr(value)
            lines.append(f"{name} = {text}")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"Settings({body})"

    # -- helpers ----------------------------------------------------------------------------

    def broker_kind(self) -> Literal["embedded", "kafka"]:
        """``"embedded"`` or ``"kafka"``."""
        return "embedded" if self.broker.startswith("embedded://") else "kafka"

    def store_kind(self) -> Literal["memory", "redis"]:
        """``"memory"`` or ``"redis"`` (``rediss://`` included)."""
        return "memory" if self.store.startswith("memory://") else "redis"

    def kafka_bootstrap(self) -> list[str]:
        """``["host:port", ...]`` of a ``kafka://`` broker; ConfigError for ``embedded://``."""
        if self.broker_kind() != "kafka":
            raise ConfigError(f"broker: {self.broker!r} is not a kafka:// URL")
        return self.broker.removeprefix("kafka://").split(",")


def make_store(settings: Settings) -> Store:
    """The store ``settings.store`` names: a MemoryStore or a RedisStore in its namespace."""
    if settings.store_kind() == "memory":
        return MemoryStore()
    return RedisStore(settings.store, namespace=settings.namespace)


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
_INT_FIELDS = frozenset({"partitions", "api_port", "batch_size", "teacher_every_events"})
_OPTIONAL = frozenset(
    {
        "api_token", "api_read_token", "teacher_every_seconds", "kafka_ssl_password",
        *_SASL_FIELDS, *_SSL_FIELDS,
    }
)


def _check_type(name: str, value: Any) -> None:
    if value is None and name in _OPTIONAL:
        return
    if name in _INT_FIELDS:
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer"
    elif name == "teacher_every_seconds":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        expected = "a number or None"
    else:
        ok = isinstance(value, str)
        expected = "a string" + (" or None" if name in _OPTIONAL else "")
    if not ok:
        shown = SECRET if name in _SECRETS else repr(value)
        raise ConfigError(f"{name}: expected {expected}, got {shown} ({type(value).__name__})")


def _check_kafka_security(s: Settings) -> None:
    protocol = s.kafka_security_protocol
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(
            f"kafka_security_protocol: expected one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, "
            f"got {protocol!r}"
        )
    sasl = protocol.startswith("SASL_")
    for name in _SASL_FIELDS:
        value = getattr(s, name)
        if sasl and not value:
            raise ConfigError(f"{name}: required with kafka_security_protocol={protocol}")
        if not sasl and value is not None:
            raise ConfigError(
                f"{name}: only used with kafka_security_protocol SASL_PLAINTEXT or SASL_SSL, "
                f"not {protocol}"
            )
    if sasl and s.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
        raise ConfigError(
            f"kafka_sasl_mechanism: expected one of {', '.join(KAFKA_SASL_MECHANISMS)}, "
            f"got {s.kafka_sasl_mechanism!r}"
        )
    tls = protocol in ("SSL", "SASL_SSL")
    for name in _SSL_FIELDS:
        value = getattr(s, name)
        if value is None:
            continue
        if not tls:
            raise ConfigError(
                f"{name}: only used with kafka_security_protocol SSL or SASL_SSL, not {protocol}"
            )
        if not Path(value).is_file():
            raise ConfigError(f"{name}: no such file {value!r}")
    if s.kafka_ssl_keyfile is not None and s.kafka_ssl_certfile is None:
        raise ConfigError("kafka_ssl_keyfile: needs kafka_ssl_certfile (the client certificate)")
    if s.kafka_ssl_password is not None:
        if not s.kafka_ssl_password:
            raise ConfigError("kafka_ssl_password: expected a non-empty string or None, got ''")
        if s.kafka_ssl_certfile is None:
            raise ConfigError("kafka_ssl_password: needs kafka_ssl_certfile (and its key)")
    if s.kafka_ssl_max_tls not in KAFKA_TLS_VERSIONS:
        raise ConfigError(
            f"kafka_ssl_max_tls: expected one of {', '.join(repr(v) for v in KAFKA_TLS_VERSIONS)}"
            f", got {s.kafka_ssl_max_tls!r}"
        )


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """kafka-python constructor arguments of the security settings (``{}`` for PLAINTEXT).

    Every client kdstream builds (producers, consumers, the admin client) takes them as
    extra keyword arguments. The result holds the SASL password: never log it. For ``SSL`` /
    ``SASL_SSL`` it holds one ``ssl_context`` (:func:`kdstream.stream._kafka_auth.
    kafka_ssl_context`: the CA or the system's CAs, the client certificate, host name checks,
    TLS <= ``kafka_ssl_max_tls``), which kafka-python uses instead of its ``ssl_*`` file
    arguments; those stay in the result for error messages. A CA, certificate or key file
    that cannot be loaded raises ConfigError naming its setting.

    Examples
    --------
    >>> s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
    ...              kafka_sasl_username="kd", kafka_sasl_password="pw")
    >>> sorted(kafka_client_kwargs(s))
    ['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol']
    >>> kafka_client_kwargs(Settings())
    {}
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        # kafka-python names them sasl_plain_* for SCRAM too
        out["sasl_mechanism"] = settings.kafka_sasl_mechanism
        out["sasl_plain_username"] = settings.kafka_sasl_username
        out["sasl_plain_password"] = settings.kafka_sasl_password
    if protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = kafka_ssl_context(
            settings.kafka_ssl_cafile,
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
            password=settings.kafka_ssl_password,
            max_tls=settings.kafka_ssl_max_tls,
        )
    for name in _SSL_FIELDS:
        value = getattr(settings, name)
        if value is not None:
            out[name.removeprefix("kafka_")] = value
    return out


def topic_specs(settings: Settings) -> list[Any]:
    """The runtime's three topics under their configured names (``TopicSpec`` list): events
    (``partitions``), soft labels (compacted, co-partitioned) and the dead letters (one)."""
    from kdstream.stream._kafka_admin import TopicSpec

    return [
        TopicSpec(settings.events_topic, settings.partitions),
        TopicSpec(settings.soft_labels_topic, settings.partitions, compacted=True),
        TopicSpec(settings.dlq_topic, 1),
    ]


def faust_broker_credentials(settings: Settings) -> Any:
    """faust's ``broker_credentials`` for the security settings (None for PLAINTEXT).

    ``SSL`` -> ``faust.SSLCredentials``; ``SASL_*`` -> ``faust.SASLCredentials`` (with a TLS
    context for ``SASL_SSL``): the same mapping the faust engine applies to kafka-python's
    arguments, and the same TLS context (so aiokafka is held to ``kafka_ssl_max_tls`` too).
    Imports faust lazily.
    """
    from kdstream.stream._faust_app import faust_credentials

    return faust_credentials(kafka_client_kwargs(settings))


def _check_broker(broker: str) -> None:
    if broker == "embedded://":
        return
    if broker.startswith("kafka://"):
        hosts = broker.removeprefix("kafka://").split(",")
        for host in hosts:
            match = _HOST_PORT_RE.match(host)
            if match is None or not 1 <= int(match.group(2)) <= 65535:
                break
        else:
            return
    raise ConfigError(
        f"broker: expected 'embedded://' or 'kafka://host:port[,host:port]', got {broker!r}"
    )


def _check_store(store: str) -> None:
    if store == "memory://":
        return
    if store.startswith(("redis://", "rediss://")):
        try:
            _check_url(store)
        except ConfigError as exc:
            raise ConfigError(f"store: {exc}") from None
        return
    raise ConfigError(
        f"store: expected 'memory://', 'redis://[:password@]host[:port][/db]' or "
        f"'rediss://...', got {mask_url(store)!r}"
    )


def _from_env(name: str, var: str, raw: str) -> Any:
    """Convert one env var's text to the field's type (ConfigError names the variable)."""
    if name in _OPTIONAL and raw.strip().lower() in ("", "none"):
        return None
    try:
        if name in _INT_FIELDS:
            return int(raw)
        if name == "teacher_every_seconds":
            return float(raw)
    except ValueError:
        shown = SECRET if name in _SECRETS else repr(raw)
        raise ConfigError(f"{var}={shown} is not a valid {name}") from None
    return raw


def _read_toml(path: Path, names: set[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}") from exc
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"config file {str(path)!r}: unknown key(s): {', '.join(unknown)}")
    return data


__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "KAFKA_SASL_MECHANISMS",
    "KAFKA_SECURITY_PROTOCOLS",
    "Settings",
    "faust_broker_credentials",
    "kafka_client_kwargs",
    "make_store",
    "topic_specs",
]
