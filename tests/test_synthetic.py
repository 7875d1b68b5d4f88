"""Synthetic stream: validation, determinism, shape, no repeats, time order, real signals."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict

import numpy as np
import pytest

from kdstream.errors import ConfigError
from kdstream.replay import (
    EventColumns,
    SyntheticConfig,
    generate,
    generate_events,
    oracle_ranks,
)
from kdstream.stream._event import EVENT_TYPES

SMALL = SyntheticConfig(n_users=300, n_items=400, n_events=20_000, drift_every=0, seed=3)


@pytest.fixture(scope="module")
def small() -> EventColumns:
    return generate(SMALL)


def test_defaults_are_the_documented_ones() -> None:
    cfg = SyntheticConfig()
    assert (cfg.n_users, cfg.n_items, cfg.n_events, cfg.dim, cfg.n_topics) == (
        2000, 1500, 200_000, 16, 40
    )
    assert (cfg.taste_weight, cfg.theme_weight, cfg.last_weight, cfg.second_weight) == (
        0.5, 0.5, 1.0, 0.5
    )
    assert (cfg.popularity_sigma, cfg.sharpness, cfg.drift_every, cfg.p_negative) == (
        1.2, 4.0, 50_000, 0.05
    )
    assert (cfg.session_len_mean, cfg.t0, cfg.dt_mean_s, cfg.seed) == (20, 1.6e9, 30.0, 0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_users", 0),
        ("n_items", 1),
        ("n_events", -1),
        ("dim", 0),
        ("n_topics", 0),
        ("popularity_sigma", -0.1),
        ("item_noise", -1.0),
        ("last_weight", -0.5),
        ("sharpness", float("inf")),
        ("drift_every", -5),
        ("p_negative", 1.0),
        ("session_len_mean", 0.5),
        ("series_len_mean", 0.5),
        ("series_weight", -1.0),
        ("series_open", 1),
        ("dt_mean_s", 0.0),
        ("t0", float("nan")),
        ("seed", -1),
        ("n_users", 2.5),
        ("n_events", 300 * 400),  # more than half of every user's catalogue
    ],
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"SyntheticConfig.{field}"):
        dataclasses.replace(SMALL, **{field: value})


def test_same_seed_same_stream_other_seed_other_stream(small: EventColumns) -> None:
    again = generate(SMALL)
    for name in ("user", "item", "type", "ts"):
        assert getattr(again, name).tolist() == getattr(small, name).tolist()
    other = generate(dataclasses.replace(SMALL, seed=4))
    assert other.item.tolist() != small.item.tolist()


def test_shape_types_and_time_order(small: EventColumns) -> None:
    assert len(small) == SMALL.n_events
    assert set(small.type.tolist()) <= set(EVENT_TYPES)
    assert bool(np.all(np.diff(small.ts) >= 0))
    assert small.ts[0] > SMALL.t0
    mean_gap = (small.ts[-1] - SMALL.t0) / len(small)
    assert mean_gap == pytest.approx(SMALL.dt_mean_s, rel=0.05)
    assert np.isnan(small.value).all()
    users = set(small.user.tolist())
    items = set(small.item.tolist())
    assert len(users) == SMALL.n_users  # every user arrives
    assert items <= {f"i{k}" for k in range(SMALL.n_items)}
    negative = np.isin(small.type, ["skip", "dislike"]).mean()
    assert negative == pytest.approx(SMALL.p_negative, abs=0.01)


def test_items_never_repeat_for_a_user(small: EventColumns) -> None:
    pairs = list(zip(small.user.tolist(), small.item.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs)


def test_users_keep_arriving(small: EventColumns) -> None:
    first_seen: dict[str, int] = {}
    for k, user in enumerate(small.user.tolist()):
        first_seen.setdefault(user, k)
    arrivals = sorted(first_seen.values())
    # users are named in order of arrival, and arrivals spread over the whole stream
    assert [small.user[k] for k in arrivals[:3]] == ["u0", "u1", "u2"]
    assert arrivals[len(arrivals) // 2] > len(small) // 5
    assert arrivals[-1] > len(small) // 2


def _next_pairs(cols: EventColumns) -> list[tuple[str, str]]:
    """(previous positive item, next positive item) of each user, in stream order."""
    last: dict[str, str] = {}
    pairs = []
    for user, item, kind in zip(cols.user.tolist(), cols.item.tolist(), cols.type.tolist(),
                                strict=True):
        if EVENT_TYPES[kind] < 0:
            continue
        if user in last:
            pairs.append((last[user], item))
        last[user] = item
    return pairs


def _hit_rates(cols: EventColumns, k: int = 10) -> tuple[float, float]:
    """Second half: next item among the k most frequent followers of the last item (learned on
    the first half), and among the k most popular items of the first half."""
    pairs = _next_pairs(cols)
    half = len(pairs) // 2
    followers: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for prev, nxt in pairs[:half]:
        followers[prev][nxt] += 1
    popular = {item for item, _ in Counter(nxt for _, nxt in pairs[:half]).most_common(k)}
    test = pairs[half:]
    seq = sum(nxt in {i for i, _ in followers[prev].most_common(k)} for prev, nxt in test)
    pop = sum(nxt in popular for _, nxt in test)
    return seq / len(test), pop / len(test)


def test_sequential_signal_exists(small: EventColumns) -> None:
    seq, pop = _hit_rates(small)
    # the last item predicts the next one much better than popularity (MovieLens: 1.6-4x)
    assert seq > 1.5 * pop


def test_no_sequential_signal_without_sequence_weights() -> None:
    plain = dataclasses.replace(SMALL, last_weight=0.0, second_weight=0.0, theme_weight=0.0)
    seq, pop = _hit_rates(generate(plain))
    seq_default, _ = _hit_rates(generate(SMALL))
    assert seq < 0.7 * seq_default
    assert seq < 1.3 * pop


def test_oracle_ranks_every_scored_event_and_beats_the_simple_rankers(
    small: EventColumns,
) -> None:
    ranks = oracle_ranks(SMALL)
    # one rank per event the protocol scores: positive, of a user with an earlier event
    events_before: Counter[str] = Counter()
    scored = 0
    for user, kind in zip(small.user.tolist(), small.type.tolist(), strict=True):
        scored += EVENT_TYPES[kind] > 0 and events_before[user] > 0
        events_before[user] += 1
    assert len(ranks) == scored
    assert ranks.min() >= 0 and ranks.max() < SMALL.n_items
    # the generator's own distribution ranks the next item far better than the last item's
    # followers or popularity (a ceiling for every variant on this stream)
    seq, pop = _hit_rates(small)
    assert (ranks < 10).mean() > max(seq, pop) + 0.05
    # asking for the ranks draws nothing more: the stream stays generate()'s
    np.testing.assert_array_equal(generate(SMALL).item, small.item)


def test_popularity_is_skewed(small: EventColumns) -> None:
    counts = np.sort(np.unique(small.item, return_counts=True)[1])[::-1]
    top_share = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_share > 0.2  # the top 10 % of items take well over 10 % of events
    flat = generate(dataclasses.replace(SMALL, popularity_sigma=0.0))
    flat_counts = np.sort(np.unique(flat.item, return_counts=True)[1])[::-1]
    assert flat_counts[: len(flat_counts) // 10].sum() / flat_counts.sum() < top_share


def test_drift_changes_what_is_consumed() -> None:
    def shift(cfg: SyntheticConfig) -> float:
        cols = generate(cfg)
        half = len(cols) // 2
        n = SMALL.n_items
        ids = np.array([int(x[1:]) for x in cols.item.tolist()])
        a = np.bincount(ids[:half], minlength=n) / half
        b = np.bincount(ids[half:], minlength=n) / (len(cols) - half)
        return float(np.abs(a - b).sum())  # total variation between the halves, x2

    steady = shift(dataclasses.replace(SMALL, drift_every=0))
    drifting = shift(dataclasses.replace(SMALL, drift_every=5_000, popularity_drift=0.5))
    assert drifting > 1.3 * steady


def test_tiny_and_empty_streams() -> None:
    assert len(generate(SyntheticConfig(n_users=1, n_items=2, n_events=1))) == 1
    empty = generate(SyntheticConfig(n_events=0))
    assert len(empty) == 0
    events = generate_events(SyntheticConfig(n_users=5, n_items=20, n_events=30, seed=9))
    assert len(events) == 30
    assert events[0].user == "u0"


def _continuations(cols: EventColumns, successor: np.ndarray) -> tuple[float, float]:
    """Shares of a user's positive events (after the first) whose item succeeds the user's last
    item, and any earlier item of the user."""
    last: dict[str, int] = {}
    pending: dict[str, set[int]] = defaultdict(set)
    hits = any_hits = pairs = 0
    for user, item, kind in zip(cols.user, cols.item, cols.type, strict=True):
        if kind in ("skip", "dislike"):
            continue
        i = int(item[1:])
        if user in last:
            pairs += 1
            hits += int(successor[last[user]] == i)
            any_hits += int(i in pending[user])
        last[user] = i
        pending[user].add(int(successor[i]))
    return hits / pairs, any_hits / pairs


def test_series_are_runs_inside_a_theme_and_the_stream_follows_them() -> None:
    from kdstream.replay._synthetic import _World

    cfg = dataclasses.replace(SMALL, series_len_mean=4.0, series_weight=5.0)
    world = _World(cfg, np.random.default_rng(cfg.seed))  # generate() builds the same world
    succ = world.successor
    linked = succ >= 0
    assert 0.5 < linked.mean() < 0.9  # runs of mean 4: about 3 of 4 items have a successor
    assert (world.topic[succ[linked]] == world.topic[linked]).all()
    assert len(set(succ[linked].tolist())) == linked.sum()  # one predecessor each: chains
    assert not (succ[linked] == np.flatnonzero(linked)).any()
    last_only = _continuations(generate(cfg), succ)
    open_ = _continuations(generate(dataclasses.replace(cfg, series_open=True)), succ)
    without = _continuations(generate(dataclasses.replace(cfg, series_weight=0.0)), succ)
    assert last_only[0] > 0.1 and last_only[0] > 5 * without[0]
    # open series: successors of older items are taken too, the last item's less often
    assert open_[1] > 0.2 and open_[1] > 3 * without[1]
    assert open_[1] - open_[0] > 2 * (last_only[1] - last_only[0])
    assert (_World(SMALL, np.random.default_rng(3)).successor == -1).all()  # off by default


@pytest.mark.parametrize(
    ("field", "value"),
    [("partners", -1), ("partners", 400), ("partners", 2.0), ("partner_weight", -1.0),
     ("partner_second", -0.5), ("partner_sigma", -0.1), ("partner_weight", float("nan"))],
)
def test_bad_partner_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"SyntheticConfig.{field}"):
        dataclasses.replace(SMALL, **{field: value})


def _partner_shares(cols: EventColumns, partner: np.ndarray) -> tuple[float, float]:
    """Shares of a user's positive events (after the second) whose item is a partner of the
    user's last item, and of the item before it."""
    sets = [set(row) for row in partner.tolist()]
    hist: dict[str, list[int]] = defaultdict(list)
    last_hits = second_hits = pairs = 0
    for user, item, kind in zip(cols.user, cols.item, cols.type, strict=True):
        if kind in ("skip", "dislike"):
            continue
        i, h = int(item[1:]), hist[user]
        if len(h) >= 2:
            pairs += 1
            last_hits += i in sets[h[-1]]
            second_hits += i in sets[h[-2]]
        h.append(i)
    return last_hits / pairs, second_hits / pairs


