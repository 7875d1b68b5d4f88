"""Settings of the serving API (limits, auth, cold start, health thresholds)."""

from __future__ import annotations

from dataclasses import dataclass

from kdstream.errors import ConfigError


@dataclass(frozen=True, repr=False)
class ApiSettings:
    """What the HTTP layer enforces and how the services answer.

    Parameters
    ----------
    host, port
        Where ``kdstream api`` listens (loopback by default: nothing is exposed by accident).
    token
        Bearer token that ``POST`` endpoints require when set (``None`` = open). It also
        grants reads.
    read_token
        Bearer token that ``GET`` endpoints require when set, except ``/healthz`` and
        ``/metrics`` (probes and scrapers carry no token) and the static dashboard page and
        OpenAPI documents (they hold no data). ``None`` = reads are open.
    max_body_bytes
        Largest accepted request body; larger ones get 413.
    max_k
        Largest ``k`` of a recommendation request (``1 <= k <= max_k``, else 422).
    max_records
        Most records in one ``POST /v1/events``; more get 413.
    cold_start_half_life_s
        Half-life (event time) of the popularity that unknown users get.
    teacher_stale_s
        A teacher older than this (wall seconds since its last refresh) makes ``/healthz``
        report ``degraded``.
    learner
        Which student variant serves (``student+kd`` falls back to ``student``).

    Examples
    --------
    >>> ApiSettings(max_k=50).max_k
    50
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    read_token: str | None = None
    max_body_bytes: int = 1 << 20
    max_k: int = 1000
    max_records: int = 10_000
    cold_start_half_life_s: float = 3_600.0
    teacher_stale_s: float = 3_600.0
    learner: str = "student+kd"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65_535:
            raise ConfigError(f"ApiSettings.port: expected 0..65535, got {self.port!r}")
        for name in ("max_body_bytes", "max_k", "max_records"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ApiSettings.{name}: expected an integer >= 1, got {value!r}")
        for name in ("cold_start_half_life_s", "teacher_stale_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ApiSettings.{name}: expected > 0, got {getattr(self, name)!r}")
        for name in ("token", "read_token"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"ApiSettings.{name}: expected a non-empty string or None")

    def __repr__(self) -> str:
        # the tokens are secrets: never in a log line or a traceback
        shown = {
            "token": None if self.token is None else "***",
            "read_token": None if self.read_token is None else "***",
        }
        body = ", ".join(
            f"{k}={shown.get(k, v)!r}" for k, v in self.__dict__.items()
        )
        return f"ApiSettings({body})"


__all__ = ["ApiSettings"]
