"""Fault-injection benchmark: every scenario at full counts against a fresh local cluster.

    .venv/bin/python benchmarks/faults.py [--json] [--kills 20] [--only NAME ...]

Starts its own Kafka + Redis (``kdstream.local_cluster``, free ports, a temporary home), runs
the scenarios of ``tests/faults/scenarios.py`` and ``tests/faults/slow.py`` (scenario 6: slow
Redis, slow teacher; ``slow_teacher_embedded`` needs no cluster) one after the other, then the
hostile-input
runs (>= 100,000 records through the decoders and the processor core, >= 10,000 through
``POST /v1/events``), and prints per scenario ``produced``, ``learned``, ``dead_lettered``,
``lost``, ``duplicated`` and ``recovery_s`` (``--json``: one object).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from faults import scenarios as sc  # noqa: E402
from faults import slow  # noqa: E402
from faults.hostile import hostile_stream  # noqa: E402


def _fuzz_decoders(n: int) -> dict[str, Any]:
    from kdstream.stream import MemoryStore, Record
    from kdstream.stream._processor import ProcessorConfig, ProcessorCore
    from kdstream.student import StudentConfig

    store = MemoryStore()
    core = ProcessorCore(store, ProcessorConfig(student=StudentConfig(dim=8), debug_ledger=True))
    core.assign([0])
    good: set[str] = set()
    bad = 0
    batch: list[Record] = []
    tracemalloc.start()
    start = time.perf_counter()
    for off, (raw, key) in enumerate(hostile_stream(n, seed=11)):
        batch.append(Record("kd.events", 0, off, None, raw, 0.0))
        if key is None:
            bad += 1
        else:
            good.add(key)
        if len(batch) == 500:
            core.process(batch, now=1.7e9)
            batch = []
    if batch:
        core.process(batch, now=1.7e9)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ledger = store.ledger()
    learned = set(ledger)
    return {
        "produced": n, "learned": len(ledger), "dead_lettered": core.stats.dead_lettered,
        "lost": len(good - learned) + (bad - core.stats.dead_lettered),
        "duplicated": len(ledger) - len(learned), "recovery_s": 0.0,
        "expected_bad": bad, "peak_traced_mib": round(peak / 2**20, 1),
        "records_per_s": round(n / seconds),
    }


def _fuzz_api(n: int, per_request: int = 100) -> dict[str, Any]:
    import httpx

    from kdstream.api import ApiSettings, StoreServingService, create_app
    from kdstream.stream import DeadLetter, MemoryStore, decode_event
    from kdstream.stream._processor import event_key

    sent: dict[str, list[bytes]] = {"events": [], "dlq": []}

    class Sink:
        def send(self, topic: str, value: bytes, key: Any = None) -> None:
            sent["dlq" if topic.endswith(".dlq") else "events"].append(value)

    app = create_app(StoreServingService(MemoryStore(), sink=Sink(), events_topic="kd.events",
                                         dlq_topic="kd.events.dlq"), ApiSettings())
    records = list(hostile_stream(n, seed=12))
    statuses: dict[int, int] = {}
    refused: list[str | None] = []  # keys of records in bodies refused as a whole (4xx)
    received = accepted = rejected = 0

    async def go() -> None:
        nonlocal received, accepted, rejected
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for i in range(0, n, per_request):
                # JSON lines; a raw newline inside a record would split it, so those go alone
                chunk = records[i : i + per_request]
                body = b"\n".join(raw.replace(b"\n", b" ") for raw, _ in chunk)
                r = await client.post("/v1/events", content=body,
                                      headers={"content-type": "application/x-ndjson"})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code != 202:  # the whole body refused (e.g. it starts with "[")
                    refused.extend(k for _, k in chunk)
                else:
                    doc = r.json()
                    received += doc["received"]
                    accepted += doc["accepted"]
                    rejected += doc["rejected"]

    tracemalloc.start()
    asyncio.run(go())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    good = {k for _, k in records if k is not None} - set(refused)
    learned = [event_key(decode_event(v)) for v in sent["events"]]
    letters = [DeadLetter.from_bytes(v) for v in sent["dlq"]]
    return {
        "produced": n, "learned": len(learned), "dead_lettered": len(letters),
        "lost": len(good - set(learned)), "unexpected": len(set(learned) - good),
        "duplicated": len(learned) - len(set(learned)),
        "recovery_s": 0.0, "http_statuses": statuses, "received": received,
        "accepted": accepted, "rejected": rejected,
        "refused_in_4xx_bodies": len(refused),
        # empty/whitespace-only records are blank JSONL lines, not records
        "blank_lines_skipped": n - received - len(refused),
        "letters_without_reason": sum(1 for d in letters if not d.reason),
        "peak_traced_mib": round(peak / 2**20, 1),
    }


def _slow_teacher_embedded(n: int, window: int = 5_000, batch: int = 256) -> dict[str, Any]:
    """``EmbeddedPipeline`` (production mode) whose teacher ``fit`` blocks until the stream
    is drained: every event learned without waiting; the events held for the teacher."""
    import threading

    from kdstream.stream._runtime import EmbeddedPipeline, PipelineConfig
    from kdstream.teacher import RefreshPolicy, TeacherConfig, _trainer

    release = threading.Event()
    original = _trainer.SASRecTeacher.fit

    def blocked_fit(self: Any, *a: Any, **k: Any) -> Any:
        release.wait(600)
        return original(self, *a, **k)

    _trainer.SASRecTeacher.fit = blocked_fit  # type: ignore[method-assign]
    try:
        pipe = EmbeddedPipeline(PipelineConfig(
            batch_size=batch, deterministic=False, variants=("student+kd",), transition_items=0,
            refresh=RefreshPolicy(every_events=1_000, min_events=1_000),
            teacher=TeacherConfig(dim=8, max_len=4, epochs=1, top_m=2, device="cpu",
                                  window_events=window),
        ))
        pipe.produce(sc.good_event(i) for i in range(n))
        held = 0
        start = time.perf_counter()
        while pipe.step() > 0:
            held = max(held, sum(len(a) for a in pipe._window_users))
        seconds = time.perf_counter() - start
        busy = pipe._worker is not None and pipe._worker.busy
        release.set()
        pipe.close()
    finally:
        release.set()
        _trainer.SASRecTeacher.fit = original  # type: ignore[method-assign]
    return {
        "produced": n, "learned": pipe.stats.events, "dead_lettered": pipe.stats.dead_lettered,
        "lost": n - pipe.stats.events - pipe.stats.dead_lettered, "duplicated": 0,
        "recovery_s": 0.0, "teacher_busy_throughout": busy, "window_events": window,
        "events_held_for_teacher_max": held, "events_per_s": round(n / seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--rate", type=float, default=400.0, help="events/s of the load")
    parser.add_argument("--fuzz-records", type=int, default=100_000)
    parser.add_argument("--api-records", type=int, default=10_000)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--redis-delay-ms", type=float, default=25.0,
                        help="slow_redis: delay per chunk, each direction")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    def want(name: str) -> bool:
        return args.only is None or name in args.only

    def note(name: str, result: dict[str, Any]) -> None:
        out[name] = result
        print(f"{name}: " + json.dumps(result), file=sys.stderr, flush=True)

    if want("fuzz_decoders"):
        note("fuzz_decoders", _fuzz_decoders(args.fuzz_records))
    if want("fuzz_api"):
        note("fuzz_api", _fuzz_api(args.api_records))
    if want("slow_teacher_embedded"):
        note("slow_teacher_embedded", _slow_teacher_embedded(50_000))
    cluster_runs = [
        ("processor_kills", lambda c, p, d: sc.scenario_processor_kills(
            c, p, d, kills=args.kills, rate=args.rate)),
        ("kill_mid_rebalance", lambda c, p, d: sc.scenario_kill_mid_rebalance(
            c, p, d, rate=args.rate)),
        ("kafka_restart", lambda c, p, d: sc.scenario_kafka_restart(c, p, d, rate=args.rate)),
        ("redis_restart", lambda c, p, d: sc.scenario_redis_restart(c, p, d, rate=args.rate)),
        # recovery_s: teacher restart -> a new teacher version in the store
        ("teacher_outage", lambda c, p, d: sc.scenario_teacher_outage(
            c, p, d, every_s=2.0, down_intervals=5, rate=args.rate)),
        # scenario 6; recovery_s: delay off -> backlog drained / 0 (the stream never stopped)
        ("slow_redis", lambda c, p, d: slow.scenario_slow_redis(
            c, p, d, delay_s=args.redis_delay_ms / 1000, slow_s=60, rate=args.rate)),
        ("slow_teacher", lambda c, p, d: slow.scenario_slow_teacher(
            c, p, d, fit_delay_s=5.0, versions=4, rate=args.rate, timeout_s=300)),
    ]
    cluster_runs = [(n, f) for n, f in cluster_runs if want(n)]
    if cluster_runs:
        with tempfile.TemporaryDirectory(prefix="kdstream-faults-") as home:
            cluster = sc.start_cluster(Path(home) / "cluster")
            try:
                for name, run in cluster_runs:
                    start = time.monotonic()
                    try:
                        result = run(cluster, f"b{uuid.uuid4().hex[:10]}", Path(home)).as_dict()
                    finally:
                        sc.kill_all()
                    result["wall_s"] = round(time.monotonic() - start, 1)
                    note(name, result)
            finally:
                sc.stop_cluster(cluster)
    if args.json:
        print(json.dumps(out, default=str))
    else:
        for name, r in out.items():
            print(f"{name:20s} produced={r['produced']} learned={r['learned']} "
                  f"dead_lettered={r['dead_lettered']} lost={r['lost']} "
                  f"duplicated={r['duplicated']} recovery_s={r['recovery_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
