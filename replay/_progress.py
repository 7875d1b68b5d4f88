"""A tiny dependency-free progress line for long replays and reads (stderr, events/s)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

_REDRAW_EVERY_S = 0.1  # at most ~10 redraws a second


class Progress:
    """Context manager that shows ``label done/total (pct) rate/s`` on one line.

    Redraws in place (carriage return) only when ``stream`` is a terminal, at most ~10 times a
    second; always prints one final line on exit. ``enabled=False`` prints nothing.

    Parameters
    ----------
    total
        Expected number of units (``None`` or 0: unknown, no percentage).
    label
        Text before the counts.
    stream
        Where to write (default stderr).
    enabled
        Whether to write anything.
    clock
        Monotonic seconds; injectable for tests.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> ticks = iter([0.0, 2.0])
    >>> with Progress(100, "replay", stream=out, clock=lambda: next(ticks, 2.0)) as bar:
    ...     bar.update(100)
    >>> out.getvalue()
    'replay 100/100 (100%) 50 events/s in 2.0 s\\n'
    """

    def __init__(
        self,
        total: int | None,
        label: str = "",
        stream: TextIO | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "events",
    ) -> None:
        self.total = total or 0
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.clock = clock
        self.unit = unit
        self.done = 0
        self._start = 0.0
        self._last_draw = -float("inf")
        isatty = getattr(self.stream, "isatty", None)
        self._live = bool(enabled and isatty is not None and isatty())

    def __enter__(self) -> Progress:
        self._start = self.clock()
        return self

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 0.0)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        counts = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        pct = f" ({100.0 * self.done / self.total:.0f}%)" if self.total else ""
        prefix = f"{self.label} " if self.label else ""
        return f"{prefix}{counts}{pct} {rate:,.0f} {self.unit}/s in {elapsed:.1f} s"

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; redraw if the last redraw is old enough."""
        self.done += n
        if not self._live:
            return
        now = self.clock()
        if now - self._last_draw >= _REDRAW_EVERY_S:
            self._last_draw = now
            self.stream.write("\r" + self._line(now))
            self.stream.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.enabled:
            return
        self.stream.write(("\r" if self._live else "") + self._line(self.clock()) + "\n")
        self.stream.flush()


__all__ = ["Progress"]
