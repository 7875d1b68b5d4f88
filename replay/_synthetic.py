"""A synthetic event stream shaped like real interaction logs.

Why this shape: the demo must show what kdstream is for, so the stream has to hold what real logs
hold and a one-pass online student finds hard while a teacher trained for several epochs over a
window learns it. The defaults are matched to statistics of the shared MovieLens logs (ML-100K
and the ML-1M subset), scaled to 200,000 events; README's demo paragraph lists them.

* **A large, long-tailed catalogue.** Item appeal is log-normal (``popularity_sigma``): the top
  1 % of items take under a tenth of the events, the top 10 % under half, and a large share of
  items is seen only a handful of times. So most transitions are seen rarely or never and must
  be generalised through latent structure rather than counted.
* **Latent structure.** Items belong to ``n_topics`` themes (topic sizes are long-tailed too);
  an item's factor vector is its theme's centre plus item noise (``item_noise``), unit length.
* **Taste mixed with session intent.** A user's taste is a mix of two or three favourite
  themes; each session has a theme drawn from the user's taste, held for the whole session.
* **Sequences beyond the last item.** The next item is drawn from
  ``softmax(log appeal + sharpness * f_i . (w_t taste + w_s theme + w_1 f_last + w_2 f_last2))``:
  it resembles the last item and, less, the one before (second order), inside the session's
  theme and the user's taste.
* **Series (off by default).** With ``series_len_mean > 1`` a theme's items form ordered runs
  (sequels, episodes), and ``series_weight`` is added to the logit of the successor of the
  user's last item, or with ``series_open`` of every item the user has consumed (series are
  picked up again sessions later). Structure a teacher reading 50 items of history might learn
  better than a one-pass student; BENCHMARKS.md measures that it does not: the student learns
  both as well as SASRec does.
* **Co-consumption links (off by default).** With ``partners > 0`` each item has that many
  partner items, drawn once by appeal, not from the latent factors (bought together, the film's
  soundtrack, what a store shelves beside it), with log-normal link strengths
  (``partner_sigma``); ``partner_weight`` times a link's strength is added to the logits of the
  last item's partners and ``partner_second`` times it to those of the item before. Item-specific
  links like these are what a count of last -> next pairs finds in real logs, a pattern not
  explained by latent similarity. Measured: the one-pass student learns them as well as SASRec
  does (10 to 60 partners, 25 to 60 % of positive events taking a partner of the last item).
* **Lists (off by default).** With ``lists > 0`` each theme has lists (a genre page, a chart,
  a playlist: ``list_len`` items of the theme drawn by appeal, in a fixed order; an item is on
  several lists). A session goes down one list of its theme from the top: ``list_weight`` is
  added to the logit of the next item of the list the user has not seen, ``list_skip`` times
  that to the one after, and so on for ``_LIST_AHEAD`` items; taking one of them moves the
  session there. Which list a session follows shows in its last two items, not in the last one
  alone. Measured: the student learns that as well as SASRec does too.
* **No repeats.** Items a user has seen are masked out, as in rating logs.
* **Drift.** Every ``drift_every`` events tastes rotate part-way and item appeal takes a
  log-normal step (``popularity_drift``), so old counts grow stale.
* Sessions (geometric length) of ``_SLOTS`` users run at once and interleave, as in a real log;
  new users keep arriving over the whole stream; ``p_negative`` of the events are ``skip`` /
  ``dislike`` of an item drawn by appeal alone.

The draw is vectorised: each round draws one event for every open session at once (one
``(sessions, n_items)`` matrix), so 200,000 events over 1,500 items take a few seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from kdstream.errors import ConfigError
from kdstream.stream._event import Event

from ._columns import EventColumns

_SLOTS = 32  # sessions open at once: interleaves users like a real log
_RETIRE_SHARE = 0.5  # a user who has seen this share of the catalogue stops coming back
_DRIFT_ANGLE = math.pi / 4  # how far tastes rotate at each drift
_TOPIC_SIZE_ALPHA = 0.7  # topic sizes ∝ rank ** -this: a few big genres, many small ones
_TASTE_NOISE = 0.5  # a user's own direction beside its favourite themes
_THEME_SHARPNESS = 4.0  # how strongly a session's theme follows the user's taste
_POSITIVE_TYPES = ("view", "like", "purchase")
_POSITIVE_CDF = (0.80, 0.95, 1.0)
_P_SKIP = 0.7  # share of negative events that are skips (the rest are dislikes)
_KINDS = (*_POSITIVE_TYPES, "skip", "dislike")
_PARTNER_APPEAL = 0.5  # partners are drawn ∝ appeal ** this: popular items are linked more often
_LIST_AHEAD = 8  # how far down its list a session may skip in one step
_PARTNER_CHUNK = 1024  # rows of the partner draw at a time (bounds its memory for big catalogues)


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of :func:`generate`; the defaults are matched to the MovieLens logs.

    Parameters
    ----------
    n_users
        Users in all; they arrive over the whole stream (ML-100K: about 100 events per user).
    n_items
        Catalogue size (ML-100K: 60 events per item, ML-1M subset: 135; 1,500 items give 133
        at 200,000 events, and each user sees about 7 % of the catalogue, as on ML-100K).
    n_events
        Events to generate.
    dim
        Latent dimension of items, tastes and themes.
    n_topics
        Themes (genres) the items belong to.
    item_noise
        Spread of an item's factor around its theme's centre (0 = every item of a theme alike).
    popularity_sigma
        Standard deviation of log item appeal (0 = all equally appealing). With 1.2 the top 1 %
        of items take about 7 % of the events and the top 10 % about 35 % (MovieLens: 7-9 %
        and 43-44 %).
    taste_weight, theme_weight
        Weights of the user's taste and of the session's theme in the next-item query.
    last_weight, second_weight
        Weights of the last and the second-to-last item (0 and 0: no sequential signal).
    series_len_mean
        Mean length of a series (geometric; 1 = no series, the default).
    series_weight
        Logit added to the successor of the user's last item in its series (0 = none).
    series_open
        Add it to the successors of all the user's earlier items instead (unfinished series).
    partners
        Partner items per item (0 = no co-consumption links, the default).
    partner_weight, partner_second
        Logit added, times the link's strength, to the partners of the last and of the
        second-to-last item.
    partner_sigma
        Standard deviation of log link strength (0 = all links alike; strengths have mean 1).
    lists
        Lists in all, spread over the themes by theme size (0 = none, the default).
    list_len
        Items per list (fewer on a theme with fewer items).
    list_weight
        Logit added to the next unseen item of the session's list (0 = lists are not followed).
    list_skip
        Factor on that bonus for each further item down the list, in [0, 1).
    sharpness
        Scale of the query: how much taste, theme and sequence matter against appeal.
    drift_every
        Events between drifts (tastes rotate, appeal changes); 0 = never.
    popularity_drift
        Standard deviation of the log-appeal step at each drift.
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
    >>> SyntheticConfig(p_negative=2.0)
    Traceback (most recent call last):
    ...
    kdstream.errors.ConfigError: SyntheticConfig.p_negative must be in [0, 1), got 2.0
    """

    n_users: int = 2000
    n_items: int = 1500
    n_events: int = 200_000
    dim: int = 16
    n_topics: int = 40
    item_noise: float = 0.6
    popularity_sigma: float = 1.2
    taste_weight: float = 0.5
    theme_weight: float = 0.5
    last_weight: float = 1.0
    second_weight: float = 0.5
    series_len_mean: float = 1.0
    series_weight: float = 0.0
    series_open: bool = False
    partners: int = 0
    partner_weight: float = 0.0
    partner_second: float = 0.0
    partner_sigma: float = 0.0
    lists: int = 0
    list_len: int = 30
    list_weight: float = 0.0
    list_skip: float = 0.5
    sharpness: float = 4.0
    drift_every: int = 50_000
    popularity_drift: float = 0.3
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
            if f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"SyntheticConfig.{f.name} must be a bool, got {value!r}")
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
        self._check(self.n_topics >= 1, "n_topics", ">= 1")
        for name in ("item_noise", "popularity_sigma", "taste_weight", "theme_weight",
                     "last_weight", "second_weight", "sharpness", "popularity_drift"):
            self._check(getattr(self, name) >= 0, name, ">= 0")
        self._check(self.drift_every >= 0, "drift_every", ">= 0")
        self._check(0 <= self.p_negative < 1, "p_negative", "in [0, 1)")
        self._check(self.session_len_mean >= 1, "session_len_mean", ">= 1")
        self._check(self.series_len_mean >= 1, "series_len_mean", ">= 1")
        self._check(self.series_weight >= 0, "series_weight", ">= 0")
        self._check(self.lists >= 0, "lists", ">= 0")
        self._check(self.list_len >= 1, "list_len", ">= 1")
        self._check(self.list_weight >= 0, "list_weight", ">= 0")
        self._check(0 <= self.list_skip < 1, "list_skip", "in [0, 1)")
        self._check(0 <= self.partners < self.n_items, "partners", "in [0, n_items)")
        for name in ("partner_weight", "partner_second", "partner_sigma"):
            self._check(getattr(self, name) >= 0, name, ">= 0")
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


