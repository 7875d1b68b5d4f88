"""Scenario 6, embedded runtime: a teacher that never finishes its refresh.

``EmbeddedPipeline`` (production mode, ``deterministic=False``) runs the teacher on a
background thread. Here its ``fit`` blocks on an event the test holds, so the teacher is
"infinitely slow" without any timing: the event path must keep learning, and whatever holds
events for the teacher must stay bounded by the teacher's window.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kdstream.stream import Event
from kdstream.stream._runtime import EmbeddedPipeline, PipelineConfig
from kdstream.teacher import RefreshPolicy, TeacherConfig

BATCH = 50
WINDOW = 200
N_EVENTS = 5_000


@pytest.fixture
def blocked_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Make ``SASRecTeacher.fit`` wait until the test releases it (or 120 s, a hang guard)."""
    from kdstream.teacher import _trainer

    release = threading.Event()
    state: dict[str, Any] = {"release": release, "fits": 0}
    original = _trainer.SASRecTeacher.fit

    def slow_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        state["fits"] += 1
        release.wait(120)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_trainer.SASRecTeacher, "fit", slow_fit)
    yield state
    release.set()


def _pipeline() -> EmbeddedPipeline:
    cfg = PipelineConfig(
        batch_size=BATCH,
        deterministic=False,
        variants=("student+kd",),
        transition_items=0,
        refresh=RefreshPolicy(every_events=100, min_events=100),
        teacher=TeacherConfig(dim=8, max_len=4, epochs=1, top_m=2, device="cpu",
                              window_events=WINDOW),
    )
    pipe = EmbeddedPipeline(cfg)
    pipe.produce(Event(f"u{i % 50}", f"i{(i * 7) % 40}", "click", 1.7e9 + i)
                 for i in range(N_EVENTS))
    return pipe


def _drain(pipe: EmbeddedPipeline, window_sizes: list[int]) -> None:
    while pipe.step() > 0:
        window_sizes.append(sum(len(a) for a in pipe._window_users))


def _run_blocked(pipe: EmbeddedPipeline, blocked_teacher: dict[str, Any]) -> list[int]:
    """Drain the topic on a thread while the teacher is blocked; the window sizes seen."""
    sizes: list[int] = []
    runner = threading.Thread(target=_drain, args=(pipe, sizes), daemon=True)
    runner.start()
    runner.join(120)  # a hang guard, not a timing assertion
    assert not runner.is_alive(), "the event path blocked on the slow teacher"
    return sizes


def test_slow_teacher_never_blocks_the_embedded_event_path(
    blocked_teacher: dict[str, Any],
) -> None:
    pipe = _pipeline()
    try:
        _run_blocked(pipe, blocked_teacher)
        assert pipe.stats.events == N_EVENTS  # every event learned while the teacher trained
        assert blocked_teacher["fits"] == 1  # one refresh started, still running
        assert pipe._worker is not None and pipe._worker.busy
        assert pipe.stats.soft_labels_applied == 0 and pipe.stats.teacher_refreshes == 0
        learner = pipe.learner()
        assert np.isfinite(learner.student.P[: len(pipe.prequential.users)]).all()
    finally:
        blocked_teacher["release"].set()
        pipe.close()
    # once it finishes, its labels arrive and apply
    pipe.step()
    assert pipe.stats.teacher_refreshes == 1


def test_slow_teacher_window_stays_bounded(blocked_teacher: dict[str, Any]) -> None:
    pipe = _pipeline()
    try:
        sizes = _run_blocked(pipe, blocked_teacher)
        # the teacher only ever trains on the last WINDOW events: keeping more is a leak
        assert max(sizes) <= 2 * WINDOW + BATCH, max(sizes)
    finally:
        blocked_teacher["release"].set()
        pipe.close()
