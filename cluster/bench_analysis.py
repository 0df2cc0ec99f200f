"""`fleetphysics bench analysis`: how long the product's analyses take on a long, fast, wide run.

Renders a simulated run (default 1 h at 100 Hz on 8 devices, the built-in profiles in
turn) with the physics model: an idle baseline on the first 10 %, a square wave over the
next 10 %, a soak at full load over the next 40 %, inference-like events over the next
20 % (a few thousand in all) and training steps over the last 20 %. It then times what a
suite runs after the poller stops, device by device: ``experiments.reports.analyse_all``
over the runner results of all five experiments (baseline, instrument response, heat soak,
per-event energy with the joule curve, and the training coupling with its block bootstrap),
as ``_finish`` calls it. Rendering is not timed; devices run one after another in this
process. ``per_analysis_s`` (wall) and ``per_analysis_cpu_s`` time each experiment's report
alone (summed over devices).
Baseline, in the same run on the same traces: the training coupling again with the
bootstrap's correlations computed the direct way (one masked Pearson pass per lag,
``coupling.lag_matrix_reference``, what the product ran before the matrix-product form).
``ratios`` divides the product's time by it; ``baseline.same_figures`` says whether both gave
the same verdicts and p-values (they must: same draws, same estimator).
Prints JSON: hours, hz, devices, rows, events, steps, seconds, cpu_s (the process's CPU time
over the same calls: on a shared machine the honest figure), rows_per_s, per_analysis_s,
per_analysis_cpu_s, baseline, ratios, target_s, render_s.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from agents.cli_args import non_negative_int, positive_float, positive_int
from agents.physics import NS, LoadEdge, SensorModel, Timeline
from agents.profiles import builtin_profile_names, load_profile
from experiments.analysis import heat_soak

PARTS = (("baseline", 0.10), ("instrument_response", 0.10), ("heat_soak", 0.40), ("events", 0.20),
         ("training", 0.20))
EXPERIMENTS = ("baseline", "instrument_response", "heat_soak", "joule_curve", "training_coupling")
CHUNK_S = 60.0
TARGET_S = 5.0  # 1 h x 100 Hz x 8 devices, the figure the README holds the product to


def register(bench_sub) -> None:
    """Add `bench analysis`."""
    p = bench_sub.add_parser("analysis", help="time the analyses on a long simulated multi-device trace")
    p.add_argument("--hours", type=positive_float, default=1.0, help="trace length (default 1 h)")
    p.add_argument("--hz", type=positive_float, default=100.0, help="poller rate (default 100 Hz)")
    p.add_argument("--devices", type=positive_int, default=8, help="simulated devices (default 8)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the simulated trace (default 0)")
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
        events.append({"event_id": f"ev-{len(events):05d}", "t_start_ns": int(t * NS), "t_end_ns": int((t + dur) * NS),
                       "phase": phase, "batch_size": 1, "input_tokens": tokens if phase == "prefill" else 1,
                       "output_tokens": tokens if phase == "decode" else 0})
        t += dur + rng.uniform(0.2, 1.0)
    steps = _training_steps(edges, spans["training"], rng)
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

    def ns(x):
        return int(x * NS)

    results = {
        "baseline": {"t_start_ns": ns(spans["baseline"][0]), "t_end_ns": ns(spans["baseline"][1]), "completed": True},
        "instrument_response": {"t_start_ns": lo, "t_end_ns": hi, "edges": ir},
        "heat_soak": {"t_start_ns": ns(spans["heat_soak"][0]), "t_end_ns": ns(spans["heat_soak"][1]),
                      "end_reason": "timeout", "trip": None},
        "joule_curve": {"events": [{**e, "passes": 1, "energy_counter_start_j": None, "energy_counter_end_j": None}
                                   for e in events], "checks": {}},
        "training_coupling": {"steps": steps, "end_reason": "completed"},
    }
    info = {"simulated": True, "power_limit_w": prof.power_limit_w, "slowdown_temp_c": prof.slowdown_temp_c}
    return {"trace": trace, "results": results, "info": info, "events": pd.DataFrame(events), "steps": steps}


def _training_steps(edges: list, span: tuple[float, float], rng) -> list[dict]:
    """Training steps of 0.3-0.6 s back to back, their load following the gradient norm."""
    a, b = span
    steps, t, i = [], a + 2.0, 0
    while t < b - 2.0:
        dur = float(rng.uniform(0.3, 0.6))
        grad = float(rng.lognormal(0.0, 0.3))
        edges.append(LoadEdge(int(t * NS), float(min(1.0, 0.5 + 0.2 * grad))))
        steps.append({"step": i, "loss": float(5.0 / (1 + 0.01 * i)), "grad_norm": grad, "lr": 3e-4,
                      "lr_spike": False, "t_start_ns": int(t * NS), "t_end_ns": int((t + dur) * NS),
                      "energy_j": None, "counter_start_j": None, "counter_end_j": None, "load_level": None})
        t, i = t + dur, i + 1
    edges.append(LoadEdge(int(t * NS), 0.0))
    return steps


def bench_configs() -> dict:
    """The suite's quick presets of the timed experiments."""
    from experiments.suite import experiment_config

    return {name: experiment_config(name, "quick") for name in EXPERIMENTS}


