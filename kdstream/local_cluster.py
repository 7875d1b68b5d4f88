"""A local single-node Kafka (KRaft) and Redis, started without Docker.

Run it with ``kdstream local up`` / ``kdstream local status`` / ``kdstream local down [--wipe]``,
or from Python::

    from kdstream.local_cluster import LocalClusterConfig, local_up, local_down
    info = local_up(LocalClusterConfig.from_env())
    print(info.kafka_url, info.redis_url)
    local_down(LocalClusterConfig.from_env())

``up`` resolves the pinned Apache Kafka release and its runtime dependencies from Maven Central
with ``mvn`` into a cache shared by every checkout (``~/.cache/kdstream/kafka-<version>``, once;
later starts never touch the network), formats KRaft storage, starts one combined
broker+controller JVM on 127.0.0.1 and a ``redis-server``, each detached in its own process
group with a pid file and a log file under ``home``, and waits until both answer.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdstream.errors import ConfigError, ServiceError

#: Newest Kafka 4.x (KRaft only) that Maven Central serves; the broker needs Java 17+.
KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
#: Kafka 4.x logs through slf4j 1.7 -> log4j2; pin the binding to the log4j-core Kafka pulls in.
LOG4J_VERSION = "2.25.5"

_MARKER = ".kdstream-local"
_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]$")
_LogFn = Callable[[str], None]


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kdstream"


@dataclass(frozen=True)
class LocalClusterConfig:
    """Where and how the local Kafka + Redis run.

    Parameters
    ----------
    home
        Data folder for everything the cluster writes (Kafka log dirs, Redis dir, logs, pid
        files). ``down --wipe`` deletes it. Env: ``KDSTREAM_LOCAL_HOME``.
    kafka_port
        Kafka client listener on 127.0.0.1. Env: ``KDSTREAM_KAFKA_PORT``.
    controller_port
        KRaft controller listener on 127.0.0.1. Env: ``KDSTREAM_KAFKA_CONTROLLER_PORT``.
    redis_port
        Redis port on 127.0.0.1. Env: ``KDSTREAM_REDIS_PORT``.
    kafka_version
        Apache Kafka release resolved from Maven Central (4.x, KRaft only).
    heap
        JVM maximum heap of the broker, e.g. ``"512m"``.
    cache_dir
        Jar cache shared by all checkouts (not deleted by ``--wipe``).
        Env: ``KDSTREAM_CACHE_DIR``; default ``$XDG_CACHE_HOME/kdstream`` or ``~/.cache/kdstream``.
    start_timeout_s
        How long ``up`` waits for each service to answer.
    sasl_users
        ``{username: password}``: also open a ``SASL_PLAINTEXT`` client listener on
        ``sasl_port`` that accepts these users with ``PLAIN`` and ``SCRAM-SHA-256`` (None, the
        default: no SASL listener). The PLAINTEXT listener and inter-broker traffic stay as they
        are. SCRAM users are written when the storage is formatted, so a user added to an
        existing ``home`` logs in with ``PLAIN`` only. Secret: left out of ``repr``.
        Env: ``KDSTREAM_LOCAL_SASL_USERS=user:password[,user:password]``.
    sasl_port
        The SASL listener's port on 127.0.0.1 (used only with ``sasl_users``).
        Env: ``KDSTREAM_KAFKA_SASL_PORT``.
    tls
        Also open an ``SSL`` (TLS) client listener on ``tls_port``, without client
        certificates unless ``tls_client_auth``. ``up`` creates a private CA and a server
        certificate for ``127.0.0.1`` / ``localhost`` under ``home/tls`` with ``openssl`` once
        and reuses them; clients verify the broker with ``tls_ca_file``.
        Env: ``KDSTREAM_LOCAL_TLS=1``.
    tls_port
        The TLS listener's port on 127.0.0.1 (used only with ``tls``).
        Env: ``KDSTREAM_KAFKA_TLS_PORT``.
    tls_client_auth
        Mutual TLS: the SSL listener requires a client certificate signed by the local CA
        (``ssl.client.auth=required``, the CA as a PEM truststore). ``up`` also creates one
        such certificate, ``tls_client_cert_file`` with its key ``tls_client_key_file``, for
        clients' ``KDSTREAM_KAFKA_SSL_CERTFILE`` / ``KDSTREAM_KAFKA_SSL_KEYFILE``. Needs
        ``tls``. Env: ``KDSTREAM_LOCAL_TLS_CLIENT_AUTH=1``.
    sasl_ssl_port
        With both ``sasl_users`` and ``tls``: a ``SASL_SSL`` listener (SASL over TLS, the usual
        setup of managed Kafka services) on this port of 127.0.0.1, with the SASL listener's
        users and mechanisms and the TLS listener's certificate; SASL authenticates the
        client, so it asks for no client certificate. Env: ``KDSTREAM_KAFKA_SASL_SSL_PORT``.

    Examples
    --------
    >>> cfg = LocalClusterConfig(kafka_port=19092, controller_port=19093, redis_port=16379)
    >>> cfg.kafka_bootstrap, cfg.redis_url
    ('127.0.0.1:19092', 'redis://127.0.0.1:16379')
    """

    home: Path = Path(".kdstream/local")
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    kafka_version: str = KAFKA_VERSION
    heap: str = "512m"
    cache_dir: Path = field(default_factory=_default_cache_dir)
    start_timeout_s: float = 90.0
    sasl_users: Mapping[str, str] | None = field(default=None, repr=False)
    sasl_port: int = 9094
    tls: bool = False
    tls_port: int = 9095
    tls_client_auth: bool = False
    sasl_ssl_port: int = 9096

    def __post_init__(self) -> None:
        ports = {
            "kafka_port": self.kafka_port,
            "controller_port": self.controller_port,
            "redis_port": self.redis_port,
        }
        if self.sasl_users is not None:
            ports["sasl_port"] = self.sasl_port
            _check_sasl_users(self.sasl_users)
            object.__setattr__(self, "sasl_users", dict(self.sasl_users))
        if not isinstance(self.tls, bool):
            raise ConfigError(f"tls must be a bool, got {self.tls!r}")
        if self.tls:
            ports["tls_port"] = self.tls_port
            if self.sasl_users is not None:
                ports["sasl_ssl_port"] = self.sasl_ssl_port
        if not isinstance(self.tls_client_auth, bool):
            raise ConfigError(f"tls_client_auth must be a bool, got {self.tls_client_auth!r}")
        if self.tls_client_auth and not self.tls:
            raise ConfigError(
                "tls_client_auth needs the TLS listener: set tls=True (KDSTREAM_LOCAL_TLS=1)"
            )
        for name, port in ports.items():
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError(f"{name} must be an int in 1..65535, got {port!r}")
        if len(set(ports.values())) != len(ports):
            raise ConfigError(f"ports must be distinct, got {ports}")
        if not _HEAP_RE.match(self.heap):
            raise ConfigError(f"heap must look like '512m' or '1g', got {self.heap!r}")
        if not re.fullmatch(r"4\.\d+\.\d+", self.kafka_version):
            raise ConfigError(f"kafka_version must be a 4.x release, got {self.kafka_version!r}")
        if self.start_timeout_s <= 0:
            raise ConfigError(f"start_timeout_s must be > 0, got {self.start_timeout_s!r}")
        # absolute: services are started with the home as their working directory, so a
        # relative home would put their logs and data one level too deep (or nowhere)
        object.__setattr__(self, "home", Path(self.home).expanduser().absolute())
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> LocalClusterConfig:
        """Build a config from ``KDSTREAM_*`` env vars (read once, here), then ``overrides``."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        for var, key, conv in (
            ("KDSTREAM_LOCAL_HOME", "home", Path),
            ("KDSTREAM_KAFKA_PORT", "kafka_port", int),
            ("KDSTREAM_KAFKA_CONTROLLER_PORT", "controller_port", int),
            ("KDSTREAM_REDIS_PORT", "redis_port", int),
            ("KDSTREAM_CACHE_DIR", "cache_dir", Path),
            ("KDSTREAM_KAFKA_SASL_PORT", "sasl_port", int),
            ("KDSTREAM_LOCAL_SASL_USERS", "sasl_users", _parse_sasl_users),
            ("KDSTREAM_LOCAL_TLS", "tls", _parse_bool),
            ("KDSTREAM_KAFKA_TLS_PORT", "tls_port", int),
            ("KDSTREAM_LOCAL_TLS_CLIENT_AUTH", "tls_client_auth", _parse_bool),
            ("KDSTREAM_KAFKA_SASL_SSL_PORT", "sasl_ssl_port", int),
        ):
            raw = env.get(var)
            if raw:
                try:
                    kwargs[key] = conv(raw)
                except ValueError:
                    shown = "***" if key == "sasl_users" else repr(raw)  # holds passwords
                    raise ConfigError(f"{var}={shown} is not a valid {key}") from None
        kwargs.update(overrides)
        return cls(**kwargs)

    # Derived locations --------------------------------------------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def kafka_url(self) -> str:
        return f"kafka://{self.kafka_bootstrap}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}"

    @property
    def kafka_sasl_bootstrap(self) -> str | None:
        """``127.0.0.1:<sasl_port>`` when ``sasl_users`` is set, else None."""
        return f"127.0.0.1:{self.sasl_port}" if self.sasl_users is not None else None

    @property
    def kafka_tls_bootstrap(self) -> str | None:
        """``127.0.0.1:<tls_port>`` when ``tls`` is on, else None."""
        return f"127.0.0.1:{self.tls_port}" if self.tls else None

    @property
    def kafka_sasl_ssl_bootstrap(self) -> str | None:
        """``127.0.0.1:<sasl_ssl_port>`` with both ``sasl_users`` and ``tls``, else None."""
        on = self.tls and self.sasl_users is not None
        return f"127.0.0.1:{self.sasl_ssl_port}" if on else None

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def tls_ca_file(self) -> Path | None:
        """The CA certificate (PEM) that verifies the TLS listener, when ``tls`` is on."""
        return self.tls_dir / "ca.pem" if self.tls else None

    @property
    def tls_client_cert_file(self) -> Path | None:
        """A client certificate (PEM) the listener accepts, when ``tls_client_auth`` is on."""
        return self.tls_dir / "client.pem" if self.tls_client_auth else None

    @property
    def tls_client_key_file(self) -> Path | None:
        """The unencrypted key of ``tls_client_cert_file``, when ``tls_client_auth`` is on."""
        return self.tls_dir / "client-key.pem" if self.tls_client_auth else None

    @property
    def tls_keystore(self) -> Path:
        """The broker's PEM keystore: its PKCS#8 key, then its certificate and the CA's."""
        return self.tls_dir / "server-keystore.pem"

    @property
    def jar_dir(self) -> Path:
        return self.cache_dir / f"kafka-{self.kafka_version}" / "libs"

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    @property
    def kafka_log(self) -> Path:
        return self.home / "kafka.log"

    @property
    def redis_log(self) -> Path:
        return self.home / "redis.log"


