"""A synthetic event stream with taste, popularity, sessions, item-to-item sequences and drift.

Built so that a sequence-aware model can learn much more than matrix factorisation:

* **Items** have a Zipf-like popularity (``popularity_alpha``) and latent factors; each item has
  ``n_next`` fixed *successors* drawn with a tempered popularity prior (``pop ** 0.5``, so the
  transition graph is not just "the most popular items").
* **Users** arrive over the whole stream (new users keep appearing), each with a latent taste and
  an activity level; returning users are drawn by activity.
* **Sessions** (geometric length, mean ``session_len_mean``; a few interleaved at a time): with
  probability ``p_sequential`` the next item is one of the user's last item's successors,
  otherwise it is drawn from ``softmax(taste · item_factors + log popularity)``. With probability
  ``p_negative`` an event is a ``skip``/``dislike`` of an item shown by popularity.
* An item never repeats for a user (resampled). Timestamps increase (exponential gaps, mean
  ``dt_mean_s``).
* **Drift**: every ``drift_every`` events tastes rotate part-way and a quarter of the transition
  graph is rewired.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from kdstream.errors import ConfigError
from kdstream.stream._event import Event

from ._columns import EventColumns

_CONCURRENT_SESSIONS = 8  # sessions open at once: interleaves users like a real log
_RETIRE_SHARE = 0.5  # a user who has seen this share of the catalogue stops coming back
_REWIRE_SHARE = 0.25  # share of items whose successors change at each drift
_DRIFT_ANGLE = math.pi / 4  # how far tastes rotate at each drift
_FACTOR_SCALE = 2.0  # std of taste·factor: comparable to the spread of log popularity
_SUCCESSOR_TEMPER = 0.5  # successors drawn ∝ popularity ** this
_MAX_RESAMPLE = 4  # rejections before the cached distribution is rebuilt
_POSITIVE_TYPES = ("view", "like", "purchase")
_POSITIVE_CDF = (0.80, 0.95, 1.0)
_P_SKIP = 0.7  # share of negative events that are skips (the rest are dislikes)


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of :func:`generate`.

    Parameters
    ----------
    n_users
        Users in all; they arrive over the whole stream.
    n_items
        Catalogue size.
    n_events
        Events to generate.
    dim
        Latent taste dimension.
    popularity_alpha
        Zipf exponent of item popularity (0 = uniform).
    p_sequential
        Probability that the next item follows the last item's successors rather than taste.
    n_next
        Successors per item.
    drift_every
        Events between drifts (tastes rotate, transitions partly rewire); 0 = never.
    p_negative
        Probability that an event is a ``skip`` or ``dislike``.
    session_len_mean
        Mean session length in events (geometric).
    t0
        Timestamp before the first event (epoch seconds).
    dt_mean_s
        Mean gap between consecutive events, seconds.
    seed
        Seed of every random draw (``None``: fresh entropy).

    Examples
    --------
    >>> SyntheticConfig(n_events=1000).n_events
    1000
    >>> SyntheticConfig(p_sequential=2.0)
    Traceback (most recent call last):
    ...
    kdstream.errors.ConfigError: SyntheticConfig.p_sequential must be in [0, 1], got 2.0
    """

    n_users: int = 2000
    n_items: int = 1000
    n_events: int = 200_000
    dim: int = 8
    popularity_alpha: float = 1.0
    p_sequential: float = 0.5
    n_next: int = 3
    drift_every: int = 50_000
    p_negative: float = 0.05
    session_len_mean: float = 20.0
    t0: float = 1_600_000_000.0
    dt_mean_s: float = 30.0
    seed: int | None = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "seed":
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 0
                ):
                    raise ConfigError(f"SyntheticConfig.seed must be an int >= 0 or None, "
                                      f"got {value!r}")
                continue
            if f.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"SyntheticConfig.{f.name} must be an int, got {value!r}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"SyntheticConfig.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"SyntheticConfig.{f.name} must be finite, got {value!r}")
        self._check(self.n_users >= 1, "n_users", ">= 1")
        self._check(self.n_items >= 2, "n_items", ">= 2")
        self._check(self.n_events >= 0, "n_events", ">= 0")
        self._check(self.dim >= 1, "dim", ">= 1")
        self._check(self.popularity_alpha >= 0, "popularity_alpha", ">= 0")
        self._check(0 <= self.p_sequential <= 1, "p_sequential", "in [0, 1]")
        self._check(1 <= self.n_next < self.n_items, "n_next", f"in [1, n_items={self.n_items})")
        self._check(self.drift_every >= 0, "drift_every", ">= 0")
        self._check(0 <= self.p_negative < 1, "p_negative", "in [0, 1)")
        self._check(self.session_len_mean >= 1, "session_len_mean", ">= 1")
        self._check(self.t0 >= 0, "t0", ">= 0")
        self._check(self.dt_mean_s > 0, "dt_mean_s", "> 0")
        capacity = int(self.n_users * self.n_items * _RETIRE_SHARE)
        self._check(
            self.n_events <= capacity,
            "n_events",
            f"<= n_users * n_items / 2 = {capacity} (items never repeat for a user)",
        )

    def _check(self, ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"SyntheticConfig.{name} must be {rule}, got {getattr(self, name)!r}")


