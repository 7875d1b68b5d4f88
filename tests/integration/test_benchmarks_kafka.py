"""Smoke tests of the Kafka benchmark scripts: each runs end to end, as a subprocess from the
repository root, against the suite's local Kafka and Redis with tiny arguments, so a script
that rots fails CI. Timing figures are not checked, only what must hold at any size (nothing
lost; soft labels applied where and as many as in the embedded run) and finite figures.

Not here: ``kd_ablation.py`` (no tiny mode) and the cluster scenarios of ``faults.py`` (each
starts its own Kafka; minutes). ``tests/test_benchmarks_run.py`` covers the other scripts.
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

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT.parent / "shared" / "datasets"
TIMEOUT_S = 240


def run_json(script: str, *args: str) -> Any:
    """``python benchmarks/<script> <args> --json`` from the repository root; asserts success
    and returns its last stdout line parsed as JSON."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing"
    return json.loads(lines[-1])


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_kafka_e2e(kafka_bootstrap: str, redis_url: str) -> None:
    out = run_json("kafka_e2e.py", "--broker", kafka_bootstrap, "--redis", redis_url,
                   "--events", "3000", "--partitions", "2", "--skip-two",
                   "--latency-seconds", "2")  # fmt: skip
    assert out["events"] == 3000
    assert out["lost"] == 0, out
    for key in ("events_per_s", "faust_events_per_s", "bare_faust_events_per_s",
                "latency_p50_ms", "latency_p99_ms", "faust_latency_p50_ms",
                "faust_latency_p99_ms", "produce_events_per_s"):  # fmt: skip
        assert positive(out[key]), (key, out)
    assert out["two_processor_events_per_s"] is None  # --skip-two


def test_kafka_parity(kafka_bootstrap: str, redis_url: str) -> None:
    if not (DATASETS / "ml-100k" / "u.data").exists():
        pytest.skip(f"{DATASETS} is absent (ML-100K)")
    out = run_json("kafka_parity.py", "--broker", kafka_bootstrap, "--redis", redis_url,
                   "--dataset", "ml-100k", "--limit", "3000", "--every", "1000",
                   "--teacher-epochs", "1", "--teacher-dim", "16",
                   "--idle-exit-s", "120")  # fmt: skip
    assert out["events"] == 3000
    assert out["label_positions_match"] is True, out
    assert out["scored"][0] == out["scored"][1] > 0, out
    emb_labels, kafka_labels = out["soft_labels_applied"]
    assert kafka_labels == emb_labels > 0, out
    for key in ("embedded_hr@10", "kafka_hr@10", "embedded_student_hr@10",
                "kafka_student_hr@10"):  # fmt: skip
        assert 0 <= out[key] <= 1, (key, out)
