"""Scenario 6: a slow Redis and a slow teacher under load — back-pressure, bounded memory.

* **Slow Redis**: the processor talks to Redis through a :class:`DelayProxy`; after a warm-up
  the proxy adds ``delay_s`` to every chunk in each direction for ``slow_s`` seconds, then the
  delay is switched off. The processor keeps learning, slower; the backlog (``lag``: records
  acknowledged by the broker and not yet applied in the store) waits in Kafka, not in the
  processor, so its RSS stays flat while the lag grows; the lag drains once Redis is fast.
* **Slow teacher**: ``kdstream teacher`` whose training step sleeps ``fit_delay_s`` first
  (``slow_teacher.py``). The processor never waits for soft labels: it keeps pace with the
  load while no new teacher version arrives; both processes' RSS stays bounded.

Both end with the per-event ledger of :func:`~.scenarios.check_ledger`. Memory is sampled
from ``/proc/<pid>/status`` (``VmRSS``) every ``SAMPLE_S`` by a :class:`Sampler` thread, along
with the produced and applied counts and the store's teacher version (read from Redis
directly, never through the proxy).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .delay_proxy import DelayProxy
from .scenarios import (
    FaultCluster,
    Load,
    Processor,
    ScenarioResult,
    Teacher,
    Topics,
    _versions,
    check_ledger,
    counts,
    make_topics,
    wait_progress,
)

SAMPLE_S = 0.5


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (``None`` once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Sample:
    t: float
    produced: int
    applied: int
    teacher: int
    rss: dict[str, float | None]

    @property
    def lag(self) -> int:
        return self.produced - self.applied


@dataclass(eq=False)  # a Thread must stay hashable
class Sampler(threading.Thread):
    """Samples counts, the teacher version and the RSS of ``pids`` until :meth:`stop`."""

    cluster: FaultCluster
    prefix: str
    topics: Topics
    load: Load
    pids: dict[str, int]
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)
        self._halt = threading.Event()

    def run(self) -> None:
        applied = 0
        while not self._halt.is_set():
            # produced first: a sample's lag never reads negative
            produced = self.load.produced
            with contextlib.suppress(Exception):
                applied = counts(self.cluster, self.prefix, self.topics)["applied"]
            teacher = _versions(self.cluster, self.prefix).get("teacher", 0)
            rss = {name: rss_mb(pid) for name, pid in self.pids.items()}
            self.samples.append(Sample(time.monotonic(), produced, applied, teacher, rss))
            self._halt.wait(SAMPLE_S)

    def stop(self) -> list[Sample]:
        self._halt.set()
        self.join(10)
        return self.samples


def rss_halves(samples: list[Sample], name: str) -> tuple[float, float]:
    """Peak RSS of ``name`` in the first and in the second half of ``samples``."""
    values = [s.rss[name] for s in samples if s.rss.get(name) is not None]
    if len(values) < 4:
        raise AssertionError(f"too few RSS samples of {name}: {len(values)}")
    half = len(values) // 2
    return max(values[:half]), max(values[half:])  # type: ignore[type-var]


def _rate(samples: list[Sample], attr: str) -> float:
    if len(samples) < 2 or samples[-1].t <= samples[0].t:
        return 0.0
    return (getattr(samples[-1], attr) - getattr(samples[0], attr)) / (
        samples[-1].t - samples[0].t
    )


def _between(samples: list[Sample], t0: float, t1: float) -> list[Sample]:
    return [s for s in samples if t0 <= s.t <= t1]


def scenario_slow_redis(
    cluster: FaultCluster, prefix: str, log_dir: Path, delay_s: float = 0.025,
    slow_s: float = 20.0, rate: float = 300, warm_s: float = 3.0, batch_size: int = 50,
) -> ScenarioResult:
    """The processor's Redis slowed by ``delay_s`` per chunk each way for ``slow_s`` under
    load, then fast again. ``recovery_s``: delay off -> the store has applied everything
    produced until that moment (the backlog drained)."""
    topics = make_topics(cluster.bootstrap, prefix)
    proxy = DelayProxy("127.0.0.1", cluster.cfg.redis_port).start()
    # the processor's store goes through the proxy; the checks read Redis directly
    slow = replace(cluster, redis_url=f"redis://127.0.0.1:{proxy.port}")
    load = Load(cluster.bootstrap, topics.events, rate)
    proc = Processor(slow, prefix, topics, log_dir, batch_size=batch_size)
    sampler = Sampler(cluster, prefix, topics, load, {"processor": proc.proc.pid})
    load.start()
    sampler.start()
    try:
        if wait_progress(cluster, prefix, topics, 0) == float("inf"):
            raise AssertionError(f"the processor never learned; log:\n{proc.log()}")
        time.sleep(warm_s)
        t_slow = time.monotonic()
        proxy.delay_s = delay_s
        time.sleep(slow_s)
        proxy.delay_s = 0.0
        t_fast = time.monotonic()
        produced_at_fast = load.produced
        recovery = wait_progress(cluster, prefix, topics, produced_at_fast - 1)
        time.sleep(2)
    finally:
        load.finish()
        samples = sampler.stop()
    result = check_ledger(cluster, prefix, topics, load, recovery)
    alive = proc.proc.poll() is None
    stats = proc.stop()
    proxy.close()
    warm = _between(samples, t_slow - warm_s, t_slow)
    during = _between(samples, t_slow, t_fast)
    after = [s for s in samples if s.t >= t_fast]
    first, second = rss_halves(during, "processor")
    rss_all = [s.rss["processor"] for s in samples if s.rss.get("processor")]
    result.extra.update(
        delay_ms=round(delay_s * 1000, 1),
        slow_s=slow_s,
        processor_survived=alive,
        learned_per_s_warm=round(_rate(warm, "applied")),
        learned_per_s_slow=round(_rate(during, "applied")),
        produced_per_s=round(_rate(during, "produced")),
        applied_during_slow=during[-1].applied - during[0].applied if during else 0,
        lag_start_slow=during[0].lag if during else 0,
        lag_max=max((s.lag for s in samples), default=0),
        lag_at_delay_off=during[-1].lag if during else 0,
        lag_end=after[-1].lag if after else None,
        peak_rss_mb=round(max(rss_all), 1),
        rss_slow_first_half_peak_mb=round(first, 1),
        rss_slow_second_half_peak_mb=round(second, 1),
        rss_end_mb=round(rss_all[-1], 1),
        proxy_chunks=proxy.chunks,
        write_retries=stats.get("write_retries"),
    )
    return result


def scenario_slow_teacher(
    cluster: FaultCluster, prefix: str, log_dir: Path, fit_delay_s: float = 5.0,
    every_s: float = 1.0, versions: int = 3, rate: float = 300, timeout_s: float = 120,
) -> ScenarioResult:
    """A processor and a teacher whose every training step first sleeps ``fit_delay_s``,
    under load until the teacher published ``versions`` versions. ``recovery_s`` is 0: the
    stream never stopped, so there is nothing to recover from."""
    topics = make_topics(cluster.bootstrap, prefix)
    state_dir = log_dir / f"teacher-state-{prefix}"
    load = Load(cluster.bootstrap, topics.events, rate)
    proc = Processor(cluster, prefix, topics, log_dir)
    teacher = Teacher(cluster, topics, prefix, state_dir, log_dir, every_s,
                      fit_delay_s=fit_delay_s)
    t_start = time.monotonic()
    sampler = Sampler(cluster, prefix, topics, load,
                      {"processor": proc.proc.pid, "teacher": teacher.proc.pid})
    load.start()
    sampler.start()
    try:
        deadline = time.monotonic() + timeout_s
        while _versions(cluster, prefix).get("teacher", 0) < versions:
            if time.monotonic() > deadline or teacher.proc.poll() is not None:
                raise AssertionError(f"teacher versions < {versions}; log:\n{teacher.log()}")
            time.sleep(0.2)
        time.sleep(1)
    finally:
        load.finish()
        samples = sampler.stop()
        teacher.kill()
    result = check_ledger(cluster, prefix, topics, load)
    stats = proc.stop()
    # stretches with no new teacher version (after the processor's first batch)
    started = [s for s in samples if s.applied > 0]
    stretches: list[list[Sample]] = []
    for s in started:
        if stretches and stretches[-1][-1].teacher == s.teacher:
            stretches[-1].append(s)
        else:
            stretches.append([s])
    longest = max(stretches, key=lambda st: st[-1].t - st[0].t) if stretches else []
    # memory: the processor from its first batch on, in halves; the teacher through its
    # first refresh (start-up, torch, one training) against every later refresh
    figures: dict[str, Any] = {}
    first, second = rss_halves(started, "processor")
    figures.update(processor_rss_first_half_peak_mb=round(first, 1),
                   processor_rss_second_half_peak_mb=round(second, 1))
    t_v1 = next((s.t for s in samples if s.teacher >= 1), samples[-1].t)
    through = [s.rss["teacher"] for s in samples if s.t <= t_v1 and s.rss.get("teacher")]
    later = [s.rss["teacher"] for s in samples if s.t > t_v1 and s.rss.get("teacher")]
    figures.update(teacher_rss_first_refresh_peak_mb=round(max(through, default=0.0), 1),
                   teacher_rss_later_peak_mb=round(max(later, default=0.0), 1))
    for name in ("processor", "teacher"):
        values = [s.rss[name] or 0.0 for s in samples if s.rss.get(name)]
        figures[f"{name}_peak_rss_mb"] = round(max(values, default=0.0), 1)
    # new versions: when each arrived (seconds after the teacher started)
    arrivals: list[float] = []
    for prev, s in itertools.pairwise(samples):
        if s.teacher > prev.teacher:
            arrivals.append(round(s.t - t_start, 1))
    no_label_s = longest[-1].t - longest[0].t if longest else 0.0
    result.extra.update(
        fit_delay_s=fit_delay_s,
        every_s=every_s,
        teacher_versions=max((s.teacher for s in samples), default=0),
        slow_fits=teacher.log().count("slow_teacher: fit delayed"),
        version_arrivals_s=arrivals,
        longest_without_new_labels_s=round(no_label_s, 1),
        produced_without_new_labels=longest[-1].produced - longest[0].produced if longest else 0,
        applied_without_new_labels=longest[-1].applied - longest[0].applied if longest else 0,
        lag_max=max((s.lag for s in started), default=0),
        soft_labels_applied=stats.get("soft_labels_applied"),
        **figures,
    )
    return result
