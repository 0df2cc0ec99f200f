"""`fleetphysics plot DIR`: PNG figures from a device's artifact dir (reads files only).

baseline.png (time series and histogram), instrument_response.png (step response with the
measured rise), heat_soak.png (temperature, fitted exponential, equilibrium), joule_curve.png
(J/token against batch), vram_cliff.png (max context against batch, probes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def _load(device_dir: Path):
    trace_path = device_dir / "power_trace.parquet"
    trace = pd.read_parquet(trace_path) if trace_path.exists() else pd.read_parquet(device_dir / "power_trace")
    markers = pd.read_parquet(device_dir / "markers.parquet") if (device_dir / "markers.parquet").exists() else None
    reports = {p.stem: json.loads(p.read_text()) for p in device_dir.glob("*.json")}
    return trace.sort_values("t_ns"), markers, reports


def _phase_window(markers: pd.DataFrame | None, phase: str):
    if markers is None:
        return None
    rows = markers[markers.name.isin(["phase_start", "phase_end"])]
    t0 = t1 = None
    for _, r in rows.iterrows():
        if json.loads(r.attrs_json).get("phase") == phase:
            if r["name"] == "phase_start" and t0 is None:
                t0 = int(r.t_ns)
            elif r["name"] == "phase_end":
                t1 = int(r.t_ns)
    return (t0, t1) if t0 is not None else None


def _sim_title(ax, text: str, simulated: bool) -> None:
    ax.set_title(text + ("  [SIMULATED]" if simulated else ""))


def _device_info(device_dir: Path) -> dict:
    """Static facts of the device (limits, thresholds) from the host's devices.json."""
    path = device_dir.parent / "devices.json"
    if not path.exists():
        return {}
    return (json.loads(path.read_text()).get(device_dir.name) or {}).get("info", {})


