"""Student: gradients against finite differences, growth, recommend, distillation, state."""

from __future__ import annotations

import numpy as np
import pytest

from kdstream.errors import ConfigError, StateError
from kdstream.student import SoftTargets, Student, StudentConfig, load_student, save_student


def _kl_t2(zs: np.ndarray, t: np.ndarray, temp: float) -> float:
    """T^2 KL(softmax(t/T) || softmax(zs/T)) over the entries where zs is finite."""

    def logsm(x: np.ndarray) -> np.ndarray:
        x = x / temp
        mx = x[np.isfinite(x)].max()
        return x - mx - np.log(np.exp(x - mx).sum())

    pt = np.exp(logsm(t))
    ok = pt > 0
    return float(temp**2 * (pt[ok] * (logsm(t)[ok] - logsm(zs)[ok])).sum())


def _soft_term(query, st, cand, logits, temp, negs) -> float:
    """Soft loss over the candidates plus the shared negatives not among them."""
    rest = negs[:16][~np.isin(negs[:16], cand)]
    zs = np.concatenate([query @ st.Q[cand].T + st.b[cand], query @ st.Q[rest].T + st.b[rest]])
    t = np.concatenate([logits, np.full(len(rest), -np.inf)])
    zs = np.where(np.isfinite(t) | (np.arange(len(t)) >= len(cand)), zs, -np.inf)
    return _kl_t2(zs, t, temp)


