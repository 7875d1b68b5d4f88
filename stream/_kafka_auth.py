"""A bounded Kafka login check that names an authentication failure as such.

kafka-python logs a rejected SASL login (``SaslAuthenticationFailedError``) and then raises a
misleading ``IncompatibleBrokerVersion`` ("broker does not support MetadataRequest_v0") from
its version probe, or a producer waits ``max_block_ms`` for metadata. Clients with SASL
settings therefore call :func:`check_kafka_login` first: one admin connection with a short
timeout, whose failure is raised as a :class:`~kdstream.errors.ServiceError` that says
"authentication failed" and carries the broker's reason, never the password.

TLS (``SSL`` / ``SASL_SSL``) is checked the same way: a broker certificate the client's CA
does not verify raises a bare ``ssl.SSLCertVerificationError`` traceback from deep inside
kafka-python, and a TLS client pointed at a plaintext port sees only ``NoBrokersAvailable``;
both are reported as "Kafka TLS ... failed" with the reason and the CA file to check. A broker
that requires a client certificate (mutual TLS) answers a client without one, or with one it does
not trust, with a bare TLS alert ("SSLV3_ALERT_BAD_CERTIFICATE"); that is reported as the missing
``kafka_ssl_certfile`` / ``kafka_ssl_keyfile``, or as the rejected certificate file.

:func:`kafka_ssl_context` builds the one TLS context every kafka-python client gets: TLS 1.3
is off by default, as kafka-python (2.3.x) drops a TLS 1.3 connection when the broker's
post-handshake session ticket arrives with no request in flight ("Socket EVENT_READ without
in-flight-requests"; dpkp/kafka-python#2160, #2369); TLS 1.2 delivers the ticket inside
the handshake.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any

from kdstream.errors import ConfigError, ServiceError

from ._kafka_admin import bootstrap_servers

_AUTH_MARKERS = ("SaslAuthenticationFailed", "Authentication failed", "UnsupportedSaslMechanism")
#: kafka-python's warning when the peer drops the connection mid-handshake (not a TLS port?)
_TLS_CLOSED_MARKER = "SSL connection closed by server during handshake"
#: TLS alerts a broker sends when it requires a client certificate and gets none (Java sends
#: bad_certificate under TLS 1.2 and 1.3; TLS 1.3 defines certificate_required for it)
_NO_CLIENT_CERT_ALERTS = frozenset({
    "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
})  # fmt: skip
#: TLS alerts a broker sends about a client certificate it was given and does not accept
_CLIENT_CERT_REJECTED_ALERTS = frozenset({
    "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED", "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
})  # fmt: skip


class _AuthErrors(logging.Handler):
    """Collects kafka-python's log lines about a failed SASL login."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: list[str] = []
        self.tls_closed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record must not break the probe
            return
        if _TLS_CLOSED_MARKER in text:
            self.tls_closed = True
        if record.levelno >= logging.ERROR and any(marker in text for marker in _AUTH_MARKERS):
            # "<BrokerConnection ...>: SaslAuthenticate error: X (reason)": keep the reason
            self.reasons.append(text.rsplit(">: ", 1)[-1])


#: ``kafka_ssl_max_tls`` values -> the highest TLS version a client offers
KAFKA_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def kafka_ssl_context(
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    *,
    password: str | None = None,
    max_tls: str = "1.2",
) -> ssl.SSLContext:
    """The TLS context of kafka-python clients (its ``ssl_context`` argument).

    Verifies the broker's certificate against ``cafile`` (else the system's CAs) and its
    host name, as kafka-python's own context does (``ssl_check_hostname`` defaults to True),
    presents ``certfile``/``keyfile`` (decrypted with ``password``) for mutual TLS, and offers
    TLS 1.2 at most unless ``max_tls="1.3"`` (see the module docstring). Building it here also
    avoids kafka-python's own context, made with the deprecated ``ssl.PROTOCOL_TLS``. Raises
    ConfigError naming the ``kafka_ssl_*`` setting whose file cannot be loaded.
    """
    if max_tls not in KAFKA_TLS_VERSIONS:
        raise ConfigError(
            f"kafka_ssl_max_tls: expected one of {', '.join(KAFKA_TLS_VERSIONS)}, got {max_tls!r}"
        )
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"kafka_ssl_cafile: cannot load {cafile!r}: {exc}") from None
    context.maximum_version = KAFKA_TLS_VERSIONS[max_tls]
    if certfile is not None:
        try:
            # a callable, never None: None makes OpenSSL prompt on the terminal for an
            # encrypted key, which would hang a service
            context.load_cert_chain(certfile, keyfile, password=lambda: password or "")
        except (ssl.SSLError, OSError) as exc:
            names = "kafka_ssl_certfile" + (" / kafka_ssl_keyfile" if keyfile else "")
            # exc names the file and OpenSSL's reason, never the password
            raise ConfigError(f"{names}: cannot load {certfile!r}: {exc}") from None
    return context


