"""Shared types: ids on the wire are strings; the hot path uses int32 indices."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

UserId: TypeAlias = str
ItemId: TypeAlias = str
IntArray: TypeAlias = npt.NDArray[np.int32]
FloatArray: TypeAlias = npt.NDArray[np.float32]

__all__ = ["FloatArray", "IntArray", "ItemId", "UserId"]