def _batch_loss(st: Student, users, items, w, negs, nlq, plq, soft, trans) -> float:
    """The loss learn_many descends, written independently of the model code."""
    ctx = st.event_contexts(users, items)
    total = 0.0
    alpha = np.zeros(len(users))
    if soft is not None:
        alpha[soft.rows] = soft.alpha
    for e, (u, i) in enumerate(zip(users, items, strict=True)):
        slots = np.flatnonzero(ctx[e] >= 0)
        h = st.P[u] + (st.pos_w[slots, None] * st.C[ctx[e][slots]]).sum(axis=0)
        z = h @ st.Q[i] + st.b[i]
        hw = abs(w[e]) * (1 - alpha[e])
        if w[e] > 0:
            zn = h @ st.Q[negs].T + st.b[negs] - nlq
            zn = zn[negs != i]
            logits = np.concatenate([[z - plq[e]], zn])
            total += hw * -(logits[0] - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
        else:
            total += hw * np.log1p(np.exp(z))
        if soft is not None and e in soft.rows:
            r = int(np.flatnonzero(soft.rows == e)[0])
            total += soft.alpha[r] * _soft_term(
                h, st, soft.items[r], soft.logits[r], soft.temperature[r], negs
            )
        if trans is not None and e in trans.rows:
            r = int(np.flatnonzero(trans.rows == e)[0])
            total += trans.alpha[r] * _soft_term(
                h, st, trans.items[r], trans.logits[r], trans.temperature[r], negs
            )
    return total


@pytest.fixture
def setup():
    rng = np.random.default_rng(3)
    cfg = StudentConfig(
        dim=4, context_len=3, context_decay=0.6, n_negatives=5, l2=0.0, init_std=0.3, seed=1
    )
    st = Student(cfg)
    st.grow(4, 12)
    st.P = st.P.astype(np.float64)
    st.Q = st.Q.astype(np.float64)
    st.C = (rng.standard_normal(st.C.shape) * 0.3).astype(np.float64)
    st.C[-1] = 0.0  # the spare row that padding (-1) reads stays zero
    st.pos_w = np.array([0.2, 0.3, 0.5])
    st.b = (rng.standard_normal(st.b.shape) * 0.1).astype(np.float64)
    st.hist[:4, :] = np.array([[-1, -1, 2], [3, 4, 5], [-1, -1, -1], [-1, 7, 1]])
    users = np.array([0, 1, 0, 2, 3, 1])
    items = np.array([1, 6, 8, 2, 9, 5])
    w = np.array([1.0, 2.0, -1.0, 1.0, 1.0, 1.0])
    negs = np.array([0, 3, 6, 10, 11])
    nlq = rng.standard_normal(5) * 0.5
    plq = rng.standard_normal(6) * 0.5
    soft = SoftTargets(
        rows=np.array([0, 4]),
        items=np.array([[3, 5, 7, 11], [0, 1, 2, 4]]),
        logits=np.array([[2.0, 0.5, -1.0, 0.1], [1.0, -np.inf, 0.3, 2.0]]),
        temperature=np.array([2.0, 1.5]),
        alpha=np.array([0.6, 0.3]),
    )
    trans = SoftTargets(
        rows=np.array([1, 5]),
        items=np.array([[1, 2, 3], [7, 8, 9]]),
        logits=np.array([[1.0, 0.0, -1.0], [0.5, 0.2, 3.0]]),
        temperature=np.array([2.0, 2.0]),
        alpha=np.array([0.5, 0.5]),
    )
    return st, (users, items, w, negs, nlq, plq, soft, trans)


def _finite_difference(st: Student, args, flat: np.ndarray, pos: int, eps: float = 1e-6) -> float:
    """Central difference of the batch loss in the parameter ``flat[pos]`` (a view of a table)."""
    old = flat[pos]
    flat[pos] = old + eps
    up = _batch_loss(st, *args)
    flat[pos] = old - eps
    down = _batch_loss(st, *args)
    flat[pos] = old
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("table", ["P", "C", "b", "pos_w"])
def test_gradients_match_finite_differences(setup, table):
    st, args = setup
    grads = st.gradients(*args)
    arr = getattr(st, table)
    dim = st.config.dim
    dense = grads.pos if table == "pos_w" else grads.dense(table.lower(), len(arr), dim)
    rng = np.random.default_rng(0)
    flat = arr.reshape(-1)
    checked = 0
    for pos in rng.permutation(flat.size)[:40]:
        fd = _finite_difference(st, args, flat, pos)
        assert dense.reshape(-1)[pos] == pytest.approx(fd, rel=1e-4, abs=1e-6)
        checked += abs(fd) > 1e-6
    assert checked > 0  # the check exercised non-zero gradients


def test_gradients_with_target_rows_out_of_order(setup):
    """Targets listed out of event order take the general path (the fast one needs
    increasing rows) and give the same gradients."""
    st, args = setup
    soft, trans = args[6], args[7]
    for t in (soft, trans):  # reverse the rows and their targets together
        t.rows, t.items, t.logits = t.rows[::-1], t.items[::-1], t.logits[::-1]
        t.temperature, t.alpha = t.temperature[::-1], t.alpha[::-1]
    dense = st.gradients(*args).dense("p", len(st.P), st.config.dim)
    flat = st.P.reshape(-1)
    for pos in range(flat.size):
        fd = _finite_difference(st, args, flat, pos)
        assert dense.reshape(-1)[pos] == pytest.approx(fd, rel=1e-4, abs=1e-6)


def test_kd_item_vectors_gradient(setup):
    """With kd_item_vectors the item vectors get the full gradient (default: hard loss only)."""
    st, args = setup
    st.config = StudentConfig(**{**st.config.__dict__, "kd_item_vectors": True})
    dense = st.gradients(*args).dense("q", len(st.Q), st.config.dim)
    flat = st.Q.reshape(-1)
    for pos in range(0, st.Q.size, 3):
        fd = _finite_difference(st, args, flat, pos)
        assert dense.reshape(-1)[pos] == pytest.approx(fd, rel=1e-4, abs=1e-6)


def test_event_contexts_include_earlier_batch_events():
    st = Student(StudentConfig(dim=2, context_len=3))
    st.grow(2, 10)
    st.hist[0] = [-1, 4, 5]
    ctx = st.event_contexts(np.array([0, 1, 0, 0]), np.array([7, 8, 9, 1]))
    assert ctx.tolist() == [[-1, 4, 5], [-1, -1, -1], [4, 5, 7], [5, 7, 9]]
    st.hist_update(np.array([0, 1, 0, 0]), np.array([7, 8, 9, 1]))
    assert st.hist[0].tolist() == [7, 9, 1]
    assert st.hist[1].tolist() == [-1, -1, 8]


def test_tables_grow_by_doubling_and_keep_rows():
    st = Student(StudentConfig(dim=3, seed=0))
    st.grow(10, 10)
    p0 = st.P[:10].copy()
    cap = len(st.P)
    st.grow(cap + 1, 5)
    assert len(st.P) >= 2 * cap
    np.testing.assert_array_equal(st.P[:10], p0)
    for table in (st.P, st.Q, st.C):  # rows start on cache lines (128-byte rows at d = 32)
        assert table.ctypes.data % 64 == 0 and table.flags.c_contiguous


def test_recommend_never_returns_seen_items():
    rng = np.random.default_rng(0)
    st = Student(StudentConfig(dim=8, n_negatives=8, seed=0))
    for _ in range(20):
        users = rng.integers(0, 5, 64)
        items = rng.integers(0, 30, 64)
        st.learn_many(users, items, np.ones(64, np.float32), rng.integers(0, 30, 8))
    for u in range(5):
        seen = set(st.seen.items_of(u).tolist())
        ids, scores = st.recommend(u, k=30)
        assert not seen & set(ids.tolist())
        assert len(ids) == 30 - len(seen)
        assert np.all(np.diff(scores) <= 0)


def test_soft_labels_move_ranking_toward_teacher():
    rng = np.random.default_rng(1)
    st = Student(StudentConfig(dim=16, n_negatives=16, seed=0))
    users = rng.integers(0, 20, 2000)
    items = rng.integers(0, 50, 2000)
    for s in range(0, 2000, 100):
        st.learn_many(users[s : s + 100], items[s : s + 100], np.ones(100), rng.integers(0, 50, 16))
    teacher_items = np.array([40, 41, 42, 43, 44])
    logits = np.array([5.0, 4.0, 3.0, 2.0, 1.0])

    def overlap() -> int:
        ids, _ = st.recommend(3, k=5, exclude_seen=False)
        return len(set(ids.tolist()) & set(teacher_items.tolist()))

    before = overlap()
    for _ in range(100):
        soft = SoftTargets(
            rows=np.array([0]),
            items=teacher_items[None, :],
            logits=logits[None, :],
            temperature=np.array([1.0]),
            alpha=np.array([1.0]),
        )
        st.learn_many(
            np.array([3]), np.array([1]), np.ones(1), rng.integers(0, 50, 16), soft=soft
        )
    assert overlap() > before
    ids, _ = st.recommend(3, k=1, exclude_seen=False)
    assert ids[0] == teacher_items[0]


def test_learn_many_does_not_mutate_inputs():
    st = Student(StudentConfig(dim=4))
    users, items, w = np.array([0, 1]), np.array([2, 3]), np.array([1.0, -1.0])
    copies = [a.copy() for a in (users, items, w)]
    st.learn_many(users, items, w, np.array([0, 1]))
    for a, c in zip((users, items, w), copies, strict=True):
        np.testing.assert_array_equal(a, c)


def test_same_seed_same_model():
    def run() -> np.ndarray:
        rng = np.random.default_rng(5)
        st = Student(StudentConfig(dim=4, seed=7))
        st.learn_many(rng.integers(0, 9, 50), rng.integers(0, 9, 50), np.ones(50), np.arange(4))
        return st.P[: st.n_users]

    np.testing.assert_array_equal(run(), run())


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    st = Student(StudentConfig(dim=4, context_len=2, seed=3))
    st.learn_many(rng.integers(0, 9, 50), rng.integers(0, 20, 50), np.ones(50), np.arange(6))
    path = save_student(st, tmp_path / "student")
    back = load_student(path)
    for u in range(st.n_users):
        a, sa = st.recommend(u, k=5)
        b, sb = back.recommend(u, k=5)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(sa, sb)
    assert back.config == st.config
    assert all(t.ctypes.data % 64 == 0 for t in (back.P, back.Q, back.C))


def test_load_rejects_corrupt_state(tmp_path):
    st = Student(StudentConfig(dim=2))
    path = save_student(st, tmp_path / "s")
    path.with_suffix(".json").write_text('{"format_version": 99}')
    with pytest.raises(StateError, match="format_version"):
        load_student(path)


@pytest.mark.parametrize(("field", "value"), [("dim", 0), ("lr", -1.0), ("context_len", -2)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        StudentConfig(**{field: value})


def test_candidate_negative_mask_matches_a_plain_comparison() -> None:
    """Negatives that are also teacher candidates (repeats included) are found per row."""
    rng = np.random.default_rng(3)
    st = Student(StudentConfig(dim=4, seed=0))
    st.grow(1, 60)
    for _ in range(20):
        cand = rng.integers(0, 60, (30, 7))
        negatives = rng.integers(0, 60, 16)
        negatives[2] = negatives[9] = cand[4, 1]  # a repeated negative that is a candidate
        want = (negatives[None, :, None] == cand[:, None, :]).any(axis=2)
        got = st._candidate_negatives(cand, negatives)
        assert got.dtype == bool and (got == want).all()
        assert st._mark is not None and not st._mark.any()  # the scratch is left clean
