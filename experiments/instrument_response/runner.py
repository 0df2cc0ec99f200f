"""Instrument-response runner: drive a square wave and record its edges."""

from __future__ import annotations

from experiments.context import RunContext
from experiments.instrument_response.config import InstrumentResponseConfig

NAME = "instrument_response"


def run(ctx: RunContext, config: InstrumentResponseConfig) -> dict:
    """Square wave idle/load/idle on the context's accelerator (matmuls on a GPU, the board's
    compute model on a simulated one); the edges are the host times the load began and ended."""
    acc = ctx.accelerator
    edges: list[tuple[int, float]] = []
    total = config.repeats * (config.idle_s + config.load_s) + config.idle_s
    done = 0.0
    with ctx.phase(NAME):
        t_start = acc.idle()
        for _ in range(config.repeats):
            if not ctx.sleep(config.idle_s):
                break
            done += config.idle_s
            edges.append((acc.busy(config.level, config.load_s), config.level))
            edges.append((acc.idle(), 0.0))
            done += config.load_s
            ctx.progress(NAME, done / total)
            if ctx.should_stop():
                break
        ctx.sleep(config.idle_s)
        t_end = ctx.mark("window_end", phase=NAME)
    return {"experiment": NAME, "t_start_ns": t_start, "t_end_ns": t_end, "edges": edges, "config": config.model_dump()}
