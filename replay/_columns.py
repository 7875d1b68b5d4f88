"""Columnar events: parallel numpy arrays, the bulk form that readers and generators return."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kdstream.errors import ConfigError
from kdstream.stream._event import Event

_OBJ = np.dtype(object)


def _as_object(values: object, name: str) -> npt.NDArray[np.object_]:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise ConfigError(f"EventColumns.{name} must be 1-D, got shape {arr.shape}")
    return arr


@dataclass(slots=True, eq=False)
class EventColumns:
    """Events as parallel arrays (one row per event), in stream order.

    Parameters
    ----------
    user, item, type
        Object arrays of ``str``.
    ts
        ``float64`` epoch seconds.
    value
        ``float64``; ``nan`` means "no value" (``Event.value is None``).

    Examples
    --------
    >>> cols = EventColumns.from_events([Event("u1", "i1", "rating", 10.0, 4.0),
    ...                                  Event("u2", "i1", "view", 11.0)])
    >>> len(cols), cols.to_events()[1]
    (2, Event(user='u2', item='i1', type='view', ts=11.0, value=None))
    >>> cols.slice(1, 2).user.tolist()
    ['u2']
    """

    user: npt.NDArray[np.object_]
    item: npt.NDArray[np.object_]
    type: npt.NDArray[np.object_]
    ts: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        self.user = _as_object(self.user, "user")
        self.item = _as_object(self.item, "item")
        self.type = _as_object(self.type, "type")
        self.ts = np.asarray(self.ts, dtype=np.float64)
        self.value = np.asarray(self.value, dtype=np.float64)
        n = len(self.user)
        lengths = {
            name: len(getattr(self, name)) for name in ("user", "item", "type", "ts", "value")
        }
        if any(length != n for length in lengths.values()):
            raise ConfigError(f"EventColumns arrays must have equal lengths, got {lengths}")

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def empty(cls) -> EventColumns:
        """Zero events."""
        e = np.empty(0, dtype=_OBJ)
        f = np.empty(0, dtype=np.float64)
        return cls(e, e.copy(), e.copy(), f, f.copy())

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> EventColumns:
        """Columns from ``Event`` objects (order kept)."""
        evs = list(events)
        if not evs:
            return cls.empty()
        return cls(
            np.array([e.user for e in evs], dtype=_OBJ),
            np.array([e.item for e in evs], dtype=_OBJ),
            np.array([e.type for e in evs], dtype=_OBJ),
            np.fromiter((e.ts for e in evs), dtype=np.float64, count=len(evs)),
            np.fromiter(
                (math.nan if e.value is None else e.value for e in evs),
                dtype=np.float64,
                count=len(evs),
            ),
        )

    def to_events(self) -> list[Event]:
        """Rows as ``Event`` objects; ``nan`` values become ``None``."""
        values = [None if math.isnan(v) else v for v in self.value.tolist()]
        return [
            Event(u, i, t, ts, v)
            for u, i, t, ts, v in zip(
                self.user.tolist(),
                self.item.tolist(),
                self.type.tolist(),
                self.ts.tolist(),
                values,
                strict=True,
            )
        ]

    def slice(self, a: int, b: int) -> EventColumns:
        """Rows ``a:b`` (views of the same arrays, like a list slice)."""
        return EventColumns(
            self.user[a:b], self.item[a:b], self.type[a:b], self.ts[a:b], self.value[a:b]
        )

    def take(self, index: npt.ArrayLike) -> EventColumns:
        """Rows selected by an integer index array (copies)."""
        idx = np.asarray(index, dtype=np.intp)
        return EventColumns(
            self.user[idx], self.item[idx], self.type[idx], self.ts[idx], self.value[idx]
        )

    def sorted_by_time(self) -> EventColumns:
        """Rows in ``ts`` order; ties keep their current order (stable sort)."""
        order = np.argsort(self.ts, kind="stable")
        return self.take(order)

    @staticmethod
    def concat(parts: Iterable[EventColumns]) -> EventColumns:
        """Rows of each part, one after the other."""
        ps = list(parts)
        if not ps:
            return EventColumns.empty()
        return EventColumns(
            np.concatenate([p.user for p in ps]),
            np.concatenate([p.item for p in ps]),
            np.concatenate([p.type for p in ps]),
            np.concatenate([p.ts for p in ps]),
            np.concatenate([p.value for p in ps]),
        )


__all__ = ["EventColumns"]
