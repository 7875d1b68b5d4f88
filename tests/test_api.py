"""The serving API through httpx's ASGI transport (no sockets)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from typing import Any

import httpx
import numpy as np
import pytest

from kdstream.api import (
    ApiSettings,
    EmbeddedServingService,
    StoreServingService,
    create_app,
    split_body,
)
from kdstream.stream import (
    DeadLetter,
    EmbeddedLog,
    EmbeddedProducer,
    Event,
    MemoryStore,
    StoreBatch,
    decode_event,
)
from kdstream.stream._runtime import EmbeddedPipeline, PipelineConfig

T0 = 1_700_000_000.0


def _call(app: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def _events(n: int, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    # skewed item popularity so the cold-start order is unambiguous
    items = rng.zipf(1.6, size=n) % 40
    users = rng.integers(0, 30, size=n)
    pairs = enumerate(zip(users, items, strict=True))
    return [Event(f"u{u}", f"i{i}", "click", T0 + k) for k, (u, i) in pairs]


def _service(settings: ApiSettings | None = None, n: int = 2_000) -> EmbeddedServingService:
    cfg = PipelineConfig(variants=("popularity", "student"), deterministic=False, batch_size=128)
    svc = EmbeddedServingService(EmbeddedPipeline(cfg), settings or ApiSettings())
    svc.pipeline.produce(_events(n))
    while svc.step_once():
        pass
    return svc


@pytest.fixture(scope="module")
def svc() -> EmbeddedServingService:
    return _service(ApiSettings(cold_start_half_life_s=1e12))


@pytest.fixture(scope="module")
def app(svc: EmbeddedServingService) -> Any:
    return create_app(svc, svc.settings)


def test_recommendations_shape(svc: EmbeddedServingService, app: Any) -> None:
    r = _call(app, "GET", "/v1/users/u3/recommendations", params={"k": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["user"] == "u3" and body["k"] == 7 and body["cold_start"] is False
    assert len(body["items"]) == len(body["scores"]) == 7
    assert body["scores"] == sorted(body["scores"], reverse=True)
    assert body["student_version"] == svc.learner().student.step > 0
    assert body["teacher_version"] == 0
    mine = [e for e in _events(2_000) if e.user == "u3"]
    assert body["last_event_ts"] == max(e.ts for e in mine)
    seen = {e.item for e in mine}
    assert not seen & set(body["items"])
    r = _call(app, "GET", "/v1/users/u3/recommendations", params={"k": 40, "exclude_seen": False})
    assert seen <= set(r.json()["items"])  # the whole catalogue, seen items included


def test_unknown_user_gets_popular_items(app: Any) -> None:
    r = _call(app, "GET", "/v1/users/stranger/recommendations", params={"k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["cold_start"] is True and body["last_event_ts"] is None
    counts = Counter(e.item for e in _events(2_000))
    expected = [item for item, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:5]]
    assert body["items"][0] == expected[0]
    assert set(body["items"]) == set(expected) or counts[body["items"][-1]] == counts[expected[-1]]
    assert body["scores"] == sorted(body["scores"], reverse=True)
    assert 0 < sum(body["scores"]) <= 1.0


def test_post_mixture_reports_invalid_by_index_and_dead_letters_them() -> None:
    svc = _service(n=300)
    app = create_app(svc, svc.settings)
    dlq = svc.pipeline.config.dlq_topic
    before = sum(svc.pipeline.log.end_offsets(dlq).values())
    events_before = svc.pipeline.stats.events
    records = [
        {"user": "fresh-1", "item": "i1", "type": "click", "ts": T0 + 10_000},
        {"user": "fresh-1", "item": "i2"},  # no ts: the API stamps "now"
        {"user": "fresh-2"},  # no item
        {"user": "fresh-2", "item": "i3", "type": "teleport"},
        7,
        {"user": "fresh-2", "item": "i4", "type": "purchase", "ts": T0 + 10_001},
    ]
    r = _call(app, "POST", "/v1/events", json=records)
    assert r.status_code == 202
    body = r.json()
    assert (body["received"], body["accepted"], body["rejected"]) == (6, 3, 3)
    assert [e["index"] for e in body["errors"]] == [2, 3, 4]
    assert body["errors"][0]["field"] == "item"
    assert body["errors"][1]["field"] == "type" and "teleport" in body["errors"][1]["reason"]
    letters = [
        DeadLetter.from_bytes(rec.value)
        for p in svc.pipeline.log.partitions_for(dlq)
        for rec in svc.pipeline.log.read(dlq, p, 0, 1_000)
    ][before:]
    assert [d.offset for d in letters] == [2, 3, 4]
    assert [d.reason for d in letters] == [e["reason"] for e in body["errors"]]
    assert {d.source for d in letters} == {"api"}
    while svc.step_once():
        pass
    assert svc.pipeline.stats.events == events_before + 3
    assert svc.pipeline.prequential.users.get("fresh-1") is not None
    rec = _call(app, "GET", "/v1/users/fresh-2/recommendations").json()
    assert rec["cold_start"] is False and rec["last_event_ts"] == T0 + 10_001


def test_post_jsonl_body() -> None:
    svc = _service(n=200)
    app = create_app(svc, svc.settings)
    body = b'{"user": "a", "item": "i1", "ts": 1}\n\n{"user": "b"}\r\n{"user": "c", "item": 5}\n'
    r = _call(app, "POST", "/v1/events", content=body,
              headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 202
    assert r.json()["accepted"] == 2 and [e["index"] for e in r.json()["errors"]] == [1]


def test_split_body() -> None:
    assert split_body(b"  \n") == []
    assert split_body(b'[{"a": 1}]') == [{"a": 1}]
    with pytest.raises(ValueError, match="JSON array"):
        split_body(b"[1, 2")
    with pytest.raises(ValueError, match="JSON array"):
        split_body(b"[NaN]")


def test_limits_and_clear_errors(app: Any) -> None:
    small = create_app(_service(n=50), ApiSettings(max_body_bytes=1_000, max_records=3))
    big = json.dumps([{"user": "u", "item": f"i{i}", "ts": 1} for i in range(50)])
    r = _call(small, "POST", "/v1/events", content=big)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    four = "\n".join(json.dumps({"user": "u", "item": "i", "ts": 1}) for _ in range(4))
    assert _call(small, "POST", "/v1/events", content=four).status_code == 413
    r = _call(small, "POST", "/v1/events", content=b"[1, 2")
    assert r.status_code == 400 and r.json()["error"] == "bad_body"
    assert _call(small, "POST", "/v1/events", content=b"").status_code == 400
    for k in ("0", "1001", "-3", "ten"):
        r = _call(app, "GET", "/v1/users/u1/recommendations", params={"k": k})
        assert r.status_code == 422, k
        assert r.json()["error"] == "invalid_request" and "k" in r.json()["message"]
    assert _call(app, "GET", "/v1/users/u1/recommendations", params={"k": 1000}).status_code == 200
    r = _call(app, "GET", "/v1/users/" + "x" * 300 + "/recommendations")
    assert r.status_code == 422
    r = _call(app, "GET", "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_bearer_token_required_for_post_when_set() -> None:
    svc = _service(n=50)
    app = create_app(svc, ApiSettings(token="s3cret"))
    one = [{"user": "u1", "item": "i1", "ts": 1}]
    r = _call(app, "POST", "/v1/events", json=one)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = _call(app, "POST", "/v1/events", json=one, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = _call(app, "POST", "/v1/events", json=one, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 202
    # reads stay open
    assert _call(app, "GET", "/v1/users/u1/recommendations").status_code == 200


_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? '
    r"(-?[0-9.]+(e[-+]?[0-9]+)?|NaN|[+-]Inf)$"
)


def test_metrics_is_prometheus_text(svc: EmbeddedServingService) -> None:
    app = create_app(svc, svc.settings)
    for _ in range(3):
        _call(app, "GET", "/v1/users/u1/recommendations")
    r = _call(app, "GET", "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values: dict[str, str] = {}
    typed: set[str] = set()
    for line in r.text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif not line.startswith("# HELP "):
            assert _SAMPLE.match(line), line
            name, value = line.rsplit(" ", 1)
            values[name] = value
    for name in (
        "kdstream_events_learned_total",
        "kdstream_dead_letters_total",
        "kdstream_consumer_lag",
        "kdstream_teacher_version",
        "kdstream_teacher_age_seconds",
        "kdstream_mixing_weight",
        "kdstream_update_latency_seconds",
        "kdstream_recommendation_latency_seconds",
    ):
        assert name in typed, name
    assert values["kdstream_events_learned_total"] == str(svc.pipeline.stats.events)
    assert values["kdstream_recommendation_latency_seconds_count"] == "3"
    assert values['kdstream_recommendation_latency_seconds_bucket{le="+Inf"}'] == "3"


def test_openapi_lists_endpoints(app: Any) -> None:
    doc = _call(app, "GET", "/openapi.json").json()
    paths = doc["paths"]
    assert "get" in paths["/v1/users/{user}/recommendations"]
    assert "post" in paths["/v1/events"]
    for path in ("/healthz", "/metrics", "/v1/stats"):
        assert "get" in paths[path]
    params = {p["name"]: p for p in paths["/v1/users/{user}/recommendations"]["get"]["parameters"]}
    assert params["k"]["schema"]["maximum"] == 1000


def test_health_stats_and_dashboard(svc: EmbeddedServingService, app: Any) -> None:
    r = _call(app, "GET", "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert set(r.json()["checks"]) == {"broker", "store", "teacher"}
    stats = _call(app, "GET", "/v1/stats").json()
    assert stats["events"] == svc.pipeline.stats.events
    assert set(stats["hr_at_10"]) == {"popularity", "student"}
    assert "item_refresh" in stats and stats["item_refresh"] is None  # no store, no refresher
    page = _call(app, "GET", "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "v1/stats" in page.text and "<canvas" in page.text and "src=" not in page.text
    broken = _service(n=10)
    broken.error = RuntimeError("boom")
    r = _call(create_app(broken), "GET", "/healthz")
    assert r.status_code == 503 and r.json()["status"] == "down"


def test_freshness_new_user_recommendations_change_with_loop_running() -> None:
    svc = _service(n=2_000)
    app = create_app(svc, svc.settings)
    before = _call(app, "GET", "/v1/users/newcomer/recommendations").json()
    assert before["cold_start"] is True
    svc.start()
    try:
        assert svc.running
        events = [{"user": "newcomer", "item": f"i{i}", "type": "purchase"} for i in (1, 2, 3)]
        r = _call(app, "POST", "/v1/events", json=events)
        assert r.status_code == 202 and r.json()["accepted"] == 3
        deadline = time.monotonic() + 10.0
        after = before
        while time.monotonic() < deadline:
            after = _call(app, "GET", "/v1/users/newcomer/recommendations").json()
            if not after["cold_start"]:
                break
            time.sleep(0.005)
    finally:
        svc.stop()
    assert after["cold_start"] is False
    assert after["items"] != before["items"]
    assert not {"i1", "i2", "i3"} & set(after["items"])  # seen items excluded
    assert after["last_event_ts"] is not None
    assert after["student_version"] > before["student_version"]


# what clients and the dashboard read of a store-backed /v1/stats; item_refresh came last
STORE_STATS_KEYS = {
    "time", "events", "events_per_s", "users", "items", "dead_lettered", "consumer_lag",
    "hr_at_10", "teacher", "mixing_weight", "student_version", "recommendation_latency_ms",
    "item_refresh",
}


def test_store_backed_service() -> None:
    store = MemoryStore()
    rng = np.random.default_rng(0)
    store.write_batch(
        StoreBatch(
            item_ids=["a", "b", "c", "d"],
            item_vectors=rng.standard_normal((4, 3)).astype(np.float32),
            user_vectors={"u1": np.array([1.0, 0.0, 0.0], np.float32)},
            seen={"u1": ["a"]},
            last_event_ts={"u1": 123.0},
            popularity=np.array([1.0, 5.0, 3.0, 0.0], np.float32),
            versions={"student": 4, "teacher": 2},
        )
    )
    app = create_app(StoreServingService(store))
    r = _call(app, "GET", "/v1/users/u1/recommendations", params={"k": 2}).json()
    assert r["cold_start"] is False and "a" not in r["items"] and len(r["items"]) == 2
    assert (r["student_version"], r["teacher_version"], r["last_event_ts"]) == (4, 2, 123.0)
    cold = _call(app, "GET", "/v1/users/nobody/recommendations", params={"k": 2}).json()
    assert cold["cold_start"] is True and cold["items"] == ["b", "c"]
    # read-only without a producer
    r2 = _call(app, "POST", "/v1/events", json=[{"user": "u", "item": "i", "ts": 1}])
    assert r2.status_code == 503 and r2.json()["error"] == "unavailable"
    assert _call(app, "GET", "/healthz").json()["status"] == "ok"
    assert "kdstream_teacher_version 2" in _call(app, "GET", "/metrics").text
    stats = _call(app, "GET", "/v1/stats").json()
    assert set(stats) == STORE_STATS_KEYS
    assert stats["item_refresh"] is None  # a MemoryStore has no item refresher
    assert (stats["items"], stats["student_version"]) == (4, 4)
    # with a producer: valid records to the events topic, bad ones to the DLQ
    log = EmbeddedLog()
    log.create_topic("kd.events", 2)
    log.create_topic("kd.events.dlq", 1)
    app = create_app(StoreServingService(store, EmbeddedProducer(log)))
    r3 = _call(app, "POST", "/v1/events",
               json=[{"user": "u", "item": "i", "ts": 1}, {"user": "u"}]).json()
    assert (r3["accepted"], r3["rejected"]) == (1, 1)
    produced = [rec for p in (0, 1) for rec in log.read("kd.events", p, 0, 10)]
    assert [decode_event(rec.value).item for rec in produced] == ["i"]
    assert produced[0].key == b"u"
    assert sum(log.end_offsets("kd.events.dlq").values()) == 1
