"""The dashboard tests' warehouse: built once per test session by running the real product.

:func:`build_fleet_warehouse` runs the smoke fleet job (``cluster.job.run_fleet``: a local
Ray, two simulated hosts, the whole suite, ingest by the driver) in a child process, so
Ray's state never leaks into the test process. It runs the job twice: first baseline and
instrument_response only, then the whole suite and training_coupling, so every device has
two runs (the Drift page has something to draw) and its latest run has every experiment.

When the fleet job fails or its warehouse lacks a figure the pages draw, the fixture fails:
that is the analysis-to-table contract breaking, and no test may pass over it. Only with
``FLEETPHYSICS_DASHBOARD_FALLBACK=1`` (a developer working on the pages while another part of
the product is mid-change) does :func:`build_synthetic_warehouse` stand in: it renders traces
with ``agents.physics.render_trace`` and ingests them with ``warehouse.ingest.ingest_tables``
along with experiment JSONs shaped like the suite's. ``FleetWarehouse.builder`` says which one
made the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tiers import marks_users

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("rtx4080-laptop", "h100-sxm")
FLEET_TIMEOUT_S = 900
# Point this at a warehouse an earlier session built (build_fleet_warehouse) to skip the build.
REUSE_ENV = "FLEETPHYSICS_DASHBOARD_FIXTURE"
# Opt-in only: pages tested on a hand-written warehouse when the fleet job cannot run.
FALLBACK_ENV = "FLEETPHYSICS_DASHBOARD_FALLBACK"

_FLEET_SCRIPT = textwrap.dedent("""
    import json, sys
    from cluster.job import FleetOptions, run_fleet
    from experiments.suite import EXPERIMENTS
    warehouse, out = sys.argv[1], sys.argv[2]
    profiles = tuple(sys.argv[3].split(","))
    summaries = []
    for experiments in (("baseline", "instrument_response"), EXPERIMENTS + ("training_coupling",)):
        summaries.append(run_fleet(FleetOptions(address=None, profile="smoke", simulate_profiles=profiles,
                                                warehouse=warehouse, out=out, experiments=experiments,
                                                show_progress=False)))
    print(json.dumps([{"run_id": s["run_id"], "run_state": s["run_state"]} for s in summaries]))
