"""Latency histograms and the Prometheus text exposition format, written by hand.

Hand-written rather than prometheus_client: a dozen samples do not justify a dependency, and
the format (``# HELP``/``# TYPE`` + ``name{labels} value`` lines) is small and stable.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: Bucket upper bounds in seconds: 100 µs .. 10 s, dense where serving latencies live.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)


class Histogram:
    """A thread-safe cumulative histogram of durations (seconds).

    Parameters
    ----------
    buckets
        Increasing upper bounds; ``+Inf`` is implicit.

    Examples
    --------
    >>> h = Histogram((0.001, 0.01))
    >>> for s in (0.0005, 0.002, 0.5):
    ...     h.observe(s)
    >>> h.count, h.bucket_counts()
    (3, [1, 2, 3])
    """

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        if list(buckets) != sorted(buckets) or len(set(buckets)) != len(buckets):
            raise ValueError("Histogram: buckets must be strictly increasing")
        self.buckets = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self.buckets) + 1)
        self.count = 0
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            self._counts[i] += 1
            self.count += 1
            self.sum += seconds

    def bucket_counts(self) -> list[int]:
        """Cumulative counts per bucket, ``+Inf`` last."""
        with self._lock:
            out, total = [], 0
            for c in self._counts:
                total += c
                out.append(total)
            return out

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q`` (None when empty)."""
        counts = self.bucket_counts()
        if not counts[-1]:
            return None
        rank = q * counts[-1]
        i = bisect.bisect_left(counts, rank)
        return self.buckets[i] if i < len(self.buckets) else math.inf


@dataclass(frozen=True)
class Sample:
    """One gauge or counter sample: ``name``, its type, help text, value and labels."""

    name: str
    kind: str  # "gauge" | "counter"
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_samples(samples: Iterable[Sample]) -> str:
    """Prometheus text: one ``# HELP``/``# TYPE`` header per metric name, then its samples."""
    lines: list[str] = []
    headed: set[str] = set()
    for s in samples:
        if s.name not in headed:
            headed.add(s.name)
            lines += [f"# HELP {s.name} {s.help}", f"# TYPE {s.name} {s.kind}"]
        labels = ",".join(f'{k}="{_escape(str(v))}"' for k, v in s.labels.items())
        lines.append(f"{s.name}{{{labels}}} {_number(s.value)}" if labels
                     else f"{s.name} {_number(s.value)}")
    return "\n".join(lines) + ("\n" if lines else "")


def render_histogram(name: str, help_text: str, hist: Histogram) -> str:
    counts = hist.bucket_counts()
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bound, c in zip((*hist.buckets, math.inf), counts, strict=True):
        lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {c}')
    lines += [f"{name}_sum {_number(hist.sum)}", f"{name}_count {counts[-1]}"]
    return "\n".join(lines) + "\n"


__all__ = ["DEFAULT_BUCKETS", "Histogram", "Sample", "render_histogram", "render_samples"]
