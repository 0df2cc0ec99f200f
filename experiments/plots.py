"""`fleetphysics plot DIR`: PNG figures from a device's artifact dir (reads files only).

baseline.png (time series and histogram), instrument_response.png (step response with the
measured rise), heat_soak.png (temperature, fitted exponential, equilibrium), joule_curve.png
(J/token against batch), vram_cliff.png (max context against batch, probes),
training_coupling.png; each from the experiment's plot in the registry (``plot_<name>`` here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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


@dataclass
class PlotInputs:
    """What an experiment's plot reads from one device's artifact dir, and how it saves a figure."""

    device_dir: Path
    trace: pd.DataFrame  # sorted by t_ns
    markers: pd.DataFrame | None
    reports: dict  # file stem -> JSON of every *.json in the dir
    simulated: bool
    save: Callable  # save(fig, name): writes <name>.png and closes the figure
    written: list = field(default_factory=list)

    @property
    def t0_ns(self) -> int:
        """The trace's first timestamp (0 without a trace)."""
        return int(self.trace.t_ns.iloc[0]) if len(self.trace) else 0

    @property
    def ok(self) -> pd.DataFrame:
        """The trace's good reads."""
        return self.trace[self.trace.read_ok] if "read_ok" in self.trace else self.trace

    def phase_rows(self, phase: str) -> pd.DataFrame | None:
        """The good reads within the experiment's phase markers (None without them)."""
        win = _phase_window(self.markers, phase)
        if win is None:
            return None
        ok = self.ok
        return ok[(ok.t_ns >= win[0]) & (ok.t_ns <= (win[1] or ok.t_ns.max()))]


def plot_device(device_dir: Path) -> list[Path]:
    """Write the figures of one device (each registered experiment's plot); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments import registry

    trace, markers, reports = _load(device_dir)
    written: list[Path] = []

    def save(fig, name):
        path = device_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    inputs = PlotInputs(device_dir, trace, markers, reports, bool(reports.get("run_metadata", {}).get("simulated")),
                        save, written)
    for name in registry.names():
        plot = registry.get(name).plot
        if plot is not None:
            plot(inputs)
    return written


def plot_baseline(p: PlotInputs) -> None:
    """baseline.png: the idle window's power and its histogram."""
    import matplotlib.pyplot as plt

    w = p.phase_rows("baseline")
    if "baseline" not in p.reports or w is None:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot((w.t_ns - p.t0_ns) / 1e9, w.power_w, lw=0.8)
    fig_b = p.reports["baseline"].get("figures") or {}
    if fig_b.get("mean_robust_w") is not None:
        a.axhline(fig_b["mean_robust_w"], color="k", ls="--", label=f"robust mean {fig_b['mean_robust_w']} W")
        a.legend()
    a.set_xlabel("s since trace start")
    a.set_ylabel("power_w")
    _sim_title(a, "Baseline", p.simulated)
    b.hist(w.power_w.dropna(), bins=60)
    b.set_xlabel("power_w")
    b.set_title(f"floor fraction {fig_b.get('floor_fraction')}, fake idle {fig_b.get('fake_idle')}")
    p.save(fig, "baseline")


def plot_instrument_response(p: PlotInputs) -> None:
    """instrument_response.png: the power fields through the load steps."""
    import matplotlib.pyplot as plt

    win = _phase_window(p.markers, "instrument_response")
    w = p.phase_rows("instrument_response")
    if "instrument_response" not in p.reports or w is None:
        return
    figs = p.reports["instrument_response"].get("figures") or {}
    fig, ax = plt.subplots(figsize=(11, 4))
    for field_name in ("power_w", "power_instant_w"):
        if field_name in w and w[field_name].notna().any():
            f = figs.get(field_name, {})
            ax.step((w.t_ns - p.t0_ns) / 1e9, w[field_name], where="post", lw=0.9,
                    label=f"{field_name}: update {f.get('update_period_ms')} ms, rise {f.get('rise_ms')} ms")
    if p.markers is not None:
        for _, r in p.markers[p.markers.name == "load"].iterrows():
            if win[0] <= r.t_ns <= (win[1] or r.t_ns):
                ax.axvline((r.t_ns - p.t0_ns) / 1e9, color="grey", lw=0.5)
    ax.set_xlabel("s since trace start")
    ax.set_ylabel("W")
    ax.legend()
    _sim_title(ax, "Instrument response (grey: load edges)", p.simulated)
    p.save(fig, "instrument_response")


def plot_heat_soak(p: PlotInputs) -> None:
    """heat_soak.png: temperature through the soak and the fitted exponential."""
    import matplotlib.pyplot as plt

    win = _phase_window(p.markers, "heat_soak")
    w = p.phase_rows("heat_soak")
    if "heat_soak" not in p.reports or w is None:
        return
    f = p.reports["heat_soak"].get("figures") or {}
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
    _sim_title(ax, f"Heat soak: equilibrium {f.get('equilibrium')}, slope {f.get('slope_c_per_min')} C/min",
               p.simulated)
    p.save(fig, "heat_soak")


def plot_joule_curve(p: PlotInputs) -> None:
    """joule_curve.png: J/token against batch size, per phase, from events.parquet."""
    import matplotlib.pyplot as plt

    events_path = p.device_dir / "events.parquet"
    if not events_path.exists():
        return
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
    _sim_title(ax, "Joule curve", p.simulated)
    p.save(fig, "joule_curve")


def plot_vram_cliff(p: PlotInputs) -> None:
    """vram_cliff.png: every probe by batch size and context (green fits, red OOM)."""
    import matplotlib.pyplot as plt

    probes = p.reports.get("vram_cliff", {}).get("probes") or []
    if not probes:
        return
    frame = pd.DataFrame(probes)
    fig, ax = plt.subplots(figsize=(7, 4))
    if {"batch_size", "context", "ok"} <= set(frame.columns):
        ax.scatter(frame.batch_size, frame.context, c=np.where(frame.ok, "tab:green", "tab:red"), s=14)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("context (tokens)")
    _sim_title(ax, "VRAM cliff (green fits, red OOM)", p.simulated)
    p.save(fig, "vram_cliff")


def plot_training_coupling(p: PlotInputs) -> None:
    """training_coupling.png: per-step loss, power, temperature and RLE."""
    import matplotlib.pyplot as plt

    tc = p.reports.get("training_coupling")
    if not tc or not tc.get("steps"):
        return
    from experiments.analysis.rle import rle_series
    from experiments.reports import FALLBACK_SLOWDOWN_C
    from experiments.training_coupling.plot import plot_training_coupling as plot_steps

    info = _device_info(p.device_dir)
    series = None
    if info.get("power_limit_w"):
        series = rle_series(p.trace, float(info["power_limit_w"]),
                            float(info.get("slowdown_temp_c") or FALLBACK_SLOWDOWN_C))
    path = p.device_dir / "training_coupling.png"
    fig = plot_steps(tc["steps"], rle_series=series, analysis=tc.get("figures"), path=str(path),
                     simulated=p.simulated, trace=p.trace)
    plt.close(fig) if hasattr(fig, "number") else None
    p.written.append(path)


def plot_dir(path: str | Path) -> list[Path]:
    """Plot every device dir (one holding run_metadata.json) under ``path``."""
    root = Path(path)
    dirs = [root] if (root / "run_metadata.json").exists() else sorted(p.parent for p in root.rglob("run_metadata.json"))
    out: list[Path] = []
    for d in dirs:
        if d.name != "tr122":
            out.extend(plot_device(d))
    return out
