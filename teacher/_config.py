"""The teacher's validated configuration and its fit report (no torch import here)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from kdstream.errors import ConfigError

_DEVICES = ("auto", "cpu", "cuda")


def _require(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"TeacherConfig.{name} must be {expected}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class TeacherConfig:
    """Settings of the SASRec teacher: architecture, training budget and soft labels.

    Parameters
    ----------
    dim : int
        Width of the item and position embeddings and of every block.
    n_layers : int
        Number of pre-LN transformer blocks.
    n_heads : int
        Attention heads per block; must divide ``dim``.
    max_len : int
        Longest history the model reads (older events are cut off).
    dropout : float
        Dropout rate in [0, 1) on embeddings, attention and feed-forward outputs.
    lr : float
        Adam learning rate.
    weight_decay : float
        AdamW weight decay (0 = plain Adam).
    batch_size : int
        Training sequences per step.
    epochs : int
        Maximum epochs per refresh ...
    time_budget_s : float
        ... and the wall-clock cap per refresh, whichever comes first.
    top_m : int
        Soft labels emitted per user and per item.
    temperature : float
        Distillation temperature carried with the soft labels (the logits stay raw).
    window_events : int
        Train on at most the last ``window_events`` events passed to ``fit``.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    num_threads : int
        Torch CPU threads; keep it low so the student keeps a core.
    seed : int
        Seed of weight initialisation, shuffling and dropout.

    Examples
    --------
    >>> cfg = TeacherConfig(dim=32, epochs=5)
    >>> TeacherConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> TeacherConfig(n_heads=3)
    Traceback (most recent call last):
    ...
    kdstream.errors.ConfigError: TeacherConfig.n_heads must be a positive divisor of dim=64, got 3
    """

    dim: int = 64
    n_layers: int = 2
    n_heads: int = 1
    max_len: int = 50
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 20
    time_budget_s: float = 30.0
    top_m: int = 50
    temperature: float = 2.0
    window_events: int = 100_000
    device: str = "auto"
    num_threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "max_len", "batch_size", "epochs", "top_m", "num_threads"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 1, name, value, "an int >= 1")
        _require(
            _is_int(self.n_heads) and self.n_heads >= 1 and self.dim % self.n_heads == 0,
            "n_heads",
            self.n_heads,
            f"a positive divisor of dim={self.dim}",
        )
        _require(
            _is_real(self.dropout) and 0.0 <= self.dropout < 1.0,
            "dropout",
            self.dropout,
            "a float in [0, 1)",
        )
        for name in ("lr", "time_budget_s", "temperature"):
            value = getattr(self, name)
            _require(_is_real(value) and value > 0, name, value, "a finite float > 0")
        _require(
            _is_real(self.weight_decay) and self.weight_decay >= 0,
            "weight_decay",
            self.weight_decay,
            "a finite float >= 0",
        )
        _require(
            _is_int(self.window_events) and self.window_events >= 2,
            "window_events",
            self.window_events,
            "an int >= 2",
        )
        _require(self.device in _DEVICES, "device", self.device, f"one of {_DEVICES}")
        _require(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an int >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherConfig:
        """Build (and validate) a config from ``to_dict`` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"TeacherConfig got unknown fields {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class FitReport:
    """What one ``SASRecTeacher.fit`` did.

    Parameters
    ----------
    version : int
        Teacher version after the fit (unchanged when the fit was a no-op).
    epochs : int
        Epochs run (0 for a no-op); the last one may be partial when the time budget ran out.
    seconds : float
        Wall-clock seconds of the fit.
    final_loss : float
        Mean cross-entropy of the last epoch (NaN when nothing was trained).
    n_events : int
        Events in the training window.
    n_users : int
        Distinct users in the window.
    device : str
        Device the fit ran on.
    """

    version: int
    epochs: int
    seconds: float
    final_loss: float
    n_events: int
    n_users: int
    device: str
