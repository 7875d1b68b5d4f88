"""Student-only prequential ablations of the context (no teacher), on real logs and synthetic.

Run: ``.venv/bin/python benchmarks/student_ablation.py [--events 50000] [--items N] [--only a,b]
[--json]``

Variants: a plain mean over the last 8 items, fixed 0.5**age weights, learned position weights
(the default), the last item only (L = 1), and 32, 64 or 256 shared negatives instead of 128. Reads
``../shared/datasets`` (ML-100K, ML-1M-subset) when present.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from kdstream.online import Learner, LearnerConfig, PopularityVariant, Prequential, StudentVariant
from kdstream.replay import SyntheticConfig, generate, read_log
from kdstream.student import StudentConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

VARIANTS = {
    "mean": {"context_decay": 1.0, "learn_context_weights": False},
    "fixed-0.5": {"learn_context_weights": False},
    "learned": {},
    "last-item": {"context_len": 1},
    # how many shared negatives the sampled softmax needs (the default is 128)
    "negatives-32": {"n_negatives": 32},
    "negatives-64": {"n_negatives": 64},
    "negatives-256": {"n_negatives": 256},
}


def run(cols, only: list[str], batch: int = 256) -> dict[str, float]:
    variants = [PopularityVariant()] + [
        StudentVariant(name, Learner(StudentConfig(**kw), LearnerConfig(distill=False)))
        for name, kw in VARIANTS.items()
        if name in only
    ]
    pq = Prequential(variants)
    w = np.array([e.signal() for e in cols.to_events()], np.float32)
    for s in range(0, len(cols), batch):
        sl = slice(s, s + batch)
        pq.process(cols.user[sl], cols.item[sl], cols.ts[sl], w[sl])
    return {k: round(m.hr, 4) for k, m in pq.report.metrics.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="synthetic events")
    ap.add_argument(
        "--items",
        type=int,
        default=SyntheticConfig().n_items,
        help="synthetic catalogue size (a larger one checks what the negatives need)",
    )
    ap.add_argument(
        "--only", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}"
    )
    ap.add_argument("--no-real", action="store_true", help="synthetic stream only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    only = args.only.split(",")
    unknown = sorted(set(only) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; expected some of {list(VARIANTS)}")
    synthetic = SyntheticConfig(n_events=args.events, n_items=args.items, seed=0)
    out = {"synthetic": run(generate(synthetic), only)}
    for name, path in (
        ("ml-100k", DATA / "ml-100k" / "u.data"),
        ("ml-1m-subset", DATA / "ml-1m-subset" / "ratings.dat.gz"),
    ):
        if path.exists() and not args.no_real:
            out[name] = run(read_log(path)[0], only)
    if args.json:
        print(json.dumps(out))
    else:
        for data, res in out.items():
            print(data, " ".join(f"{k}={v}" for k, v in res.items()))


if __name__ == "__main__":
    main()
