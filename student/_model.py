"""The online student: sequence-aware factorisation with distillation.

score(u, i) = (p_u + sum_l w_l c_{j_l} over the last L items j_l of u) . q_i + b_i

Everything works on int indices; the online layer owns the string-id vocabularies. The step is
written here in numpy (``gradients`` and the Adagrad updates: the reference) and in C
(``_kernel*.c`` through ``_fused.FusedStep``), which ``learn_many`` runs where it is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdstream.errors import ConfigError, ModelError

from ._arrays import concat_aligned, unique_inverse_bounded
from ._config import KD_REST, StudentConfig
from ._fused import FusedStep, _bounds
from ._seen import SeenPairs

_EPS = 1e-8


@dataclass
class SoftTargets:
    """Teacher soft labels aligned with some events of a micro-batch.

    Parameters
    ----------
    rows
        Indices of the events (into the micro-batch) these targets apply to.
    items
        (R, M) candidate item indices.
    logits
        (R, M) teacher logits.
    temperature
        (R,) temperatures.
    alpha
        (R,) mixing weights a in [0, 1]: the event's loss is (1 - a) * hard + a * soft.
    """

    rows: np.ndarray
    items: np.ndarray
    logits: np.ndarray
    temperature: np.ndarray
    alpha: np.ndarray


_Parts = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class Gradients:
    """Row gradients of one batch: lists of (row indices, gradient rows) per table."""

    p: _Parts
    q: _Parts
    c: _Parts
    b: _Parts
    pos: np.ndarray  # (L,) gradient of the context position weights

    def dense(self, table: str, n_rows: int, dim: int) -> np.ndarray:
        """Sum the parts of ``table`` into a dense array (for tests and debugging)."""
        parts = getattr(self, table)
        if table == "b":
            out = np.zeros(n_rows)
            for rows, g in parts:
                np.add.at(out, rows, g)
            return out
        out = np.zeros((n_rows, dim))
        for rows, g in parts:
            np.add.at(out, rows, g)
        return out


def _segment_sum(inverse: np.ndarray, grads: np.ndarray, n: int) -> np.ndarray:
    """(n, d) sums of the rows of ``grads`` that share an ``inverse`` id.

    One ``bincount`` per column of the transposed gradients: about 1.6x faster than ``np.add.at``
    on a flat view (no (R, d) index array to build), and it sums in float64.
    """
    cols = np.ascontiguousarray(grads.T)
    out = np.empty((grads.shape[1], n), np.float32)
    for k, col in enumerate(cols):
        out[k] = np.bincount(inverse, weights=col, minlength=n)
    return out.T


def _add_rows(out: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``out[rows] += values`` that also sums repeated rows; the learner's rows are distinct
    and increasing, which takes the plain (several times faster) fancy-index add."""
    if len(rows) < 2 or bool((rows[1:] > rows[:-1]).all()):
        out[rows] += values
    else:
        np.add.at(out, rows, values)


