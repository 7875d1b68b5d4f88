"""When to refresh the teacher: after enough new events and/or enough time."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kdstream.errors import ConfigError


@dataclass(frozen=True)
class RefreshPolicy:
    """Decide when the teacher should retrain.

    A refresh is due once at least ``min_events`` events have been seen in total and either
    trigger fires: ``every_events`` new events, or ``every_seconds`` seconds, since the last
    refresh. With both triggers ``None`` the teacher never refreshes.

    Parameters
    ----------
    every_events : int | None
        New events since the last refresh that trigger one (``None`` disables the trigger).
    every_seconds : float | None
        Seconds since the last refresh that trigger one (``None`` disables the trigger).
    min_events : int
        Total events required before any refresh (too little data trains a useless teacher).

    Examples
    --------
    >>> policy = RefreshPolicy(every_events=100, min_events=50)
    >>> policy.due(events_since=100, seconds_since=0.0, total_events=100)
    True
    >>> policy.due(events_since=99, seconds_since=1e6, total_events=1000)
    False
    """

    every_events: int | None = 20_000
    every_seconds: float | None = None
    min_events: int = 1_000

    def __post_init__(self) -> None:
        ev = self.every_events
        if ev is not None and (not isinstance(ev, int) or isinstance(ev, bool) or ev < 1):
            raise ConfigError(f"RefreshPolicy.every_events must be None or an int >= 1, got {ev!r}")
        sec = self.every_seconds
        if sec is not None and (
            not isinstance(sec, int | float)
            or isinstance(sec, bool)
            or not math.isfinite(sec)
            or sec <= 0
        ):
            raise ConfigError(
                f"RefreshPolicy.every_seconds must be None or a finite float > 0, got {sec!r}"
            )
        mn = self.min_events
        if not isinstance(mn, int) or isinstance(mn, bool) or mn < 0:
            raise ConfigError(f"RefreshPolicy.min_events must be an int >= 0, got {mn!r}")

    def due(self, events_since: int, seconds_since: float, total_events: int) -> bool:
        """Whether a refresh is due now.

        Parameters
        ----------
        events_since : int
            Events seen since the last refresh (or since the start).
        seconds_since : float
            Seconds since the last refresh (or since the start), measured by the caller.
        total_events : int
            Events seen in total.
        """
        if total_events < self.min_events or events_since <= 0:
            return False
        if self.every_events is not None and events_since >= self.every_events:
            return True
        return self.every_seconds is not None and seconds_since >= self.every_seconds
