"""A training_coupling result without torch: synthetic steps whose load follows the previous
step's grad norm (the runner's positive-control knob), a trace rendered from those loads by
the physics model, and the report the suite writes for them (experiments.reports.analyse_all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

S = 1_000_000_000
PERIOD_NS = 20_000_000  # 50 Hz poller grid


@dataclass
class TrainingRun:
    """One simulated device's training run: what ingest gets, and the report's own figures."""

    trace: pa.Table  # TRACE_SCHEMA columns
    markers: pa.Table
    steps: list[dict]  # the runner's rows
    report: dict  # training_coupling.json as the suite writes it
    power_limit_w: float
    slowdown_temp_c: float


def synthetic_steps(t_start_ns: int, steps: int = 120, step_s: float = 0.25, seed: int = 0) -> tuple[list[dict], list]:
    """(the runner's step rows without energy, the load edges they declare).

    Grad norms are noisy with a few spikes; each step's load level follows the previous
    step's grad norm, so power couples with grad_norm at lag >= 1.
    """
    from agents.physics import LoadEdge

    rng = np.random.default_rng(seed)
    grad = np.abs(1.0 + 0.35 * rng.standard_normal(steps)) + np.where(rng.random(steps) < 0.03, 4.0, 0.0)
    level = np.clip(0.6 + 0.5 * (np.r_[1.0, grad[:-1]] / np.median(grad) - 1.0), 0.05, 1.0)
    starts = t_start_ns + np.arange(steps, dtype=np.int64) * int(step_s * S)
    ends = starts + int(step_s * S) - 1_000_000
    rows = [{"step": i, "loss": float(4.0 - 0.01 * i), "grad_norm": float(g), "lr": 1e-3, "lr_spike": i in (30, 70),
             "t_start_ns": int(a), "t_end_ns": int(b), "energy_j": None, "counter_start_j": None,
             "counter_end_j": None, "load_level": float(lv)}
            for i, (g, a, b, lv) in enumerate(zip(grad, starts, ends, level))]
    edges = [LoadEdge(int(a), float(lv)) for a, lv in zip(starts, level)] + [LoadEdge(int(ends[-1]), 0.0)]
    return rows, edges


def add_counter_energy(rows: list[dict], t_ns: np.ndarray, energy_j: np.ndarray) -> None:
    """Fill each step's energy from the trace's energy counter at its ends, as the runner reads it."""
    starts = np.array([r["t_start_ns"] for r in rows])
    ends = np.array([r["t_end_ns"] for r in rows])
    for r, c0, c1 in zip(rows, np.interp(starts, t_ns, energy_j), np.interp(ends, t_ns, energy_j)):
        r.update(energy_j=float(c1 - c0), counter_start_j=float(c0), counter_end_j=float(c1))


def training_report(rows: list[dict], trace: pa.Table, profile) -> dict:
    """training_coupling.json for these steps over this trace, as the suite writes it."""
    from experiments.reports import analyse_all

    result = {"experiment": "training_coupling", "schema_version": 1, "t_start_ns": rows[0]["t_start_ns"],
              "t_end_ns": rows[-1]["t_end_ns"], "steps": rows, "end_reason": "completed", "simulated": True}
    info = {"power_limit_w": profile.power_limit_w, "slowdown_temp_c": profile.slowdown_temp_c}
    reports, _events = analyse_all({"training_coupling": result}, {}, trace.to_pandas(), None, info)
    return reports["training_coupling"]


def training_run(profile_name: str = "rtx4080-laptop", steps: int = 120, step_s: float = 0.25, t0_ns: int = 10 * S,
                 idle_s: float = 5.0, gap_steps: tuple[int, int] | None = (50, 54), seed: int = 0,
                 device_uuid: str = "GPU-training") -> TrainingRun:
    """Render one run: ``idle_s`` idle, then ``steps`` training steps of ``step_s`` each, 2 s idle.

    ``gap_steps`` (first, last): the trace loses every read during those steps (a poller
    stall), so they are not aligned. The report should find power coupled at lag >= 1.
    """
    from agents.physics import render_trace
    from agents.profiles import load_profile

    profile = load_profile(profile_name)
    rows, edges = synthetic_steps(t0_ns + int(idle_s * S), steps, step_s, seed)
    t_ns = np.arange(t0_ns, rows[-1]["t_end_ns"] + 2 * S, PERIOD_NS, dtype=np.int64)
    out = render_trace(profile, edges, t_ns, seed=seed, t_start_ns=t0_ns)
    add_counter_energy(rows, t_ns, out["energy_j"])
    keep = np.ones(len(t_ns), dtype=bool)
    if gap_steps is not None:
        keep &= ~((t_ns >= rows[gap_steps[0]]["t_start_ns"]) & (t_ns <= rows[gap_steps[1]]["t_end_ns"]))
    trace = trace_table({k: v[keep] for k, v in out.items()}, t_ns[keep], device_uuid)
    markers = pa.table({"t_ns": pa.array([t0_ns], pa.int64()), "wall_ns": pa.array([None], pa.int64()),
                        "device_uuid": pa.array([None], pa.string()), "name": ["phase_start"],
                        "attrs_json": ['{"phase": "training_coupling"}']})
    return TrainingRun(trace, markers, rows, training_report(rows, trace, profile), float(profile.power_limit_w),
                       float(profile.slowdown_temp_c))


def trace_table(out: dict, t_ns: np.ndarray, device_uuid: str, wall_offset_ns: int = 1_790_000_000 * S) -> pa.Table:
    """A TRACE_SCHEMA table from render_trace's arrays (power fields null on failed reads);
    wall_ns is t_ns + ``wall_offset_ns``."""
    from agents.trace_schema import TRACE_SCHEMA

    n = len(t_ns)
    ok = out["read_ok"]
    cols = {"t_ns": t_ns, "wall_ns": t_ns + wall_offset_ns, "device_uuid": [device_uuid] * n}
    for name in ("power_w", "power_instant_w", "energy_j", "temp_c", "sm_clock_mhz", "mem_clock_mhz", "util_gpu",
                 "util_mem", "vram_used_mib", "clocks_event_reasons", "pstate"):
        cols[name] = pa.array(out[name], mask=~ok if name.startswith("power") else None)
    cols.update(read_ok=ok, dt_s=np.r_[np.nan, np.diff(t_ns) / 1e9], lateness_ms=np.zeros(n))
    return pa.table({f.name: pa.array(cols[f.name], f.type) if not isinstance(cols[f.name], pa.Array)
                     else cols[f.name].cast(f.type) for f in TRACE_SCHEMA})
