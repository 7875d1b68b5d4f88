"""Learner: soft-label tables, the mixing weight's fade, transition labels on new users."""

from __future__ import annotations

import numpy as np
import pytest

from kdstream.errors import ConfigError
from kdstream.online import IndexedSoftLabels, Learner, LearnerConfig
from kdstream.student import StudentConfig


def _labels(version: int, trained_until: float, transition: bool = False) -> IndexedSoftLabels:
    return IndexedSoftLabels(
        version=version,
        trained_until=trained_until,
        temperature=2.0,
        keys=np.array([0, 1, 2]),
        items=np.array([[3, 4, -1], [5, 6, 7], [1, 2, 3]]),
        logits=np.array([[2.0, 1.0, -np.inf], [1.0, 0.5, 0.0], [0.3, 0.2, 0.1]], np.float32),
        transition=transition,
    )


def test_mixing_weight_fades_with_age_at_one_refresh_interval():
    lr = Learner(StudentConfig(dim=4), LearnerConfig(kd_alpha=0.8))
    lr.apply_soft_labels(_labels(1, 100.0))
    # one version seen: no interval known yet, full weight
    assert lr.alpha_for(np.array([100.0]), np.array([500.0]))[0] == pytest.approx(0.8)
    lr.apply_soft_labels(_labels(2, 200.0))
    assert lr.half_life() == pytest.approx(100.0)
    a = lr.alpha_for(np.array([200.0, 200.0, 200.0]), np.array([200.0, 300.0, 700.0]))
    assert a[0] == pytest.approx(0.8)
    assert a[1] == pytest.approx(0.4)
    assert a[2] == 0.0  # older than 4 half-lives: ignored


def test_transition_labels_apply_to_brand_new_users_beyond_capacity():
    lr = Learner(StudentConfig(dim=4, context_len=2, n_negatives=4), LearnerConfig())
    lr.learn_many(np.arange(5), np.arange(5), np.zeros(5), np.ones(5))
    lr.apply_soft_labels(_labels(1, 0.0, transition=True))
    users = np.repeat(np.arange(100, 300), 2)  # far beyond the tables' first capacity
    items = np.tile(np.array([0, 1]), 200)
    lr.learn_many(users, items, np.ones(400), np.ones(400))
    assert lr.student.n_users == 300
    lr.student.check_finite()


def test_plain_student_ignores_soft_labels():
    lr = Learner(StudentConfig(dim=4), LearnerConfig(distill=False))
    lr.apply_soft_labels(_labels(1, 0.0))
    assert not lr.user_labels.has.any()


def test_config_rejects_bad_alpha():
    with pytest.raises(ConfigError, match="kd_alpha"):
        LearnerConfig(kd_alpha=1.5)
