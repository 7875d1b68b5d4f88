"""Parity of the Kafka runtime with the embedded one: prequential HR@10 on the same stream.

Run: ``kdstream local up`` then ``.venv/bin/python benchmarks/kafka_parity.py [--json]
[--dataset ml-100k] [--limit N] [--broker 127.0.0.1:9092] [--redis redis://127.0.0.1:6379]``.

Three runs on the same events, seed and models (``kdstream evaluate``'s wiring,
:func:`kdstream.stream._runtime.scaled_config`, with the batch size and refresh interval
rounded so that refreshes and label deadlines fall on batch boundaries):

1. **embedded**: :class:`~kdstream.stream._runtime.EmbeddedPipeline` with the ``student`` and
   ``student+kd`` variants side by side (its :class:`~kdstream.online.Prequential` harness
   computes their HR@10 / NDCG@10);
2. **Kafka, student+kd**: the events replayed through a fresh ``<prefix>.events`` topic into
   one processor (:class:`~kdstream.stream._processor.KafkaProcessorLoop` over a
   :class:`~kdstream.stream._processor.ProcessorCore` on Redis, as ``kdstream processor
   --engine kafka`` builds it, here with ``prequential_k=10``) and one teacher process
   (:class:`~kdstream.stream._teacher_process.TeacherProcess`, as ``kdstream teacher`` builds
   it, with the embedded run's teacher config); both are subprocesses of this script. HR@10 is
   read from the store's exactly-once prequential counters;
3. **Kafka, student only**: the same without teacher (``distill=False``), topic pre-filled.

What makes the comparison fair (the embedded runtime's deterministic mode is the reference):

- the same event order: one partition by default (the embedded consumer interleaves
  partitions by fair shares, Kafka by fetches; ``--partitions`` changes both);
- micro-batches of the same size (``--batch``; Kafka polls may return fewer, counted);
- teacher refresh ``k`` trains on exactly the first ``k * every`` events in both runs (the
  teacher process splits a poll at the boundary) with the same config, window and seed;
- the labels of refresh ``k`` become visible after event ``k * every + delay`` in both runs:
  the embedded runtime waits for the teacher there; in the Kafka run the replay stops
  producing at that point until the processor has applied them, and the processor here holds
  labels that arrive earlier until its stream reaches that point (the label positions are
  reported: they must equal the embedded ones).

What still differs, and is what this measures: the processor's deterministic item
initialisation and item-table sync, soft labels through the JSON codec and the compacted
topic, Kafka's batch boundaries, and the teacher trained in another process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
K = 10


def parity_config(
    n_events: int,
    seed: int,
    batch: int,
    partitions: int,
    every: int | None = None,
    teacher_epochs: int | None = None,
    teacher_dim: int | None = None,
) -> Any:
    """``kdstream evaluate``'s pipeline for ``n_events``, with refreshes on batch boundaries
    (``every``, ``teacher_epochs``, ``teacher_dim``: overrides for small test runs)."""
    from kdstream.stream._runtime import scaled_config

    cfg = scaled_config(
        n_events, seed, batch_size=batch, k=K, partitions=partitions,
        variants=("student", "student+kd"),
    )

    def up(x: int) -> int:
        return max(batch, math.ceil(x / batch) * batch)

    every = up(every or cfg.refresh.every_events or n_events)
    teacher = cfg.teacher
    if teacher_epochs:
        teacher = replace(teacher, epochs=teacher_epochs)
    if teacher_dim:
        teacher = replace(teacher, dim=teacher_dim)
    return replace(
        cfg,
        refresh=replace(cfg.refresh, every_events=every, min_events=min(cfg.refresh.min_events,
                                                                        every)),
        label_delay_events=up(max(500, every // 10)),
        teacher=replace(teacher, window_events=min(2 * every, 200_000)),
    )


def _config_of(a: argparse.Namespace) -> Any:
    return parity_config(a.n_events, a.seed, a.batch, a.partitions, a.every, a.teacher_epochs,
                         a.teacher_dim)


def load(dataset: str, limit: int | None) -> Any:
    from kdstream.replay import read_log

    path = Path(dataset)
    if not path.exists():
        path = DATASETS / dataset
    if path.is_dir():
        path = next(p for p in (path / "u.data", path / "ratings.dat.gz") if p.exists())
    columns, _ = read_log(path, limit=limit)
    return columns


# ----------------------------------------------------------------------------- embedded
def embedded(columns: Any, cfg: Any) -> dict[str, Any]:
    from kdstream.stream._runtime import EmbeddedPipeline

    pipeline = EmbeddedPipeline(cfg)
    for start in range(0, len(columns), 8192):
        pipeline.produce(columns.slice(start, start + 8192).to_events())
    t0 = time.perf_counter()
    stats = pipeline.run()
    rep = pipeline.prequential.report
    out: dict[str, Any] = {"seconds": round(time.perf_counter() - t0, 1),
                           "refresh_positions": list(stats.refresh_positions),
                           "soft_labels_applied": stats.soft_labels_applied}
    for name in ("student", "student+kd"):
        m = rep.metrics[name]
        out[name] = {"hr@10": round(m.hr, 6), "ndcg@10": round(m.ndcg_at_k, 6), "scored": m.n}
    return out


# ------------------------------------------------------------------------ subprocesses
def _role_processor(a: argparse.Namespace) -> None:
    """The processor, built like ``kdstream processor --engine kafka`` (Redis store and hub),
    holding soft labels back until their deadline (see the module docstring)."""
    from kdstream.stream import StoreBatch
    from kdstream.stream._processor import (
        KafkaProcessorLoop,
        ProcessorConfig,
        ProcessorCore,
        StoreItemHub,
    )
    from kdstream.stream._redis_store import RedisStore

    cfg = _config_of(a)
    learner = cfg.learner if a.distill else replace(cfg.learner, distill=False)
    store = RedisStore(a.redis, namespace=a.namespace)
    hub = StoreItemHub(RedisStore(a.redis, namespace=f"{a.namespace}.hub"), cfg.student.dim)
    core = ProcessorCore(store, ProcessorConfig(
        events_topic=f"{a.prefix}.events", soft_labels_topic=f"{a.prefix}.soft-labels",
        dlq_topic=f"{a.prefix}.events.dlq", student=cfg.student, learner=learner,
        prequential_k=K, write_retries=0,
    ), hub=hub)
    every, delay = cfg.refresh.every_events, cfg.label_delay_events
    held: list[tuple[int, Any]] = []  # (teacher version, record)
    position: dict[int, int] = {}
    applied_at: dict[int, int] = {}
    apply = core.apply_soft_labels
    process = core.process

    def consumed() -> int:
        return sum(off for off, _l, _d in core.counts().values())

    def release() -> None:
        at = consumed()
        ready = [r for version, r in held if at >= version * every + delay]
        if not ready:
            return
        for version, _r in held:
            if at >= version * every + delay:
                applied_at.setdefault(version, at)
        held[:] = [(v, r) for v, r in held if at < v * every + delay]
        for r in ready:
            position[r.partition] = max(position.get(r.partition, 0), r.offset + 1)
        apply(ready)
        store.write_batch(StoreBatch(versions={"parity_soft_position": sum(position.values())}))

    def hold(records: Any) -> int:
        from kdstream.stream._codec import decode_soft_labels

        held.extend((decode_soft_labels(r.value).teacher_version, r) for r in records)
        release()
        return 0

    def process_after_release(records: Any, now: float | None = None) -> Any:
        release()
        return process(records, now)

    core.apply_soft_labels = hold  # type: ignore[method-assign]
    core.process = process_after_release  # type: ignore[method-assign]
    loop = KafkaProcessorLoop(a.broker, core, group=f"{a.prefix}-processor", batch_size=a.batch)
    signal.signal(signal.SIGTERM, lambda *_a: loop.stop.set())
    stats = loop.run(idle_exit_s=a.idle_exit_s)
    print(json.dumps({"batches": stats.batches, "learned": stats.learned,
                      "soft_labels_applied": stats.soft_labels_applied,
                      "labels_applied_at": applied_at}), flush=True)


def _role_teacher(a: argparse.Namespace) -> None:
    """The teacher process with the embedded run's teacher config and refresh points."""
    from kdstream.stream._teacher_process import TeacherProcess, TeacherProcessConfig

    cfg = _config_of(a)
    proc = TeacherProcess(TeacherProcessConfig(
        bootstrap=a.broker, events_topic=f"{a.prefix}.events",
        soft_labels_topic=f"{a.prefix}.soft-labels", group=f"{a.prefix}-teacher",
        state_dir=Path(a.state_dir), every_events=cfg.refresh.every_events,
        min_events=cfg.refresh.min_events, window_events=cfg.teacher.window_events,
        transition_items=cfg.transition_items,
        teacher=replace(cfg.teacher, device="cpu"), window_positives_only=False,
    ))
    print(json.dumps(proc.run(idle_exit_s=a.idle_exit_s)), flush=True)