""")


@dataclass(frozen=True)
class FleetWarehouse:
    """The fixture warehouse and how it was made."""

    path: Path
    builder: str  # "run_fleet" or "ingest_tables (fallback: ...)"
    seconds: float
    hosts: tuple[str, ...]
    gpus: tuple[str, ...]
    gpu_of_host: tuple[tuple[str, str], ...]


def build_fleet_warehouse(root: Path) -> FleetWarehouse:
    """Run the smoke fleet job twice into ``root/fleet.duckdb``.

    Raises RuntimeError naming what failed when the job fails or its warehouse lacks a figure,
    unless ``FLEETPHYSICS_DASHBOARD_FALLBACK=1`` asks for the synthetic builder instead."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "fleet.duckdb"
    start = time.perf_counter()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    try:
        proc = subprocess.run([sys.executable, "-c", _FLEET_SCRIPT, str(path), str(root / "runs"), ",".join(PROFILES)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=FLEET_TIMEOUT_S)
        why = _missing(path, 2) if proc.returncode == 0 else _last_line(proc.stderr or proc.stdout)
        ok = not why
    except subprocess.TimeoutExpired:
        ok, why = False, f"the fleet job ran past {FLEET_TIMEOUT_S} s"
    if ok:
        return _describe(path, "run_fleet", time.perf_counter() - start)
    if os.environ.get(FALLBACK_ENV) != "1":
        raise RuntimeError(f"dashboard fixture: the smoke fleet job failed ({why}); fix it, or set "
                           f"{FALLBACK_ENV}=1 to test the pages on a synthetic warehouse")
    for p in (path, Path(str(path) + ".wal")):
        p.unlink(missing_ok=True)
    build_synthetic_warehouse(path)
    return _describe(path, f"ingest_tables (fallback: run_fleet failed: {why})", time.perf_counter() - start)


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def _missing(path: Path, runs: int) -> str:
    """What the warehouse lacks for the dashboard tests ("" when nothing): every device
    with ``runs`` runs and, in its latest run, the headline figure of every experiment."""
    if not path.is_file():
        return "no warehouse file was written"
    from warehouse.query import query

    df = query(path, "SELECT device_uid, count(*) AS runs FROM run_devices GROUP BY device_uid")
    if len(df) < len(PROFILES) or (df["runs"] < runs).any():
        return f"expected {len(PROFILES)} devices with {runs} runs each, got {df.to_dict('records')}"
    latest = query(path, "SELECT device_uid, idle_robust_w, power_instant_w_rise_ms, vram_max_context_batch1, "
                         "j_per_token_batch1, time_to_equilibrium_s FROM v_fleet_latest")
    empty = sorted({c for c in latest.columns[1:] if latest[c].isna().any()})
    if empty:
        return f"v_fleet_latest lacks {', '.join(empty)}"
    trained = query(path, "SELECT count(DISTINCT device_uid) AS n FROM training_steps")["n"][0]
    return "" if trained == len(PROFILES) else f"training_steps has {trained} of {len(PROFILES)} devices"


def _describe(path: Path, builder: str, seconds: float) -> FleetWarehouse:
    from warehouse.query import query

    df = query(path, "SELECT DISTINCT host, gpu_name FROM v_fleet_latest ORDER BY host")
    return FleetWarehouse(path, builder, round(seconds, 1), tuple(df["host"]), tuple(sorted(set(df["gpu_name"]))),
                          tuple(zip(df["host"], df["gpu_name"])))


_BUILT: dict[str, FleetWarehouse] = {}


@pytest.fixture(scope="session")
@marks_users("ray")  # the real fleet job on a local Ray: a minute or more on 2 cores
def fleet_warehouse(tmp_path_factory) -> FleetWarehouse:
    """The smoke fleet warehouse, built once per test session (shared by every module that
    imports this fixture)."""
    if "fleet" not in _BUILT:
        reuse = os.environ.get(REUSE_ENV)
        if reuse and Path(reuse).is_file():  # a developer's shortcut: skip the 2-minute build
            _BUILT["fleet"] = _describe(Path(reuse), f"reused {REUSE_ENV}", 0.0)
        else:
            _BUILT["fleet"] = build_fleet_warehouse(tmp_path_factory.mktemp("dashboard-fleet"))
        built = _BUILT["fleet"]
        print(f"\ndashboard fixture warehouse: {built.builder}, {built.seconds} s, hosts {', '.join(built.hosts)}")
    return _BUILT["fleet"]


@pytest.fixture(scope="session")
def empty_warehouse(tmp_path_factory) -> Path:
    """A warehouse with the schema and no runs."""
    from warehouse.connection import connect_writer

    path = tmp_path_factory.mktemp("dashboard-empty") / "empty.duckdb"
    connect_writer(path).close()
    return path


# ---------------------------------------------------------------- the fallback builder

PERIOD_NS = 20_000_000
T0_NS = 1_000_000_000_000
WALL0_NS = 1_790_000_000_000_000_000


def build_synthetic_warehouse(path: Path) -> None:
    """Two runs of two simulated devices rendered by the physics model and ingested with
    ingest_tables; experiment JSONs shaped like the suite's (figures computed from the trace;
    training_coupling's by the suite's own report code, see training_fixtures.py)."""
    from agents.physics import render_trace
    from agents.profiles import load_profile
    from training_fixtures import add_counter_energy, synthetic_steps, trace_table, training_report
    from warehouse.ingest import ingest_tables

    for run_index, full in enumerate((False, True)):
        run_id = f"20260101T00000{run_index}Z-fallback"
        for slot, name in enumerate(PROFILES):
            profile = load_profile(name)
            host = f"sim-{slot + 1}-{name}"
            device_uid = f"SIM-{name}-{host}-0"
            t_start = T0_NS + run_index * 10**12
            marks, edges = _timeline(t_start, full)
            steps = []
            if full:  # training after the heat soak has cooled for 2 s
                steps, train_edges = synthetic_steps(t_start + 47 * 10**9, steps=60, seed=slot)
                edges += train_edges
                marks += [(steps[0]["t_start_ns"] - 1, "phase_start", {"phase": "training_coupling"}),
                          (steps[-1]["t_end_ns"] + 1, "phase_end", {"phase": "training_coupling"})]
            t_ns = t_start + np.arange(int(marks[-1][0] - t_start) // PERIOD_NS + 50, dtype=np.int64) * PERIOD_NS
            out = render_trace(profile, edges, t_ns, seed=slot + 10 * run_index)
            trace = trace_table(out, t_ns, device_uid, wall_offset_ns=WALL0_NS - T0_NS)
            markers = pa.table({
                "t_ns": pa.array([m[0] for m in marks], pa.int64()),
                "wall_ns": pa.array([m[0] - T0_NS + WALL0_NS for m in marks], pa.int64()),
                "device_uuid": pa.array([None] * len(marks), pa.string()),
                "name": [m[1] for m in marks], "attrs_json": [json.dumps(m[2], sort_keys=True) for m in marks]})
            meta = {"schema_version": 1, "run_id": run_id, "host": host, "device_uid": device_uid,
                    "fingerprint": f"fp-{device_uid}", "simulated": True, "run_state": "completed",
                    "end_reason": "completed", "started_wall_ns": WALL0_NS + run_index * 10**12,
                    "ended_wall_ns": WALL0_NS + run_index * 10**12 + int(t_ns[-1] - t_start)}
            fp = {"device_uid": device_uid, "fingerprint": f"fp-{device_uid}", "comparability_key": f"sim-{name}",
                  "simulated": True, "fields": {"gpu_name": name, "vram_total_mib": profile.vram_total_mib,
                                                 "power_limit_w": profile.power_limit_w}}
            stats = {"period_ms": PERIOD_NS / 1e6, "samples": len(t_ns), "expected_samples": len(t_ns),
                     "dropped_ticks": 0, "read_errors": int((~out["read_ok"]).sum()),
                     "scheduling_quality": "strict", "continuity_quality": "strict"}
            docs, tables = _experiments(profile, out, t_ns, marks, full), {}
            if steps:
                add_counter_energy(steps, t_ns, out["energy_j"])
                docs["training_coupling"], tables = training_report(steps, trace, profile)
            ingest_tables(path, meta, fp, trace, markers, None, docs, stats, tables=tables)


def _timeline(t0: int, full: bool) -> tuple[list[tuple], list]:
    from agents.physics import LoadEdge

    s = 10**9
    marks = [(t0 + s, "phase_start", {"phase": "baseline"}), (t0 + 2 * s, "window_start", {"phase": "baseline"}),
             (t0 + 9 * s, "window_end", {"phase": "baseline"}), (t0 + 9 * s + 1, "phase_end", {"phase": "baseline"}),
             (t0 + 10 * s, "phase_start", {"phase": "instrument_response"})]
    edges = []
    for k in range(3):
        on, off = t0 + (11 + 4 * k) * s, t0 + (13 + 4 * k) * s
        marks += [(on, "load", {"level": 1.0}), (off, "load", {"level": 0.0})]
        edges += [LoadEdge(on, 1.0), LoadEdge(off, 0.0)]
    marks.append((t0 + 24 * s, "phase_end", {"phase": "instrument_response"}))
    if full:
        marks += [(t0 + 25 * s, "phase_start", {"phase": "heat_soak"}), (t0 + 25 * s + 1, "load", {"level": 1.0}),
                  (t0 + 45 * s, "load", {"level": 0.0}), (t0 + 45 * s + 1, "phase_end", {"phase": "heat_soak"})]
        edges += [LoadEdge(t0 + 25 * s + 1, 1.0), LoadEdge(t0 + 45 * s, 0.0)]
    marks.sort(key=lambda m: m[0])
    return marks, edges


def _experiments(profile, out: dict, t_ns: np.ndarray, marks: list, full: bool) -> dict:
    at = {(m[1], m[2].get("phase")): m[0] for m in marks}
    window = (t_ns >= at[("window_start", "baseline")]) & (t_ns <= at[("window_end", "baseline")])
    idle = out["power_w"][window & out["read_ok"]]
    sem = float(np.std(idle) / np.sqrt(max(1, len(idle))) * 3)
    from experiments.contracts.samples import sample_report

    docs = {
        "baseline": sample_report("baseline", {
            "field": "power_w", "mean_robust_w": float(np.median(idle)), "sem_eff_w": sem,
            "floor_fraction": float(out["floor"][window].mean()), "fake_idle": False, "n": int(len(idle)),
            "window_s": 7.0, "quality": "good"}, quality={"quality": "good"}),
        "instrument_response": sample_report("instrument_response", {
            "power_instant_w": {"update_period_ms": float(profile.sensor_update_period_ms),
                                "rise_ms": 0.8 * profile.instant_window_ms + 40,
                                "window_ms": float(profile.instant_window_ms), "n_steps": 6,
                                "idle_w": float(profile.idle_power_w), "load_w": float(profile.max_power_w),
                                "quality": "good"},
            "power_w": {"update_period_ms": float(profile.sensor_update_period_ms),
                        "rise_ms": 0.8 * profile.average_window_ms, "window_ms": float(profile.average_window_ms),
                        "n_steps": 6, "quality": "good"}}),
    }
    if not full:
        return docs
    heat = (t_ns >= at[("phase_start", "heat_soak")]) & (t_ns <= at[("phase_end", "heat_soak")])
    t_s = (t_ns[heat] - t_ns[heat][0]) / 1e9
    tau = profile.thermal_resistance_c_per_w * profile.thermal_capacitance_j_per_c
    t_inf = profile.ambient_c + profile.thermal_resistance_c_per_w * profile.max_power_w
    vram = profile.vram_total_mib
    docs.update({
        "vram_cliff": sample_report("vram_cliff", {
            "vram_total_mib": float(vram), "capacity_mib": float(vram), "weights_mib": 500.0,
            "fragmentation": {"fragmentation": 0.2},
            "cliff": [{"batch_size": b, "max_context": int(vram / 8 / b) // 256 * 256,
                       "first_failing_context": int(vram / 8 / b) // 256 * 256 + 256, "cause": "memory",
                       "peak_allocated_mib": vram * 0.98} for b in (1, 4)]}, checks={"cliff_found": True}),
        "joule_curve": sample_report("joule_curve", {"points": [
            {"phase": ph, "batch_size": b, "n_events": 3, "j_per_token": profile.max_power_w / (40.0 * b ** 0.8) * k,
             "j_per_token_sem": 0.02 * profile.max_power_w / (40.0 * b), "tokens_per_s": 8.0 * b / k,
             "energy_quality": "BILLABLE"} for ph, k in (("decode", 1.0), ("prefill", 0.4)) for b in (1, 4, 16)]}),
        "heat_soak": sample_report("heat_soak", {
            "tau_s": float(tau), "t_inf_c": float(t_inf), "t_start_c": float(out["temp_c"][heat][0]),
            "t_end_c": float(out["temp_c"][heat][-1]), "equilibrium": False, "equilibrium_status": "predicted",
            "equilibrium_kind": "predicted", "time_to_equilibrium_s": 4 * tau, "duration_s": float(t_s[-1]),
            "window_s": 300.0, "step_s": 300.0, "quality": "good", "quality_reason": "soak covered one tau",
            "series": {"t_s": t_s[::25].tolist(), "temp_c": out["temp_c"][heat][::25].tolist(),
                       "power_w": out["power_w"][heat][::25].tolist(),
                       "sm_clock_mhz": [None] * len(t_s[::25])}}),
    })
    return docs