def _weighted_rows(w: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(B, d) sums ``sum_l w[b, l] * rows[b, l]`` as one stacked matmul (faster than einsum)."""
    return (w[:, None, :] @ rows)[:, 0, :]


def _hits(items: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) pairs where ``negatives[column] == items[row]``, without a (B, S) compare."""
    order = np.argsort(negatives, kind="stable")
    sneg = negatives[order]
    lo = np.searchsorted(sneg, items, side="left")
    hi = np.searchsorted(sneg, items, side="right")
    counts = hi - lo
    rows = np.repeat(np.arange(len(items)), counts)
    if len(rows) == 0:
        return rows, rows
    offsets = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, order[np.repeat(lo, counts) + offsets]


def _kd_logit_grad(zs: np.ndarray, teacher: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """d/dz of T^2 * KL(softmax(t/T) || softmax(z/T)) = T * (softmax(z/T) - softmax(t/T)).

    ``teacher`` holds the M candidates' logits; the columns of ``zs`` after the first M are
    items where the teacher puts no mass but the student does. A -inf teacher logit marks padding,
    left out on both sides.
    """
    t = temperature[:, None]
    m = teacher.shape[1]
    zs = zs / t
    pad = ~np.isfinite(teacher)
    zs[:, :m][pad] = -np.inf
    zs -= zs.max(axis=1, keepdims=True)
    ps = np.exp(zs, out=zs)
    ps /= ps.sum(axis=1, keepdims=True)
    tl = teacher / t
    tl -= tl.max(axis=1, keepdims=True)
    pt = np.exp(tl, out=tl)
    pt /= pt.sum(axis=1, keepdims=True)
    ps[:, :m] -= pt  # the teacher's mass is on the candidates only
    ps *= t
    return ps.astype(np.float32, copy=False)


class Student:
    """Online sequence-aware matrix factorisation over open id spaces.

    Tables grow by amortised doubling as new user and item indices appear. ``learn_many`` applies
    one vectorised row-wise Adagrad step for a micro-batch: sampled softmax against shared
    negatives for positive events, a logistic push-down for negative events, and (optionally)
    temperature-scaled distillation from per-user and per-item (transition) soft labels.

    Parameters
    ----------
    config
        Hyper-parameters; see :class:`StudentConfig`.

    Examples
    --------
    >>> import numpy as np
    >>> s = Student(StudentConfig(dim=4, context_len=2, n_negatives=2, seed=1))
    >>> s.learn_many(np.array([0, 0, 1]), np.array([0, 1, 1]), np.ones(3, np.float32),
    ...              negatives=np.array([2, 3]))
    >>> s.n_users, s.n_items
    (2, 4)
    >>> ids, scores = s.recommend(0, k=2)
    >>> sorted(set(ids.tolist()) & {0, 1})
    []
    """

    def __init__(self, config: StudentConfig | None = None) -> None:
        self.config = config or StudentConfig()
        self._rng = np.random.default_rng(self.config.seed)
        d, big_l = self.config.dim, self.config.context_len
        self.n_users = 0
        self.n_items = 0
        self.step = 0
        self.P = np.zeros((0, d), np.float32)
        self.Q = np.zeros((0, d), np.float32)
        self.C = np.zeros((0, d), np.float32)
        self.b = np.zeros(0, np.float32)
        self.gP = np.zeros(0, np.float32)
        self.gQ = np.zeros(0, np.float32)
        self.gC = np.zeros(0, np.float32)
        self.gb = np.zeros(0, np.float32)
        self.hist = np.full((0, big_l), -1, np.int32)
        # Position weights of the context, most recent last: a weighted mean that starts as
        # decay**age (normalised over a full context) and, if configured, is learned.
        age = np.arange(big_l - 1, -1, -1, dtype=np.float32)
        pos = self.config.context_decay**age
        self.pos_w = (pos / max(pos.sum(), 1e-12)).astype(np.float32)
        self.g_pos = np.zeros(big_l, np.float32)
        self.seen = SeenPairs()
        self._mark: np.ndarray | None = None  # scratch for _candidate_negatives
        self._fused = FusedStep()

    # ------------------------------------------------------------------ growth
    def grow(self, n_users: int, n_items: int) -> None:
        """Make room for user indices < n_users and item indices < n_items (amortised doubling)."""
        if n_users > len(self.P):
            cap = max(n_users, 2 * len(self.P), 64)
            extra = cap - len(self.P)
            new_p = self._rng.standard_normal((extra, self.config.dim)) * self.config.init_std
            self.P = concat_aligned([self.P, new_p.astype(np.float32)])
            self.gP = np.concatenate([self.gP, np.zeros(extra, np.float32)])
            pad = np.full((extra, self.config.context_len), -1, np.int32)
            self.hist = np.concatenate([self.hist, pad])
        # Capacity stays above n_items: the spare last row of C is a zero vector that -1
        # (padding) in a context indexes, so contexts need no mask.
        if n_items >= len(self.Q):
            cap = max(n_items + 1, 2 * len(self.Q), 64)
            extra = cap - len(self.Q)
            new_q = self._rng.standard_normal((extra, self.config.dim)) * self.config.init_std
            self.Q = concat_aligned([self.Q, new_q.astype(np.float32)])
            self.C = concat_aligned([self.C, np.zeros((extra, self.config.dim), np.float32)])
            self.b = np.concatenate([self.b, np.zeros(extra, np.float32)])
            for name in ("gQ", "gC", "gb"):
                grown = np.concatenate([getattr(self, name), np.zeros(extra, np.float32)])
                setattr(self, name, grown)
        self.n_users = max(self.n_users, n_users)
        self.n_items = max(self.n_items, n_items)

    # ----------------------------------------------------------------- context
    def event_contexts(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B, L) context of every event: the user's last L items before it.

        Includes the user's earlier events in the same micro-batch, so bursts of one user's
        events keep their order. -1 pads users with shorter histories.
        """
        big_l = self.config.context_len
        n = len(users)
        if big_l == 0 or n == 0:
            return np.full((n, big_l), -1, np.int32)
        fast = self._fused.contexts(self, users, items, update=False)
        if fast is not None:
            return fast
        order = np.argsort(users, kind="stable")
        su = users[order]
        first = np.ones(n, bool)
        first[1:] = su[1:] != su[:-1]
        group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        pos_in_group = np.empty(n, np.int64)
        pos_in_group[order] = np.arange(n) - group_start
        start_of = np.empty(n, np.int64)
        start_of[order] = group_start
        # Combined sequence per user: [old history (L), batch items in order]; event at group
        # position g uses combined positions g .. g+L-1.
        idx = pos_in_group[:, None] + np.arange(big_l)[None, :]
        old = self.hist[users]
        from_old = idx < big_l
        old_part = np.take_along_axis(old, np.minimum(idx, big_l - 1), axis=1)
        sorted_items = items[order]
        new_pos = np.clip(start_of[:, None] + idx - big_l, 0, n - 1)
        new_part = sorted_items[new_pos]
        return np.where(from_old, old_part, new_part).astype(np.int32)

    def context_weights(self, contexts: np.ndarray) -> np.ndarray:
        """(B, L) weight of each context slot: the slot's position weight where it holds an
        item (the most recent item is the last slot), 0 for padding."""
        return (contexts >= 0) * self.pos_w[None, :]

    def query_vectors(self, users: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """(B, d) query vectors p_u + weighted mean of the context vectors (padding ignored)."""
        h = self.P[users].copy()
        if contexts.shape[1]:
            w = self.context_weights(contexts)
            # -1 reads the zero spare row, which adds nothing
            h += _weighted_rows(w, np.take(self.C, contexts, axis=0))
        return h

    def user_query(self, user: int) -> np.ndarray:
        """The query vector of ``user`` after all events learned so far."""
        # history first: learn_many grows C before it writes newer items into a history, so
        # a concurrent reader never indexes C with an item it does not have yet
        hist = self.hist[[user]]
        return self.query_vectors(np.array([user]), hist)[0]

    # ---------------------------------------------------------------- scoring
    def score_items(self, h: np.ndarray, n_items: int | None = None) -> np.ndarray:
        """Scores of the first ``n_items`` items for query vectors ``h`` (B, d)."""
        n = self.n_items if n_items is None else n_items
        return h @ self.Q[:n].T + self.b[:n]

    def recommend(
        self, user: int, k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for ``user`` over the whole catalogue: ``(item indices, scores)``."""
        if k < 1:
            raise ConfigError(f"recommend: k must be >= 1, got {k}")
        if self.n_items == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if 0 <= user < self.n_users:
            scores = self.score_items(self.user_query(user)[None, :])[0].astype(np.float64)
            if exclude_seen:
                # a reader may run beside learn_many (serving reads without a lock): the seen
                # set can already hold items newer than the scored catalogue
                seen = self.seen.items_of(user)
                scores[seen[seen < len(scores)]] = -np.inf
        else:  # unknown user: item bias (the popularity the model learned)
            scores = self.b[: self.n_items].astype(np.float64)
        k = min(k, int(np.isfinite(scores).sum()))
        if k == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]
        return top, scores[top].astype(np.float32)

    # ---------------------------------------------------------------- learning
    def learn_many(
        self,
        users: np.ndarray,
        items: np.ndarray,
        weights: np.ndarray,
        negatives: np.ndarray,
        neg_logq: np.ndarray | None = None,
        pos_logq: np.ndarray | None = None,
        soft: SoftTargets | None = None,
        transition: SoftTargets | None = None,
        contexts: np.ndarray | None = None,
    ) -> None:
        """One vectorised step over a micro-batch of events, in stream order.

        Parameters
        ----------
        users, items
            (B,) int indices. Tables grow to fit them.
        weights
            (B,) signed event weights: > 0 positive feedback, < 0 negative feedback.
        negatives
            (S,) item indices sampled for the batch, shared by all its positive events.
        neg_logq, pos_logq
            log sampling probabilities of the negatives and of the positive items, for the
            log-Q correction (ignored when the config turns it off or they are None).
        soft
            Per-user teacher soft labels for some events (distillation on the query vector).
        transition
            Item-keyed teacher soft labels for some events: what follows the event's previous
            item, distilled into the event's query vector (added to the hard loss, weight a).
        contexts
            The batch's :meth:`event_contexts`, when the caller computed them already.
        """
        users = np.ascontiguousarray(users, np.int64)
        items = np.ascontiguousarray(items, np.int64)
        w = np.asarray(weights, np.float32)
        negatives = np.ascontiguousarray(negatives, np.int64)
        if not (len(users) == len(items) == len(w)):
            raise ConfigError(
                f"learn_many: users, items, weights must have one length, got "
                f"{len(users)}, {len(items)}, {len(w)}"
            )
        if len(users) == 0:
            return
        (u_lo, u_hi), (i_lo, i_hi), (n_lo, n_hi) = map(_bounds, (users, items, negatives))
        self.grow(u_hi + 1, max(i_hi, n_hi) + 1)
        # no index below 0: all of them lie in the grown tables, and the compiled passes need
        # not check them again (a negative one goes to the numpy step, which reports it)
        in_tables = min(u_lo, i_lo, n_lo) >= 0
        advanced = False
        if contexts is None and self.config.context_len:
            # one pass gives the contexts and moves the histories past the batch (the step reads
            # only the contexts); a second pass over a table of users was most of their cost
            contexts = self._fused.contexts(
                self, users, items, update=True, checked=in_tables and i_hi < 2**31 - 1
            )
            advanced = contexts is not None
        if contexts is None:
            contexts = self.event_contexts(users, items)
        # the compiled step where it is built; the numpy step below is its reference
        args = (users, items, w, negatives, neg_logq, pos_logq, soft, transition, contexts)
        if not self._fused.run(self, *args, checked=in_tables, ctx_checked=advanced):
            grads = self.gradients(*args)
            self._adagrad(self.P, self.gP, grads.p)
            self._adagrad(self.Q, self.gQ, grads.q)
            if grads.c:
                self._adagrad(self.C, self.gC, grads.c)
            self._adagrad_bias(grads.b)
            if self.config.learn_context_weights and len(grads.pos):
                self.g_pos += grads.pos * grads.pos
                self.pos_w -= self.config.lr * grads.pos / np.sqrt(self.g_pos + _EPS)
        if not advanced:
            self.hist_update(users, items, contexts)
        self.step += 1
        # last: lock-free readers treat a user with seen items as learned (see the API service)
        self.seen.add(users, items)

    def gradients(
        self,
        users: np.ndarray,
        items: np.ndarray,
        w: np.ndarray,
        negatives: np.ndarray,
        neg_logq: np.ndarray | None = None,
        pos_logq: np.ndarray | None = None,
        soft: SoftTargets | None = None,
        transition: SoftTargets | None = None,
        contexts: np.ndarray | None = None,
    ) -> Gradients:
        """Gradients of the batch loss (sum over events) as (rows, row gradients) parts.

        loss_e = (1 - a_e) |w_e| hard_e + a_e T^2 KL(teacher_T || student_T) [+ transition term]
        """
        cfg = self.config
        if contexts is None:
            contexts = self.event_contexts(users, items)
        # one gather of the context vectors serves the query and the position-weight gradient
        # take, not fancy indexing: about twice as fast for (B, L) indices
        c_ctx = np.take(self.C, contexts, axis=0)  # -1 reads the zero spare row
        h = self.P[users].copy()
        if contexts.shape[1]:
            h += _weighted_rows(self.context_weights(contexts), c_ctx)

        hard_w = np.abs(w)
        if soft is not None and len(soft.rows):
            hard_w[soft.rows] *= 1.0 - soft.alpha
        positive = w > 0

        q_pos = self.Q[items]
        z_pos = np.einsum("bd,bd->b", h, q_pos) + self.b[items]
        dz_pos = np.zeros(len(users), np.float32)
        dh = np.zeros_like(h)
        d_q_rows: list[tuple[np.ndarray, np.ndarray]] = []
        d_b_rows: list[tuple[np.ndarray, np.ndarray]] = []

        if positive.any() and len(negatives):
            q_neg = self.Q[negatives]
            neg_shift = self.b[negatives]
            z_p = z_pos.copy()
            if cfg.logq_correction and neg_logq is not None and pos_logq is not None:
                neg_shift = neg_shift - np.asarray(neg_logq, np.float32)
                z_p -= np.asarray(pos_logq, np.float32)
            z_neg = h @ q_neg.T
            z_neg += neg_shift
            # A sampled negative equal to the event's positive is not a negative.
            hit_rows, hit_cols = _hits(items, negatives)
            z_neg[hit_rows, hit_cols] = -np.inf
            m = np.maximum(z_neg.max(axis=1), z_p)
            z_neg -= m[:, None]
            e_neg = np.exp(z_neg, out=z_neg)
            e_pos = np.exp(z_p - m)
            denom = e_pos + e_neg.sum(axis=1)
            scale = (hard_w * positive).astype(np.float32)
            dz_pos = np.where(positive, (e_pos / denom - 1.0) * scale, 0.0).astype(np.float32)
            e_neg *= (scale / denom)[:, None]
            dz_neg = e_neg
            dh += dz_neg @ q_neg
            d_q_rows.append((negatives, dz_neg.T @ h))
            d_b_rows.append((negatives, dz_neg.sum(axis=0)))
        negative = ~positive
        if negative.any():
            # logistic push-down: loss = -log sigmoid(-z)
            sig = 1.0 / (1.0 + np.exp(-z_pos[negative]))
            dz_pos[negative] = hard_w[negative] * sig
        dh += dz_pos[:, None] * q_pos
        d_q_rows.append((items, dz_pos[:, None] * h))
        d_b_rows.append((items, dz_pos))

        d_c_rows: list[tuple[np.ndarray, np.ndarray]] = []
        q_neg = self.Q[negatives]
        b_neg = self.b[negatives]
        d_c_rows: list[tuple[np.ndarray, np.ndarray]] = []
        if soft is not None and len(soft.rows):
            r = soft.rows
            g_query, dq = self._distil(h[r], soft, negatives, q_neg, b_neg, d_b_rows)
            _add_rows(dh, r, g_query)
            d_q_rows.extend(dq)
        if transition is not None and len(transition.rows):
            # The teacher's next items after the event's previous item, distilled into the
            # event's own query (whose most recent context item is that previous item): the
            # query the student really scores with, so p_u and every context vector share it.
            r = transition.rows
            g_query, dq = self._distil(h[r], transition, negatives, q_neg, b_neg, d_b_rows)
            _add_rows(dh, r, g_query)
            d_q_rows.extend(dq)

        # Back-propagate the query gradient to the user and context vectors.
        if contexts.shape[1]:
            w = self.context_weights(contexts)
            ev, slot = np.nonzero(contexts >= 0)
            d_c_rows.append((contexts[ev, slot], dh[ev] * w[ev, slot][:, None]))
            # padding reads the zero spare row, so it adds nothing to the position gradient
            d_pos = (c_ctx @ dh[:, :, None])[:, :, 0].sum(axis=0)
        else:
            d_pos = np.zeros(0, np.float32)
        return Gradients(p=[(users, dh)], q=d_q_rows, c=d_c_rows, b=d_b_rows, pos=d_pos)

    def _distil(
        self,
        query: np.ndarray,
        targets: SoftTargets,
        negatives: np.ndarray,
        q_neg: np.ndarray,
        b_neg: np.ndarray,
        d_b_rows: list[tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Distillation gradients for ``query`` vectors (R, d).

        The KL runs over the teacher's M candidates plus the batch's shared negatives, which
        stand for the rest of the catalogue where the teacher puts (almost) no mass. Without
        them the loss is shift-invariant over the candidates and could only reorder them, never
        lift them above other items.
        """
        cand = targets.items
        qc = np.take(self.Q, cand, axis=0)
        zs = (qc @ query[:, :, None])[:, :, 0] + self.b[cand]
        # A few of the batch's negatives stand for the rest of the catalogue: enough to lift
        # the candidates above other items, cheap enough to keep the step fast.
        negatives, q_neg, b_neg = negatives[:KD_REST], q_neg[:KD_REST], b_neg[:KD_REST]
        zn = query @ q_neg.T + b_neg
        # a negative that is also a candidate takes part once, as a candidate
        zn[self._candidate_negatives(cand, negatives)] = -np.inf
        student = np.concatenate([zs, zn], axis=1)
        g = _kd_logit_grad(student, targets.logits, targets.temperature)
        g *= targets.alpha[:, None]
        m = cand.shape[1]
        g_c, g_n = g[:, :m], g[:, m:]
        g_query = _weighted_rows(g_c, qc) + g_n @ q_neg
        d_b_rows.append((cand.ravel(), g_c.ravel()))
        d_b_rows.append((negatives, g_n.sum(axis=0)))
        dq: list[tuple[np.ndarray, np.ndarray]] = []
        if self.config.kd_item_vectors:
            d = query.shape[1]
            dq.append((negatives, g_n.T @ query))
            dq.append((cand.ravel(), (g_c[:, :, None] * query[:, None, :]).reshape(-1, d)))
        return g_query, dq

    def _candidate_negatives(self, cand: np.ndarray, negatives: np.ndarray) -> np.ndarray:
        """(R, S) mask: ``negatives[j]`` is among the candidates ``cand[r]`` (S <= 31).

        A per-item bit mark (bit j: the item is negatives[j]) gathered once per candidate: one
        pass over the (R, M) candidates instead of an (R, S, M) comparison.
        """
        if self._mark is None or len(self._mark) < len(self.Q):
            self._mark = np.zeros(len(self.Q), np.int32)
        mark = self._mark
        bit = np.left_shift(1, np.arange(len(negatives), dtype=np.int32))
        np.bitwise_or.at(mark, negatives, bit)
        bits = np.bitwise_or.reduce(mark[cand], axis=1)
        mark[negatives] = 0  # the scratch array stays all-zero between calls
        return ((bits[:, None] >> np.arange(len(negatives), dtype=np.int32)) & 1).astype(bool)

    def hist_update(
        self, users: np.ndarray, items: np.ndarray, contexts: np.ndarray | None = None
    ) -> None:
        """Append a batch's items to each user's last-L history, in order.

        ``contexts`` are the batch's :meth:`event_contexts` when the caller has them already.
        """
        big_l = self.config.context_len
        if big_l == 0 or len(users) == 0:
            return
        if contexts is None:
            # one pass computes them and moves the histories on
            if self._fused.contexts(self, users, items, update=True) is not None:
                return
            contexts = self.event_contexts(users, items)
        elif self._fused.hist_advance(self, users, items, contexts):
            return
        n = len(users)
        order = np.argsort(users, kind="stable")
        su = users[order]
        last = np.ones(n, bool)
        last[:-1] = su[1:] != su[:-1]
        ev = order[last]  # each user's last event in the batch
        # history after that event: its context shifted by one, the event's item last
        self.hist[users[ev]] = np.concatenate(
            [contexts[ev, 1:], items[ev, None].astype(np.int32)], axis=1
        )

    def _adagrad(
        self, table: np.ndarray, acc: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        rows = np.concatenate([p[0] for p in parts])
        if len(rows) == 0:
            return
        grads = np.concatenate([p[1] for p in parts]).astype(np.float32, copy=False)
        uniq, inv = unique_inverse_bounded(rows, len(table))
        g = _segment_sum(inv, grads, len(uniq))
        g += self.config.l2 * table[uniq]
        acc[uniq] += np.mean(g * g, axis=1)
        table[uniq] -= (self.config.lr / np.sqrt(acc[uniq] + _EPS))[:, None] * g

    def _adagrad_bias(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
        rows = np.concatenate([p[0] for p in parts])
        grads = np.concatenate([p[1] for p in parts]).astype(np.float64)
        g = np.bincount(rows, weights=grads, minlength=self.n_items)[: len(self.b)]
        touched = np.flatnonzero(g)
        gt = g[touched].astype(np.float32)
        self.gb[touched] += gt * gt
        self.b[touched] -= self.config.lr * gt / np.sqrt(self.gb[touched] + _EPS)

    def check_finite(self) -> None:
        """Raise :class:`ModelError` if any parameter is NaN or infinite."""
        for name in ("P", "Q", "C", "b"):
            if not np.isfinite(getattr(self, name)).all():
                raise ModelError(f"student parameter table {name} has non-finite values")


__all__ = ["Gradients", "SoftTargets", "Student"]