@dataclass(frozen=True)
class ClusterInfo:
    """What ``local_up`` started (or found running).

    Parameters
    ----------
    kafka_url, redis_url
        ``kafka://127.0.0.1:<port>`` and ``redis://127.0.0.1:<port>``.
    kafka_bootstrap
        ``host:port`` for kafka-python's ``bootstrap_servers``.
    kafka_pid, redis_pid
        Process ids of the broker JVM and of redis-server.
    home
        The data folder.
    already_running
        True when both services were up and healthy before the call.
    kafka_sasl_bootstrap
        ``host:port`` of the SASL_PLAINTEXT listener (None without ``sasl_users``).
    kafka_tls_bootstrap
        ``host:port`` of the SSL listener (None without ``tls``).
    tls_ca_file
        The CA certificate clients pass as ``KDSTREAM_KAFKA_SSL_CAFILE`` (None without ``tls``).
    tls_client_cert_file, tls_client_key_file
        The client certificate and key clients pass as ``KDSTREAM_KAFKA_SSL_CERTFILE`` /
        ``KDSTREAM_KAFKA_SSL_KEYFILE`` (None without ``tls_client_auth``).
    kafka_sasl_ssl_bootstrap
        ``host:port`` of the SASL_SSL listener (None unless both SASL and TLS are on).
    """

    kafka_url: str
    redis_url: str
    kafka_bootstrap: str
    kafka_pid: int
    redis_pid: int
    home: Path
    already_running: bool
    kafka_sasl_bootstrap: str | None = None
    kafka_tls_bootstrap: str | None = None
    tls_ca_file: Path | None = None
    tls_client_cert_file: Path | None = None
    tls_client_key_file: Path | None = None
    kafka_sasl_ssl_bootstrap: str | None = None