def time_device(dev: dict, configs: dict) -> tuple[float, float, dict[str, float]]:
    """Wall and CPU seconds of the product's per-device analysis, and wall seconds of each
    experiment's report alone."""
    from experiments import reports

    empty = pd.DataFrame({"t_ns": pd.Series(dtype="int64"), "name": pd.Series(dtype="str")})
    t0, c0 = time.perf_counter(), time.process_time()
    out, _ = reports.analyse_all(dev["results"], configs, dev["trace"], empty, dev["info"])
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    each = {"_coupling_report": out["training_coupling"]}
    for name in EXPERIMENTS:
        t0, c0 = time.perf_counter(), time.process_time()
        reports.analyse_all({name: dev["results"][name]}, configs, dev["trace"], empty, dev["info"])
        each[name] = time.perf_counter() - t0
        each[f"{name}_cpu"] = time.process_time() - c0
    return total, cpu, each


def time_coupling_baseline(dev: dict, configs: dict, product: dict) -> tuple[float, float, bool]:
    """Wall and CPU seconds of the training coupling report with the direct per-lag
    correlations swapped in, and whether its figures equal the product's (``product``: the
    product's report of the same device)."""
    from experiments import reports
    from experiments.analysis import coupling

    empty = pd.DataFrame({"t_ns": pd.Series(dtype="int64"), "name": pd.Series(dtype="str")})
    fast = coupling._lag_matrix
    coupling._lag_matrix = coupling.lag_matrix_reference
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        out, _ = reports.analyse_all({"training_coupling": dev["results"]["training_coupling"]}, configs,
                                     dev["trace"], empty, dev["info"])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        coupling._lag_matrix = fast
    keys = ("verdict", "p_value", "best_lag", "correlation", "target")
    same = all(out["training_coupling"]["figures"].get(k) == product["figures"].get(k) for k in keys)
    return wall, cpu, same


def cmd_bench_analysis(args) -> int:
    """Render, then time the analyses device by device; print JSON."""
    seconds = args.hours * 3600.0
    names = builtin_profile_names()
    r0 = time.perf_counter()
    devices = [synth_device(names[i % len(names)], seconds, args.hz, args.seed + i) for i in range(args.devices)]
    render_s = time.perf_counter() - r0
    configs = bench_configs()
    heat_soak.fit_exponential(np.arange(20.0), np.arange(20.0))  # import scipy outside the timing
    _warm_up(configs)
    timings = [time_device(dev, configs) for dev in devices]
    elapsed = sum(t[0] for t in timings)
    cpu_s = sum(t[1] for t in timings)
    totals = {k: sum(t[2][k] for t in timings) for k in EXPERIMENTS} if timings else {}
    cpu_totals = {k: sum(t[2][f"{k}_cpu"] for t in timings) for k in EXPERIMENTS} if timings else {}
    base = [time_coupling_baseline(dev, configs, t[2]["_coupling_report"]) for dev, t in zip(devices, timings)]
    base_wall, base_cpu = sum(b[0] for b in base), sum(b[1] for b in base)
    rows = int(sum(len(d["trace"]) for d in devices))
    print(json.dumps({
        "hours": args.hours, "hz": args.hz, "devices": args.devices, "rows": rows,
        "events": int(sum(len(d["events"]) for d in devices)),
        "steps": int(sum(len(d["steps"]) for d in devices)),
        "seconds": round(elapsed, 3), "cpu_s": round(cpu_s, 3),
        "rows_per_s": round(rows / elapsed) if elapsed > 0 else None,
        "per_analysis_s": {k: round(v, 3) for k, v in totals.items()},
        "per_analysis_cpu_s": {k: round(v, 3) for k, v in cpu_totals.items()},
        "baseline": {"what": "training coupling with the direct per-lag bootstrap correlations "
                             "(coupling.lag_matrix_reference)",
                     "training_coupling_s": round(base_wall, 3), "training_coupling_cpu_s": round(base_cpu, 3),
                     "same_figures": all(b[2] for b in base)},
        "ratios": {"training_coupling_cpu": _ratio(cpu_totals.get("training_coupling"), base_cpu),
                   "training_coupling_wall": _ratio(totals.get("training_coupling"), base_wall)},
        "target_s": TARGET_S, "target_met_cpu": cpu_s < TARGET_S,
        "render_s": round(render_s, 2),
    }, indent=2))
    return 0


def _ratio(product_s: float | None, baseline_s: float) -> float | None:
    """product / baseline, rounded (None without a baseline)."""
    return round(product_s / baseline_s, 3) if product_s is not None and baseline_s > 0 else None


def _warm_up(configs: dict) -> None:
    """Pay the analyses' imports and first-use costs on a one-minute run, outside the timing."""
    from experiments import reports

    dev = synth_device(builtin_profile_names()[0], 120.0, 20.0, 99)
    reports.analyse_all(dev["results"], configs, dev["trace"], pd.DataFrame({"t_ns": [], "name": []}), dev["info"])
