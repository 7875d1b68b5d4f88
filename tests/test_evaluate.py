"""``evaluate``: report keys, determinism, the river sample, files written, an ML-100K slice."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from kdstream.errors import ConfigError
from kdstream.online._river import RiverMFVariant
from kdstream.replay import SyntheticConfig, generate
from kdstream.replay._evaluate import auto_sample_every, evaluate, parse_variants, without_timing
from kdstream.replay._report import report_json
from kdstream.stream import encode_event

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
ALL = ("popularity", "river-mf", "student", "student+kd", "teacher")
METRICS = {"hr@10", "ndcg@10", "mrr"}
VARIANT_KEYS = METRICS | {"events", "events_per_s", "update_time_s"}
DISTILLATION_KEYS = {
    "student_params",
    "teacher_params",
    "size_ratio",
    "student_top10_ms",
    "teacher_top10_ms",
    "speedup",
    "student_share_of_teacher_hr",
    "student_kd_share_of_teacher_hr",
}


def _jsonl(path: Path, n_events: int, seed: int) -> Path:
    cols = generate(SyntheticConfig(n_users=150, n_items=120, n_events=n_events, seed=seed))
    path.write_bytes(b"".join(encode_event(e) + b"\n" for e in cols.to_events()))
    return path


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _jsonl(tmp_path_factory.mktemp("log") / "events.jsonl", 3_000, seed=4)


@pytest.fixture(scope="module")
def first(log: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("run1")
    return evaluate(log, seed=7, out_dir=out, river_sample=3), out


def _without_timing(report: dict) -> str:
    return report_json(without_timing(report))


def test_report_has_exactly_the_specified_keys(first: tuple[dict, Path]) -> None:
    report, out = first
    assert set(report) == {"metadata", "variants", "sample", "distillation"}
    assert list(report["variants"]) == list(ALL)
    for v in report["variants"].values():
        assert set(v) == VARIANT_KEYS
        assert v["events"] == 3_000
    assert set(report["distillation"]) == DISTILLATION_KEYS
    meta = report["metadata"]
    for key in (
        "dataset",
        "events",
        "scored",
        "cold_share",
        "repeat_share",
        "batch_size",
        "seed",
        "sample_every",
    ):
        assert key in meta
    assert meta["events"] == 3_000 and meta["seed"] == 7 and meta["sample_every"] == 3
    assert json.loads((out / "report.json").read_text()) == report


def test_distillation_figures_are_consistent(first: tuple[dict, Path]) -> None:
    report, _ = first
    d, v = report["distillation"], report["variants"]
    assert d["student_params"] > 0 and d["teacher_params"] > 0
    assert d["size_ratio"] == pytest.approx(d["teacher_params"] / d["student_params"], rel=1e-5)
    teacher_hr = v["teacher"]["hr@10"]
    assert d["student_share_of_teacher_hr"] == pytest.approx(
        v["student"]["hr@10"] / teacher_hr, abs=1e-5
    )
    assert d["student_kd_share_of_teacher_hr"] == pytest.approx(
        v["student+kd"]["hr@10"] / teacher_hr, abs=1e-5
    )
    t = report["distillation"]
    assert t["student_top10_ms"] > 0 and t["teacher_top10_ms"] > 0
    assert t["speedup"] == pytest.approx(t["teacher_top10_ms"] / t["student_top10_ms"], rel=1e-3)


def test_river_is_scored_on_the_sample_and_every_variant_has_sample_figures(
    first: tuple[dict, Path],
) -> None:
    report, _ = first
    meta, sample = report["metadata"], report["sample"]
    assert meta["sampled_variants"] == ["river-mf"]
    assert sample["every"] == 3
    # every 3rd scored event, counting from the first
    assert sample["scored"] == -(-meta["scored"] // 3) == meta["sampled"]
    assert list(sample["variants"]) == list(ALL)
    assert all(set(m) == METRICS for m in sample["variants"].values())
    # the sampled-only variant's headline figures are its sample figures
    assert report["variants"]["river-mf"]["hr@10"] == sample["variants"]["river-mf"]["hr@10"]
    # the others' sample figures come from a subset of their events, so they differ somewhere
    assert any(
        sample["variants"][n]["mrr"] != report["variants"][n]["mrr"]
        for n in ("popularity", "student", "student+kd", "teacher")
    )
    assert 0.0 < report["variants"]["river-mf"]["mrr"] <= 1.0


def test_same_seed_same_report_apart_from_timing(
    log: Path, first: tuple[dict, Path], tmp_path: Path
) -> None:
    again = evaluate(log, seed=7, out_dir=tmp_path, river_sample=3)
    assert _without_timing(again) == _without_timing(first[0])
    text = (tmp_path / "report.json").read_text()
    assert _without_timing(json.loads(text)) == _without_timing(first[0])


def test_another_seed_changes_the_students(log: Path, first: tuple[dict, Path]) -> None:
    other = evaluate(log, variants="popularity,student", seed=8, river_sample=3)
    mine, theirs = without_timing(other["variants"]), without_timing(first[0]["variants"])
    assert mine["popularity"] == theirs["popularity"]
    assert mine["student"] != theirs["student"]


def test_files_written(first: tuple[dict, Path]) -> None:
    _, out = first
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| variant | HR@10 | NDCG@10 | MRR | events/s |" in md
    for name in ALL:
        assert f"| {name}" in md
    assert "What distillation bought" in md and "How to read this" in md


def test_progress_bar_and_subset_without_river(log: Path) -> None:
    stream = io.StringIO()
    report = evaluate(
        log,
        variants=["student", "popularity"],
        seed=1,
        limit=1_000,
        progress=True,
        progress_stream=stream,
    )
    assert "evaluate 1000/1000" in stream.getvalue()
    assert list(report["variants"]) == ["student", "popularity"]
    assert "sample" not in report and report["metadata"]["sample_every"] == 1
    assert report["metadata"]["events"] == 1_000
    assert report["distillation"]["teacher_params"] is None
    assert report["distillation"]["student_share_of_teacher_hr"] is None


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="variants"):
        parse_variants("popularity,bogus")
    with pytest.raises(ConfigError, match="variants"):
        parse_variants("")
    assert parse_variants("student, student,teacher") == ("student", "teacher")


def test_auto_sample_keeps_river_within_budget() -> None:
    cols = generate(SyntheticConfig(n_users=50, n_items=40, n_events=500, seed=0))
    assert auto_sample_every(cols) == 1
    big = generate(SyntheticConfig(n_users=2_000, n_items=1_000, n_events=200_000, seed=0))
    every = auto_sample_every(big)
    assert every > 1
    # predict_one calls: sampled positives x catalogue stays near the budget
    assert 200_000 / every * 1_000 <= 10_000_000 * 1.01


def test_river_variant_learns_positives_above_negatives() -> None:
    v = RiverMFVariant(n_factors=4, seed=0)
    rng = np.random.default_rng(0)
    users = rng.integers(0, 20, 4_000)
    items = rng.integers(0, 2, 4_000)
    # item 0 always liked, item 1 always disliked
    v.learn_many(users, items, np.zeros(4_000), np.where(items == 0, 1.0, -1.0))
    s = v.scores(np.array([3, 7]), np.array([0, 0]), 2)
    assert s.shape == (2, 2)
    assert (s[:, 0] > s[:, 1]).all()


@pytest.mark.datasets
@pytest.mark.slow
def test_ml100k_slice_completes(tmp_path: Path) -> None:
    src = DATASETS / "ml-100k" / "u.data"
    if not src.exists():
        pytest.skip(f"ML-100K not found at {src}")
    with src.open() as fh:
        head = [next(fh) for _ in range(20_000)]
    path = tmp_path / "u.data"
    path.write_text("".join(head))
    report = evaluate(path, seed=0, out_dir=tmp_path / "out", river_sample=20)
    meta = report["metadata"]
    assert meta["format"] == "movielens-100k" and meta["events"] == 20_000
    assert meta["scored"] > 5_000 and meta["teacher_refreshes"] >= 5
    for name in ALL:
        assert 0.0 <= report["variants"][name]["hr@10"] <= 1.0
    assert report["variants"]["popularity"]["hr@10"] > 0.02
    assert (tmp_path / "out" / "curves.png").exists()
