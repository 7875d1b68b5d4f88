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


def test_negatives_are_what_choice_draws_with_the_popularity_prior():
    """On a catalogue rebuilt every batch the sampler draws as Generator.choice(p=q) would from
    the same generator (q ∝ count**neg_exponent + 1e-3), and its log-Q terms are log(S q) of
    the drawn negatives and of the batch's items."""
    lr = Learner(StudentConfig(dim=4, n_negatives=64), LearnerConfig(neg_exponent=0.5, seed=3))
    rng = np.random.default_rng(0)
    for _ in range(3):  # a rebuild at every batch: 300 items, 500 events per batch
        items = rng.integers(0, 300, 500)
        lr.counts.learn_many(items, np.ones(500), np.zeros(500))
        twin = np.random.default_rng()
        twin.bit_generator.state = lr._rng.bit_generator.state
        negatives, neg_logq, pos_logq = lr.negatives.draw(lr.counts, 300, items)
        prior = lr.counts.scores(300) ** 0.5 + 1e-3
        q = prior / prior.sum()
        np.testing.assert_array_equal(negatives, twin.choice(300, size=64, p=q))
        np.testing.assert_allclose(neg_logq, np.log(64 * q[negatives]), rtol=1e-12)
        np.testing.assert_allclose(pos_logq, np.log(64 * q[items]), rtol=1e-12)
    assert lr.negatives.rebuilds == 3
    assert len(np.unique(negatives)) > 10  # a real draw, not one item


def test_negatives_table_is_rebuilt_at_a_bounded_rate_on_a_large_catalogue():
    """A catalogue of 100,000 items is rebuilt once 6,250 events have been drawn for (1/16 of
    it), or when it doubles; in between new items are not drawn and take the floor's log q."""
    from kdstream.online._negatives import NegativeSampler
    from kdstream.online._popularity import Popularity

    rng = np.random.default_rng(0)
    counts = Popularity()
    sampler = NegativeSampler(0.5, 32, np.random.default_rng(1))
    items = rng.integers(0, 100_000, 256)
    counts.learn_many(items, np.ones(256), np.zeros(256))
    sampler.draw(counts, 100_000, items)
    for _ in range(23):  # 24 batches of 256 = 6,144 events: no rebuild yet
        sampler.draw(counts, 100_000, items)
    assert sampler.rebuilds == 1
    neg, _, pos_logq = sampler.draw(counts, 150_000, np.array([5, 120_000]))
    assert sampler.rebuilds == 1 and neg.max() < 100_000  # new items wait for the rebuild
    floor_q = 1e-3 / (np.sqrt(counts.scores(100_000)) + 1e-3).sum()
    assert pos_logq[1] == pytest.approx(np.log(32 * floor_q))
    sampler.draw(counts, 150_000, items)  # 6,146 events since the build: not yet
    assert sampler.rebuilds == 1
    sampler.draw(counts, 150_000, items)  # 6,402: due
    assert sampler.rebuilds == 2
    sampler.draw(counts, 300_000, items)  # the catalogue doubled
    assert sampler.rebuilds == 3


@pytest.mark.parametrize("half_life", [None, 100.0])
def test_popularity_sums_a_small_batch_as_a_pass_over_the_table_would(half_life):
    """A batch far smaller than the table is summed over its own items: the same bits as the
    whole-table pass, repeated items included."""
    from kdstream.online._popularity import Popularity

    rng = np.random.default_rng(1)
    small, whole = Popularity(half_life), Popularity(half_life)
    whole._grow(100_000)
    small._grow(100_000)
    for step in range(5):
        items = rng.zipf(1.3, 200) % 100_000  # heavy repeats
        w, ts = rng.random(200), np.full(200, 10.0 * step)
        small.learn_many(items, w, ts)
        # the whole-table pass, as the update makes it for a batch near the table's size
        if half_life is not None:
            if whole._t_ref is None:
                whole._t_ref = float(ts[0])
            w = w * np.exp2((ts - whole._t_ref) / half_life)
        whole._s += np.bincount(items, weights=w, minlength=len(whole._s))[: len(whole._s)]
    np.testing.assert_array_equal(small.scores(100_000), whole.scores(100_000))
    assert small.scores(100_000).max() > 1
