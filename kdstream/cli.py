"""The ``kdstream`` command line.

Run ``kdstream --help``; every sub-command has its own ``--help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from kdstream.demo import format_table, run_demo
    from kdstream.replay import parse_settings

    teacher = {k: v for k, v in (("teacher_epochs", args.teacher_epochs),
                                 ("teacher_dim", args.teacher_dim)) if v is not None}
    stream = parse_settings(args.set)  # before the run: a typo fails at once
    summary = run_demo(args.events, args.seed, progress=not args.no_progress,
                       stream=stream or None, **teacher)
    if args.json:
        print(json.dumps(summary, sort_keys=False))
    else:
        print(format_table(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdstream", description="Streaming recommender with continual distillation."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the embedded pipeline on a synthetic stream")
    demo.add_argument("--events", type=int, default=200_000, help="events to generate")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    demo.add_argument("--teacher-epochs", type=int, help="teacher epochs per refresh (8)")
    demo.add_argument("--teacher-dim", type=int, help="teacher width (32)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a synthetic stream setting (SyntheticConfig field; repeatable), "
                           "e.g. --set series_len_mean=4 --set series_weight=3")
    demo.set_defaults(func=_cmd_demo)

    from kdstream.cli_serve import add_parsers as add_serve_parsers

    add_serve_parsers(sub)

    from kdstream.cli_runtime import add_parsers as add_runtime_parsers

    add_runtime_parsers(sub)

    from kdstream.cli_replay import add_parsers as add_replay_parsers

    add_replay_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line message, not a traceback, for known errors
        from kdstream.errors import KdstreamError

        if isinstance(exc, KdstreamError):
            print(f"kdstream: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
