"""Instrument-response runner: drive a square wave and record its edges."""

from __future__ import annotations

from experiments.context import RunContext
from experiments.instrument_response.config import InstrumentResponseConfig

NAME = "instrument_response"


def run(ctx: RunContext, config: InstrumentResponseConfig, load_fn=None) -> dict:
    """Square wave idle/load/idle. ``load_fn(seconds)`` runs real work on a real GPU;
    on a simulated device the declared load level is the workload."""
    edges: list[tuple[int, float]] = []
    total = config.repeats * (config.idle_s + config.load_s) + config.idle_s
    done = 0.0
    with ctx.phase(NAME):
        t_start = ctx.set_load(0.0)
        for _ in range(config.repeats):
            if not ctx.sleep(config.idle_s):
                break
            done += config.idle_s
            edges.append((ctx.set_load(config.level), config.level))
            if load_fn is not None:
                load_fn(config.load_s)
            elif not ctx.sleep(config.load_s):
                edges.append((ctx.set_load(0.0), 0.0))
                break
            done += config.load_s
            edges.append((ctx.set_load(0.0), 0.0))
            ctx.progress(NAME, done / total)
        ctx.sleep(config.idle_s)
        t_end = ctx.mark("window_end", phase=NAME)
    return {"experiment": NAME, "t_start_ns": t_start, "t_end_ns": t_end, "edges": edges, "config": config.model_dump()}
