"""Wire codecs: strict decoding, exact round trips, dead letters."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdstream.errors import DecodeError
from kdstream.stream import (
    EVENT_TYPES,
    MAX_RECORD_BYTES,
    DeadLetter,
    EmbeddedLog,
    Event,
    SoftLabels,
    decode_event,
    decode_many,
    decode_records,
    decode_soft_labels,
    encode_event,
    encode_soft_labels,
)

GOOD = {"user": "u42", "item": "i9", "type": "click", "ts": 1700000000.5}


def _raw(**changes: Any) -> bytes:
    doc = {**GOOD, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not _DROP}).encode()


_DROP = object()


def _rejects(raw: Any, field: str, *, default_ts: float | None = None) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_event(raw, default_ts=default_ts)
    assert info.value.field == field, info.value.reason
    if field:
        assert repr(field) in info.value.reason or field in info.value.reason
    return info.value


# -- events: accepted shapes ------------------------------------------------------------------


def test_decode_good_event() -> None:
    assert decode_event(_raw()) == Event("u42", "i9", "click", 1700000000.5)


def test_bytes_str_and_mapping_inputs_agree() -> None:
    raw = _raw()
    assert decode_event(raw) == decode_event(raw.decode()) == decode_event(dict(GOOD))


@pytest.mark.parametrize(
    ("wire", "expected"),
    [(42, "42"), (-7, "-7"), (3.0, "3"), (0, "0"), ("007", "007"), (10**30, str(10**30))],
)
def test_numeric_ids_are_normalised(wire: Any, expected: str) -> None:
    event = decode_event(_raw(user=wire, item=wire))
    assert event.user == expected
    assert event.item == expected


def test_iso_and_epoch_agree() -> None:
    epoch = decode_event(_raw(ts=1700000000)).ts
    assert decode_event(_raw(ts="2023-11-14T22:13:20Z")).ts == epoch
    assert decode_event(_raw(ts="2023-11-14T22:13:20+00:00")).ts == epoch
    assert decode_event(_raw(ts="2023-11-14T23:13:20+01:00")).ts == epoch
    assert decode_event(_raw(ts="2023-11-14T22:13:20")).ts == epoch  # naive = UTC
    assert decode_event(_raw(ts="2023-11-14T22:13:20.25Z")).ts == epoch + 0.25


def test_type_defaults_and_case() -> None:
    assert decode_event(_raw(type=_DROP)).type == "view"
    assert decode_event(_raw(type=None)).type == "view"
    assert decode_event(_raw(type="PURCHASE")).type == "purchase"


def test_missing_ts_uses_default_or_fails() -> None:
    assert decode_event(_raw(ts=_DROP), default_ts=123.0).ts == 123.0
    assert decode_event(_raw(ts=5), default_ts=123.0).ts == 5.0
    _rejects(_raw(ts=_DROP), "ts")
    _rejects(_raw(ts=_DROP), "ts", default_ts=math.nan)


def test_ts_bounds_inclusive() -> None:
    assert decode_event(_raw(ts=0)).ts == 0.0
    assert decode_event(_raw(ts=4102444800)).ts == 4102444800.0
    assert decode_event(_raw(ts="2100-01-01T00:00:00Z")).ts == 4102444800.0


def test_rating_needs_value() -> None:
    assert decode_event(_raw(type="rating", value=4)).value == 4.0
    _rejects(_raw(type="rating"), "value")
    _rejects(_raw(type="rating", value=None), "value")


def test_version_field() -> None:
    assert decode_event(_raw(v=1)) == decode_event(_raw())
    for bad in (2, 0, True, "1", 1.5):
        _rejects(_raw(v=bad), "v")


# -- events: rejections name the field --------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"user": _DROP}, "user"),
        ({"item": _DROP}, "item"),
        ({"user": ""}, "user"),
        ({"user": None}, "user"),
        ({"user": True}, "user"),
        ({"item": False}, "item"),
        ({"user": 1.5}, "user"),
        ({"user": "a" * 257}, "user"),
        ({"item": "bad\nid"}, "item"),
        ({"item": "bad\x7fid"}, "item"),
        ({"user": ["u"]}, "user"),
        ({"user": {"id": 1}}, "user"),
        ({"type": "hover"}, "type"),
        ({"type": 3}, "type"),
        ({"ts": [1, 2]}, "ts"),
        ({"ts": -1}, "ts"),
        ({"ts": 4102444801}, "ts"),
        ({"ts": "yesterday"}, "ts"),
        ({"ts": "1969-12-31T23:59:59Z"}, "ts"),
        ({"ts": "2100-01-01T00:00:01Z"}, "ts"),
        ({"ts": True}, "ts"),
        ({"value": "5"}, "value"),
        ({"value": True}, "value"),
        ({"extra": 1}, "extra"),
    ],
)
def test_rejections_name_the_field(changes: dict[str, Any], field: str) -> None:
    _rejects(_raw(**changes), field)


def test_message_says_what_was_expected() -> None:
    err = _rejects(_raw(ts=[1]), "ts")
    assert err.reason == (
        "field 'ts': expected epoch seconds (number) or ISO-8601 string, got list"
    )


def test_unknown_fields_are_all_named() -> None:
    err = _rejects(_raw(zeta=1, alpha=2), "alpha")
    assert "'alpha'" in err.reason
    assert "'zeta'" in err.reason


def test_id_length_limit_is_256_chars() -> None:
    assert decode_event(_raw(user="é" * 256)).user == "é" * 256


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{}",
        b"not json",
        b"",
        b"[1, 2]",
        b'"user"',
        b"null",
        b'{"user": "u", "item": "i", "ts": NaN}',
        b'{"user": "u", "item": "i", "ts": Infinity}',
        b'{"user": "u", "item": "i", "ts": -Infinity}',
        b'{"user": "u", "item": "i", "ts": 1e400}',
        b'{"user": "u", "user": "v", "item": "i", "ts": 1}',
        b"[" * 5000 + b"]" * 5000,
        b'{"user": ' + b"9" * 5000 + b', "item": "i", "ts": 1}',
        b'{"user": "\\ud800", "item": "i", "ts": 1}',
    ],
)
def test_garbage_is_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_event(raw)


def test_nan_rejected_in_mapping_input() -> None:
    _rejects({**GOOD, "ts": math.nan}, "ts")
    _rejects({**GOOD, "type": "rating", "value": math.nan}, "value")
    _rejects({**GOOD, "value": math.inf}, "value")
    _rejects({**GOOD, "user": math.nan}, "user")


def test_too_large_input() -> None:
    pad = "x" * MAX_RECORD_BYTES
    err = _rejects(_raw(user=pad[:10], item="i") + b" " * MAX_RECORD_BYTES, "")
    assert "too large" in err.reason
    with pytest.raises(DecodeError, match="too large"):
        decode_event(json.dumps({**GOOD, "pad": pad}))


# -- events: round trips ----------------------------------------------------------------------


def test_encode_is_compact_and_versioned() -> None:
    raw = encode_event(Event("u1", "i1", "view", 1.0))
    assert raw == b'{"v":1,"user":"u1","item":"i1","type":"view","ts":1.0}'


def test_encode_refuses_invalid_events() -> None:
    with pytest.raises(DecodeError):
        encode_event(Event("u1", "i1", "hover", 1.0))
    with pytest.raises(DecodeError):
        encode_event(Event("u1", "i1", "view", math.nan))
    with pytest.raises(DecodeError):
        encode_event(Event("u1", "i1", "Click", 1.0))  # not normalised


_id_text = st.text(min_size=1, max_size=256).filter(
    lambda s: not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF
                      for c in s)
)
_events = st.builds(
    Event,
    user=_id_text,
    item=_id_text,
    type=st.sampled_from(sorted(EVENT_TYPES)),
    ts=st.floats(0.0, 4102444800.0),
    value=st.none() | st.floats(allow_nan=False, allow_infinity=False),
).filter(lambda e: e.type != "rating" or e.value is not None)


@settings(max_examples=200, deadline=None)
@given(_events)
def test_event_round_trip(event: Event) -> None:
    assert decode_event(encode_event(event)) == event


# -- never anything but DecodeError -----------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_field_values = st.dictionaries(
    st.sampled_from(["user", "item", "type", "ts", "value", "v", "other"]),
    _json_values | st.sampled_from(["2023-01-01T00:00:00Z", "rating", "VIEW", 5, 3.0]),
    max_size=7,
)


def _only_decode_errors(raw: Any, decode: Any = decode_event) -> None:
    # anything but DecodeError propagates and fails the test
    with contextlib.suppress(DecodeError):
        assert isinstance(decode(raw), Event | SoftLabels)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(raw: bytes) -> None:
    _only_decode_errors(raw)
    _only_decode_errors(raw, decode_soft_labels)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_arbitrary_json_values(value: Any) -> None:
    raw = json.dumps(value)  # NaN/Infinity literals included when floats are non-finite
    _only_decode_errors(raw)
    _only_decode_errors(raw.encode("utf-8", "surrogatepass"))
    _only_decode_errors(raw, decode_soft_labels)


@settings(max_examples=300, deadline=None)
@given(_field_values)
def test_arbitrary_dicts(doc: dict[str, Any]) -> None:
    _only_decode_errors(doc)
    _only_decode_errors(json.dumps(doc))


# -- soft labels ------------------------------------------------------------------------------

SOFT = {
    "user": "u1",
    "items": ["i1", "i2", 3],
    "logits": [2.5, 1, -0.5],
    "temperature": 2.0,
    "teacher_version": 7,
    "trained_until": 1700000000.0,
}


def test_soft_labels_decode() -> None:
    labels = decode_soft_labels(json.dumps(SOFT))
    assert labels == SoftLabels(("i1", "i2", "3"), (2.5, 1.0, -0.5), 2.0, 7, 1700000000.0, "u1")
    item_keyed = decode_soft_labels({**SOFT, "user": None, "after_item": 9})
    assert item_keyed.after_item == "9"
    assert item_keyed.key == "item:9"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"user": None}, "user"),
        ({"after_item": "i9"}, "after_item"),
        ({"items": []}, "items"),
        ({"items": "i1"}, "items"),
        ({"items": ["i1", "i1", "i2"]}, "items"),
        ({"items": ["i1", "", "i2"]}, "items"),
        ({"items": [f"i{j}" for j in range(1001)], "logits": [0.0] * 1001}, "items"),
        ({"logits": [1.0, 2.0]}, "logits"),
        ({"logits": [1.0, 2.0, math.nan]}, "logits"),
        ({"logits": [1.0, 2.0, "3"]}, "logits"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"teacher_version": -1}, "teacher_version"),
        ({"teacher_version": 1.0}, "teacher_version"),
        ({"teacher_version": True}, "teacher_version"),
        ({"trained_until": math.nan}, "trained_until"),
        ({"trained_until": "2023-01-01"}, "trained_until"),
        ({"v": 2}, "v"),
        ({"bonus": 1}, "bonus"),
    ],
)
def test_soft_label_rejections(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_soft_labels({**SOFT, **changes})
    assert info.value.field == field, info.value.reason


_soft = st.builds(
    lambda items, data, temperature, version, until, keyed: SoftLabels(
        items=tuple(items),
        logits=tuple(data.draw(st.lists(
            st.floats(allow_nan=False, allow_infinity=False),
            min_size=len(items), max_size=len(items),
        ))),
        temperature=temperature,
        teacher_version=version,
        trained_until=until,
        user=None if keyed else "u1",
        after_item="i0" if keyed else None,
    ),
    st.lists(_id_text, min_size=1, max_size=20, unique=True),
    st.data(),
    st.floats(min_value=1e-6, max_value=100.0),
    st.integers(0, 2**40),
    st.floats(0.0, 4102444800.0),
    st.booleans(),
)


@settings(max_examples=100, deadline=None)
@given(_soft)
def test_soft_labels_round_trip(labels: SoftLabels) -> None:
    assert decode_soft_labels(encode_soft_labels(labels)) == labels


def test_soft_labels_encode_numpy_logits() -> None:
    import numpy as np

    labels = SoftLabels(("a", "b"), tuple(np.array([1.5, -2.0], dtype=np.float32)), 1.0, 1, 0.0,
                        user="u")
    assert decode_soft_labels(encode_soft_labels(labels)).logits == (1.5, -2.0)


# -- decode_many / decode_records / dead letters ----------------------------------------------


def test_decode_many_keeps_good_around_bad() -> None:
    raws = [_raw(user=i) if i % 3 else b"{broken" for i in range(30)]
    good, dead = decode_many(raws, source="kd.events", ts=9.0)
    assert len(good) + len(dead) == len(raws)
    assert [e.user for e in good] == [str(i) for i in range(30) if i % 3]
    assert len(dead) == 10
    assert all(d.raw == b"{broken" and d.source == "kd.events" and d.ts == 9.0 for d in dead)


def test_decode_many_dead_letters_other_exceptions() -> None:
    def flaky(raw: bytes) -> Event:
        if raw == b"boom":
            raise KeyError("surprise")
        return decode_event(raw)

    good, dead = decode_many([_raw(), b"boom", b"[]", _raw(user="u2")], flaky)
    assert [e.user for e in good] == ["u42", "u2"]
    assert dead[0].reason == "internal: KeyError: 'surprise'"
    assert dead[1].reason.startswith("record: expected a JSON object")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=60) | st.sampled_from([_raw(), _raw(item=5)]), max_size=20))
def test_decode_many_counts_match(raws: list[bytes]) -> None:
    good, dead = decode_many(raws)
    assert len(good) + len(dead) == len(raws)
    assert sorted(d.raw for d in dead) == sorted(
        r for r in raws if r not in (_raw(), _raw(item=5))
    )


def test_decode_records_keeps_positions() -> None:
    log = EmbeddedLog()
    log.create_topic("kd.events", partitions=2)
    log.produce("kd.events", _raw(), partition=0)
    log.produce("kd.events", b"\x00bad", partition=1)
    records = log.read("kd.events", 0, 0, 10) + log.read("kd.events", 1, 0, 10)
    good, dead = decode_records(records)
    assert [(r.partition, e.user) for r, e in good] == [(0, "u42")]
    assert (dead[0].source, dead[0].partition, dead[0].offset) == ("kd.events", 1, 0)
    assert dead[0].raw == b"\x00bad"


@pytest.mark.parametrize("raw", [b'{"user": 1', b"\xff\xfe binary", b"", "é".encode()])
def test_dead_letter_round_trip(raw: bytes) -> None:
    letter = DeadLetter(raw, "why", "ts", "kd.events", 3, 17, 1700000000.0)
    data = letter.to_bytes()
    assert DeadLetter.from_bytes(data) == letter
    doc = json.loads(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert "preview" not in doc
    else:
        assert doc["preview"] == text


def test_dead_letter_from_bytes_rejects_garbage() -> None:
    for bad in (b"nope", b"[]", b'{"raw_b64": "!!"}', b'{"raw_b64": "", "offset": "x"}',
                b'{"raw_b64": "", "what": 1}'):
        with pytest.raises(DecodeError):
            DeadLetter.from_bytes(bad)


# -- soft labels: the lists' one-pass checks ----------------------------------------------------

_LABELS = {"user": "u1", "temperature": 2.0, "teacher_version": 1, "trained_until": 1e9}


@pytest.mark.parametrize(
    ("items", "logits", "field"),
    [
        (["a", "b\x07c"], [1.0, 2.0], "items"),  # a control character inside one id
        (["a", ""], [1.0, 2.0], "items"),  # an empty id
        (["a", "x" * 257], [1.0, 2.0], "items"),  # one id over 256 characters
        (["a", ["b"]], [1.0, 2.0], "items"),
        (["a", "b"], [1.0, True], "logits"),  # a bool is not a number here
        (["a", "b"], [1.0, 10**400], "logits"),  # an int too large for a float
        (["a", "b"], [1.0, "2.0"], "logits"),
        (["a", "b"], [1e308, math.inf], "logits"),
        (["a", "b"], [math.nan, 1.0], "logits"),
    ],
)
def test_soft_label_lists_reject_any_bad_element(items: list, logits: list, field: str) -> None:
    with pytest.raises(DecodeError) as info:  # a mapping: values JSON cannot carry get here too
        decode_soft_labels({**_LABELS, "items": items, "logits": logits})
    assert info.value.field == field, info.value.reason


def test_soft_label_lists_mixed_elements_decode_as_one_by_one() -> None:
    """Ids as ints and strs, logits as ints and floats: the element-wise path normalises them
    (ids to strings, logits to floats), the same as plain lists would give."""
    raw = json.dumps({**_LABELS, "items": ["a", 7, "c"], "logits": [1, 2.5, -3]}).encode()
    labels = decode_soft_labels(raw)
    assert labels.items == ("a", "7", "c")
    assert labels.logits == (1.0, 2.5, -3.0) and all(type(x) is float for x in labels.logits)
    plain = decode_soft_labels(
        json.dumps({**_LABELS, "items": ["a", "7", "c"], "logits": [1.0, 2.5, -3.0]}).encode()
    )
    assert (plain.items, plain.logits) == (labels.items, labels.logits)
