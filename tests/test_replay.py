"""Replay: order, keys and counts into a producer, speed scaling, rejects, progress line."""

from __future__ import annotations

import io

import pytest

from kdstream.errors import ConfigError, DecodeError
from kdstream.replay import EventColumns, Progress, SyntheticConfig, generate, replay
from kdstream.stream import EmbeddedConsumer, EmbeddedLog, EmbeddedProducer, decode_event
from kdstream.stream._event import Event


class FakeProducer:
    def __init__(self, clock: FakeClock | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes | str | None, float | None, float]] = []
        self.flushed = 0
        self.clock = clock

    def send(
        self, topic: str, value: bytes, key: bytes | str | None = None, ts: float | None = None
    ) -> None:
        now = self.clock() if self.clock is not None else 0.0
        self.sent.append((topic, value, key, ts, now))

    def flush(self) -> None:
        self.flushed += 1


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


EVENTS = [
    Event("u1", "i1", "view", 1000.0),
    Event("u2", "i2", "rating", 1010.0, 4.0),
    Event("u1", "i3", "click", 1010.0),
    Event("u3", "i1", "skip", 1040.0),
]


def test_order_keys_and_counts_fast_as_possible() -> None:
    producer = FakeProducer()
    clock = FakeClock()
    report = replay(EVENTS, producer, progress=False, clock=clock, sleep=clock.sleep)
    assert (report.sent, report.rejected) == (4, 0)
    assert clock.sleeps == []
    assert producer.flushed == 1
    assert [topic for topic, *_ in producer.sent] == ["kd.events"] * 4
    assert [key for _, _, key, _, _ in producer.sent] == ["u1", "u2", "u1", "u3"]
    assert [ts for _, _, _, ts, _ in producer.sent] == [1000.0, 1010.0, 1010.0, 1040.0]
    assert [decode_event(value) for _, value, *_ in producer.sent] == EVENTS


def test_columns_source_topic_and_limit() -> None:
    producer = FakeProducer()
    cols = EventColumns.from_events(EVENTS)
    report = replay(cols, producer, topic="other", limit=3, progress=False)
    assert report.sent == 3
    assert [decode_event(v) for _, v, *_ in producer.sent] == EVENTS[:3]
    assert {t for t, *_ in producer.sent} == {"other"}


@pytest.mark.parametrize("speed", [1.0, 10.0])
def test_speed_scales_wall_gaps(speed: float) -> None:
    clock = FakeClock()
    producer = FakeProducer(clock)
    report = replay(EVENTS, producer, speed=speed, progress=False, clock=clock, sleep=clock.sleep)
    sent_at = [now - 100.0 for *_, now in producer.sent]
    assert sent_at == pytest.approx([0.0, 10.0 / speed, 10.0 / speed, 40.0 / speed])
    assert len(clock.sleeps) == 2  # no sleep for the tie at ts 1010
    assert report.seconds == pytest.approx(40.0 / speed)


def test_speed_does_not_sleep_when_behind() -> None:
    clock = FakeClock()

    class SlowProducer(FakeProducer):
        def send(self, topic, value, key=None, ts=None):  # type: ignore[no-untyped-def]
            clock.now += 100.0  # each send takes longer than any log gap
            super().send(topic, value, key, ts)

    replay(EVENTS, SlowProducer(clock), speed=1.0, progress=False, clock=clock,
           sleep=clock.sleep)
    assert clock.sleeps == []


def test_events_that_fail_encoding_are_counted_and_skipped() -> None:
    def picky(event: Event) -> bytes:
        if event.user == "u2":
            raise DecodeError("field 'user': not allowed", "user")
        return event.item.encode()

    producer = FakeProducer()
    report = replay(EVENTS, producer, encode=picky, progress=False)
    assert (report.sent, report.rejected) == (3, 1)
    assert report.rejects == ((1, "field 'user': not allowed"),)
    assert [v for _, v, *_ in producer.sent] == [b"i1", b"i3", b"i1"]


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="speed"):
        replay(EVENTS, FakeProducer(), speed=-1.0, progress=False)
    with pytest.raises(ConfigError, match="limit"):
        replay(EVENTS, FakeProducer(), limit=-2, progress=False)


def test_into_the_embedded_log_every_event_arrives_keyed_by_user() -> None:
    cols = generate(SyntheticConfig(n_users=40, n_items=60, n_events=500, seed=5))
    log = EmbeddedLog()
    log.create_topic("kd.events", partitions=3)
    report = replay(cols, EmbeddedProducer(log), progress=False)
    assert report.sent == 500
    records = EmbeddedConsumer(log, ["kd.events"], group="t").poll(max_records=1000)
    assert len(records) == 500
    # per partition, records keep replay order; a user's events share one partition
    partitions: dict[bytes, set[int]] = {}
    for record in records:
        assert record.key is not None
        partitions.setdefault(record.key, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())
    for partition in range(3):
        ts = [r.ts for r in records if r.partition == partition]
        assert ts == sorted(ts)
    assert sorted(decode_event(r.value).ts for r in records) == cols.ts.tolist()


def test_progress_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    replay(EVENTS, FakeProducer(), progress=True)
    err = capsys.readouterr().err
    assert err.startswith("replay -> kd.events 4/4 (100%)")
    assert err.endswith("\n")
    assert "events/s" in err


def test_progress_redraws_on_a_terminal_at_most_ten_times_a_second() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    clock = FakeClock()
    with Progress(1000, "x", stream=out, clock=clock) as bar:
        for _ in range(1000):
            clock.now += 0.001  # 1 s in all: about 10 redraws
            bar.update(1)
    text = out.getvalue()
    assert 9 <= text.count("\r") <= 12
    assert text.endswith("x 1000/1000 (100%) 1,000 events/s in 1.0 s\n")
    silent = io.StringIO()
    with Progress(5, "y", stream=silent, enabled=False) as bar:
        bar.update(5)
    assert silent.getvalue() == ""
