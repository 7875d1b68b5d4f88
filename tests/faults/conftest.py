"""A local Kafka + Redis owned by the fault tests (they stop and restart it).

Not the integration suite's shared cluster: a broker or Redis restarted here must not disturb
other tests. Under ``CI=true`` or ``KDSTREAM_REQUIRE_SERVICES=1`` a cluster that cannot start
fails the tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdstream.local_cluster import services_required

from .scenarios import FaultCluster, kill_all, start_cluster, stop_cluster


@pytest.fixture(scope="session")
def fault_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultCluster]:
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("kdstream-faults"))
    except Exception as exc:
        message = f"local Kafka/Redis for the fault tests did not start: {exc}"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
def prefix() -> str:
    return f"f{uuid.uuid4().hex[:12]}"


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(autouse=True)
def _quiet_numpy_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _no_processor_left() -> Iterator[None]:
    yield
    kill_all()
