"""Baseline runner: idle for the configured time inside the trace."""

from __future__ import annotations

from experiments.baseline.config import BaselineConfig
from experiments.context import RunContext

NAME = "baseline"


def run(ctx: RunContext, config: BaselineConfig) -> dict:
    """Idle the device; returns the window (host monotonic ns) the analysis reads."""
    ctx.set_load(0.0)
    with ctx.phase(NAME):
        ctx.sleep(config.settle_s, NAME)
        t_start = ctx.mark("window_start", phase=NAME)
        completed = ctx.sleep(config.duration_s, NAME)
        t_end = ctx.mark("window_end", phase=NAME)
    return {"experiment": NAME, "t_start_ns": t_start, "t_end_ns": t_end, "completed": completed,
            "config": config.model_dump()}
