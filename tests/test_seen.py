"""SeenPairs against a plain Python set of pairs; the row-index helpers against np.unique."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kdstream.student._seen import SeenPairs

batches = st.lists(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 60)), max_size=50), max_size=40
)


@settings(max_examples=60, deadline=None)
@given(batches)
def test_matches_a_set(batch_list: list[list[tuple[int, int]]]) -> None:
    seen, ref = SeenPairs(), set()
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
    again = SeenPairs.from_array(seen.to_array())
    assert again.contains(probe_u, probe_i).tolist() == want


def test_tail_merges_into_main(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Small tail bound: both levels hold pairs, and lookups see both."""
    monkeypatch.setattr("kdstream.student._seen._TAIL_MAX", 8)
    rng = np.random.default_rng(0)
    seen, ref = SeenPairs(), set()
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
