"""Live Kafka + Redis for the integration tests.

The session-scoped ``cluster`` fixture starts the local cluster (``kdstream.local_cluster``) on
free ports under a temporary home, sharing the Kafka jar cache with ``kdstream local up``, and
stops and wipes it after the session. To test against servers that are already running, set
``KDSTREAM_TEST_KAFKA=host:port`` and ``KDSTREAM_TEST_REDIS=redis://host:port``.

Under ``CI=true`` or ``KDSTREAM_REQUIRE_SERVICES=1`` a cluster that cannot start fails the
tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from kdstream.errors import KdstreamError
from kdstream.local_cluster import (
    ClusterInfo,
    LocalClusterConfig,
    local_down,
    local_up,
    services_required,
)


def _free_ports(n: int) -> list[int]:
    # Bind them all at once so the n ports differ; another process could still take one
    # before the servers bind it, which start_* reports as "port taken".
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass(frozen=True)
class LiveCluster:
    """Where the live services answer; ``config`` is None for servers we did not start."""

    kafka_bootstrap: str
    redis_url: str
    config: LocalClusterConfig | None


@contextmanager
def local_cluster(cfg: LocalClusterConfig, what: str) -> Iterator[ClusterInfo]:
    """``local_up(cfg)`` for a test session, wiped after; a cluster that does not start fails
    the tests under CI (``services_required``) and skips them elsewhere."""
    try:
        info = local_up(cfg)
    except KdstreamError as exc:
        local_down(cfg)
        message = f"{what} did not start: {exc}"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield info
    finally:
        local_down(cfg, wipe=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCluster]:
    kafka, redis = os.environ.get("KDSTREAM_TEST_KAFKA"), os.environ.get("KDSTREAM_TEST_REDIS")
    if kafka and redis:
        yield LiveCluster(kafka.removeprefix("kafka://"), redis, None)
        return
    kafka_port, controller_port, redis_port = _free_ports(3)
    cfg = LocalClusterConfig.from_env(
        home=tmp_path_factory.mktemp("kdstream-local"),
        kafka_port=kafka_port,
        controller_port=controller_port,
        redis_port=redis_port,
    )
    with local_cluster(cfg, "local Kafka/Redis") as info:
        yield LiveCluster(info.kafka_bootstrap, info.redis_url, cfg)


@pytest.fixture
def kafka_bootstrap(cluster: LiveCluster) -> str:
    return cluster.kafka_bootstrap


@pytest.fixture
def redis_url(cluster: LiveCluster) -> str:
    return cluster.redis_url


@pytest.fixture
def unique_prefix() -> str:
    """A topic prefix and Redis key namespace no other test (or run) uses."""
    return f"t{uuid.uuid4().hex[:12]}"
