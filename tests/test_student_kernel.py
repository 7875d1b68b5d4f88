"""The compiled student step against the numpy step it replaces: same update, same fallbacks."""

from __future__ import annotations

import shutil
import sysconfig

import numpy as np
import pytest

from kdstream.student import SoftTargets, Student, StudentConfig
from kdstream.student._fused import kernel_available


def _has_compiler() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


def test_the_kernel_is_built_where_a_compiler_is() -> None:
    """The extension is optional at install; on a machine with a C compiler a missing kernel
    means a build that failed silently (the numpy step would hide it)."""
    if not _has_compiler():
        pytest.skip("no C compiler here: the numpy step runs instead of the kernel")
    from kdstream.student import _fused

    assert _fused._kernel is not None, "student/_kernel.c did not build: run `pip install -e .` -v"


needs_kernel = pytest.mark.skipif(not kernel_available(), reason="the C step is not built here")


@pytest.fixture(params=["base", "avx2", "avx512"])
def isa(request):
    """Each build of the step this CPU can run (student/_kernel.c picks the best by default)."""
    from kdstream.student import _fused

    if _fused._kernel is None:
        pytest.skip("the C step is not built here")
    default = _fused._kernel.isa()
    try:
        _fused._kernel.isa(request.param)
    except ValueError:
        pytest.skip(f"this CPU cannot run the {request.param} step")
    yield request.param
    _fused._kernel.isa(default)


def _targets(rng, rows: np.ndarray, m: int, n_items: int, pad: bool) -> SoftTargets:
    logits = rng.standard_normal((len(rows), m)).astype(np.float32)
    if pad:
        logits[:, -2:] = -np.inf  # padding marks on the teacher's side
    return SoftTargets(
        rows=rows,
        items=rng.integers(0, n_items, (len(rows), m)),
        logits=logits,
        temperature=rng.uniform(1.0, 3.0, len(rows)).astype(np.float32),
        alpha=rng.uniform(0.1, 0.9, len(rows)).astype(np.float32),
    )


def _train(monkeypatch, kernel: bool, cfg: StudentConfig, *, kd: bool, logq: bool, n_neg: int):
    monkeypatch.setenv("KDSTREAM_STUDENT_KERNEL", "1" if kernel else "0")
    rng = np.random.default_rng(7)
    st = Student(cfg)
    n_users, n_items, batch = 60, 90, 48
    for _ in range(12):
        # few users and items: repeated ids inside every batch, as in real bursts
        users = rng.integers(0, n_users, batch)
        items = rng.integers(0, n_items, batch)
        w = np.where(rng.random(batch) < 0.15, -1.0, rng.uniform(0.5, 2.0, batch))
        negs = rng.integers(0, n_items, n_neg)
        soft = trans = None
        if kd:
            soft = _targets(rng, np.arange(0, batch, 3), 7, n_items, pad=False)
            trans = _targets(rng, np.arange(1, batch, 2), 5, n_items, pad=True)
        nlq = rng.standard_normal(n_neg) * 0.3 if logq else None
        plq = rng.standard_normal(batch) * 0.3 if logq else None
        st.learn_many(users, items, w.astype(np.float32), negs, nlq, plq, soft=soft,
                      transition=trans)  # fmt: skip
    return st


@needs_kernel
@pytest.mark.parametrize(
    ("dim", "context_len", "n_neg", "kd", "logq", "learn_pos"),
    [
        (32, 8, 64, True, True, True),  # the default shape: the kernel's fast paths
        (32, 8, 48, True, True, True),  # 16 negatives a block, not 32: AVX-512's narrower path
        (32, 8, 40, True, False, True),  # negatives not a multiple of 32: the general loops
        (5, 3, 17, True, True, False),  # another width
        (32, 0, 64, False, True, True),  # plain MF (no context)
        (16, 2, 0, True, True, True),  # no sampled negatives at all
    ],
)
def test_kernel_matches_the_numpy_step(
    monkeypatch, isa, dim, context_len, n_neg, kd, logq, learn_pos
) -> None:
    cfg = StudentConfig(
        dim=dim,
        context_len=context_len,
        n_negatives=max(n_neg, 1),
        learn_context_weights=learn_pos,
        l2=1e-4,
        seed=3,
    )
    fused = _train(monkeypatch, True, cfg, kd=kd, logq=logq, n_neg=n_neg)
    ref = _train(monkeypatch, False, cfg, kd=kd, logq=logq, n_neg=n_neg)
    for name in ("P", "Q", "C", "b", "pos_w", "gP", "gQ", "gC", "gb", "g_pos", "hist"):
        a, b = getattr(fused, name), getattr(ref, name)
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6, err_msg=name)
    assert ref.gP.max() > 0 and ref.gQ.max() > 0  # the steps compared did move the tables
    # the kernel's scratch is back to its between-calls state, or the next batch would start
    # from stale gradients: slot maps all -1, candidate marks and bias gradients all 0
    maps = fused._fused._maps
    assert all((maps[k] == -1).all() for k in ("P", "Q", "C"))
    assert not maps["mark"].any() and not maps["b"].any()