def plot_device(device_dir: Path) -> list[Path]:
    """Write the figures of one device; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trace, markers, reports = _load(device_dir)
    meta = reports.get("run_metadata", {})
    sim = bool(meta.get("simulated"))
    t0_ns = int(trace.t_ns.iloc[0]) if len(trace) else 0
    written: list[Path] = []

    def save(fig, name):
        path = device_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    ok = trace[trace.read_ok] if "read_ok" in trace else trace
    win = _phase_window(markers, "baseline")
    if "baseline" in reports and win:
        w = ok[(ok.t_ns >= win[0]) & (ok.t_ns <= (win[1] or ok.t_ns.max()))]
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        a.plot((w.t_ns - t0_ns) / 1e9, w.power_w, lw=0.8)
        fig_b = reports["baseline"].get("figures") or {}
        if fig_b.get("mean_robust_w") is not None:
            a.axhline(fig_b["mean_robust_w"], color="k", ls="--", label=f"robust mean {fig_b['mean_robust_w']} W")
            a.legend()
        a.set_xlabel("s since trace start")
        a.set_ylabel("power_w")
        _sim_title(a, "Baseline", sim)
        b.hist(w.power_w.dropna(), bins=60)
        b.set_xlabel("power_w")
        b.set_title(f"floor fraction {fig_b.get('floor_fraction')}, fake idle {fig_b.get('fake_idle')}")
        save(fig, "baseline")

    win = _phase_window(markers, "instrument_response")
    if "instrument_response" in reports and win:
        w = ok[(ok.t_ns >= win[0]) & (ok.t_ns <= (win[1] or ok.t_ns.max()))]
        figs = reports["instrument_response"].get("figures") or {}
        fig, ax = plt.subplots(figsize=(11, 4))
        for field in ("power_w", "power_instant_w"):
            if field in w and w[field].notna().any():
                f = figs.get(field, {})
                ax.step((w.t_ns - t0_ns) / 1e9, w[field], where="post", lw=0.9,
                        label=f"{field}: update {f.get('update_period_ms')} ms, rise {f.get('rise_ms')} ms")
        if markers is not None:
            for _, r in markers[markers.name == "load"].iterrows():
                if win[0] <= r.t_ns <= (win[1] or r.t_ns):
                    ax.axvline((r.t_ns - t0_ns) / 1e9, color="grey", lw=0.5)
        ax.set_xlabel("s since trace start")
        ax.set_ylabel("W")
        ax.legend()
        _sim_title(ax, "Instrument response (grey: load edges)", sim)
        save(fig, "instrument_response")

    win = _phase_window(markers, "heat_soak")
    if "heat_soak" in reports and win:
        w = ok[(ok.t_ns >= win[0]) & (ok.t_ns <= (win[1] or ok.t_ns.max()))]
        f = reports["heat_soak"].get("figures") or {}
        fig, ax = plt.subplots(figsize=(11, 4))
        ts = (w.t_ns - win[0]) / 1e9
        ax.plot(ts, w.temp_c, ".", ms=2, label="temp_c")
        if f.get("tau_s") and f.get("t_inf_c") is not None:
            t0c = f.get("t0_c", float(w.temp_c.iloc[0]) if len(w) else 0.0)
            tt = np.linspace(0, max(ts.max() if len(ts) else 1, 1), 200)
            ax.plot(tt, f["t_inf_c"] - (f["t_inf_c"] - t0c) * np.exp(-tt / f["tau_s"]), "r-",
                    label=f"fit tau {f['tau_s']} s, T_inf {f['t_inf_c']} C")
        ax.set_xlabel("s since soak start")
        ax.set_ylabel("temp_c")
        ax.legend()
        _sim_title(ax, f"Heat soak: equilibrium {f.get('equilibrium')}, slope {f.get('slope_c_per_min')} C/min", sim)
        save(fig, "heat_soak")

    events_path = device_dir / "events.parquet"
    if events_path.exists():
        ev = pd.read_parquet(events_path)
        tokens = (ev.output_tokens.fillna(0) + 0).where(ev.phase == "decode", ev.input_tokens.fillna(0))
        ev = ev.assign(j_per_token=ev.energy_net_j / tokens.replace(0, np.nan))
        fig, ax = plt.subplots(figsize=(7, 4))
        for phase, g in ev.groupby("phase"):
            m = g.groupby("batch_size").j_per_token.agg(["mean", "std"])
            ax.errorbar(m.index, m["mean"], yerr=m["std"], marker="o", capsize=3, label=phase)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("J/token (baseline subtracted)")
        ax.legend()
        _sim_title(ax, "Joule curve", sim)
        save(fig, "joule_curve")

    tc = reports.get("training_coupling")
    if tc and tc.get("steps"):
        from experiments.training_coupling.plot import plot_training_coupling

        from experiments.analysis.rle import rle_series
        from experiments.reports import FALLBACK_SLOWDOWN_C

        info = _device_info(device_dir)
        series = None
        if info.get("power_limit_w"):
            series = rle_series(trace, float(info["power_limit_w"]), float(info.get("slowdown_temp_c") or FALLBACK_SLOWDOWN_C))
        path = device_dir / "training_coupling.png"
        fig = plot_training_coupling(tc["steps"], rle_series=series, analysis=tc.get("figures"), path=str(path),
                                     simulated=sim, trace=trace)
        plt.close(fig) if hasattr(fig, "number") else None
        written.append(path)

    probes = reports.get("vram_cliff", {}).get("probes") or []
    if probes:
        p = pd.DataFrame(probes)
        fig, ax = plt.subplots(figsize=(7, 4))
        if {"batch_size", "context", "ok"} <= set(p.columns):
            ax.scatter(p.batch_size, p.context, c=np.where(p.ok, "tab:green", "tab:red"), s=14)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("context (tokens)")
        _sim_title(ax, "VRAM cliff (green fits, red OOM)", sim)
        save(fig, "vram_cliff")
    return written


def plot_dir(path: str | Path) -> list[Path]:
    """Plot every device dir (one holding run_metadata.json) under ``path``."""
    root = Path(path)
    dirs = [root] if (root / "run_metadata.json").exists() else sorted(p.parent for p in root.rglob("run_metadata.json"))
    out: list[Path] = []
    for d in dirs:
        if d.name != "tr122":
            out.extend(plot_device(d))
    return out
