"""RedisStore's background item refresher (``start_item_refresh``) against a throwaway
redis-server (``password_redis``, tests/conftest.py; skipped where none is installed): partial
item rows reach readers without a request, requests make no Redis call for the table, a
failing or stuck refresher neither dies nor serves past its staleness bound,
``kdstream api --store redis://...`` starts and stops it, and the API's ``/metrics``,
``/healthz`` and ``/v1/stats`` (and the dashboard) report it (degraded past its bound), and say
nothing of it without one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from _redis_calls import REFRESH_THREAD, Calls, wait_until
from test_dashboard import _browser, _dump, _free_port, _number

from kdstream.api import StoreServingService, create_app
from kdstream.cli import main
from kdstream.errors import ConfigError, ServiceError
from kdstream.stream import MemoryStore, StoreBatch
from kdstream.stream._redis_store import RedisStore

REDIS_PW = "refresh-test-pw"
N, D = 50, 4


@pytest.fixture
def redis_password() -> str:
    """The password of the ``password_redis`` server (tests/conftest.py)."""
    return REDIS_PW


@pytest.fixture
def stores(password_redis_url: str) -> Iterator[tuple[RedisStore, RedisStore]]:
    """``(writer, reader)`` on one namespace; the writer holds a whole table of N items."""
    writer = RedisStore(password_redis_url, namespace="r")
    reader = RedisStore(password_redis_url, namespace="r")
    rng = np.random.default_rng(0)
    writer.write_batch(StoreBatch(
        item_ids=[f"i{j}" for j in range(N)],
        item_vectors=rng.normal(size=(N, D)).astype(np.float32),
        item_bias=rng.normal(size=N).astype(np.float32),
    ))
    try:
        yield writer, reader
    finally:
        reader.close()
        writer.close()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    return Calls(monkeypatch)


def _rows(rows: list[int], value: float) -> StoreBatch:
    k = len(rows)
    return StoreBatch(item_rows=np.array(rows), item_row_vectors=np.full((k, D), value),
                      item_row_bias=np.full(k, value, np.float32))


def _started(store: RedisStore) -> None:
    wait_until(lambda: store.item_refresh_status()["age_s"] is not None)


def _has(store: RedisStore, rows: list[int], value: float) -> bool:
    _, vectors, bias = store.item_table_shared()
    return bool(np.all(vectors[rows] == value) and np.all(bias[rows] == value))


def _flaky(store: RedisStore, mode: dict[str, Any]) -> None:
    """Make the refresher thread's checks (only its: requests keep the real path) raise
    ``mode["raise"]`` or block on ``mode["block"]`` while set."""
    real = store._table

    def table() -> Any:
        if threading.current_thread().name.startswith(REFRESH_THREAD):
            if mode.get("block") is not None:
                mode["block"].wait()
            if mode.get("raise") is not None:
                raise mode["raise"]
        return real()

    store._table = table  # type: ignore[method-assign]


def test_partial_rows_reach_readers_without_a_request(
    stores: tuple[RedisStore, RedisStore], calls: Calls
) -> None:
    writer, reader = stores
    reader.start_item_refresh(every_s=0.02, max_age_s=60.0)  # no inline fallback by a stall
    _started(reader)
    old_ids, old_vec, old_bias = reader.item_table_shared()
    kept = old_vec.copy(), old_bias.copy()
    writer.write_batch(_rows([3, 40], 7.0))
    written = calls.main  # the write's commands; every check below is the refresher's
    assert wait_until(lambda: _has(reader, [3, 40], 7.0)) < 2.0
    assert calls.main == written
    # the snapshot handed out before the refresh is unchanged (the refresh built new arrays)
    np.testing.assert_array_equal(old_vec, kept[0])
    np.testing.assert_array_equal(old_bias, kept[1])
    assert len(old_ids) == N and not old_vec.flags.writeable
    # and an inline reader sees the same table
    other = RedisStore(writer._url, namespace="r")
    try:
        ids, vectors, bias = other.item_table()
        assert ids == reader.item_table()[0]
        np.testing.assert_array_equal(vectors, reader.item_table_shared()[1])
        np.testing.assert_array_equal(bias, reader.item_table_shared()[2])
    finally:
        other.close()


def test_requests_make_no_redis_call_for_the_table(
    stores: tuple[RedisStore, RedisStore], calls: Calls
) -> None:
    _, reader = stores
    reader.item_table_shared()
    assert calls.main > 0  # the counter counts: without the refresher a request reads Redis
    reader.start_item_refresh(every_s=0.01, max_age_s=60.0)
    _started(reader)
    calls.main = calls.refresher = 0
    for _ in range(50):
        ids, vectors, _bias = reader.item_table_shared()
        assert reader.item_table()[0] == ids and len(vectors) == N
        assert reader.item_indices(["i7", "nope"]).tolist() == [7, -1]
        time.sleep(0.002)
    assert calls.main == 0
    assert calls.refresher > 0  # the version checks went on meanwhile


def test_a_request_reads_its_user_in_one_round_trip(
    stores: tuple[RedisStore, RedisStore], calls: Calls
) -> None:
    """With the refresher holding the table, a served request is one Redis round trip (its
    user's vector, seen items and last event time and the versions, pipelined; five separate
    reads before), with the answer the separate reads give."""
    from kdstream.stream import top_k_from_store, user_view

    writer, reader = stores
    rng = np.random.default_rng(1)
    writer.write_batch(StoreBatch(
        user_vectors={"u": rng.normal(size=D).astype(np.float32)},
        seen={"u": ["i3", "i9"]}, last_event_ts={"u": 123.5}, versions={"student": 4, "teacher": 2},
    ))  # fmt: skip
    reader.start_item_refresh(every_s=0.01, max_age_s=60.0)
    _started(reader)
    service = StoreServingService(reader)
    view = user_view(reader, "u")
    assert view.seen == reader.seen("u") == {"i3", "i9"} and view.last_event_ts == 123.5
    np.testing.assert_array_equal(view.vector, reader.user_vector("u"))
    assert view.versions == reader.versions() and view.versions["student"] == 4
    calls.main = 0
    rec = service.recommend("u", 5)
    assert calls.main == 1
    ids, scores = top_k_from_store(reader, "u", 5)
    assert rec.items == ids and rec.scores == [float(x) for x in scores]
    assert not set(rec.items) & {"i3", "i9"} and not rec.cold_start
    assert (rec.student_version, rec.teacher_version, rec.last_event_ts) == (4, 2, 123.5)
    cold = service.recommend("nobody", 5)
    assert cold.cold_start and cold.last_event_ts is None and len(cold.items) == 5


def test_a_failing_refresher_keeps_serving_and_recovers(
    stores: tuple[RedisStore, RedisStore], calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    writer, reader = stores
    mode: dict[str, Any] = {}
    _flaky(reader, mode)
    reader.start_item_refresh(every_s=0.01, max_age_s=60.0)
    _started(reader)
    caplog.set_level(logging.WARNING, logger="kdstream.stream._redis_store")
    mode["raise"] = ServiceError("Redis went away")
    wait_until(lambda: reader.item_refresh_status()["errors"] >= 2)
    mode["raise"] = RuntimeError("a bug")  # not only our own errors
    wait_until(lambda: reader.item_refresh_status()["errors"] >= 3)
    writer.write_batch(_rows([5], -3.0))
    calls.main = 0
    # the last snapshot (within max_age_s) is served meanwhile, without a Redis call
    assert not _has(reader, [5], -3.0) and calls.main == 0
    assert reader.item_refresh_status()["running"]
    mode["raise"] = None
    wait_until(lambda: _has(reader, [5], -3.0), timeout_s=10.0)  # after a backoff of <= 5 s
    assert calls.main == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("item refresh failed" in m and "Redis went away" in m for m in messages)
    assert any("a bug" in m for m in messages)
    assert any("recovered" in m for m in messages)
    bug = next(r for r in caplog.records if "a bug" in r.getMessage())
    assert bug.exc_info is not None  # an unexpected error logs its traceback


def test_a_stale_background_table_falls_back_to_the_inline_path(
    stores: tuple[RedisStore, RedisStore], calls: Calls
) -> None:
    writer, reader = stores
    mode: dict[str, Any] = {}
    _flaky(reader, mode)
    reader.start_item_refresh(every_s=0.01, max_age_s=60.0)
    _started(reader)
    mode["block"] = threading.Event()  # the refresher hangs in its next check
    time.sleep(0.05)
    writer.write_batch(_rows([9], 4.0))
    calls.main = 0
    assert not _has(reader, [9], 4.0) and calls.main == 0  # within the bound: the snapshot
    checked_at, table = reader._served  # type: ignore[misc]
    reader._served = (checked_at - 61.0, table)  # past the bound
    assert _has(reader, [9], 4.0) and calls.main > 0  # read inline, of now
    mode["block"].set()
    reader.stop_item_refresh(timeout_s=5.0)
    assert not reader.item_refresh_status()["running"]


def test_the_default_bound_is_ten_periods(stores: tuple[RedisStore, RedisStore]) -> None:
    _, reader = stores
    reader.start_item_refresh(every_s=0.05)
    assert reader.item_refresh_status()["max_age_s"] == pytest.approx(0.5)


def test_stop_is_clean_and_requests_go_back_inline(
    stores: tuple[RedisStore, RedisStore], calls: Calls
) -> None:
    writer, reader = stores
    reader.stop_item_refresh()  # none running: a no-op
    reader.start_item_refresh(every_s=0.01)
    with pytest.raises(ConfigError, match="already running"):
        reader.start_item_refresh(every_s=0.01)
    _started(reader)
    thread = reader._refresher
    assert thread is not None and thread.daemon
    reader.stop_item_refresh(timeout_s=5.0)
    assert not thread.is_alive()
    status = reader.item_refresh_status()
    assert not status["running"] and status["age_s"] is None
    writer.write_batch(_rows([1], 2.0))
    calls.main = calls.refresher = 0
    time.sleep(0.05)
    assert calls.refresher == 0  # no check after the stop
    assert _has(reader, [1], 2.0) and calls.main > 0  # inline again
    reader.start_item_refresh(every_s=0.01)  # and it starts again
    _started(reader)
    thread = reader._refresher
    reader.close()  # close stops it too
    assert thread is not None and not thread.is_alive()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "0.1"])
def test_bad_periods(stores: tuple[RedisStore, RedisStore], bad: Any) -> None:
    _, reader = stores
    with pytest.raises(ConfigError, match="every_s"):
        reader.start_item_refresh(every_s=bad)
    with pytest.raises(ConfigError, match="max_age_s"):
        reader.start_item_refresh(every_s=0.1, max_age_s=bad)
    assert reader._refresher is None


# -- the serve wiring ---------------------------------------------------------------------


def _serve(monkeypatch: pytest.MonkeyPatch, argv: list[str],
           during: Callable[[Any], None], opened: list[Any]) -> int:
    """``kdstream api`` with uvicorn.run replaced by ``during(store)``; ``opened`` gets the
    stores it opened. Returns the exit code."""
    import kdstream.cli_serve as cli_serve

    real_open = cli_serve._open_store

    def open_store(store_url: str) -> Any:
        opened.append(real_open(store_url))
        return opened[-1]

    monkeypatch.setattr(cli_serve, "_open_store", open_store)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: during(opened[-1]))
    return main(["api", *argv])


def test_serve_starts_and_stops_the_refresher(
    monkeypatch: pytest.MonkeyPatch, password_redis_url: str, stores: tuple[RedisStore, RedisStore]
) -> None:
    seen: list[dict[str, Any]] = []

    def during(store: Any) -> None:
        _started(store)
        seen.append(store.item_refresh_status())

    opened: list[Any] = []
    code = _serve(monkeypatch, ["--store", password_redis_url, "--item-refresh-s", "0.05"], during,
                  opened)
    assert code == 0
    assert seen[0]["running"] and seen[0]["max_age_s"] == pytest.approx(0.5)
    assert not opened[0].item_refresh_status()["running"]  # stopped on shutdown
    assert opened[0]._refresher is None


def test_serve_stops_the_refresher_when_the_server_fails(
    monkeypatch: pytest.MonkeyPatch, password_redis_url: str, stores: tuple[RedisStore, RedisStore]
) -> None:
    def during(store: Any) -> None:
        assert store.item_refresh_status()["running"]  # on by default
        raise RuntimeError("port in use")

    opened: list[Any] = []
    with pytest.raises(RuntimeError, match="port in use"):
        _serve(monkeypatch, ["--store", password_redis_url], during, opened)
    assert opened[0]._refresher is None
    assert not any(t.name.startswith(REFRESH_THREAD) for t in threading.enumerate())


def test_serve_without_the_refresher(
    monkeypatch: pytest.MonkeyPatch, password_redis_url: str, stores: tuple[RedisStore, RedisStore]
) -> None:
    running: list[bool] = []
    opened: list[Any] = []
    code = _serve(monkeypatch, ["--store", password_redis_url, "--item-refresh-s", "0"],
                  lambda store: running.append(store.item_refresh_status()["running"]), opened)
    assert code == 0 and running == [False]
    # a memory:// store has no refresher and serves as before
    code = _serve(monkeypatch, ["--store", "memory://"], lambda store: None, opened)
    assert code == 0 and not hasattr(opened[-1], "start_item_refresh")


def test_serve_rejects_a_negative_period(monkeypatch: pytest.MonkeyPatch, password_redis_url: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    opened: list[Any] = []
    code = _serve(monkeypatch, ["--store", password_redis_url, "--item-refresh-s", "-1"],
                  lambda store: None, opened)
    assert code == 2 and opened == []
    assert "--item-refresh-s" in capsys.readouterr().err


# -- what /metrics and /healthz say about it ----------------------------------------------


def _call(app: Any, path: str) -> httpx.Response:
    """``GET path`` through httpx's ASGI transport (as tests/test_api.py does)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path)

    return asyncio.run(go())


