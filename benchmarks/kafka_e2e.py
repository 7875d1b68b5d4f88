"""End-to-end catch-up throughput of one processor: Kafka -> Learner -> Redis.

Run: ``kdstream local up`` then ``.venv/bin/python benchmarks/kafka_e2e.py [--json]
[--events 200000] [--broker 127.0.0.1:9092] [--redis redis://127.0.0.1:6379]``.

Pre-fills a fresh topic with ``--events`` JSON events, then drains it with the kafka-python
processor loop (the same code as ``kdstream processor``) into Redis, and reports events/s and
the events lost (produced - learned - dead-lettered, from the store's counters).
Not measured yet (see the report): latency at a sustained rate and the bare faust agent rate.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from kdstream.settings import Settings
from kdstream.stream import Event, encode_event
from kdstream.stream._kafka_admin import create_topics, default_topics
from kdstream.stream._kafka_producer import KafkaEventProducer
from kdstream.stream._processor import KafkaProcessorLoop, store_counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--broker", default="127.0.0.1:9092")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    create_topics(args.broker, default_topics(prefix, partitions=args.partitions))
    topic = f"{prefix}.events"
    t0 = time.perf_counter()
    with KafkaEventProducer(args.broker, linger_ms=20) as producer:
        for n in range(args.events):
            e = Event(f"u{(n * 7919) % 6000}", f"i{(n * n) % 3700}", "click", 1.7e9 + n)
            producer.send(topic, encode_event(e), key=e.user)
    produce_s = time.perf_counter() - t0
    from kdstream.cli_runtime import build_processor

    settings = Settings.load(
        {"broker": f"kafka://{args.broker}", "store": args.redis, "namespace": prefix,
         "events_topic": topic, "soft_labels_topic": f"{prefix}.soft-labels",
         "dlq_topic": f"{prefix}.events.dlq"}, env={},
    )
    core = build_processor(settings)
    loop = KafkaProcessorLoop(args.broker, core, group=f"{prefix}-g", batch_size=args.batch)
    start = None
    consumed = 0

    orig = core.process

    def timed(records, now=None):  # type: ignore[no-untyped-def]
        nonlocal start, consumed
        if start is None:
            start = time.perf_counter()
        consumed += len(records)
        out = orig(records, now)
        if consumed >= args.events:
            loop.stop.set()
        return out

    core.process = timed  # type: ignore[method-assign]
    loop.run(idle_exit_s=10)
    seconds = time.perf_counter() - (start or time.perf_counter())
    counts = store_counts(core.store, topic, range(args.partitions))
    out = {
        "events": args.events,
        "events_per_s": round(args.events / seconds),
        "produce_events_per_s": round(args.events / produce_s),
        "seconds_learning": round(core.stats.seconds_learning, 2),
        "seconds_writing": round(core.stats.seconds_writing, 2),
        "seconds_total": round(seconds, 2),
        "bare_faust_events_per_s": None,
        "latency_p50_ms": None,
        "latency_p99_ms": None,
        "lost": args.events - counts["learned"] - counts["dead"],
    }
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
