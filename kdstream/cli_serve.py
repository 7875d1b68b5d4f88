"""Serving sub-commands: ``kdstream api``, ``kdstream recommend``, ``kdstream ingest``.

``add_parsers(sub)`` registers them on the main parser's sub-parsers. The HTTP client side uses
the standard library only, so ``recommend --api`` and ``ingest`` need no extra packages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import IO, Any

from kdstream.errors import ConfigError, ServiceError

DEFAULT_API = "http://127.0.0.1:8000"


def _open_store(url: str) -> Any:
    """A Store from a URL: ``memory://`` (empty, for tries) or ``redis://...``."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "memory":
        from kdstream.stream import MemoryStore

        return MemoryStore()
    if scheme in ("redis", "rediss"):
        from kdstream.stream import RedisStore

        return RedisStore(url)
    raise ConfigError(f"--store: expected memory:// or redis://..., got {url!r}")


def _http(method: str, url: str, body: bytes | None = None, token: str | None = None,
          timeout_s: float = 30.0) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/x-ndjson"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read() or b"null")
        except ValueError:
            doc = {"error": "http_error", "message": str(exc)}
        return exc.code, doc
    except (urllib.error.URLError, OSError) as exc:
        raise ServiceError(f"cannot reach the API at {url}: {exc}") from exc


# ------------------------------------------------------------------------------ api


