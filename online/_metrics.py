"""Prequential ranking metrics over the full catalogue (``shared/EVALUATION.md``).

A scored event's rank is 1 + the number of candidates that beat its target, where candidates are
the items seen before the event minus the user's earlier items, and ties go to the item seen
earlier (lower index). A cold or repeated target is a miss (rank = inf).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdstream.student._arrays import unique_sorted


def batch_exclusions(
    seen_rows: np.ndarray, seen_items: np.ndarray, users: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs to exclude for each event of a micro-batch.

    ``seen_rows``/``seen_items`` are the users' histories before the batch (row = event index);
    each event also excludes the items of the same user's earlier events in the batch.
    """
    n = len(users)
    earlier = (users[:, None] == users[None, :]) & (np.arange(n)[None, :] < np.arange(n)[:, None])
    r, c = np.nonzero(earlier)
    rows = np.concatenate([seen_rows, r])
    cols = np.concatenate([seen_items, items[c]])
    if len(rows):
        key = unique_sorted(rows.astype(np.int64) * (int(cols.max()) + 1) + cols)
        width = int(cols.max()) + 1
        rows, cols = key // width, key % width
    return rows.astype(np.int64), cols.astype(np.int64)


def ranks_from_scores(
    scores: np.ndarray,
    targets: np.ndarray,
    n_candidates: np.ndarray,
    excl_rows: np.ndarray,
    excl_cols: np.ndarray,
) -> np.ndarray:
    """Rank (1 = best) of each row's target among its candidates; ``inf`` for a miss.

    Parameters
    ----------
    scores
        (B, N) scores of items 0..N-1 (N >= every ``n_candidates``).
    targets
        (B,) target item per row.
    n_candidates
        (B,) items with index < this are candidates (the catalogue before the event).
    excl_rows, excl_cols
        Unique (row, item) pairs removed from the candidates (the user's history).

    Examples
    --------
    >>> s = np.array([[0.1, 0.9, 0.5, 0.9]])
    >>> ranks_from_scores(s, np.array([2]), np.array([4]), np.array([0]), np.array([1])).tolist()
    [2.0]
    """
    b, n = scores.shape
    rows = np.arange(b)
    tgt_ok = targets < n_candidates
    t = np.minimum(targets, n - 1)
    s_t = scores[rows, t]
    col = np.arange(n)[None, :]
    beats = (scores > s_t[:, None]) | ((scores == s_t[:, None]) & (col < t[:, None]))
    beats &= col < n_candidates[:, None]
    count = beats.sum(axis=1)
    if len(excl_rows):
        in_range = excl_cols < n
        er, ec = excl_rows[in_range], excl_cols[in_range]
        count -= np.bincount(er, weights=beats[er, ec], minlength=b).astype(count.dtype)
        repeat = np.zeros(b, bool)
        repeat[er[ec == t[er]]] = True
        tgt_ok &= ~repeat
    rank = (count + 1).astype(np.float64)
    rank[~tgt_ok] = np.inf
    return rank


@dataclass
class RankingMetrics:
    """Running HR@k, NDCG@k and MRR, overall and over a rolling window of scored events."""

    k: int = 10
    window: int = 5_000
    n: int = 0
    hits: float = 0.0
    ndcg: float = 0.0
    rr: float = 0.0
    curve: list[tuple[int, float]] = field(default_factory=list, repr=False)
    _ring: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def update(self, ranks: np.ndarray, position: int | None = None) -> None:
        """Add the ranks of newly scored events; ``position`` (events so far) marks the curve."""
        if len(ranks) == 0:
            return
        hit = ranks <= self.k
        if len(self._ring) != self.window:
            self._ring = np.zeros(self.window)
        # ring buffer of the last `window` hits, written in place
        slots = (self.n + np.arange(len(hit))) % self.window
        self._ring[slots[-self.window :]] = hit[-self.window :]
        self.n += len(ranks)
        self.hits += float(hit.sum())
        self.ndcg += float((hit / np.log2(np.where(hit, ranks, 1.0) + 1.0)).sum())
        self.rr += float((1.0 / ranks).sum())
        if position is not None:
            self.curve.append((position, self.rolling_hr))

    @property
    def hr(self) -> float:
        return self.hits / self.n if self.n else 0.0

    @property
    def ndcg_at_k(self) -> float:
        return self.ndcg / self.n if self.n else 0.0

    @property
    def mrr(self) -> float:
        return self.rr / self.n if self.n else 0.0

    @property
    def rolling_hr(self) -> float:
        filled = min(self.n, self.window)
        return float(self._ring[:filled].sum() / filled) if filled else 0.0

    def summary(self) -> dict[str, float]:
        return {
            f"hr@{self.k}": round(self.hr, 6),
            f"ndcg@{self.k}": round(self.ndcg_at_k, 6),
            "mrr": round(self.mrr, 6),
            "scored": self.n,
        }


__all__ = ["RankingMetrics", "batch_exclusions", "ranks_from_scores"]