def _successors(
    rng: np.random.Generator, weights: npt.NDArray[np.float64], items: npt.ArrayLike, n_next: int
) -> npt.NDArray[np.int64]:
    """``n_next`` distinct successors (never the item itself) for each of ``items``.

    Gumbel-top-k: the k largest of ``log w + Gumbel`` are a weighted draw without replacement.
    """
    rows = np.asarray(items, dtype=np.int64)
    keys = np.log(weights)[None, :] + rng.gumbel(size=(len(rows), len(weights)))
    keys[np.arange(len(rows)), rows] = -np.inf
    top = np.argpartition(-keys, n_next - 1, axis=1)[:, :n_next]
    # argpartition leaves the top k unordered; order them by key so the draw is reproducible
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).astype(np.int64)


class _World:
    """The hidden state of the generator (tastes, factors, graph) and its draws."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        n_items = cfg.n_items
        ranks = rng.permutation(n_items).astype(np.float64)
        pop = 1.0 / (ranks + 1.0) ** cfg.popularity_alpha
        self.pop = pop / pop.sum()
        self.log_pop = np.log(self.pop)
        self.pop_cdf: list[float] = np.cumsum(self.pop).tolist()
        scale = _FACTOR_SCALE / math.sqrt(cfg.dim)
        self.factors = rng.normal(0.0, scale, size=(n_items, cfg.dim))
        self.taste = rng.normal(0.0, 1.0, size=(cfg.n_users, cfg.dim))
        self.succ_weights = self.pop**_SUCCESSOR_TEMPER
        self.succ: list[list[int]] = _successors(
            rng, self.succ_weights, np.arange(n_items), cfg.n_next
        ).tolist()
        self.activity = (0.1 + 0.9 * rng.beta(0.5, 2.0, size=cfg.n_users)).tolist()
        self._cdf: dict[int, list[float]] = {}

    def drift(self) -> None:
        rng = self.rng
        q, _ = np.linalg.qr(rng.normal(size=(self.cfg.dim, self.cfg.dim)))
        norms = np.linalg.norm(self.taste, axis=1, keepdims=True)
        mixed = math.cos(_DRIFT_ANGLE) * self.taste + math.sin(_DRIFT_ANGLE) * (self.taste @ q)
        self.taste = mixed / np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12) * norms
        n_rewire = max(1, round(_REWIRE_SHARE * self.cfg.n_items))
        items = rng.choice(self.cfg.n_items, size=n_rewire, replace=False)
        new = _successors(rng, self.succ_weights, items, self.cfg.n_next).tolist()
        for item, row in zip(items.tolist(), new, strict=True):
            self.succ[item] = row
        self._cdf.clear()

    def taste_cdf(self, user: int, seen: set[int], fresh: bool = False) -> list[float]:
        """Cumulative taste weights of ``user``, with the items seen so far zeroed.

        Cached per user until the next drift or until ``fresh`` asks for a rebuild (after many
        rejections: the items seen since the last build hold much of the mass).
        """
        cdf = None if fresh else self._cdf.get(user)
        if cdf is None:
            logits = self.factors @ self.taste[user] + self.log_pop
            p = np.exp(logits - logits.max())
            if seen:
                p[list(seen)] = 0.0
            cdf = np.cumsum(p).tolist()
            self._cdf[user] = cdf
        return cdf

    def draw_unseen(self, cdf: list[float], seen: set[int], py: random.Random) -> int:
        """An item from ``cdf`` that is not in ``seen`` (-1 after too many rejections)."""
        top = cdf[-1]
        last = len(cdf) - 1
        rand = py.random
        for _ in range(_MAX_RESAMPLE):
            item = bisect_right(cdf, rand() * top)
            if item > last:
                item = last
            if item not in seen:
                return item
        return -1

    def draw_taste(self, user: int, seen: set[int], py: random.Random) -> int:
        item = self.draw_unseen(self.taste_cdf(user, seen), seen, py)
        if item < 0:
            item = self.draw_unseen(self.taste_cdf(user, seen, fresh=True), seen, py)
        if item < 0:  # practically never: the rebuilt distribution has no seen items in it
            unseen = [j for j in range(self.cfg.n_items) if j not in seen]
            item = unseen[int(py.random() * len(unseen))]
        return item

    def draw_popular(self, seen: set[int], py: random.Random) -> int:
        item = self.draw_unseen(self.pop_cdf, seen, py)
        if item < 0:  # rare: a user who saw most popular items; draw exactly from the rest
            p = self.pop.copy()
            p[list(seen)] = 0.0
            item = self.draw_unseen(np.cumsum(p).tolist(), seen, py)
        return item


def generate(config: SyntheticConfig | None = None) -> EventColumns:
    """Generate a synthetic stream (see the module docstring for the model).

    Users are named ``u<k>`` in order of arrival, items ``i<k>``. The same ``seed`` gives the same
    stream.

    Examples
    --------
    >>> cols = generate(SyntheticConfig(n_users=50, n_items=100, n_events=500, seed=1))
    >>> len(cols), bool((cols.ts[1:] >= cols.ts[:-1]).all()), cols.user[0]
    (500, True, 'u0')
    """
    cfg = config if config is not None else SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)
    py = random.Random(int(rng.integers(2**63)))
    n = cfg.n_events
    ts = cfg.t0 + np.cumsum(rng.exponential(cfg.dt_mean_s, size=n))

    users: list[int] = []
    items: list[int] = []
    kinds: list[int] = []  # index into _KINDS

    n_sessions = max(1.0, n / cfg.session_len_mean)
    p_new = min(1.0, cfg.n_users / n_sessions)
    stop_p = 1.0 / cfg.session_len_mean
    log_continue = math.log1p(-stop_p) if stop_p < 1.0 else -math.inf
    retire_at = int(cfg.n_items * _RETIRE_SHARE)

    seen: list[set[int]] = []
    last_item: list[int] = []
    retired: set[int] = set()
    slot_user = [-1] * _CONCURRENT_SESSIONS
    slot_left = [0] * _CONCURRENT_SESSIONS
    n_kinds_pos = len(_POSITIVE_TYPES)

    def new_user() -> int:
        u = len(seen)
        seen.append(set())
        last_item.append(-1)
        return u

    def pick_user() -> int:
        n_arrived = len(seen)
        if n_arrived < cfg.n_users and (n_arrived == 0 or py.random() < p_new):
            return new_user()
        for _ in range(64):
            u = int(py.random() * n_arrived)
            if u not in retired and py.random() < world.activity[u]:
                return u
        active = [u for u in range(n_arrived) if u not in retired]
        if active:
            return active[int(py.random() * len(active))]
        if n_arrived < cfg.n_users:
            return new_user()
        raise ConfigError(
            f"SyntheticConfig.n_events={cfg.n_events} exhausts the catalogue of every user: "
            "raise n_users or n_items"
        )

    # Locals: this loop runs once per event, so attribute look-ups are worth hoisting.
    rand = py.random
    p_negative, p_sequential, drift_every = cfg.p_negative, cfg.p_sequential, cfg.drift_every
    succ = world.succ  # mutated in place by drift()
    draw_taste, draw_popular = world.draw_taste, world.draw_popular
    pos0, pos1 = _POSITIVE_CDF[0], _POSITIVE_CDF[1]
    for e in range(n):
        if drift_every and e and e % drift_every == 0:
            world.drift()
        slot = int(rand() * _CONCURRENT_SESSIONS)
        if slot_left[slot] <= 0 or slot_user[slot] in retired:
            slot_user[slot] = pick_user()
            length = 1
            if log_continue != -math.inf:
                length += int(math.log(1.0 - rand()) / log_continue)
            slot_left[slot] = length
        u = slot_user[slot]
        slot_left[slot] -= 1
        user_seen = seen[u]

        if rand() < p_negative:
            item = draw_popular(user_seen, py)
            kind = n_kinds_pos + (0 if rand() < _P_SKIP else 1)
        else:
            item = -1
            prev = last_item[u]
            if prev >= 0 and rand() < p_sequential:
                cands = [j for j in succ[prev] if j not in user_seen]
                if cands:
                    item = cands[int(rand() * len(cands))]
            if item < 0:
                item = draw_taste(u, user_seen, py)
            r = rand()
            kind = 0 if r < pos0 else (1 if r < pos1 else 2)
            last_item[u] = item
        user_seen.add(item)
        if len(user_seen) >= retire_at:
            retired.add(u)
        users.append(u)
        items.append(item)
        kinds.append(kind)

    user_names = np.array([f"u{k}" for k in range(max(1, len(seen)))], dtype=object)
    item_names = np.array([f"i{k}" for k in range(cfg.n_items)], dtype=object)
    kind_names = np.array(_KINDS, dtype=object)
    return EventColumns(
        user_names[np.array(users, dtype=np.int64)],
        item_names[np.array(items, dtype=np.int64)],
        kind_names[np.array(kinds, dtype=np.int64)],
        ts,
        np.full(n, math.nan),
    )


_KINDS = (*_POSITIVE_TYPES, "skip", "dislike")


def generate_events(config: SyntheticConfig | None = None) -> list[Event]:
    """:func:`generate` as a list of ``Event`` objects."""
    return generate(config).to_events()


__all__ = ["SyntheticConfig", "generate", "generate_events"]
