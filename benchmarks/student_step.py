"""The student's micro-batched learning step alone, against river's BiasedMF, on one core.

Run: ``.venv/bin/python benchmarks/student_step.py [--json] [--events N] [--batch B] [--repeat R]``

On a shared machine one run moves by 10% or more from the next: ``--repeat R`` runs R rounds of
the three contenders and reports each one's median (and every run).

Same fixed synthetic stream (popularity-skewed users and items) for every contender:
kdstream's ``Student.learn_many`` with distillation off, with it on (M = 50 soft labels per
event), and ``river.reco.BiasedMF.learn_one`` per event, all at dimension 32 in one run. Only
the learning calls are timed: each contender's inputs are prepared before its clock starts.
``KDSTREAM_STUDENT_KERNEL=0`` times the numpy step instead of the compiled one.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core, like the processor
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from kdstream.student import SoftTargets, Student, StudentConfig
from kdstream.student._fused import kernel_available

USERS, ITEMS = 50_000, 20_000  # the fixed stream's default sizes (kernel_ab, step_profile too)


def new_student(users: np.ndarray, n_items: int, seed: int, n_neg: int) -> Student:
    """A dimension-32 student with its tables grown to the stream, so no batch grows them."""
    st = Student(StudentConfig(dim=32, seed=seed, n_negatives=n_neg))
    st.grow(int(users.max()) + 1, n_items)
    return st


def make_stream(n: int, n_users: int, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pu = 1.0 / np.arange(1, n_users + 1) ** 0.8
    pi = 1.0 / np.arange(1, n_items + 1) ** 1.0
    users = rng.choice(n_users, n, p=pu / pu.sum())
    items = rng.choice(n_items, n, p=pi / pi.sum())
    return users.astype(np.int64), items.astype(np.int64)


def make_batches(
    users: np.ndarray,
    items: np.ndarray,
    n_items: int,
    batch: int,
    kd_m: int,
    seed: int,
    n_neg: int = StudentConfig().n_negatives,
) -> list[tuple]:
    """The step's inputs, batch by batch, prepared before the clock starts (as river's are):
    shared negatives drawn ∝ count^0.5 with their log-Q, and with ``kd_m`` the M soft labels of
    every event (a per-user table, as the learner keeps them)."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(items, minlength=n_items) + 1.0
    p = counts**0.5 / (counts**0.5).sum()
    logq = np.log(n_neg * p)
    n_users = int(users.max()) + 1
    label_items = rng.choice(n_items, (n_users, kd_m), p=p) if kd_m else None
    label_logits = rng.standard_normal((n_users, kd_m)).astype(np.float32) if kd_m else None
    out = []
    for s in range(0, len(users), batch):
        u, i = users[s : s + batch], items[s : s + batch]
        negs = rng.choice(n_items, n_neg, p=p)
        soft = None
        if kd_m:
            soft = SoftTargets(
                rows=np.arange(len(u)),
                items=label_items[u],
                logits=label_logits[u],
                temperature=np.full(len(u), 2.0, np.float32),
                alpha=np.full(len(u), 0.5, np.float32),
            )
        out.append((u, i, np.ones(len(u), np.float32), negs, logq[negs], logq[i], soft))
    return out


def bench_student(
    users, items, n_items: int, batch: int, kd_m: int, seed: int, n_neg: int
) -> float:
    st = new_student(users, n_items, seed, n_neg)
    batches = make_batches(users, items, n_items, batch, kd_m, seed, n_neg)
    start = time.perf_counter()
    for u, i, w, negs, neg_logq, pos_logq, soft in batches:
        st.learn_many(u, i, w, negs, neg_logq, pos_logq, soft=soft)
    return len(users) / (time.perf_counter() - start)


def bench_parts(
    users, items, n_items: int, batch: int, kd_m: int, seed: int, n_neg: int
) -> dict[str, float]:
    """Milliseconds per batch of each part of ``learn_many`` as it runs here (no contexts
    passed): the contexts, with the histories moved on in the same pass; the step; the seen
    pairs' update (clock reads between the parts)."""
    st = new_student(users, n_items, seed, n_neg)
    batches = make_batches(users, items, n_items, batch, kd_m, seed, n_neg)
    parts = dict.fromkeys(("contexts_and_histories", "step", "seen"), 0.0)
    for u, i, w, negs, neg_logq, pos_logq, soft in batches:
        t0 = time.perf_counter()
        ctx = st._fused.contexts(st, u, i, update=True)
        t1 = time.perf_counter()
        st._fused.run(st, u, i, w, negs, neg_logq, pos_logq, soft, None, ctx)
        t2 = time.perf_counter()
        st.seen.add(u, i)
        t3 = time.perf_counter()
        for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            parts[name] += dt
    return {name: round(1e3 * v / len(batches), 3) for name, v in parts.items()}


def bench_river(users, items, n: int) -> float:
    from river import reco

    model = reco.BiasedMF(n_factors=32, seed=0)
    us, it = users[:n].astype(str), items[:n].astype(str)
    start = time.perf_counter()
    for u, i in zip(us, it, strict=True):
        model.learn_one(u, i, 1.0)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--river-events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--users", type=int, default=USERS)
    ap.add_argument("--items", type=int, default=ITEMS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--negatives",
        type=int,
        default=StudentConfig().n_negatives,
        help="shared negatives per batch (the student's n_negatives)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of all three contenders; the figures are each one's median",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--parts",
        action="store_true",
        help="also time each part of learn_many (C step only), ms per batch",
    )
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.parts and not kernel_available():
        ap.error("--parts times the C step's parts: it is not built or KDSTREAM_STUDENT_KERNEL=0")
    users, items = make_stream(args.events, args.users, args.items, args.seed)
    runs: dict[str, list[float]] = {"plain": [], "kd": [], "river": []}
    for _ in range(args.repeat):  # rounds interleave the contenders, so drift hits all three
        runs["plain"].append(
            bench_student(users, items, args.items, args.batch, 0, args.seed, args.negatives)
        )
        runs["kd"].append(
            bench_student(users, items, args.items, args.batch, 50, args.seed, args.negatives)
        )
        runs["river"].append(bench_river(users, items, min(args.river_events, args.events)))
    plain, kd, river = (float(np.median(runs[k])) for k in ("plain", "kd", "river"))
    out: dict[str, object] = {
        "kdstream_events_per_s": round(plain),
        "kdstream_kd_events_per_s": round(kd),
        "river_events_per_s": round(river),
        "ratio_vs_river": round(plain / river, 1),
    }
    if args.repeat > 1:
        out["repeat"] = args.repeat
        out["runs"] = {k: [round(v) for v in vs] for k, vs in runs.items()}
    if args.parts:
        for kd_m in (0, 50):
            out[f"parts_ms_per_batch_m{kd_m}"] = bench_parts(
                users, items, args.items, args.batch, kd_m, args.seed, args.negatives
            )
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>26}: {v:,}" if not isinstance(v, dict) else f"{k:>26}: {v}")
        print(f"batch {args.batch}, dim 32, {args.events:,} events, {args.items:,} items")


if __name__ == "__main__":
    main()