def test_partners_are_distinct_popular_items_and_the_stream_follows_them() -> None:
    from kdstream.replay._synthetic import _World

    cfg = dataclasses.replace(SMALL, partners=10, partner_weight=3.0, partner_sigma=1.0)
    world = _World(cfg, np.random.default_rng(cfg.seed))  # generate() builds the same world
    partner, link = world.partner, world.link
    assert partner.shape == link.shape == (SMALL.n_items, 10)
    assert all(len(set(row)) == 10 for row in partner.tolist())  # distinct
    assert not (partner == np.arange(SMALL.n_items)[:, None]).any()  # never the item itself
    assert (link > 0).all() and link.mean() == pytest.approx(1.0, abs=0.1)
    assert link.std() > 0.5  # log-normal strengths: a few strong links per item
    # drawn by appeal: popular items are partners of more items than unpopular ones
    in_degree = np.bincount(partner.ravel(), minlength=SMALL.n_items)
    top = np.argsort(world.log_appeal)[::-1]
    assert in_degree[top[:40]].mean() > 2 * in_degree[top[-40:]].mean()
    # not from the latent factors: a partner shares the item's theme about as often as chance
    same_topic = (world.topic[partner] == world.topic[:, None]).mean()
    assert same_topic < 0.2

    chance = 10 / SMALL.n_items
    linked = _partner_shares(generate(cfg), partner)
    second = _partner_shares(generate(dataclasses.replace(cfg, partner_second=3.0)), partner)
    without = _partner_shares(generate(dataclasses.replace(cfg, partner_weight=0.0)), partner)
    assert linked[0] > 0.3 and linked[0] > 10 * without[0]
    assert without[0] < 3 * chance  # the links alone, not the latent factors, make the share
    assert second[1] > 0.2 and second[1] > 5 * linked[1]


