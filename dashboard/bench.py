"""`fleetphysics bench dashboard`: render every page over a large warehouse.

Builds a warehouse of ``--rows`` trace rows over ``--runs`` runs of ``--devices`` devices
(the traces from :func:`warehouse.bench.synthetic_trace`, ingested with
:func:`warehouse.ingest.ingest_tables`, with markers, events and experiment JSONs shaped
like the suite's so every page has work to do; half of the devices change fingerprint
halfway, as after a driver update). Then renders each page through
``streamlit.testing.v1.AppTest`` twice: cold (st.cache_data cleared, so every query runs
and a connection is opened) and warm (from the cache), and prints seconds per page.
The target is under 2 s per page cold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from agents.cli_args import positive_int
from warehouse.progress import Report, no_report, progress_bars

APP = Path(__file__).resolve().parent / "app.py"
TARGET_S = 2.0
GPUS = (("H100 SXM (bench)", 81559.0, 700.0), ("A100 SXM (bench)", 40960.0, 400.0), ("RTX 4090 (bench)", 24564.0, 450.0))
PERIOD_NS = 10_000_000  # synthetic_trace's grid
WALL0_NS = 1_700_000_000_000_000_000


def _markers(t0: int, t1: int) -> tuple[pa.Table, dict]:
    """Phase markers splitting [t0, t1] like the suite, load edges in instrument_response,
    and the event spans of the Joule phase; returns (markers, phase bounds)."""
    span = t1 - t0
    cut = [t0 + int(span * x) for x in (0.0, 0.1, 0.3, 0.4, 0.6, 1.0)]
    names = ("baseline", "instrument_response", "vram_cliff", "joule_curve", "heat_soak")
    rows = []
    for name, a, b in zip(names, cut, cut[1:]):
        rows += [(a, "phase_start", {"phase": name}), (b - 1, "phase_end", {"phase": name})]
    rows += [(cut[0] + span // 100, "window_start", {"phase": "baseline"}), (cut[1] - span // 100, "window_end", {"phase": "baseline"})]
    step = (cut[2] - cut[1]) // 8
    for k in range(3):
        on = cut[1] + (2 * k + 1) * step
        rows += [(on, "load", {"level": 1.0}), (on + step, "load", {"level": 0.0})]
    events = []
    ev_span = (cut[4] - cut[3]) // 8
    for i, (phase, batch) in enumerate((ph, b) for b in (1, 4, 16, 64) for ph in ("prefill", "decode")):
        a = cut[3] + i * ev_span
        events.append((f"{phase}-b{batch}", phase, batch, a, a + ev_span - 1))
        rows += [(a, "event_start", {"phase": phase, "batch_size": batch}), (a + ev_span - 1, "event_end", {"phase": phase})]
    rows.sort(key=lambda r: r[0])
    table = pa.table({
        "t_ns": pa.array([r[0] for r in rows], pa.int64()), "wall_ns": pa.array([None] * len(rows), pa.int64()),
        "device_uuid": pa.array([None] * len(rows), pa.string()), "name": [r[1] for r in rows],
        "attrs_json": [json.dumps(r[2], sort_keys=True) for r in rows]})
    return table, {"events": events, "heat": (cut[4], cut[5])}


def _follow_load(trace: pa.Table, markers: pa.Table, spans: dict, gpu: tuple, rng: np.random.Generator) -> pa.Table:
    """Replace the synthetic trace's random power with one that follows the load markers,
    the events and the heat soak: power_instant_w with a 30 ms lag, power_w with a 300 ms
    one (first-order responses), plus noise; so the sensor page has real steps to draw."""
    from scipy.signal import lfilter

    t = trace.column("t_ns").to_numpy()
    level = np.zeros(len(t))
    names = markers.column("name").to_pylist()
    times = markers.column("t_ns").to_numpy()
    attrs = [json.loads(a) for a in markers.column("attrs_json").to_pylist()]
    loads = [(tt, a["level"]) for tt, n, a in zip(times, names, attrs) if n == "load"]
    for (a, lv), (b, _) in zip(loads, loads[1:] + [(t[-1] + 1, 0.0)]):
        level[(t >= a) & (t < b)] = lv
    for _id, phase, batch, a, b in spans["events"]:
        level[(t >= a) & (t <= b)] = min(1.0, 0.3 + 0.15 * np.log2(batch)) * (1.0 if phase == "prefill" else 0.7)
    level[t >= spans["heat"][0]] = 1.0
    idle, limit = gpu[2] / 10, gpu[2]
    target = idle + (limit - idle) * level
    out = {}
    for name, tau_ms in (("power_instant_w", 30.0), ("power_w", 300.0)):
        alpha = 1 - np.exp(-PERIOD_NS / 1e6 / tau_ms)
        smooth = lfilter([alpha], [1, alpha - 1], target, zi=[target[0] * (1 - alpha)])[0]
        out[name] = np.clip(np.round(smooth + rng.normal(0, 0.5, len(t)), 2), 0, None)
    for name, values in out.items():
        trace = trace.set_column(trace.schema.get_field_index(name), name, pa.array(values))
    return trace


def _events(spans: list) -> pa.Table:
    n = len(spans)
    return pa.table({
        "event_id": [s[0] for s in spans], "experiment": ["joule_curve"] * n, "phase": [s[1] for s in spans],
        "batch_size": pa.array([s[2] for s in spans], pa.int64()),
        "input_tokens": pa.array([32 * s[2] if s[1] == "prefill" else 0 for s in spans], pa.int64()),
        "output_tokens": pa.array([0 if s[1] == "prefill" else 8 * s[2] for s in spans], pa.int64()),
        "t_start_ns": pa.array([s[3] for s in spans], pa.int64()), "t_end_ns": pa.array([s[4] for s in spans], pa.int64()),
        "energy_counter_j": [100.0 * s[2] for s in spans], "energy_integrated_j": [100.0 * s[2] for s in spans],
        "energy_net_j": [70.0 * s[2] for s in spans], "energy_quality": ["BILLABLE"] * n, "gap_fraction": [0.0] * n,
        "tokens_per_second": [8.0 * s[2] for s in spans]})


def _experiments(rng: np.random.Generator, gpu: tuple, heat_s: float) -> dict:
    name, vram, limit = gpu
    idle = float(rng.normal(limit / 10, 1.5))
    tau = float(rng.normal(120, 8))
    t_inf = float(rng.normal(78, 2))
    t_s = np.linspace(0, heat_s, 600)
    temp = t_inf - (t_inf - 40.0) * np.exp(-t_s / tau)
    cliff = [{"batch_size": b, "max_context": int(vram / 3 / b) // 256 * 256, "cause": "memory",
              "first_failing_context": int(vram / 3 / b) // 256 * 256 + 256, "peak_allocated_mib": vram * 0.97}
             for b in (1, 2, 4, 8)]
    points = [{"phase": ph, "batch_size": b, "j_per_token": limit / 30 / b ** 0.7 * k, "j_per_token_sem": 0.01 * limit / b,
               "tokens_per_s": 8.0 * b, "n_events": 3, "energy_quality": "BILLABLE" if b > 1 else "GOOD"}
              for ph, k in (("decode", 1.0), ("prefill", 0.4)) for b in (1, 4, 16, 64)]
    return {
        "baseline": {"experiment": "baseline", "schema_version": 1, "simulated": True,
                     "figures": {"field": "power_w", "mean_robust_w": idle, "sem_eff_w": 0.05, "floor_fraction": 0.0,
                                 "fake_idle": False, "quality": "good"}},
        "instrument_response": {"experiment": "instrument_response", "schema_version": 1, "simulated": True, "figures": {
            "power_w": {"update_period_ms": 100, "rise_ms": float(rng.normal(900, 20)), "quality": "good"},
            "power_instant_w": {"update_period_ms": 100, "rise_ms": float(rng.normal(80, 5)), "quality": "good"}}},
        "vram_cliff": {"experiment": "vram_cliff", "schema_version": 1, "simulated": True,
                       "figures": {"capacity_mib": vram, "fragmentation": {"fragmentation": 0.2}, "cliff": cliff},
                       "checks": {"cliff_found": True}},
        "joule_curve": {"experiment": "joule_curve", "schema_version": 1, "simulated": True, "figures": {"points": points}},
        "heat_soak": {"experiment": "heat_soak", "schema_version": 1, "simulated": True, "figures": {
            "tau_s": tau, "t_inf_c": t_inf, "t_start_c": 40.0, "t_end_c": float(temp[-1]),
            "equilibrium": heat_s > 4 * tau, "equilibrium_kind": "measured" if heat_s > 4 * tau else "predicted",
            "time_to_equilibrium_s": 4 * tau, "duration_s": heat_s, "quality": "good",
            "series": {"t_s": t_s.tolist(), "temp_c": np.round(temp, 1).tolist()}}},
    }


def _training(rng: np.random.Generator, gpu: tuple, t0: int, t1: int, steps: int = 40) -> dict:
    """A training_coupling report with ``steps`` steps spread over [t0, t1] (the heat soak's
    full load) and a drawn verdict: the bench measures rendering, not the analysis (ingest
    still repeats the per-step analysis and RLE over the trace)."""
    bounds = np.linspace(t0, t1, steps + 1).astype(np.int64)
    grad = np.abs(rng.normal(1.0, 0.3, steps))
    rows = [{"step": i, "loss": 4.0 - 0.02 * i, "grad_norm": float(g), "lr": 3e-4, "lr_spike": False,
             "t_start_ns": int(a), "t_end_ns": int(b) - 1, "energy_j": None}
            for i, (g, a, b) in enumerate(zip(grad, bounds, bounds[1:]))]
    p = float(rng.uniform(0.02, 1.0))
    return {"experiment": "training_coupling", "schema_version": 1, "simulated": True, "steps": rows,
            "figures": {"steps": steps, "n_aligned": steps, "aligned_fraction": 1.0, "verdict": "not coupled",
                        "verdict_reason": f"no target beats its block-bootstrap null (p = {p:.3g} > 0.01)",
                        "p_value": p, "best_lag": int(rng.integers(-5, 6)), "correlation": float(rng.uniform(-0.3, 0.3)),
                        "target": "power", "n_collapses": 0, "collapse_rate": None, "spikes": {"n_spikes": 0},
                        "rle_power_limit_w": gpu[2], "rle_slowdown_temp_c": 87.0},
            "quality": {"quality": "ok", "alpha": 0.01}, "checks": {}}


def build_warehouse(path: Path, rows: int, runs: int, devices: int, progress: Report = no_report) -> dict:
    """Write the bench warehouse; returns what it holds and how long it took. ``progress``
    hears of each run written."""
    from warehouse.bench import synthetic_trace
    from warehouse.connection import connect_writer
    from warehouse.ingest import ingest_tables

    per_run = max(1_000, rows // runs)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    con = connect_writer(path)
    try:
        progress("building runs", 0, runs)
        for i in range(runs):
            d = i % devices
            gpu = GPUS[d % len(GPUS)]
            device_uid = f"bench-dev-{d:03d}"
            # Odd devices get a driver update halfway: a new fingerprint, as on a real host.
            driver = "550.2" if d % 2 and i >= runs // 2 else "550.1"
            fingerprint = hashlib.sha256(f"{device_uid}/{driver}".encode()).hexdigest()
            t0 = 1_000_000_000
            trace = synthetic_trace(per_run, seed=i, t0_ns=t0, device_uuid=f"GPU-{device_uid}")
            t1 = t0 + per_run * PERIOD_NS
            markers, spans = _markers(t0, t1)
            trace = _follow_load(trace, markers, spans, gpu, rng)
            started = WALL0_NS + i * 4 * 3600 * 10**9
            meta = {"schema_version": 1, "run_id": f"bench-run-{i:05d}", "host": f"bench-host-{d // 4:02d}",
                    "device_uid": device_uid, "fingerprint": fingerprint, "simulated": True, "run_state": "completed",
                    "end_reason": "completed", "started_wall_ns": started, "ended_wall_ns": started + (t1 - t0)}
            fp = {"device_uid": device_uid, "fingerprint": fingerprint, "comparability_key": f"bench-{gpu[0]}",
                  "simulated": True, "fields": {"gpu_name": gpu[0], "vram_total_mib": gpu[1], "power_limit_w": gpu[2],
                                                 "driver_version": driver}}
            heat_s = (spans["heat"][1] - spans["heat"][0]) / 1e9
            stats = {"period_ms": PERIOD_NS / 1e6, "samples": per_run, "expected_samples": per_run,
                     "scheduling_quality": "strict", "continuity_quality": "strict"}
            docs = _experiments(rng, gpu, heat_s)
            if i % 2 == 0:  # half the runs: ingest repeats the training analysis, ~0.6 s per million rows
                docs["training_coupling"] = _training(rng, gpu, *spans["heat"])
            ingest_tables(con, meta, fp, trace, markers, _events(spans["events"]), docs, stats)
            progress("building runs", i + 1, runs)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return {"rows": per_run * runs, "runs": runs, "devices": devices, "build_s": round(time.perf_counter() - start, 1),
            "file_mib": round(path.stat().st_size / 2**20, 1)}


# What Streamlit logs each time its cache or context is used outside a script run, as the
# benchmark does between AppTest runs. A filter, not a level: Streamlit resets its loggers'
# levels whenever its configuration is read.
_BARE_MODE_LOGGERS = ("streamlit.runtime.caching.cache_data_api",
                      "streamlit.runtime.scriptrunner_utils.script_run_context")
_BARE_MODE_NOISE = ("No runtime found", "missing ScriptRunContext")


def _not_bare_mode_noise(record: logging.LogRecord) -> bool:
    return not any(noise in record.getMessage() for noise in _BARE_MODE_NOISE)


@contextmanager
def _quiet_bare_mode() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _BARE_MODE_LOGGERS]
    for log in loggers:
        log.addFilter(_not_bare_mode_noise)
    try:
        yield
    finally:
        for log in loggers:
            log.removeFilter(_not_bare_mode_noise)


@_quiet_bare_mode()
def render_pages(path: Path, timeout_s: float = 600.0, progress: Report = no_report) -> dict:
    """Seconds per page through AppTest: cold (cache cleared) and warm. ``progress`` hears of
    each page rendered, outside the timed runs."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from . import ui

    saved = os.environ.get("FLEETPHYSICS_WAREHOUSE")
    os.environ["FLEETPHYSICS_WAREHOUSE"] = str(path)
    try:
        at = AppTest.from_file(str(APP), default_timeout=timeout_s)
        st.cache_data.clear()
        t = time.perf_counter()
        at.run()
        first_s = time.perf_counter() - t
        pages = {}
        progress("rendering pages", 0, len(ui.PAGES))
        for file, title, _icon, _url in ui.PAGES:
            st.cache_data.clear()
            at.switch_page(f"{ui.PAGES_DIR}/{file}")
            t = time.perf_counter()
            at.run()
            cold = time.perf_counter() - t
            t = time.perf_counter()
            at.run()
            warm = time.perf_counter() - t
            errors = [e.message for e in at.exception] + [e.value for e in at.error]
            pages[title] = {"cold_s": round(cold, 3), "warm_s": round(warm, 3),
                            "charts": len(at.get("plotly_chart")), "tables": len(at.dataframe)}
            if errors:
                pages[title]["errors"] = [str(x)[:300] for x in errors]
            progress("rendering pages", len(pages), len(ui.PAGES))
    finally:
        if saved is None:
            os.environ.pop("FLEETPHYSICS_WAREHOUSE", None)
        else:
            os.environ["FLEETPHYSICS_WAREHOUSE"] = saved
    return {"first_run_s": round(first_s, 3), "pages": pages}