_SASL_USER_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _check_sasl_users(users: Mapping[str, str]) -> None:
    if not users:
        raise ConfigError("sasl_users: expected at least one user, or None for no SASL listener")
    for user, password in users.items():
        # they go into a JAAS line and a kafka-storage --add-scram argument: no quoting games
        if not isinstance(user, str) or not _SASL_USER_RE.match(user):
            raise ConfigError(
                f"sasl_users: user names are 1-64 letters, digits, '_', '.', '-'; got {user!r}"
            )
        if (
            not isinstance(password, str)
            or not password
            or any(c in password for c in '"\\,[]=;')
            or not password.isprintable()
        ):
            raise ConfigError(
                f"sasl_users: the password of {user!r} must be non-empty printable text "
                "without quotes, backslashes, ',', '[', ']', '=' or ';'"
            )


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _parse_sasl_users(raw: str) -> dict[str, str]:
    """``user:password[,user:password]`` -> ``{user: password}`` (ValueError when malformed)."""
    users = {}
    for part in raw.split(","):
        user, sep, password = part.strip().partition(":")
        if not sep:
            raise ValueError("expected user:password")
        users[user] = password
    return users


# --------------------------------------------------------------------------------------------
# Jar resolution
# --------------------------------------------------------------------------------------------
def _pom(kafka_version: str) -> str:
    # Generated rather than shipped as a resource so that a non-editable install needs no
    # package data; the versions above are the single place they are pinned.
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.kdstream.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka_version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{kafka_version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
      <scope>runtime</scope>
    </dependency>
  </dependencies>
</project>
"""


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Two test sessions or CLIs may resolve or start at once; serialise them.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_kafka_jars(cfg: LocalClusterConfig, log: _LogFn | None = None) -> Path:
    """Resolve Kafka's runtime jars into the cache once; return the folder of jars."""
    jar_dir = cfg.jar_dir
    root = jar_dir.parent
    done = root / ".complete"
    if done.exists():
        return jar_dir
    with _file_lock(root.parent / f".kafka-{cfg.kafka_version}.lock"):
        if done.exists():
            return jar_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError(
                "Maven (`mvn`) is needed once to fetch Kafka's jars; install it with "
                "`apt-get install -y maven`"
            )
        if log:
            log(f"resolving Apache Kafka {cfg.kafka_version} with mvn into {root} (once)")
        root.mkdir(parents=True, exist_ok=True)
        if jar_dir.exists():
            shutil.rmtree(jar_dir)  # a half-copied folder from an interrupted run
        (root / "pom.xml").write_text(_pom(cfg.kafka_version))
        cmd = [
            mvn, "-B", "-q", "-f", str(root / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={jar_dir}", "-DincludeScope=runtime",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0 or not any(jar_dir.glob(f"kafka_{SCALA_VERSION}-*.jar")):
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise ServiceError(f"mvn could not resolve Kafka {cfg.kafka_version}:\n{tail}")
        done.write_text(cfg.kafka_version + "\n")
    return jar_dir


# --------------------------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _spawn_detached(cmd: list[str], log_file: Path, cwd: Path) -> int:
    """Start ``cmd`` in a new session, outliving us; return its pid.

    A throwaway ``sh`` backgrounds the command and exits, so the service is re-parented
    and never becomes our zombie, and no ``Popen`` object is left to warn on collection.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as fh:
        fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
    script = 'log="$1"; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'
    out = subprocess.run(
        ["sh", "-c", script, "sh", str(log_file), *cmd],
        cwd=cwd, capture_output=True, text=True, check=True, start_new_session=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _log_tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _terminate(pid_file: Path, *, kill: bool, timeout: float) -> bool:
    """SIGTERM (or SIGKILL) the process group recorded in ``pid_file``; True if one ran."""
    pid = _read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    # Never signal our own group (a stale pid file must not take the caller down).
    target_group = pgid != os.getpgrp()

    def _send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if target_group:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)

    _send(signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        _send(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------------------------
# Health checks
# --------------------------------------------------------------------------------------------
def redis_ping(port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def kafka_ready(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when the broker answers a metadata request and lists itself as a live broker."""
    if not _port_open(int(bootstrap.rsplit(":", 1)[1])):
        return False
    from kafka import KafkaAdminClient  # lazy: kafka-python is only needed here
    from kafka.errors import KafkaError

    ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="kdstream-local-probe",
            request_timeout_ms=ms,
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        admin.close()


# --------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------
def _server_properties(cfg: LocalClusterConfig) -> str:
    k, c = cfg.kafka_port, cfg.controller_port
    data = (cfg.kafka_dir / "data").resolve()
    listeners = f"PLAINTEXT://127.0.0.1:{k},CONTROLLER://127.0.0.1:{c}"
    advertised = f"PLAINTEXT://127.0.0.1:{k}"
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    # the optional client listeners, each named after its security protocol
    for protocol, bootstrap in (
        ("SASL_PLAINTEXT", cfg.kafka_sasl_bootstrap),
        ("SSL", cfg.kafka_tls_bootstrap),
        ("SASL_SSL", cfg.kafka_sasl_ssl_bootstrap),
    ):
        if bootstrap is not None:
            listeners += f",{protocol}://{bootstrap}"
            advertised += f",{protocol}://{bootstrap}"
            protocols += f",{protocol}:{protocol}"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static voter set: the quorum is read from this file at every start, so changing
        # the controller port needs no reformat (the dynamic quorum stores the endpoint).
        "controller.quorum.voters": f"1@127.0.0.1:{c}",
        "listeners": listeners,
        "advertised.listeners": advertised,
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": protocols,
        "log.dirs": str(data),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": "1",
        # 50 internal partitions make the first consumer group slow to start on 2 cores.
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    sasl_ssl = cfg.kafka_sasl_ssl_bootstrap is not None
    if cfg.sasl_users is not None:
        props.update(_sasl_properties("sasl_plaintext", cfg.sasl_users))
        if sasl_ssl:
            props.update(_sasl_properties("sasl_ssl", cfg.sasl_users))
    if cfg.tls:
        # Kafka reads a PEM keystore file (KIP-651) holding the key and the chain; the key is
        # unencrypted PKCS#8, so neither ssl.keystore.password (refused with PEM) nor
        # ssl.key.password (required to be unset for an unencrypted key since KAFKA-12703) is
        # set. Client certificates only with tls_client_auth; inter-broker stays PLAINTEXT.
        # TLS 1.2 and 1.3, as a real broker (Kafka 2.6+ on Java 11+) offers by default: under
        # TLS 1.3 the JVM sends its session ticket after the handshake, and kafka-python
        # (2.3.x) closes a connection that turns readable with no request in flight ("Socket
        # EVENT_READ without in-flight-requests"; dpkp/kafka-python#2160, #2369). kdstream's
        # clients cap TLS at 1.2 for that (kafka_ssl_max_tls), which this listener proves.
        props.update(_tls_properties("ssl", cfg))
        if sasl_ssl:
            props.update(_tls_properties("sasl_ssl", cfg))
    if cfg.tls_client_auth and cfg.tls_ca_file is not None:
        # the CA file itself is the truststore: a PEM truststore (KIP-651) takes no password
        props.update({
            "listener.name.ssl.ssl.client.auth": "required",
            "listener.name.ssl.ssl.truststore.type": "PEM",
            "listener.name.ssl.ssl.truststore.location": str(cfg.tls_ca_file.resolve()),
        })  # fmt: skip
    return "".join(f"{key}={value}\n" for key, value in props.items())


def _sasl_properties(listener: str, users: Mapping[str, str]) -> dict[str, str]:
    """Per-listener JAAS: only SASL listeners authenticate. PLAIN checks these
    user_<name>="<password>" entries, SCRAM the credentials `format --add-scram` stored."""
    plain = " ".join(f'user_{u}="{p}"' for u, p in sorted(users.items()))
    return {
        f"listener.name.{listener}.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256",
        f"listener.name.{listener}.plain.sasl.jaas.config":
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain};",
        f"listener.name.{listener}.scram-sha-256.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    }  # fmt: skip


def _tls_properties(listener: str, cfg: LocalClusterConfig) -> dict[str, str]:
    """The server side of TLS on one listener: the PEM keystore, TLS 1.2 and 1.3."""
    return {
        f"listener.name.{listener}.ssl.keystore.type": "PEM",
        f"listener.name.{listener}.ssl.keystore.location": str(cfg.tls_keystore.resolve()),
        f"listener.name.{listener}.ssl.protocol": "TLSv1.3",
        f"listener.name.{listener}.ssl.enabled.protocols": "TLSv1.2,TLSv1.3",
    }


# --------------------------------------------------------------------------------------------
# TLS: a private CA and a server certificate for the SSL listener
# --------------------------------------------------------------------------------------------
#: Extensions a strict verifier (Python 3.13's VERIFY_X509_STRICT among them) asks for.
_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = kdstream
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""
_CA_DAYS = 3650
_SERVER_DAYS = 825  # the longest lifetime clients such as Apple's accept for a server cert


#: Where Debian puts it, for a PATH without /usr/bin (a stripped service environment).
_OPENSSL_FALLBACK = Path("/usr/bin/openssl")


def _openssl() -> str:
    found = shutil.which("openssl") or (
        str(_OPENSSL_FALLBACK) if _OPENSSL_FALLBACK.exists() else None
    )
    if found is None:
        raise ServiceError(
            "the TLS listener needs the `openssl` command to create its certificates; install "
            "it with `apt-get install -y openssl`, or start without KDSTREAM_LOCAL_TLS"
        )
    return found


def _run_openssl(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [_openssl(), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise ServiceError(f"openssl {args[0]} failed while creating TLS files in {cwd}:\n{tail}")
    return proc


def _new_key(path: Path, cwd: Path) -> None:
    # EC P-256, written as unencrypted PKCS#8 ("BEGIN PRIVATE KEY"), the form Kafka's PEM
    # keystore reads without ssl.key.password
    path.unlink(missing_ok=True)
    _run_openssl(
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", path.name],
        cwd,
    )  # fmt: skip
    path.chmod(0o600)


def _cert_valid_for(path: Path, seconds: int) -> bool:
    if not path.exists():
        return False
    proc = subprocess.run(
        [_openssl(), "x509", "-noout", "-checkend", str(seconds), "-in", str(path)],
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    return proc.returncode == 0


def _issue_cert(d: Path, cnf: Path, key: Path, pem: Path, subject: str, extensions: str) -> None:
    """A new key and a certificate for it signed by the CA in ``d`` (``ca.pem``/``ca.key``)."""
    _new_key(key, d)
    csr = d / f"{pem.stem}.csr"
    _run_openssl(
        ["req", "-new", "-key", key.name, "-subj", subject, "-config", cnf.name,
         "-out", csr.name],
        d,
    )  # fmt: skip
    _run_openssl(
        ["x509", "-req", "-in", csr.name, "-CA", "ca.pem", "-CAkey", "ca.key",
         "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-sha256",
         "-days", str(_SERVER_DAYS), "-extfile", cnf.name, "-extensions", extensions,
         "-out", pem.name],
        d,
    )  # fmt: skip
    csr.unlink(missing_ok=True)


def ensure_tls_files(cfg: LocalClusterConfig, log: _LogFn | None = None) -> Path:
    """Create the local CA and the broker's certificate under ``cfg.tls_dir`` unless they exist.

    Files: ``ca.key``/``ca.pem`` (the CA, 10 years), ``server.key``/``server.pem`` (for
    ``IP:127.0.0.1`` and ``DNS:localhost``, 825 days, renewed when it has less than a day
    left) and ``server-keystore.pem`` (the key, then the chain: Kafka's PEM keystore). With
    ``tls_client_auth`` also ``client-key.pem``/``client.pem``, a client certificate
    (``extendedKeyUsage=clientAuth``, 825 days, renewed like the server's). Keys and the
    keystore are readable by the owner only. Returns the CA certificate's path.
    """
    d = cfg.tls_dir
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    d.chmod(0o700)  # the keys never sit in a folder others can list, even for a moment
    cnf = d / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)
    ca_key, ca_pem = d / "ca.key", d / "ca.pem"
    server_key, server_pem = d / "server.key", d / "server.pem"
    keystore = cfg.tls_keystore
    renew_server = not (keystore.exists() and _cert_valid_for(server_pem, 86_400))
    client_key, client_pem = cfg.tls_client_key_file, cfg.tls_client_cert_file
    renew_client = (
        client_key is not None
        and client_pem is not None
        and not (client_key.exists() and _cert_valid_for(client_pem, 86_400))
    )
    if not (ca_key.exists() and _cert_valid_for(ca_pem, 86_400)):
        if log:
            log(f"creating a local TLS CA in {d} (once)")
        _new_key(ca_key, d)
        _run_openssl(
            ["req", "-x509", "-new", "-key", ca_key.name, "-sha256", "-days", str(_CA_DAYS),
             "-subj", "/CN=kdstream local CA", "-config", cnf.name, "-extensions", "ca",
             "-out", ca_pem.name],
            d,
        )  # fmt: skip
        # a new CA: the old certificates no longer chain to it
        renew_server = True
        renew_client = client_key is not None
    if renew_server:
        if log:
            log(f"creating the broker's TLS certificate for 127.0.0.1/localhost in {d}")
        _issue_cert(d, cnf, server_key, server_pem, "/CN=localhost", "server")
        tmp = keystore.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        tmp.touch(mode=0o600)
        tmp.write_text(server_key.read_text() + server_pem.read_text() + ca_pem.read_text())
        tmp.replace(keystore)  # whole or absent: a later start never reads half a keystore
    if renew_client and client_key is not None and client_pem is not None:
        if log:
            log(f"creating a TLS client certificate for mutual TLS in {d}")
        # no old certificate beside a new key: an interrupted renewal is redone at next start
        client_pem.unlink(missing_ok=True)
        _issue_cert(d, cnf, client_key, client_pem, "/CN=kdstream local client", "client")
    return ca_pem


_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            "Java 17+ is needed for Kafka 4.x; install it with "
            "`apt-get install -y openjdk-17-jre-headless`"
        )
    return java


def _kafka_cmd(cfg: LocalClusterConfig, jar_dir: Path, main: list[str]) -> list[str]:
    return [
        _java(),
        f"-Xmx{cfg.heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={(cfg.kafka_dir / 'log4j2.properties').resolve()}",
        "-cp",
        str(jar_dir.resolve() / "*"),
        *main,
    ]


def services_required() -> bool:
    """Whether a local Kafka/Redis that cannot start must fail the tests that need it rather
    than skip them: under ``CI=true`` and with ``KDSTREAM_REQUIRE_SERVICES=1`` (``make test``)."""
    return (
        os.environ.get("CI", "").lower() == "true"
        or os.environ.get("KDSTREAM_REQUIRE_SERVICES") == "1"
    )


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid`` it never starts with ``-``, which the
    storage tool's argument parser would read as an option (1 draw in 64).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(cfg: LocalClusterConfig, jar_dir: Path, props: Path) -> None:
    data = cfg.kafka_dir / "data"
    if (data / "meta.properties").exists():
        return
    cmd = _kafka_cmd(cfg, jar_dir, ["kafka.tools.StorageTool", "format"])
    cmd += [f"--cluster-id={new_cluster_id()}", "-c", str(props.resolve())]
    for user, password in sorted((cfg.sasl_users or {}).items()):
        cmd += ["--add-scram", f"SCRAM-SHA-256=[name={user},password={password}]"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        for password in (cfg.sasl_users or {}).values():
            tail = tail.replace(password, "***")
        raise ServiceError(f"formatting KRaft storage failed:\n{tail}")


def start_kafka(cfg: LocalClusterConfig, log: _LogFn | None = None) -> int:
    """Start the broker if it is not running and wait until it answers; return its pid."""
    pid_file = cfg.home / "kafka.pid"
    pid = _read_pid(pid_file)
    if pid is None:
        ports = [cfg.kafka_port, cfg.controller_port]
        if cfg.sasl_users is not None:
            ports.append(cfg.sasl_port)
        if cfg.tls:
            ports.append(cfg.tls_port)
        for port in ports:
            if _port_open(port):
                raise ServiceError(
                    f"port {port} on 127.0.0.1 is taken by another process; pick other ports "
                    "(KDSTREAM_KAFKA_PORT, KDSTREAM_KAFKA_CONTROLLER_PORT)"
                )
        jar_dir = ensure_kafka_jars(cfg, log)
        if cfg.tls:
            ensure_tls_files(cfg, log)
        cfg.kafka_dir.mkdir(parents=True, exist_ok=True)
        props = cfg.kafka_dir / "server.properties"
        # it may hold SASL passwords: readable by the owner only, from the first byte
        props.touch(mode=0o600)
        props.chmod(0o600)
        props.write_text(_server_properties(cfg))
        (cfg.kafka_dir / "log4j2.properties").write_text(_LOG4J2)
        _format_storage(cfg, jar_dir, props)
        if log:
            log(f"starting Kafka {cfg.kafka_version} on {cfg.kafka_bootstrap}")
        pid = _spawn_detached(
            _kafka_cmd(cfg, jar_dir, ["kafka.Kafka", str(props.resolve())]),
            cfg.kafka_log,
            cfg.home,
        )
        pid_file.write_text(f"{pid}\n")
    deadline = time.monotonic() + cfg.start_timeout_s
    while not kafka_ready(cfg.kafka_bootstrap, timeout=2.0):
        if not _pid_alive(pid):
            pid_file.unlink(missing_ok=True)
            raise ServiceError(
                f"Kafka exited during start; see {cfg.kafka_log}:\n{_log_tail(cfg.kafka_log)}"
            )
        if time.monotonic() > deadline:
            raise ServiceError(
                f"Kafka did not answer on {cfg.kafka_bootstrap} within {cfg.start_timeout_s:.0f}s;"
                f" see {cfg.kafka_log}:\n{_log_tail(cfg.kafka_log)}"
            )
        time.sleep(0.3)
    return pid


def stop_kafka(cfg: LocalClusterConfig, *, kill: bool = False, timeout: float = 30.0) -> bool:
    """Stop the broker (SIGTERM, SIGKILL after ``timeout``; ``kill=True`` SIGKILLs at once)."""
    return _terminate(cfg.home / "kafka.pid", kill=kill, timeout=timeout)


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------
def _redis_server(log: _LogFn | None = None) -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    cmd = "apt-get install -y redis-server"
    if os.geteuid() != 0:
        raise ServiceError(f"redis-server is not installed; run `sudo {cmd}` and retry")
    if log:
        log("redis-server missing: installing Debian's redis-server package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"]
    proc = subprocess.run(apt, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:  # the package lists may be missing or stale
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        proc = subprocess.run(apt, capture_output=True, text=True, env=env, check=False)
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if proc.returncode != 0 or found is None:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise ServiceError(f"could not install redis-server (`{cmd}` failed):\n{tail}")
    return found


def start_redis(cfg: LocalClusterConfig, log: _LogFn | None = None) -> int:
    """Start redis-server if it is not running and wait until it answers PING; return its pid."""
    pid_file = cfg.home / "redis.pid"
    pid = _read_pid(pid_file)
    if pid is None:
        if _port_open(cfg.redis_port):
            raise ServiceError(
                f"port {cfg.redis_port} on 127.0.0.1 is taken by another process; "
                "pick another with KDSTREAM_REDIS_PORT"
            )
        server = _redis_server(log)
        cfg.redis_dir.mkdir(parents=True, exist_ok=True)
        if log:
            log(f"starting redis-server on 127.0.0.1:{cfg.redis_port}")
        cmd = [
            server, "--bind", "127.0.0.1", "--port", str(cfg.redis_port),
            "--dir", str(cfg.redis_dir.resolve()), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip
        pid = _spawn_detached(cmd, cfg.redis_log, cfg.home)
        pid_file.write_text(f"{pid}\n")
    deadline = time.monotonic() + cfg.start_timeout_s
    while not redis_ping(cfg.redis_port):
        if not _pid_alive(pid):
            pid_file.unlink(missing_ok=True)
            tail = _log_tail(cfg.redis_log)
            raise ServiceError(f"redis-server exited during start; see {cfg.redis_log}:\n{tail}")
        if time.monotonic() > deadline:
            raise ServiceError(
                f"Redis did not answer on port {cfg.redis_port} within {cfg.start_timeout_s:.0f}s;"
                f" see {cfg.redis_log}"
            )
        time.sleep(0.1)
    return pid


def stop_redis(cfg: LocalClusterConfig, *, kill: bool = False, timeout: float = 10.0) -> bool:
    """Stop redis-server (SIGTERM, SIGKILL after ``timeout``)."""
    return _terminate(cfg.home / "redis.pid", kill=kill, timeout=timeout)


# --------------------------------------------------------------------------------------------
# Public entry points (called by the CLI)
# --------------------------------------------------------------------------------------------
def _mark_home(cfg: LocalClusterConfig) -> None:
    cfg.home.mkdir(parents=True, exist_ok=True)
    marker = cfg.home / _MARKER
    if not marker.exists():
        marker.write_text("created by kdstream local up; `kdstream local down --wipe` deletes\n")


def local_up(cfg: LocalClusterConfig, log: _LogFn | None = None) -> ClusterInfo:
    """Start (or find running) Kafka and Redis and wait until both answer.

    Idempotent: services already running and healthy are only reported. Raises
    ``ServiceError`` with the log file's tail when a service does not come up.
    """
    _mark_home(cfg)
    with _file_lock(cfg.home / ".lock"):
        was_up = (
            _read_pid(cfg.home / "kafka.pid") is not None
            and _read_pid(cfg.home / "redis.pid") is not None
        )
        redis_pid = start_redis(cfg, log)
        kafka_pid = start_kafka(cfg, log)
    return ClusterInfo(
        kafka_url=cfg.kafka_url,
        redis_url=cfg.redis_url,
        kafka_bootstrap=cfg.kafka_bootstrap,
        kafka_pid=kafka_pid,
        redis_pid=redis_pid,
        home=cfg.home,
        already_running=was_up,
        kafka_sasl_bootstrap=cfg.kafka_sasl_bootstrap,
        kafka_tls_bootstrap=cfg.kafka_tls_bootstrap,
        tls_ca_file=cfg.tls_ca_file,
        tls_client_cert_file=cfg.tls_client_cert_file,
        tls_client_key_file=cfg.tls_client_key_file,
        kafka_sasl_ssl_bootstrap=cfg.kafka_sasl_ssl_bootstrap,
    )


def local_down(cfg: LocalClusterConfig, wipe: bool = False) -> dict[str, bool]:
    """Stop both services; with ``wipe`` also delete ``home`` (never the jar cache).

    Returns which services were running.
    """
    stopped = {"kafka": stop_kafka(cfg), "redis": stop_redis(cfg)}
    if wipe and cfg.home.exists():
        if not (cfg.home / _MARKER).exists():
            raise ServiceError(
                f"refusing to delete {cfg.home}: it was not created by `kdstream local up`"
            )
        shutil.rmtree(cfg.home)
    return stopped


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _kafka_url_or_none(bootstrap: str | None) -> str | None:
    return None if bootstrap is None else f"kafka://{bootstrap}"


def local_status(cfg: LocalClusterConfig) -> dict[str, Any]:
    """Whether each service's process is alive and answering, with pids, URLs, logs and RSS."""
    kafka_pid = _read_pid(cfg.home / "kafka.pid")
    redis_pid = _read_pid(cfg.home / "redis.pid")
    return {
        "home": str(cfg.home),
        "kafka": {
            "url": cfg.kafka_url,
            "sasl_url": _kafka_url_or_none(cfg.kafka_sasl_bootstrap),
            "tls_url": _kafka_url_or_none(cfg.kafka_tls_bootstrap),
            "sasl_ssl_url": _kafka_url_or_none(cfg.kafka_sasl_ssl_bootstrap),
            "tls_ca_file": str(cfg.tls_ca_file) if cfg.tls_ca_file else None,
            "tls_client_cert_file": _str_or_none(cfg.tls_client_cert_file),
            "tls_client_key_file": _str_or_none(cfg.tls_client_key_file),
            "pid": kafka_pid,
            "alive": kafka_pid is not None,
            "answering": kafka_ready(cfg.kafka_bootstrap, timeout=2.0),
            "rss_kib": _rss_kib(kafka_pid) if kafka_pid else None,
            "log": str(cfg.kafka_log),
            "version": cfg.kafka_version,
        },
        "redis": {
            "url": cfg.redis_url,
            "pid": redis_pid,
            "alive": redis_pid is not None,
            "answering": redis_ping(cfg.redis_port),
            "rss_kib": _rss_kib(redis_pid) if redis_pid else None,
            "log": str(cfg.redis_log),
        },
    }


__all__ = [
    "KAFKA_VERSION",
    "ClusterInfo",
    "LocalClusterConfig",
    "ensure_kafka_jars",
    "ensure_tls_files",
    "kafka_ready",
    "local_down",
    "local_status",
    "local_up",
    "redis_ping",
    "start_kafka",
    "start_redis",
    "stop_kafka",
    "stop_redis",
]