def parse_settings(pairs: list[str]) -> dict[str, float | int | bool]:
    """``KEY=VALUE`` strings as :class:`SyntheticConfig` keyword arguments (for command lines).

    Ints stay ints and bools are ``0`` / ``1``; ``n_events`` and ``seed`` are left to their own
    options.

    Examples
    --------
    >>> parse_settings(["n_items=6000", "series_weight=3", "series_open=1"])
    {'n_items': 6000, 'series_weight': 3.0, 'series_open': True}
    >>> parse_settings(["series_open=yes"])
    Traceback (most recent call last):
    ...
    kdstream.errors.ConfigError: series_open: expected 0 or 1, got 'yes'
    """
    kinds = {f.name: f.type for f in fields(SyntheticConfig)}
    out: dict[str, float | int | bool] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in kinds or key in ("n_events", "seed"):
            raise ConfigError(f"expected KEY=VALUE with KEY a SyntheticConfig field other than "
                              f"n_events and seed, got {pair!r}")
        try:
            if kinds[key] in ("bool", bool):
                if value not in ("0", "1"):
                    raise ValueError(value)
                out[key] = value == "1"
            else:
                out[key] = int(value) if kinds[key] in ("int", int) else float(value)
        except ValueError:
            expected = {"int": "an int", "bool": "0 or 1"}.get(str(kinds[key]), "a number")
            raise ConfigError(f"{key}: expected {expected}, got {value!r}") from None
    return out


