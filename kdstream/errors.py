"""kdstream's exceptions.

::

    KdstreamError
    ├── ConfigError          a setting has a bad value (names the setting and the value)
    ├── DecodeError          a record failed validation (names the field and what was expected)
    ├── ModelError           a model reached an invalid state (e.g. non-finite weights)
    ├── StateError           saved state is missing, corrupt or of another version
    └── ServiceError         a broker, store or process could not be reached or started
"""

from __future__ import annotations


class KdstreamError(Exception):
    """Base class of every error kdstream raises on purpose."""


class ConfigError(KdstreamError, ValueError):
    """A setting or argument has a value outside its documented range."""


class DecodeError(KdstreamError, ValueError):
    """A record (event, soft labels) failed decoding or validation.

    ``field`` names the offending field ("" when the record as a whole is bad).
    """

    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class ModelError(KdstreamError, RuntimeError):
    """A model reached a state it must not serve from (NaN or infinite weights)."""


class StateError(KdstreamError, RuntimeError):
    """Saved model state is missing, corrupt, or was written by an incompatible version."""


class ServiceError(KdstreamError, RuntimeError):
    """An external service (Kafka, Redis, a child process) failed or could not be reached."""


__all__ = [
    "ConfigError",
    "DecodeError",
    "KdstreamError",
    "ModelError",
    "ServiceError",
    "StateError",
]
