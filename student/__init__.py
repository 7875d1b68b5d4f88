"""The online student model: numpy with an optional compiled step, no I/O."""

from ._config import StudentConfig
from ._model import SoftTargets, Student
from ._seen import SeenPairs
from ._state import load_student, save_student

__all__ = ["SeenPairs", "SoftTargets", "Student", "StudentConfig", "load_student", "save_student"]