@needs_kernel
@pytest.mark.parametrize("n_neg", [128, 48, 40])
def test_avx512_step_equals_the_avx2_step_bit_for_bit(monkeypatch, n_neg: int) -> None:
    """The AVX-512 build widens the sampled softmax's products but keeps each lane's order of
    sums: its tables are the AVX2 build's exactly (a reordering would show as last-bit
    differences; many negatives drawn twice in 90 items exercise the shared-row merge)."""
    from kdstream.student import _fused

    default = _fused._kernel.isa()
    cfg = StudentConfig(dim=32, context_len=8, n_negatives=n_neg, l2=1e-4, seed=3)
    tables = {}
    try:
        for name in ("avx2", "avx512"):
            try:
                _fused._kernel.isa(name)
            except ValueError:
                pytest.skip(f"this CPU cannot run the {name} step")
            st = _train(monkeypatch, True, cfg, kd=True, logq=True, n_neg=n_neg)
            tables[name] = {k: getattr(st, k).copy() for k in ("P", "Q", "C", "b", "gQ")}
    finally:
        _fused._kernel.isa(default)
    for k, a in tables["avx2"].items():
        np.testing.assert_array_equal(a, tables["avx512"][k], err_msg=k)
    assert tables["avx2"]["gQ"].max() > 0


@needs_kernel
def test_isa_rejects_what_it_does_not_know() -> None:
    from kdstream.student import _fused

    with pytest.raises(ValueError, match="isa must be base, avx2 or avx512, got sse9"):
        _fused._kernel.isa("sse9")
    assert _fused._kernel.isa() in ("base", "avx2", "avx512")


@needs_kernel
@pytest.mark.parametrize("kernel", [True, False])
def test_in_range_checks_every_index(monkeypatch, kernel: bool) -> None:
    """The kernel trusts its indices: the one-pass bound check must see every element, and
    numpy's check where the extension is not built must agree."""
    from kdstream.student import _fused
    from kdstream.student._fused import _in_range

    if not kernel:
        monkeypatch.setattr(_fused, "_kernel", None)
    for dtype in (np.int64, np.int32, np.int16):
        a = np.arange(10, dtype=dtype)
        assert _in_range(a, 0, 10) and not _in_range(a, 0, 9) and not _in_range(a, 1, 10)
        a[7] = -1
        assert not _in_range(a, 0, 10) and _in_range(a, -1, 10)
    assert _in_range(np.empty(0, np.int64), 0, 0)  # nothing to check
    assert not _in_range(np.array([0]), 0, 0)  # an empty range holds no index
    assert _in_range(np.arange(20)[::2], 0, 19) and not _in_range(np.arange(20)[::2], 0, 18)


@needs_kernel
@pytest.mark.parametrize("kernel", [True, False])
def test_bounds_sees_every_index(monkeypatch, kernel: bool) -> None:
    """learn_many grows the tables to these bounds and then trusts them: the one-pass min and
    max must see every element, and numpy's where the extension is not built must agree."""
    from kdstream.student import _fused
    from kdstream.student._fused import _bounds

    if not kernel:
        monkeypatch.setattr(_fused, "_kernel", None)
    for dtype in (np.int64, np.int32, np.int16):
        a = np.array([5, 3, 9, 4], dtype=dtype)
        assert _bounds(a) == (3, 9)
        a[3] = -7
        assert _bounds(a) == (-7, 9)
    assert _bounds(np.empty(0, np.int64)) == (0, -1)
    assert _bounds(np.arange(20)[::3]) == (0, 18)  # strided
    big = np.array([2**40, -(2**40)], np.int64)
    assert _bounds(big) == (-(2**40), 2**40)


