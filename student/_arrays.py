"""Sort-based set helpers (numpy 2.x's hash-based ``np.unique`` is slower on small int arrays)."""

from __future__ import annotations

import numpy as np


def unique_sorted(x: np.ndarray) -> np.ndarray:
    """Sorted unique values of ``x``."""
    if len(x) == 0:
        return x.copy()
    s = np.sort(x)
    keep = np.empty(len(s), bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def unique_inverse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(uniq, inverse)`` with ``uniq[inverse] == x``."""
    order = np.argsort(x, kind="stable")
    s = x[order]
    first = np.empty(len(s), bool)
    if len(s):
        first[0] = True
        np.not_equal(s[1:], s[:-1], out=first[1:])
    inverse = np.empty(len(x), np.int64)
    inverse[order] = np.cumsum(first) - 1
    return s[first], inverse


def isin_sorted(x: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(x, sorted_set)`` for a sorted, unique ``sorted_set``."""
    if len(sorted_set) == 0:
        return np.zeros(len(x), bool)
    pos = np.searchsorted(sorted_set, x)
    pos[pos == len(sorted_set)] = 0
    return sorted_set[pos] == x


__all__ = ["isin_sorted", "unique_inverse", "unique_sorted"]
