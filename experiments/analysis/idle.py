"""The idle reference of net energy: what the board drew with nothing running, and where from.

Net energy subtracts ``P_idle x duration`` from each event, so an idle figure taken over
load (a model's warm-up, weights being copied in) makes every net energy, J/token and
E_fixed low. The reference is taken from idle only, in this order:

1. ``baseline experiment``: the run's baseline report (its robust mean and SEM).
2. ``baseline phase``: the ``baseline`` phase markers' window, analysed whole (the baseline
   runner settles before it marks).
3. ``runner idle window``: the window a runner marks while its accelerator is quiet (the
   Joule curve's, after the model is built and before its warm-up); the longest stable idle
   stretch inside it (:func:`~experiments.analysis.baseline.find_idle_stretch`), so the
   board's settling after the model load is left out.
4. ``idle finder``: the same stretch finder over the trace before the first load edge
   (load marker, utilisation or a power step) that precedes the events.

With none of these the reference is ``None``, ``quality`` is ``insufficient`` and the net
figures built on it are left unresolved (NaN), never computed from a non-idle window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.analysis import tables
from experiments.analysis.baseline import analyze_baseline, find_idle_stretch

SOURCES = ("baseline experiment", "baseline phase", "runner idle window", "idle finder")


def idle_reference(trace: pd.DataFrame, before_ns: int | None, *, baseline: dict | None = None,
                   baseline_window: tuple[int, int] | None = None, idle_window: tuple[int, int] | None = None,
                   markers: pd.DataFrame | None = None, field: str = "power_w",
                   floor_threshold_w: float = 5.0) -> dict:
    """The idle power for net energy (see the module doc for the order of sources).

    ``baseline``: a baseline report's figures (``mean_robust_w``, ``sem_eff_w``,
    ``t_start_ns``, ``t_end_ns``); ``baseline_window`` / ``idle_window``: (t_start_ns,
    t_end_ns) of a baseline phase / a runner's idle window; ``before_ns``: the first event's
    start (the idle finder looks before it). Returns ``{"power_w", "sem_w", "source",
    "t_start_ns", "t_end_ns", "window_s", "quality", "reason"}``; ``quality`` is the baseline
    analysis' (good | gappy) for a found reference, ``insufficient`` without one.
    """
    if baseline and baseline.get("mean_robust_w") is not None:
        return _ref(baseline, "baseline experiment", "the run's baseline experiment")
    if baseline_window is not None:
        fig = analyze_baseline(trace, *baseline_window, floor_threshold_w=floor_threshold_w, field=field)
        if fig.get("mean_robust_w") is not None:
            return _ref(fig, "baseline phase", "baseline phase markers")
    reasons = []
    if idle_window is not None:
        rows = tables.window(trace, *idle_window)
        stretch = find_idle_stretch(rows, None, (field,), floor_threshold_w)
        if stretch["found"]:
            return _stretch_ref(trace, stretch, field, floor_threshold_w, "runner idle window",
                                "longest stable idle stretch inside the runner's idle window")
        reasons.append(f"runner idle window: {stretch['reason']}")
    rows = trace if before_ns is None else trace[trace["t_ns"].to_numpy(dtype=np.int64) < int(before_ns)]
    stretch = find_idle_stretch(rows, markers, (field,), floor_threshold_w)
    if stretch["found"]:
        return _stretch_ref(trace, stretch, field, floor_threshold_w, "idle finder", stretch["reason"])
    reasons.append(f"idle finder: {stretch['reason']}")
    return {"power_w": None, "sem_w": None, "source": None, "t_start_ns": None, "t_end_ns": None, "window_s": None,
            "quality": "insufficient", "reason": "no idle reference (no baseline); " + "; ".join(reasons)}


def _stretch_ref(trace, stretch: dict, field: str, floor_threshold_w: float, source: str, reason: str) -> dict:
    fig = analyze_baseline(trace, stretch["t_start_ns"], stretch["t_end_ns"], floor_threshold_w=floor_threshold_w,
                           field=field)
    return _ref(fig, source, reason)


def _ref(fig: dict, source: str, reason: str) -> dict:
    t0, t1 = fig.get("t_start_ns"), fig.get("t_end_ns")
    return {"power_w": float(fig["mean_robust_w"]), "sem_w": fig.get("sem_eff_w"), "source": source,
            "t_start_ns": t0, "t_end_ns": t1, "window_s": fig.get("window_s"),
            "quality": fig.get("quality", "good"), "reason": reason}
