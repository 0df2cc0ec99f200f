"""Simulated fleets for the verdict tests, rendered instead of waited for.

Each host is one simulated unit (``agents.units``: its own constants within the board's
spread, plus any fault overrides in its spec). Its trace is rendered by the physics model
for the suite's timeline (idle baseline, a square wave, a heat soak), analysed by the
suite's own report code (``experiments.reports.analyse_all``) and ingested with
``warehouse.ingest.ingest_tables``, as the fleet driver does: only the waiting is skipped.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

S = 1_000_000_000
WALL0_NS = 1_790_000_000 * S
FAST_NS = 20_000_000  # poller grid through baseline and square wave
SLOW_NS = 200_000_000  # and through the heat soak (the temperature moves over minutes)

# fault kind -> (unit overrides, the figure or rule words its verdict must name)
FAULTS = {
    "leaky": ("idle_power_w=92", "idle_power_w"),
    "stuck_clock": ("idle_power_w=110&sm_clock_idle_mhz=1980", "idle_power_w"),
    "hot_inlet": ("ambient_c=40", "idle_temp_c"),
    "poor_cooling": ("thermal_resistance_c_per_w=0.08", "thermal_resistance_c_per_w"),
    "stuck_sensor": ("sensor_update_period_ms=2000", "update_period_ms"),
    "power_capped": ("power_limit_w=450", "load_power_w"),
    "background_load": ("idle_util_pct=45", "fake idle"),
    "no_energy_counter": ("has_energy_counter=false", "no energy counter"),
}


def _timeline(t0: int, soak_s: float):
    from agents.physics import LoadEdge

    marks = [(t0 + 1 * S, "phase_start", {"phase": "baseline"}), (t0 + 2 * S, "window_start", {"phase": "baseline"}),
             (t0 + 22 * S, "window_end", {"phase": "baseline"}), (t0 + 22 * S + 1, "phase_end", {"phase": "baseline"}),
             (t0 + 23 * S, "phase_start", {"phase": "instrument_response"})]
    edges, ir_edges = [], []
    for k in range(3):
        on, off = t0 + (25 + 5 * k) * S, t0 + (27 + 5 * k) * S
        marks += [(on, "load", {"level": 1.0}), (off, "load", {"level": 0.0})]
        edges += [LoadEdge(on, 1.0), LoadEdge(off, 0.0)]
        ir_edges += [(on, 1.0), (off, 0.0)]
    marks.append((t0 + 42 * S, "phase_end", {"phase": "instrument_response"}))
    soak0, soak1 = t0 + 43 * S, t0 + 43 * S + int(soak_s * S)
    marks += [(soak0, "phase_start", {"phase": "heat_soak"}), (soak0 + 1, "load", {"level": 1.0}),
              (soak1, "load", {"level": 0.0}), (soak1 + 1, "phase_end", {"phase": "heat_soak"})]
    edges += [LoadEdge(soak0 + 1, 1.0), LoadEdge(soak1, 0.0)]
    results = {
        "baseline": {"t_start_ns": t0 + 2 * S, "t_end_ns": t0 + 22 * S, "completed": True},
        "instrument_response": {"t_start_ns": t0 + 23 * S, "t_end_ns": t0 + 42 * S, "edges": ir_edges},
        "heat_soak": {"t_start_ns": soak0, "t_end_ns": soak1, "end_reason": "completed"},
    }
    t_ns = np.r_[np.arange(t0, soak0, FAST_NS), np.arange(soak0, soak1 + 2 * S, SLOW_NS)].astype(np.int64)
    return marks, edges, results, t_ns


def render_host(target: str, host: str, run_id: str, run_index: int = 0, soak_s: float = 1800.0) -> dict:
    """Everything ``ingest_tables`` takes for one simulated host (one device, slot 0)."""
    from agents.fingerprint import fingerprint_from_fields
    from agents.physics import render_trace
    from agents.units import unit_profile
    from experiments.reports import analyse_all
    from experiments.suite import experiment_config
    from training_fixtures import trace_table

    unit, board = unit_profile(target, host, 0)
    device_uid = f"SIM-{board.name}-{host}-0"
    t0 = (10 + run_index * 5000) * S
    marks, edges, results, t_ns = _timeline(t0, soak_s)
    # sensor noise and read errors seeded by host and run (crc32: the same in every process)
    out = render_trace(unit, edges, t_ns, seed=zlib.crc32(f"{host}/{run_index}".encode()) & 0xFFFF, t_start_ns=0)
    trace = trace_table(out, t_ns, device_uid, wall_offset_ns=WALL0_NS)
    if not unit.has_energy_counter:  # the board has none: NVML answers "not supported", a null
        trace = trace.set_column(trace.schema.get_field_index("energy_j"), "energy_j",
                                 pa.nulls(len(t_ns), pa.float64()))
    markers = pa.table({
        "t_ns": pa.array([m[0] for m in marks], pa.int64()),
        "wall_ns": pa.array([m[0] + WALL0_NS for m in marks], pa.int64()),
        "device_uuid": pa.array([None] * len(marks), pa.string()),
        "name": [m[1] for m in marks], "attrs_json": [json.dumps(m[2], sort_keys=True) for m in marks]})
    # the soak is the full preset's (TR122's 30 min cap, 5-minute slope windows); the rest quick
    configs = {name: experiment_config(name, "full" if name == "heat_soak" else "quick") for name in results}
    frame = trace.to_pandas()
    docs, _ = analyse_all(results, configs, frame, markers.to_pandas(), {"simulated": True})
    fields = {"gpu_name": board.name, "vram_total_mib": board.vram_total_mib, "power_limit_w": board.power_limit_w,
              "simulated": True, "profile_sha256": board.content_sha256()}
    fp = fingerprint_from_fields(device_uid, fields).to_dict()
    meta = {"schema_version": 1, "run_id": run_id, "host": host, "device_uid": device_uid,
            "fingerprint": fp["fingerprint"], "simulated": True, "run_state": "completed", "end_reason": "completed",
            "started_wall_ns": WALL0_NS + t0, "ended_wall_ns": WALL0_NS + int(t_ns[-1])}
    stats = {"period_ms": FAST_NS / 1e6, "samples": len(t_ns), "expected_samples": len(t_ns), "dropped_ticks": 0,
             "read_errors": int((~out["read_ok"]).sum()), "scheduling_quality": "strict",
             "continuity_quality": "strict"}
    return {"meta": meta, "fp": fp, "trace": trace, "markers": markers, "docs": docs, "stats": stats}


def plant(n_hosts: int, board: str, faults: dict[int, str]) -> list[tuple[str, str, str | None]]:
    """(host, spec target, fault kind or None) for a fleet of ``n_hosts`` units of ``board``
    with ``faults`` {position: kind} planted; hosts are named sim-<n>-<board>."""
    out = []
    for i in range(n_hosts):
        kind = faults.get(i)
        target = board if kind is None else f"{board}?{FAULTS[kind][0]}"
        out.append((f"sim-{i + 1}-{board}", target, kind))
    return out


def build_fleet(path: Path, hosts: list[tuple[str, str, str | None]], run_id: str, run_index: int = 0) -> None:
    """Render and ingest every host into the warehouse at ``path``."""
    from warehouse.ingest import ingest_tables

    for host, target, _ in hosts:
        h = render_host(target, host, run_id, run_index)
        ingest_tables(path, h["meta"], h["fp"], h["trace"], h["markers"], None, h["docs"], h["stats"])


def figures_table(path: Path, run_id: str | None = None) -> tuple[pd.DataFrame, str]:
    """The verdict's input table for a warehouse (read-only)."""
    from warehouse.connection import readonly
    from warehouse.verdict_data import load_figures

    with readonly(path) as con:
        return load_figures(con, run_id)
