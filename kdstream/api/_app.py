"""The FastAPI application: a pure factory over a :class:`ServingService`.

FastAPI because it gives an OpenAPI document and request validation (``k`` bounds → 422) from
the handler signatures, runs on any ASGI server (uvicorn here), and is testable in-process
through httpx's ASGI transport with no sockets.
"""

from __future__ import annotations

import secrets
import time
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from kdstream import __version__
from kdstream.errors import ConfigError, DecodeError, ServiceError
from kdstream.stream import MAX_ID_CHARS

from ._metrics import Histogram, render_histogram
from ._service import ServingService, split_body
from ._settings import ApiSettings

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ApiError(Exception):
    """An error answered as ``{"error": code, "message": ...}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class RecommendationOut(BaseModel):
    user: str
    k: int
    items: list[str]
    scores: list[float]
    cold_start: bool
    student_version: int
    teacher_version: int
    last_event_ts: float | None


class RecordErrorOut(BaseModel):
    index: int
    reason: str
    field: str


class IngestOut(BaseModel):
    received: int
    accepted: int
    rejected: int
    errors: list[RecordErrorOut]


class ErrorOut(BaseModel):
    error: str
    message: str
    details: list[Any] | None = None


def _dashboard_html() -> str:
    return resources.files("kdstream.api").joinpath("_dashboard.html").read_text("utf-8")


def create_app(service: ServingService, settings: ApiSettings | None = None) -> FastAPI:
    """Build the API over ``service``; nothing starts until an ASGI server runs it.

    Parameters
    ----------
    service
        The runtime to serve (embedded or store-backed).
    settings
        Limits (body size, ``k``, records per request) and the optional bearer token.
    """
    cfg = settings or ApiSettings()
    app = FastAPI(
        title="kdstream",
        version=__version__,
        description="Live recommendations from a continually distilled streaming student.",
    )
    rec_latency = Histogram()
    app.state.service = service
    app.state.settings = cfg
    app.state.rec_latency = rec_latency
    errors = {400: {"model": ErrorOut}, 422: {"model": ErrorOut}}

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": exc.code, "message": exc.message}, exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        where = ", ".join(".".join(str(x) for x in d["loc"]) + ": " + d["msg"] for d in details)
        return JSONResponse(
            {"error": "invalid_request", "message": where, "details": details}, 422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "message": str(exc.detail)}, exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"error": "unavailable", "message": str(exc)}, 503)

    # ------------------------------------------------------------------ auth
    def _check_bearer(request: Request, accepted: list[str]) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "unauthorized", "a bearer token is required",
                           {"WWW-Authenticate": "Bearer"})
        offered = given.strip().encode()
        # compare against every token (no early exit): timing tells nothing about which
        ok = [secrets.compare_digest(offered, t.encode()) for t in accepted]
        if not any(ok):
            raise ApiError(403, "forbidden", "the bearer token is not valid")

    # async: trivial checks run on the event loop instead of a thread-pool hop
    async def require_token(request: Request) -> None:
        if cfg.token is not None:
            _check_bearer(request, [cfg.token])

    async def require_read_token(request: Request) -> None:
        if cfg.read_token is not None:
            # the write token grants reads too
            _check_bearer(request, [t for t in (cfg.read_token, cfg.token) if t is not None])

    # ------------------------------------------------------------------ routes
    @app.get(
        "/v1/users/{user}/recommendations",
        response_model=RecommendationOut,
        responses={**errors, 401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
        dependencies=[Depends(require_read_token)],
        summary="Top-k items for a user (popular items for an unknown user)",
    )
    async def recommendations(
        user: str = Path(min_length=1, max_length=MAX_ID_CHARS),
        k: int = Query(10, ge=1, le=cfg.max_k),
        exclude_seen: bool = True,
    ) -> RecommendationOut:
        # An in-process model answers on the event loop: a top-k is a fraction of a millisecond
        # of numpy read without locks, and a thread-pool hop cost several times that (p99
        # 13 ms -> 3.6 ms at 500 req/s). A store over the network may block: thread pool.
        start = time.perf_counter()
        try:
            if getattr(service, "nonblocking", False):
                rec = service.recommend(user, k, exclude_seen)
            else:
                rec = await run_in_threadpool(service.recommend, user, k, exclude_seen)
        except ConfigError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from exc
        rec_latency.observe(time.perf_counter() - start)
        return RecommendationOut(k=k, **rec.__dict__)

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=IngestOut,
        responses={**errors, 401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                   413: {"model": ErrorOut}, 503: {"model": ErrorOut}},
        dependencies=[Depends(require_token)],
        summary="Ingest events: a JSON array or JSON lines",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def events(request: Request) -> IngestOut:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise ApiError(413, "too_large", f"body over {cfg.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # bounded even without a Content-Length
            size += len(chunk)
            if size > cfg.max_body_bytes:
                raise ApiError(413, "too_large", f"body over {cfg.max_body_bytes} bytes")
            chunks.append(chunk)
        try:
            records = split_body(b"".join(chunks))
        except DecodeError as exc:
            raise ApiError(400, "bad_body", exc.reason) from exc
        if not records:
            raise ApiError(400, "bad_body", "no records: send a JSON array or JSON lines")
        if len(records) > cfg.max_records:
            raise ApiError(413, "too_many_records",
                           f"{len(records)} records > {cfg.max_records} per request")
        result = await run_in_threadpool(service.ingest, records)
        return IngestOut(
            received=result.received,
            accepted=result.accepted,
            rejected=result.rejected,
            errors=[RecordErrorOut(**e.__dict__) for e in result.errors],
        )

    @app.get("/healthz", summary="Broker, store, teacher freshness and the item refresher")
    def healthz() -> JSONResponse:
        report = service.health()
        return JSONResponse(report, 503 if report.get("status") == "down" else 200)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    def metrics() -> PlainTextResponse:
        text = service.metrics_text() + render_histogram(
            "kdstream_recommendation_latency_seconds",
            "Time to compute one recommendation response.",
            rec_latency,
        )
        return PlainTextResponse(text, media_type=PROMETHEUS_CONTENT_TYPE)

    @app.get("/v1/stats", summary="A snapshot for the dashboard",
             description="Counters, model versions, latencies, and `item_refresh`: the "
                         "store's item refresher (`running`, `age_s`, `max_age_s`, `every_s`, "
                         "`errors`), or null where the store has none.",
             dependencies=[Depends(require_read_token)])
    def stats() -> dict[str, Any]:
        out = service.stats()
        p50, p99 = rec_latency.quantile(0.5), rec_latency.quantile(0.99)
        out["recommendation_latency_ms"] = {
            "p50": None if p50 is None else p50 * 1e3,
            "p99": None if p99 is None else p99 * 1e3,
            "count": rec_latency.count,
        }
        return out

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(_dashboard_html())

    return app


__all__ = ["PROMETHEUS_CONTENT_TYPE", "ApiError", "create_app"]
