"""Hostile bodies through ``POST /v1/events`` (the ASGI app, no server): no 5xx, every bad
record reported by index with a reason and dead-lettered, every good one produced once."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from typing import Any

import httpx
from faults.hostile import hostile_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdstream.api import ApiSettings, StoreServingService, create_app
from kdstream.stream import DeadLetter, MemoryStore, decode_event
from kdstream.stream._processor import event_key


class _Sink:
    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.dlq: list[bytes] = []

    def send(self, topic: str, value: bytes, key: Any = None) -> None:
        (self.dlq if topic.endswith(".dlq") else self.events).append(value)


def _app(sink: _Sink, **kw: Any) -> Any:
    service = StoreServingService(MemoryStore(), sink=sink, events_topic="kd.events",
                                  dlq_topic="kd.events.dlq")
    return create_app(service, ApiSettings(**kw))


def _post_all(app: Any, bodies: list[bytes], content_type: str) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.post("/v1/events", content=b,
                                      headers={"content-type": content_type}) for b in bodies]

    return asyncio.run(go())


def test_hostile_jsonl_batches_are_accounted_for_record_by_record() -> None:
    sink = _Sink()
    records = [(raw.replace(b"\n", b" "), key) for raw, key in hostile_stream(1500, seed=5)]
    bodies = [b"\n".join(raw for raw, _ in records[i : i + 50]) for i in range(0, 1500, 50)]
    tracemalloc.start()
    try:
        responses = _post_all(_app(sink), bodies, "application/x-ndjson")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert {r.status_code for r in responses} == {202}
    docs = [r.json() for r in responses]
    assert all(d["accepted"] + d["rejected"] == d["received"] for d in docs)
    assert all(e["reason"] for d in docs for e in d["errors"])
    good = {k for _, k in records if k is not None}
    learned = [event_key(decode_event(v)) for v in sink.events]
    assert len(learned) == len(set(learned)) and set(learned) == good
    letters = [DeadLetter.from_bytes(v) for v in sink.dlq]
    assert len(letters) == sum(d["rejected"] for d in docs) and all(d.reason for d in letters)
    blank = sum(1 for raw, _ in records if not raw.strip())
    assert sum(d["received"] for d in docs) == len(records) - blank
    assert peak < 64 * 1024 * 1024, peak


@settings(max_examples=150, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000) | st.text(max_size=500).map(str.encode)
       | st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=10),
                      lambda k: st.lists(k, max_size=5) | st.dictionaries(st.text(max_size=5), k,
                                                                           max_size=5),
                      max_leaves=20).map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bodies_never_give_a_server_error(body: bytes) -> None:
    sink = _Sink()
    for ctype in ("application/json", "application/x-ndjson"):
        (r,) = _post_all(_app(sink), [body], ctype)
        assert r.status_code in (202, 400, 413, 422), (r.status_code, r.text)
        doc = r.json()
        if r.status_code == 202:
            assert doc["accepted"] + doc["rejected"] == doc["received"]
        else:
            assert doc["error"] and doc["message"]


def test_oversized_and_deeply_nested_bodies_are_refused_cleanly() -> None:
    sink = _Sink()
    app = _app(sink, max_body_bytes=64 * 1024)
    bodies = [b"[" * 60_000 + b"]" * 60_000, b'{"user":"u"}\n' * 10_000, b"[" + b"1," * 30_000]
    statuses = [r.status_code for r in _post_all(app, bodies, "application/json")]
    assert statuses[0] in (400, 413) and statuses[1] == 413 and statuses[2] in (400, 413)
    assert sink.events == []
