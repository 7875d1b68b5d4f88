"""Replay a log into any producer (embedded log, Kafka), as fast as possible or at a speed-up.

Run it from the CLI (``kdstream replay``) or as::

    cols, report = read_log("u.data")
    replay(cols, producer, topic="kd.events", speed=3600.0)   # one hour of log per second
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from kdstream.errors import ConfigError, KdstreamError
from kdstream.stream._event import Event

from ._columns import EventColumns
from ._progress import Progress

_CHUNK = 8192
_MAX_REJECTS_KEPT = 100


class Producer(Protocol):
    """What :func:`replay` needs from a broker client."""

    def send(
        self, topic: str, value: bytes, key: bytes | str | None = None, ts: float | None = None
    ) -> object: ...

    def flush(self) -> object: ...


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did: events sent, events that failed encoding, wall seconds.

    ``rejects`` keeps the first 100 failures as ``(position in the replayed stream, reason)``.
    """

    sent: int
    rejected: int
    seconds: float
    rejects: tuple[tuple[int, str], ...] = field(default=())

    @property
    def rate(self) -> float:
        """Events sent per wall second (0 when no time passed)."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def _iter_events(source: EventColumns | Iterable[Event]) -> Iterator[Event]:
    if isinstance(source, EventColumns):
        for start in range(0, len(source), _CHUNK):
            yield from source.slice(start, start + _CHUNK).to_events()
    else:
        yield from source


def replay(
    source: EventColumns | Iterable[Event],
    producer: Producer,
    topic: str = "kd.events",
    speed: float = 0.0,
    limit: int | None = None,
    progress: bool = True,
    encode: Callable[[Event], bytes] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    progress_stream: TextIO | None = None,
) -> ReplayReport:
    """Send events to ``topic``, keyed by user, in the order given.

    Parameters
    ----------
    source
        ``EventColumns`` or any iterable of ``Event`` (in time order for ``speed > 0``).
    producer
        Anything with ``send(topic, value, key=, ts=)`` and ``flush()``.
    topic
        Destination topic.
    speed
        0: as fast as possible. ``X > 0``: wall-clock gaps are log gaps divided by ``X``
        (``speed=1`` is real time, ``speed=3600`` one hour of log per second).
    limit
        Send at most this many events.
    progress
        Show a progress line with events/s on stderr.
    encode
        Event -> bytes; default ``kdstream.stream._codec.encode_event``. An event it rejects
        (``KdstreamError``, ``ValueError``) is counted in ``rejected`` and skipped.
    clock, sleep
        Monotonic seconds and a sleep function, injectable for tests.
    progress_stream
        Where the progress line goes (default stderr).

    Returns
    -------
    ReplayReport

    Examples
    --------
    >>> class Fake:
    ...     def __init__(self): self.sent = []
    ...     def send(self, topic, value, key=None, ts=None): self.sent.append((topic, key, ts))
    ...     def flush(self): pass
    >>> fake = Fake()
    >>> report = replay([Event("u1", "i1", ts=5.0)], fake, progress=False)
    >>> report.sent, fake.sent
    (1, [('kd.events', 'u1', 5.0)])
    """
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not speed >= 0:
        raise ConfigError(f"speed must be a number >= 0, got {speed!r}")
    if speed == float("inf"):
        speed = 0.0
    if limit is not None and (isinstance(limit, bool) or limit < 0):
        raise ConfigError(f"limit must be >= 0 or None, got {limit!r}")
    if encode is None:
        from kdstream.stream._codec import encode_event  # lazy: keep replay importable alone

        encode = encode_event

    total: int | None = None
    if isinstance(source, EventColumns) or hasattr(source, "__len__"):
        total = len(source)  # type: ignore[arg-type]
        if limit is not None:
            total = min(total, limit)
    events: Iterable[Event] = _iter_events(source)
    if limit is not None:
        events = itertools.islice(events, limit)

    sent = 0
    rejected = 0
    rejects: list[tuple[int, str]] = []
    start = clock()
    first_ts: float | None = None
    with Progress(total, f"replay -> {topic}", stream=progress_stream, enabled=progress,
                  clock=clock) as bar:
        for position, event in enumerate(events):
            try:
                value = encode(event)
            except (KdstreamError, ValueError, TypeError) as exc:
                rejected += 1
                if len(rejects) < _MAX_REJECTS_KEPT:
                    rejects.append((position, str(exc) or type(exc).__name__))
                bar.update(1)
                continue
            if speed > 0:
                if first_ts is None:
                    first_ts = event.ts
                delay = start + (event.ts - first_ts) / speed - clock()
                if delay > 0:
                    sleep(delay)
            producer.send(topic, value, key=event.user, ts=event.ts)
            sent += 1
            bar.update(1)
        producer.flush()
    return ReplayReport(sent, rejected, clock() - start, tuple(rejects))


__all__ = ["Producer", "ReplayReport", "replay"]
