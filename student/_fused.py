"""The C micro-batch step (``_kernel.c``) behind the numpy one: same update, one pass per event.

``Student.learn_many`` calls :meth:`FusedStep.run` first; it returns False (and the numpy path
runs) where the extension is not built, ``KDSTREAM_STUDENT_KERNEL=0`` turns it off, or an input
is outside what the kernel takes (float64 tables in gradient tests, distillation into item
vectors, an index outside the tables, which the numpy path reports as an error). The kernel
trusts its indices, so every one is checked here before the call.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ._config import KD_REST

if TYPE_CHECKING:
    from ._model import SoftTargets, Student

try:
    from . import _kernel  # type: ignore[attr-defined]
except ImportError:  # not compiled: the numpy step does the same work
    _kernel = None

_F32 = np.dtype(np.float32)
_TABLES = ("P", "Q", "C", "b", "gP", "gQ", "gC", "gb", "pos_w", "g_pos")
_EMPTY_I64 = np.empty(0, np.int64)
_EMPTY_F32 = np.empty(0, np.float32)


def kernel_available() -> bool:
    """Whether the compiled step is built and not turned off by ``KDSTREAM_STUDENT_KERNEL=0``."""
    return _kernel is not None and os.environ.get("KDSTREAM_STUDENT_KERNEL", "1") != "0"


def _bounds(a: np.ndarray) -> tuple[int, int]:
    """``(min, max)`` of the indices of ``a``, ``(0, -1)`` when it is empty: one C pass where the
    kernel is built (numpy's ``min()`` and ``max()`` are two calls of several us each), numpy's
    otherwise."""
    if not len(a):
        return 0, -1
    if _kernel is None:
        return int(a.min()), int(a.max())
    if a.dtype not in (np.int64, np.int32) or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, np.int64)
    lo, hi = _kernel.bounds(a, a.dtype.itemsize)
    return lo, hi


def _in_range(a: np.ndarray, lo: int, hi: int) -> bool:
    """Whether every index of ``a`` lies in ``[lo, hi)``."""
    a_lo, a_hi = _bounds(a)
    return not len(a) or (lo <= a_lo and a_hi < hi)


def _targets(t: SoftTargets | None, n_events: int, n_items: int) -> tuple[np.ndarray, ...] | None:
    """The kernel's five arrays for ``t`` (empty when None), or None if it cannot take them."""
    if t is None or len(t.rows) == 0:
        return (_EMPTY_I64, _EMPTY_I64, _EMPTY_F32, _EMPTY_F32, _EMPTY_F32)
    rows = np.ascontiguousarray(t.rows, np.int64)
    items = np.ascontiguousarray(t.items, np.int64)
    logits = np.ascontiguousarray(t.logits, np.float32)
    if items.ndim != 2 or logits.shape != items.shape or items.shape[0] != len(rows):
        return None
    if not (_in_range(rows, 0, n_events) and _in_range(items, 0, n_items)):
        return None
    temp = np.ascontiguousarray(np.broadcast_to(t.temperature, len(rows)), np.float32)
    alpha = np.ascontiguousarray(np.broadcast_to(t.alpha, len(rows)), np.float32)
    return rows, items, logits, temp, alpha


def _histories_take(st: Student, users: np.ndarray, items: np.ndarray, checked: bool) -> bool:
    """Whether the kernel's history passes can take this batch (they trust their indices);
    ``checked``: the caller knows every user has a history row and every item fits an int32."""
    if not kernel_available() or st.hist.dtype != np.int32 or not st.hist.flags.c_contiguous:
        return False
    if len(users) == 0 or len(items) != len(users):
        return False
    return checked or (_in_range(users, 0, len(st.hist)) and _in_range(items, 0, 2**31 - 1))


class FusedStep:
    """Scratch arrays of the kernel (row -> slot maps, all -1, a per-item mark and per-item bias
    gradients, all 0, between calls), grown with the tables."""

    def __init__(self) -> None:
        self._maps: dict[str, np.ndarray] = {}
        # the tables last found float32 and contiguous, held (not their ids, which a freed
        # array's successor could take) so a batch on the same tables skips the ten checks
        self._tables_ok: tuple[np.ndarray, ...] = ()
        self._table_ids: tuple[int, ...] = ()  # theirs: unique while they are held

    def _map(self, name: str, n: int, fill: float = -1, dtype: type = np.int32) -> np.ndarray:
        m = self._maps.get(name)
        if m is None or len(m) != n:
            m = np.full(n, fill, dtype)
            self._maps[name] = m
        return m

    def contexts(
        self, st: Student, users: np.ndarray, items: np.ndarray, update: bool, checked: bool = False
    ):
        """``(B, L)`` contexts of a batch (see ``Student.event_contexts``), and with ``update``
        the users' histories moved past it; None where the kernel cannot take the batch.
        ``checked``: the caller bounded the indices already (see ``_histories_take``)."""
        big_l = st.config.context_len
        if not _histories_take(st, users, items, checked):
            return None
        out = np.empty((len(users), big_l), np.int32)
        _kernel.contexts(
            st.hist,
            np.ascontiguousarray(users, np.int64),
            np.ascontiguousarray(items, np.int64),
            out,
            self._map("users", len(st.hist)),
            big_l,
            update,
        )
        return out

    def hist_advance(
        self, st: Student, users: np.ndarray, items: np.ndarray, contexts: np.ndarray
    ) -> bool:
        """Move the users' histories past a batch from its ``(B, L)`` contexts (no second pass
        over the histories); False where the kernel cannot take it."""
        big_l = st.config.context_len
        if not _histories_take(st, users, items, False):
            return False
        ctx = np.ascontiguousarray(contexts, np.int32)
        if ctx.shape != (len(users), big_l):
            return False
        _kernel.hist_advance(
            st.hist,
            np.ascontiguousarray(users, np.int64),
            np.ascontiguousarray(items, np.int64),
            ctx,
            big_l,
        )
        return True

    def run(
        self,
        st: Student,
        users: np.ndarray,
        items: np.ndarray,
        w: np.ndarray,
        negatives: np.ndarray,
        neg_logq: np.ndarray | None,
        pos_logq: np.ndarray | None,
        soft: SoftTargets | None,
        transition: SoftTargets | None,
        contexts: np.ndarray,
        checked: bool = False,
        ctx_checked: bool = False,
    ) -> bool:
        """Apply one micro-batch step to ``st``'s tables; False if the kernel cannot take it.
        ``checked``: the caller bounded users, items and negatives inside the tables already;
        ``ctx_checked``: the contexts come from the histories (items the tables hold)."""
        cfg = st.config
        if not kernel_available() or cfg.kd_item_vectors:
            return False
        tables = tuple(getattr(st, name) for name in _TABLES)
        ids = tuple(map(id, tables))
        if ids != self._table_ids:
            if any(t.dtype != _F32 or not t.flags.c_contiguous for t in tables):
                return False
            self._tables_ok, self._table_ids = tables, ids
        n_items = len(st.Q)
        if not checked and not (
            _in_range(users, 0, len(st.P))
            and _in_range(items, 0, n_items)
            and _in_range(negatives, 0, n_items)
        ):
            return False
        ctx = np.ascontiguousarray(contexts, np.int32)
        # negative entries pad a context (the kernel skips them)
        if ctx.shape != (len(users), cfg.context_len) or not (
            ctx_checked or _in_range(ctx, -(2**31), len(st.C))
        ):
            return False
        soft_arrays = _targets(soft, len(users), n_items)
        trans_arrays = _targets(transition, len(users), n_items)
        if soft_arrays is None or trans_arrays is None:
            return False
        use_logq = cfg.logq_correction and neg_logq is not None and pos_logq is not None
        neg_shift = -np.asarray(neg_logq, np.float32) if use_logq else _EMPTY_F32
        pos_shift = np.asarray(pos_logq, np.float32) if use_logq else _EMPTY_F32
        if use_logq and (len(neg_shift) != len(negatives) or len(pos_shift) != len(users)):
            return False
        _kernel.step(
            *tables,
            self._map("P", len(st.P)),
            self._map("Q", n_items),
            self._map("C", len(st.C)),
            self._map("b", len(st.b), fill=0, dtype=np.float64),  # bias gradients, dense
            self._map("mark", n_items, fill=0),
            np.ascontiguousarray(users, np.int64),
            np.ascontiguousarray(items, np.int64),
            np.ascontiguousarray(w, np.float32),
            ctx,
            np.ascontiguousarray(negatives, np.int64),
            np.ascontiguousarray(neg_shift),
            np.ascontiguousarray(pos_shift),
            *soft_arrays,
            *trans_arrays,
            cfg.context_len,
            cfg.dim,
            KD_REST,
            cfg.lr,
            cfg.l2,
            cfg.learn_context_weights and cfg.context_len > 0,
        )
        return True


__all__ = ["FusedStep", "kernel_available"]