def test_partners_off_by_default_leave_the_stream_unchanged(small: EventColumns) -> None:
    from kdstream.replay._synthetic import _World

    assert _World(SMALL, np.random.default_rng(3)).partner.shape == (SMALL.n_items, 0)
    # weights without partners draw nothing more: the same stream as without them
    weighted = generate(dataclasses.replace(SMALL, partner_weight=3.0, partner_second=1.0))
    np.testing.assert_array_equal(weighted.item, small.item)


@pytest.mark.parametrize(
    ("field", "value"),
    [("lists", -1), ("list_len", 0), ("list_weight", -1.0),
     ("list_skip", 1.0), ("list_skip", -0.1), ("lists", 1.5)],
)
def test_bad_list_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"SyntheticConfig.{field}"):
        dataclasses.replace(SMALL, **{field: value})


def _down_a_list_share(cols: EventColumns, lists: np.ndarray) -> float:
    """Share of a user's positive events (after the first) whose item comes right after the
    user's last item on some list."""
    after: defaultdict[int, set[int]] = defaultdict(set)
    for row in lists.tolist():
        row = [i for i in row if i >= 0]
        for k, item in enumerate(row):
            after[item].update(row[k + 1 : k + 2])
    pairs = _next_pairs(cols)
    return sum(int(nxt[1:]) in after[int(prev[1:])] for prev, nxt in pairs) / len(pairs)


