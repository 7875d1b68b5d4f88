"""Prequential (test-then-train) evaluation of several variants on one stream, in one pass.

Every variant sees the same micro-batches. For each batch: map ids (items get indices in order of
first appearance, so "catalogue order" is index order), rank each scorable event with every
variant's parameters from the start of the batch, update the metrics, then let every variant learn
the batch. ``shared/EVALUATION.md`` is the protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from kdstream.student import SeenPairs
from kdstream.student._arrays import isin_sorted, unique_sorted

from ._learner import IndexedSoftLabels, Learner, _LabelTable
from ._metrics import RankingMetrics, batch_exclusions, ranks_from_scores
from ._popularity import Popularity
from ._vocab import Vocab


class Variant(Protocol):
    """What the harness needs from a model under evaluation."""

    name: str
    #: slow variants are scored on the deterministic sample only
    sampled_only: bool

    def scores(self, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray: ...

    def learn_many(
        self, users: np.ndarray, items: np.ndarray, ts: np.ndarray, weights: np.ndarray
    ) -> None: ...

    def apply_soft_labels(self, labels: IndexedSoftLabels) -> None: ...


class PopularityVariant:
    """Most popular items first (positive events, optional half-life)."""

    sampled_only = False

    def __init__(self, name: str = "popularity", half_life_s: float | None = None) -> None:
        self.name = name
        self.model = Popularity(half_life_s)

    def scores(self, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
        return np.broadcast_to(self.model.scores(n_items), (len(users), n_items))

    def learn_many(self, users, items, ts, weights) -> None:  # type: ignore[no-untyped-def]
        self.model.learn_many(items, (weights > 0).astype(np.float64), ts)

    def apply_soft_labels(self, labels: IndexedSoftLabels) -> None:
        return None


class StudentVariant:
    """A :class:`Learner` (``student`` without distillation, ``student+kd`` with)."""

    sampled_only = False

    def __init__(self, name: str, learner: Learner) -> None:
        self.name = name
        self.learner = learner

    def scores(self, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
        return self.learner.scores(users, items, n_items)

    def learn_many(self, users, items, ts, weights) -> None:  # type: ignore[no-untyped-def]
        self.learner.learn_many(users, items, ts, weights)

    def apply_soft_labels(self, labels: IndexedSoftLabels) -> None:
        self.learner.apply_soft_labels(labels)


class TeacherVariant:
    """The teacher's last published soft labels, used as the recommendation.

    First the teacher's next items after the user's most recent item (item-keyed transition
    labels), then its per-user labels from the last refresh, each by logit; every other item (and
    every user without labels yet) falls back to all-time popularity, so the ranking is complete.
    """

    sampled_only = False

    def __init__(self, name: str = "teacher") -> None:
        self.name = name
        self.labels = _LabelTable()
        self.transitions = _LabelTable()
        self.popularity = Popularity()
        self._last_item = np.full(0, -1, np.int64)

    def _last_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Each event's previous item of the same user (earlier in the batch, else stored)."""
        n = len(users)
        last = np.full(n, -1, np.int64)
        known = users < len(self._last_item)
        last[known] = self._last_item[users[known]]
        order = np.argsort(users, kind="stable")
        su = users[order]
        same = np.zeros(n, bool)
        same[1:] = su[1:] == su[:-1]
        prev = np.empty(n, np.int64)
        prev[order[1:]] = items[order[:-1]]
        last[order[same]] = prev[order[same]]
        return last

    def scores(self, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
        pop = self.popularity.scores(n_items)
        out = np.repeat((pop / (pop.max() + 1.0))[None, :], len(users), axis=0)  # in [0, 1)
        # later layers overwrite earlier ones: user labels, then transitions on top
        for table, keys, offset in (
            (self.labels, users, 2.0),
            (self.transitions, self._last_items(users, items), 4.0),
        ):
            rows = np.flatnonzero((keys >= 0) & table.lookup(np.maximum(keys, 0)))
            if not len(rows):
                continue
            cand = table.items[keys[rows]]
            logit = table.logits[keys[rows]]
            ok = (cand >= 0) & (cand < n_items) & np.isfinite(logit)
            r = np.repeat(rows, cand.shape[1]).reshape(cand.shape)
            lo = np.where(ok, logit, np.inf).min(axis=1, keepdims=True)
            hi = np.where(ok, logit, -np.inf).max(axis=1, keepdims=True)
            norm = (logit - lo) / np.maximum(hi - lo, 1e-9)  # in [0, 1], order kept
            out[r[ok], cand[ok]] = offset + norm[ok]
        return out

    def learn_many(self, users, items, ts, weights) -> None:  # type: ignore[no-untyped-def]
        self.popularity.learn_many(items, (weights > 0).astype(np.float64), ts)
        if len(users) and int(users.max()) >= len(self._last_item):
            grown = np.full(max(int(users.max()) + 1, 2 * len(self._last_item)), -1, np.int64)
            grown[: len(self._last_item)] = self._last_item
            self._last_item = grown
        self._last_item[users] = items  # fancy assignment: the last event of a user wins

    def apply_soft_labels(self, labels: IndexedSoftLabels) -> None:
        if len(labels.keys):
            (self.transitions if labels.transition else self.labels).put(labels)


@dataclass
class BatchIndex:
    """A micro-batch mapped to indices, with what the protocol needs to score it."""

    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    weights: np.ndarray
    n_candidates: np.ndarray  # items seen before each event
    scored: np.ndarray  # bool: positive event of a user with earlier events


@dataclass
class PrequentialReport:
    events: int = 0
    scored: int = 0
    cold: int = 0
    repeat: int = 0
    sample_every: int = 1
    sampled: int = 0
    metrics: dict[str, RankingMetrics] = field(default_factory=dict)
    sample_metrics: dict[str, RankingMetrics] = field(default_factory=dict)


class ScoringHistory:
    """What the prequential protocol needs of the past: every (user, item) pair seen and each
    user's event count. :class:`Prequential` and the Kafka processor's prequential counters
    both score with it, so they apply one protocol (``shared/EVALUATION.md``).
    """

    def __init__(self) -> None:
        self.seen = SeenPairs()
        self._user_events = np.zeros(0, np.int64)

    def _fit(self, users: np.ndarray) -> None:
        n = int(users.max()) + 1 if len(users) else 0
        if len(self._user_events) < n:
            grown = np.zeros(max(n, 2 * len(self._user_events)), np.int64)
            grown[: len(self._user_events)] = self._user_events
            self._user_events = grown

    def plan(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, n_before: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(n_candidates, scored)`` of each event of a batch, before it is learned.

        Item indices are in order of first appearance, so the catalogue before an event is
        the items below ``n_candidates``; ``n_before`` is its size before the batch. An event
        is scored when it is positive and its user has an earlier event (before the batch or
        earlier in it).
        """
        self._fit(users)
        prefix = np.maximum.accumulate(np.concatenate([[n_before], items + 1]))[:-1]
        n_cand = np.maximum(prefix, n_before)
        order = np.argsort(users, kind="stable")
        su = users[order]
        first = np.ones(len(users), bool)
        first[1:] = su[1:] != su[:-1]
        in_batch_first = np.zeros(len(users), bool)
        in_batch_first[order[first]] = True
        had_earlier = (self._user_events[users] > 0) | ~in_batch_first
        return n_cand, (np.asarray(weights) > 0) & had_earlier

    def exclusions(
        self, users: np.ndarray, items: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unique (scored row, item) pairs left out of the candidates of the batch's events
        ``rows``: the user's items before the batch and those of its earlier batch events."""
        hist_rows, hist_items = self.seen.pairs_of(users[rows])
        none = np.empty(0, np.int64)
        er, ec = batch_exclusions(none, none, users, items)
        pos = np.full(len(users), -1)
        pos[rows] = np.arange(len(rows))
        keep = pos[er] >= 0
        return _unique_pairs(
            np.concatenate([hist_rows, pos[er[keep]]]), np.concatenate([hist_items, ec[keep]])
        )

    def add(self, users: np.ndarray, items: np.ndarray) -> None:
        """Record a learned batch."""
        self._fit(users)
        self.seen.add(users, items)
        np.add.at(self._user_events, users, 1)


class Prequential:
    """Runs variants side by side on one stream, test-then-train.

    Parameters
    ----------
    variants
        The models to compare; all see the same batches.
    k
        Cut-off of HR@k and NDCG@k.
    sample_every
        Every ``sample_every``-th scored event forms the deterministic sample on which
        ``sampled_only`` variants (and, for comparison, every variant) are also reported.
    window
        Scored events in the rolling HR@k.
    """

    def __init__(
        self,
        variants: Sequence[Variant],
        k: int = 10,
        sample_every: int = 1,
        window: int = 5_000,
    ) -> None:
        self.variants = list(variants)
        self.k = k
        self.users = Vocab()
        self.items = Vocab()
        self.history = ScoringHistory()
        self.report = PrequentialReport(sample_every=max(1, sample_every))
        for v in self.variants:
            self.report.metrics[v.name] = RankingMetrics(k=k, window=window)
            self.report.sample_metrics[v.name] = RankingMetrics(k=k, window=window)

    def index(
        self, users: Sequence[str], items: Sequence[str], ts: np.ndarray, weights: np.ndarray
    ) -> BatchIndex:
        n_before = len(self.items)
        u = self.users.add_many(users)
        i = self.items.add_many(items)
        w = np.asarray(weights, np.float32)
        n_cand, scored = self.history.plan(u, i, w, n_before)
        return BatchIndex(u, i, np.asarray(ts, np.float64), w, n_cand, scored)

    @property
    def seen(self) -> SeenPairs:
        """Every (user, item) pair learned so far."""
        return self.history.seen

    def process(
        self,
        users: Sequence[str],
        items: Sequence[str],
        ts: np.ndarray,
        weights: np.ndarray,
    ) -> BatchIndex:
        """Score (before learning) and then learn one micro-batch."""
        b = self.index(users, items, ts, weights)
        rep = self.report
        rep.events += len(b.users)
        rows = np.flatnonzero(b.scored)
        if len(rows):
            su, si, n_cand = b.users[rows], b.items[rows], b.n_candidates[rows]
            ex_r, ex_c = self.history.exclusions(b.users, b.items, rows)
            ordinal = rep.scored + np.arange(len(rows))
            in_sample = ordinal % rep.sample_every == 0
            rep.scored += len(rows)
            rep.sampled += int(in_sample.sum())
            cold = si >= n_cand
            rep.cold += int(cold.sum())
            in_batch = _pairs_contain(ex_r, ex_c, np.arange(len(rows)), si)
            repeat = self.seen.contains(su, si) | in_batch
            rep.repeat += int((repeat & ~cold).sum())
            n_items = len(self.items)
            for v in self.variants:
                if v.sampled_only:
                    sel = np.flatnonzero(in_sample)
                    ranks_s = self._rank(v, su, si, n_cand, ex_r, ex_c, n_items, sel, b)
                    rep.sample_metrics[v.name].update(ranks_s, rep.events)
                    continue
                ranks = self._rank(v, su, si, n_cand, ex_r, ex_c, n_items, None, b)
                rep.metrics[v.name].update(ranks, rep.events)
                rep.sample_metrics[v.name].update(ranks[in_sample])
        for v in self.variants:
            v.learn_many(b.users, b.items, b.ts, b.weights)
        self.history.add(b.users, b.items)
        return b

    def _rank(
        self,
        v: Variant,
        su: np.ndarray,
        si: np.ndarray,
        n_cand: np.ndarray,
        ex_r: np.ndarray,
        ex_c: np.ndarray,
        n_items: int,
        sel: np.ndarray | None,
        batch: BatchIndex,
    ) -> np.ndarray:
        if sel is not None:
            keep = np.isin(ex_r, sel)
            remap = np.full(len(su), -1)
            remap[sel] = np.arange(len(sel))
            su, si, n_cand = su[sel], si[sel], n_cand[sel]
            ex_r, ex_c = remap[ex_r[keep]], ex_c[keep]
        if len(su) == 0:
            return np.empty(0)
        scores = v.scores(su, si, n_items)
        return ranks_from_scores(scores, si, n_cand, ex_r, ex_c)

    def index_soft_labels(self, messages: Sequence[object]) -> list[IndexedSoftLabels]:
        """Map wire soft labels (``SoftLabels``-like objects) to indices, grouped per refresh.

        Users and items the stream has not seen are dropped (-1 items are padding).
        """
        groups: dict[tuple[int, bool], list[object]] = {}
        for m in messages:
            groups.setdefault((m.teacher_version, m.user is None), []).append(m)  # type: ignore[attr-defined]
        out = []
        for (version, transition), msgs in sorted(groups.items()):
            vocab = self.items if transition else self.users
            keys, rows_items, rows_logits = [], [], []
            width = max(len(m.items) for m in msgs)  # type: ignore[attr-defined]
            for m in msgs:
                key = vocab.get(m.after_item if transition else m.user)  # type: ignore[attr-defined]
                if key is None:
                    continue
                idx = np.full(width, -1, np.int64)
                lg = np.full(width, -np.inf, np.float32)
                idx[: len(m.items)] = self.items.lookup(list(m.items))  # type: ignore[attr-defined]
                lg[: len(m.logits)] = m.logits  # type: ignore[attr-defined]
                keys.append(key)
                rows_items.append(idx)
                rows_logits.append(lg)
            if not keys:
                continue
            first = msgs[0]
            out.append(
                IndexedSoftLabels(
                    version=version,
                    trained_until=float(first.trained_until),  # type: ignore[attr-defined]
                    temperature=float(first.temperature),  # type: ignore[attr-defined]
                    keys=np.array(keys, np.int64),
                    items=np.stack(rows_items),
                    logits=np.stack(rows_logits),
                    transition=transition,
                )
            )
        return out

    def apply_soft_labels(self, messages: Sequence[object]) -> int:
        """Index and hand soft labels to every variant; returns how many were applied."""
        n = 0
        for labels in self.index_soft_labels(messages):
            for v in self.variants:
                v.apply_soft_labels(labels)
            n += len(labels.keys)
        return n


def _unique_pairs(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(rows) == 0:
        return rows.astype(np.int64), cols.astype(np.int64)
    width = int(cols.max()) + 1
    key = unique_sorted(rows.astype(np.int64) * width + cols)
    return key // width, key % width


def _pairs_contain(
    rows: np.ndarray, cols: np.ndarray, q_rows: np.ndarray, q_cols: np.ndarray
) -> np.ndarray:
    if len(rows) == 0:
        return np.zeros(len(q_rows), bool)
    width = int(max(cols.max(), q_cols.max())) + 1
    return isin_sorted(q_rows * width + q_cols, unique_sorted(rows * width + cols))


__all__ = [
    "BatchIndex",
    "PopularityVariant",
    "Prequential",
    "PrequentialReport",
    "ScoringHistory",
    "StudentVariant",
    "TeacherVariant",
    "Variant",
]
