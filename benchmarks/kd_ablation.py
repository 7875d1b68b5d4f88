"""Distillation ablations of the whole embedded pipeline, several configurations in parallel.

Run: ``.venv/bin/python benchmarks/kd_ablation.py [--procs N] [--device cpu|cuda]
[--configs NAME,...] [--events N] [DATA ...]``

DATA: paths of logs (any format ``read_log`` reads) or ``syn`` (``--events`` synthetic events,
200,000 by default). Default: ML-100K, the synthetic stream and ML-1M-subset; ``--configs``:
every configuration of ``CONFIGS``. Each configuration runs ``scaled_config`` (what
``kdstream evaluate`` uses) with one change, and prints one JSON line with the HR@10 of every
variant. With CUDA the teacher trains on the GPU (same epochs, so the same model up to
numerics, much faster); the configurations of the README were chosen on these lines. A tiny
run (the smoke test): ``kd_ablation.py syn --events 6000 --procs 1 --configs default,alpha-1.0``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

#: name -> changes to the defaults (learner / student / teacher fields)
CONFIGS: dict[str, dict[str, object]] = {
    "default": {},
    "user-labels-on": {"user_labels": True},
    "kd-item-vectors-on": {"kd_item_vectors": True},
    "alpha-0.5": {"kd_alpha": 0.5},
    "alpha-1.0": {"kd_alpha": 1.0},
    "teacher-epochs-5": {"epochs": 5},
    "teacher-epochs-12": {"epochs": 12},
    "no-transitions": {"transitions": False},
    "student-init-0.01": {"init_std": 0.01},
}


SYN_EVENTS = 200_000


def job(args: tuple[str, str, dict[str, object], str, int]) -> dict[str, object]:
    data, name, change, device, syn_events = args
    from kdstream.replay import SyntheticConfig, generate, read_log
    from kdstream.stream._runtime import EmbeddedPipeline, scaled_config

    cols = (
        generate(SyntheticConfig(n_events=syn_events, seed=0))
        if data == "syn"
        else read_log(data)[0]
    )
    cfg = scaled_config(len(cols), 0)

    def pick(obj):  # apply the fields of `change` that `obj` has
        keys = {k: v for k, v in change.items() if hasattr(obj, k)}
        return replace(obj, **keys)

    teacher = replace(pick(cfg.teacher), device=device, num_threads=1)
    cfg = replace(cfg, teacher=teacher, learner=pick(cfg.learner), student=pick(cfg.student))
    p = EmbeddedPipeline(cfg)
    p.produce(cols.to_events())
    start = time.time()
    p.run()
    hr = {k: round(m.hr, 4) for k, m in p.prequential.report.metrics.items()}
    return {"data": Path(data).name, "config": name, "seconds": round(time.time() - start), **hr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="*")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    ap.add_argument("--events", type=int, default=SYN_EVENTS, help="events of the `syn` stream")
    args = ap.parse_args()
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:  # before any worker starts, not as a KeyError in the middle of the run
        ap.error(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    if args.events < 1:
        ap.error("--events must be positive")
    data = args.data or [
        str(DATA / "ml-100k" / "u.data"),
        "syn",
        str(DATA / "ml-1m-subset" / "ratings.dat.gz"),
    ]
    jobs = [(d, n, CONFIGS[n], args.device, args.events) for n in names for d in data]
    with ProcessPoolExecutor(args.procs) as ex:
        for line in ex.map(job, jobs):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
