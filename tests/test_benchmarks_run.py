"""Smoke tests of the benchmark scripts that need no Kafka: each runs end to end, as a
subprocess from the repository root, with tiny arguments, so a script that rots (an API it
calls changed under it) fails CI instead of the next person who reproduces a figure. Timing
figures are not checked, only that the run succeeds and prints the keys the docs quote, with
finite numbers. ``tests/integration/test_benchmarks_kafka.py`` covers the Kafka ones.

``kd_ablation.py`` runs on a 3,000-event synthetic stream, in one process. Not here: the
cluster scenarios of ``faults.py`` (they start their own Kafka; the integration module runs one).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
REDIS_PW = "bench-smoke-pw"
TIMEOUT_S = 120


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script> <args>`` from the repository root, one BLAS thread."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip


def run_json(script: str, *args: str) -> Any:
    """Runs the script, asserts success and returns its last stdout line parsed as JSON."""
    proc = run_script(script, *args)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing"
    return json.loads(lines[-1])


def run_json_whole(script: str, *args: str) -> Any:
    """As :func:`run_json`, for scripts that print one indented JSON object."""
    proc = run_script(script, *args)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def assert_finite(value: Any, *, positive: bool = False) -> None:
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    assert math.isfinite(value), value
    if positive:
        assert value > 0, value


def need_datasets() -> None:
    if not (DATASETS / "ml-100k" / "u.data").exists():
        pytest.skip(f"{DATASETS} is absent (ML-100K)")


@pytest.fixture
def redis_password() -> str:
    """The password of the ``password_redis`` server (tests/conftest.py)."""
    return REDIS_PW


def test_student_step() -> None:
    out = run_json("student_step.py", "--events", "3000", "--river-events", "300", "--json")
    for key in ("kdstream_events_per_s", "kdstream_kd_events_per_s", "river_events_per_s",
                "ratio_vs_river"):  # fmt: skip
        assert_finite(out[key], positive=True)


def _kernel_so() -> Path:
    from kdstream.student import _fused

    builds = sorted((ROOT / "student").glob("_kernel*.so"))
    if not builds or not _fused.kernel_available():
        pytest.skip("the student's C step is not built (student/_kernel*.so)")
    return builds[0]


def test_kernel_ab_same_update_across_step_builds() -> None:
    so = str(_kernel_so())
    # the portable build against the CPU's best: both must compute the same tables
    out = run_json("kernel_ab.py", so, so, "--old-isa", "base", "--events", "3000",
                   "--blocks", "2", "--json")  # fmt: skip
    assert out["tables_match"] is True, out
    for key in ("old_events_per_s", "new_events_per_s", "new_over_old"):
        assert_finite(out[key], positive=True)


def test_step_profile_needs_the_profile_build() -> None:
    from kdstream.student import _fused

    profiled = _fused.kernel_available() and _fused._kernel.profile() is not None
    proc = run_script("step_profile.py", "--events", "3000", "--json")
    if profiled:  # a -DKD_PROFILE build: it runs
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert set(out) == {"m0", "m50"}
        assert_finite(out["m0"]["cycles_per_event"], positive=True)
        return
    # a normal build: it refuses with how to make the profile build, not a traceback
    assert proc.returncode == 1
    assert "needs the profile build" in proc.stderr and "KD_PROFILE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_top_k_memory() -> None:
    out = run_json("top_k.py", "--items", "2000", "5000", "--requests", "3", "--json")
    assert [row["items"] for row in out] == [2000, 5000]
    for row in out:
        for key in ("shared_ms", "copied_ms"):
            assert_finite(row[key])
            assert row[key] >= 0


def test_top_k_cold_start_redis(password_redis_url: str) -> None:
    out = run_json("top_k.py", "--items", "2000", "--requests", "3", "--cold-start",
                   "--redis", password_redis_url, "--json")  # fmt: skip
    (row,) = out
    assert row["items"] == 2000
    for path in ("old", "new", "background"):
        assert_finite(row[path]["p50_ms"], positive=True)
        assert_finite(row[path]["p99_ms"], positive=True)


def _check_item_sync(out: Any) -> None:
    (row,) = out
    assert row["items"] == 3000
    for mode in ("full", "since"):
        for key in ("sync_ms", "hub_ms", "write_ms", "read_ms", "pushed", "pulled"):
            assert_finite(row[mode][key])
        assert row[mode]["pushed"] > 0
    # the full mode pulls the whole table, the incremental one only changed rows
    assert row["full"]["pulled"] == 3000 > row["since"]["pulled"] > 0


ITEM_SYNC_ARGS = ("--items", "3000", "--dim", "8", "--rounds", "2", "--batches", "1",
                  "--batch-size", "64", "--json")  # fmt: skip


def test_item_sync_memory() -> None:
    _check_item_sync(run_json_whole("item_sync.py", *ITEM_SYNC_ARGS))


def test_item_sync_redis(password_redis_url: str) -> None:
    _check_item_sync(run_json_whole("item_sync.py", *ITEM_SYNC_ARGS, "--redis", password_redis_url))


def test_serving_refresh(password_redis_url: str) -> None:
    out = run_json("serving_refresh.py", "--redis", password_redis_url, "--items", "2000",
                   "--dim", "8", "--rows", "10", "--sync-every-s", "0.2", "--seconds", "1",
                   "--rounds", "1", "--json")  # fmt: skip
    for mode in ("inline", "background"):
        assert out[mode]["requests"] > 0
        assert out[mode]["writes"] > 0
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
            assert_finite(out[mode][key], positive=True)


def test_serving() -> None:
    out = run_json("serving.py", "--json", "--items", "500", "--users", "50", "--rps", "50",
                   "--seconds", "1", "--trials", "5")  # fmt: skip
    for key in ("freshness_p50_ms", "freshness_p99_ms", "rec_p50_ms", "rec_p99_ms", "rps"):
        assert_finite(out[key], positive=True)
    assert out["kafka_freshness_p99_ms"] is None  # no --broker


def test_negatives() -> None:
    out = run_json("negatives.py", "--batches", "5", "--json")
    assert set(out) == {"1500", "20000", "200000", "1000000"}
    for row in out.values():
        for key in ("choice_us", "every_batch_us", "sampler_us"):
            assert_finite(row[key], positive=True)


def test_exp_fit() -> None:
    out = run_json("exp_fit.py", "--json")
    for key in ("c2", "c3", "c4"):
        assert_finite(out[key], positive=True)
    # what the kernel's comment quotes: a relative error of a few 1e-6 at most
    for key in ("max_rel_err_degree4", "max_rel_err_degree4_no_fma", "max_rel_err_degree6"):
        assert_finite(out[key])
        assert 0 <= out[key] < 1e-4


def _check_hit_rates(res: dict[str, Any], variants: list[str]) -> None:
    assert set(res) == {"popularity", *variants}
    for value in res.values():
        assert_finite(value)
        assert 0 <= value <= 1


def test_student_ablation_synthetic() -> None:
    out = run_json("student_ablation.py", "--no-real", "--events", "3000", "--json")
    assert set(out) == {"synthetic"}
    _check_hit_rates(out["synthetic"], ["mean", "fixed-0.5", "learned", "last-item",
                                        "negatives-32", "negatives-64", "negatives-256"])


def test_student_ablation_real_logs() -> None:
    need_datasets()
    out = run_json("student_ablation.py", "--events", "2000", "--only", "learned", "--json")
    assert "ml-100k" in out
    for res in out.values():
        _check_hit_rates(res, ["learned"])


def test_synthetic_headroom() -> None:
    out = run_json("synthetic_headroom.py", "--events", "3000")
    assert out["events"] == 3000 and out["scored"] > 0
    for part in ("oracle", "oracle_last_30pct"):
        for key in ("hr@10", "ndcg@10"):
            assert_finite(out[part][key])
            assert 0 < out[part][key] <= 1


def _check_teacher_quality(out: dict[str, Any]) -> None:
    assert out["n_cases"] > 0
    for key in ("hr@10", "ndcg@10"):
        assert_finite(out[key])
        assert 0 <= out[key] <= 1
    assert out["fit"]["epochs"] == 1
    assert_finite(out["fit"]["final_loss"], positive=True)


TEACHER_ARGS = ("--epochs", "1", "--dim", "16", "--threads", "1")


def test_teacher_quality_synthetic() -> None:
    out = run_json_whole("teacher_quality.py", "--synthetic", "3000", *TEACHER_ARGS)
    assert out["train_events"] == 2100 and out["test_events"] == 900
    _check_teacher_quality(out)


def test_teacher_quality_ml100k() -> None:
    need_datasets()
    _check_teacher_quality(run_json_whole("teacher_quality.py", *TEACHER_ARGS))


KD_VARIANTS = {"popularity", "student", "student+kd", "teacher"}


def test_kd_ablation_synthetic() -> None:
    # "default" twice: scaled_config runs are reproducible, which the ablation relies on
    configs = ["default", "alpha-1.0", "default"]
    # 6,000 events: two teacher refreshes, the second on a grown catalogue
    proc = run_script("kd_ablation.py", "syn", "--events", "6000", "--procs", "1",
                      "--configs", ",".join(configs))  # fmt: skip
    assert proc.returncode == 0, f"kd_ablation.py exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    rows = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [(r["data"], r["config"]) for r in rows] == [("syn", c) for c in configs]
    for row in rows:
        assert set(row) == {"data", "config", "seconds", *KD_VARIANTS}, row
        assert_finite(row["seconds"])
        for name in KD_VARIANTS:
            assert_finite(row[name])
            assert 0 <= row[name] <= 1, (name, row)
        assert row["popularity"] > 0 and row["student"] > 0, row
    first, alpha, again = ({k: r[k] for k in KD_VARIANTS} for r in rows)
    assert again == first  # same stream, same seeds: the same figures
    # the change is one of distillation: the undistilled variants and the teacher (which
    # trains on the stream alone, with its own seed) are the same
    for name in ("popularity", "student", "teacher"):
        assert alpha[name] == first[name], (name, alpha, first)


@pytest.mark.parametrize(("args", "message"), [
    (("--configs", "default,no-such"), "unknown configuration(s) no-such"),
    (("--events", "0", "syn"), "--events must be positive"),
])  # fmt: skip
def test_kd_ablation_refuses_bad_arguments(args: tuple[str, ...], message: str) -> None:
    proc = run_script("kd_ablation.py", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_faults_hostile_input_runs() -> None:
    # the runs of faults.py that need no cluster (its scenarios start their own Kafka)
    out = run_json("faults.py", "--only", "fuzz_decoders", "fuzz_api", "--fuzz-records", "2000",
                   "--api-records", "200", "--json")  # fmt: skip
    assert set(out) == {"fuzz_decoders", "fuzz_api"}
    assert out["fuzz_decoders"]["produced"] == 2000
    assert out["fuzz_api"]["produced"] == 200
    for res in out.values():
        assert res["lost"] == 0 and res["duplicated"] == 0
        assert res["learned"] + res["dead_lettered"] > 0
