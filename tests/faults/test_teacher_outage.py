"""Scenario 5: the teacher process killed and kept down for several refresh intervals."""

from __future__ import annotations

import time
from pathlib import Path

from kdstream.api import StoreServingService
from kdstream.stream import MemoryStore, StoreBatch

from .scenarios import FaultCluster, scenario_teacher_outage


def test_store_health_reports_a_stale_teacher() -> None:
    store = MemoryStore()
    service = StoreServingService(store, teacher_stale_s=60)
    assert service.health()["checks"]["teacher"]["age_s"] is None  # no teacher seen yet
    assert service.health()["status"] == "ok"
    store.write_batch(StoreBatch(versions={"teacher": 3, "teacher_seen_at": int(time.time())}))
    assert service.health()["status"] == "ok"
    store.write_batch(StoreBatch(versions={"teacher_seen_at": int(time.time()) - 600}))
    report = service.health()
    assert report["status"] == "degraded", report
    assert report["checks"]["teacher"]["ok"] is False
    assert report["checks"]["teacher"]["age_s"] >= 600
    assert report["checks"]["teacher"]["version"] == 3


def test_teacher_outage_student_keeps_learning_labels_fade_and_resume(
    fault_cluster: FaultCluster, prefix: str, log_dir: Path
) -> None:
    r = scenario_teacher_outage(fault_cluster, prefix, log_dir, every_s=2.0, down_intervals=5)
    x = r.as_dict()
    assert r.lost == 0 and r.duplicated == 0, x
    assert r.learned + r.dead_lettered == r.produced, x
    assert x["applied_during_outage"] > 0, x  # the student kept learning
    assert x["alpha_ppm_max_before_kill"] > 0, x  # distillation was on
    assert x["alpha_ppm_end_of_outage"] < x["alpha_ppm_max_before_kill"], x  # labels faded
    assert x["health_during_outage"] == "degraded", x
    assert x["teacher_version_after"] > x["teacher_version_at_kill"], x  # resumed
    assert x["alpha_ppm_after_restart"] > 0, x  # distillation resumed
    assert x["health_after_restart"] == "ok", x
