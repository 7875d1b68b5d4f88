"""The teacher process against a real Kafka: labels per active user, restart from saved state."""

from __future__ import annotations

from pathlib import Path

from kdstream.stream import encode_event
from kdstream.stream._codec import decode_soft_labels
from kdstream.stream._kafka_admin import create_topics, default_topics
from kdstream.stream._kafka_producer import KafkaEventProducer
from kdstream.stream._teacher_process import TeacherProcess, TeacherProcessConfig

from .test_processor import _events


def _read_all(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    try:
        return [r.value for r in consumer]
    finally:
        consumer.close()


def test_teacher_publishes_labels_per_user_and_resumes_after_restart(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    create_topics(kafka_bootstrap, default_topics(unique_prefix, partitions=2))
    events = _events(3000, n_users=30, n_items=80)
    with KafkaEventProducer(kafka_bootstrap) as producer:
        for e in events:
            producer.send(f"{unique_prefix}.events", encode_event(e), key=e.user)
    cfg = TeacherProcessConfig(
        bootstrap=kafka_bootstrap, events_topic=f"{unique_prefix}.events",
        soft_labels_topic=f"{unique_prefix}.soft-labels", group=f"{unique_prefix}-teacher",
        state_dir=tmp_path / "teacher", every_events=3000, min_events=100, epochs=1, dim=16,
        top_m=5, transition_items=10,
    )
    summary = TeacherProcess(cfg).run(max_refreshes=1, idle_exit_s=20)
    assert summary["refreshes"] == 1 and summary["version"] == 1
    labels = [decode_soft_labels(v) for v in _read_all(kafka_bootstrap, cfg.soft_labels_topic, 2)]
    users = {s.user for s in labels if s.user is not None}
    assert users == {e.user for e in events}  # one message per active user
    assert sum(s.after_item is not None for s in labels) == 10
    assert all(s.teacher_version == 1 and len(s.items) == 5 for s in labels)
    # restart: state and committed offsets are picked up; nothing is re-read or re-published
    again = TeacherProcess(cfg)
    assert again.teacher is not None and again.teacher.version == 1
    assert len(again.window_users) == len(events)
    summary2 = again.run(idle_exit_s=3)
    assert summary2["events_seen"] == len(events) and summary2["refreshes"] == 0


def test_a_refresh_longer_than_the_poll_interval_loses_no_window(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, monkeypatch, caplog  # type: ignore[no-untyped-def]
) -> None:
    """A refresh slower than ``max_refresh_s`` gets the teacher dropped from its group, so the
    offset commit after it fails: the process logs it and goes on, and a restart resumes from
    the saved state's positions (nothing is folded into the window twice)."""
    import logging
    import time

    from kdstream.stream import _teacher_process

    create_topics(kafka_bootstrap, default_topics(unique_prefix, partitions=2))
    events = _events(1000, n_users=20, n_items=50)
    with KafkaEventProducer(kafka_bootstrap) as producer:
        for e in events:
            producer.send(f"{unique_prefix}.events", encode_event(e), key=e.user)
    original = _teacher_process.run_job

    def slow_job(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(6.0)  # longer than max_refresh_s: the consumer misses its poll deadline
        return original(*args, **kwargs)

    monkeypatch.setattr(_teacher_process, "run_job", slow_job)
    cfg = TeacherProcessConfig(
        bootstrap=kafka_bootstrap, events_topic=f"{unique_prefix}.events",
        soft_labels_topic=f"{unique_prefix}.soft-labels", group=f"{unique_prefix}-teacher",
        state_dir=tmp_path / "teacher", every_events=1000, min_events=100, epochs=1, dim=8,
        top_m=3, transition_items=5, max_refresh_s=2.0,
    )
    with caplog.at_level(logging.WARNING, logger="kdstream.stream._teacher_process"):
        summary = TeacherProcess(cfg).run(max_refreshes=1, idle_exit_s=20)
    assert summary["refreshes"] == 1
    assert "teacher offsets not committed" in caplog.text  # the group really dropped it
    monkeypatch.setattr(_teacher_process, "run_job", original)
    again = TeacherProcess(cfg)
    assert len(again.window_users) == len(events)
    summary2 = again.run(idle_exit_s=3)
    assert summary2["events_seen"] == len(events)  # not re-read after the failed commit
    assert len(again.window_users) == len(events)
