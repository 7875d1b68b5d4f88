"""``kdstream evaluate``: every variant side by side on one log, prequentially.

The log goes through the embedded pipeline exactly like ``kdstream demo`` (embedded log,
micro-batches, teacher on a background thread, deterministic soft-label timing), with the
``river-mf`` baseline added to the harness. The protocol is ``shared/EVALUATION.md``.

``report.json``: ``"variants"`` (per variant: hr@k, ndcg@k, mrr, events, events_per_s,
update_time_s), ``"distillation"`` (parameter counts and size ratio, time to one top-10 and the
speed-up, the students' shares of the teacher's HR@k), ``"metadata"`` and, when a variant is
sampled, ``"sample"``. Two runs with the same seed give identical JSON apart from the
wall-clock fields named in :data:`TIMING_KEYS` (:func:`without_timing` drops them).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from kdstream.errors import ConfigError
from kdstream.online import Learner, Prequential, StudentVariant, Variant
from kdstream.online._learner import IndexedSoftLabels
from kdstream.online._river import RiverMFVariant
from kdstream.stream._runtime import PipelineConfig, scaled_config

from ._columns import EventColumns
from ._progress import Progress
from ._readers import CsvSpec, read_log

VARIANTS = ("popularity", "river-mf", "student", "student+kd", "teacher")
#: predict_one calls river may spend on the sample (~6 us each: about a minute)
RIVER_PREDICT_BUDGET = 10_000_000
_CHUNK = 8192
_TIMING_USERS = 200
_DIGITS = 6


class _Timed:
    """Delegates to a variant and accounts the wall time it spends learning."""

    def __init__(self, inner: Variant) -> None:
        self.inner = inner
        self.name = inner.name
        self.sampled_only = inner.sampled_only
        self.seconds = 0.0

    def scores(self, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
        return self.inner.scores(users, items, n_items)

    def learn_many(
        self, users: np.ndarray, items: np.ndarray, ts: np.ndarray, weights: np.ndarray
    ) -> None:
        start = time.perf_counter()
        self.inner.learn_many(users, items, ts, weights)
        self.seconds += time.perf_counter() - start

    def apply_soft_labels(self, labels: IndexedSoftLabels) -> None:
        self.inner.apply_soft_labels(labels)


@dataclass
class EvaluationRun:
    """What :func:`run_evaluation` leaves behind: the report and what the plots need."""

    report: dict[str, Any]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    refresh_positions: list[int] = field(default_factory=list)


def parse_variants(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"popularity,student"`` (or a sequence) -> validated, de-duplicated names in order."""
    names = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ConfigError(f"variants must be a comma-separated subset of {VARIANTS}, got {text!r}")
    return tuple(dict.fromkeys(names))


def auto_sample_every(columns: EventColumns) -> int:
    """Every how many scored events river ranks, so that it stays within its budget.

    Estimates its predict_one calls as (positive events) x (catalogue size at the end),
    an upper bound, since the catalogue grows over the stream.
    """
    from kdstream.stream._event import RATING_POSITIVE_AT

    is_rating = columns.type == "rating"
    low = is_rating & (columns.value < RATING_POSITIVE_AT)
    positives = int(len(columns) - low.sum())
    n_items = len(set(columns.item.tolist()))
    return max(1, math.ceil(positives * n_items / RIVER_PREDICT_BUDGET))


#: Wall-clock fields of report.json: everything else is identical for the same seed.
TIMING_KEYS = frozenset(
    {
        "events_per_s",
        "update_time_s",
        "student_top10_ms",
        "teacher_top10_ms",
        "speedup",
        "seconds",
        "teacher_refresh_seconds",
    }
)


