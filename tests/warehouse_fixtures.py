"""Synthetic artifact dirs and Arrow tables for the warehouse tests (numpy + pyarrow only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

T0_WALL_NS = 1_700_000_000_000_000_000
PERIOD_NS = 10_000_000  # 10 ms poller grid


def make_trace(rows: int = 2_000, seed: int = 0, device_uuid: str = "GPU-0000-test", t0_ns: int = 5_000_000_000,
               throttle_from: int | None = None) -> pa.Table:
    """A poller trace following TRACE_SCHEMA: idle, a load step in the middle, idle again."""
    rng = np.random.default_rng(seed)
    late_ms = np.round(rng.exponential(0.2, rows), 3)
    t = t0_ns + np.arange(rows, dtype=np.int64) * PERIOD_NS + (late_ms * 1e6).astype(np.int64)
    load = (np.arange(rows) >= rows // 3) & (np.arange(rows) < 2 * rows // 3)
    power = np.where(load, 300.0, 60.0) + np.round(rng.normal(0, 1.0, rows), 2)
    dt_s = np.diff(t, prepend=t[0] - PERIOD_NS) / 1e9
    dt_s[0] = np.nan  # the first row has no predecessor: NaN is stored as null
    reasons = np.zeros(rows, dtype=np.int64)
    if throttle_from is not None:
        reasons[throttle_from: throttle_from + 50] = 0x20  # sw thermal slowdown
    return pa.table({
        "t_ns": pa.array(t, pa.int64()),
        "wall_ns": pa.array(t + T0_WALL_NS, pa.int64()),
        "device_uuid": pa.array([device_uuid] * rows, pa.string()),
        "power_w": power,
        "power_instant_w": power + 1.0,
        "energy_j": np.cumsum(power * PERIOD_NS / 1e9),
        "temp_c": np.round(40 + 20 * load, 0),
        "sm_clock_mhz": np.full(rows, 1800.0),
        "mem_clock_mhz": np.full(rows, 9501.0),
        "util_gpu": np.where(load, 100.0, 0.0),
        "util_mem": np.where(load, 40.0, 0.0),
        "vram_used_mib": np.full(rows, 1024.0),
        "clocks_event_reasons": pa.array(reasons, pa.int64()),
        "pstate": pa.array(np.zeros(rows, dtype=np.int32), pa.int32()),
        "read_ok": np.ones(rows, dtype=bool),
        "dt_s": dt_s,
        "lateness_ms": late_ms,
    })


def make_markers(trace: pa.Table) -> pa.Table:
    """Two load markers (on at 1/3, off at 2/3 of the trace) and a phase marker."""
    t = trace.column("t_ns").to_numpy()
    n = len(t)
    times = [int(t[0]), int(t[n // 3]), int(t[2 * n // 3])]
    return pa.table({
        "t_ns": pa.array(times, pa.int64()),
        "wall_ns": pa.array([x + T0_WALL_NS for x in times], pa.int64()),
        "device_uuid": pa.array([None, None, None], pa.string()),
        "name": ["phase_start", "load", "load"],
        "attrs_json": ['{"phase": "baseline"}', '{"level": 1.0}', '{"level": 0.0}'],
    })


def make_events(n: int = 4) -> pa.Table:
    """Per-event figures for a small decode sweep."""
    return pa.table({
        "event_id": [f"ev-{i}" for i in range(n)],
        "experiment": ["joule_curve"] * n,
        "phase": ["decode"] * n,
        "batch_size": pa.array([2 ** i for i in range(n)], pa.int64()),
        "input_tokens": pa.array([32] * n, pa.int64()),
        "output_tokens": pa.array([64] * n, pa.int64()),
        "t_start_ns": pa.array([6_000_000_000 + i * 1_000_000_000 for i in range(n)], pa.int64()),
        "t_end_ns": pa.array([6_500_000_000 + i * 1_000_000_000 for i in range(n)], pa.int64()),
        "energy_counter_j": [100.0 + i for i in range(n)],
        "energy_integrated_j": [99.0 + i for i in range(n)],
        "energy_net_j": [70.0 + i for i in range(n)],
        "energy_quality": ["GOOD"] * n,
        "gap_fraction": [0.0] * n,
        "tokens_per_second": [128.0 * (i + 1) for i in range(n)],
    })


def run_metadata(run_id: str = "run-0001", host: str = "host-a", device_uid: str = "dev-0", **over) -> dict:
    """A run_metadata.json document."""
    doc = {
        "schema_version": 1, "run_id": run_id, "host": host, "device_uid": device_uid,
        "fingerprint": f"fp-{device_uid}", "simulated": True, "run_state": "completed",
        "end_reason": "completed", "started_wall_ns": T0_WALL_NS, "ended_wall_ns": T0_WALL_NS + 60 * 10**9,
        "git_hash": "abc123", "git_dirty": False, "config": {"suite": "test"},
        "library_versions": {"duckdb": "x"}, "checks": {"ok": True},
    }
    doc.update(over)
    return doc


def fingerprint(device_uid: str = "dev-0", **over) -> dict:
    """A fingerprint.json document."""
    doc = {
        "device_uid": device_uid, "fingerprint": f"fp-{device_uid}", "comparability_key": "sim-a100",
        "simulated": True,
        "fields": {"gpu_name": "Simulated A100", "vram_total_mib": 40960, "driver_version": "535.1",
                   "power_limit_w": 400, "cpu_model": "Test CPU", "cpu_cores": 8, "ram_gb": 64,
                   "os_kernel": "6.1"},
    }
    doc.update(over)
    return doc


def experiments(idle_w: float = 60.0) -> dict[str, dict]:
    """One report per experiment, valid by its contract (experiments.contracts): the figures
    the tests read set, the rest the contract's minimal values."""
    from experiments.contracts.samples import sample_report

    return {
        "baseline": sample_report("baseline", {
            "field": "power_w", "mean_robust_w": idle_w, "sem_eff_w": 0.05, "median_w": idle_w, "std_w": 0.4,
            "floor_fraction": 0.0, "fake_idle": False, "n": 1000, "window_s": 10.0, "quality": "good",
            "fake_idle_reasons": []}, quality={"quality": "good"}, checks={"completed": True}),
        "instrument_response": sample_report("instrument_response", {
            "power_w": {"update_period_ms": 100.0, "rise_ms": 900.0, "delay_ms": 600.0, "window_ms": 1000.0,
                        "idle_w": idle_w, "load_w": 300.0, "n_steps": 6, "quality": "good",
                        "steps": [{"t_ns": 1, "rise_ms": 901}]},
            "power_instant_w": {"update_period_ms": 100.0, "rise_ms": 250.0, "delay_ms": 130.0, "window_ms": 100.0,
                                "idle_w": idle_w, "load_w": 300.0, "quality": "unresolved"}},
            quality={"power_w": {"quality": "good"}}, checks={"steps": 3}),
        "vram_cliff": sample_report("vram_cliff", {
            "vram_total_mib": 40960.0, "capacity_mib": 40960.0, "weights_mib": 500.0,
            "fragmentation": {"fragmentation": 0.25, "fragmentation_at_oom": 0.3, "largest_allocatable_mib": 30000.0},
            "cliff": [{"batch_size": 1, "max_context": 30000, "cause": "memory", "first_failing_context": 30512,
                       "model_max_context": 30100, "delta_tokens": -100, "probes": 8, "peak_allocated_mib": 40000.0},
                      {"batch_size": 8, "max_context": 4000, "cause": "memory", "probes": 7,
                       "peak_allocated_mib": 39000.0}]},
            probes=[{"batch_size": 1, "context": 1024, "ok": True, "oom": False, "error": None,
                     "peak_allocated_mib": 2000.0, "elapsed_s": 0.1},
                    {"batch_size": 1, "context": 30512, "ok": False, "oom": True, "error": "CUDA out of memory",
                     "peak_allocated_mib": 40900.0, "elapsed_s": 0.2}],
            checks={"cliff_found": True, "cliff_is_memory": True}),
        "joule_curve": sample_report("joule_curve", {
            "points": [{"phase": "decode", "batch_size": 1, "j_per_token": 2.0, "energy_quality": "GOOD", "n_events": 3},
                       {"phase": "decode", "batch_size": 8, "j_per_token": 0.4, "energy_quality": "BILLABLE",
                        "n_events": 3},
                       {"phase": "prefill", "batch_size": 1, "j_per_token": 0.1}],
            "fits": [{"phase": "decode", "model": "E_net = E_fixed + E_token * tokens",
                      "params": {"e_fixed_j": 1.0, "e_token_j": 0.3}, "r2": 0.99, "n_events": 6, "quality": "good"}],
            "quality_counts": {"GOOD": 3, "BILLABLE": 3}, "n_events": 6, "n_used": 6},
            checks={"events_matched": True}),
        "heat_soak": sample_report("heat_soak", {
            "tau_s": 120.0, "t_inf_c": 78.0, "t_start_c": 40.0, "t_end_c": 70.0, "equilibrium": False,
            "equilibrium_status": "predicted", "equilibrium_kind": "predicted", "throttled": False, "fit_r2": 0.998,
            "duration_s": 20.0, "window_s": 10.0, "step_s": 10.0, "quality": "good",
            "quality_reason": "soak covered one tau"},
            quality={"quality": "good", "equilibrium": False}, checks={"end_reason": "timeout"}),
    }


