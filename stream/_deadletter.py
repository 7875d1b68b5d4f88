"""Dead letters: records that failed decoding, kept with their raw bytes and the reason.

A bad record never stops the stream (ARCHITECTURE.md, "Wire formats"): the processor wraps it
in a :class:`DeadLetter` and publishes ``to_bytes()`` on the DLQ topic, so counts of learned plus
dead-lettered events always add up to the events consumed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
from dataclasses import dataclass
from typing import Any

from kdstream.errors import DecodeError

#: Default name of the dead-letter topic (the ``dlq_topic`` setting's default).
DEFAULT_DLQ_TOPIC = "kd.events.dlq"

#: At most this many characters of the raw record are kept as a readable preview.
PREVIEW_CHARS = 1024

_FIELDS = frozenset(
    {"raw_b64", "preview", "reason", "field", "source", "partition", "offset", "ts"}
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be decoded, with where it came from and why it failed.

    Parameters
    ----------
    raw
        The record's bytes exactly as consumed.
    reason
        Human-readable reason (the ``DecodeError`` message, or ``"internal: <type>: <msg>"``).
    field
        The offending field, ``""`` when the record as a whole is bad.
    source
        Where the record came from, typically the topic name.
    partition, offset
        Its position in the source topic, when known.
    ts
        When it was dead-lettered (epoch seconds; passed in by the caller).

    Examples
    --------
    >>> dl = DeadLetter(b'{"user": 1', "not JSON", source="kd.events", partition=0, offset=7)
    >>> DeadLetter.from_bytes(dl.to_bytes()) == dl
    True
    """

    raw: bytes
    reason: str
    field: str = ""
    source: str = ""
    partition: int | None = None
    offset: int | None = None
    ts: float = 0.0

    def to_bytes(self) -> bytes:
        """JSON with the raw bytes in base64 plus, when they are UTF-8, a truncated preview."""
        doc: dict[str, Any] = {
            "raw_b64": base64.b64encode(self.raw).decode("ascii"),
            "reason": self.reason,
            "field": self.field,
            "source": self.source,
            "partition": self.partition,
            "offset": self.offset,
            "ts": self.ts,
        }
        with contextlib.suppress(UnicodeDecodeError):  # binary garbage: base64 alone keeps it
            doc["preview"] = self.raw.decode("utf-8")[:PREVIEW_CHARS]
        # ensure_ascii: reasons may quote lone surrogates that UTF-8 cannot encode
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> DeadLetter:
        """Parse what :meth:`to_bytes` wrote; raises ``DecodeError`` on anything else."""
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"dead letter is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise DecodeError(f"dead letter: expected a JSON object, got {type(doc).__name__}")
        unknown = sorted(set(doc) - _FIELDS)
        if unknown:
            raise DecodeError(f"dead letter: unknown fields {unknown}", unknown[0])
        try:
            raw = base64.b64decode(doc["raw_b64"], validate=True)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise DecodeError("dead letter: expected base64 string", "raw_b64") from exc
        for name in ("reason", "field", "source"):
            if not isinstance(doc.get(name, ""), str):
                raise DecodeError(f"dead letter: field {name!r}: expected string", name)
        for name in ("partition", "offset"):
            value = doc.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise DecodeError(f"dead letter: field {name!r}: expected integer or null", name)
        ts = doc.get("ts", 0.0)
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            raise DecodeError("dead letter: field 'ts': expected finite number", "ts")
        return cls(
            raw=raw,
            reason=doc.get("reason", ""),
            field=doc.get("field", ""),
            source=doc.get("source", ""),
            partition=doc.get("partition"),
            offset=doc.get("offset"),
            ts=float(ts),
        )


__all__ = ["DEFAULT_DLQ_TOPIC", "DeadLetter"]
