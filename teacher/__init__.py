"""The PyTorch teacher: a SASRec model retrained on event windows that emits soft labels.

``import kdstream.teacher`` stays light: torch is imported only when ``SASRecTeacher`` (or
``run_job``'s teacher) is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import FitReport, TeacherConfig
from ._policy import RefreshPolicy
from ._worker import TeacherJob, TeacherResult, TeacherWorker, run_job

if TYPE_CHECKING:
    from ._trainer import SASRecTeacher

__all__ = [
    "FitReport",
    "RefreshPolicy",
    "SASRecTeacher",
    "TeacherConfig",
    "TeacherJob",
    "TeacherResult",
    "TeacherWorker",
    "run_job",
]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not import torch.
    if name == "SASRecTeacher":
        from ._trainer import SASRecTeacher

        return SASRecTeacher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
