"""The training-coupling figure: loss; grad_norm with spikes and collapse marks; RLE with
collapse marks; temperature. One shared time axis (seconds from the first step, host
monotonic clock). matplotlib is imported only when a figure is drawn, and through its
object API (no pyplot, no global backend switch).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

NS_PER_S = 1e9


def plot_training_coupling(steps, rle_series: pd.DataFrame | None = None, analysis: dict | None = None,
                           path: str | os.PathLike | None = None, simulated: bool = False,
                           trace: pd.DataFrame | None = None):
    """Draw the 4-panel figure; returns the matplotlib Figure (saved as PNG to ``path`` if given).

    ``steps``: the runner's per-step list (or DataFrame, or the analysis' ``per_step``).
    ``rle_series``: :func:`experiments.analysis.rle.rle_series` of the trace (RLE, temperature
    and collapse marks). ``analysis``: the result of
    :func:`experiments.analysis.coupling.analyze_training_coupling` (spikes and the verdict in
    the title). ``trace``: the raw trace, for the temperature panel at full rate (else the
    RLE bins' temperature is drawn).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    df = steps.copy() if isinstance(steps, pd.DataFrame) else pd.DataFrame(list(steps))
    if len(df) == 0:
        raise ValueError("no steps to plot")
    t0 = int(df["t_start_ns"].min())
    t_step = (df["t_end_ns"].to_numpy(dtype=np.int64) - t0) / NS_PER_S

    collapse_t = []
    if rle_series is not None and len(rle_series) and "collapse_start" in rle_series:
        starts = rle_series[rle_series["collapse_start"].astype(bool)]
        collapse_t = list((starts["t_ns"].to_numpy(dtype=np.int64) - t0) / NS_PER_S)

    fig = Figure(figsize=(11, 10))
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True)
    a_loss, a_grad, a_rle, a_temp = axes

    a_loss.plot(t_step, pd.to_numeric(df.get("loss"), errors="coerce"), lw=0.9)
    a_loss.set_ylabel("loss")

    grad = pd.to_numeric(df.get("grad_norm"), errors="coerce").to_numpy(dtype=float)
    a_grad.plot(t_step, grad, lw=0.9, label="grad_norm (before clipping)")
    spike_steps = set((analysis or {}).get("figures", {}).get("spikes", {}).get("steps", []))
    if spike_steps and "step" in df:
        m = df["step"].isin(spike_steps).to_numpy()
        a_grad.plot(t_step[m], grad[m], "o", color="tab:red", ms=4, label="spike")
    if "lr_spike" in df:
        m = df["lr_spike"].fillna(False).astype(bool).to_numpy()
        if m.any():
            a_grad.plot(t_step[m], grad[m], "x", color="k", ms=5, label="LR spike")
    a_grad.set_ylabel("grad_norm")

    if rle_series is not None and len(rle_series):
        t_bins = (rle_series["t_ns"].to_numpy(dtype=np.int64) - t0) / NS_PER_S
        a_rle.plot(t_bins, rle_series["rle"], lw=0.9, label="RLE (smoothed)")
        if "peak" in rle_series:
            a_rle.plot(t_bins, 0.65 * rle_series["peak"], lw=0.7, ls="--", color="gray", label="0.65 x peak")
        if "warm" in rle_series and not rle_series["warm"].all():
            cold = ~rle_series["warm"].to_numpy(dtype=bool)
            end = (int(rle_series["t_end_ns"].to_numpy(dtype=np.int64)[cold].max()) - t0) / NS_PER_S
            a_rle.axvspan(t_bins[0], end, color="0.9", label="RLE warm-up")
    a_rle.set_ylabel("RLE")

    if trace is not None and len(trace) and "temp_c" in trace:
        a_temp.plot((trace["t_ns"].to_numpy(dtype=np.int64) - t0) / NS_PER_S, trace["temp_c"], lw=0.8)
    elif rle_series is not None and len(rle_series):
        a_temp.plot((rle_series["t_ns"].to_numpy(dtype=np.int64) - t0) / NS_PER_S, rle_series["temp_c"], lw=0.8)
    a_temp.set_ylabel("temp_c")
    a_temp.set_xlabel("s since the first step (host monotonic clock)")

    for ax in (a_grad, a_rle):
        for i, t in enumerate(collapse_t):
            ax.axvline(t, color="tab:red", lw=0.8, alpha=0.7, label="collapse" if i == 0 else None)
        ax.legend(loc="upper right", fontsize=8)
    lo, hi = float(t_step.min()) - 1.0, float(t_step.max()) + 1.0
    a_temp.set_xlim(lo, hi)

    title = "Training coupling"
    if analysis:
        title += (f": {analysis.get('verdict')} (p={analysis.get('p_value')}, lag={analysis.get('best_lag')}, "
                  f"rho={analysis.get('correlation')}, aligned {analysis.get('aligned_fraction')})")
    title += "  [SIMULATED]" if simulated else ""
    a_loss.set_title(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=110)
    return fig
