"""TeacherWorker: refreshes the teacher in a background thread so the stream never waits."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kdstream.errors import StateError

from ._config import FitReport

if TYPE_CHECKING:
    from ._trainer import SASRecTeacher

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherJob:
    """One refresh: a training window and what to label afterwards.

    Parameters
    ----------
    users, items : int32 arrays
        The training window, oldest event first.
    n_items : int
        Catalogue size at the end of the window.
    histories_for : dict[int, int array]
        User index -> that user's full history (time order), for each user to label.
    trained_until : float
        Event time of the window's last event, carried into the soft labels.
    transition_items : int array or None
        Items to emit transition (next-item) labels for; ``None`` skips them.
    """

    users: npt.NDArray[np.int32]
    items: npt.NDArray[np.int32]
    n_items: int
    histories_for: dict[int, npt.NDArray[np.int32]]
    trained_until: float
    transition_items: npt.NDArray[np.int32] | None = None

    @classmethod
    def from_window(
        cls,
        users: npt.NDArray[np.integer],
        items: npt.NDArray[np.integer],
        *,
        n_items: int,
        trained_until: float,
        max_len: int,
        transition_items: int,
    ) -> TeacherJob:
        """The job for a window (time order): every user of the window is labelled from its
        last ``max_len`` window items, and the ``transition_items`` most frequent items of the
        window get transition labels (0: none)."""
        order = np.argsort(users, kind="stable")
        su, si = users[order], items[order]
        cuts = np.flatnonzero(np.diff(su)) + 1
        histories = {
            int(g_users[0]): g_items[-max_len:].astype(np.int32)
            for g_users, g_items in zip(np.split(su, cuts), np.split(si, cuts), strict=True)
        }
        trans = None
        if transition_items:
            counts = np.bincount(items, minlength=n_items)
            top = np.argsort(-counts, kind="stable")[:transition_items]
            trans = top[counts[top] > 0].astype(np.int32)
        return cls(
            users=users.astype(np.int32),
            items=items.astype(np.int32),
            n_items=n_items,
            histories_for=histories,
            trained_until=trained_until,
            transition_items=trans,
        )


@dataclass(frozen=True)
class TeacherResult:
    """Soft labels of one refresh.

    Parameters
    ----------
    version : int
        Teacher version that produced the labels.
    trained_until : float
        Copied from the job.
    user_idx : (U,) int32
        Labelled users, in ``histories_for`` order.
    user_items, user_logits : (U, M) int32 / float32
        Each user's top-M items (history excluded; -1 / -inf pad a short tail) and logits.
    trans_idx : (I,) int32 or None
        Items with transition labels.
    trans_items, trans_logits : (I, M) int32 / float32 or None
        Top-M next items after each of ``trans_idx`` and their logits.
    temperature : float
        Distillation temperature to apply to the logits.
    fit : FitReport
        Report of the training step.
    seconds : float
        Wall-clock seconds of the whole job (training + labelling).
    """

    version: int
    trained_until: float
    user_idx: npt.NDArray[np.int32]
    user_items: npt.NDArray[np.int32]
    user_logits: npt.NDArray[np.float32]
    trans_idx: npt.NDArray[np.int32] | None
    trans_items: npt.NDArray[np.int32] | None
    trans_logits: npt.NDArray[np.float32] | None
    temperature: float
    fit: FitReport
    seconds: float = field(default=0.0)


def run_job(teacher: SASRecTeacher, job: TeacherJob) -> TeacherResult:
    """Run one refresh synchronously: fit, then label users and items."""
    start = time.perf_counter()
    report = teacher.fit(job.users, job.items, job.n_items)
    if teacher.version == 0:
        raise StateError("the teacher could not train on this window (too few events)")
    m = teacher.config.top_m
    user_idx = np.fromiter(job.histories_for.keys(), dtype=np.int32, count=len(job.histories_for))
    if len(user_idx):
        user_items, user_logits = teacher.user_soft_labels(list(job.histories_for.values()), m=m)
    else:
        user_items = np.zeros((0, m), dtype=np.int32)
        user_logits = np.zeros((0, m), dtype=np.float32)
    trans_idx = trans_items = trans_logits = None
    if job.transition_items is not None:
        trans_idx = np.asarray(job.transition_items, dtype=np.int32)
        trans_idx = trans_idx[(trans_idx >= 0) & (trans_idx < teacher.n_items)]
        trans_items, trans_logits = teacher.transition_soft_labels(trans_idx, m=m)
    return TeacherResult(
        version=teacher.version,
        trained_until=job.trained_until,
        user_idx=user_idx,
        user_items=user_items,
        user_logits=user_logits,
        trans_idx=trans_idx,
        trans_items=trans_items,
        trans_logits=trans_logits,
        temperature=teacher.config.temperature,
        fit=report,
        seconds=time.perf_counter() - start,
    )


class TeacherWorker:
    """Run teacher refreshes one at a time on a background thread.

    ``submit`` never blocks: while a refresh runs it refuses the job (the caller retries at
    its next opportunity with a fresher window). Results arrive through ``on_result``, called
    on the worker thread; failures go to ``on_error`` (default: log) and are kept in
    ``last_error`` — a failed refresh never stops the stream.

    Parameters
    ----------
    teacher : SASRecTeacher
        The teacher to refresh; do not use it from other threads while ``busy``.
    on_result : callable
        Receives each ``TeacherResult``.
    on_error : callable, optional
        Receives the exception of a failed refresh.

    Examples
    --------
    >>> import numpy as np
    >>> from kdstream.teacher import SASRecTeacher, TeacherConfig
    >>> teacher = SASRecTeacher(TeacherConfig(dim=8, max_len=4, epochs=1, top_m=2, device="cpu"))
    >>> results = []
    >>> worker = TeacherWorker(teacher, results.append)
    >>> items = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    >>> users = np.array([0, 0, 0, 1, 1, 1], dtype=np.int32)
    >>> job = TeacherJob(users, items, 3, {0: items[:3]}, trained_until=6.0)
    >>> worker.submit(job)
    True
    >>> worker.join(timeout=30)
    True
    >>> results[0].version, results[0].user_items.shape
    (1, (1, 2))
    >>> worker.close()
    """

    def __init__(
        self,
        teacher: SASRecTeacher,
        on_result: Callable[[TeacherResult], None],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.teacher = teacher
        self._on_result = on_result
        self._on_error = on_error
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.last_error: BaseException | None = None

    @property
    def busy(self) -> bool:
        """Whether a refresh is running."""
        return not self._idle.is_set()

    def submit(self, job: TeacherJob) -> bool:
        """Start a refresh on a new thread; ``False`` (nothing queued) if one is running."""
        with self._lock:
            if self._closed:
                raise StateError("TeacherWorker is closed")
            if not self._idle.is_set():
                return False
            self._idle.clear()
            self._thread = threading.Thread(
                target=self._run, args=(job,), name="kdstream-teacher", daemon=True
            )
            self._thread.start()
            return True

    def _run(self, job: TeacherJob) -> None:
        try:
            result = run_job(self.teacher, job)
            self._on_result(result)
        except Exception as exc:  # a failed refresh must not kill the stream
            self.last_error = exc
            if self._on_error is not None:
                self._on_error(exc)
            else:
                _log.exception("teacher refresh failed")
        finally:
            self._idle.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the running refresh; ``True`` when idle (``False`` on timeout)."""
        return self._idle.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs and wait for the running one."""
        with self._lock:
            self._closed = True
        self.join(timeout)
