"""String id <-> int index vocabularies with an explicit missing-id policy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class Vocab:
    """Assigns indices 0, 1, 2, ... to ids in order of first appearance.

    Examples
    --------
    >>> v = Vocab()
    >>> v.add_many(["b", "a", "b"]).tolist()
    [0, 1, 0]
    >>> v.lookup(["a", "zz"]).tolist()
    [1, -1]
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._index: dict[str, int] = {}
        self.ids: list[str] = []
        for i in ids:
            self.add(i)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def add(self, key: str) -> int:
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = len(self.ids)
            self.ids.append(key)
        return idx

    def add_many(self, keys: Sequence[str]) -> np.ndarray:
        """Indices of ``keys``, allocating new ones in order (missing ids are added)."""
        index, ids = self._index, self.ids
        out = np.empty(len(keys), np.int64)
        for n, key in enumerate(keys):
            idx = index.get(key)
            if idx is None:
                idx = index[key] = len(ids)
                ids.append(key)
            out[n] = idx
        return out

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        """Indices of ``keys``; missing ids map to -1 (never added)."""
        get = self._index.get
        return np.fromiter((get(k, -1) for k in keys), np.int64, len(keys))

    def get(self, key: str) -> int | None:
        return self._index.get(key)


__all__ = ["Vocab"]
