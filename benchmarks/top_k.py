"""One recommendation from a store by catalogue size: ``top_k_from_store`` on a MemoryStore.

Run: ``.venv/bin/python benchmarks/top_k.py [--items 100000 1000000] [--requests 30] [--json]``

Times a request (score every item, drop the user's 50 seen ones, top 10) the way the API serves
it, with the store's shared id list (``item_table_shared``) and, in the same run, through a
wrapper that hides it, so the request copies the id list as it did before (``item_table``).
Prints the median milliseconds per request of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from kdstream.stream import MemoryStore, StoreBatch, top_k_from_store


class _CopyingStore:
    """The store without ``item_table_shared``: each request copies the id list."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        if name == "item_table_shared":
            raise AttributeError(name)
        return getattr(self._inner, name)


def run(n_items: int, requests: int, dim: int = 32) -> dict[str, float]:
    rng = np.random.default_rng(0)
    store = MemoryStore()
    store.write_batch(StoreBatch(
        item_ids=[f"i{j}" for j in range(n_items)],
        item_vectors=rng.normal(size=(n_items, dim)).astype(np.float32),
        item_bias=np.zeros(n_items, np.float32),
        user_vectors={"u": rng.normal(size=dim).astype(np.float32)},
        seen={"u": [f"i{j}" for j in rng.choice(n_items, 50, replace=False)]},
    ))
    out: dict[str, float] = {"items": n_items}
    times: dict[str, list[float]] = {"shared": [], "copied": []}
    contenders = {"shared": store, "copied": _CopyingStore(store)}
    expected = top_k_from_store(store, "u", 10)
    for _ in range(requests):  # alternate, so both see the same machine
        for name, s in contenders.items():
            t = time.perf_counter()
            got = top_k_from_store(s, "u", 10)  # type: ignore[arg-type]
            times[name].append(time.perf_counter() - t)
            assert got[0] == expected[0]
    for name, ts in times.items():
        out[f"{name}_ms"] = round(1e3 * float(np.median(ts)), 2)
    out["ratio"] = round(out["copied_ms"] / out["shared_ms"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run(n, args.requests) for n in args.items]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(f"{r['items']:>9,} items: {r['shared_ms']:7.2f} ms with the shared id list, "
              f"{r['copied_ms']:7.2f} ms copying it (x{r['ratio']})")


if __name__ == "__main__":
    main()
