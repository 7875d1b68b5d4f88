"""Both seen-pair stores against a plain Python set of pairs and against each other; the
row-index helpers against np.unique."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdstream.student._fused import _kernel
from kdstream.student._seen import HashedPairs, SeenPairs, SortedPairs

STORES = [
    SortedPairs,
    pytest.param(HashedPairs, marks=pytest.mark.skipif(_kernel is None, reason="C step not built")),
]

batches = st.lists(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 60)), max_size=50), max_size=40
)


@pytest.mark.parametrize("store", STORES)
@settings(max_examples=60, deadline=None)
@given(batch_list=batches)
def test_matches_a_set(store: type, batch_list: list[list[tuple[int, int]]]) -> None:
    seen, ref = SeenPairs(store()), set()
    for batch in batch_list:
        users = np.array([u for u, _ in batch], np.int64)
        items = np.array([i for _, i in batch], np.int64)
        seen.add(users, items)
        ref.update(batch)
    assert len(seen) == len(ref)
    for user in range(41):
        assert seen.items_of(user).tolist() == sorted(i for u, i in ref if u == user)
    probe_u, probe_i = np.arange(41).repeat(61), np.tile(np.arange(61), 41)
    want = [(int(u), int(i)) in ref for u, i in zip(probe_u, probe_i, strict=True)]
    assert seen.contains(probe_u, probe_i).tolist() == want
    assert seen.to_array().tolist() == sorted((u << 32) | i for u, i in ref)
    again = SeenPairs.from_array(seen.to_array())
    assert again.contains(probe_u, probe_i).tolist() == want
    rows, items = seen.pairs_of(np.array([3, 99, 3, -1]))  # unknown users list nothing
    got = sorted(zip(rows.tolist(), items.tolist(), strict=True))
    mine = sorted(i for u, i in ref if u == 3)
    assert got == sorted([(0, i) for i in mine] + [(2, i) for i in mine])


def test_hash_set_matches_the_sorted_store_at_scale() -> None:
    """Many growths and rehashes; items up to the key limit (users are dense indices: the
    store keeps a chain head per user)."""
    if _kernel is None:
        pytest.skip("C step not built")
    rng = np.random.default_rng(1)
    hashed, ref = HashedPairs(), SortedPairs()
    for _ in range(60):
        u = rng.integers(0, 3000, 1024)
        i = rng.integers(0, 500, 1024)
        u[:2], i[:2] = 5000, 2**32 - 1
        hashed.add(u, i)
        ref.add(u, i)
    assert len(hashed) == len(ref)
    assert np.array_equal(hashed.to_array(), ref.to_array())
    pu, pi = rng.integers(0, 3000, 20_000), rng.integers(0, 500, 20_000)
    assert np.array_equal(hashed.contains(pu, pi), ref.contains(pu, pi))
    for user in (0, 17, 2999):
        assert np.array_equal(hashed.items_of(user), ref.items_of(user))


@pytest.mark.parametrize(
    ("users", "items", "match"),
    [
        ([-1], [0], "user indices"),
        ([2**31], [0], "user indices"),
        ([0], [2**32], "items in"),
        ([0, 1], [0], "one length"),
    ],
)
def test_hash_set_rejects_keys_it_cannot_hold(
    users: list[int], items: list[int], match: str
) -> None:
    if _kernel is None:
        pytest.skip("C step not built")
    seen = HashedPairs()
    with pytest.raises(ValueError, match=match):
        seen.add(np.array(users), np.array(items))
    assert len(seen) == 0


def test_tail_merges_into_main(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Small tail bound: both levels hold pairs, and lookups see both."""
    monkeypatch.setattr("kdstream.student._seen._TAIL_MAX", 8)
    rng = np.random.default_rng(0)
    seen, ref = SortedPairs(), set()
    for _ in range(30):
        u, i = rng.integers(0, 20, 7), rng.integers(0, 30, 7)
        seen.add(u, i)
        ref.update(zip(u.tolist(), i.tolist(), strict=True))
    assert len(seen._main) and len(seen) == len(ref)
    pairs = sorted(ref)
    assert seen.contains(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])).all()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 200_000), max_size=300), st.integers(0, 1))
def test_unique_inverse_bounded_matches_np_unique(values: list[int], big: int) -> None:
    from kdstream.student._arrays import unique_inverse_bounded

    x = np.array(values, np.int64)
    bound = (max(values, default=0) + 1) * (1000 if big else 1)  # both the mark and the sort
    uniq, inv = unique_inverse_bounded(x, bound)
    want_u, want_inv = np.unique(x, return_inverse=True)
    assert uniq.tolist() == want_u.tolist()
    assert inv.tolist() == want_inv.tolist()