def poller_stats() -> dict:
    """A poller_stats.json document."""
    return {"dt_ms": {"median": 10.0, "p95": 10.4, "p99": 11.0},
            "lateness_ms": {"p50": 0.1, "p99": 0.9, "max": 2.0},
            "dropped_ticks": 0, "read_errors": 0, "max_gap_ms": 11.0, "gap_count": 0,
            "samples": 2000, "expected_samples": 2000, "scheduling_quality": "strict",
            "continuity_quality": "strict", "period_ms": 10.0}


def write_device_dir(out: Path, run_id: str = "run-0001", host: str = "host-a", device_uid: str = "dev-0",
                     rows: int = 2_000, parts: int = 2, seed: int = 0, meta_over: dict | None = None,
                     with_events: bool = True, with_experiments: bool = True, throttle_from: int | None = None,
                     idle_w: float = 60.0) -> Path:
    """Write ``out/<run_id>/<host>/<device_uid>/`` with every artifact file; return the dir."""
    d = Path(out) / run_id / host / device_uid
    (d / "power_trace").mkdir(parents=True, exist_ok=True)
    trace = make_trace(rows, seed=seed, device_uuid=f"GPU-{device_uid}", throttle_from=throttle_from)
    bounds = np.linspace(0, rows, parts + 1).astype(int)
    for i in range(parts):
        pq.write_table(trace.slice(bounds[i], bounds[i + 1] - bounds[i]), d / "power_trace" / f"part-{i:05d}.parquet")
    pq.write_table(make_markers(trace), d / "markers.parquet")
    if with_events:
        pq.write_table(make_events(), d / "events.parquet")
    if with_experiments:
        for name, doc in experiments(idle_w).items():
            (d / f"{name}.json").write_text(json.dumps(doc))
    (d / "poller_stats.json").write_text(json.dumps(poller_stats()))
    (d / "fingerprint.json").write_text(json.dumps(fingerprint(device_uid)))
    (d / "run_metadata.json").write_text(json.dumps(run_metadata(run_id, host, device_uid, **(meta_over or {}))))
    return d


