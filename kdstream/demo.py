"""``kdstream demo``: the embedded pipeline over a synthetic stream, four variants side by side."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import Any

from kdstream.replay import Progress, SyntheticConfig, generate
from kdstream.stream._runtime import EmbeddedPipeline, PipelineConfig, scaled_config

DEMO_TEACHER_EPOCHS = 8
DEMO_TEACHER_DIM = 32


def demo_config(
    n_events: int,
    seed: int,
    teacher_epochs: int = DEMO_TEACHER_EPOCHS,
    teacher_dim: int = DEMO_TEACHER_DIM,
) -> PipelineConfig:
    """The demo's pipeline: ``kdstream evaluate``'s scaled configuration with a narrower
    teacher (width 32 instead of 64), which keeps the demo short on a laptop.

    Narrower rather than fewer epochs: SASRec needs its passes (frozen after 3 epochs on 140,000
    events of the synthetic stream it reaches HR@10 0.079, after 8 0.216,
    ``benchmarks/teacher_quality.py --synthetic``), and at width 32 eight epochs per refresh
    take about the time three took at width 64.
    """
    cfg = scaled_config(n_events, seed, teacher_epochs=teacher_epochs)
    return replace(cfg, teacher=replace(cfg.teacher, dim=teacher_dim))


def run_demo(
    n_events: int = 200_000,
    seed: int = 0,
    progress: bool = True,
    teacher_epochs: int = DEMO_TEACHER_EPOCHS,
    teacher_dim: int = DEMO_TEACHER_DIM,
    stream: dict[str, float | int | bool] | None = None,
) -> dict[str, Any]:
    """Run the demo and return the summary that ``--json`` prints.

    ``stream``: :class:`SyntheticConfig` settings other than the defaults (``kdstream demo
    --set KEY=VALUE``); they are echoed in the summary as ``"stream"``.
    """
    cols = generate(SyntheticConfig(n_events=n_events, seed=seed, **(stream or {})))
    pipeline = EmbeddedPipeline(demo_config(n_events, seed, teacher_epochs, teacher_dim))
    pipeline.produce(cols.to_events())
    start = time.perf_counter()
    with Progress(total=len(cols), label="demo", enabled=progress, stream=sys.stderr) as bar:
        stats = pipeline.run(progress=bar.update)
    wall = time.perf_counter() - start
    report = pipeline.prequential.report
    variants = {
        name: {"hr@10": round(m.hr, 4), "ndcg@10": round(m.ndcg_at_k, 4)}
        for name, m in report.metrics.items()
    }
    return {
        "events": stats.events,
        "variants": variants,
        "events_per_s": round(stats.events / stats.student_seconds, 1)
        if stats.student_seconds
        else 0.0,
        "teacher_refreshes": stats.teacher_refreshes,
        "scored": report.scored,
        "dead_lettered": stats.dead_lettered,
        "seconds": round(wall, 1),
        **({"stream": stream} if stream else {}),
    }


def format_table(summary: dict[str, Any]) -> str:
    lines = [
        f"prequential, full catalogue, {summary['events']:,} events "
        f"({summary['scored']:,} scored), {summary['teacher_refreshes']} teacher refreshes",
        "",
        f"{'variant':<12} {'HR@10':>8} {'NDCG@10':>8}",
    ]
    for name, m in summary["variants"].items():
        lines.append(f"{name:<12} {m['hr@10']:>8.4f} {m['ndcg@10']:>8.4f}")
    lines += ["", f"student (with distillation) learns {summary['events_per_s']:,.0f} events/s"]
    return "\n".join(lines)


__all__ = ["demo_config", "format_table", "run_demo"]
