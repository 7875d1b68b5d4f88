"""Save and load a student as ``.npz`` arrays plus a JSON header (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kdstream.errors import StateError

from ._arrays import concat_aligned
from ._config import StudentConfig
from ._model import Student
from ._seen import SeenPairs

FORMAT_VERSION = 1
_ARRAYS = ("P", "Q", "C", "b", "gP", "gQ", "gC", "gb", "hist", "pos_w", "g_pos")


def save_student(student: Student, path: str | Path) -> Path:
    """Write ``path`` (.npz) and ``path`` with suffix .json; returns the .npz path."""
    path = Path(path).with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: getattr(student, name) for name in _ARRAYS}
    arrays["seen"] = student.seen.to_array()
    np.savez(path, **arrays)
    header = {
        "format_version": FORMAT_VERSION,
        "config": json.loads(student.config.to_json()),
        "n_users": student.n_users,
        "n_items": student.n_items,
        "step": student.step,
    }
    path.with_suffix(".json").write_text(json.dumps(header, indent=2, sort_keys=True))
    return path


def load_student(path: str | Path) -> Student:
    """Load a student written by :func:`save_student`."""
    path = Path(path).with_suffix(".npz")
    try:
        header = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read student header {path.with_suffix('.json')}: {exc}") from exc
    if header.get("format_version") != FORMAT_VERSION:
        raise StateError(
            f"student state {path}: format_version {header.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}"
        )
    student = Student(StudentConfig.from_dict(header["config"]))
    try:
        with np.load(path, allow_pickle=False) as data:
            for name in _ARRAYS:
                rows = name in ("P", "Q", "C")  # the tables the step gathers rows from
                setattr(student, name, concat_aligned([data[name]]) if rows else data[name].copy())
            student.seen = SeenPairs.from_array(data["seen"])
    except (OSError, KeyError, ValueError) as exc:
        raise StateError(f"cannot read student arrays {path}: {exc}") from exc
    student.n_users = int(header["n_users"])
    student.n_items = int(header["n_items"])
    student.step = int(header["step"])
    student.check_finite()
    return student


__all__ = ["load_student", "save_student"]
