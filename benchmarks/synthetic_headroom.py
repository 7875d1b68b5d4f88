"""How much the synthetic stream leaves to learn: the generator's own distribution as a ranker.

Run: ``.venv/bin/python benchmarks/synthetic_headroom.py [--events N] [--seed S] [--set KEY=VALUE]``

Prints one JSON object: HR@10 and NDCG@10 of the oracle (``kdstream.replay.oracle_ranks``: each
scored event's item ranked by the probabilities the generator drew it from) over all scored
events and over the last 30% of the stream. The oracle knows each session's theme and the
tastes after every drift, which no model sees, so it bounds what any variant can reach; compare
it with ``kdstream demo --json`` (the same stream for the same seed) and with
``benchmarks/teacher_quality.py --synthetic N`` (a SASRec trained offline on the first 70%).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from kdstream.errors import ConfigError
from kdstream.replay import SyntheticConfig, oracle_ranks, parse_settings


def metrics(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    hit = ranks < k
    ndcg = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {"hr@10": round(float(hit.mean()), 4), "ndcg@10": round(float(ndcg.mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a SyntheticConfig setting (repeatable)")
    args = ap.parse_args()
    try:
        settings = parse_settings(args.set)
    except ConfigError as exc:
        raise SystemExit(f"--set: {exc}") from None
    ranks = oracle_ranks(SyntheticConfig(n_events=args.events, seed=args.seed, **settings))
    # scored events are in stream order: the last 30% of the stream holds about the last 30%
    late = ranks[int(0.7 * len(ranks)) :]
    out = {
        "events": args.events,
        "settings": settings,
        "scored": len(ranks),
        "oracle": metrics(ranks),
        "oracle_last_30pct": metrics(late),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
