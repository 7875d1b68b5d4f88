"""Fault-injection scenarios against a real Kafka broker and Redis, shared by the tests in this
folder (small counts) and ``benchmarks/faults.py`` (full counts).

Every scenario runs a sustained event load (:class:`Load`: a producer thread at a fixed rate,
each event with a unique ``ts`` and one malformed record in ``bad_every``), injects its fault,
waits until the processors applied every produced record, and then checks the ledger per
event (:func:`check_ledger`): the processors run with ``--debug-ledger``, so the store holds
one ledger entry per learned event, written in the same MULTI/EXEC as the batch's offsets;
the dead letters are read back from the DLQ topic. ``lost`` counts produced events neither
learned nor dead-lettered, ``duplicated`` counts extra learnings of one event.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kdstream.local_cluster import (
    LocalClusterConfig,
    local_down,
    local_up,
    start_kafka,
    start_redis,
    stop_kafka,
)
from kdstream.stream import Event, encode_event
from kdstream.stream._kafka_admin import create_topics, default_topics
from kdstream.stream._processor import event_key, store_counts
from kdstream.stream._redis_store import RedisStore

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
T0 = 1.7e9


# ------------------------------------------------------------------------------ the cluster
@dataclass(frozen=True)
class FaultCluster:
    """A local Kafka + Redis this module may stop and restart."""

    cfg: LocalClusterConfig
    bootstrap: str
    redis_url: str


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def start_cluster(home: Path) -> FaultCluster:
    """A fresh cluster on free ports under ``home`` (the Kafka jars are cached)."""
    kafka_port, controller_port, redis_port = _free_ports(3)
    cfg = LocalClusterConfig.from_env(
        home=home, kafka_port=kafka_port, controller_port=controller_port, redis_port=redis_port
    )
    try:
        info = local_up(cfg)
    except Exception:
        local_down(cfg, wipe=True)
        raise
    return FaultCluster(cfg, info.kafka_bootstrap, info.redis_url)


def stop_cluster(cluster: FaultCluster) -> None:
    local_down(cluster.cfg, wipe=True)


def restart_kafka(cluster: FaultCluster, down_s: float) -> float:
    """Stop the broker (SIGTERM), keep it down ``down_s``; return when it answers again."""
    stop_kafka(cluster.cfg)
    time.sleep(down_s)
    start_kafka(cluster.cfg)
    return time.monotonic()


def restart_redis(cluster: FaultCluster, down_s: float) -> float:
    """``SHUTDOWN SAVE`` (the local Redis runs without persistence; a real deployment runs
    with AOF, see RELIABILITY.md), keep it down ``down_s``, start it again (it loads the RDB)."""
    import redis

    client = redis.Redis.from_url(cluster.redis_url)
    with contextlib.suppress(redis.exceptions.ConnectionError):
        client.shutdown(save=True)
    client.close()
    pid_file = cluster.cfg.home / "redis.pid"
    deadline = time.monotonic() + 10
    while _port_open(cluster.cfg.redis_port) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    time.sleep(down_s)
    start_redis(cluster.cfg)
    return time.monotonic()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------------------ the stream
@dataclass
class Topics:
    events: str
    soft: str
    dlq: str


def make_topics(bootstrap: str, prefix: str, partitions: int = PARTITIONS) -> Topics:
    create_topics(bootstrap, default_topics(prefix, partitions=partitions))
    return Topics(f"{prefix}.events", f"{prefix}.soft-labels", f"{prefix}.events.dlq")


def good_event(i: int, n_users: int = 500, n_items: int = 300) -> Event:
    """Event number ``i``; its ``ts`` (``T0 + i``) makes its ledger key unique."""
    return Event(f"u{(7 * i) % n_users}", f"i{(i * i) % n_items}", "click", T0 + i)


def bad_record(i: int) -> bytes:
    """A malformed record whose marker (``bad-<i>``) survives into its dead letter."""
    return json.dumps({"user": "u0", "item": "i0", "ts": f"bad-{i}"}).encode()


class Load(threading.Thread):
    """Produce events at ``rate`` per second until :meth:`finish`; one in ``bad_every`` is
    malformed. Only records the broker acknowledged count as produced."""

    def __init__(self, bootstrap: str, topic: str, rate: float, bad_every: int = 97) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaProducer

        self.topic = topic
        self.rate = rate
        self.bad_every = bad_every
        # idempotent, so a broker restart does not make the producer itself write twice
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, retries=1_000_000,
            enable_idempotence=True, max_in_flight_requests_per_connection=1,
            delivery_timeout_ms=300_000, max_block_ms=300_000, request_timeout_ms=10_000,
            reconnect_backoff_max_ms=1000,
        )
        self._lock = threading.Lock()
        self.good: set[str] = set()
        self.bad: set[str] = set()
        self.failed = 0
        self.sent = 0
        self._halt = threading.Event()

    def _ok(self, key: str, bad: bool) -> Any:
        def callback(_meta: object) -> None:
            with self._lock:
                (self.bad if bad else self.good).add(key)

        return callback

    def _failed(self, _exc: BaseException) -> None:
        with self._lock:
            self.failed += 1

    def run(self) -> None:
        start = time.monotonic()
        i = 0
        while not self._halt.is_set():
            due = int((time.monotonic() - start) * self.rate) + 1
            while i < due and not self._halt.is_set():
                if self.bad_every and i % self.bad_every == self.bad_every - 1:
                    value, key, bad = bad_record(i), f"bad-{i}", True
                    user = "u0"
                else:
                    e = good_event(i)
                    value, key, bad, user = encode_event(e), event_key(e), False, e.user
                future = self.producer.send(self.topic, value=value, key=user.encode())
                future.add_callback(self._ok(key, bad))
                future.add_errback(self._failed)
                i += 1
                self.sent = i
            time.sleep(0.01)

    def finish(self, timeout: float = 300) -> None:
        self._halt.set()
        self.join(timeout)
        self.producer.flush(timeout=timeout)
        self.producer.close()

    @property
    def produced(self) -> int:
        with self._lock:
            return len(self.good) + len(self.bad)


# ------------------------------------------------------------------------------ processors
class Processor:
    """``kdstream processor --engine kafka --debug-ledger`` in a subprocess (logs to a file)."""

    live: ClassVar[list[Processor]] = []  # every one started and not yet reaped (see kill_all)

    def __init__(
        self, cluster: FaultCluster, prefix: str, topics: Topics, log_dir: Path,
        group: str | None = None, batch_size: int = 100, name: str = "p",
    ) -> None:
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        cmd = [
            sys.executable, "-m", "kdstream.cli_runtime", "processor", "--engine", "kafka",
            "--broker", f"kafka://{cluster.bootstrap}", "--store", cluster.redis_url,
            "--namespace", prefix, "--events-topic", topics.events,
            "--soft-labels-topic", topics.soft, "--dlq-topic", topics.dlq,
            "--group", group or f"{prefix}-proc", "--batch-size", str(batch_size),
            "--dim", "16", "--sync-every-s", "0.5", "--debug-ledger",
        ]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        Processor.live.append(self)

    def _reap(self) -> None:
        if self in Processor.live:
            Processor.live.remove(self)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reap()

    def stop(self, timeout: float = 60) -> dict[str, Any]:
        """SIGTERM (the loop finishes its batch and exits); its final stats."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return {}
        self._reap()
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if self.proc.returncode == 0 and lines else {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_assigned(procs: list[Processor], timeout: float = 90) -> bool:
    """Block until each processor's latest ``assigned partitions`` log line is non-empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = [re.findall(r"assigned partitions (\[.*?\])", p.log())[-1:] for p in procs]
        if all(found and found[0] != "[]" for found in latest):
            return True
        time.sleep(0.2)
    return False


def kill_all() -> None:
    """SIGKILL every processor a scenario left running (after a failure)."""
    for p in list(Processor.live):
        if p.proc.poll() is None:
            p.kill()
        else:
            p.proc.wait()
            p._reap()


# ------------------------------------------------------------------------------ the ledger
@dataclass
class ScenarioResult:
    """Figures of one scenario (``extra`` holds scenario-specific ones)."""

    produced: int = 0
    learned: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def store_of(cluster: FaultCluster, prefix: str) -> RedisStore:
    return RedisStore(cluster.redis_url, namespace=prefix)


def counts(cluster: FaultCluster, prefix: str, topics: Topics) -> dict[str, int]:
    return store_counts(store_of(cluster, prefix), topics.events, range(PARTITIONS))


def wait_applied(
    cluster: FaultCluster, prefix: str, topics: Topics, total: int, timeout: float = 180
) -> dict[str, int]:
    """Block until the store's applied offsets cover ``total`` records."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = counts(cluster, prefix, topics)
        except Exception:  # Redis may be coming back
            c = {"applied": -1}
        if c["applied"] >= total or time.monotonic() > deadline:
            return c
        time.sleep(0.2)


def wait_progress(
    cluster: FaultCluster, prefix: str, topics: Topics, beyond: int, timeout: float = 120
) -> float:
    """Seconds until the store's applied count passes ``beyond`` (a batch was committed)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(Exception):
            if counts(cluster, prefix, topics)["applied"] > beyond:
                return time.monotonic() - start
        time.sleep(0.05)
    return float("inf")


def read_dlq(bootstrap: str, topic: str, timeout: float = 10) -> set[str]:
    """Markers (``bad-<i>``) of every dead letter on the DLQ, deduplicated."""
    from kafka import KafkaConsumer, TopicPartition

    from kdstream.stream import DeadLetter

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    out: set[str] = set()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        deadline = time.monotonic() + timeout
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for r in batch:
                    letter = DeadLetter.from_bytes(r.value)
                    out.add(json.loads(letter.raw)["ts"])
        return out
    finally:
        consumer.close()


def topic_event_counts(bootstrap: str, topic: str, timeout: float = 30) -> dict[str, int]:
    """How many records of each good event (by ``event_key``) the events topic holds.

    A producer retry across a broker restart can write a record twice; the processor then
    rightly learns both records. The ledger's ``duplicated`` counts only learning beyond this.
    """
    from collections import Counter

    from kafka import KafkaConsumer, TopicPartition

    from kdstream.errors import DecodeError
    from kdstream.stream import decode_event

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    out: Counter[str] = Counter()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for r in batch:
                    with contextlib.suppress(DecodeError):
                        out[event_key(decode_event(r.value))] += 1
        return dict(out)
    finally:
        consumer.close()


def check_ledger(
    cluster: FaultCluster, prefix: str, topics: Topics, load: Load, recovery_s: float = 0.0
) -> ScenarioResult:
    """Per-event accounting of everything ``load`` produced."""
    total = load.produced
    wait_applied(cluster, prefix, topics, total)
    # store_counts reads counters and offsets in separate calls: read again once all is applied
    time.sleep(0.5)
    c = counts(cluster, prefix, topics)
    ledger = store_of(cluster, prefix).ledger()
    learned_set = set(ledger)
    dlq = read_dlq(cluster.bootstrap, topics.dlq)
    lost_good = load.good - learned_set
    lost_bad = load.bad - dlq
    in_topic = topic_event_counts(cluster.bootstrap, topics.events)
    learned_count: dict[str, int] = {}
    for key in ledger:
        learned_count[key] = learned_count.get(key, 0) + 1
    # learned more often than the topic holds the event: the processor learned a record twice
    duplicated = sum(max(0, n - in_topic.get(k, 1)) for k, n in learned_count.items())
    return ScenarioResult(
        produced=total,
        learned=len(ledger),
        dead_lettered=c.get("dead", 0),
        lost=len(lost_good) + len(lost_bad),
        duplicated=duplicated,
        recovery_s=round(recovery_s, 2),
        extra={
            "applied": c.get("applied", 0),
            "learned_counter": c.get("learned", 0),
            "dlq_distinct": len(dlq),
            "unexpected": len(learned_set - load.good),
            "producer_failed": load.failed,
            "producer_duplicates": sum(n - 1 for n in in_topic.values() if n > 1),
        },
    )


# ------------------------------------------------------------------------------ scenarios
def scenario_processor_kills(
    cluster: FaultCluster, prefix: str, log_dir: Path, kills: int, rate: float = 400,
    seed: int = 7,
) -> ScenarioResult:
    """One processor SIGKILLed at random points under load and restarted each time."""
    rng = random.Random(seed)
    topics = make_topics(cluster.bootstrap, prefix)
    load = Load(cluster.bootstrap, topics.events, rate)
    proc = Processor(cluster, prefix, topics, log_dir)
    load.start()
    recoveries: list[float] = []
    try:
        wait_progress(cluster, prefix, topics, 0)
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 2.5))
            proc.kill()
            at_kill = counts(cluster, prefix, topics)["applied"]
            proc = Processor(cluster, prefix, topics, log_dir)
            recoveries.append(wait_progress(cluster, prefix, topics, at_kill))
        time.sleep(1)
    finally:
        load.finish()
    result = check_ledger(cluster, prefix, topics, load, max(recoveries, default=0.0))
    proc.stop()
    result.extra["kills"] = kills
    result.extra["recovery_mean_s"] = round(sum(recoveries) / max(len(recoveries), 1), 2)
    return result


def scenario_kill_mid_rebalance(
    cluster: FaultCluster, prefix: str, log_dir: Path, rate: float = 400
) -> ScenarioResult:
    """Two processors in one group; a third joins (a rebalance) and one of the first two is
    SIGKILLed while the group rebalances."""
    topics = make_topics(cluster.bootstrap, prefix)
    group = f"{prefix}-grp"
    load = Load(cluster.bootstrap, topics.events, rate)
    a = Processor(cluster, prefix, topics, log_dir, group=group, name="a")
    b = Processor(cluster, prefix, topics, log_dir, group=group, name="b")
    load.start()
    try:
        wait_progress(cluster, prefix, topics, 0)
        time.sleep(4)  # both members in the group
        c = Processor(cluster, prefix, topics, log_dir, group=group, name="c")
        time.sleep(0.7)  # the join has started a rebalance
        b.kill()
        at_kill = counts(cluster, prefix, topics)["applied"]
        recovery = wait_progress(cluster, prefix, topics, at_kill + int(rate))
        # the group may settle after the store moved on (b's session still running out):
        # keep the load up until both survivors hold partitions, then two more seconds
        wait_assigned([a, c])
        time.sleep(2)
    finally:
        load.finish()
    result = check_ledger(cluster, prefix, topics, load, recovery)
    stats = [a.stop(), c.stop()]
    result.extra["learned_by_survivors"] = [s.get("learned", 0) for s in stats]
    return result


def scenario_kafka_restart(
    cluster: FaultCluster, prefix: str, log_dir: Path, down_s: float = 5, rate: float = 400
) -> ScenarioResult:
    """The broker stopped (SIGTERM) for ``down_s`` and started again under load."""
    topics = make_topics(cluster.bootstrap, prefix)
    load = Load(cluster.bootstrap, topics.events, rate)
    proc = Processor(cluster, prefix, topics, log_dir)
    load.start()
    try:
        wait_progress(cluster, prefix, topics, 0)
        time.sleep(2)
        restart_kafka(cluster, down_s)
        at_up = counts(cluster, prefix, topics)["applied"]
        recovery = wait_progress(cluster, prefix, topics, at_up)
        time.sleep(2)
    finally:
        load.finish()
    result = check_ledger(cluster, prefix, topics, load, recovery)
    proc.stop()
    result.extra["down_s"] = down_s
    return result


def scenario_redis_restart(
    cluster: FaultCluster, prefix: str, log_dir: Path, down_s: float = 5, rate: float = 400,
    during_outage: Any = None,
) -> ScenarioResult:
    """Redis shut down for ``down_s`` and started again under load; ``during_outage()`` runs
    while it is down (the test queries the API there)."""
    topics = make_topics(cluster.bootstrap, prefix)
    load = Load(cluster.bootstrap, topics.events, rate)
    proc = Processor(cluster, prefix, topics, log_dir)
    load.start()
    outage: dict[str, Any] = {}
    try:
        wait_progress(cluster, prefix, topics, 0)
        time.sleep(2)
        import redis

        redis.Redis.from_url(cluster.redis_url).shutdown(save=True)
        t_down = time.monotonic()
        while _port_open(cluster.cfg.redis_port):
            time.sleep(0.05)
        (cluster.cfg.home / "redis.pid").unlink(missing_ok=True)
        if during_outage is not None:
            outage = during_outage() or {}
        time.sleep(max(0.0, down_s - (time.monotonic() - t_down)))
        start_redis(cluster.cfg)
        at_up = counts(cluster, prefix, topics)["applied"]
        recovery = wait_progress(cluster, prefix, topics, at_up)
        time.sleep(2)
    finally:
        load.finish()
    result = check_ledger(cluster, prefix, topics, load, recovery)
    alive_after = proc.proc.poll() is None
    proc.stop()
    log = proc.log()
    result.extra.update(
        down_s=down_s,
        processor_survived=alive_after,
        retry_log_lines=log.count("store write failed") + log.count("retrying"),
        outage=outage,
    )
    return result


# ------------------------------------------------------------------------------ the teacher
class Teacher:
    """``kdstream teacher`` in a subprocess, refreshing every ``every_s`` seconds (logs to a
    file); its state (model, window) lives under ``state_dir`` across restarts. With
    ``fit_delay_s`` each training step first sleeps that long (``slow_teacher.py``)."""

    def __init__(
        self, cluster: FaultCluster, topics: Topics, prefix: str, state_dir: Path,
        log_dir: Path, every_s: float = 2.0, fit_delay_s: float | None = None,
    ) -> None:
        self.log_path = log_dir / f"teacher-{time.monotonic_ns()}.log"
        # fit_delay_s: a slow training step, injected by a wrapper script (scenario 6)
        main = (["-m", "kdstream.cli_runtime"] if fit_delay_s is None else
                [str(Path(__file__).with_name("slow_teacher.py")), str(fit_delay_s)])
        cmd = [
            sys.executable, *main, "teacher",
            "--broker", f"kafka://{cluster.bootstrap}", "--events-topic", topics.events,
            "--soft-labels-topic", topics.soft, "--dlq-topic", topics.dlq,
            "--teacher-group", f"{prefix}-teacher", "--state-dir", str(state_dir),
            "--teacher-every-events", "100000000", "--teacher-every-seconds", str(every_s),
            "--window-events", "5000", "--epochs", "1",
        ]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._log
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _versions(cluster: FaultCluster, prefix: str) -> dict[str, int]:
    try:
        return store_of(cluster, prefix).versions()
    except Exception:  # a transient store error reads as "nothing yet"
        return {}


def wait_teacher_version(
    cluster: FaultCluster, prefix: str, beyond: int, timeout: float = 180,
    samples: list[tuple[float, int, int]] | None = None,
) -> float:
    """Seconds until the store's teacher version passes ``beyond`` (inf on timeout);
    ``samples`` collects ``(time, teacher version, kd_alpha_ppm)`` meanwhile."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        v = _versions(cluster, prefix)
        if samples is not None:
            samples.append((time.monotonic(), v.get("teacher", 0), v.get("kd_alpha_ppm", 0)))
        if v.get("teacher", 0) > beyond:
            return time.monotonic() - start
        time.sleep(0.2)
    return float("inf")


def scenario_teacher_outage(
    cluster: FaultCluster, prefix: str, log_dir: Path, every_s: float = 2.0,
    down_intervals: int = 5, rate: float = 300,
) -> ScenarioResult:
    """The teacher SIGKILLed after two refreshes and kept down ``down_intervals`` refresh
    intervals under load, then restarted: the student keeps learning (applied offsets
    advance), the soft labels' mixing weight (``kd_alpha_ppm``) fades, ``/healthz`` turns
    ``degraded`` (teacher too old), and a new teacher version reaches the store after the
    restart (``recovery_s``: restart -> new version in the store)."""
    from kdstream.api import StoreServingService

    topics = make_topics(cluster.bootstrap, prefix)
    state_dir = log_dir / f"teacher-state-{prefix}"
    load = Load(cluster.bootstrap, topics.events, rate)
    proc = Processor(cluster, prefix, topics, log_dir)
    teacher = Teacher(cluster, topics, prefix, state_dir, log_dir, every_s)
    load.start()
    before: list[tuple[float, int, int]] = []
    during: list[tuple[float, int, int]] = []
    after: list[tuple[float, int, int]] = []
    health: dict[str, Any] = {}
    try:
        wait_progress(cluster, prefix, topics, 0)
        if wait_teacher_version(cluster, prefix, 1, samples=before) == float("inf"):
            raise AssertionError(f"no second teacher version; teacher log:\n{teacher.log()}")
        time.sleep(every_s)  # labels of the latest version are in use
        before.append((time.monotonic(), *(_versions(cluster, prefix).get(k, 0)
                                            for k in ("teacher", "kd_alpha_ppm"))))
        teacher.kill()
        v_kill = _versions(cluster, prefix).get("teacher", 0)
        applied_kill = counts(cluster, prefix, topics)["applied"]
        t_kill = time.monotonic()
        while time.monotonic() - t_kill < down_intervals * every_s:
            v = _versions(cluster, prefix)
            during.append((time.monotonic(), v.get("teacher", 0), v.get("kd_alpha_ppm", 0)))
            time.sleep(0.25)
        applied_down = counts(cluster, prefix, topics)["applied"]
        service = StoreServingService(store_of(cluster, prefix), teacher_stale_s=2 * every_s)
        health = service.health()
        teacher = Teacher(cluster, topics, prefix, state_dir, log_dir, every_s)
        recovery = wait_teacher_version(cluster, prefix, v_kill, samples=after)
        # distillation resumes: labels of the new version mix in again
        deadline = time.monotonic() + 10 * every_s
        while time.monotonic() < deadline and not any(a > 0 for _t, v, a in after if v > v_kill):
            v = _versions(cluster, prefix)
            after.append((time.monotonic(), v.get("teacher", 0), v.get("kd_alpha_ppm", 0)))
            time.sleep(0.2)
        health_after = StoreServingService(
            store_of(cluster, prefix), teacher_stale_s=2 * every_s
        ).health()
    finally:
        load.finish()
        teacher.kill()
    result = check_ledger(cluster, prefix, topics, load, recovery)
    proc.stop()
    result.extra.update(
        every_s=every_s,
        down_s=round(down_intervals * every_s, 1),
        teacher_version_at_kill=v_kill,
        teacher_version_after=max((v for _t, v, _a in after), default=0),
        applied_during_outage=applied_down - applied_kill,
        alpha_ppm_before_kill=before[-1][2],
        alpha_ppm_max_before_kill=max(a for _t, _v, a in before),
        alpha_ppm_end_of_outage=during[-1][2] if during else None,
        alpha_ppm_after_restart=max((a for _t, v, a in after if v > v_kill), default=0),
        health_during_outage=health.get("status"),
        teacher_age_s_during_outage=round(health["checks"]["teacher"]["age_s"] or 0.0, 1),
        health_after_restart=health_after.get("status"),
    )
    return result
