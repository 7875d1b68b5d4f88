"""CLI commands of the distributed runtime: ``processor``, ``teacher``, ``topics``, ``local``,
``settings``.

Kafka SASL/TLS settings come from the environment or the TOML file only (no flags: a password
on a command line shows in ``ps``); ``kdstream settings`` prints the merged settings with every
secret masked.

Run ``kdstream processor --help`` (or ``python -m kdstream.cli_runtime processor --help``).
``add_parsers(sub)`` registers them on the main ``kdstream`` parser.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kdstream.settings import Settings, kafka_client_kwargs, topic_specs

_log = logging.getLogger("kdstream.cli")


def _settings(args: argparse.Namespace) -> Settings:
    names = (
        "broker", "store", "namespace", "events_topic", "soft_labels_topic", "dlq_topic",
        "partitions", "group", "batch_size", "teacher_every_events", "teacher_every_seconds",
        "state_dir",
    )
    overrides = {n: getattr(args, n, None) for n in names}
    settings = Settings.load(overrides, path=getattr(args, "config", None))
    _log.info("settings: %r", settings)  # repr masks every secret
    return settings


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file (also KDSTREAM_CONFIG)")
    p.add_argument("--broker", help="kafka://host:port (env KDSTREAM_BROKER)")
    p.add_argument("--store", help="redis://host:port/db or memory:// (env KDSTREAM_STORE)")
    p.add_argument("--namespace", help="Redis key namespace (env KDSTREAM_NAMESPACE)")
    p.add_argument("--events-topic", dest="events_topic")
    p.add_argument("--soft-labels-topic", dest="soft_labels_topic")
    p.add_argument("--dlq-topic", dest="dlq_topic")
    p.add_argument("--partitions", type=int)


def _stop_on_sigterm(stop: Any) -> None:
    signal.signal(signal.SIGTERM, lambda *_a: stop.set())


def build_processor(
    settings: Settings, dim: int = 32, sync_every_s: float = 2.0, debug_ledger: bool = False
) -> Any:
    """A :class:`~kdstream.stream._processor.ProcessorCore` wired to the settings' store and,
    for Redis, the shared item hub in the ``<namespace>.hub`` namespace."""
    from kdstream.settings import make_store
    from kdstream.stream._processor import (
        LocalItemHub,
        ProcessorConfig,
        ProcessorCore,
        StoreItemHub,
    )
    from kdstream.student import StudentConfig

    store = make_store(settings)
    if settings.store_kind() == "redis":
        from kdstream.stream._redis_store import RedisStore

        hub: Any = StoreItemHub(
            RedisStore(settings.store, namespace=f"{settings.namespace}.hub"), dim
        )
    else:
        hub = LocalItemHub()
    config = ProcessorConfig(
        events_topic=settings.events_topic,
        soft_labels_topic=settings.soft_labels_topic,
        dlq_topic=settings.dlq_topic,
        sync_every_s=sync_every_s,
        student=StudentConfig(dim=dim),
        # a store outage pauses the batch (logged, with backoff) instead of ending the process
        write_retries=0,
        debug_ledger=debug_ledger,
    )
    return ProcessorCore(store, config, hub=hub)


def _cmd_processor(args: argparse.Namespace) -> int:
    settings = _settings(args)
    bootstrap = ",".join(settings.kafka_bootstrap())
    core = build_processor(
        settings, dim=args.dim, sync_every_s=args.sync_every_s, debug_ledger=args.debug_ledger
    )
    # a rejected SASL login fails here with "Kafka authentication failed" (kafka-python
    # itself would report an incompatible broker version, aiokafka retry)
    from kdstream.stream._kafka_auth import check_kafka_login

    security = kafka_client_kwargs(settings)
    check_kafka_login(bootstrap, security)
    if args.engine == "faust":
        from kdstream.stream._faust_app import run_faust_processor

        stats = run_faust_processor(
            bootstrap, core, group=settings.group, batch_size=settings.batch_size,
            idle_exit_s=args.idle_exit_s, security=security,
        )
    else:
        from kdstream.stream._processor import KafkaProcessorLoop

        loop = KafkaProcessorLoop(
            bootstrap, core, group=settings.group, batch_size=settings.batch_size,
            security=security,
        )
        _stop_on_sigterm(loop.stop)
        stats = loop.run(idle_exit_s=args.idle_exit_s)
    print(json.dumps(asdict(stats)), flush=True)
    return 0


def _cmd_teacher(args: argparse.Namespace) -> int:
    from kdstream.stream._teacher_process import TeacherProcess, TeacherProcessConfig

    settings = _settings(args)
    cfg = TeacherProcessConfig(
        bootstrap=",".join(settings.kafka_bootstrap()),
        events_topic=settings.events_topic,
        soft_labels_topic=settings.soft_labels_topic,
        group=args.teacher_group,
        state_dir=Path(settings.state_dir) / "teacher",
        every_events=settings.teacher_every_events,
        every_seconds=settings.teacher_every_seconds,
        window_events=args.window_events,
        epochs=args.epochs,
        max_refresh_s=args.max_refresh_seconds,
    )
    from kdstream.stream._kafka_auth import check_kafka_login

    security = kafka_client_kwargs(settings)
    check_kafka_login(cfg.bootstrap, security)
    proc = TeacherProcess(cfg, security=security)
    _stop_on_sigterm(proc.stop)
    summary = proc.run(max_refreshes=args.max_refreshes, idle_exit_s=args.idle_exit_s)
    print(json.dumps(summary), flush=True)
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from kdstream.stream._kafka_admin import create_topics, describe_topics
    from kdstream.stream._kafka_auth import check_kafka_login

    settings = _settings(args)
    bootstrap = ",".join(settings.kafka_bootstrap())
    security = kafka_client_kwargs(settings)
    check_kafka_login(bootstrap, security)
    names = [settings.events_topic, settings.soft_labels_topic, settings.dlq_topic]
    if args.action == "create":
        results = create_topics(bootstrap, topic_specs(settings), security=security)
        print(json.dumps([asdict(r) for r in results]))
    else:
        described = describe_topics(bootstrap, names, security=security)
        print(json.dumps(described, default=str))
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    settings = Settings.load(path=args.config)
    if args.toml:
        print(settings.to_toml(), end="")
    else:
        print(json.dumps(settings.to_dict(), indent=2))
    return 0


def _cmd_local(args: argparse.Namespace) -> int:
    from kdstream.local_cluster import LocalClusterConfig, local_down, local_status, local_up

    overrides = {
        k: v
        for k, v in (
            ("home", args.home),
            ("kafka_port", args.kafka_port),
            ("redis_port", args.redis_port),
        )
        if v is not None
    }
    cfg = LocalClusterConfig.from_env(**overrides)
    if args.action == "up":
        info = local_up(cfg, log=lambda m: print(m, file=sys.stderr))
        print(f"kafka: {info.kafka_url}\nredis: {info.redis_url}")
        if info.kafka_sasl_bootstrap:  # KDSTREAM_LOCAL_SASL_USERS=user:password[,...]
            print(f"kafka (SASL_PLAINTEXT, PLAIN/SCRAM-SHA-256): kafka://{info.kafka_sasl_bootstrap}")
        if info.kafka_tls_bootstrap:  # KDSTREAM_LOCAL_TLS=1
            print(f"kafka (SSL, CA {info.tls_ca_file}): kafka://{info.kafka_tls_bootstrap}")
        if info.kafka_sasl_ssl_bootstrap:  # both of the above
            print(
                f"kafka (SASL_SSL, PLAIN/SCRAM-SHA-256, CA {info.tls_ca_file}): "
                f"kafka://{info.kafka_sasl_ssl_bootstrap}"
            )
        if info.tls_client_cert_file:  # KDSTREAM_LOCAL_TLS_CLIENT_AUTH=1
            print(
                f"kafka (SSL) requires a client certificate: {info.tls_client_cert_file}"
                f" (key {info.tls_client_key_file})"
            )
    elif args.action == "down":
        print(json.dumps(local_down(cfg, wipe=args.wipe)))
    else:
        print(json.dumps(local_status(cfg), default=str))
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``processor``, ``teacher``, ``topics``, ``local`` and ``settings`` on ``sub``."""
    p = sub.add_parser("processor", help="run a stream processor (Kafka -> Learner -> store)")
    _common(p)
    p.add_argument("--group", help="consumer group (env KDSTREAM_GROUP)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="records per micro-batch")
    p.add_argument("--engine", choices=("kafka", "faust"), default="kafka",
                   help="kafka: kafka-python loop (default, faster); faust: faust agent")
    p.add_argument("--dim", type=int, default=32, help="student dimension")
    p.add_argument("--sync-every-s", type=float, default=2.0, help="item-table sync period")
    p.add_argument("--idle-exit-s", type=float, default=None,
                   help="exit after this long without records (tests, benchmarks)")
    p.add_argument("--debug-ledger", action="store_true",
                   help="record every learned event's key in the store (fault tests only)")
    p.set_defaults(func=_cmd_processor)

    t = sub.add_parser("teacher", help="run the teacher process (kd.events -> kd.soft-labels)")
    _common(t)
    t.add_argument("--teacher-group", default="kd-teacher")
    t.add_argument("--teacher-every-events", dest="teacher_every_events", type=int)
    t.add_argument("--teacher-every-seconds", dest="teacher_every_seconds", type=float)
    t.add_argument("--state-dir", dest="state_dir")
    t.add_argument("--window-events", type=int, default=100_000)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument(
        "--max-refresh-seconds", type=float, default=3600.0,
        help="longest a refresh may take before Kafka drops the teacher from its group "
        "(sets max.poll.interval.ms; default 3600)",
    )
    t.add_argument("--max-refreshes", type=int, default=None)
    t.add_argument("--idle-exit-s", type=float, default=None)
    t.set_defaults(func=_cmd_teacher)

    tp = sub.add_parser("topics", help="create or describe the Kafka topics")
    _common(tp)
    tp.add_argument("action", choices=("create", "describe"))
    tp.set_defaults(func=_cmd_topics)

    lc = sub.add_parser("local", help="a local Kafka + Redis without Docker")
    lc.add_argument("action", choices=("up", "down", "status"))
    lc.add_argument("--home", type=Path)
    lc.add_argument("--kafka-port", type=int)
    lc.add_argument("--redis-port", type=int)
    lc.add_argument("--wipe", action="store_true", help="down: delete the data folder")
    lc.set_defaults(func=_cmd_local)

    st = sub.add_parser("settings", help="print the merged settings (secrets masked)")
    st.add_argument("--config", type=Path, help="TOML settings file (also KDSTREAM_CONFIG)")
    st.add_argument("--toml", action="store_true", help="as TOML instead of JSON")
    st.set_defaults(func=_cmd_settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m kdstream.cli_runtime``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="kdstream")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
