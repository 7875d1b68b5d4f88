"""What drawing a micro-batch's shared negatives costs the learner, by catalogue size.

Run: ``.venv/bin/python benchmarks/negatives.py [--batches 500] [--json]``

Per micro-batch of 256 events (Zipf-like items, 128 negatives, q ∝ count**0.5 + 1e-3): the
popularity counts' update plus the draw with its log-Q terms, three ways, in one process:

* ``choice``: ``Generator.choice(p=q)`` and a log over the whole catalogue every batch (the
  learner until ``NegativeSampler``);
* ``every_batch``: ``NegativeSampler`` with its table rebuilt at every batch (what it does for
  catalogues under 4,096 items; the same draws as ``choice``);
* ``sampler``: ``NegativeSampler`` as the learner runs it, rebuilt once 1/16 of the catalogue's
  size in events has gone by.

Prints microseconds per batch for each, averaged over the run (its first build included: at a
million items the sampler rebuilds every 244 batches, so 500 batches hold three builds).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from kdstream.online import _negatives
from kdstream.online._negatives import NegativeSampler
from kdstream.online._popularity import Popularity

BATCH, S = 256, 128


def batches(n_items: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    return list(rng.choice(n_items, (n, BATCH), p=p))


def run_choice(n_items: int, bs: list[np.ndarray]) -> float:
    counts, rng, ones, ts = Popularity(), np.random.default_rng(1), np.ones(BATCH), np.zeros(BATCH)
    start = time.perf_counter()
    for items in bs:
        counts.learn_many(items, ones, ts)
        prior = counts.scores(n_items) ** 0.5
        prior += 1e-3
        p = prior / prior.sum()
        negatives = rng.choice(n_items, size=S, p=p)
        logq = np.log(S * p)
        _ = logq[negatives], logq[items]  # what the learner took from it
    return (time.perf_counter() - start) / len(bs)


def run_sampler(n_items: int, bs: list[np.ndarray], share: int) -> float:
    saved = _negatives.REBUILD_SHARE
    _negatives.REBUILD_SHARE = share
    try:
        counts, ones, ts = Popularity(), np.ones(BATCH), np.zeros(BATCH)
        sampler = NegativeSampler(0.5, S, np.random.default_rng(1))
        start = time.perf_counter()
        for items in bs:
            counts.learn_many(items, ones, ts)
            sampler.draw(counts, n_items, items)
        return (time.perf_counter() - start) / len(bs)
    finally:
        _negatives.REBUILD_SHARE = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=500)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {}
    for n_items in (1_500, 20_000, 200_000, 1_000_000):
        bs = batches(n_items, args.batches)
        out[str(n_items)] = {
            "choice_us": round(1e6 * run_choice(n_items, bs)),
            "every_batch_us": round(1e6 * run_sampler(n_items, bs, 10**12)),
            "sampler_us": round(1e6 * run_sampler(n_items, bs, _negatives.REBUILD_SHARE)),
        }
    if args.json:
        print(json.dumps(out))
    else:
        for n, r in out.items():
            print(f"{int(n):>9,} items: " + ", ".join(f"{k} {v:,}" for k, v in r.items()))


if __name__ == "__main__":
    main()
