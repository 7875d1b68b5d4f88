"""Fixtures shared by the unit and integration suites."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdstream.local_cluster import services_required


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def password_redis_url(password_redis: int, redis_password: str) -> str:
    """``redis://`` URL, with the password, of the :func:`password_redis` server."""
    return f"redis://:{redis_password}@127.0.0.1:{password_redis}/0"


@pytest.fixture
def password_redis(tmp_path: Path, redis_password: str) -> Iterator[int]:
    """A throwaway ``redis-server --requirepass <redis_password>`` on a free port; yields the
    port. Modules that use it define the ``redis_password`` fixture."""
    server = shutil.which("redis-server")
    if server is None:
        # under make test / CI the cluster fixture installs it (tests/integration runs first):
        # missing here is a broken setup, never a skip
        if services_required():
            pytest.fail("redis-server is not installed (make test installs it with the cluster)")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--requirepass", redis_password,
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server --requirepass did not start on {port}")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
