"""A bounded Kafka login check that names an authentication failure as such.

kafka-python logs a rejected SASL login (``SaslAuthenticationFailedError``) and then raises a
misleading ``IncompatibleBrokerVersion`` ("broker does not support MetadataRequest_v0") from
its version probe, or a producer waits ``max_block_ms`` for metadata. Clients with SASL
settings therefore call :func:`check_kafka_login` first: one admin connection with a short
timeout, whose failure is raised as a :class:`~kdstream.errors.ServiceError` that says
"authentication failed" and carries the broker's reason, never the password.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kdstream.errors import ServiceError

from ._kafka_admin import bootstrap_servers

_AUTH_MARKERS = ("SaslAuthenticationFailed", "Authentication failed", "UnsupportedSaslMechanism")


class _AuthErrors(logging.Handler):
    """Collects kafka-python's log lines about a failed SASL login."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record must not break the probe
            return
        if any(marker in text for marker in _AUTH_MARKERS):
            # "<BrokerConnection ...>: SaslAuthenticate error: X (reason)": keep the reason
            self.reasons.append(text.rsplit(">: ", 1)[-1])


def check_kafka_login(
    bootstrap: str, security: Mapping[str, Any] | None, *, timeout_s: float = 10.0
) -> None:
    """Connect once with ``security`` (kafka-python kwargs) and raise if Kafka refuses it.

    Does nothing for a PLAINTEXT connection (empty ``security``). Raises ServiceError with
    "Kafka authentication failed" (user, mechanism and the broker's reason) when the broker
    rejects the login, or "cannot reach Kafka" for any other failure within ``timeout_s``.
    """
    if not security or not str(security.get("security_protocol", "")).startswith("SASL_"):
        return
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    servers = bootstrap_servers(bootstrap)
    handler = _AuthErrors()
    conn_log = logging.getLogger("kafka.conn")
    conn_log.addHandler(handler)
    admin = None
    error: Exception | None = None
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=servers,
            client_id="kdstream-login-check",
            request_timeout_ms=int(timeout_s * 1000),
            **security,
        )
        admin.describe_cluster()
    except (KafkaError, OSError, ValueError) as exc:
        error = exc
    finally:
        conn_log.removeHandler(handler)
        if admin is not None:
            admin.close()
    user = security.get("sasl_plain_username")
    mechanism = security.get("sasl_mechanism")
    if handler.reasons:
        raise ServiceError(
            f"Kafka authentication failed for user {user!r} (SASL {mechanism}) at {servers}: "
            f"{handler.reasons[0]}"
        )
    if error is not None:
        raise ServiceError(
            f"cannot reach Kafka at {servers} with SASL {mechanism} as {user!r}: "
            f"{type(error).__name__}: {error}"
        )


__all__ = ["check_kafka_login"]
