"""The student's shared negatives: drawn by popularity from a table rebuilt at a bounded rate."""

from __future__ import annotations

import numpy as np

from ._popularity import Popularity

REBUILD_SHARE = 16  # a rebuild is due once the events since the last reach catalogue / this


class NegativeSampler:
    """Draws a micro-batch's shared negatives with probability q ∝ count**exponent + floor over
    the known catalogue (the floor lets every known item be drawn), and gives log(S q) of the
    negatives and of the batch's items for the log-Q correction.

    A draw is an inverse-CDF lookup, O(S log catalogue); building the table takes a few passes
    over the catalogue, which per batch would grow with it (10 ms per batch at a million items,
    26 ms with ``Generator.choice`` as before: ``benchmarks/negatives.py``). So the table is
    rebuilt once the events since the last build reach 1/16 of the catalogue, or when the
    catalogue has doubled: every event pays for 16 table entries of rebuilding, the same at any
    catalogue size, and a catalogue under 16 batches' worth of events (4,096 items at
    micro-batches of 256) is rebuilt every batch, where the draw is exactly what
    ``Generator.choice(p=q)`` draws from the same generator. Items first seen after the last
    build are not drawn until the next one; their log q is the floor's.

    Examples
    --------
    >>> counts = Popularity()
    >>> counts.learn_many(np.array([0, 0, 1]), np.ones(3), np.zeros(3))
    >>> sampler = NegativeSampler(exponent=0.5, n_negatives=4, rng=np.random.default_rng(0))
    >>> neg, neg_logq, pos_logq = sampler.draw(counts, 3, np.array([2]))
    >>> neg.shape, bool(neg.max() < 3), pos_logq.shape
    ((4,), True, (1,))
    """

    def __init__(
        self, exponent: float, n_negatives: int, rng: np.random.Generator, floor: float = 1e-3
    ) -> None:
        self.exponent = exponent
        self.n_negatives = n_negatives
        self.floor = floor
        self._rng = rng
        self._p = np.zeros(0)  # q of the items the table holds
        self._cdf = np.zeros(0)
        self._floor_p = 0.0
        self._since = 0  # events drawn for since the last build
        self.rebuilds = 0

    def _rebuild(self, counts: Popularity, n_items: int) -> None:
        prior = np.power(counts.view(n_items), self.exponent)
        prior += self.floor
        total = prior.sum()
        self._p = prior / total
        self._cdf = self._p.cumsum()
        self._cdf /= self._cdf[-1]
        self._floor_p = self.floor / total
        self._since = 0
        self.rebuilds += 1

    def draw(
        self, counts: Popularity, n_items: int, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(negatives, log(S q) of each negative, log(S q) of each of items)`` for a batch over
        a catalogue of ``n_items`` (every index of ``items`` below it), after ``counts`` has
        learned the batch."""
        n = len(self._p)
        if n == 0 or REBUILD_SHARE * self._since >= n or n_items >= 2 * n:
            self._rebuild(counts, n_items)
            n = n_items
        s = self.n_negatives
        negatives = self._cdf.searchsorted(self._rng.random(s), side="right")
        p_items = np.where(items < n, self._p[np.minimum(items, n - 1)], self._floor_p)
        self._since += len(items)
        return negatives, np.log(s * self._p[negatives]), np.log(s * p_items)


__all__ = ["NegativeSampler"]
