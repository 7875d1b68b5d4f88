"""Item-table sync of the distributed processor: full-table pulls vs. pulls since a version.

Two processors share one in-process :class:`~kdstream.stream._processor.LocalItemHub` holding
a large catalogue with learned offsets on every row. They take turns learning a few batches
of events (a few thousand item rows change between syncs) and syncing; one runs with
``incremental_sync=False`` (diff the whole local table, pull the whole hub table: the earlier
path), the other with ``incremental_sync=True`` (diff the rows its steps marked, pull the rows
changed since its last pull). Both see the same hub, each other's pushes included, so their
syncs move the same kind of changes. Printed: ms per ``sync_items`` call (median over the
syncs), with its hub push + pull part, and the rows pushed and pulled.

``sync_items`` returns the served item table for the store: whole in the full mode, the rows
pulled since the processor's last served write in the incremental one (both with the whole
popularity). A whole-table copy, timed on its own, is printed beside it (part of the sync's
time in the full mode only). Then the batch is written to the processor's
store (``write``) and a separate reader of that store brings its cached table up to date
(``read``: ``item_table()``; a RedisStore reader re-reads the whole table after a whole write,
pulls the rows changed since its version after a partial one).

Run: ``.venv/bin/python benchmarks/item_sync.py --items 200000 1000000 [--redis URL] [--json]``
(``--redis redis://127.0.0.1:6379/0``: the stores are RedisStores in throwaway namespaces).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from typing import Any

import numpy as np

from kdstream.online import LearnerConfig
from kdstream.stream import MemoryStore, Record, RedisStore
from kdstream.stream._processor import LocalItemHub, ProcessorConfig, ProcessorCore
from kdstream.student import StudentConfig


class _TimedHub(LocalItemHub):
    """Counts the rows and seconds of each hub call."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self.pushed = 0
        self.pulled = 0

    def push_item_deltas(self, rows: np.ndarray, deltas: np.ndarray, epoch: str = "") -> None:
        t = time.perf_counter()
        super().push_item_deltas(rows, deltas, epoch=epoch)
        self.seconds += time.perf_counter() - t
        self.pushed += len(rows)

    def pull_item_offsets(self) -> tuple[list[str], np.ndarray]:
        t = time.perf_counter()
        out = super().pull_item_offsets()
        self.seconds += time.perf_counter() - t
        self.pulled += len(out[0])
        return out

    def pull_item_offsets_since(self, version: int, n_ids: int, epoch: str = ""):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = super().pull_item_offsets_since(version, n_ids, epoch)
        self.seconds += time.perf_counter() - t
        self.pulled += len(out.rows)
        return out


def _records(rng: np.random.Generator, n_items: int, n: int, partition: int, start: int,
             ts: float) -> list[Record]:
    users = rng.integers(5000, size=n)
    items = rng.integers(n_items, size=n)
    return [
        Record("kd.events", partition, start + j, None,
               json.dumps({"user": f"u{partition}-{u}", "item": f"i{i}", "ts": ts}).encode(), 0.0)
        for j, (u, i) in enumerate(zip(users.tolist(), items.tolist(), strict=True))
    ]


def _stores(redis_url: str | None, mode: str) -> tuple[Any, Any]:
    """The processor's store and a second reader of it."""
    if redis_url is None:
        store = MemoryStore()
        return store, store
    ns = f"bench-item-sync-{mode}-{uuid.uuid4().hex[:8]}"
    return RedisStore(redis_url, namespace=ns), RedisStore(redis_url, namespace=ns)