def test_lists_are_theme_pages_and_sessions_go_down_them() -> None:
    from kdstream.replay._synthetic import _World

    # themes of SMALL's 400 items are too small for lists shorter than the theme
    cfg = dataclasses.replace(SMALL, n_items=1500, lists=100, list_len=20, list_weight=4.0)
    world = _World(cfg, np.random.default_rng(cfg.seed))  # generate() builds the same world
    lists, topic = world.lists, world.list_topic
    assert lists.shape == (100, 20) and topic.shape == (100,)
    for row, t in zip(lists.tolist(), topic.tolist(), strict=True):
        items = [i for i in row if i >= 0]
        assert row[: len(items)] == items  # padding only at the end
        assert len(set(items)) == len(items) == min(20, int((world.topic == t).sum()))
        assert (world.topic[items] == t).all()  # a list holds items of its theme
    assert np.bincount(lists[lists >= 0]).max() > 1  # an item is on several lists
    followed = _down_a_list_share(generate(cfg), lists)
    ignored = _down_a_list_share(generate(dataclasses.replace(cfg, list_weight=0.0)), lists)
    assert followed > 0.05 and followed > 3 * ignored
    # off by default: no lists, and a weight without lists draws nothing more
    assert _World(SMALL, np.random.default_rng(3)).lists.shape == (0, SMALL.list_len)
    np.testing.assert_array_equal(
        generate(dataclasses.replace(SMALL, list_weight=4.0)).item, generate(SMALL).item)
