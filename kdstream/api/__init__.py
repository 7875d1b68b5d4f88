"""The serving API: live recommendations, event ingest, health, metrics and a dashboard.

Importing this package imports FastAPI but never torch.
"""

from ._app import PROMETHEUS_CONTENT_TYPE, ApiError, create_app
from ._metrics import Histogram, Sample, render_histogram, render_samples
from ._service import (
    EmbeddedServingService,
    EventSink,
    IngestResult,
    Recommendation,
    RecordError,
    ServingService,
    StoreServingService,
    ingest_records,
    split_body,
)
from ._settings import ApiSettings

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "ApiError",
    "ApiSettings",
    "EmbeddedServingService",
    "EventSink",
    "Histogram",
    "IngestResult",
    "Recommendation",
    "RecordError",
    "Sample",
    "ServingService",
    "StoreServingService",
    "create_app",
    "ingest_records",
    "render_histogram",
    "render_samples",
    "split_body",
]