def run(n_items: int, dim: int, rounds: int, batches: int, batch_size: int,
        redis_url: str | None = None) -> dict[str, object]:
    rng = np.random.default_rng(0)
    hub = _TimedHub()
    hub.allocate_ids("item", [f"i{j}" for j in range(n_items)])
    width = 2 * dim + 1
    hub.push_item_deltas(
        np.arange(n_items), rng.normal(0, 0.01, size=(n_items, width)).astype(np.float32)
    )
    cfg = {"student": StudentConfig(dim=dim, seed=0), "learner": LearnerConfig(seed=0),
           "sync_every_batches": 10**9, "sync_every_s": 1e9}
    t = time.perf_counter()
    stores = {mode: _stores(redis_url, mode) for mode in ("full", "since")}
    cores = {
        mode: ProcessorCore(stores[mode][0], ProcessorConfig(incremental_sync=mode == "since",
                                                             **cfg), hub=hub)  # type: ignore[arg-type]
        for mode in ("full", "since")
    }
    first = cores["full"]
    first.assign([0])  # the first sync pulls the whole table and builds the init cache
    cores["since"]._q0 = first._q0  # the same deterministic inits: share the cache
    cores["since"].assign([1])
    setup_s = time.perf_counter() - t
    out: dict[str, dict[str, list[float]]] = {
        m: {"sync_ms": [], "hub_ms": [], "batch_ms": [], "pushed": [], "pulled": [],
            "write_ms": [], "read_ms": [], "rows_written": []}
        for m in cores
    }
    offsets = {0: 0, 1: 0}
    ts = 1.0
    for _ in range(rounds):
        for p, mode in enumerate(cores):
            core = cores[mode]
            for _ in range(batches):
                core.process(_records(rng, n_items, batch_size, p, offsets[p], ts))
                offsets[p] += batch_size
                ts += 1.0
            hub.seconds, hub.pushed, hub.pulled = 0.0, 0, 0
            t = time.perf_counter()
            batch = core.sync_items()
            took = time.perf_counter() - t
            t = time.perf_counter()
            # the served-table part of the sync, the same in both modes
            _ = (core.learner.student.Q[:n_items].copy(), core.learner.counts.scores(n_items))
            rec = out[mode]
            rec["sync_ms"].append(1e3 * took)
            rec["hub_ms"].append(1e3 * hub.seconds)
            rec["batch_ms"].append(1e3 * (time.perf_counter() - t))
            rec["pushed"].append(hub.pushed)
            rec["pulled"].append(hub.pulled)
            store, reader = stores[mode]
            t = time.perf_counter()
            store.write_batch(batch)
            rec["write_ms"].append(1e3 * (time.perf_counter() - t))
            core._served_written(batch)  # as process() does after its write
            t = time.perf_counter()
            ids, vectors, _bias = reader.item_table()
            rec["read_ms"].append(1e3 * (time.perf_counter() - t))
            partial = batch.item_rows is not None
            rec["rows_written"].append(len(batch.item_rows) if partial else n_items)
            assert len(ids) == n_items and vectors.shape == (n_items, dim)
            np.testing.assert_array_equal(vectors[-1], core.learner.student.Q[n_items - 1])
    for store, reader in stores.values():
        if isinstance(store, RedisStore):
            store.clear()
            reader.close()
            store.close()
    result: dict[str, object] = {"items": n_items, "dim": dim, "setup_s": round(setup_s, 1),
                                 "events_between_syncs": batches * batch_size}
    for mode, rec in out.items():
        result[mode] = {k: round(statistics.median(v), 1) for k, v in rec.items()}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="syncs per processor")
    ap.add_argument("--batches", type=int, default=3, help="batches between a processor's syncs")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--redis", default=None, metavar="URL",
                    help="RedisStores at URL instead of MemoryStores")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run(n, args.dim, args.rounds, args.batches, args.batch_size, args.redis)
               for n in args.items]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['items']:>9} items, dim {r['dim']}, {r['events_between_syncs']} events "
              f"between a processor's syncs (setup {r['setup_s']} s)")
        for mode in ("full", "since"):
            m = r[mode]
            assert isinstance(m, dict)
            print(f"  {mode:>5}: sync {m['sync_ms']:8.1f} ms (hub {m['hub_ms']:7.1f} ms), "
                  f"pushed {m['pushed']:8.0f} rows, pulled {m['pulled']:8.0f} rows; "
                  f"a whole-table copy alone {m['batch_ms']:6.1f} ms")
            print(f"         store write {m['write_ms']:8.1f} ms ({m['rows_written']:8.0f} rows), "
                  f"reader refresh {m['read_ms']:8.1f} ms")


if __name__ == "__main__":
    main()
