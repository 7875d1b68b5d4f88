"""Helpers shared by the tests of RedisStore's item refresher and popularity cache.

Imported as a top-level module (pytest puts tests/ on ``sys.path``); its name does not match
``test_*.py``, so pytest does not collect it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.connection

#: name prefix of RedisStore's item refresher thread
REFRESH_THREAD = "kdstream-item-refresh-"


class Calls:
    """Redis commands sent, by the thread that sent them (every command, pipelines and Lua
    scripts included, goes through ``Connection.send_packed_command``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.main = 0
        self.refresher = 0
        original = redis.connection.AbstractConnection.send_packed_command
        calls = self

        def counted(conn: Any, *args: Any, **kwargs: Any) -> Any:
            if threading.current_thread().name.startswith(REFRESH_THREAD):
                calls.refresher += 1
            else:
                calls.main += 1
            return original(conn, *args, **kwargs)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)


def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0) -> float:
    """Seconds until ``cond()``; fails after ``timeout_s``."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout_s, "condition not met in time"
        time.sleep(0.005)
    return time.monotonic() - start
