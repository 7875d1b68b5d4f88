"""Moving a processor's item-indexed state to new row indices (after an item hub reset: see
:mod:`kdstream.stream._processor`, "Hub resets"). Pure array code."""

from __future__ import annotations

from typing import Any

import numpy as np


def moved(table: np.ndarray, src: np.ndarray, fill: float | np.ndarray) -> np.ndarray:
    """A copy of ``table`` with row ``j`` taken from row ``src[j]`` (``-1``: ``fill``, a
    scalar or a row per ``j``); rows past ``src`` are the scalar fill, or zero."""
    out = np.empty_like(table)
    n = min(len(table), len(src))
    if np.ndim(fill):  # a row per j (at least n of them)
        out[:n] = fill[:n]  # type: ignore[index]
        out[n:] = 0
    else:
        out[:] = fill
    take = np.flatnonzero(src[:n] >= 0)
    out[take] = table[src[take]]
    return out


def moved_pairs(pairs: Any, lut: np.ndarray) -> Any:
    """Seen (user, item) pairs with items moved by ``lut`` (old row -> new row, -1: gone)."""
    keys = pairs.to_array()
    if not len(keys):
        return pairs
    items = lut[np.minimum(keys & 0xFFFFFFFF, len(lut) - 1)]
    keep = items >= 0
    return pairs.from_array(((keys[keep] >> 32) << 32) | items[keep])


def move_labels(table: Any, lut: np.ndarray, src: np.ndarray | None) -> None:
    """Move a soft-label table's candidates by ``lut`` and, for item-keyed (transition)
    labels, its rows by ``src`` (see :func:`moved`)."""
    items = table.items
    candidates = np.where(items >= 0, lut[np.minimum(items, len(lut) - 1)], -1)
    table.items = candidates
    table.logits = np.where(candidates >= 0, table.logits, -np.inf).astype(np.float32)
    table.has = table.has & (candidates >= 0).any(axis=1)
    if src is None:
        return
    n = max(len(table.has), len(src))
    for name, fill in (("items", -1), ("logits", -np.inf), ("temperature", 1.0),
                       ("trained_until", -np.inf), ("has", False)):
        arr = getattr(table, name)
        grown = np.full((n, *arr.shape[1:]), fill, arr.dtype)
        grown[: len(arr)] = arr
        setattr(table, name, moved(grown, src, fill))


__all__ = ["move_labels", "moved", "moved_pairs"]
