"""Hostile input through the event and soft-label decoders and the processor core.

Every malformed record must come out as a :class:`DecodeError` / dead letter with a reason (never
another exception), good records around it must be learned exactly once, memory stays bounded,
and no soft label (unknown items, wrong lengths, non-finite or extreme logits) may put a NaN
into the student.
"""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
from faults.hostile import BAD_KINDS, hostile_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdstream.errors import DecodeError
from kdstream.stream import Event, MemoryStore, Record, SoftLabels, decode_event
from kdstream.stream._codec import MAX_ID_CHARS, TS_MAX, TS_MIN, decode_soft_labels
from kdstream.stream._processor import (
    ProcessorConfig,
    ProcessorCore,
    decode_event_records,
    event_key,
)
from kdstream.student import StudentConfig

FUZZ = settings(max_examples=300, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20) | st.just("x" * (MAX_ID_CHARS + 1))
)
_json = st.recursive(
    _scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
_event_keys = st.sampled_from(["user", "item", "type", "ts", "value", "v", "extra"])
_soft_keys = st.sampled_from(
    ["user", "after_item", "items", "logits", "temperature", "teacher_version", "trained_until"]
)


def _check_event(e: Event) -> None:
    assert isinstance(e.user, str) and 0 < len(e.user) <= MAX_ID_CHARS
    assert isinstance(e.item, str) and 0 < len(e.item) <= MAX_ID_CHARS
    assert math.isfinite(e.ts) and TS_MIN <= e.ts <= TS_MAX
    assert e.value is None or math.isfinite(e.value)


def _check_soft(s: SoftLabels) -> None:
    assert len(s.items) == len(s.logits) == len(set(s.items)) > 0
    assert all(math.isfinite(x) for x in s.logits)
    assert math.isfinite(s.temperature) and s.temperature > 0


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_decode_error(raw: bytes) -> None:
    for decode, check in ((decode_event, _check_event), (decode_soft_labels, _check_soft)):
        try:
            check(decode(raw))  # type: ignore[operator]
        except DecodeError as exc:
            assert exc.reason


@FUZZ
@given(st.dictionaries(_event_keys, _json, max_size=7))
def test_event_shaped_json_decodes_or_raises_decode_error(doc: dict[str, object]) -> None:
    raw = json.dumps(doc, allow_nan=True).encode()
    for value in (raw, doc):
        try:
            _check_event(decode_event(value))
        except DecodeError as exc:
            assert exc.reason


@FUZZ
@given(st.dictionaries(_soft_keys, _json | st.lists(_scalars, max_size=5), max_size=7))
def test_soft_label_shaped_json_decodes_or_raises_decode_error(doc: dict[str, object]) -> None:
    try:
        _check_soft(decode_soft_labels(json.dumps(doc, allow_nan=True).encode()))
    except DecodeError as exc:
        assert exc.reason


@pytest.mark.parametrize("logits", [[float("nan"), 1.0], [float("inf"), 0.0], [1.0], [1, 2, 3]])
def test_soft_labels_with_non_finite_or_misaligned_logits_are_rejected(logits: list[float]) -> None:
    doc = {"user": "u1", "items": ["i1", "i2"], "logits": logits, "temperature": 1,
           "teacher_version": 1, "trained_until": 1.6e9}
    with pytest.raises(DecodeError) as info:
        decode_soft_labels(json.dumps(doc, allow_nan=True).encode())
    # NaN/Infinity literals are refused by the JSON parser itself (field ""), the rest by field
    assert info.value.field in ("logits", "") and info.value.reason


def _records(n: int, seed: int) -> tuple[list[Record], set[str], int]:
    recs, good, bad = [], set(), 0
    for off, (raw, key) in enumerate(hostile_stream(n, seed=seed)):
        recs.append(Record("kd.events", off % 3, off, None, raw, 0.0))
        if key is None:
            bad += 1
        else:
            good.add(key)
    return recs, good, bad


def test_bulk_path_agrees_with_strict_decoder_on_hostile_batches() -> None:
    recs, good, bad = _records(3000, seed=1)
    decoded, dead = decode_event_records(recs, now=1.7e9)
    assert {event_key(e) for _, e in decoded} == good
    assert len(decoded) == len(good) and len(dead) == bad
    assert all(d.reason and not d.reason.startswith("internal") for d in dead)
    assert {d.offset for d in dead} | {r.offset for r, _ in decoded} == set(range(len(recs)))


def test_every_malformed_kind_is_covered_and_dead_lettered() -> None:
    seen_kinds = set()
    import random

    from faults import hostile

    rng = random.Random(3)
    for kind in BAD_KINDS:
        raw = hostile._BAD[kind](5, rng)
        with pytest.raises(DecodeError):
            decode_event(raw)
        seen_kinds.add(kind)
    assert seen_kinds == set(BAD_KINDS)


def test_processor_learns_good_records_once_dead_letters_bad_ones_memory_bounded() -> None:
    store = MemoryStore()
    core = ProcessorCore(store, ProcessorConfig(student=StudentConfig(dim=8), debug_ledger=True))
    core.assign([0, 1, 2])
    recs, good, bad = _records(4000, seed=2)
    tracemalloc.start()
    try:
        for i in range(0, len(recs), 250):
            core.process(recs[i : i + 250], now=1.7e9)
        core.process(recs[:500], now=1.7e9)  # re-delivery: skipped, not learned again
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ledger = store.ledger()
    assert len(ledger) == len(set(ledger)) == len(good) and set(ledger) == good
    assert core.stats.dead_lettered == bad and core.stats.skipped_duplicates == 500
    assert peak < 64 * 1024 * 1024, peak  # bounded: records up to 200 KB, 250 per batch
    st_ = core.learner.student
    for name in ("P", "Q", "C", "b"):
        assert np.isfinite(getattr(st_, name)).all(), name


def test_hostile_soft_labels_never_put_nan_into_the_student() -> None:
    store = MemoryStore()
    core = ProcessorCore(store, ProcessorConfig(student=StudentConfig(dim=8)))
    core.assign([0])
    events = [Event(f"u{i % 5}", f"i{i % 7}", "click", 1.6e9 + i) for i in range(200)]
    from kdstream.stream import encode_event

    core.process([Record("kd.events", 0, i, None, encode_event(e), 0.0)
                  for i, e in enumerate(events)], now=1.7e9)
    extreme = [
        SoftLabels(("i1", "nope", "i2"), (3.0e38, -3.0e38, 0.0), 1e-30, 5, 1.6e9 + 300, "u1"),
        SoftLabels(("unknown1", "unknown2"), (1.0, 2.0), 1.0, 6, 1.6e9 + 300, "u2"),
        SoftLabels(("i3",), (1e308,), 1e308, 7, 1.6e9 + 300, None, "i4"),
        SoftLabels(("i1", "i2"), (-1e300, 1e300), 0.5, 8, 1.6e9 + 300, "u_new"),
    ]
    core.apply_soft_label_values(extreme)
    more = [Event(f"u{i % 5}", f"i{i % 7}", "click", 1.6e9 + 300 + i) for i in range(200)]
    more += [Event("u_new", "i1", "click", 1.6e9 + 600)]
    core.process([Record("kd.events", 0, 200 + i, None, encode_event(e), 0.0)
                  for i, e in enumerate(more)], now=1.7e9)
    st_ = core.learner.student
    for name in ("P", "Q", "C", "b"):
        assert np.isfinite(getattr(st_, name)).all(), name
    _ids, vectors, bias = store.item_table()
    assert np.isfinite(vectors).all() and np.isfinite(bias).all()
    for user in ("u1", "u2", "u_new"):
        vec = store.user_vector(user)
        assert vec is not None and np.isfinite(vec).all(), user