def without_timing(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` minus its wall-clock fields (:data:`TIMING_KEYS`), at any depth."""
    return {
        k: without_timing(v) if isinstance(v, dict) else v
        for k, v in report.items()
        if k not in TIMING_KEYS
    }


def evaluation_config(
    n_events: int,
    seed: int,
    *,
    batch_size: int = 256,
    k: int = 10,
    variants: tuple[str, ...] = ("popularity", "student", "student+kd", "teacher"),
) -> PipelineConfig:
    """The pipeline ``kdstream demo`` runs, scaled to a log of ``n_events``
    (:func:`kdstream.stream._runtime.scaled_config`)."""
    return scaled_config(n_events, seed, batch_size=batch_size, k=k, variants=variants)


def _load(
    path_or_columns: str | Path | EventColumns,
    fmt: str,
    limit: int | None,
    spec: CsvSpec | None = None,
) -> tuple[EventColumns, dict[str, Any]]:
    if isinstance(path_or_columns, EventColumns):
        cols = path_or_columns if limit is None else path_or_columns.slice(0, limit)
        return cols, {"dataset": "<columns>", "format": "columns", "rejected_lines": 0}
    cols, rr = read_log(path_or_columns, format=fmt, spec=spec, limit=limit)
    return cols, {
        "dataset": str(path_or_columns),
        "format": rr.format,
        "rejected_lines": rr.n_rejected,
    }


def _round(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), _DIGITS)


def _metrics(m: Any, k: int) -> dict[str, float | None]:
    return {f"hr@{k}": _round(m.hr), f"ndcg@{k}": _round(m.ndcg_at_k), "mrr": _round(m.mrr)}


def _median_ms(fn: Callable[[int], object], users: np.ndarray) -> float:
    fn(int(users[0]))  # warm-up: first-call allocations are not the steady state
    times = []
    for u in users.tolist():
        start = time.perf_counter()
        fn(u)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def _histories(
    columns: EventColumns, pre: Prequential, users: np.ndarray, max_len: int
) -> dict[int, np.ndarray]:
    """Each chosen user's last ``max_len`` items, in stream order."""
    u_idx = pre.users.lookup(columns.user.tolist())
    i_idx = pre.items.lookup(columns.item.tolist())
    wanted = np.isin(u_idx, users)
    u_sel, i_sel = u_idx[wanted], i_idx[wanted]
    return {int(u): i_sel[u_sel == u][-max_len:].astype(np.int64) for u in users.tolist()}


def _distillation(
    run_variants: dict[str, Variant],
    report: dict[str, Any],
    teacher: Any,
    columns: EventColumns,
    pre: Prequential,
    seed: int,
    k: int,
) -> dict[str, Any]:
    """The ``"distillation"`` object: sizes, top-10 times and shares of the teacher's HR."""
    hr = {name: v[f"hr@{k}"] for name, v in report["variants"].items()}
    teacher_hr = hr.get("teacher")

    def share(name: str) -> float | None:
        if teacher_hr is None or name not in hr or hr[name] is None or not teacher_hr:
            return None
        return _round(hr[name] / teacher_hr)

    learner: Learner | None = None
    for name in ("student+kd", "student"):
        v = run_variants.get(name)
        if isinstance(v, StudentVariant):
            learner = v.learner
            break
    student_params = teacher_params = None
    student_ms = teacher_ms = None
    model = getattr(teacher, "_model", None) if teacher is not None else None
    n_users = len(pre.users)
    rng = np.random.default_rng(seed)
    timing_users = np.sort(rng.choice(n_users, size=min(_TIMING_USERS, n_users), replace=False))
    if learner is not None and learner.student.n_users:
        st = learner.student
        # the rows actually in use, not the grown capacity
        nu, ni, d = st.n_users, st.n_items, st.config.dim
        student_params = nu * d + 2 * ni * d + ni
        users = timing_users[timing_users < nu]
        if len(users):
            student_ms = _median_ms(lambda u: st.recommend(u, k=10), users)
    if model is not None:
        teacher_params = int(sum(p.numel() for p in model.parameters()))
        hist = _histories(columns, pre, timing_users, teacher.config.max_len)

        def teacher_top10(u: int) -> np.ndarray:
            scores = teacher.score_next([hist[u]])[0]
            seen = pre.seen.items_of(u)
            scores[seen[seen < len(scores)]] = -np.inf  # as the student's recommend does
            return np.argpartition(-scores, 10)[:10]

        if len(timing_users):
            teacher_ms = _median_ms(teacher_top10, timing_users)
    ratio = _round(teacher_params / student_params) if teacher_params and student_params else None
    speedup = _round(teacher_ms / student_ms) if teacher_ms and student_ms else None
    return {
        "student_params": student_params,
        "teacher_params": teacher_params,
        "size_ratio": ratio,
        "student_top10_ms": _round(student_ms),
        "teacher_top10_ms": _round(teacher_ms),
        "speedup": speedup,
        "student_share_of_teacher_hr": share("student"),
        "student_kd_share_of_teacher_hr": share("student+kd"),
    }


def run_evaluation(
    path_or_columns: str | Path | EventColumns,
    *,
    variants: str | Sequence[str] = VARIANTS,
    k: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    limit: int | None = None,
    river_sample: int | None = None,
    progress: bool = False,
    format: str = "auto",
    progress_stream: TextIO | None = None,
    csv_spec: CsvSpec | None = None,
) -> EvaluationRun:
    """Run the evaluation and return the report with the curves (see :func:`evaluate`)."""
    from kdstream.stream._runtime import EmbeddedPipeline

    names = parse_variants(variants)
    if k < 1 or batch_size < 1:
        raise ConfigError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
    if river_sample is not None and river_sample < 1:
        raise ConfigError(f"river_sample must be >= 1, got {river_sample}")
    columns, meta = _load(path_or_columns, format, limit, csv_spec)
    n = len(columns)
    if n == 0:
        raise ConfigError(f"no events to evaluate in {meta['dataset']!r}")
    sampled = "river-mf" in names
    sample_every = (river_sample or auto_sample_every(columns)) if sampled else 1

    # the demo's wiring scaled to this stream (teacher refreshes, label delay, seeds)
    cfg = evaluation_config(
        n, seed, batch_size=batch_size, k=k, variants=tuple(v for v in names if v != "river-mf")
    )
    pipeline = EmbeddedPipeline(cfg)
    built: dict[str, Variant] = {v.name: v for v in pipeline.variants}
    if sampled:
        built["river-mf"] = RiverMFVariant(seed=seed)
    timed = [_Timed(built[name]) for name in names]
    # the pipeline drives whichever harness it holds: swap in one with river and the timers
    pipeline.variants = list(timed)
    pipeline.prequential = Prequential(timed, k=k, sample_every=sample_every)
    for start in range(0, n, _CHUNK):
        pipeline.produce(columns.slice(start, start + _CHUNK).to_events())

    wall = time.perf_counter()
    with Progress(n, "evaluate", stream=progress_stream or sys.stderr, enabled=progress) as bar:
        stats = pipeline.run(progress=bar.update)
    seconds = time.perf_counter() - wall

    rep = pipeline.prequential.report
    variants_out: dict[str, Any] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    for t in timed:
        m = rep.sample_metrics[t.name] if t.sampled_only else rep.metrics[t.name]
        variants_out[t.name] = {**_metrics(m, k), "events": rep.events}
        # the teacher's updates are its background refreshes, not its popularity fallback
        update_s = t.seconds + (sum(stats.refresh_seconds) if t.name == "teacher" else 0.0)
        variants_out[t.name].update(
            events_per_s=_round(rep.events / update_s) if update_s > 0 else None,
            update_time_s=_round(update_s),
        )
        curves[t.name] = list(m.curve)
    report: dict[str, Any] = {
        "metadata": {
            **meta,
            "events": rep.events,
            "scored": rep.scored,
            "cold_share": _round(rep.cold / rep.scored) if rep.scored else None,
            "repeat_share": _round(rep.repeat / rep.scored) if rep.scored else None,
            "dead_lettered": stats.dead_lettered,
            "variants": list(names),
            "k": k,
            "batch_size": batch_size,
            "seed": seed,
            "sample_every": sample_every,
            "sampled": rep.sampled,
            "sampled_variants": [t.name for t in timed if t.sampled_only],
            "teacher_refreshes": stats.teacher_refreshes,
            "refresh_positions": list(stats.refresh_positions),
            "protocol": "prequential, full catalogue, seen items excluded (EVALUATION.md)",
        },
        "variants": variants_out,
    }
    if sampled:
        report["sample"] = {
            "every": sample_every,
            "scored": rep.sampled,
            "variants": {t.name: _metrics(rep.sample_metrics[t.name], k) for t in timed},
        }
    report["distillation"] = _distillation(
        built, report, pipeline._teacher, columns, pipeline.prequential, seed, k
    )
    report["metadata"]["seconds"] = _round(seconds)
    report["metadata"]["teacher_refresh_seconds"] = [_round(s) for s in stats.refresh_seconds]
    return EvaluationRun(report, curves, list(stats.refresh_positions))


def evaluate(
    path_or_columns: str | Path | EventColumns,
    *,
    variants: str | Sequence[str] = VARIANTS,
    k: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    river_sample: int | None = None,
    progress: bool = False,
    format: str = "auto",
    progress_stream: TextIO | None = None,
    csv_spec: CsvSpec | None = None,
) -> dict[str, Any]:
    """Prequential evaluation of several variants on one log; returns the ``report.json`` dict.

    Parameters
    ----------
    path_or_columns
        A log file (any :func:`read_log` format, ``"-"`` for stdin) or ``EventColumns``.
    variants
        Names from ``VARIANTS`` (comma-separated string or sequence), reported in this order.
    k
        Cut-off of HR@k and NDCG@k.
    seed
        Seeds the student, the teacher, river and the choice of timing users.
    batch_size
        Micro-batch size (every event of a batch is scored with the batch-start parameters).
    limit
        Only the first ``limit`` events in time order.
    out_dir
        Where ``report.json``, ``report.md`` and ``curves.png`` go (``None``: nothing written).
    river_sample
        river ranks every ``river_sample``-th scored event, and every variant is also reported
        on that sample. ``None``: chosen from the log so river stays within about a minute.
    progress
        Progress line on ``progress_stream`` (stderr).
    format
        Log format for :func:`read_log`.
    csv_spec
        The columns of a generic CSV log (``format="csv"``).
    """
    run = run_evaluation(
        path_or_columns,
        variants=variants,
        k=k,
        seed=seed,
        batch_size=batch_size,
        limit=limit,
        river_sample=river_sample,
        progress=progress,
        format=format,
        progress_stream=progress_stream,
        csv_spec=csv_spec,
    )
    if out_dir is not None:
        from ._report import write_report

        write_report(run, out_dir)
    return run.report


__all__ = [
    "RIVER_PREDICT_BUDGET",
    "VARIANTS",
    "EvaluationRun",
    "auto_sample_every",
    "evaluate",
    "evaluation_config",
    "parse_variants",
    "run_evaluation",
]
