"""One recommendation from a store by catalogue size: ``top_k_from_store`` on a MemoryStore.

Run: ``.venv/bin/python benchmarks/top_k.py [--items 100000 1000000] [--requests 30] [--json]``

Times a request (score every item, drop the user's 50 seen ones, top 10) the way the API serves
it, with the store's shared id list (``item_table_shared``) and, in the same run, through a
wrapper that hides it, so the request copies the id list as it did before (``item_table``).
Prints the median milliseconds per request of each and their ratio.

``--cold-start --redis URL``: a cold-start top 10 (a user with no vector and no seen items) on a
RedisStore, alternating in the same run between the old path (a GET of the whole popularity
blob, then a ranking of the catalogue: a wrapper that hides ``popularity_ranked``) and the new
one (popularity cached by its version, top items from its cached prefix); then the new one
with the background refresher running (no Redis call for the table or popularity). Prints the
median and p99 milliseconds of each. Start a throwaway server first
(``redis-server --port 6398 --save '' --daemonize yes``; ``redis-cli -p 6398 shutdown nosave``
after); the namespace is a fresh one, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import numpy as np

from kdstream.stream import MemoryStore, RedisStore, StoreBatch, top_k_from_store


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


class _OldColdStart:
    """The RedisStore as cold-start requests read it before popularity was cached: a GET of
    the whole blob per request, no ``popularity_ranked`` (so the catalogue is ranked)."""

    def __init__(self, inner: RedisStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        if name == "popularity_ranked":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def popularity(self) -> np.ndarray | None:
        raw = self._inner._client.get(self._inner._k("pop"))
        return None if raw is None else np.frombuffer(raw, dtype="<f4")


def _stats(times: list[float]) -> dict[str, float]:
    ms = 1e3 * np.asarray(times)
    return {"p50_ms": round(float(np.median(ms)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def run_cold_start(url: str, n_items: int, requests: int, dim: int = 4) -> dict[str, Any]:
    """Cold-start top 10 on a RedisStore: old vs new path (alternating), then the new path
    with the background refresher."""
    namespace = f"bench-cold-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    writer = RedisStore(url, namespace=namespace)
    reader = RedisStore(url, namespace=namespace)
    try:
        writer.write_batch(StoreBatch(
            item_ids=[f"i{j}" for j in range(n_items)],
            item_vectors=rng.normal(size=(n_items, dim)).astype(np.float32),
            popularity=rng.integers(0, 1000, size=n_items).astype(np.float32),  # ties
        ))
        contenders: dict[str, Any] = {"old": _OldColdStart(reader), "new": reader}
        expected = top_k_from_store(contenders["old"], "anon", 10)  # also fills the table
        times: dict[str, list[float]] = {"old": [], "new": [], "background": []}
        for _ in range(requests):  # alternate, so both see the same machine
            for name, store in contenders.items():
                t = time.perf_counter()
                got = top_k_from_store(store, "anon", 10)
                times[name].append(time.perf_counter() - t)
                assert got[0] == expected[0]
        reader.start_item_refresh(0.1)
        while reader.item_refresh_status()["age_s"] is None:
            time.sleep(0.001)
        for _ in range(requests):
            t = time.perf_counter()
            got = top_k_from_store(reader, "anon", 10)
            times["background"].append(time.perf_counter() - t)
            assert got[0] == expected[0]
        reader.stop_item_refresh()
    finally:
        reader.close()
        writer.clear()
        writer.close()
    out: dict[str, Any] = {"items": n_items, "requests": requests}
    out.update({name: _stats(ts) for name, ts in times.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--cold-start", action="store_true",
                    help="cold-start requests on a RedisStore (needs --redis)")
    ap.add_argument("--redis", metavar="URL", help="redis://host:port/db (--cold-start)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.cold_start:
        if not args.redis:
            ap.error("--cold-start needs --redis URL")
        cold = [run_cold_start(args.redis, n, args.requests) for n in args.items]
        if args.json:
            print(json.dumps(cold))
            return
        for r in cold:
            print(f"{r['items']:>9,} items, cold-start top 10 ({r['requests']} requests each): "
                  + "  ".join(f"{name} p50 {r[name]['p50_ms']:.3f} / p99 {r[name]['p99_ms']:.3f}"
                              " ms" for name in ("old", "new", "background")))
        return
    results = [run(n, args.requests) for n in args.items]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(f"{r['items']:>9,} items: {r['shared_ms']:7.2f} ms with the shared id list, "
              f"{r['copied_ms']:7.2f} ms copying it (x{r['ratio']})")


if __name__ == "__main__":
    main()
