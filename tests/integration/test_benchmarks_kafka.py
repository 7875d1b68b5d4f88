"""Smoke tests of the Kafka benchmark scripts: each runs end to end, as a subprocess from the
repository root, against the suite's local Kafka and Redis (``faults.py``: its own, below) with
tiny arguments, so a script that rots fails CI. Timing figures are not checked, only what must
hold at any size (nothing lost; soft labels applied where and as many as in the embedded run)
and finite figures.

``faults.py`` runs one cluster scenario, ``processor_kills`` with one kill at 100 events/s
(about 20 s): the script starts and wipes its own Kafka and Redis (its scenarios restart
servers), under a temporary directory the test then checks no process still uses. Its other
cluster scenarios (restarts, outages, slow servers) run, at small counts, in ``tests/faults/``.
``tests/test_benchmarks_run.py`` covers the scripts that need no Kafka.
"""

from __future__ import annotations

import json
import math
import os
import signal
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


def _processes_using(path: Path) -> list[int]:
    """Pids of live processes working in ``path`` or naming it on their command line: the
    local Kafka and Redis run in their home (redis-server rewrites its command line), which
    the faults script makes under its temporary directory."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # it just exited, or is not ours to read
            continue
        if cwd.is_relative_to(path) or str(path).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_faults_processor_kills(cluster: Any, tmp_path: Path) -> None:
    # `cluster` only gates the test: where the suite's Kafka cannot start, neither can the
    # script's own (skipped, or failed under KDSTREAM_REQUIRE_SERVICES, like the rest)
    tmp = tmp_path.resolve()  # as /proc shows it
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "faults.py"), "--only", "processor_kills",
           "--kills", "1", "--rate", "100", "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGINT, not SIGKILL: its finally blocks stop the processors and wipe the cluster
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        pytest.fail(f"faults.py ran past {TIMEOUT_S}s:\n{err[-3000:]}")
    finally:
        leaked = _processes_using(tmp)
        for pid in leaked:  # never leave a broker behind, even when the run failed
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, f"faults.py exited {proc.returncode}:\n{err[-3000:]}"
    assert not leaked, f"faults.py left its Kafka/Redis running: pids {leaked}"
    assert not list(tmp.iterdir()), "faults.py left its cluster's home behind"
    r = json.loads(out.strip().splitlines()[-1])["processor_kills"]
    assert r["kills"] == 1 and r["produced"] >= 300, r  # a few seconds of load at least
    # what tests/faults/test_processor_faults.py holds at any count: every record learned
    # exactly once or dead-lettered, the SIGKILL notwithstanding
    assert r["lost"] == 0 and r["duplicated"] == 0, r
    assert r["learned"] + r["dead_lettered"] == r["produced"], r
    assert r["unexpected"] == 0 and r["producer_failed"] == 0, r
    assert r["learned_counter"] == r["learned"], r
    assert r["dead_lettered"] == r["dlq_distinct"] > 0, r  # one in 97 records is malformed
    assert positive(r["recovery_s"]) and positive(r["wall_s"]), r