def table_fingerprint(path) -> dict:
    """Row count and an order-independent checksum of every table: the warehouse's state."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        columns: dict[str, list[str]] = {}
        for table, column in con.execute(
                "SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal AND schema_name = 'main' "
                "AND table_name IN (SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main') "
                "ORDER BY table_name, column_index").fetchall():
            if column not in ("ingested_at", "applied_at"):
                columns.setdefault(table, []).append(f'"{column}"')
        if not columns:
            return {}
        # one statement for every table: a query per table cost a warehouse test more than its ingest
        sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n, coalesce(sum(hash({', '.join(cols)})), 0) AS h "
                                 f"FROM {t}" for t, cols in columns.items())
        return {t: (n, h) for t, n, h in con.execute(sql).fetchall()}
    finally:
        con.close()


def kill_when_paused(child: subprocess.Popen, sentinel: Path, while_paused: Callable[[], None] = lambda: None,
                     timeout_s: float = 60) -> None:
    """Wait for ``child`` to write ``sentinel`` (it then sleeps at its pause point), run
    ``while_paused``, then SIGKILL it; asserts that it died of that kill."""
    try:
        deadline = time.monotonic() + timeout_s
        while not sentinel.exists():
            assert child.poll() is None, child.stdout.read().decode() if child.stdout else "the child exited"
            assert time.monotonic() < deadline, "the child never reached its pause point"
            time.sleep(0.05)
        while_paused()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
