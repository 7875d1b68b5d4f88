"""The online Learner: micro-batches of indexed events + teacher soft labels -> student steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdstream.errors import ConfigError
from kdstream.student import SoftTargets, Student, StudentConfig

from ._negatives import NegativeSampler
from ._popularity import Popularity


@dataclass(frozen=True)
class LearnerConfig:
    """How soft labels are mixed into the student's updates.

    Parameters
    ----------
    distill
        Use soft labels at all (``False`` = the plain ``student`` variant).
    kd_alpha
        Mixing weight a of fresh soft labels: loss = (1 - a) * hard + a * soft.
    kd_half_life_s
        Half-life of a on the soft labels' age (event time minus the teacher's ``trained_until``).
        ``None`` = one teacher refresh interval, measured from the versions seen: the weight then
        adapts to any stream's time scale, and labels fade out when the teacher stops refreshing.
    kd_max_age_half_lives
        Labels older than this many half-lives are ignored.
    user_labels
        Distil the per-user soft labels (the teacher's top items for the user at its refresh).
        Off by default: measured on ML-100K, ML-1M-subset and the synthetic stream they added
        nothing over transition labels (and hurt on session-shaped streams, where a label made
        at the last refresh describes a session that has ended); transition labels are keyed by
        the item just consumed, so they are fresh at every event.
    transitions
        Also distil item-keyed transition labels (the teacher's next items after an item).
    neg_exponent
        Negatives are sampled with probability proportional to count**neg_exponent (0 = uniform,
        1 = popularity); EVALUATION.md found full popularity sampling harmful.
    seed
        Seeds negative sampling.
    """

    distill: bool = True
    kd_alpha: float = 0.8
    kd_half_life_s: float | None = None
    kd_max_age_half_lives: float = 4.0
    user_labels: bool = False
    transitions: bool = True
    neg_exponent: float = 0.5
    seed: int | None = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ConfigError(f"LearnerConfig.kd_alpha: expected [0, 1], got {self.kd_alpha!r}")
        if self.kd_half_life_s is not None and not self.kd_half_life_s > 0:
            raise ConfigError(
                f"LearnerConfig.kd_half_life_s: expected > 0 or None, got {self.kd_half_life_s!r}"
            )
        if not 0.0 <= self.neg_exponent <= 1.0:
            raise ConfigError(
                f"LearnerConfig.neg_exponent: expected [0, 1], got {self.neg_exponent!r}"
            )


@dataclass
class IndexedSoftLabels:
    """One teacher refresh's soft labels, ids already mapped to indices (-1 = unknown item)."""

    version: int
    trained_until: float
    temperature: float
    keys: np.ndarray  # (U,) user indices, or item indices for transition labels
    items: np.ndarray  # (U, M)
    logits: np.ndarray  # (U, M)
    transition: bool = False


class _LabelTable:
    """Latest soft labels per key (user or item), as dense growable arrays."""

    def __init__(self) -> None:
        self.items = np.full((0, 1), -1, np.int64)
        self.logits = np.full((0, 1), -np.inf, np.float32)
        self.temperature = np.ones(0, np.float32)
        self.trained_until = np.full(0, -np.inf)
        self.has = np.zeros(0, bool)

    def put(self, labels: IndexedSoftLabels) -> None:
        m = labels.items.shape[1]
        need = int(labels.keys.max()) + 1 if len(labels.keys) else 0
        if m > self.items.shape[1] or need > len(self.has):
            cap = max(need, 2 * len(self.has), 64)
            width = max(m, self.items.shape[1])
            items = np.full((cap, width), -1, np.int64)
            logits = np.full((cap, width), -np.inf, np.float32)
            old_n, old_m = self.items.shape
            items[:old_n, :old_m] = self.items
            logits[:old_n, :old_m] = self.logits
            self.items, self.logits = items, logits
            for name, fill in (("temperature", 1.0), ("trained_until", -np.inf), ("has", False)):
                arr = getattr(self, name)
                grown = np.full(cap, fill, arr.dtype)
                grown[: len(arr)] = arr
                setattr(self, name, grown)
        k = labels.keys
        valid = labels.items >= 0
        self.items[k] = -1
        self.logits[k] = -np.inf
        self.items[k, :m] = np.where(valid, labels.items, -1)
        self.logits[k, :m] = np.where(valid, labels.logits, -np.inf)
        self.temperature[k] = labels.temperature
        self.trained_until[k] = labels.trained_until
        self.has[k] = valid.any(axis=1)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Mask of keys that have labels."""
        ok = keys < len(self.has)
        out = np.zeros(len(keys), bool)
        out[ok] = self.has[keys[ok]]
        return out


class Learner:
    """Applies micro-batches of events and soft labels to a :class:`Student`.

    Parameters
    ----------
    student_config, config
        The student's hyper-parameters and the mixing policy.

    Examples
    --------
    >>> import numpy as np
    >>> lr = Learner(StudentConfig(dim=8, seed=0), LearnerConfig(distill=False))
    >>> lr.learn_many(np.array([0, 1]), np.array([0, 1]), np.zeros(2), np.ones(2))
    >>> lr.student.n_items
    2
    """

    def __init__(
        self, student_config: StudentConfig | None = None, config: LearnerConfig | None = None
    ) -> None:
        self.config = config or LearnerConfig()
        self.student = Student(student_config)
        self.counts = Popularity()
        self._rng = np.random.default_rng(self.config.seed)
        self.negatives = NegativeSampler(
            self.config.neg_exponent, self.student.config.n_negatives, self._rng
        )
        self.user_labels = _LabelTable()
        self.item_labels = _LabelTable()
        self.teacher_version = 0
        self._refresh_times: list[float] = []
        self.last_alpha = 0.0
        self.events_learned = 0
        #: Item rows the last :meth:`learn_many` could have written in ``Q`` and ``b`` (the
        #: batch's items, its negatives, the soft labels' candidates), as references to the
        #: step's own arrays (no copies; may repeat rows). The step also writes ``C`` rows of
        #: its contexts: the users' histories before the step and the batch's items.
        self.last_item_rows: tuple[np.ndarray, ...] = ()

    # --------------------------------------------------------------- soft labels
    def apply_soft_labels(self, labels: IndexedSoftLabels) -> None:
        if not self.config.distill or len(labels.keys) == 0:
            return
        if labels.transition and not self.config.transitions:
            return
        (self.item_labels if labels.transition else self.user_labels).put(labels)
        if labels.version > self.teacher_version:
            self.teacher_version = labels.version
            if not self._refresh_times or labels.trained_until > self._refresh_times[-1]:
                self._refresh_times.append(labels.trained_until)

    def half_life(self) -> float:
        if self.config.kd_half_life_s is not None:
            return self.config.kd_half_life_s
        if len(self._refresh_times) >= 2:
            return max(self._refresh_times[-1] - self._refresh_times[-2], 1e-9)
        return np.inf

    def alpha_for(self, trained_until: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Mixing weight per event from the age of its soft labels."""
        age = np.maximum(ts - trained_until, 0.0)
        hl = self.half_life()
        if not np.isfinite(hl):
            return np.full(len(ts), self.config.kd_alpha, np.float32)
        a = self.config.kd_alpha * np.exp2(-age / hl)
        a[age > self.config.kd_max_age_half_lives * hl] = 0.0
        return a.astype(np.float32)

    def _targets(
        self, table: _LabelTable, keys: np.ndarray, ts: np.ndarray
    ) -> SoftTargets | None:
        rows = np.flatnonzero(table.lookup(keys))
        if len(rows) == 0:
            return None
        k = keys[rows]
        alpha = self.alpha_for(table.trained_until[k], ts[rows])
        keep = alpha > 0
        rows, k, alpha = rows[keep], k[keep], alpha[keep]
        if len(rows) == 0:
            return None
        items = table.items[k]
        return SoftTargets(
            rows=rows,
            items=np.maximum(items, 0),
            logits=np.where(items >= 0, table.logits[k], -np.inf).astype(np.float32),
            temperature=table.temperature[k],
            alpha=alpha,
        )

    # ---------------------------------------------------------------- learning
    def learn_many(
        self, users: np.ndarray, items: np.ndarray, ts: np.ndarray, weights: np.ndarray
    ) -> None:
        """Learn one micro-batch (int indices, event time, signed weights)."""
        if len(users) == 0:
            return
        n_items = max(int(items.max()) + 1, self.student.n_items)
        self.counts.learn_many(items, (weights > 0).astype(np.float64), ts)
        negatives, neg_logq, pos_logq = self.negatives.draw(self.counts, n_items, items)
        soft = trans = None
        contexts = None
        if self.config.distill:
            if self.config.user_labels:
                soft = self._targets(self.user_labels, users, ts)
            if self.config.transitions and self.student.config.context_len:
                # keyed by each event's previous item (its most recent context item)
                self.student.grow(int(users.max()) + 1, n_items)
                contexts = self.student.event_contexts(users, items)
                prev = contexts[:, -1].astype(np.int64)
                trans = self._targets(self.item_labels, np.maximum(prev, 0), ts)
                if trans is not None:
                    keep = prev[trans.rows] >= 0
                    trans = SoftTargets(
                        rows=trans.rows[keep],
                        items=trans.items[keep],
                        logits=trans.logits[keep],
                        temperature=trans.temperature[keep],
                        alpha=trans.alpha[keep],
                    )
        self.last_alpha = float(soft.alpha.mean()) if soft is not None else 0.0
        self.student.learn_many(
            users,
            items,
            weights,
            negatives,
            neg_logq=neg_logq,
            pos_logq=pos_logq,
            soft=soft,
            transition=trans,
            contexts=contexts,
        )
        self.last_item_rows = (
            items, negatives, *(t.items for t in (soft, trans) if t is not None)
        )
        self.events_learned += len(users)

    def scores(self, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
        """(B, n_items) scores for each event of a batch before it is learned (its context
        includes the same user's earlier events in the batch)."""
        st = self.student
        st.grow(int(users.max()) + 1, n_items)
        ctx = st.event_contexts(users, items)
        return st.score_items(st.query_vectors(users, ctx), n_items)


__all__ = ["IndexedSoftLabels", "Learner", "LearnerConfig"]