def bench_dashboard(rows: int = 100_000_000, runs: int = 100, devices: int = 20, warehouse: str | None = None,
                    progress: Report = no_report) -> dict:
    """Build (or reuse ``warehouse``) and render; the benchmark's JSON document. ``progress``
    hears of the runs built and the pages rendered."""
    tmp = None
    try:
        if warehouse:
            path, built = Path(warehouse), {"reused": str(warehouse)}
        else:
            tmp = Path(tempfile.mkdtemp(prefix="fleetphysics-bench-dashboard-"))
            path = tmp / "dashboard.duckdb"
            built = build_warehouse(path, rows, runs, devices, progress)
        rendered = render_pages(path, progress=progress)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    cold = [p["cold_s"] for p in rendered["pages"].values()]
    return {"warehouse": built, **rendered, "max_cold_s": max(cold), "target_s": TARGET_S,
            "all_under_target": max(cold) < TARGET_S and not any("errors" in p for p in rendered["pages"].values())}


def _print(doc: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc))
        return
    print(f"warehouse: {doc['warehouse']}")
    for title, p in doc["pages"].items():
        print(f"  {title:16s} cold {p['cold_s']:6.3f} s  warm {p['warm_s']:6.3f} s"
              + (f"  ERRORS {p['errors']}" if "errors" in p else ""))
    print(f"max cold {doc['max_cold_s']:.3f} s (target < {doc['target_s']:g} s)")


def register(bench_subparsers) -> None:
    """Add `bench dashboard`."""
    p = bench_subparsers.add_parser("dashboard", help="render every dashboard page through AppTest over a large warehouse")
    p.add_argument("--rows", type=positive_int, default=100_000_000, help="trace rows in all (default 100,000,000)")
    p.add_argument("--runs", type=positive_int, default=100, help="runs to spread them over (default 100)")
    p.add_argument("--devices", type=positive_int, default=20, help="distinct devices (default 20)")
    p.add_argument("--warehouse", metavar="PATH", help="render over this existing warehouse instead of building one")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args) -> int:
    """The command: bars on stderr (when it is a terminal) while it builds and renders."""
    with progress_bars() as report:
        doc = bench_dashboard(args.rows, args.runs, args.devices, args.warehouse, progress=report)
    _print(doc, args.json)
    return 0
