"""Two builds of the student's C step against each other, in one process: a low-noise A/B.

Run::

    # the build to compare against, e.g. the previous commit's
    git stash && .venv/bin/python setup.py -q build_ext --inplace --force \
        && cp student/_kernel.cpython-311-x86_64-linux-gnu.so /tmp/old.so && git stash pop
    .venv/bin/python setup.py -q build_ext --inplace --force
    .venv/bin/python benchmarks/kernel_ab.py /tmp/old.so \
        student/_kernel.cpython-311-x86_64-linux-gnu.so [--kd 50] [--blocks 60] [--json]
    # one extension's step builds against each other (AVX-512 against AVX2 on a CPU with both)
    so=student/_kernel.cpython-311-x86_64-linux-gnu.so
    .venv/bin/python benchmarks/kernel_ab.py $so $so --old-isa avx2 --new-isa avx512 [--kd 0]

Whole-process runs of ``student_step.py`` move by 10% from one to the next on a shared machine,
which hides a change of a few percent. Here twin students (same config, same batches as
``student_step.py``) learn in alternating short blocks, one with each build swapped in, so slow
spells of the machine hit both; the order inside each pair of blocks alternates too. Prints
each build's events/s and ``new_over_old``; comparing a build with itself gives the noise
(about 1% here). Both students must end with the same tables and as many seen pairs
(``tables_match``): the builds must compute the same update.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from student_step import ITEMS, USERS, make_batches, make_stream, new_student

from kdstream.student import StudentConfig, _fused


def load_build(path: Path, tag: str) -> ModuleType:
    """Import one built ``_kernel`` extension file under a package name of its own, from a copy
    of its own: the loader maps one file once, so the same file twice would share its state
    (the chosen step build among it)."""
    copy = Path(tempfile.mkdtemp(prefix=f"{tag}-")) / path.name
    shutil.copyfile(path, copy)
    spec = importlib.util.spec_from_file_location(f"{tag}._kernel", copy)
    if spec is None or spec.loader is None:
        raise SystemExit(f"not an extension module: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--kd", type=int, default=50, help="soft labels per event (0: plain step)")
    ap.add_argument("--blocks", type=int, default=60, help="timed blocks per build")
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--old-isa", help="the step build the old extension runs (base, avx2, avx512)")
    ap.add_argument("--new-isa", help="the same for the new one (default: the CPU's best)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not _fused.kernel_available():
        raise SystemExit("the C step is not built or KDSTREAM_STUDENT_KERNEL=0")
    builds = {"old": load_build(args.old, "kd_ab_old"), "new": load_build(args.new, "kd_ab_new")}
    for name, isa in (("old", args.old_isa), ("new", args.new_isa)):
        if isa is not None:
            builds[name].isa(isa)  # ValueError where the CPU cannot run it
    users, items = make_stream(args.events, USERS, ITEMS, 0)
    batches = make_batches(users, items, ITEMS, 1024, args.kd, 0)
    n_neg = StudentConfig().n_negatives
    students = {name: new_student(users, ITEMS, 0, n_neg) for name in builds}
    for name, st in students.items():
        # the seen pairs' hash set keeps the build it was made with: give each twin its own
        if hasattr(st.seen.store, "_k"):
            st.seen.store._k = builds[name]
    per = max(1, len(batches) // args.blocks)
    n_blocks = min(args.blocks, len(batches) // per)
    seconds = dict.fromkeys(builds, 0.0)
    saved = _fused._kernel
    try:
        for b in range(n_blocks):
            for name in ("old", "new") if b % 2 == 0 else ("new", "old"):
                _fused._kernel = builds[name]
                st = students[name]
                start = time.perf_counter()
                for u, i, w, negs, neg_logq, pos_logq, soft in batches[b * per : (b + 1) * per]:
                    st.learn_many(u, i, w, negs, neg_logq, pos_logq, soft=soft)
                seconds[name] += time.perf_counter() - start
    finally:
        _fused._kernel = saved
    n_events = sum(len(bt[0]) for bt in batches[: n_blocks * per])
    match = all(
        np.allclose(getattr(students["old"], t), getattr(students["new"], t), rtol=1e-3, atol=1e-5)
        for t in ("P", "Q", "C", "b")
    ) and len(students["old"].seen) == len(students["new"].seen)
    out = {
        "kd": args.kd,
        "events": n_events,
        "old_events_per_s": round(n_events / seconds["old"]),
        "new_events_per_s": round(n_events / seconds["new"]),
        "new_over_old": round(seconds["old"] / seconds["new"], 4),
        "tables_match": match,
    }
    print(json.dumps(out) if args.json else "\n".join(f"{k:>18}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
