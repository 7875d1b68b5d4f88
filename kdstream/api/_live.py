"""The live embedded runtime behind ``kdstream api --demo``: config, service, synthetic feed."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from kdstream.replay import SyntheticConfig, generate
from kdstream.stream import Event
from kdstream.stream._runtime import EmbeddedPipeline, PipelineConfig
from kdstream.teacher import RefreshPolicy

from ._service import EmbeddedServingService
from ._settings import ApiSettings


def live_config(
    seed: int = 0,
    variants: tuple[str, ...] = ("popularity", "student", "student+kd"),
    teacher_every_events: int = 20_000,
    teacher_every_s: float | None = 120.0,
) -> PipelineConfig:
    """A pipeline for serving: never waits for the teacher (``deterministic=False``)."""
    base = PipelineConfig()
    return replace(
        base,
        deterministic=False,
        variants=variants,
        refresh=RefreshPolicy(
            every_events=teacher_every_events,
            every_seconds=teacher_every_s,
            min_events=min(1_000, teacher_every_events),
        ),
        teacher=replace(base.teacher, seed=seed, epochs=2, time_budget_s=20.0),
        student=replace(base.student, seed=seed),
        learner=replace(base.learner, seed=seed),
    )


def build_embedded_service(
    settings: ApiSettings | None = None, config: PipelineConfig | None = None
) -> EmbeddedServingService:
    """An :class:`EmbeddedServingService` over a fresh pipeline (its loop not yet started)."""
    return EmbeddedServingService(EmbeddedPipeline(config or live_config()), settings)


class SyntheticFeeder:
    """Produces synthetic events, re-stamped with the wall clock, at ``rate`` events/s.

    Parameters
    ----------
    service
        Where the events go (its pipeline's events topic).
    rate
        Events per second (sent in bursts every 50 ms).
    n_items, n_users, seed
        Shape of the synthetic stream; it loops when exhausted.
    """

    def __init__(
        self,
        service: EmbeddedServingService,
        rate: float = 500.0,
        n_items: int = 2_000,
        n_users: int = 5_000,
        seed: int = 0,
        n_events: int = 200_000,
    ) -> None:
        self.service = service
        self.rate = rate
        cols = generate(
            SyntheticConfig(n_events=n_events, n_items=n_items, n_users=n_users, seed=seed)
        )
        self._events = cols.to_events()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kdstream-feeder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        pipeline = self.service.pipeline
        start = time.monotonic()
        i = 0
        while not self._stop.wait(0.05):
            due = int((time.monotonic() - start) * self.rate) - self.sent
            if due <= 0:
                continue
            now = time.time()
            batch: list[Event] = []
            for _ in range(due):
                e = self._events[i % len(self._events)]
                batch.append(Event(e.user, e.item, e.type, now, e.value))
                i += 1
            self.sent += pipeline.produce(batch)


__all__ = ["SyntheticFeeder", "build_embedded_service", "live_config"]
