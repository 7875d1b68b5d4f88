"""End-to-end benchmark of the processor: Kafka -> Learner -> Redis, both engines.

Run: ``kdstream local up`` then ``.venv/bin/python benchmarks/kafka_e2e.py [--json]
[--events 200000] [--broker 127.0.0.1:9092] [--redis redis://127.0.0.1:6379]``.

What it measures (every processor is a ``kdstream processor`` subprocess, as deployed):

1. pre-fills a fresh topic with ``--events`` JSON events (plus one malformed record per
   1,000, which must end in the DLQ);
2. the yardstick: a bare faust agent that only counts those records in ``take(1000)``
   batches (``bare_faust_events_per_s``);
3. catch-up throughput with one processor, kafka-python engine (``events_per_s``) and faust
   engine (``faust_events_per_s``): the topic drained into Redis, timed by polling the
   store's applied offsets from the first applied batch to the last;
4. the same with two processors in one group (``two_processor_events_per_s``, faust engine;
   ``two_processor_kafka_events_per_s``);
5. event-to-store latency at a sustained ``--rate`` events/s (a paced producer thread; the
   latency of a record is the time from its ``send`` to the poll that sees the store's
   applied offset pass it; polled every 5 ms) for the ``--latency-engine``;
6. ``lost`` = produced - learned - dead-lettered, from the store's durable counters, summed
   over every run (must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from kdstream.stream import Event, encode_event
from kdstream.stream._kafka_admin import create_topics, default_topics
from kdstream.stream._kafka_producer import KafkaEventProducer
from kdstream.stream._processor import store_counts
from kdstream.stream._redis_store import RedisStore

ROOT = Path(__file__).resolve().parents[1]
BAD_EVERY = 1000


def _event(n: int, t0: float = 1.7e9) -> Event:
    return Event(f"u{(n * 7919) % 6000}", f"i{(n * n) % 3700}", "click", t0 + n)


def prefill(broker: str, prefix: str, n: int, partitions: int) -> tuple[int, int, float]:
    """Fill ``<prefix>.events``; returns ``(records, malformed, seconds)``."""
    create_topics(broker, default_topics(prefix, partitions=partitions))
    topic = f"{prefix}.events"
    bad = 0
    t0 = time.perf_counter()
    with KafkaEventProducer(broker, linger_ms=20) as producer:
        for i in range(n):
            e = _event(i)
            producer.send(topic, encode_event(e), key=e.user)
            if i % BAD_EVERY == BAD_EVERY - 1:
                producer.send(topic, b'{"user": "u1", "item": ', key=e.user)
                bad += 1
    return n + bad, bad, time.perf_counter() - t0


def _processor(args: argparse.Namespace, prefix: str, namespace: str, group: str,
               engine: str, idle_exit_s: float, sync_every_s: float | None = None
               ) -> subprocess.Popen[str]:
    cmd = [
        sys.executable, "-m", "kdstream.cli_runtime", "processor", "--engine", engine,
        "--broker", f"kafka://{args.broker}", "--store", args.redis, "--namespace", namespace,
        "--events-topic", f"{prefix}.events", "--soft-labels-topic", f"{prefix}.soft-labels",
        "--dlq-topic", f"{prefix}.events.dlq", "--group", group,
        "--batch-size", str(args.batch), "--dim", str(args.dim),
        "--idle-exit-s", str(idle_exit_s),
    ]
    if sync_every_s is not None:
        cmd += ["--sync-every-s", str(sync_every_s)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stats(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"processor exited {proc.returncode}: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def catch_up(args: argparse.Namespace, prefix: str, total: int, engine: str,
             n_procs: int) -> dict[str, Any]:
    """Drain the pre-filled topic with ``n_procs`` processors into a fresh namespace."""
    tag = uuid.uuid4().hex[:6]
    namespace, group = f"{prefix}-{engine}{n_procs}-{tag}", f"{prefix}-{engine}{n_procs}-{tag}"
    store = RedisStore(args.redis, namespace=namespace)
    topic = f"{prefix}.events"
    parts = range(args.partitions)
    procs = [_processor(args, prefix, namespace, group, engine, 5.0) for _ in range(n_procs)]
    t_first = None
    applied_first = 0
    deadline = time.monotonic() + 600
    counts = store_counts(store, topic, parts)
    while time.monotonic() < deadline:
        counts = store_counts(store, topic, parts)
        now = time.perf_counter()
        if t_first is None and counts["applied"] > 0:
            t_first, applied_first = now, counts["applied"]
        if counts["applied"] >= total:
            break
        if all(p.poll() is not None for p in procs):
            break
        time.sleep(0.02)
    t_done = time.perf_counter()
    stats = [_stats(p) for p in procs]
    counts = store_counts(store, topic, parts)
    seconds = t_done - (t_first or t_done)
    return {
        "events_per_s": round((counts["applied"] - applied_first) / seconds) if seconds else 0,
        "seconds": round(seconds, 2),
        "lost": total - counts["learned"] - counts["dead"],
        "dead": counts["dead"],
        "per_process_learned": [s["learned"] for s in stats],
        "seconds_learning": [round(s["seconds_learning"], 2) for s in stats],
        "seconds_writing": [round(s["seconds_writing"], 2) for s in stats],
    }


def bare_faust(args: argparse.Namespace, prefix: str, total: int) -> dict[str, Any]:
    """The bare counting faust agent, in its own process (faust owns the event loop)."""
    code = (
        "import json,sys;from kdstream.stream._faust_app import run_bare_counter;"
        "print(json.dumps(run_bare_counter(sys.argv[1], sys.argv[2], sys.argv[3],"
        " int(sys.argv[4]), batch_size=int(sys.argv[5]))))"
    )
    group = f"{prefix}-bare-{uuid.uuid4().hex[:6]}"
    out = subprocess.run(
        [sys.executable, "-c", code, args.broker, f"{prefix}.events", group, str(total),
         str(args.batch)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def latency(args: argparse.Namespace, engine: str, sync_every_s: float | None = None
            ) -> dict[str, Any]:
    """Event-to-store latency at a sustained rate, one processor, fresh topic."""
    prefix = f"lat{uuid.uuid4().hex[:8]}"
    create_topics(args.broker, default_topics(prefix, partitions=args.partitions))
    topic = f"{prefix}.events"
    store = RedisStore(args.redis, namespace=prefix)
    proc = _processor(args, prefix, prefix, f"{prefix}-g", engine, 6.0, sync_every_s)
    sent: dict[tuple[int, int], float] = {}
    lock = threading.Lock()
    from kafka import KafkaProducer

    # kafka-python directly: its futures carry each record's (partition, offset)
    producer = KafkaProducer(bootstrap_servers=args.broker, acks="all", linger_ms=2)

    def on_sent(t_send: float) -> Any:
        def cb(meta: Any) -> None:
            with lock:
                sent[(meta.partition, meta.offset)] = t_send
        return cb

    def produce(n: int, rate: float, start_index: int) -> None:
        t0 = time.perf_counter()
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            e = _event(start_index + i)
            t = time.perf_counter()
            producer.send(topic, encode_event(e), key=e.user.encode()).add_callback(on_sent(t))
        producer.flush()

    parts = range(args.partitions)
    # warm-up: wait until the processor is assigned and has applied a first batch
    produce(200, 1000, 0)
    deadline = time.monotonic() + 90
    while store_counts(store, topic, parts)["applied"] < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    with lock:
        sent.clear()
    n = int(args.rate * args.latency_seconds)
    applied_at: dict[tuple[int, int], float] = {}
    done = threading.Event()

    def poll() -> None:
        last = {p: store.applied_offset(topic, p) or 0 for p in parts}
        while not done.is_set():
            now = time.perf_counter()
            for p in parts:
                off = store.applied_offset(topic, p) or 0
                for o in range(last[p], off):
                    applied_at[(p, o)] = now
                last[p] = off
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t_start = time.perf_counter()
    produce(n, args.rate, 200)
    achieved = n / (time.perf_counter() - t_start)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            pending = [k for k in sent if k not in applied_at]
        if not pending:
            break
        time.sleep(0.05)
    done.set()
    poller.join()
    producer.close()
    stats = _stats(proc)
    with lock:
        lat = sorted((applied_at[k] - t) * 1000 for k, t in sent.items() if k in applied_at)
        missing = len(sent) - len(lat)
    counts = store_counts(store, topic, parts)

    def q(x: float) -> float:
        return round(lat[min(len(lat) - 1, int(x * len(lat)))], 1) if lat else float("nan")

    return {
        "engine": engine,
        "rate_target": args.rate,
        "rate_achieved": round(achieved),
        "events": len(sent),
        "latency_p50_ms": q(0.50),
        "latency_p99_ms": q(0.99),
        "latency_max_ms": round(lat[-1], 1) if lat else None,
        "not_applied": missing,
        "lost": 200 + n - counts["learned"] - counts["dead"],
        "batches": stats["batches"],
        "sync_every_s": sync_every_s,
        # where a batch's time goes (seconds over the run; see ProcessorStats)
        "seconds_learning": round(stats["seconds_learning"], 2),
        "seconds_writing": round(stats["seconds_writing"], 2),
        "seconds_syncing": round(stats.get("seconds_syncing", 0.0), 2),
        "seconds_writing_items": round(stats.get("seconds_writing_items", 0.0), 2),
        "item_syncs": stats["item_syncs"],
        "max_batch_ms": round(stats.get("max_batch_s", 0.0) * 1e3, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--broker", default="127.0.0.1:9092")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--latency-engine", choices=("kafka", "faust", "both"), default="both")
    ap.add_argument("--prefix", help="reuse a topic pre-filled by an earlier run (same --events)")
    ap.add_argument("--skip-two", action="store_true", help="skip the two-processor runs")
    ap.add_argument("--only-latency", action="store_true", help="only the latency runs")
    ap.add_argument("--compare-sync", default=None,
                    help="comma-separated --sync-every-s values: kafka-engine latency runs, "
                         "one per value, in this run (compare settings under the same load)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.broker = args.broker.removeprefix("kafka://")
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else print
    if args.compare_sync:
        for value in args.compare_sync.split(","):
            log(json.dumps(latency(args, "kafka", float(value))))
        return
    if args.only_latency:
        for engine in ("kafka", "faust"):
            log(json.dumps(latency(args, engine)))
        return
    if args.prefix:
        prefix = args.prefix
        total, produce_s = args.events + args.events // BAD_EVERY, float("nan")
    else:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        total, _bad, produce_s = prefill(args.broker, prefix, args.events, args.partitions)
        log(f"pre-filled {prefix}.events with {total} records in {produce_s:.1f}s")
    bare = bare_faust(args, prefix, total)
    log(f"bare faust agent: {bare}")
    kafka1 = catch_up(args, prefix, total, "kafka", 1)
    log(f"kafka-python engine, 1 processor: {kafka1}")
    faust1 = catch_up(args, prefix, total, "faust", 1)
    log(f"faust engine, 1 processor: {faust1}")
    runs = [kafka1, faust1]
    faust2 = kafka2 = None
    if not args.skip_two:
        kafka2 = catch_up(args, prefix, total, "kafka", 2)
        log(f"kafka-python engine, 2 processors: {kafka2}")
        faust2 = catch_up(args, prefix, total, "faust", 2)
        log(f"faust engine, 2 processors: {faust2}")
        runs += [kafka2, faust2]
    engines = ["kafka", "faust"] if args.latency_engine == "both" else [args.latency_engine]
    lats = {}
    for engine in engines:
        lats[engine] = latency(args, engine)
        log(f"latency at {args.rate:.0f}/s, {engine} engine: {lats[engine]}")
        runs.append(lats[engine])
    main_lat = lats.get("kafka") or lats[engines[0]]
    out = {
        "events": args.events,
        "events_per_s": kafka1["events_per_s"],
        "bare_faust_events_per_s": round(bare["events_per_s"]),
        "latency_p50_ms": main_lat["latency_p50_ms"],
        "latency_p99_ms": main_lat["latency_p99_ms"],
        "lost": sum(r["lost"] for r in runs),
        "faust_events_per_s": faust1["events_per_s"],
        "two_processor_events_per_s": faust2["events_per_s"] if faust2 else None,
        "two_processor_kafka_events_per_s": kafka2["events_per_s"] if kafka2 else None,
        "latency_engine": main_lat["engine"],
        "faust_latency_p50_ms": lats["faust"]["latency_p50_ms"] if "faust" in lats else None,
        "faust_latency_p99_ms": lats["faust"]["latency_p99_ms"] if "faust" in lats else None,
        "produce_events_per_s": round(total / produce_s) if produce_s == produce_s else None,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
