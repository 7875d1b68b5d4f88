"""The ``river-mf`` baseline: river's online biased matrix factorisation as a harness variant.

river scores one (user, item) pair per Python call, so ranking the full catalogue costs one
``predict_one`` per candidate item. That is why the variant is ``sampled_only``: the harness
ranks it on the deterministic sample of scored events only (``shared/EVALUATION.md`` §8).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._learner import IndexedSoftLabels


class RiverMFVariant:
    """``river.reco.BiasedMF`` learning every event and ranking the sampled ones.

    Users and items are the harness's int indices (river accepts any hashable id). Each event
    is learned with ``learn_one(user, item, y)``, ``y = 1`` for positive feedback and ``0`` for
    negative feedback (low ratings, negative event types), i.e. implicit feedback on the same
    signal every other variant sees.

    Parameters
    ----------
    name
        Variant name in reports.
    n_factors
        Latent dimension of the factorisation.
    seed
        Seed of river's initialisers.

    Examples
    --------
    >>> import numpy as np
    >>> v = RiverMFVariant(n_factors=4, seed=0)
    >>> v.learn_many(np.array([0, 0]), np.array([0, 1]), np.zeros(2), np.array([1.0, -1.0]))
    >>> v.scores(np.array([0]), np.array([1]), 3).shape
    (1, 3)
    """

    sampled_only = True

    def __init__(self, name: str = "river-mf", n_factors: int = 32, seed: int = 0) -> None:
        from river import reco  # lazy: river is only needed when this baseline runs

        self.name = name
        self.model: Any = reco.BiasedMF(n_factors=n_factors, seed=seed)

    def scores(self, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
        predict = self.model.predict_one
        out = np.empty((len(users), n_items), np.float64)
        candidates = range(n_items)
        for row, user in enumerate(users.tolist()):
            out[row] = [predict(user, i) for i in candidates]
        return out

    def learn_many(
        self, users: np.ndarray, items: np.ndarray, ts: np.ndarray, weights: np.ndarray
    ) -> None:
        learn = self.model.learn_one
        for user, item, w in zip(users.tolist(), items.tolist(), weights.tolist(), strict=True):
            learn(user, item, 1.0 if w > 0 else 0.0)

    def apply_soft_labels(self, labels: IndexedSoftLabels) -> None:
        return None


__all__ = ["RiverMFVariant"]