def _unit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class _World:
    """The hidden state of the generator: item factors and appeal, tastes."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        d, k = cfg.dim, cfg.n_topics
        self.centres = _unit(rng.normal(size=(k, d)))
        sizes = 1.0 / np.arange(1, k + 1) ** _TOPIC_SIZE_ALPHA
        self.topic = rng.choice(k, size=cfg.n_items, p=sizes / sizes.sum())
        noise = rng.normal(size=(cfg.n_items, d)) / math.sqrt(d)
        self.factors = _unit(self.centres[self.topic] + cfg.item_noise * noise)
        self.f_t = np.ascontiguousarray(self.factors.T, dtype=np.float32)
        self.log_appeal = rng.normal(0.0, cfg.popularity_sigma, size=cfg.n_items).astype(np.float32)
        # taste: two or three favourite themes plus the user's own direction
        n_fav = rng.integers(2, 4, size=cfg.n_users)
        fav = rng.integers(0, k, size=(cfg.n_users, 3))
        mix = (np.arange(3)[None, :] < n_fav[:, None]) * rng.dirichlet(np.ones(3), cfg.n_users)
        self.taste = _unit(np.einsum("uk,ukd->ud", mix, self.centres[fav])
                           + _TASTE_NOISE * rng.normal(size=(cfg.n_users, d)) / math.sqrt(d))
        self.activity = 0.1 + 0.9 * rng.beta(0.5, 2.0, size=cfg.n_users)
        self.successor = _series(rng, self.topic, cfg.series_len_mean)
        # drawn last, and only when asked for, so streams without links stay as they were
        self.partner, self.link = _partners(rng, self.log_appeal, cfg.partners, cfg.partner_sigma)
        self.lists, self.list_topic = _lists(rng, self, cfg.lists, cfg.list_len)

    def drift(self) -> None:
        rng, d = self.rng, self.cfg.dim
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        self.taste = _unit(math.cos(_DRIFT_ANGLE) * self.taste
                           + math.sin(_DRIFT_ANGLE) * (self.taste @ q))
        step = rng.normal(0.0, self.cfg.popularity_drift, size=self.cfg.n_items)
        self.log_appeal = (self.log_appeal + step).astype(np.float32)

    def theme(self, user: int) -> int:
        """A session's theme: one topic, drawn by the user's taste."""
        logits = _THEME_SHARPNESS * (self.centres @ self.taste[user])
        p = np.exp(logits - logits.max())
        return int(self.rng.choice(len(p), p=p / p.sum()))


def _series(
    rng: np.random.Generator, topic: npt.NDArray[np.int64], len_mean: float
) -> npt.NDArray[np.int64]:
    """Each item's successor in its series (-1: none): a theme's items, shuffled, cut into runs
    of geometric length (mean ``len_mean``), so sequels share their theme."""
    successor = np.full(len(topic), -1, np.int64)
    if len_mean <= 1.0:
        return successor
    order = np.argsort(topic * 1.0 + rng.random(len(topic)), kind="stable")
    # a run continues from one item to the next of the same theme with probability 1 - 1/mean
    go_on = (rng.random(len(order) - 1) >= 1.0 / len_mean) & (
        topic[order[1:]] == topic[order[:-1]])
    successor[order[:-1][go_on]] = order[1:][go_on]
    return successor


def _partners(
    rng: np.random.Generator, log_appeal: npt.NDArray[np.float32], k: int, sigma: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Each item's ``k`` partners (distinct, never itself), drawn without replacement with
    probability ∝ appeal ** _PARTNER_APPEAL, and the strength of each link (log-normal, mean 1)."""
    n = len(log_appeal)
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    partner = np.empty((n, k), np.int64)
    score = _PARTNER_APPEAL * log_appeal.astype(np.float64)
    for lo in range(0, n, _PARTNER_CHUNK):  # Gumbel top-k, a chunk of rows at a time
        rows = np.arange(lo, min(lo + _PARTNER_CHUNK, n))
        keys = score - np.log(-np.log(rng.random((len(rows), n))))
        keys[np.arange(len(rows)), rows] = -np.inf
        partner[rows] = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    link = np.exp(rng.normal(-0.5 * sigma**2, sigma, size=(n, k))).astype(np.float32)
    return partner, link