def _refresh_metrics(text: str) -> dict[str, float]:
    """The ``kdstream_item_refresh_*`` samples of a metrics text, each with HELP and TYPE."""
    values = {}
    for line in text.splitlines():
        if line.startswith("kdstream_item_refresh_"):
            name, value = line.split(" ")
            assert f"# HELP {name} " in text and f"# TYPE {name} " in text
            values[name] = float(value)
    return values


REFRESH_METRICS = {
    "kdstream_item_refresh_running", "kdstream_item_refresh_age_seconds",
    "kdstream_item_refresh_max_age_seconds", "kdstream_item_refresh_errors_total",
}


def test_metrics_and_health_of_a_running_refresher(
    stores: tuple[RedisStore, RedisStore]
) -> None:
    _, reader = stores
    reader.start_item_refresh(every_s=0.01, max_age_s=30.0)
    _started(reader)
    service = StoreServingService(reader)
    app = create_app(service)
    r = _call(app, "/metrics")
    assert r.status_code == 200
    values = _refresh_metrics(r.text)
    assert set(values) == REFRESH_METRICS
    assert "# TYPE kdstream_item_refresh_errors_total counter" in r.text
    assert "# TYPE kdstream_item_refresh_age_seconds gauge" in r.text
    assert values["kdstream_item_refresh_running"] == 1
    assert 0 <= values["kdstream_item_refresh_age_seconds"] < 5.0
    assert values["kdstream_item_refresh_max_age_seconds"] == 30
    assert values["kdstream_item_refresh_errors_total"] == 0
    r = _call(app, "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    check = r.json()["checks"]["item_refresh"]
    assert check["ok"] and check["running"] and check["reason"] is None
    assert 0 <= check["age_s"] < 5.0 and check["max_age_s"] == 30 and check["errors"] == 0


def test_a_stuck_refresher_degrades_health_and_recovers(
    stores: tuple[RedisStore, RedisStore]
) -> None:
    writer, reader = stores
    mode: dict[str, Any] = {}
    _flaky(reader, mode)
    reader.start_item_refresh(every_s=0.01, max_age_s=0.3)
    _started(reader)
    service = StoreServingService(reader)
    assert service.health()["status"] == "ok"
    mode["block"] = threading.Event()  # the refresher hangs in its next check
    wait_until(lambda: service.health()["status"] == "degraded")
    report = _call(create_app(service), "/healthz")
    assert report.status_code == 200  # degraded, not down: requests still work
    body = report.json()
    check = body["checks"]["item_refresh"]
    assert body["status"] == "degraded" and not check["ok"] and check["running"]
    assert check["age_s"] > 0.3 and "old (> max_age_s)" in check["reason"]
    assert all(body["checks"][name]["ok"] for name in ("broker", "store", "teacher"))
    assert service.recommend("nobody", 3).cold_start  # served inline meanwhile
    age = _refresh_metrics(service.metrics_text())["kdstream_item_refresh_age_seconds"]
    assert age > 0.3
    mode["block"].set()
    wait_until(lambda: service.health()["status"] == "ok")
    writer.write_batch(_rows([2], 1.0))  # and the refresher works again
    wait_until(lambda: _has(reader, [2], 1.0))


def test_a_failing_refresher_reports_its_errors(stores: tuple[RedisStore, RedisStore]) -> None:
    _, reader = stores
    mode: dict[str, Any] = {}
    _flaky(reader, mode)
    reader.start_item_refresh(every_s=0.01, max_age_s=0.3)
    _started(reader)
    service = StoreServingService(reader)
    mode["raise"] = ServiceError("Redis went away")
    wait_until(lambda: service.health()["status"] == "degraded")
    check = service.health()["checks"]["item_refresh"]
    assert check["errors"] >= 1 and check["running"] and "old" in check["reason"]
    errors = _refresh_metrics(service.metrics_text())["kdstream_item_refresh_errors_total"]
    assert errors >= check["errors"]  # a counter: never less than an earlier reading
    mode["raise"] = None
    wait_until(lambda: service.health()["status"] == "ok", timeout_s=10.0)  # after its backoff


def test_no_first_snapshot_degrades_after_the_bound(stores: tuple[RedisStore, RedisStore]) -> None:
    _, reader = stores
    mode: dict[str, Any] = {"block": threading.Event()}
    _flaky(reader, mode)  # the first check hangs: running, no snapshot
    reader.start_item_refresh(every_s=0.01, max_age_s=0.2)
    service = StoreServingService(reader)
    first = service.health()
    assert first["status"] == "ok" and first["checks"]["item_refresh"]["age_s"] is None
    assert math.isnan(_refresh_metrics(service.metrics_text())["kdstream_item_refresh_age_seconds"])
    wait_until(lambda: service.health()["status"] == "degraded")
    check = service.health()["checks"]["item_refresh"]
    assert check["age_s"] is None and "no snapshot" in check["reason"]
    mode["block"].set()
    wait_until(lambda: service.health()["status"] == "ok")


def test_a_dead_refresher_thread_is_not_ok(stores: tuple[RedisStore, RedisStore]) -> None:
    _, reader = stores
    reader.start_item_refresh(every_s=0.01, max_age_s=30.0)
    _started(reader)
    thread = reader._refresher
    assert thread is not None
    # the thread ends without stop_item_refresh (as on a BaseException): its snapshot stays
    reader._refresh_stop.set()
    thread.join(5.0)
    assert not thread.is_alive()
    service = StoreServingService(reader)
    report = service.health()
    check = report["checks"]["item_refresh"]
    assert report["status"] == "degraded" and not check["running"]
    assert "not running" in check["reason"]
    assert _refresh_metrics(service.metrics_text())["kdstream_item_refresh_running"] == 0


def test_without_a_refresher_health_and_metrics_are_as_before(
    stores: tuple[RedisStore, RedisStore]
) -> None:
    _, reader = stores
    for store in (MemoryStore(), reader):  # no refresher; one never started
        service = StoreServingService(store)
        app = create_app(service)
        body = _call(app, "/healthz").json()
        assert body["status"] == "ok" and set(body["checks"]) == {"broker", "store", "teacher"}
        assert "kdstream_item_refresh" not in _call(app, "/metrics").text
    reader.start_item_refresh(every_s=0.01)
    _started(reader)
    service = StoreServingService(reader)
    assert "item_refresh" in service.health()["checks"]  # the same service with one
    reader.stop_item_refresh(timeout_s=5.0)  # and once it is stopped, as before again
    assert set(service.health()["checks"]) == {"broker", "store", "teacher"}
    assert "kdstream_item_refresh" not in service.metrics_text()


# -- what /v1/stats says about it -----------------------------------------------------------

STATS_KEYS = {"running", "age_s", "max_age_s", "every_s", "errors"}


def _item_refresh(app: Any) -> Any:
    r = _call(app, "/v1/stats")
    assert r.status_code == 200
    body = r.json()
    assert body["items"] == N  # the keys clients read are still there
    return body["item_refresh"]


def test_stats_of_a_running_refresher(stores: tuple[RedisStore, RedisStore]) -> None:
    _, reader = stores
    reader.start_item_refresh(every_s=0.01, max_age_s=30.0)
    _started(reader)
    got = _item_refresh(create_app(StoreServingService(reader)))
    assert set(got) == STATS_KEYS and got["running"] is True
    assert math.isfinite(got["age_s"]) and 0 <= got["age_s"] < 5.0
    assert got["every_s"] == pytest.approx(0.01) and got["max_age_s"] == 30.0
    assert got["errors"] == 0


def test_stats_count_failed_refreshes(stores: tuple[RedisStore, RedisStore]) -> None:
    _, reader = stores
    mode: dict[str, Any] = {}
    _flaky(reader, mode)
    reader.start_item_refresh(every_s=0.01, max_age_s=30.0)
    _started(reader)
    app = create_app(StoreServingService(reader))
    mode["raise"] = ServiceError("Redis went away")
    wait_until(lambda: _item_refresh(app)["errors"] >= 2)
    got = _item_refresh(app)
    assert got["running"] and got["age_s"] > 0.01  # the last good snapshot, ageing
    mode["raise"] = None
    wait_until(lambda: _item_refresh(app)["age_s"] < 0.5, timeout_s=10.0)  # after its backoff
    assert _item_refresh(app)["errors"] >= got["errors"]  # a count since the start


def test_stats_without_a_running_refresher(stores: tuple[RedisStore, RedisStore]) -> None:
    _, reader = stores
    app = create_app(StoreServingService(reader))
    assert _item_refresh(app) is None  # never started
    reader.start_item_refresh(every_s=0.01)
    _started(reader)
    assert _item_refresh(app)["running"]
    reader.stop_item_refresh(timeout_s=5.0)
    assert _item_refresh(app) is None  # stopped: as without one
    reader.start_item_refresh(every_s=0.01, max_age_s=30.0)
    _started(reader)
    thread = reader._refresher
    assert thread is not None
    reader._refresh_stop.set()  # the thread ends without a stop: its snapshot is left
    thread.join(5.0)
    got = _item_refresh(app)
    assert got["running"] is False and math.isfinite(got["age_s"])


@contextmanager
def _uvicorn(app: Any) -> Iterator[str]:
    """``app`` on a loopback port for a real browser; yields its URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=20.0)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_dashboard_shows_the_refresher(
    stores: tuple[RedisStore, RedisStore], tmp_path: Path
) -> None:
    browser = _browser()
    _, reader = stores
    mode: dict[str, Any] = {}
    _flaky(reader, mode)
    reader.start_item_refresh(every_s=0.01, max_age_s=30.0)
    _started(reader)
    with _uvicorn(create_app(StoreServingService(reader))) as url:
        page = _dump(browser, url, tmp_path / "p1")
        assert "live" in _number(page, "status")
        assert '<div class="tile" id="item-refresh-tile">' in page  # shown
        assert 0 <= float(_number(page, "item-refresh")) < 5.0
        mode["raise"] = ServiceError("Redis went away")
        wait_until(lambda: reader.item_refresh_status()["errors"] >= 1)
        assert re.fullmatch(r"[0-9.]+ · [0-9,]+ failed",
                            _number(_dump(browser, url, tmp_path / "p2"), "item-refresh"))
    with _uvicorn(create_app(StoreServingService(MemoryStore()))) as url:
        page = _dump(browser, url, tmp_path / "p3")
        assert "live" in _number(page, "status")
        assert '<div class="tile" id="item-refresh-tile" hidden="">' in page
