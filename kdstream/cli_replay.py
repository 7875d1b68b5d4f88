"""``kdstream replay`` and ``kdstream evaluate``: feed a log to a broker, compare variants on it.

``cli.py`` registers both with ``add_parsers(sub)``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kdstream.errors import ConfigError

_SHOW_REJECTS = 5  # rejected lines listed in the summary (all are counted)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


_CSV_FLAGS = ("user_col", "item_col", "time_col", "type_col", "value_col")


def _column(text: str) -> str | int:
    """A CSV column: a 0-based index when all digits, else a header name."""
    return int(text) if text.isdigit() else text


def _add_csv_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "generic CSV logs (--format csv)",
        "name the columns (header names, or 0-based indices); any of these implies --format csv",
    )
    g.add_argument("--user-col", type=_column, help="user id column")
    g.add_argument("--item-col", type=_column, help="item id column")
    g.add_argument("--time-col", type=_column, help="timestamp column")
    g.add_argument("--type-col", type=_column, help="behaviour column (view, addtocart, ...)")
    g.add_argument("--value-col", type=_column, help="optional numeric column (a rating)")
    g.add_argument("--sep", default=",", help="field separator (default ,)")
    g.add_argument("--no-header", action="store_true", help="the first line is data")
    g.add_argument(
        "--time-unit", default="s", choices=("s", "ms", "us", "iso"),
        help="epoch seconds (default), milliseconds, microseconds or ISO-8601",
    )
    g.add_argument(
        "--default-type", default="view",
        help="event type of every line when there is no --type-col (default view)",
    )


def _csv_spec(args: argparse.Namespace) -> tuple[str, Any]:
    """(format, CsvSpec or None) from the CSV flags; raises ConfigError naming what is missing."""
    from kdstream.replay import CsvSpec

    given = [name for name in _CSV_FLAGS if getattr(args, name) is not None]
    fmt = args.format
    if not given and fmt != "csv":
        return fmt, None
    if fmt not in ("auto", "csv"):
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise ConfigError(f"{flags}: only used with --format csv, got --format {fmt}")
    missing = [n for n in _CSV_FLAGS[:3] if getattr(args, n) is None]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        raise ConfigError(f"--format csv needs {flags} (a header name or a 0-based index)")
    spec = CsvSpec(
        args.user_col, args.item_col, args.time_col, type_col=args.type_col,
        value_col=args.value_col, sep=args.sep, header=not args.no_header,
        time_unit=args.time_unit, default_type=args.default_type,
    )
    return "csv", spec


def _reject_lines(what: str, rejects: Any, n: int, unit: str) -> list[str]:
    if not n:
        return []
    lines = [f"{n} {what}:"]
    lines += [f"  {unit} {where}: {reason}" for where, reason in list(rejects)[:_SHOW_REJECTS]]
    if n > _SHOW_REJECTS:
        lines.append(f"  ... and {n - _SHOW_REJECTS} more")
    return lines


# --------------------------------------------------------------------------------- replay
def _cmd_replay(args: argparse.Namespace) -> int:
    from kdstream.replay import read_log, replay
    from kdstream.settings import Settings, kafka_client_kwargs, topic_specs

    fmt, spec = _csv_spec(args)
    cols, read_report = read_log(args.path, format=fmt, spec=spec, limit=args.limit)
    show = not args.no_progress
    broker: str | None = args.broker
    if broker == "embedded":
        broker = "embedded://"
    if broker is not None and not broker.startswith(("embedded://", "kafka://")):
        raise ConfigError(f"--broker must be embedded:// or kafka://host:port, got {broker!r}")
    summary: list[str] = []
    # KDSTREAM_BROKER, the topic names and KDSTREAM_KAFKA_* (SASL/TLS) as every command reads them
    settings = Settings.load({"broker": broker})
    broker = settings.broker
    if settings.broker_kind() == "kafka":
        from kdstream.stream._kafka_admin import create_topics
        from kdstream.stream._kafka_auth import check_kafka_login
        from kdstream.stream._kafka_producer import KafkaEventProducer

        security = kafka_client_kwargs(settings)
        bootstrap = ",".join(settings.kafka_bootstrap())
        # a wrong password fails here, at once, as "Kafka authentication failed"
        check_kafka_login(bootstrap, security)
        create_topics(bootstrap, topic_specs(settings), security=security)
        topic = settings.events_topic
        with KafkaEventProducer(bootstrap, **security) as producer:
            rep = replay(cols, producer, topic=topic, speed=args.speed, progress=show)
        summary.append(f"sent {rep.sent} events to {topic} on {broker} in {rep.seconds:.1f} s")
    else:
        from kdstream.replay import Progress
        from kdstream.replay._evaluate import evaluation_config
        from kdstream.stream._runtime import EmbeddedPipeline

        pipeline = EmbeddedPipeline(evaluation_config(max(len(cols), 1), args.seed))
        topic = pipeline.config.events_topic
        rep = replay(cols, pipeline.producer, topic=topic, speed=args.speed, progress=show)
        summary.append(f"sent {rep.sent} events to {topic} (embedded) in {rep.seconds:.1f} s")
        # the embedded log lives in this process: learn the replay here so it is not lost
        with Progress(rep.sent, "learn", enabled=show, stream=sys.stderr) as bar:
            stats = pipeline.run(progress=bar.update)
        metrics = pipeline.prequential.report.metrics
        k = pipeline.config.k
        summary.append(
            f"learned {stats.events} events ({stats.teacher_refreshes} teacher refreshes); "
            + ", ".join(f"{name} HR@{k} {m.hr:.4f}" for name, m in metrics.items())
        )
    summary.append(
        f"{rep.sent} events sent, {read_report.n_rejected + rep.rejected} lines rejected "
        f"({read_report.n_lines} lines read, format {read_report.format})"
    )
    summary += _reject_lines(
        "lines rejected when read", read_report.rejects, read_report.n_rejected, "line"
    )
    summary += _reject_lines("events rejected when encoded", rep.rejects, rep.rejected, "event #")
    print("\n".join(summary))
    return 0


# ------------------------------------------------------------------------------- evaluate
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from kdstream.replay._evaluate import evaluate
    from kdstream.replay._report import format_markdown

    fmt, spec = _csv_spec(args)
    report = evaluate(
        args.path,
        variants=args.variants,
        k=args.k,
        seed=args.seed,
        batch_size=args.batch,
        limit=args.limit,
        out_dir=args.out,
        river_sample=args.river_sample,
        progress=not args.no_progress,
        format=fmt,
        csv_spec=spec,
    )
    print(format_markdown(report))
    print(f"wrote report.json, report.md and curves.png to {args.out}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``replay`` and ``evaluate`` on an ``argparse`` sub-parsers object."""
    from kdstream.replay import FORMATS
    from kdstream.replay._evaluate import VARIANTS

    formats = ("auto", *FORMATS)
    rp = sub.add_parser(
        "replay",
        help="feed a log to the embedded log (and learn it) or to Kafka",
        description="Read a log (PATH or - for stdin), in time order, and send every event "
        "keyed by user. embedded:// also runs the embedded pipeline on it and prints a summary.",
    )
    rp.add_argument("path", metavar="PATH", help="log file (.gz ok) or - for stdin")
    rp.add_argument("--format", default="auto", choices=formats)
    rp.add_argument(
        "--speed",
        type=_speed,
        default=0.0,
        help="0: as fast as possible; X: log time divided by X (1 = real time)",
    )
    rp.add_argument("--limit", type=_positive_int, default=None, help="first N events (time order)")
    rp.add_argument(
        "--broker",
        default=None,
        help="embedded:// (default) or kafka://host:port (also KDSTREAM_BROKER); SASL/TLS from "
        "KDSTREAM_KAFKA_* (see `kdstream settings`)",
    )
    rp.add_argument("--seed", type=int, default=0, help="seed of the embedded pipeline")
    rp.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_csv_flags(rp)
    rp.set_defaults(func=_cmd_replay)

    ev = sub.add_parser(
        "evaluate",
        help="prequential comparison of kdstream and baselines on a log",
        description="Test-then-train evaluation of several variants on one log "
        "(shared/EVALUATION.md); writes report.json, report.md and curves.png.",
    )
    ev.add_argument("path", metavar="PATH", help="log file (.gz ok) or - for stdin")
    ev.add_argument("--format", default="auto", choices=formats)
    ev.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    ev.add_argument("--k", type=_positive_int, default=10, help="cut-off of HR@k and NDCG@k")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch", type=_positive_int, default=256, help="micro-batch size")
    ev.add_argument("--limit", type=_positive_int, default=None, help="first N events (time order)")
    ev.add_argument("--out", default="out/evaluate", help="output directory")
    ev.add_argument(
        "--river-sample",
        type=_positive_int,
        default=None,
        metavar="K",
        help="river-mf ranks every K-th scored event (default: chosen from the "
        "log so that river takes about a minute)",
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_csv_flags(ev)
    ev.set_defaults(func=_cmd_evaluate)


__all__ = ["add_parsers"]
