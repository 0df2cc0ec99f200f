"""Heat-soak runner: sustained load, stopped by equilibrium, a thermal trip or the cap.

Temperature is checked every ``check_period_s`` (the poller's period in a suite run), so a
thermal trip ends the soak within one poller tick. The figures (tau, T_inf, slope,
equilibrium time) come afterwards from the analysis of the recorded trace; the online
detector here only decides when to stop, with the same rule code.
"""

from __future__ import annotations

import time

from experiments.context import RunContext
from experiments.heat_soak.config import HeatSoakConfig

NAME = "heat_soak"


def run(ctx: RunContext, config: HeatSoakConfig) -> dict:
    """Soak on the context's accelerator; returns the window, why it ended and the trip details if any."""
    from experiments.analysis.heat_soak import EquilibriumDetector, ThermalGuard

    info = ctx.device.info
    detector = EquilibriumDetector(window_s=config.window_s)
    guard = ThermalGuard(slowdown_temp_c=info.slowdown_temp_c, margin_c=config.trip_margin_c)
    end_reason = "timeout"
    trip = None
    acc = ctx.accelerator
    with ctx.phase(NAME):
        t_start = acc.busy(config.level, 0.0)
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= config.max_duration_s:
                break
            if ctx.should_stop():
                end_reason = "interrupted"
                break
            acc.busy(config.level, config.check_period_s)  # back to back: one busy stretch
            t_ns = time.monotonic_ns()
            sample = ctx.device.read_sample(t_ns)
            if sample.temp_c is None:
                continue
            if guard.update(t_ns, sample.temp_c):
                end_reason = "thermal_trip"
                trip = {"t_ns": t_ns, "temp_c": sample.temp_c, "trip_c": guard.trip_c}
                ctx.mark("thermal_trip", temp_c=sample.temp_c, trip_c=guard.trip_c)
                break
            if detector.update(t_ns, sample.temp_c) and config.stop_at_equilibrium:
                end_reason = "equilibrium"
                break
            ctx.progress(NAME, min(1.0, elapsed / config.max_duration_s))
        t_end = acc.idle()
    return {"experiment": NAME, "t_start_ns": t_start, "t_end_ns": t_end, "end_reason": end_reason, "trip": trip,
            "config": config.model_dump()}