def check_kafka_login(
    bootstrap: str, security: Mapping[str, Any] | None, *, timeout_s: float = 10.0
) -> None:
    """Connect once with ``security`` (kafka-python kwargs) and raise if Kafka refuses it.

    Does nothing for a PLAINTEXT connection (empty ``security``). Raises ServiceError with
    "Kafka authentication failed" (user, mechanism and the broker's reason) when the broker
    rejects the login; "Kafka TLS certificate verification failed" when the CA (``ssl_cafile``,
    else the system's) does not verify the broker's certificate or its name; "Kafka TLS
    handshake failed" for another TLS failure, such as a plaintext port, a broker that requires
    a client certificate when ``ssl_certfile`` is unset, or one that rejects ``ssl_certfile``;
    or "cannot reach Kafka" for any other failure within ``timeout_s``.
    """
    protocol = str((security or {}).get("security_protocol", "PLAINTEXT"))
    if not security or protocol == "PLAINTEXT":
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
    _raise_tls_failure(servers, protocol, security, error, handler.tls_closed)
    if not protocol.startswith("SASL_"):
        if error is not None:
            raise ServiceError(
                f"cannot reach Kafka at {servers} with {protocol}: {type(error).__name__}: {error}"
            )
        return
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


def _raise_tls_failure(
    servers: list[str],
    protocol: str,
    security: Mapping[str, Any],
    error: Exception | None,
    closed: bool,
) -> None:
    if protocol not in ("SSL", "SASL_SSL") or error is None:
        return
    cafile, certfile = security.get("ssl_cafile"), security.get("ssl_certfile")
    trust = f"the CA file {cafile}" if cafile else "the system's CAs (no ssl_cafile set)"
    if isinstance(error, ssl.SSLCertVerificationError):
        # verify_message: "self-signed certificate in certificate chain", "Hostname mismatch, ..."
        reason = error.verify_message or str(error)
        raise ServiceError(
            f"Kafka TLS certificate verification failed at {servers}: {reason}; the broker's "
            f"certificate is not trusted by {trust} (KDSTREAM_KAFKA_SSL_CAFILE)"
        ) from None
    if isinstance(error, ssl.SSLError):
        if not certfile and error.reason in _NO_CLIENT_CERT_ALERTS:
            raise ServiceError(
                f"Kafka TLS handshake failed at {servers}: the broker requires a client "
                "certificate and none is set (kafka_ssl_certfile / kafka_ssl_keyfile, env "
                f"KDSTREAM_KAFKA_SSL_CERTFILE / KDSTREAM_KAFKA_SSL_KEYFILE; {error.reason})"
            ) from None
        if certfile and error.reason in _CLIENT_CERT_REJECTED_ALERTS:
            raise ServiceError(
                f"Kafka TLS handshake failed at {servers}: the broker rejected the client "
                f"certificate {certfile} ({error.reason}); it must be signed by a CA the broker "
                "trusts, unexpired and made for client authentication (kafka_ssl_certfile)"
            ) from None
        raise ServiceError(
            f"Kafka TLS handshake failed at {servers}: {error.reason or error}"
        ) from None
    if closed:
        raise ServiceError(
            f"Kafka TLS handshake failed at {servers}: the broker closed the connection during "
            f"the handshake; is this a TLS ({protocol}) listener and not a PLAINTEXT one? "
            f"({type(error).__name__})"
        ) from None


__all__ = ["KAFKA_TLS_VERSIONS", "check_kafka_login", "kafka_ssl_context"]
