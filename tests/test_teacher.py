"""Tests of kdstream.teacher: SASRec teacher, refresh policy, background worker."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kdstream.teacher as teacher_pkg
from kdstream.errors import ConfigError, StateError
from kdstream.teacher import (
    RefreshPolicy,
    SASRecTeacher,
    TeacherConfig,
    TeacherJob,
    TeacherResult,
    TeacherWorker,
)

N_ITEMS = 8


def tiny_config(**overrides: object) -> TeacherConfig:
    base: dict[str, object] = dict(
        dim=16,
        n_layers=1,
        n_heads=2,
        max_len=8,
        dropout=0.0,
        lr=1e-2,
        batch_size=16,
        epochs=40,
        time_budget_s=60.0,
        top_m=3,
        device="cpu",
        seed=0,
    )
    base.update(overrides)
    return TeacherConfig(**base)  # type: ignore[arg-type]


def cyclic_stream(
    n_users: int = 12, length: int = 16, n_items: int = N_ITEMS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved events where each user walks i -> i+1 (mod n_items) from a random start."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, size=n_users)
    seqs = (starts[:, None] + np.arange(length)[None, :]) % n_items  # (U, T)
    users = np.repeat(np.arange(n_users), length).reshape(n_users, length)
    # time order = step-major, so users interleave as in a real stream
    return users.T.ravel().astype(np.int32), seqs.T.ravel().astype(np.int32)


@pytest.fixture(scope="module")
def fitted() -> SASRecTeacher:
    users, items = cyclic_stream()
    teacher = SASRecTeacher(tiny_config())
    report = teacher.fit(users, items, N_ITEMS)
    assert report.version == 1 and report.epochs == 40
    return teacher


# ---------------------------------------------------------------- learning and labels
def test_transition_labels_rank_successor_first(fitted: SASRecTeacher) -> None:
    items = np.arange(N_ITEMS, dtype=np.int32)
    idx, logits = fitted.transition_soft_labels(items)
    assert idx.shape == (N_ITEMS, 3) and idx.dtype == np.int32
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(idx[:, 0], (items + 1) % N_ITEMS)
    assert (idx != items[:, None]).all()
    assert (np.diff(logits, axis=1) <= 0).all()  # best first


def test_user_labels_follow_last_item_and_exclude_history(fitted: SASRecTeacher) -> None:
    histories = [np.array([0, 1, 2]), np.array([5, 6]), np.array([3, 4, 5, 6, 7, 0])]
    idx, _ = fitted.user_soft_labels(histories)
    assert idx[0, 0] == 3 and idx[1, 0] == 7 and idx[2, 0] == 1
    for hist, row in zip(histories, idx, strict=True):
        assert not set(hist.tolist()) & set(row.tolist())


def test_user_labels_exclude_argument_and_short_tail(fitted: SASRecTeacher) -> None:
    idx, logits = fitted.user_soft_labels([np.array([0, 1, 2])], exclude=[np.array([3])], m=6)
    assert 3 not in idx[0]
    # 8 items - 3 history - 1 excluded = 4 left: the tail is padded with -1 / -inf
    assert (idx[0, :4] >= 0).all() and (idx[0, 4:] == -1).all()
    assert np.isfinite(logits[0, :4]).all() and np.isneginf(logits[0, 4:]).all()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(0, N_ITEMS + 3), min_size=0, max_size=12), min_size=1, max_size=5
    ),
    st.integers(1, N_ITEMS + 2),
)
def test_history_items_never_in_user_labels(
    fitted: SASRecTeacher, histories: list[list[int]], m: int
) -> None:
    arrays = [np.asarray(h, dtype=np.int32) for h in histories]
    before = [a.copy() for a in arrays]
    idx, logits = fitted.user_soft_labels(arrays, m=m)
    assert idx.shape == logits.shape == (len(arrays), m)
    for hist, row in zip(arrays, idx, strict=True):
        known = {i for i in hist.tolist() if i < N_ITEMS}
        assert not known & set(row[row >= 0].tolist())
        n_left = N_ITEMS - len(known)
        assert (row[: min(m, n_left)] >= 0).all() and (row[min(m, n_left) :] == -1).all()
    for a, b in zip(arrays, before, strict=True):  # inputs untouched
        np.testing.assert_array_equal(a, b)


def test_score_next_shape_and_unknown_items_ignored(fitted: SASRecTeacher) -> None:
    scores = fitted.score_next([np.array([1, 2]), np.array([1, 2, 99])])
    assert scores.shape == (2, N_ITEMS) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-5, atol=1e-5)
    assert int(np.argmax(scores[0])) == 3


# ---------------------------------------------------------------- fit behaviour
def test_fit_does_not_mutate_inputs_and_uses_the_window() -> None:
    users, items = cyclic_stream()
    u0, i0 = users.copy(), items.copy()
    teacher = SASRecTeacher(tiny_config(epochs=1, window_events=50))
    report = teacher.fit(users, items, N_ITEMS)
    np.testing.assert_array_equal(users, u0)
    np.testing.assert_array_equal(items, i0)
    assert report.n_events == 50 and report.n_users == 12 and report.device == "cpu"
    assert np.isfinite(report.final_loss)


def test_fit_on_tiny_window_is_a_noop() -> None:
    teacher = SASRecTeacher(tiny_config())
    for users, items in (([], []), ([0], [1]), ([0, 1, 2], [1, 2, 3])):  # nobody has 2 events
        report = teacher.fit(np.array(users, np.int32), np.array(items, np.int32), 4)
        assert report.version == 0 and report.epochs == 0 and np.isnan(report.final_loss)
        assert report.n_events == len(users) and report.n_users == len(set(users))
    assert teacher.version == 0
    with pytest.raises(StateError):
        teacher.user_soft_labels([np.array([1])])


def test_fit_validates_its_arguments(fitted: SASRecTeacher) -> None:
    teacher = SASRecTeacher(tiny_config(epochs=1))
    with pytest.raises(ConfigError, match="items must lie"):
        teacher.fit(np.array([0, 0]), np.array([0, 5]), 5)
    with pytest.raises(ConfigError, match="differ in length"):
        teacher.fit(np.array([0, 0]), np.array([0]), 5)
    with pytest.raises(ConfigError, match="integer"):
        teacher.fit(np.array([0, 0]), np.array([0.5, 1.0]), 5)
    with pytest.raises(ConfigError, match="n_items"):  # the catalogue never shrinks
        fitted.fit(np.array([0, 0]), np.array([0, 1]), N_ITEMS - 1)


def test_warm_start_grows_catalogue_and_keeps_old_rows(fitted: SASRecTeacher) -> None:
    teacher = SASRecTeacher(fitted.config)
    teacher.load_state_dict(fitted.state_dict())
    old = teacher.item_embeddings()
    teacher.grow(N_ITEMS + 4)
    grown = teacher.item_embeddings()
    assert grown.shape == (N_ITEMS + 4, old.shape[1])
    np.testing.assert_array_equal(grown[:N_ITEMS], old)
    assert np.abs(grown[N_ITEMS:]).sum() > 0  # new rows are initialised, not zero

    # a refresh on a larger cyclic catalogue keeps learning from the warm start
    users, items = cyclic_stream(n_items=N_ITEMS + 4, seed=1)
    report = teacher.fit(users, items, N_ITEMS + 4)
    assert report.version == 2 and teacher.n_items == N_ITEMS + 4
    idx, _ = teacher.transition_soft_labels(np.arange(N_ITEMS + 4, dtype=np.int32), m=1)
    np.testing.assert_array_equal(idx[:, 0], (np.arange(N_ITEMS + 4) + 1) % (N_ITEMS + 4))


def test_same_seed_same_labels_other_seed_differs() -> None:
    users, items = cyclic_stream()
    runs = []
    for seed in (3, 3, 4):
        teacher = SASRecTeacher(tiny_config(epochs=3, dropout=0.1, seed=seed))
        teacher.fit(users, items, N_ITEMS)
        runs.append(teacher.user_soft_labels([np.array([0, 1]), np.array([4])]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][1], runs[2][1])


def test_a_grown_catalogue_does_not_depend_on_torch_draws_before_it() -> None:
    # new items' rows are drawn at the next fit: from the teacher's seed, not from whatever
    # else drew from torch's global generator in this process (a second pipeline, a notebook)
    import torch

    users, items = cyclic_stream()
    runs = []
    for draws in (0, 5):
        teacher = SASRecTeacher(tiny_config(epochs=1, seed=3))
        teacher.fit(users, items, N_ITEMS)
        torch.rand(draws)  # another user of the global generator, between two refreshes
        teacher.fit(users, items, N_ITEMS + 4)
        runs.append(teacher.score_next([np.array([0, 1]), np.array([4])]))
    np.testing.assert_array_equal(runs[0], runs[1])


# ---------------------------------------------------------------- persistence
def test_save_load_round_trip(fitted: SASRecTeacher, tmp_path: Path) -> None:
    fitted.save(tmp_path / "t")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["teacher.json", "weights.pt"]
    loaded = SASRecTeacher.load(tmp_path / "t")
    assert loaded.version == fitted.version and loaded.config == fitted.config
    hist = [np.array([2, 3]), np.array([7])]
    for a, b in zip(fitted.user_soft_labels(hist), loaded.user_soft_labels(hist), strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_rejects_bad_state(fitted: SASRecTeacher, tmp_path: Path) -> None:
    with pytest.raises(StateError):
        SASRecTeacher.load(tmp_path / "missing")
    fitted.save(tmp_path / "t")
    meta = json.loads((tmp_path / "t" / "teacher.json").read_text())
    (tmp_path / "t" / "teacher.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(StateError, match="format"):
        SASRecTeacher.load(tmp_path / "t")
    other = SASRecTeacher(tiny_config(dim=32))
    with pytest.raises(StateError, match="dim"):
        other.load_state_dict(fitted.state_dict())
    with pytest.raises(StateError):
        SASRecTeacher(tiny_config()).state_dict()


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dim", 0),
        ("n_layers", 0),
        ("n_heads", 3),  # does not divide dim=16
        ("max_len", -1),
        ("dropout", 1.0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("weight_decay", -0.1),
        ("batch_size", 1.5),
        ("epochs", True),
        ("time_budget_s", 0),
        ("top_m", 0),
        ("temperature", -1.0),
        ("window_events", 1),
        ("device", "tpu"),
        ("num_threads", 0),
        ("seed", -1),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"TeacherConfig\.{field}\b"):
        tiny_config(**{field: value})


def test_config_round_trips() -> None:
    cfg = tiny_config(lr=3e-3, device="auto")
    dumped = cfg.to_dict()
    assert TeacherConfig.from_dict(json.loads(json.dumps(dumped))).to_dict() == dumped
    with pytest.raises(ConfigError, match="unknown"):
        TeacherConfig.from_dict({**dumped, "bogus": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dim = 3  # type: ignore[misc]


def test_cuda_request_without_cuda_warns_and_uses_cpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the fallback path is not taken")
    with pytest.warns(RuntimeWarning, match="cuda"):
        teacher = SASRecTeacher(tiny_config(device="cuda"))
    assert teacher.device == "cpu"


# ---------------------------------------------------------------- refresh policy
@pytest.mark.parametrize(
    ("policy", "events_since", "seconds_since", "total", "due"),
    [
        (RefreshPolicy(), 20_000, 0.0, 20_000, True),
        (RefreshPolicy(), 19_999, 1e9, 50_000, False),  # no time trigger by default
        (RefreshPolicy(every_events=10, min_events=100), 10, 0.0, 99, False),  # warm-up
        (RefreshPolicy(every_events=10, min_events=100), 10, 0.0, 100, True),
        (RefreshPolicy(every_events=None, every_seconds=60.0), 1, 60.0, 5_000, True),
        (RefreshPolicy(every_events=None, every_seconds=60.0), 1, 59.9, 5_000, False),
        (RefreshPolicy(every_events=None, every_seconds=60.0), 0, 600.0, 5_000, False),
        (RefreshPolicy(every_events=100, every_seconds=5.0), 3, 5.0, 5_000, True),
        (RefreshPolicy(every_events=None, every_seconds=None), 10**6, 1e9, 10**6, False),
    ],
)
def test_refresh_policy(
    policy: RefreshPolicy, events_since: int, seconds_since: float, total: int, due: bool
) -> None:
    assert policy.due(events_since, seconds_since, total) is due


@pytest.mark.parametrize(
    "kwargs",
    [{"every_events": 0}, {"every_seconds": -1.0}, {"every_seconds": float("inf")},
     {"min_events": -1}],
)  # fmt: skip
def test_refresh_policy_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        RefreshPolicy(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- worker
def _job(transitions: bool = True) -> TeacherJob:
    users, items = cyclic_stream()
    hist = {u: items[users == u] for u in (0, 5)}
    trans = np.array([0, 3, 99], dtype=np.int32) if transitions else None
    return TeacherJob(users, items, N_ITEMS, hist, trained_until=123.0, transition_items=trans)


def test_worker_refuses_while_busy_and_delivers_result() -> None:
    teacher = SASRecTeacher(tiny_config(epochs=2))
    gate = threading.Event()
    original_fit = teacher.fit

    def gated_fit(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        assert gate.wait(30)
        return original_fit(*args, **kwargs)  # type: ignore[arg-type]

    teacher.fit = gated_fit  # type: ignore[method-assign]
    results: list[TeacherResult] = []
    worker = TeacherWorker(teacher, results.append)
    assert not worker.busy
    assert worker.submit(_job()) is True
    assert worker.busy
    assert worker.submit(_job()) is False  # nothing queued while a refresh runs
    gate.set()
    assert worker.join(timeout=60)
    assert not worker.busy and worker.last_error is None
    assert len(results) == 1
    res = results[0]
    assert res.version == 1 and res.trained_until == 123.0 and res.temperature == 2.0
    np.testing.assert_array_equal(res.user_idx, [0, 5])
    assert res.user_items.shape == res.user_logits.shape == (2, 3)
    np.testing.assert_array_equal(res.trans_idx, [0, 3])  # 99 is beyond the catalogue
    assert res.trans_items is not None and res.trans_items.shape == (2, 3)
    assert res.fit.version == 1 and res.seconds >= res.fit.seconds
    # the next job is accepted once idle, and warm-starts
    assert worker.submit(_job(transitions=False))
    assert worker.join(timeout=60)
    assert results[1].version == 2 and results[1].trans_items is None
    worker.close()
    with pytest.raises(StateError):
        worker.submit(_job())


def test_worker_reports_failures_and_stays_usable() -> None:
    errors: list[BaseException] = []
    worker = TeacherWorker(SASRecTeacher(tiny_config(epochs=1)), lambda r: None, errors.append)
    empty = np.zeros(0, dtype=np.int32)
    assert worker.submit(TeacherJob(empty, empty, 1, {}, trained_until=0.0))
    assert worker.join(timeout=30)
    assert len(errors) == 1 and isinstance(errors[0], StateError)
    assert worker.last_error is errors[0] and not worker.busy
    assert worker.submit(_job())
    assert worker.join(timeout=60)
    worker.close()


# ---------------------------------------------------------------- package surface
def test_exports_resolve() -> None:
    for name in teacher_pkg.__all__:
        assert getattr(teacher_pkg, name) is not None
    with pytest.raises(AttributeError):
        _ = teacher_pkg.NoSuchThing  # type: ignore[attr-defined]


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, kdstream.teacher as t; "
        "t.TeacherConfig(); t.RefreshPolicy(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