def _cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from kdstream.api import ApiSettings, StoreServingService, create_app

    settings = ApiSettings(
        host=args.host, port=args.port, token=args.token or None,
        read_token=args.read_token or None, teacher_stale_s=args.teacher_stale_s,
    )
    if not (args.item_refresh_s >= 0):  # NaN too
        raise ConfigError(f"--item-refresh-s: expected a number >= 0, got {args.item_refresh_s}")
    feeder = None
    refreshing: Any = None
    if args.demo:
        from kdstream.api._live import SyntheticFeeder, build_embedded_service

        service: Any = build_embedded_service(settings)
        service.start()
        if args.rate > 0:
            feeder = SyntheticFeeder(service, rate=args.rate, seed=args.seed)
            feeder.start()
    elif args.store:
        store = _open_store(args.store)
        if args.item_refresh_s > 0 and hasattr(store, "start_item_refresh"):  # RedisStore
            # item-table checks and refreshes in a thread: no request pays a sync's refresh
            store.start_item_refresh(args.item_refresh_s)
            refreshing = store
        service = StoreServingService(store, teacher_stale_s=settings.teacher_stale_s)
    else:
        raise ConfigError("kdstream api: give --demo (embedded runtime) or --store URL")
    app = create_app(service, settings)
    print(f"kdstream api on http://{args.host}:{args.port}/ (dashboard), /docs (OpenAPI)",
          file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        if feeder is not None:
            feeder.stop()
        if args.demo:
            service.stop()
        if refreshing is not None:
            refreshing.stop_item_refresh()
    return 0


# ------------------------------------------------------------------------------ recommend


def _cmd_recommend(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ConfigError(f"-k: expected an integer >= 1, got {args.k}")
    exclude = not args.include_seen
    if args.store:
        from kdstream.api import StoreServingService

        rec = StoreServingService(_open_store(args.store)).recommend(args.user, args.k, exclude)
        doc: dict[str, Any] = {"k": args.k, **rec.__dict__}
    else:
        base = (args.api or DEFAULT_API).rstrip("/")
        query = urllib.parse.urlencode({"k": args.k, "exclude_seen": str(exclude).lower()})
        user = urllib.parse.quote(args.user, safe="")
        status, doc = _http("GET", f"{base}/v1/users/{user}/recommendations?{query}",
                            token=args.token)
        if status != 200:
            message = doc.get("message") if isinstance(doc, dict) else doc
            raise ServiceError(f"API answered {status}: {message}")
    if args.json:
        print(json.dumps(doc))
        return 0
    kind = "cold start: popular items" if doc["cold_start"] else "personalised"
    print(f"{doc['user']} ({kind}; student v{doc['student_version']}, "
          f"teacher v{doc['teacher_version']})")
    for rank, (item, score) in enumerate(zip(doc["items"], doc["scores"], strict=True), 1):
        print(f"{rank:>4}  {item:<24} {score:10.4f}")
    return 0


# ------------------------------------------------------------------------------ ingest


def _chunks(stream: IO[bytes], max_bytes: int, max_lines: int) -> Iterator[bytes]:
    """JSONL chunks of at most ``max_bytes`` / ``max_lines`` (a longer line goes alone)."""
    buf: list[bytes] = []
    size = 0
    for line in stream:
        if not line.strip():
            continue
        if buf and (size + len(line) > max_bytes or len(buf) >= max_lines):
            yield b"".join(buf)
            buf, size = [], 0
        if not line.endswith(b"\n"):
            line += b"\n"
        buf.append(line)
        size += len(line)
    if buf:
        yield b"".join(buf)


def _cmd_ingest(args: argparse.Namespace) -> int:
    base = (args.api or DEFAULT_API).rstrip("/")
    totals = {"received": 0, "accepted": 0, "rejected": 0}
    first = 0
    source: IO[bytes] = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    try:
        for body in _chunks(source, args.max_bytes, args.batch):
            status, doc = _http("POST", f"{base}/v1/events", body, args.token)
            if status != 202:
                message = doc.get("message") if isinstance(doc, dict) else doc
                raise ServiceError(f"API answered {status}: {message}")
            for key in totals:
                totals[key] += int(doc[key])
            for err in doc["errors"]:
                print(f"record {first + err['index']}: {err['reason']}", file=sys.stderr)
            first += int(doc["received"])
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    print(json.dumps(totals) if args.json else
          f"{totals['accepted']:,} accepted, {totals['rejected']:,} rejected "
          f"(sent to the dead-letter topic)")
    return 1 if totals["rejected"] else 0


# ------------------------------------------------------------------------------ parsers


def add_parsers(sub: Any) -> None:
    """Register ``api``, ``recommend`` and ``ingest`` on ``sub`` (from ``add_subparsers``)."""
    api = sub.add_parser("api", help="serve the HTTP API and the live dashboard")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--demo", action="store_true",
                     help="run the embedded pipeline in-process (events POSTed are learned live)")
    api.add_argument("--rate", type=float, default=0.0,
                     help="with --demo: also feed synthetic events at this many per second")
    api.add_argument("--seed", type=int, default=0)
    api.add_argument("--store", help="serve from a store: memory:// or redis://host:port/db")
    api.add_argument("--token", default=os.environ.get("KDSTREAM_API_TOKEN"),
                     help="bearer token required by POST endpoints (env KDSTREAM_API_TOKEN; "
                     "prefer the env var: a flag shows in ps)")
    api.add_argument("--read-token", default=os.environ.get("KDSTREAM_API_READ_TOKEN"),
                     help="bearer token required by GET endpoints other than /healthz and "
                     "/metrics (env KDSTREAM_API_READ_TOKEN)")
    api.add_argument("--teacher-stale-s", type=float, default=3_600.0,
                     help="/healthz reports 'degraded' when the teacher is older than this")
    api.add_argument("--item-refresh-s", type=float, default=0.1,
                     help="with a redis:// --store: check the item table every this many "
                     "seconds in a background thread, so requests skip the version read and "
                     "the refresh after each item sync; requests fall back to reading it "
                     "themselves when the thread's table is over 10 periods old "
                     "(0: off, every request checks)")
    api.add_argument("--log-level", default="warning")
    api.set_defaults(func=_cmd_api)

    rec = sub.add_parser("recommend", help="a user's live recommendations")
    rec.add_argument("user")
    rec.add_argument("-k", type=int, default=10)
    where = rec.add_mutually_exclusive_group()
    where.add_argument("--api", help=f"API base URL (default {DEFAULT_API})")
    where.add_argument("--store", help="read a store directly: redis://host:port/db")
    rec.add_argument("--include-seen", action="store_true", help="do not exclude seen items")
    rec.add_argument("--token", default=os.environ.get("KDSTREAM_API_READ_TOKEN"),
                     help="with --api: bearer token of reads (env KDSTREAM_API_READ_TOKEN)")
    rec.add_argument("--json", action="store_true", help="print the JSON response")
    rec.set_defaults(func=_cmd_recommend)

    ing = sub.add_parser("ingest", help="send JSONL events to the API")
    ing.add_argument("file", nargs="?", default="-", help="JSONL file, or - for stdin")
    ing.add_argument("--api", help=f"API base URL (default {DEFAULT_API})")
    ing.add_argument("--token", default=os.environ.get("KDSTREAM_API_TOKEN"),
                     help="bearer token of writes (env KDSTREAM_API_TOKEN)")
    ing.add_argument("--batch", type=int, default=5_000, help="records per request")
    ing.add_argument("--max-bytes", type=int, default=900_000, help="bytes per request")
    ing.add_argument("--json", action="store_true", help="print the totals as JSON")
    ing.set_defaults(func=_cmd_ingest)


__all__ = ["DEFAULT_API", "add_parsers"]
