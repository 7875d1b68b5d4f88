"""Item-table sync of the distributed processor: full-table pulls vs. pulls since a version.

Two processors share one in-process :class:`~kdstream.stream._processor.LocalItemHub` holding
a large catalogue with learned offsets on every row. They take turns learning a few batches
of events (a few thousand item rows change between syncs) and syncing; one runs with
``incremental_sync=False`` (diff the whole local table, pull the whole hub table: the earlier
path), the other with ``incremental_sync=True`` (diff the rows its steps marked, pull the rows
changed since its last pull). Both see the same hub, each other's pushes included, so their
syncs move the same kind of changes. Printed: ms per ``sync_items`` call (median over the
syncs), with its hub push + pull part, and the rows pushed and pulled.

``sync_items`` still returns the whole served item table for the store (``item_vectors`` is an
``(n, d)`` copy, with the popularity scores): that part is the same in both modes; its cost,
timed again on its own, is printed as the served-table copy (part of the sync's time; the
store's write of that table is not timed here).

Run: ``.venv/bin/python benchmarks/item_sync.py --items 200000 1000000 [--json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from kdstream.online import LearnerConfig
from kdstream.stream import MemoryStore, Record
from kdstream.stream._processor import LocalItemHub, ProcessorConfig, ProcessorCore
from kdstream.student import StudentConfig


class _TimedHub(LocalItemHub):
    """Counts the rows and seconds of each hub call."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self.pushed = 0
        self.pulled = 0

    def push_item_deltas(self, rows: np.ndarray, deltas: np.ndarray) -> None:
        t = time.perf_counter()
        super().push_item_deltas(rows, deltas)
        self.seconds += time.perf_counter() - t
        self.pushed += len(rows)

    def pull_item_offsets(self) -> tuple[list[str], np.ndarray]:
        t = time.perf_counter()
        out = super().pull_item_offsets()
        self.seconds += time.perf_counter() - t
        self.pulled += len(out[0])
        return out

    def pull_item_offsets_since(self, version: int, n_ids: int):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = super().pull_item_offsets_since(version, n_ids)
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


def run(n_items: int, dim: int, rounds: int, batches: int, batch_size: int) -> dict[str, object]:
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
    cores = {
        mode: ProcessorCore(MemoryStore(), ProcessorConfig(incremental_sync=mode == "since",
                                                           **cfg), hub=hub)  # type: ignore[arg-type]
        for mode in ("full", "since")
    }
    first = cores["full"]
    first.assign([0])  # the first sync pulls the whole table and builds the init cache
    cores["since"]._q0 = first._q0  # the same deterministic inits: share the cache
    cores["since"].assign([1])
    setup_s = time.perf_counter() - t
    out: dict[str, dict[str, list[float]]] = {
        m: {"sync_ms": [], "hub_ms": [], "batch_ms": [], "pushed": [], "pulled": []}
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
            assert batch.item_vectors is not None and len(batch.item_vectors) == n_items
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
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run(n, args.dim, args.rounds, args.batches, args.batch_size) for n in args.items]
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
                  f"of which served-table copy {m['batch_ms']:6.1f} ms")


if __name__ == "__main__":
    main()
