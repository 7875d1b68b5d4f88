"""Kafka topics for kdstream, created idempotently with kafka-python's admin client.

Run it with ``kdstream topics create`` / ``kdstream topics describe``, or::

    from kdstream.stream._kafka_admin import create_topics, default_topics
    create_topics("127.0.0.1:9092", default_topics(partitions=4))
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kdstream.errors import ConfigError, ServiceError

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: Kafka's DescribeConfigs ``config_source`` for a per-topic override (vs. broker defaults).
_SOURCE_TOPIC_OVERRIDE = 1


def bootstrap_servers(url: str) -> str:
    """``kafka://h1:p1,h2:p2`` (or a bare ``h:p`` list) -> ``h1:p1,h2:p2`` for kafka-python.

    Examples
    --------
    >>> bootstrap_servers("kafka://127.0.0.1:9092")
    '127.0.0.1:9092'
    >>> bootstrap_servers("a:1,b:2")
    'a:1,b:2'
    """
    servers = url.removeprefix("kafka://").strip().rstrip("/")
    for server in servers.split(","):
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"Kafka bootstrap must be host:port[,host:port], got {url!r}")
    return servers


@dataclass(frozen=True)
class TopicSpec:
    """One topic kdstream needs.

    Parameters
    ----------
    name
        Topic name (Kafka's legal characters ``[A-Za-z0-9._-]``, at most 249).
    partitions
        Number of partitions (>= 1).
    compacted
        When True the topic gets ``cleanup.policy=compact`` (the latest value per key is kept).
    config
        Further topic configs, e.g. ``{"retention.ms": "86400000"}``.
    replication_factor
        Replicas per partition (1 on the local single-node cluster).

    Examples
    --------
    >>> TopicSpec("kd.soft-labels", 4, compacted=True).configs()["cleanup.policy"]
    'compact'
    """

    name: str
    partitions: int
    compacted: bool = False
    config: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = 1

    def __post_init__(self) -> None:
        if not _TOPIC_RE.match(self.name) or self.name in {".", ".."}:
            raise ConfigError(f"illegal Kafka topic name {self.name!r}")
        if not isinstance(self.partitions, int) or self.partitions < 1:
            raise ConfigError(f"partitions of {self.name!r} must be >= 1, got {self.partitions!r}")
        if not isinstance(self.replication_factor, int) or self.replication_factor < 1:
            raise ConfigError(
                f"replication_factor of {self.name!r} must be >= 1, got {self.replication_factor!r}"
            )
        object.__setattr__(self, "config", MappingProxyType({**self.config}))

    def configs(self) -> dict[str, str]:
        """Topic configs to create with (``cleanup.policy`` set from ``compacted``)."""
        out = {str(k): str(v) for k, v in self.config.items()}
        if self.compacted:
            out["cleanup.policy"] = "compact"
        return out


def default_topics(prefix: str = "kd", partitions: int = 4) -> list[TopicSpec]:
    """The three topics of the distributed runtime.

    ``<prefix>.events`` (key = user), ``<prefix>.soft-labels`` (compacted, key = user, the same
    partition count so that a user's events and soft labels are co-partitioned) and
    ``<prefix>.events.dlq`` (one partition: dead letters are rare and read in order).

    Examples
    --------
    >>> [(t.name, t.partitions, t.compacted) for t in default_topics(partitions=2)]
    [('kd.events', 2, False), ('kd.soft-labels', 2, True), ('kd.events.dlq', 1, False)]
    """
    return [
        TopicSpec(f"{prefix}.events", partitions),
        TopicSpec(f"{prefix}.soft-labels", partitions, compacted=True),
        TopicSpec(f"{prefix}.events.dlq", 1),
    ]


@dataclass(frozen=True)
class TopicResult:
    """Outcome of creating one topic: ``created`` or already there, and any mismatch found."""

    name: str
    created: bool
    partitions: int
    mismatches: tuple[str, ...] = ()


@contextlib.contextmanager
def _admin(
    bootstrap: str, timeout_s: float, security: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    from kafka import KafkaAdminClient  # lazy: importing kdstream.stream needs no broker client
    from kafka.errors import KafkaError

    ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers(bootstrap),
            client_id="kdstream-admin",
            request_timeout_ms=ms,
            **(security or {}),
        )
    except KafkaError as exc:
        raise ServiceError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        yield admin
    except KafkaError as exc:
        raise ServiceError(f"Kafka admin request to {bootstrap} failed: {exc}") from exc
    finally:
        admin.close()


def _entries(resource: Any) -> list[tuple[str, str | None, int]]:
    """(name, value, source) of a DescribeConfigs resource, across kafka-python versions."""
    out = []
    for entry in resource["config_entries"]:
        name = entry.get("config_name", entry.get("config_names"))
        out.append((str(name), entry.get("config_value"), int(entry.get("config_source", -1))))
    return out


def _source(value: object) -> int:
    if isinstance(value, str):
        return _SOURCE_TOPIC_OVERRIDE if value == "DYNAMIC_TOPIC_CONFIG" else -1
    return int(value) if isinstance(value, int) else -1


def _describe(admin: Any, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    from kafka.admin import ConfigResource, ConfigResourceType

    # kafka-python 2.x names fields "topic"/"leader"/"replicas", 3.x "name"/"leader_id"/...
    meta = {t.get("topic", t.get("name")): t for t in admin.describe_topics(list(names))}
    found = [n for n in names if n in meta and meta[n]["error_code"] == 0]
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name not in found:
            out[name] = {"exists": False}
    if not found:
        return out
    responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in found])
    configs: dict[str, list[tuple[str, str | None, int]]] = {}
    if isinstance(responses, dict):  # kafka-python 3.x: {"topic": {name: {key: {...}}}}
        for name, entries in responses.get("topic", {}).items():
            configs[name] = [
                (key, e.get("value"), _source(e.get("config_source"))) for key, e in entries.items()
            ]
        responses = []
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                raise ServiceError(
                    f"describe_configs({resource['resource_name']!r}) failed: "
                    f"error {resource['error_code']} {resource.get('error_message')}"
                )
            configs[resource["resource_name"]] = _entries(resource)
    for name in found:
        entries = configs.get(name, [])
        partitions = meta[name]["partitions"]
        out[name] = {
            "exists": True,
            "partitions": len(partitions),
            "replication_factor": max(
                (len(p.get("replicas", p.get("replica_nodes", []))) for p in partitions), default=0
            ),
            "leaders_known": all(p.get("leader", p.get("leader_id", -1)) >= 0 for p in partitions),
            "configs": {k: v for k, v, _ in entries},
            "overrides": {k: v for k, v, src in entries if src == _SOURCE_TOPIC_OVERRIDE},
        }
    return out


def _wait_described(admin: Any, name: str, timeout_s: float) -> dict[str, Any]:
    """Describe one topic, waiting while the broker's metadata cache has not caught up yet
    (a topic that was just created, by us or a concurrent caller, may not be listed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        have = _describe(admin, [name])[name]
        ready = have["exists"] and have["partitions"] > 0 and have["leaders_known"]
        if ready or time.monotonic() > deadline:
            return have
        time.sleep(0.1)


def describe_topics(
    bootstrap: str,
    names: Sequence[str],
    *,
    timeout_s: float = 10.0,
    security: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Describe topics: ``{name: {"exists", "partitions", "replication_factor",
    "leaders_known", "configs", "overrides"}}`` (only ``exists: False`` for a missing topic).

    ``configs`` holds every effective topic config; ``overrides`` only those set on the topic.
    ``security``: extra ``KafkaAdminClient`` arguments (SASL/TLS, see
    ``kdstream.settings.kafka_client_kwargs``).
    """
    with _admin(bootstrap, timeout_s, security) as admin:
        return _describe(admin, names)


def create_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    *,
    strict: bool = True,
    timeout_s: float = 30.0,
    security: Mapping[str, Any] | None = None,
) -> list[TopicResult]:
    """Create each topic unless it exists; check existing ones against their spec.

    An existing topic with another partition count or other configs is reported in its
    ``TopicResult.mismatches``; with ``strict`` (the default) any mismatch raises
    ``ServiceError`` naming them all (Kafka cannot shrink partitions, and growing them would
    move keys between partitions, so kdstream never alters a topic behind your back).
    ``security``: extra ``KafkaAdminClient`` arguments (SASL/TLS).
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    results: list[TopicResult] = []
    with _admin(bootstrap, timeout_s, security) as admin:
        for spec in specs:
            # One request per topic: kafka-python raises on the first error of a batch, which
            # would hide whether the other topics of the batch were created.
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            spec.partitions,
                            spec.replication_factor,
                            topic_configs=spec.configs(),
                        )
                    ],
                    timeout_ms=int(timeout_s * 1000),
                )
            except TopicAlreadyExistsError:
                pass
            else:
                # Return once producers can use it: the metadata cache lags the controller.
                _wait_described(admin, spec.name, timeout_s)
                results.append(TopicResult(spec.name, True, spec.partitions))
                continue
            have = _wait_described(admin, spec.name, timeout_s)
            mismatches = []
            n_have = have.get("partitions")
            if n_have != spec.partitions:
                mismatches.append(f"{spec.name}: {n_have} partitions, spec wants {spec.partitions}")
            for key, want in spec.configs().items():
                got = have.get("configs", {}).get(key)
                if got != want:
                    mismatches.append(f"{spec.name}: {key}={got!r}, spec wants {want!r}")
            results.append(
                TopicResult(spec.name, False, int(have.get("partitions", 0)), tuple(mismatches))
            )
    problems = [m for r in results for m in r.mismatches]
    if strict and problems:
        raise ServiceError("existing topics differ from their specs: " + "; ".join(problems))
    return results


def delete_topics(
    bootstrap: str,
    names: Sequence[str],
    *,
    timeout_s: float = 30.0,
    security: Mapping[str, Any] | None = None,
) -> None:
    """Delete topics (missing ones are ignored); for tests and ``local down``-style cleanup."""
    from kafka.errors import UnknownTopicOrPartitionError

    with _admin(bootstrap, timeout_s, security) as admin:
        for name in names:
            with contextlib.suppress(UnknownTopicOrPartitionError):
                admin.delete_topics([name], timeout_ms=int(timeout_s * 1000))


__all__ = [
    "TopicResult",
    "TopicSpec",
    "bootstrap_servers",
    "create_topics",
    "default_topics",
    "delete_topics",
    "describe_topics",
]
