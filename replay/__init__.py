"""Log readers, the synthetic stream generator and replay into a broker."""

from ._columns import EventColumns
from ._evaluate import EvaluationRun, evaluate, evaluation_config
from ._progress import Progress
from ._readers import (
    FORMATS,
    RETAIL_TYPE_MAP,
    TIME_UNITS,
    CsvSpec,
    ReadReport,
    detect_format,
    iter_events,
    read_log,
)
from ._replay import Producer, ReplayReport, replay
from ._synthetic import SyntheticConfig, generate, generate_events, oracle_ranks, parse_settings

__all__ = [
    "FORMATS",
    "RETAIL_TYPE_MAP",
    "TIME_UNITS",
    "CsvSpec",
    "EvaluationRun",
    "EventColumns",
    "Producer",
    "Progress",
    "ReadReport",
    "ReplayReport",
    "SyntheticConfig",
    "detect_format",
    "evaluate",
    "evaluation_config",
    "generate",
    "generate_events",
    "iter_events",
    "oracle_ranks",
    "parse_settings",
    "read_log",
    "replay",
]
