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
