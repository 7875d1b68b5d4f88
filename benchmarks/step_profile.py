"""Where the student's C step spends its time: cycles per section, with and without distillation.

Run (a profile build: timers at each section of the step, x86-64 only)::

    CFLAGS=-DKD_PROFILE .venv/bin/python setup.py -q build_ext --inplace --force
    .venv/bin/python benchmarks/step_profile.py [--events N] [--json]
    .venv/bin/python setup.py -q build_ext --inplace --force     # back to the normal build

The same stream and batches as ``student_step.py`` (dimension 32, 1,024 events per batch,
50,000 users, 20,000 items, 128 shared negatives, M = 50 soft labels with distillation). Prints
each section's share of the step's cycles and the cycles per event. The timers cost a few
percent; the shares, not the speed, are what this is for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from student_step import ITEMS, USERS, make_batches, make_stream, new_student

from kdstream.student import StudentConfig, _fused


def profile(users, items, n_items: int, kd_m: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    st = new_student(users, n_items, 0, StudentConfig().n_negatives)
    batches = make_batches(users, items, n_items, 1024, kd_m, 0)
    _fused._kernel.profile()  # clear
    for u, i, w, negs, neg_logq, pos_logq, soft in batches:
        st.learn_many(u, i, w, negs, neg_logq, pos_logq, soft=soft)
    cycles: dict[str, float] = _fused._kernel.profile()
    total = sum(cycles.values())
    return {
        "cycles_per_event": round(total / len(users)),
        "shares": {name: round(c / total, 3) for name, c in cycles.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not _fused.kernel_available() or _fused._kernel.profile() is None:
        raise SystemExit(
            "needs the profile build: CFLAGS=-DKD_PROFILE .venv/bin/python setup.py -q "
            "build_ext --inplace --force (x86-64)"
        )
    users, items = make_stream(args.events, USERS, ITEMS, 0)
    out = {f"m{kd}": profile(users, items, ITEMS, kd) for kd in (0, 50)}
    if args.json:
        print(json.dumps(out))
        return
    for key, res in out.items():
        print(f"{key}: {res['cycles_per_event']:,} cycles per event")
        for name, share in res["shares"].items():  # type: ignore[union-attr]
            print(f"  {name:<28} {share:6.1%}")


if __name__ == "__main__":
    main()
