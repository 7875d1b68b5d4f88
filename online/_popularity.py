"""Time-decayed popularity: baseline, cold-start fallback and the negative sampler's prior."""

from __future__ import annotations

import numpy as np


class Popularity:
    """Per-item counts of positive events, optionally decayed with a half-life.

    Decay is applied lazily: each update adds ``weight * 2**((t - t_ref) / half_life)`` and the
    table is rescaled when the exponent grows large, so an update costs O(batch), not O(items).

    Parameters
    ----------
    half_life_s
        Half-life in seconds of stream time; ``None`` counts all-time.

    Examples
    --------
    >>> p = Popularity()
    >>> p.learn_many(np.array([2, 0, 2]), np.array([1.0, 1.0, 1.0]), ts=np.zeros(3))
    >>> p.scores(3).tolist()
    [1.0, 0.0, 2.0]
    """

    def __init__(self, half_life_s: float | None = None) -> None:
        self.half_life_s = half_life_s
        self._s = np.zeros(64, np.float64)
        self._t_ref: float | None = None

    def _grow(self, n: int) -> None:
        if n > len(self._s):
            self._s = np.concatenate([self._s, np.zeros(max(n, 2 * len(self._s)) - len(self._s))])

    def learn_many(self, items: np.ndarray, weights: np.ndarray, ts: np.ndarray) -> None:
        if len(items) == 0:
            return
        self._grow(int(items.max()) + 1)
        w = np.asarray(weights, np.float64)
        if self.half_life_s is not None:
            if self._t_ref is None:
                self._t_ref = float(ts[0])
            expo = (np.asarray(ts, np.float64) - self._t_ref) / self.half_life_s
            if expo.max() > 500:  # rescale before exp overflows
                shift = float(expo.max())
                self._s *= 2.0 ** (-shift)
                self._t_ref += shift * self.half_life_s
                expo -= shift
            w = w * np.exp2(expo)
        if 256 * len(items) < len(self._s):
            # a batch far smaller than the table: sums over the items it has instead of a pass
            # over the whole table (the same sums, added in the same order); np.unique costs
            # about what a pass over 200 table entries per batch item does (measured)
            touched, inverse = np.unique(items, return_inverse=True)
            self._s[touched] += np.bincount(inverse, weights=w)
        else:
            self._s += np.bincount(items, weights=w, minlength=len(self._s))[: len(self._s)]

    def scores(self, n_items: int) -> np.ndarray:
        """Scores of items 0..n_items-1 (monotone in decayed counts)."""
        return self.view(n_items).copy()

    def view(self, n_items: int) -> np.ndarray:
        """The scores of items 0..n_items-1 without a copy: read-only, valid until the next
        update."""
        self._grow(n_items)
        v = self._s[:n_items]
        v.flags.writeable = False
        return v

    def counts(self, n_items: int) -> np.ndarray:
        return self.scores(n_items)


__all__ = ["Popularity"]
