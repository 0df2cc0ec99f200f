"""Instrument-response runner: drive a square wave and record its edges."""

from __future__ import annotations

import time

from agents.errors import ThermalTrip
from experiments.context import RunContext
from experiments.instrument_response.config import InstrumentResponseConfig

NAME = "instrument_response"


def run(ctx: RunContext, config: InstrumentResponseConfig) -> dict:
    """Square wave idle/load/idle on the context's accelerator (matmuls on a GPU, the board's
    compute model on a simulated one); the edges are the host times the load began and ended.

    The thermal guard is read in the idle segments (ctx.sleep) and between the short busy
    stretches of each load segment: a trip inside a segment ends it, the board cools to the
    resume point and the segment runs again in full (three trips end the square wave:
    ``thermal_stop``)."""
    acc = ctx.accelerator
    edges: list[tuple[int, float]] = []
    total = config.repeats * (config.idle_s + config.load_s) + config.idle_s
    done = 0.0
    thermal_stop = None
    with ctx.phase(NAME):
        t_start = acc.idle()
        for _ in range(config.repeats):
            if not ctx.sleep(config.idle_s):
                break
            done += config.idle_s
            try:
                edges.append((ctx.guarded(lambda: _load_segment(ctx, config), f"{NAME}.load"), config.level))
            except ThermalTrip as exc:
                thermal_stop = str(exc)
                break
            finally:
                t_off = acc.idle()
            edges.append((t_off, 0.0))
            done += config.load_s
            ctx.progress(NAME, done / total)
            if ctx.should_stop():
                break
        ctx.sleep(config.idle_s)
        t_end = ctx.mark("window_end", phase=NAME)
    return {"experiment": NAME, "t_start_ns": t_start, "t_end_ns": t_end, "edges": edges,
            "thermal_stop": thermal_stop, "config": config.model_dump()}


def _load_segment(ctx: RunContext, config: InstrumentResponseConfig) -> int:
    """One load segment: back-to-back busy stretches of at most the guard's period (one
    stretch of load to the board), the guard read between them; returns the load's start."""
    acc = ctx.accelerator
    t_on = acc.busy(config.level, 0.0)
    end = time.monotonic() + config.load_s
    while (left := end - time.monotonic()) > 0:
        acc.busy(config.level, min(ctx.guard_period_s, left))
        ctx.thermal_check()
    return t_on
