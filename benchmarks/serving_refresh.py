"""Serving latency while the item table changes: the inline refresh vs. the background refresher.

A RedisStore holds ``--items`` items (dimension ``--dim``). A writer process, as a processor
would, writes a partial item update of ``--rows`` random rows through its own RedisStore every
``--sync-every-s``. A reader (this process) answers one user's top 10 (``top_k_from_store``,
50 seen items excluded) in a loop and times each request, in ``2 * --rounds`` segments that
alternate between the two ways the reader keeps its item table current, all on the same data:

* ``inline``: as without the refresher, each request reads the table's version (one HMGET);
  the first request after a write pulls the changed rows and copies the whole table;
* ``background``: ``RedisStore.start_item_refresh(--refresh-every-s)``: a thread does both,
  requests read its snapshot.

Each mode runs ``--seconds`` in all. Printed per mode: requests, p50 / p90 / p99 / max
milliseconds per request, the five slowest, the requests slower than ``--slow-ms``, and the
writes during it.

Run: start a throwaway server (``redis-server --port 6399 --save '' --daemonize yes``), then
``.venv/bin/python benchmarks/serving_refresh.py --redis redis://127.0.0.1:6399/0 [--json]``
(and ``redis-cli -p 6399 shutdown nosave`` after). The namespace is a fresh one, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
import uuid
from typing import Any

import numpy as np

from kdstream.stream import RedisStore, StoreBatch, top_k_from_store

USER = "u1"


def _fill(store: RedisStore, n: int, dim: int) -> None:
    """The whole table, one user's query vector and 50 seen items."""
    rng = np.random.default_rng(0)
    store.write_batch(StoreBatch(
        item_ids=[f"i{j}" for j in range(n)],
        item_vectors=rng.normal(size=(n, dim)).astype(np.float32),
        item_bias=rng.normal(size=n).astype(np.float32),
        user_vectors={USER: rng.normal(size=dim).astype(np.float32)},
        seen={USER: [f"i{j}" for j in rng.choice(n, size=min(50, n), replace=False)]},
    ))


def _writer(url: str, namespace: str, n: int, dim: int, rows: int, every_s: float,
            stop: Any, writes: Any) -> None:
    """A processor's item syncs: a partial write of ``rows`` random rows every ``every_s``."""
    store = RedisStore(url, namespace=namespace)
    rng = np.random.default_rng(1)
    k = min(rows, n)
    next_at = time.monotonic() + every_s
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        store.write_batch(StoreBatch(
            item_rows=rng.choice(n, size=k, replace=False),
            item_row_vectors=rng.normal(size=(k, dim)).astype(np.float32),
            item_row_bias=rng.normal(size=k).astype(np.float32),
        ))
        with writes.get_lock():
            writes.value += 1
        next_at += every_s
    store.close()


def _segment(store: RedisStore, seconds: float) -> list[float]:
    """Milliseconds of each request in ``seconds``."""
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        top_k_from_store(store, USER, 10)
        times.append((time.perf_counter() - t) * 1e3)
    return times


def _summary(times: list[float], slow_ms: float, writes: int) -> dict[str, float | int]:
    ms = np.asarray(times)
    return {
        "requests": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "slowest_ms": [round(float(t), 1) for t in np.sort(ms)[::-1][:5]],
        "slow": int((ms > slow_ms).sum()),
        "writes": writes,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    namespace = f"bench-refresh-{uuid.uuid4().hex[:8]}"
    setup = RedisStore(args.redis, namespace=namespace)
    reader = RedisStore(args.redis, namespace=namespace)
    ctx = mp.get_context("spawn")  # a process of its own, as a processor is
    stop, writes = ctx.Event(), ctx.Value("i", 0)
    writer = ctx.Process(target=_writer, args=(
        args.redis, namespace, args.items, args.dim, args.rows, args.sync_every_s, stop, writes
    ), daemon=True)
    times: dict[str, list[float]] = {"inline": [], "background": []}
    counts = {"inline": 0, "background": 0}
    try:
        _fill(setup, args.items, args.dim)
        top_k_from_store(reader, USER, 10)  # the first whole read, outside the timings
        writer.start()
        part = args.seconds / args.rounds
        for _ in range(args.rounds):
            for mode in ("inline", "background"):
                if mode == "background":
                    reader.start_item_refresh(args.refresh_every_s)
                    while reader.item_refresh_status()["age_s"] is None:
                        time.sleep(0.001)
                before = writes.value
                times[mode] += _segment(reader, part)
                counts[mode] += writes.value - before
                reader.stop_item_refresh()
    finally:
        stop.set()
        if writer.pid is not None:
            writer.join(30)
        reader.close()
        setup.clear()
        setup.close()
    return {
        "items": args.items, "dim": args.dim, "rows_per_write": args.rows,
        "sync_every_s": args.sync_every_s, "refresh_every_s": args.refresh_every_s,
        "seconds_per_mode": args.seconds, "rounds": args.rounds, "slow_ms": args.slow_ms,
        **{mode: _summary(times[mode], args.slow_ms, counts[mode]) for mode in times},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis", required=True, metavar="URL", help="redis://host:port/db")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--rows", type=int, default=5_000, help="rows per partial write")
    ap.add_argument("--sync-every-s", type=float, default=2.0, help="seconds between writes")
    ap.add_argument("--seconds", type=float, default=20.0, help="request loop time per mode")
    ap.add_argument("--rounds", type=int, default=2, help="segments per mode (alternating)")
    ap.add_argument("--refresh-every-s", type=float, default=0.1,
                    help="the background refresher's period")
    ap.add_argument("--slow-ms", type=float, default=100.0,
                    help="count the requests slower than this")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.items:,} items, dim {args.dim}: {args.rows:,} rows written every "
          f"{args.sync_every_s:g} s; {args.seconds:g} s per mode in {args.rounds} rounds")
    for mode in ("inline", "background"):
        s = result[mode]
        print(f"{mode:>10}: {s['requests']:6d} requests  p50 {s['p50_ms']:7.2f} ms  "
              f"p90 {s['p90_ms']:7.2f}  p99 {s['p99_ms']:7.2f}  max {s['max_ms']:7.2f}  "
              f">{args.slow_ms:g} ms: {s['slow']}  writes: {s['writes']}  "
              f"slowest: {s['slowest_ms']}")


if __name__ == "__main__":
    main()