def _lists(
    rng: np.random.Generator, world: _World, n_lists: int, length: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``n_lists`` lists, each of up to ``length`` distinct items of one theme (drawn by appeal
    like partners, in random order; -1 pads a list of a theme smaller than ``length``), and
    each list's theme (themes get lists in proportion to their size)."""
    n_topics = len(world.centres)
    if n_lists == 0:
        return np.zeros((0, length), np.int64), np.zeros(0, np.int64)
    sizes = np.bincount(world.topic, minlength=n_topics)
    list_topic = rng.choice(n_topics, size=n_lists, p=sizes / sizes.sum())
    score = _PARTNER_APPEAL * world.log_appeal.astype(np.float64)
    k = min(length, len(score))
    out = np.full((n_lists, length), -1, np.int64)
    for lo in range(0, n_lists, _PARTNER_CHUNK):  # Gumbel top-k inside the list's theme
        rows = np.arange(lo, min(lo + _PARTNER_CHUNK, n_lists))
        keys = score - np.log(-np.log(rng.random((len(rows), len(score)))))
        keys[world.topic[None, :] != list_topic[rows, None]] = -np.inf
        top = rng.permuted(np.argpartition(-keys, k - 1, axis=1)[:, :k], axis=1)
        top[np.isinf(np.take_along_axis(keys, top, axis=1))] = -1  # the theme ran out
        # the theme's items first, in their random order, then the padding
        out[rows, :k] = np.take_along_axis(top, np.argsort(top < 0, axis=1, kind="stable"), axis=1)
    return out, list_topic


def _draw(
    rng: np.random.Generator, logits: npt.NDArray[np.float32], seen: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """One item per row from ``softmax(logits)`` with ``seen`` items left out (inverse CDF)."""
    logits[seen] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits, out=logits)
    cdf = np.cumsum(p, axis=1)
    u = rng.random(len(p)) * cdf[:, -1]
    item = (cdf <= u[:, None]).sum(axis=1)  # per row: searchsorted(cdf, u, side="right")
    # float round-off may point past the last unseen item: step back to one that is unseen
    item = np.minimum(item, p.shape[1] - 1)
    bad = np.flatnonzero(seen[np.arange(len(item)), item])
    for r in bad.tolist():
        item[r] = int(np.flatnonzero(~seen[r])[-1])
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
    return _generate(config if config is not None else SyntheticConfig(), None)


def oracle_ranks(config: SyntheticConfig | None = None) -> npt.NDArray[np.int64]:
    """0-based rank of each scored event's item under the generator's own next-item distribution.

    The stream is :func:`generate`'s for the same config (no extra random draw). An event is
    scored as ``shared/EVALUATION.md`` scores it: positive, of a user with earlier events. The
    oracle knows what no model sees (each session's theme, the tastes after a drift), so its
    HR@k, ``mean(ranks < k)``, is a ceiling for every variant on this stream, not a target. It
    ranks among the items the user has not seen yet (the generator's support), where the
    evaluation ranks among the items the stream has shown so far: nearly the same catalogue
    after the first few thousand events.
    """
    ranks: list[npt.NDArray[np.int64]] = []
    _generate(config if config is not None else SyntheticConfig(), ranks)
    return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


def _generate(
    cfg: SyntheticConfig, ranks_out: list[npt.NDArray[np.int64]] | None
) -> EventColumns:
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)
    n, n_items, d = cfg.n_events, cfg.n_items, cfg.dim
    ts = cfg.t0 + np.cumsum(rng.exponential(cfg.dt_mean_s, size=n))
    out_users = np.zeros(n, np.int64)
    out_items = np.zeros(n, np.int64)
    out_kinds = np.zeros(n, np.int64)

    n_sessions = max(1.0, n / cfg.session_len_mean)
    p_new = min(1.0, cfg.n_users / n_sessions)
    p_stop = 1.0 / cfg.session_len_mean
    retire_at = max(1, int(n_items * _RETIRE_SHARE))
    seen = np.zeros((cfg.n_users, n_items), bool)
    open_next = np.zeros((cfg.n_users, n_items), bool) if cfg.series_open else seen
    n_seen = np.zeros(cfg.n_users, np.int64)
    last = np.full((cfg.n_users, 2), -1, np.int64)  # last and second-to-last positive item
    retired = np.zeros(cfg.n_users, bool)
    arrived = 0
    slots = min(_SLOTS, cfg.n_users)
    slot_user = np.full(slots, -1, np.int64)
    slot_theme = np.zeros((slots, d))
    slot_list = np.zeros(slots, np.int64)  # the list the session goes down
    slot_pos = np.full(slots, -1, np.int64)  # where it is in that list
    ahead_steps = np.arange(_LIST_AHEAD)
    ahead_bonus = (cfg.list_weight * cfg.list_skip**ahead_steps).astype(np.float32)
    busy = np.zeros(cfg.n_users, bool)  # in an open session: one slot per user at a time

    def pick_user() -> int:
        nonlocal arrived
        if arrived < cfg.n_users and (arrived == 0 or rng.random() < p_new):
            arrived += 1
            return arrived - 1
        for _ in range(64):
            u = int(rng.integers(arrived))
            if not retired[u] and not busy[u] and rng.random() < world.activity[u]:
                return u
        free = np.flatnonzero(~retired[:arrived] & ~busy[:arrived])
        if len(free):
            return int(free[rng.integers(len(free))])
        if arrived < cfg.n_users:
            arrived += 1
            return arrived - 1
        return -1

    ws = np.array([cfg.last_weight, cfg.second_weight])
    e = 0
    next_drift = cfg.drift_every or n + 1
    while e < n:
        if e >= next_drift:
            world.drift()
            next_drift += cfg.drift_every
        # close finished sessions, open new ones
        ended = (slot_user < 0) | (rng.random(slots) < p_stop)
        ended |= (slot_user >= 0) & retired[np.maximum(slot_user, 0)]
        for s in np.flatnonzero(ended).tolist():
            if slot_user[s] >= 0:
                busy[slot_user[s]] = False
            u = pick_user()
            slot_user[s] = u
            if u >= 0:
                busy[u] = True
                topic = world.theme(u)
                slot_theme[s] = world.centres[topic]
                if cfg.lists:  # a list of the session's theme, if it has one
                    mine = np.flatnonzero(world.list_topic == topic)
                    slot_list[s] = mine[rng.integers(len(mine))] if len(mine) else -1
                    slot_pos[s] = -1
        live = np.flatnonzero(slot_user >= 0)
        if not len(live):
            raise ConfigError(
                f"SyntheticConfig.n_events={cfg.n_events} exhausts the catalogue of every user: "
                "raise n_users or n_items"
            )
        live = live[rng.permutation(len(live))][: n - e]  # this round's events, in time order
        users = slot_user[live]
        prev = last[users]
        ctx = np.where(prev[:, :, None] >= 0, world.factors[np.maximum(prev, 0)], 0.0)
        query = (cfg.taste_weight * world.taste[users] + cfg.theme_weight * slot_theme[live]
                 + np.einsum("k,bkd->bd", ws, ctx))
        negative = rng.random(len(users)) < cfg.p_negative
        query[negative] = 0.0  # skips and dislikes: items shown by appeal alone
        # einsum, not BLAS: a small product per round, where BLAS threads only add overhead
        logits = np.einsum("bd,di->bi", (cfg.sharpness * query).astype(np.float32), world.f_t)
        logits += world.log_appeal
        if cfg.series_weight > 0 and cfg.series_open:
            logits += cfg.series_weight * (open_next[users] & ~negative[:, None])
        elif cfg.series_weight > 0:
            nxt = world.successor[np.maximum(prev[:, 0], 0)]
            rows = np.flatnonzero((prev[:, 0] >= 0) & (nxt >= 0) & ~negative)
            logits[rows, nxt[rows]] += cfg.series_weight
        for col, weight in ((0, cfg.partner_weight), (1, cfg.partner_second)):
            if cfg.partners and weight > 0:
                rows = np.flatnonzero((prev[:, col] >= 0) & ~negative)
                src = prev[rows, col]
                logits[rows[:, None], world.partner[src]] += weight * world.link[src]
        ahead = np.zeros((len(live), 0), np.int64)
        if cfg.lists and cfg.list_weight > 0:
            # the rest of the list; the user passes over what they have seen already
            at = slot_pos[live, None] + 1 + np.arange(cfg.list_len)
            ahead = world.lists[slot_list[live, None], np.minimum(at, cfg.list_len - 1)]
            ahead[(at >= cfg.list_len) | (slot_list[live, None] < 0)] = -1
            ahead[seen[users[:, None], np.maximum(ahead, 0)]] = -1
            step = np.cumsum(ahead >= 0, axis=1) - 1
            r, c = np.nonzero((ahead >= 0) & (step < _LIST_AHEAD) & ~negative[:, None])
            logits[r, ahead[r, c]] += ahead_bonus[step[r, c]]
        items = _draw(rng, logits, seen[users])
        if ranks_out is not None:
            # _draw left each row's probabilities in logits: rank by them (seen items are 0);
            # n_seen still counts each user's events before this round
            p_item = logits[np.arange(len(items)), items]
            rank = (logits > p_item[:, None]).sum(axis=1)
            ranks_out.append(rank[~negative & (n_seen[users] > 0)])
        r = rng.random(len(users))
        kinds = np.where(r < _POSITIVE_CDF[0], 0, np.where(r < _POSITIVE_CDF[1], 1, 2))
        neg_kind = len(_POSITIVE_TYPES) + (rng.random(len(users)) >= _P_SKIP)
        kinds = np.where(negative, neg_kind, kinds)
        pos = ~negative
        if ahead.shape[1]:  # a session that takes an item of its list goes on from there
            hit = (ahead == items[:, None]) & pos[:, None]
            moved = hit.any(axis=1)
            slot_pos[live[moved]] += 1 + hit[moved].argmax(axis=1)  # columns start after pos
        last[users[pos], 1] = last[users[pos], 0]
        last[users[pos], 0] = items[pos]
        seen[users, items] = True
        if cfg.series_open:
            nxt = world.successor[items]
            ok = pos & (nxt >= 0)
            open_next[users[ok], nxt[ok]] = True
        n_seen[users] += 1
        retired[users[n_seen[users] >= retire_at]] = True
        k = len(users)
        out_users[e : e + k], out_items[e : e + k], out_kinds[e : e + k] = users, items, kinds
        e += k

    # name users by their first event (sessions open together, so arrival order is not it)
    ids, first = np.unique(out_users, return_index=True)
    rank = np.zeros(max(1, arrived), np.int64)
    rank[ids[np.argsort(first)]] = np.arange(len(ids))
    out_users = rank[out_users]
    user_names = np.array([f"u{k}" for k in range(max(1, arrived))], dtype=object)
    item_names = np.array([f"i{k}" for k in range(n_items)], dtype=object)
    kind_names = np.array(_KINDS, dtype=object)
    return EventColumns(
        user_names[out_users],
        item_names[out_items],
        kind_names[out_kinds],
        ts,
        np.full(n, math.nan),
    )


def generate_events(config: SyntheticConfig | None = None) -> list[Event]:
    """:func:`generate` as a list of ``Event`` objects."""
    return generate(config).to_events()


__all__ = ["SyntheticConfig", "generate", "generate_events", "oracle_ranks", "parse_settings"]
