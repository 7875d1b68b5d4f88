"""The harness reproduces EVALUATION.md's reference figures for popularity on ML-100K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdstream.online import Learner, LearnerConfig, PopularityVariant, Prequential, StudentVariant
from kdstream.replay import read_log
from kdstream.student import StudentConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def ml100k():
    path = DATA / "ml-100k" / "u.data"
    if not path.exists():
        pytest.skip(f"{path} is absent (shared datasets are not shipped with kdstream)")
    cols, report = read_log(path)
    assert report.n_rejected == 0
    return cols


def _run(cols, variants, batch=256):
    pq = Prequential(variants)
    w = np.where(cols.value >= 3.5, 1.0, -1.0)
    for s in range(0, len(cols), batch):
        pq.process(
            cols.user[s : s + batch],
            cols.item[s : s + batch],
            cols.ts[s : s + batch],
            w[s : s + batch],
        )
    return pq.report


def test_popularity_matches_reference_and_student_beats_it(ml100k):
    student = StudentVariant(
        "student", Learner(StudentConfig(seed=0), LearnerConfig(distill=False))
    )
    rep = _run(
        ml100k,
        [PopularityVariant("pop"), PopularityVariant("pop7d", half_life_s=7 * 86400), student],
    )
    assert rep.scored == 54_802
    pop, pop7 = rep.metrics["pop"], rep.metrics["pop7d"]
    # EVALUATION.md: 0.0983 / 0.0502 all-time, 0.0962 / 0.0494 with a 7-day half-life
    assert pop.hr == pytest.approx(0.0983, abs=0.001)
    assert pop.ndcg_at_k == pytest.approx(0.0502, abs=0.001)
    assert pop7.hr == pytest.approx(0.0962, abs=0.001)
    assert pop7.ndcg_at_k == pytest.approx(0.0494, abs=0.001)
    assert rep.metrics["student"].hr > pop.hr
