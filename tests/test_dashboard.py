"""The dashboard in a real headless Chromium against a real uvicorn server on loopback."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kdstream.api import ApiSettings, EmbeddedServingService, create_app
from kdstream.stream import Event
from kdstream.stream._runtime import EmbeddedPipeline, PipelineConfig

uvicorn = pytest.importorskip("uvicorn")

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    # Debian's package, when we may install it (CI images run as root)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env,
                       capture_output=True, timeout=900, check=False)
        path = shutil.which("chromium")
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is required in CI (apt-get install -y chromium)")
    pytest.skip("chromium is not installed and cannot be installed here")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(user_count: int, start: int, n: int) -> list[Event]:
    return [
        Event(f"u{(start + k) % user_count}", f"i{(start + k) * 7 % 97}", "click",
              1_700_000_000.0 + start + k)
        for k in range(n)
    ]


@contextmanager
def _serving(settings: ApiSettings) -> Iterator[tuple[str, EmbeddedServingService]]:
    cfg = PipelineConfig(variants=("popularity", "student"), deterministic=False, batch_size=128)
    service = EmbeddedServingService(EmbeddedPipeline(cfg), settings)
    service.pipeline.produce(_events(50, 0, 500))
    service.start()
    port = _free_port()
    config = uvicorn.Config(create_app(service, settings), host="127.0.0.1", port=port,
                            log_level="error", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/", service
    finally:
        srv.should_exit = True
        thread.join(10)
        service.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, EmbeddedServingService]]:
    with _serving(ApiSettings()) as served:
        yield served


def _dump(browser: str, url: str, profile: Path) -> str:
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--no-first-run", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        "--virtual-time-budget=2500", "--dump-dom", url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _number(dom: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert m, f"#{element_id} not in the rendered page"
    return m.group(1)


def test_dashboard_renders_live_numbers(
    server: tuple[str, EmbeddedServingService], tmp_path: Path
) -> None:
    browser = _browser()
    url, service = server
    deadline = time.monotonic() + 20
    while service.pipeline.stats.events < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    first = _dump(browser, url, tmp_path / "p1")
    assert "live" in _number(first, "status")  # the fetch of /v1/stats succeeded
    events_1 = int(_number(first, "events-total").replace(",", ""))
    assert events_1 == service.pipeline.stats.events == 500
    assert _number(first, "hr-student") != "–"
    assert int(_number(first, "polls")) >= 1

    # feed more events (and one bad record) while the page is not looking
    service.pipeline.produce(_events(50, 500, 700))
    service.pipeline.produce_raw([b"not json"], [None])
    deadline = time.monotonic() + 20
    while service.pipeline.stats.events < 1_200 and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _dump(browser, url, tmp_path / "p2")
    events_2 = int(_number(second, "events-total").replace(",", ""))
    assert events_2 == 1_200 > events_1
    assert _number(second, "dlq") == "1" and _number(first, "dlq") == "0"


def test_dashboard_with_a_read_token(tmp_path: Path) -> None:
    """Behind a read token the page asks for it, and polls with it once given in the fragment."""
    browser = _browser()
    with _serving(ApiSettings(read_token="r3ad-secret")) as (url, service):
        deadline = time.monotonic() + 20
        while service.pipeline.stats.events < 500 and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = _dump(browser, url, tmp_path / "p1")
        assert "read token is required" in _number(refused, "status")
        assert re.search(r'<form id="token-form"(?! hidden)', refused)  # the form is shown
        assert _number(refused, "events-total") == "–"

        allowed = _dump(browser, url + "#token=r3ad-secret", tmp_path / "p2")
        assert "live" in _number(allowed, "status")
        assert int(_number(allowed, "events-total").replace(",", "")) == 500