@needs_kernel
def test_tables_swapped_after_a_kernel_step_go_to_numpy(monkeypatch) -> None:
    """The kernel remembers which tables it found float32 and contiguous: a table replaced
    after a step (a float64 one, as gradient checks use) must be checked again, not trusted."""
    monkeypatch.setenv("KDSTREAM_STUDENT_KERNEL", "1")
    st = Student(StudentConfig(dim=8, context_len=2, n_negatives=4))
    batch = (np.array([0, 1]), np.array([1, 2]), np.ones(2, np.float32), np.array([2, 3]))
    st.learn_many(*batch)
    ctx = st.event_contexts(batch[0], batch[1])
    assert st._fused.run(st, *batch, None, None, None, None, ctx)
    st.P = st.P.astype(np.float64)
    assert not st._fused.run(st, *batch, None, None, None, None, ctx)
    st.learn_many(*batch)  # the numpy step takes it
    assert st.P.dtype == np.float64 and np.isfinite(st.P).all()


@needs_kernel
def test_kernel_leaves_what_it_cannot_take_to_numpy(monkeypatch) -> None:
    """Item-vector distillation and indices outside the tables take the numpy path, which
    raises for a bad index as it always did (the kernel trusts its indices)."""
    monkeypatch.setenv("KDSTREAM_STUDENT_KERNEL", "1")
    st = Student(StudentConfig(dim=8, context_len=2, n_negatives=4, kd_item_vectors=True))
    st.grow(4, 10)
    ctx = st.event_contexts(np.array([0]), np.array([1]))
    args = (st, np.array([0]), np.array([1]), np.ones(1, np.float32), np.array([2, 3]))
    assert not st._fused.run(*args, None, None, None, None, ctx)
    st = Student(StudentConfig(dim=8, context_len=2, n_negatives=4))
    st.grow(4, 10)
    bad = SoftTargets(
        rows=np.array([0]),
        items=np.array([[10_000]]),
        logits=np.zeros((1, 1), np.float32),
        temperature=np.ones(1, np.float32),
        alpha=np.ones(1, np.float32),
    )
    with pytest.raises(IndexError):
        st.learn_many(np.array([0]), np.array([1]), np.ones(1), np.array([2, 3]), soft=bad)
    assert np.isfinite(st.P).all()


@needs_kernel
@pytest.mark.parametrize("context_len", [1, 4, 8])
@pytest.mark.parametrize("from_contexts", [False, True])
def test_kernel_contexts_and_histories_match_numpy(
    monkeypatch, context_len: int, from_contexts: bool
) -> None:
    """Histories moved in the contexts' pass, or from contexts the caller already has."""
    rng = np.random.default_rng(context_len)
    states = []
    for kernel in ("1", "0"):
        monkeypatch.setenv("KDSTREAM_STUDENT_KERNEL", kernel)
        st = Student(StudentConfig(dim=4, context_len=context_len))
        st.grow(30, 50)
        seen = []
        for _ in range(20):  # bursts: a few users with several events per batch
            users = rng.integers(0, 30, 25)
            items = rng.integers(0, 50, 25)
            seen.append(st.event_contexts(users, items))
            st.hist_update(users, items, seen[-1] if from_contexts else None)
        states.append((np.concatenate(seen), st.hist.copy()))
        rng = np.random.default_rng(context_len)  # the same batches for the other path
    (ctx_k, hist_k), (ctx_n, hist_n) = states
    np.testing.assert_array_equal(ctx_k, ctx_n)
    np.testing.assert_array_equal(hist_k, hist_n)
    assert (ctx_n >= 0).any() and (ctx_n == -1).any()


@needs_kernel
def test_normal_build_keeps_no_section_timers() -> None:
    """The step's timers exist only in a profile build (benchmarks/step_profile.py)."""
    from kdstream.student._fused import _kernel

    assert _kernel.profile() is None
