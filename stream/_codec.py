"""Strict decoding and encoding of the v1 wire records (events and soft labels).

Every failure is a :class:`~kdstream.errors.DecodeError` naming the field and what was
expected, never another exception type, so one ``except DecodeError`` per message is enough to
keep a stream going (``decode_many`` / ``decode_records`` do exactly that).

Accepted shapes (ARCHITECTURE.md, "Wire formats"):

* ids (``user``, ``item``, ``after_item``, soft-label ``items``): non-empty strings of at most
  256 characters without control characters; integers (and integral floats such as ``3.0``)
  are normalised to their decimal string; booleans are rejected.
* ``ts``: finite epoch seconds in ``[0, 4102444800]`` (up to the year 2100) or an ISO-8601
  string (a ``Z`` suffix is UTC, naive times are UTC).
* ``null`` for an optional field means "absent".
* unknown fields, duplicate keys, NaN/Infinity and inputs over 64 KiB are rejected.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias, TypeVar

from kdstream.errors import DecodeError

from ._deadletter import DeadLetter
from ._event import EVENT_TYPES, SCHEMA_VERSION, Event, SoftLabels

T = TypeVar("T")

#: What the decoders accept: JSON bytes or text, or an already-parsed mapping.
RawRecord: TypeAlias = bytes | bytearray | memoryview | str | Mapping[str, Any]

MAX_RECORD_BYTES = 64 * 1024
MAX_ID_CHARS = 256
MAX_SOFT_LABEL_ITEMS = 1000
TS_MIN = 0.0
TS_MAX = 4102444800.0  # 2100-01-01T00:00:00Z

# C0, DEL, C1 controls and lone surrogates (which json accepts as \ud800 escapes but UTF-8
# cannot encode, so such an id could never be written back out).
_BAD_ID_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

_EVENT_FIELDS = frozenset({"user", "item", "type", "ts", "value", "v"})
_SOFT_FIELDS = frozenset(
    {"user", "after_item", "items", "logits", "temperature", "teacher_version", "trained_until",
     "v"}
)


def _describe(value: Any) -> str:
    """Short description of a bad value for error messages: its type, plus a repr of scalars."""
    if value is None:
        return "null"
    name = type(value).__name__
    if isinstance(value, int) and value.bit_length() > 256:
        return f"{name} of {value.bit_length()} bits"  # repr would be huge (or raise)
    if isinstance(value, str | int | float):
        text = repr(value)
        if len(text) > 40:
            text = text[:37] + "..."
        return f"{name} {text}"
    return name


def _fail(field: str, expected: str, value: Any) -> DecodeError:
    return DecodeError(f"field {field!r}: expected {expected}, got {_describe(value)}", field)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


# built once: json.loads(..., hooks) would construct a decoder per call
_JSON = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def _parse_object(raw: RawRecord) -> Mapping[str, Any]:
    """Turn any accepted input into a mapping, or raise ``DecodeError`` (field ``""``)."""
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
        if len(data) > MAX_RECORD_BYTES:
            raise DecodeError(f"record too large: {len(data)} bytes > {MAX_RECORD_BYTES}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"record is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from exc
    elif isinstance(raw, str):
        text = raw
        # bound before encoding: a str never has fewer UTF-8 bytes than characters
        if len(text) > MAX_RECORD_BYTES or len(
            text.encode("utf-8", "surrogatepass")
        ) > MAX_RECORD_BYTES:
            raise DecodeError(f"record too large: over {MAX_RECORD_BYTES} bytes")
    else:
        raise DecodeError(f"record: expected bytes, str or mapping, got {_describe(raw)}")
    try:
        obj = _JSON.decode(text)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, our hooks, and over-long integer literals
        raise DecodeError(f"record is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise DecodeError(f"record: expected a JSON object, got {_describe(obj)}")
    return obj


def _check_keys(obj: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        names = sorted(repr(k) for k in unknown)
        raise DecodeError(
            f"unknown field(s) {', '.join(names)}; expected only {sorted(allowed)}",
            str(sorted(unknown, key=repr)[0]),
        )


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is float or kind is int:  # the JSON fast path; ABC checks are slow
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _id(value: Any, field: str) -> str:
    if type(value) is str and 0 < len(value) <= MAX_ID_CHARS and not _BAD_ID_CHARS.search(value):
        return value  # the common case, checked first
    expected = f"non-empty string id (max {MAX_ID_CHARS} chars, no control chars) or integer"
    if isinstance(value, str):
        text = value
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if int(value).bit_length() > 4 * MAX_ID_CHARS:  # str() of huge ints is slow or raises
            raise _fail(field, expected, value)
        text = str(int(value))
    elif _is_number(value) and math.isfinite(value) and float(value).is_integer():
        text = str(int(value))
    else:
        raise _fail(field, expected, value)
    if not text or len(text) > MAX_ID_CHARS or _BAD_ID_CHARS.search(text):
        raise _fail(field, expected, value)
    return text


def _ids(values: list[Any] | tuple[Any, ...], field: str) -> tuple[str, ...]:
    """``_id`` of every element: where all are plain strings (the wire's normal form) one pass
    of C-level checks, else element by element, which names the bad one."""
    if values and set(map(type, values)) == {str}:
        lengths = list(map(len, values))
        # a character class: no match can span two ids, so the joined text is checked at once
        if min(lengths) > 0 and max(lengths) <= MAX_ID_CHARS and not _BAD_ID_CHARS.search(
            "".join(values)
        ):
            return tuple(values)
    return tuple(_id(x, field) for x in values)


def _finites(values: list[Any] | tuple[Any, ...], field: str) -> tuple[float, ...]:
    """``_finite`` of every element, with the same fast path as ``_ids`` for plain floats and
    ints."""
    if set(map(type, values)) <= {float, int}:
        try:
            out = tuple(map(float, values))
        except OverflowError:  # an int too large for a float: the slow path says which
            pass
        else:
            if all(map(math.isfinite, out)):
                return out
    return tuple(_finite(x, field) for x in values)


def _finite(value: Any, field: str, expected: str = "finite number") -> float:
    if not _is_number(value):
        raise _fail(field, expected, value)
    try:
        number = float(value)
    except OverflowError as exc:  # an int too large for a float
        raise _fail(field, expected, value) from exc
    if not math.isfinite(number):
        raise _fail(field, expected, value)
    return number


def _epoch(value: Any, field: str, allow_iso: bool) -> float:
    expected = (
        "epoch seconds (number) or ISO-8601 string" if allow_iso else "epoch seconds (number)"
    )
    if isinstance(value, str) and allow_iso:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise _fail(field, expected, value) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            seconds = moment.timestamp()
        except (OverflowError, ValueError, OSError) as exc:
            raise _fail(field, expected, value) from exc
    else:
        seconds = _finite(value, field, expected)
    if not TS_MIN <= seconds <= TS_MAX:
        raise DecodeError(
            f"field {field!r}: expected a time in [{TS_MIN:.0f}, {TS_MAX:.0f}] "
            f"(1970..2100), got {_describe(value)}",
            field,
        )
    return seconds


def _check_version(obj: Mapping[str, Any]) -> None:
    version = obj.get("v")
    if version is None:
        return
    if not isinstance(version, int) or isinstance(version, bool) or version != SCHEMA_VERSION:
        raise _fail("v", f"schema version {SCHEMA_VERSION}", version)


def decode_event(
    raw: RawRecord,
    default_ts: float | None = None,
) -> Event:
    """Validate one event record and return it normalised.

    Parameters
    ----------
    raw
        JSON bytes or text, or an already-parsed mapping.
    default_ts
        Epoch seconds to use when the record has no ``ts`` (e.g. the broker's timestamp or
        "now"); when None a missing ``ts`` is an error.

    Returns
    -------
    Event

    Raises
    ------
    DecodeError
        With ``field`` naming the offending field (``""`` for the record as a whole).

    Examples
    --------
    >>> decode_event(b'{"user": 42, "item": "i9", "type": "Click", "ts": "2023-11-14T22:13:20Z"}')
    Event(user='42', item='i9', type='click', ts=1700000000.0, value=None)
    """
    obj = _parse_object(raw)
    _check_keys(obj, _EVENT_FIELDS)
    _check_version(obj)
    if "user" not in obj:
        raise DecodeError("field 'user': required", "user")
    if "item" not in obj:
        raise DecodeError("field 'item': required", "item")
    user = _id(obj["user"], "user")
    item = _id(obj["item"], "item")

    kind = obj.get("type")
    if kind is None:
        kind = "view"
    elif not isinstance(kind, str) or kind.lower() not in EVENT_TYPES:
        raise _fail("type", f"one of {sorted(EVENT_TYPES)}", kind)
    else:
        kind = kind.lower()

    raw_ts = obj.get("ts")
    if raw_ts is None:
        if default_ts is None:
            raise DecodeError("field 'ts': required (no default time given)", "ts")
        ts = _epoch(default_ts, "ts", allow_iso=False)
    else:
        ts = _epoch(raw_ts, "ts", allow_iso=True)

    raw_value = obj.get("value")
    value = None if raw_value is None else _finite(raw_value, "value")
    if kind == "rating" and value is None:
        raise DecodeError("field 'value': required for type 'rating'", "value")
    return Event(user=user, item=item, type=kind, ts=ts, value=value)


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def encode_event(event: Event) -> bytes:
    """Compact JSON with ``"v": 1``; ``decode_event(encode_event(e)) == e`` for valid events.

    Raises ``DecodeError`` if ``event`` would not decode (so nothing undecodable is produced).

    Examples
    --------
    >>> encode_event(Event("u1", "i9", "rating", 1700000000.5, 4.0))
    b'{"v":1,"user":"u1","item":"i9","type":"rating","ts":1700000000.5,"value":4.0}'
    """
    doc: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "user": event.user,
        "item": event.item,
        "type": event.type,
        "ts": float(event.ts) if _is_number(event.ts) else event.ts,
    }
    if event.value is not None:
        doc["value"] = float(event.value) if _is_number(event.value) else event.value
    checked = decode_event(doc)
    if checked != event:
        raise DecodeError(f"event is not in normalised form: {event!r}")
    return _dumps(doc)


def decode_soft_labels(raw: RawRecord) -> SoftLabels:
    """Validate one soft-labels record (per user, or item-keyed with ``after_item``).

    Examples
    --------
    >>> s = decode_soft_labels('{"user": "u1", "items": ["i1", 2], "logits": [1.5, 0], '
    ...                        '"temperature": 2, "teacher_version": 3, "trained_until": 1e9}')
    >>> s.items, s.logits, s.key
    (('i1', '2'), (1.5, 0.0), 'u1')
    """
    obj = _parse_object(raw)
    _check_keys(obj, _SOFT_FIELDS)
    _check_version(obj)
    user = obj.get("user")
    after = obj.get("after_item")
    if (user is None) == (after is None):
        raise DecodeError(
            "fields 'user'/'after_item': expected exactly one of them",
            "user" if user is None else "after_item",
        )
    user_id = None if user is None else _id(user, "user")
    after_id = None if after is None else _id(after, "after_item")

    items_raw = obj.get("items")
    if not isinstance(items_raw, list | tuple) or not 1 <= len(items_raw) <= MAX_SOFT_LABEL_ITEMS:
        raise _fail("items", f"non-empty list of at most {MAX_SOFT_LABEL_ITEMS} ids", items_raw)
    items = _ids(items_raw, "items")
    if len(set(items)) != len(items):
        raise DecodeError("field 'items': expected unique ids, got duplicates", "items")

    logits_raw = obj.get("logits")
    if not isinstance(logits_raw, list | tuple) or len(logits_raw) != len(items):
        raise _fail("logits", f"list of {len(items)} finite numbers (one per item)", logits_raw)
    logits = _finites(logits_raw, "logits")

    temperature = _finite(obj.get("temperature"), "temperature", "finite number > 0")
    if temperature <= 0:
        raise _fail("temperature", "finite number > 0", obj.get("temperature"))
    version = obj.get("teacher_version")
    if (
        not isinstance(version, numbers.Integral)
        or isinstance(version, bool)
        or int(version) < 0
    ):
        raise _fail("teacher_version", "integer >= 0", version)
    trained_until = _epoch(obj.get("trained_until"), "trained_until", allow_iso=False)
    return SoftLabels(
        items=items,
        logits=logits,
        temperature=temperature,
        teacher_version=int(version),
        trained_until=trained_until,
        user=user_id,
        after_item=after_id,
    )


def encode_soft_labels(labels: SoftLabels) -> bytes:
    """Compact JSON with ``"v": 1``; round-trips through :func:`decode_soft_labels`.

    Logits may be numpy scalars; they are written as Python floats.
    """
    doc: dict[str, Any] = {"v": SCHEMA_VERSION}
    if labels.user is not None:
        doc["user"] = labels.user
    if labels.after_item is not None:
        doc["after_item"] = labels.after_item
    doc["items"] = list(labels.items)
    doc["logits"] = [float(x) if _is_number(x) else x for x in labels.logits]
    doc["temperature"] = (
        float(labels.temperature) if _is_number(labels.temperature) else labels.temperature
    )
    doc["teacher_version"] = (
        int(labels.teacher_version)
        if isinstance(labels.teacher_version, numbers.Integral)
        and not isinstance(labels.teacher_version, bool)
        else labels.teacher_version
    )
    doc["trained_until"] = (
        float(labels.trained_until) if _is_number(labels.trained_until) else labels.trained_until
    )
    decode_soft_labels(doc)  # raise DecodeError rather than publish something undecodable
    return _dumps(doc)


def _as_bytes(raw: Any) -> bytes:
    """Best-effort bytes of any raw input, so a dead letter can always keep it."""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    try:
        return json.dumps(raw, default=repr, ensure_ascii=True).encode("ascii")
    except Exception:  # a dead letter must never fail to build
        return repr(raw).encode("utf-8", "backslashreplace")


def _dead_letter(
    raw: Any, exc: BaseException, source: str, partition: int | None, offset: int | None, ts: float
) -> DeadLetter:
    if isinstance(exc, DecodeError):
        reason, field = exc.reason, exc.field
    else:
        reason, field = f"internal: {type(exc).__name__}: {exc}", ""
    return DeadLetter(
        raw=_as_bytes(raw),
        reason=reason,
        field=field,
        source=source,
        partition=partition,
        offset=offset,
        ts=ts,
    )


def decode_many(
    raws: Iterable[bytes],
    decode: Callable[[bytes], T] = decode_event,  # type: ignore[assignment]
    *,
    source: str = "",
    ts: float = 0.0,
) -> tuple[list[T], list[DeadLetter]]:
    """Decode each record; never raises for a bad record.

    Good records come back in input order; each bad one becomes a :class:`DeadLetter`
    (a ``DecodeError`` keeps its reason and field; any other exception is a decoder bug and is
    dead-lettered as ``"internal: <type>: <msg>"`` rather than stopping the loop).
    ``len(good) + len(dead) == len(raws)`` always.

    Examples
    --------
    >>> good, dead = decode_many([b'{"user": 1, "item": 2, "ts": 0}', b'oops'])
    >>> [e.user for e in good], [d.raw for d in dead]
    (['1'], [b'oops'])
    """
    good: list[T] = []
    dead: list[DeadLetter] = []
    for raw in raws:
        try:
            good.append(decode(raw))
        except Exception as exc:  # see docstring: nothing may stop the loop
            dead.append(_dead_letter(raw, exc, source, None, None, ts))
    return good, dead


class RecordLike(Protocol):
    """Anything with a topic, partition, offset and value (embedded or kafka-python records)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes: ...


R = TypeVar("R", bound=RecordLike)


def decode_records(
    records: Iterable[R],
    decode: Callable[[bytes], T] = decode_event,  # type: ignore[assignment]
    *,
    ts: float = 0.0,
) -> tuple[list[tuple[R, T]], list[DeadLetter]]:
    """Like :func:`decode_many` for broker records: keeps each record with its decoded value.

    Dead letters carry the record's topic (as ``source``), partition and offset.
    """
    good: list[tuple[R, T]] = []
    dead: list[DeadLetter] = []
    for record in records:
        try:
            good.append((record, decode(record.value)))
        except Exception as exc:  # nothing may stop the loop
            dead.append(
                _dead_letter(
                    getattr(record, "value", b""),
                    exc,
                    str(getattr(record, "topic", "")),
                    getattr(record, "partition", None),
                    getattr(record, "offset", None),
                    ts,
                )
            )
    return good, dead


__all__ = [
    "MAX_ID_CHARS",
    "MAX_RECORD_BYTES",
    "MAX_SOFT_LABEL_ITEMS",
    "RawRecord",
    "RecordLike",
    "decode_event",
    "decode_many",
    "decode_records",
    "decode_soft_labels",
    "encode_event",
    "encode_soft_labels",
]
