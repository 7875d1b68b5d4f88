"""Serving benchmark: freshness (event POSTed -> recommendations changed) and recommendation
latency at a sustained request rate, against a real uvicorn server on loopback.

The server (embedded pipeline + its learning loop + the API) runs in this process; the load
comes from a separate client process, as a production client would. The catalogue holds
``--items`` items (10,000 by default).

    python benchmarks/serving.py [--json] [--rps 500] [--seconds 10] [--trials 200]
        [--broker HOST:PORT --redis redis://HOST:PORT]

Prints ``{"freshness_p50_ms", "freshness_p99_ms", "kafka_freshness_p99_ms", "rec_p50_ms",
"rec_p99_ms", "rps"}``. With ``--broker`` and ``--redis`` (e.g. against ``kdstream local up``)
it also measures freshness through Kafka: one ``kdstream processor`` (kafka engine) is started
on fresh topics, and for each trial one event of a brand-new user is produced to Kafka and the
Redis store is polled (every 2 ms) until that user's recommendations are personal, not cold-start,
and excludes the item just consumed (what a stateless API process reading the store would
serve); otherwise that figure is null.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------- through Kafka

def kafka_freshness(broker: str, redis_url: str, trials: int) -> dict[str, float]:
    """Event produced to Kafka -> the user's served recommendations changed, one processor."""
    import os
    import uuid
    from pathlib import Path

    from kdstream.stream import Event, RedisStore, encode_event, top_k_from_store
    from kdstream.stream._kafka_admin import create_topics, default_topics
    from kdstream.stream._kafka_producer import KafkaEventProducer

    prefix = f"fresh{uuid.uuid4().hex[:8]}"
    create_topics(broker, default_topics(prefix, partitions=4))
    topic = f"{prefix}.events"
    cmd = [
        sys.executable, "-m", "kdstream.cli_runtime", "processor", "--engine", "kafka",
        "--broker", f"kafka://{broker}", "--store", redis_url, "--namespace", prefix,
        "--events-topic", topic, "--soft-labels-topic", f"{prefix}.soft-labels",
        "--dlq-topic", f"{prefix}.events.dlq", "--group", f"{prefix}-g",
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = RedisStore(redis_url, namespace=prefix)
    producer = KafkaEventProducer(broker, linger_ms=0)
    t0 = 1.7e9
    try:
        # warm-up: a catalogue and an assigned, running processor
        for n in range(500):
            e = Event(f"w{n % 50}", f"i{n % 200}", "click", t0 + n)
            producer.send(topic, encode_event(e), key=e.user)
        producer.flush()
        deadline = time.monotonic() + 120
        while store.user_vector("w49") is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the processor did not start learning within 120 s")
            time.sleep(0.05)
        lat = []
        for n in range(trials):
            user = f"fresh{n}"
            e = Event(user, f"i{(7 * n) % 200}", "click", t0 + 1000 + n)
            start = time.perf_counter()
            producer.send(topic, encode_event(e), key=e.user)
            producer.flush()
            while True:
                # served from the store: a personal list (no longer cold start) that excludes
                # the item just consumed
                if store.user_vector(user) is not None and e.item in store.seen(user):
                    items, _ = top_k_from_store(store, user, 10)
                    assert e.item not in items
                    break
                if time.perf_counter() - start > 10:
                    raise RuntimeError(f"{user}'s recommendations did not change within 10 s")
                time.sleep(0.002)
            lat.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.02)
    finally:
        producer.close()
        proc.terminate()
        proc.wait(30)
        store.clear()
    return {
        "kafka_freshness_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "kafka_freshness_p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


# ---------------------------------------------------------------------------- client process
def _client(port: int, users: int, rps: float, seconds: float, trials: int, seed: int) -> None:
    rng = random.Random(seed)

    def conn() -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(c: http.client.HTTPConnection, path: str) -> dict[str, Any]:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
        return json.loads(body)

    # freshness: POST one event for a brand-new user, poll until its recommendations change
    c = conn()
    fresh: list[float] = []
    for t in range(trials):
        user = f"fresh-{seed}-{t}"
        path = f"/v1/users/{user}/recommendations?k=10"
        before = get(c, path)
        assert before["cold_start"], before
        body = json.dumps([{"user": user, "item": f"i{rng.randrange(10_000)}",
                            "type": "purchase"}]).encode()
        start = time.perf_counter()
        c.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        assert r.status == 202
        while True:
            after = get(c, path)
            if not after["cold_start"] and after["items"] != before["items"]:
                break
            if time.perf_counter() - start > 5:
                raise RuntimeError("recommendations did not change within 5 s")
        fresh.append((time.perf_counter() - start) * 1e3)
        time.sleep(0.01)

    # load: open-loop schedule at `rps`, spread over a few keep-alive connections
    n_threads = 4
    lat: list[list[float]] = [[] for _ in range(n_threads)]
    t0 = time.perf_counter() + 0.2

    def worker(w: int) -> None:
        cc = conn()
        r2 = random.Random(seed * 100 + w)
        i = 0
        while True:
            due = t0 + (i * n_threads + w) / rps
            if due - t0 > seconds:
                return
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            s = time.perf_counter()
            get(cc, f"/v1/users/u{r2.randrange(users)}/recommendations?k=10")
            lat[w].append((time.perf_counter() - s) * 1e3)
            i += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    all_lat = np.array([x for xs in lat for x in xs])
    print(json.dumps({
        "freshness_p50_ms": round(float(np.percentile(fresh, 50)), 2),
        "freshness_p99_ms": round(float(np.percentile(fresh, 99)), 2),
        "rec_p50_ms": round(float(np.percentile(all_lat, 50)), 2),
        "rec_p99_ms": round(float(np.percentile(all_lat, 99)), 2),
        "rps": round(len(all_lat) / wall, 1),
    }))


# ---------------------------------------------------------------------------- server side
def _serve(n_items: int, n_users: int, seed: int) -> tuple[Any, Any, threading.Thread, int]:
    import uvicorn

    from kdstream.api import ApiSettings, EmbeddedServingService, create_app
    from kdstream.api._live import live_config
    from kdstream.stream import Event
    from kdstream.stream._runtime import EmbeddedPipeline

    # no teacher here: torch training on the same 2 cores would measure the teacher, not serving
    cfg = live_config(seed=seed, variants=("popularity", "student"))
    service = EmbeddedServingService(EmbeddedPipeline(cfg), ApiSettings(learner="student"))
    rng = np.random.default_rng(seed)
    # every item at least once, then a skewed tail: a 10k-item catalogue with history
    items = np.concatenate([np.arange(n_items), rng.zipf(1.3, 20_000) % n_items])
    users = rng.integers(0, n_users, len(items))
    service.pipeline.produce(
        Event(f"u{u}", f"i{i}", "click", 1_700_000_000.0 + k)
        for k, (u, i) in enumerate(zip(users, items, strict=True))
    )
    while service.step_once():
        pass
    service.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                           log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return service, server, thread, port


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--rps", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--broker", help="Kafka bootstrap host:port, for the Kafka freshness")
    ap.add_argument("--redis", help="redis:// URL of the store the processor writes")
    ap.add_argument("--client", type=int, help=argparse.SUPPRESS)  # internal: the load process
    args = ap.parse_args(argv)
    if args.client:
        _client(args.client, args.users, args.rps, args.seconds, args.trials, args.seed)
        return 0

    start = time.perf_counter()
    service, server, thread, port = _serve(args.items, args.users, args.seed)
    setup_s = time.perf_counter() - start
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--client", str(port), "--users", str(args.users),
             "--rps", str(args.rps), "--seconds", str(args.seconds), "--trials",
             str(args.trials), "--seed", str(args.seed)],
            capture_output=True, text=True, check=False,
        )
    finally:
        server.should_exit = True
        thread.join(10)
        service.stop()
    if out.returncode:
        print(out.stderr, file=sys.stderr)
        return 1
    res = json.loads(out.stdout)
    kafka = (
        kafka_freshness(args.broker, args.redis, args.trials)
        if args.broker and args.redis
        else {"kafka_freshness_p99_ms": None}
    )
    result = {
        "freshness_p50_ms": res["freshness_p50_ms"],
        "freshness_p99_ms": res["freshness_p99_ms"],
        "kafka_freshness_p99_ms": kafka["kafka_freshness_p99_ms"],
        "rec_p50_ms": res["rec_p50_ms"],
        "rec_p99_ms": res["rec_p99_ms"],
        "rps": res["rps"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        items = len(service.pipeline.prequential.items)
        print(f"catalogue {items:,} items, setup {setup_s:.1f}s")
        print(f"freshness (POST -> recommendations changed): p50 {result['freshness_p50_ms']} ms,"
              f" p99 {result['freshness_p99_ms']} ms over {args.trials} new users")
        print(f"recommendations at {result['rps']} req/s: p50 {result['rec_p50_ms']} ms, "
              f"p99 {result['rec_p99_ms']} ms")
        if result["kafka_freshness_p99_ms"] is not None:
            print(f"through Kafka (produce -> store serves the change): p50 "
                  f"{kafka['kafka_freshness_p50_ms']} ms, "
                  f"p99 {result['kafka_freshness_p99_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
