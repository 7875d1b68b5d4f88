"""Hostile records for the decoder and API fuzzing (tests and ``benchmarks/faults.py``).

:func:`hostile_stream` yields ``(raw bytes, event key or None)``: a good event (its
:func:`~kdstream.stream._processor.event_key`, unique by ``ts``) or one of many malformed
kinds (``None``). Seeded, so a failure reproduces.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

from kdstream.stream import Event, encode_event
from kdstream.stream._processor import event_key

T0 = 1.6e9


def _good(i: int) -> tuple[bytes, str]:
    e = Event(f"u{i % 97}", f"i{(i * 31) % 211}", "click", T0 + i)
    return encode_event(e), event_key(e)


def _obj(i: int, **over: object) -> bytes:
    doc: dict[str, object] = {"user": f"u{i % 97}", "item": "i1", "ts": T0 + i}
    doc.update(over)
    return json.dumps(doc, allow_nan=True).encode()


# Each maker returns malformed bytes; the decoders must reject every one with a reason.
# (Integer ids are valid by design: they are read as their decimal string.)
_BAD: dict[str, Callable[[int, random.Random], bytes]] = {
    "wrong_type_user": lambda i, r: _obj(i, user=r.choice([2.5, None, [], {}, True])),
    "wrong_type_item": lambda i, r: _obj(i, item=r.choice([7.5, None, ["x"], {"a": 1}, False])),
    "wrong_type_ts": lambda i, r: _obj(i, ts=r.choice(["yesterday", [], {}, True])),
    "wrong_type_value": lambda i, r: _obj(i, type="rating", value=r.choice(["5", [], {}])),
    "unknown_type": lambda i, r: _obj(i, type=r.choice(["buy!", "", "CLICKZ", "x" * 40])),
    "nan": lambda i, r: _obj(i, ts=float("nan")),
    "infinity": lambda i, r: _obj(i, ts=r.choice([float("inf"), float("-inf")])),
    "nan_value": lambda i, r: _obj(i, type="rating", value=float("nan")),
    "far_past": lambda i, r: _obj(i, ts=-r.uniform(1, 1e12)),
    "far_future": lambda i, r: _obj(i, ts=r.uniform(4.2e9, 1e300)),
    "huge_number": lambda i, r: f'{{"user":"u1","item":"i1","ts":1{"0" * 400}}}'.encode(),
    "long_id": lambda i, r: _obj(i, user="u" * r.randint(257, 5000)),
    "empty_id": lambda i, r: _obj(i, item=""),
    "control_chars": lambda i, r: _obj(i, user="a\x00b\nc"),
    "invalid_utf8": lambda i, r: b'{"user":"\xff\xfe' + bytes([r.randint(0x80, 0xFF)]) + b'"}',
    "truncated": lambda i, r: _obj(i)[: r.randint(0, 30)],
    "not_object": lambda i, r: r.choice([b"[]", b"7", b'"str"', b"null", b"true", b"[1,2]"]),
    "deep_nesting": lambda i, r: b"[" * r.randint(1000, 100_000) + b"]" * 10,
    "deep_object": lambda i, r: b'{"user":' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
    "huge": lambda i, r: _obj(i, extra="x" * r.randint(70_000, 200_000)),
    "duplicate_key": lambda i, r: b'{"user":"u1","item":"i1","item":"i2","ts":1600000000}',
    "unknown_field": lambda i, r: _obj(i, admin=True),
    "bad_version": lambda i, r: _obj(i, v=r.choice([0, 2, "1", 1.5])),
    "empty": lambda i, r: b"",
    "whitespace": lambda i, r: b" \n\t ",
    "garbage": lambda i, r: bytes(r.randint(0, 255) for _ in range(r.randint(1, 200))),
    "bom": lambda i, r: b"\xef\xbb\xbf" + _obj(i)[:5],
    "surrogate": lambda i, r: b'{"user":"\\ud800","item":"i1","ts":1600000000}',
}
BAD_KINDS = tuple(sorted(_BAD))


def hostile_stream(
    n: int, seed: int = 0, bad_share: float = 0.5
) -> Iterator[tuple[bytes, str | None]]:
    """``n`` records, about ``bad_share`` of them malformed, good ones unique by ``ts``."""
    rng = random.Random(seed)
    for i in range(n):
        if rng.random() < bad_share:
            yield _BAD[rng.choice(BAD_KINDS)](i, rng), None
        else:
            yield _good(i)
