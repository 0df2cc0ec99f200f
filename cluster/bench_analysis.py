"""`fleetphysics bench analysis`: how long the analyses take on a long, fast, wide trace.

Renders a simulated run (default 1 h at 100 Hz on 8 devices, the built-in profiles in
turn) with the physics model, then times the analyses over all of it, device by device:
the idle baseline on the first 10 %, the instrument response on a square wave over the
next 10 %, the heat-soak fit on the next 50 % at full load, and per-event energy plus the
joule curve for the inference-like events of the last 30 % (a few thousand in all).
Rendering is not timed; the analyses run one device after another in this process.
Prints JSON: hours, hz, devices, rows, events, seconds, rows_per_s, per_analysis_s
{baseline, instrument_response, heat_soak, energy} (summed over devices), render_s.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from agents.cli_args import non_negative_int, positive_float, positive_int
from agents.physics import NS, LoadEdge, SensorModel, Timeline
from agents.profiles import builtin_profile_names, load_profile
from experiments.analysis import baseline, energy, heat_soak, instrument_response

PARTS = (("baseline", 0.10), ("instrument_response", 0.10), ("heat_soak", 0.50), ("events", 0.30))
CHUNK_S = 60.0


def register(bench_sub) -> None:
    """Add `bench analysis`."""
    p = bench_sub.add_parser("analysis", help="time the analyses on a long simulated multi-device trace")
    p.add_argument("--hours", type=positive_float, default=1.0, help="trace length (default 1 h)")
    p.add_argument("--hz", type=positive_float, default=100.0, help="poller rate (default 100 Hz)")
    p.add_argument("--devices", type=positive_int, default=8, help="simulated devices (default 8)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", action="store_true", help="machine output (the only output there is)")
    p.set_defaults(func=cmd_bench_analysis)


def _spans(seconds: float) -> dict[str, tuple[float, float]]:
    out, t = {}, 0.0
    for name, frac in PARTS:
        out[name] = (t, t + frac * seconds)
        t += frac * seconds
    return out


def synth_device(profile_name: str, seconds: float, hz: float, seed: int) -> dict:
    """One device's rendered trace, its square-wave edges, event table and part windows."""
    prof = load_profile(profile_name)
    rng = np.random.default_rng(seed)
    spans = _spans(seconds)
    edges: list[LoadEdge] = []
    a, b = spans["instrument_response"]
    half = 3.0
    t, level = a + 1.0, 1.0
    while t + half < b:
        edges.append(LoadEdge(int((t + rng.uniform(0, 0.5)) * NS), level))
        level = 1.0 - level
        t += half
    edges.append(LoadEdge(int(b * NS) - 1, 0.0))
    edges.append(LoadEdge(int(spans["heat_soak"][0] * NS), 1.0))
    a, b = spans["events"]
    edges.append(LoadEdge(int(a * NS), 0.0))
    events, t = [], a + 2.0
    while t < b - 3.0:
        phase = "prefill" if rng.random() < 0.3 else "decode"
        tokens = int(rng.integers(64, 2048)) if phase == "prefill" else int(rng.integers(1, 64))
        dur = min(0.05 + tokens / (2000.0 if phase == "prefill" else 40.0), 2.0)
        lvl = 1.0 if phase == "prefill" else 0.6
        edges += [LoadEdge(int(t * NS), lvl), LoadEdge(int((t + dur) * NS), 0.0)]
        events.append({"event_id": len(events), "t_start_ns": int(t * NS), "t_end_ns": int((t + dur) * NS),
                       "phase": phase, "batch_size": 1, "input_tokens": tokens if phase == "prefill" else 1,
                       "output_tokens": tokens if phase == "decode" else 0})
        t += dur + rng.uniform(0.2, 1.0)
    tl = Timeline(prof, 0, seed=seed)
    for e in sorted(edges, key=lambda e: e.t_ns):
        tl.add_edge(e)
    sensors = SensorModel(tl)
    n = int(seconds * hz)
    grid = (np.arange(n) * (NS / hz)).astype(np.int64) + (rng.exponential(0.2, n) * 1e6).astype(np.int64)
    parts = []
    step = int(CHUNK_S * hz)
    for i in range(0, n, step):  # chunks keep the physics' per-segment work small
        r = sensors.read(grid[i:i + step])
        parts.append({k: v for k, v in r.items() if not k.startswith("true_") and k != "floor"})
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    trace = pd.DataFrame({"t_ns": grid, **cols})
    trace["device_uuid"] = f"SIM-{profile_name}-bench-{seed}"
    lo, hi = (x * NS for x in spans["instrument_response"])
    ir = [(e.t_ns, e.level) for e in edges if lo <= e.t_ns < hi]
    return {"trace": trace, "edges": ir, "events": pd.DataFrame(events), "spans": spans}


def time_device(dev: dict) -> dict[str, float]:
    """Seconds per analysis on one device."""
    trace, spans, out = dev["trace"], dev["spans"], {}

    def ns(x):
        return int(x * NS)

    t0 = time.perf_counter()
    base = baseline.analyze_baseline(trace, ns(spans["baseline"][0]), ns(spans["baseline"][1]))
    t1 = time.perf_counter()
    a, b = spans["instrument_response"]
    instrument_response.analyze_step_response(trace[(trace.t_ns >= ns(a)) & (trace.t_ns < ns(b))], dev["edges"])
    t2 = time.perf_counter()
    heat_soak.analyze_heat_soak(trace, ns(spans["heat_soak"][0]), ns(spans["heat_soak"][1]))
    t3 = time.perf_counter()
    per = energy.events_energy(trace, dev["events"], base.get("mean_robust_w"))
    energy.joule_curve(per)
    t4 = time.perf_counter()
    out.update(baseline=t1 - t0, instrument_response=t2 - t1, heat_soak=t3 - t2, energy=t4 - t3)
    return out


def cmd_bench_analysis(args) -> int:
    """Render, then time the analyses device by device; print JSON."""
    seconds = args.hours * 3600.0
    names = builtin_profile_names()
    r0 = time.perf_counter()
    devices = [synth_device(names[i % len(names)], seconds, args.hz, args.seed + i) for i in range(args.devices)]
    render_s = time.perf_counter() - r0
    heat_soak.fit_exponential(np.arange(20.0), np.arange(20.0))  # import scipy outside the timing
    start = time.perf_counter()
    timings = [time_device(dev) for dev in devices]
    elapsed = time.perf_counter() - start
    totals = {k: sum(t[k] for t in timings) for k in timings[0]} if timings else {}
    rows = int(sum(len(d["trace"]) for d in devices))
    print(json.dumps({
        "hours": args.hours, "hz": args.hz, "devices": args.devices, "rows": rows,
        "events": int(sum(len(d["events"]) for d in devices)),
        "seconds": round(elapsed, 3), "rows_per_s": round(rows / elapsed) if elapsed > 0 else None,
        "per_analysis_s": {k: round(v, 3) for k, v in totals.items()},
        "render_s": round(render_s, 2),
    }, indent=2))
    return 0