def _spawn(role: str, args: argparse.Namespace, prefix: str, **extra: Any) -> Any:
    cmd = [sys.executable, str(Path(__file__).resolve()), f"_{role}", "--broker", args.broker,
           "--redis", args.redis, "--prefix", prefix, "--n-events", str(args.n_events),
           "--seed", str(args.seed), "--batch", str(args.batch),
           "--partitions", str(args.partitions)]
    for name in ("every", "teacher_epochs", "teacher_dim"):
        if getattr(args, name, None):
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    # stderr to a file: a full pipe nobody reads would block the subprocess
    fd, path = tempfile.mkstemp(prefix=f"kdparity-{role}-", suffix=".log")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=fd,
                            text=True)
    os.close(fd)
    proc.err_path = path  # type: ignore[attr-defined]
    return proc


def _tail(proc: Any) -> str:
    return Path(proc.err_path).read_text()[-3000:]


def _finish(proc: Any, timeout: float = 120) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess exited {proc.returncode}: {_tail(proc)}")
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- Kafka runs
class _Watch:
    """What the replay waits on: store counters, the teacher's commits, the label topic."""

    def __init__(self, args: argparse.Namespace, prefix: str, namespace: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from kdstream.stream._redis_store import RedisStore

        self.store = RedisStore(args.redis, namespace=namespace)
        self.topic = f"{prefix}.events"
        self.parts = range(args.partitions)
        self.events_tps = [TopicPartition(self.topic, p) for p in self.parts]
        self.soft_tps = [TopicPartition(f"{prefix}.soft-labels", p) for p in self.parts]
        self.teacher = KafkaConsumer(bootstrap_servers=args.broker,
                                     group_id=f"{prefix}-teacher", enable_auto_commit=False)
        self.plain = KafkaConsumer(bootstrap_servers=args.broker, group_id=None)

    def consumed(self) -> int:
        from kdstream.stream._processor import store_counts

        c = store_counts(self.store, self.topic, self.parts)
        return c["applied"]

    def teacher_at(self) -> int:
        return sum(self.teacher.committed(tp) or 0 for tp in self.events_tps)

    def labels_end(self) -> int:
        return sum(self.plain.end_offsets(self.soft_tps).values())

    def labels_applied(self) -> int:
        return self.store.versions().get("parity_soft_position", 0)

    def close(self) -> None:
        self.teacher.close()
        self.plain.close()


def _wait(what: str, cond: Any, procs: list[Any], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"waiting for {what}: a subprocess exited: {_tail(p)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {what}")
        time.sleep(0.02)


def kafka_run(args: argparse.Namespace, columns: Any, cfg: Any, distill: bool,
              log: Any) -> dict[str, Any]:
    from kdstream.stream import encode_event
    from kdstream.stream._kafka_admin import create_topics, default_topics
    from kdstream.stream._kafka_producer import KafkaEventProducer
    from kdstream.stream._processor import store_prequential

    prefix = f"par{uuid.uuid4().hex[:8]}"
    create_topics(args.broker, default_topics(prefix, partitions=args.partitions))
    topic = f"{prefix}.events"
    events = columns.to_events()
    n = len(events)
    watch = _Watch(args, prefix, prefix)
    procs = [_spawn("processor", args, prefix, namespace=prefix, distill=int(distill),
                    idle_exit_s=args.idle_exit_s)]
    state = tempfile.mkdtemp(prefix="kdparity-teacher-")
    every, delay = cfg.refresh.every_events, cfg.label_delay_events
    # (refresh position, label deadline) of every refresh whose labels the stream uses
    schedule = [(r, r + delay) for r in range(every, n, every)
                if r >= cfg.refresh.min_events and r + delay < n] if distill else []
    if distill:
        procs.append(_spawn("teacher", args, prefix, state_dir=state, idle_exit_s=3600))
    t0 = time.perf_counter()
    produced = 0
    with KafkaEventProducer(args.broker, linger_ms=5) as producer:

        def produce_to(end: int) -> None:
            nonlocal produced
            for e in events[produced:end]:
                producer.send(topic, encode_event(e), key=e.user)
            producer.flush()
            produced = end

        for k, (refresh_at, deadline) in enumerate(schedule, start=1):
            produce_to(deadline)
            _wait(f"processor at {deadline}", lambda d=deadline: watch.consumed() >= d, procs)
            _wait(f"teacher refresh {k}", lambda r=refresh_at: watch.teacher_at() >= r, procs)
            _wait(f"labels of refresh {k} applied",
                  lambda: watch.labels_applied() >= watch.labels_end(), procs)
            log(f"  refresh {k} at {refresh_at}: labels applied at {deadline} "
                f"({time.perf_counter() - t0:.0f}s)")
        produce_to(n)
    _wait("processor at the end", lambda: watch.consumed() >= n, procs)
    seconds = time.perf_counter() - t0
    if distill:
        procs[1].kill()  # it may be training on the whole stream: nobody uses that
        procs[1].communicate(timeout=60)
    procs[0].terminate()  # the processor's SIGTERM handler: sync items, print its stats
    stats = _finish(procs[0])
    pq = store_prequential(watch.store, topic, range(args.partitions))
    watch.close()
    return {
        "hr@10": round(pq["hr"], 6), "ndcg@10": round(pq["ndcg"], 6), "scored": pq["scored"],
        "batches": stats["batches"], "seconds": round(seconds, 1),
        "soft_labels_applied": stats["soft_labels_applied"],
        "label_positions": sorted(int(v) for v in stats["labels_applied_at"].values()),
        "expected_label_positions": [d for _r, d in schedule],
    }


def _gap(kafka: float, emb: float) -> float | None:
    return round((kafka - emb) / emb, 4) if emb else None


def compare(args: argparse.Namespace, columns: Any, log: Any = print) -> dict[str, Any]:
    """The three runs on ``columns``; the figures as one flat dict."""
    args.broker = args.broker.removeprefix("kafka://")
    args.n_events = len(columns)
    cfg = _config_of(args)
    log(f"{args.n_events} events; refresh every {cfg.refresh.every_events}, labels visible "
        f"{cfg.label_delay_events} events later, batches of {args.batch}, "
        f"{args.partitions} partition(s)")
    emb = embedded(columns, cfg)
    log(f"embedded: {emb}")
    kd = kafka_run(args, columns, cfg, True, log)
    log(f"kafka student+kd: {kd}")
    out: dict[str, Any] = {
        "events": args.n_events,
        "embedded_hr@10": emb["student+kd"]["hr@10"],
        "kafka_hr@10": kd["hr@10"],
        "relative_gap": _gap(kd["hr@10"], emb["student+kd"]["hr@10"]),
        "embedded_ndcg@10": emb["student+kd"]["ndcg@10"],
        "kafka_ndcg@10": kd["ndcg@10"],
        "scored": [emb["student+kd"]["scored"], kd["scored"]],
        "label_positions_match": kd["label_positions"] == kd["expected_label_positions"],
        "kafka_batches": kd["batches"],
        "soft_labels_applied": [emb["soft_labels_applied"], kd["soft_labels_applied"]],
    }
    if not args.skip_student:
        st = kafka_run(args, columns, cfg, False, log)
        log(f"kafka student: {st}")
        out.update({
            "embedded_student_hr@10": emb["student"]["hr@10"],
            "kafka_student_hr@10": st["hr@10"],
            "student_relative_gap": _gap(st["hr@10"], emb["student"]["hr@10"]),
        })
    return out


def parser() -> argparse.ArgumentParser:
    """The command line (also the subprocess roles' and the integration test's options)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_argument  # the main command and the two subprocess roles share options
    sub("role", nargs="?", default="run", choices=("run", "_processor", "_teacher"))
    sub("--dataset", default="ml-100k")
    sub("--limit", type=int, default=None)
    sub("--broker", default="127.0.0.1:9092")
    sub("--redis", default="redis://127.0.0.1:6379")
    sub("--partitions", type=int, default=1)
    sub("--batch", type=int, default=250)
    sub("--seed", type=int, default=0)
    sub("--idle-exit-s", type=float, default=3600.0)
    sub("--skip-student", action="store_true", help="skip the student-only pair")
    sub("--every", type=int, default=None, help="teacher refresh interval (events)")
    sub("--teacher-epochs", type=int, default=None)
    sub("--teacher-dim", type=int, default=None)
    sub("--json", action="store_true")
    # subprocess roles
    sub("--prefix")
    sub("--namespace")
    sub("--n-events", type=int)
    sub("--distill", type=int, default=1)
    sub("--state-dir")
    return ap


def main() -> None:
    args = parser().parse_args()
    args.broker = args.broker.removeprefix("kafka://")
    if args.role == "_processor":
        _role_processor(args)
        return
    if args.role == "_teacher":
        _role_teacher(args)
        return
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else print
    out = compare(args, load(args.dataset, args.limit), log)
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
