"""Idle baseline: what the board draws when nothing runs, and whether it really was idle.

Floor readings (a board reporting e.g. 1.2 W for a fraction of its idle updates, as TR122's
laptop did) are counted and excluded from the robust figures. Outliers are judged by
median + k * MAD of the non-floor readings: TR122's mean + 2 sigma rule could never fire
because the floor readings inflated sigma.

Every mean carries its autocorrelation-aware standard error (N_eff, see
:mod:`experiments.analysis.stats`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.analysis import tables
from experiments.analysis.stats import mad, rnd, rnd_sig, sem_eff

UTIL_LIMIT_PCT = 10.0  # util p95 above this: something ran
OUTLIER_FRACTION_LIMIT = 0.01  # more readings than this above median + k MAD: load bursts
CLOCK_CHANGE_FRACTION = 0.10  # an SM clock move larger than this is a clock-state change
GAP_FACTOR = 3.0  # an interval longer than this many median intervals is a gap
GAPPY_LIMIT = 0.05  # read errors or gap time above this fraction: gappy
DELTA_P_W = 10.0  # TR122's load step: a rise above this is load, not idle
MIN_IDLE_S = 1.0  # an automatically found idle stretch spans at least this
MIN_IDLE_READINGS = 10  # ... and holds at least this many readings
POWER_FIELDS = ("power_w", "power_instant_w", "power_avg_1s_w")


def analyze_baseline(trace: pd.DataFrame, t_start_ns: int | None = None, t_end_ns: int | None = None,
                     floor_threshold_w: float = 5.0, outlier_k: float = 5.0, field: str = "power_w") -> dict:
    """Idle figures of one power field over [t_start_ns, t_end_ns] (rows with read_ok).

    Returns: field, t_start_ns, t_end_ns, window_s, n_rows, n, read_error_fraction,
    gap_fraction, max_gap_ms, mean_all_w, mean_robust_w (floor readings below
    ``floor_threshold_w`` excluded), median_w, mad_w (raw MAD), std_w, min_w, max_w
    (median/MAD/std over the non-floor readings; min/max over all), floor_fraction, floor_w,
    idle_temp_c (median), util_p95, lag1_autocorr, n_eff, sem_eff_w (of mean_robust_w),
    outlier_fraction, outlier_threshold_w, pstate_changes, sm_clock_changes, fake_idle,
    fake_idle_reasons [str], quality (good | gappy | no_data).
    """
    rows = tables.window(trace, t_start_ns, t_end_ns)
    t_all = rows["t_ns"].to_numpy(dtype=np.int64)
    t, v = tables.good(rows, field)
    n_rows, n = int(len(rows)), int(t.size)
    out = {"field": field, "t_start_ns": int(t_all[0]) if n_rows else t_start_ns,
           "t_end_ns": int(t_all[-1]) if n_rows else t_end_ns, "n_rows": n_rows, "n": n}
    if n < 2:
        return out | {"quality": "no_data", "fake_idle": None, "fake_idle_reasons": []}
    ok = tables.read_ok(rows)
    read_error_fraction = 1.0 - float(ok.mean())
    dt = np.diff(t).astype(np.float64)
    med_dt = float(np.median(dt))
    span = float(t[-1] - t[0])
    gaps = dt[dt > GAP_FACTOR * med_dt]
    gap_fraction = float(gaps.sum() / span) if span > 0 else 0.0

    floor = v < floor_threshold_w
    robust = v[~floor]
    st = sem_eff(robust)
    med = float(np.median(robust)) if robust.size else math.nan
    sigma = mad(robust, scaled=True)
    # A noise-free sensor has MAD 0; keep the threshold above its own quantisation.
    scale = max(sigma, 0.005 * abs(med), 0.05) if math.isfinite(med) else math.nan
    threshold = med + outlier_k * scale
    outlier_fraction = float(np.mean(robust > threshold)) if robust.size else 0.0

    good_rows = rows[ok]
    util = tables.column(good_rows, "util_gpu")
    util = util[np.isfinite(util)]
    util_p95 = float(np.percentile(util, 95)) if util.size else math.nan
    temp = tables.column(good_rows, "temp_c")
    temp = temp[np.isfinite(temp)]
    pstate_changes = _changes(tables.column(good_rows, "pstate"))
    clock = tables.column(good_rows, "sm_clock_mhz")
    clock = clock[np.isfinite(clock)]
    sm_clock_changes = 0
    if clock.size > 1:
        sm_clock_changes = int(np.sum(np.abs(np.diff(clock)) > CLOCK_CHANGE_FRACTION * np.median(clock)))

    reasons = []
    if math.isfinite(util_p95) and util_p95 > UTIL_LIMIT_PCT:
        reasons.append(f"util p95 {util_p95:.0f} % > {UTIL_LIMIT_PCT:.0f} %")
    if pstate_changes:
        reasons.append(f"{pstate_changes} pstate changes")
    if sm_clock_changes:
        reasons.append(f"{sm_clock_changes} SM clock changes > {100 * CLOCK_CHANGE_FRACTION:.0f} %")
    if outlier_fraction > OUTLIER_FRACTION_LIMIT:
        reasons.append(f"{100 * outlier_fraction:.1f} % of readings above median + {outlier_k:g} MAD "
                       f"({threshold:.2f} W)")
    quality = "gappy" if (read_error_fraction > GAPPY_LIMIT or gap_fraction > GAPPY_LIMIT) else "good"
    sem = st["sem"]
    return out | {
        "window_s": rnd(span / 1e9, 3),
        "read_error_fraction": rnd(read_error_fraction, 4),
        "gap_fraction": rnd(gap_fraction, 4),
        "max_gap_ms": rnd(float(dt.max()) / 1e6, 1),
        "mean_all_w": rnd_sig(float(v.mean()), sem_eff(v)["sem"]),
        "mean_robust_w": rnd_sig(st["mean"], sem),
        "median_w": rnd(med, 3),
        "mad_w": rnd(mad(robust), 3),
        "std_w": rnd(st["std"], 3),
        "min_w": rnd(float(v.min()), 3),
        "max_w": rnd(float(v.max()), 3),
        "floor_fraction": rnd(float(floor.mean()), 4),
        "floor_w": rnd(float(np.median(v[floor])), 3) if floor.any() else None,
        "idle_temp_c": rnd(float(np.median(temp)), 1) if temp.size else None,
        "util_p95": rnd(util_p95, 1),
        "lag1_autocorr": rnd(st["rho"], 3),
        "n_eff": rnd(st["n_eff"], 1),
        "sem_eff_w": rnd_sig(sem, sem, sig=2) if math.isfinite(sem) else None,
        "outlier_fraction": rnd(outlier_fraction, 4),
        "outlier_threshold_w": rnd(threshold, 3),
        "pstate_changes": pstate_changes,
        "sm_clock_changes": sm_clock_changes,
        "fake_idle": bool(reasons),
        "fake_idle_reasons": reasons,
        "quality": quality,
    }


def first_load_edge_ns(rows: pd.DataFrame, markers: pd.DataFrame | None, field: str = "power_w") -> tuple[int | None, str]:
    """When load first came on, and how that was found.

    The first ``load`` marker with level > 0; else the first reading with util above
    ``UTIL_LIMIT_PCT``; else the first reading more than TR122's delta-P (10 W) above the
    median of the trace's first readings. (None, "none") when nothing rises.
    """
    on = [t for t, level in tables.load_edges(markers) if level > 0]
    if on:
        return int(on[0]), "load marker"
    t = rows["t_ns"].to_numpy(dtype=np.int64)
    ok = tables.read_ok(rows)
    util = tables.column(rows, "util_gpu")
    busy = np.flatnonzero(ok & np.isfinite(util) & (util > UTIL_LIMIT_PCT))
    if busy.size:
        return int(t[busy[0]]), "utilisation"
    tp, p = tables.good(rows, field)
    if p.size:
        head = float(np.median(p[: max(10, p.size // 20)]))
        up = np.flatnonzero(p > head + DELTA_P_W)
        if up.size:
            return int(tp[up[0]]), "power step"
    return None, "none"


def find_idle_stretch(rows: pd.DataFrame, markers: pd.DataFrame | None, fields: tuple[str, ...] = ("power_w",),
                      floor_threshold_w: float = 5.0) -> dict:
    """The idle stretch of a trace without baseline markers.

    Idle means: before the first load edge (:func:`first_load_edge_ns`, on the first field),
    utilisation at most ``UTIL_LIMIT_PCT`` (or not recorded), and stable power: every power
    field in ``fields`` within +- delta-P / 2 of its candidates' median (floor readings
    below ``floor_threshold_w`` are idle too; a field not read on a row does not break the
    run). The longest run of such consecutive readings is the stretch; it needs at least
    ``MIN_IDLE_S`` and ``MIN_IDLE_READINGS``. (Without utilisation or load markers, a trace
    loaded steadily from its first reading cannot be told from idle by power alone.)
    Returns {found, t_start_ns, t_end_ns, window_s, edge_ns, edge_source, reason}.
    """
    edge, edge_source = first_load_edge_ns(rows, markers, fields[0])
    pre = rows if edge is None else rows[rows["t_ns"].to_numpy(dtype=np.int64) < edge]
    out = {"found": False, "t_start_ns": None, "t_end_ns": None, "window_s": None, "edge_ns": edge,
           "edge_source": edge_source}
    t = pre["t_ns"].to_numpy(dtype=np.int64)
    util = tables.column(pre, "util_gpu")
    read = tables.read_ok(pre)
    low_util = ~(np.isfinite(util) & (util > UTIL_LIMIT_PCT))
    first = tables.column(pre, fields[0])
    counted = read & np.isfinite(first) & low_util  # rows that count toward the stretch
    if not counted.any():
        return out | {"reason": "no reading with low utilisation before the first load edge"}
    keep = low_util.copy()
    for field in fields:
        p = tables.column(pre, field)
        seen = read & np.isfinite(p) & low_util
        if not seen.any():
            continue
        real = seen & (p >= floor_threshold_w)
        level = float(np.median(p[real] if real.any() else p[seen]))
        unstable = seen & (p >= floor_threshold_w) & (np.abs(p - level) > DELTA_P_W / 2)
        keep &= ~unstable
    # A change of performance state is a change of idle state: it ends a run.
    pstate = tables.column(pre, "pstate")
    changed = np.zeros(len(pre), dtype=bool)
    both = np.isfinite(pstate[1:]) & np.isfinite(pstate[:-1])
    changed[1:] = both & (pstate[1:] != pstate[:-1])
    best, start = (0, 0, -1), None
    n_rows = len(pre)
    for i in range(n_rows + 1):
        ends_run = i == n_rows or not keep[i] or changed[i]
        if start is not None and ends_run:
            idx = np.flatnonzero(counted[start:i]) + start
            if idx.size and t[idx[-1]] - t[idx[0]] > best[0]:
                best = (int(t[idx[-1]] - t[idx[0]]), int(idx[0]), int(idx[-1]))
            start = None
        if i < n_rows and keep[i] and start is None:
            start = i
    span_ns, i0, i1 = best
    n = int(np.sum(counted[i0:i1 + 1])) if i1 >= 0 else 0
    if span_ns < MIN_IDLE_S * 1e9 or n < MIN_IDLE_READINGS:
        return out | {"reason": f"no stretch of at least {MIN_IDLE_S:g} s and {MIN_IDLE_READINGS} readings of low "
                                f"utilisation and stable power before the first load edge (longest {span_ns / 1e9:.2f} s)"}
    return out | {"found": True, "t_start_ns": int(t[i0]), "t_end_ns": int(t[i1]), "window_s": rnd(span_ns / 1e9, 3),
                  "reason": f"idle stretch before the first load edge ({edge_source})" if edge is not None
                  else "idle stretch (no load edge in the trace)"}


def analyze(trace_df: pd.DataFrame, markers_df: pd.DataFrame | None, **kw) -> dict:
    """Baseline from idle only: over the ``baseline`` phase (the longest one when there are
    several), else over the idle stretch :func:`find_idle_stretch` finds (reported with its
    bounds), else ``no_data`` (never a mean over load).

    Returns {"fields": {field: figures}, "quality", "source", "idle_t_start_ns",
    "idle_t_end_ns", "idle_window_s", "idle_reason"} for each power field the trace
    supports (per device when the trace holds several: {"devices": {uuid: ...}}).
    """
    field_names = kw.pop("fields", POWER_FIELDS)

    def one(trace: pd.DataFrame, markers: pd.DataFrame | None) -> dict:
        windows = tables.phase_windows(markers, "baseline")
        if windows:
            end = int(trace["t_ns"].max()) if len(trace) else 0
            t0, t1 = max(windows, key=lambda w: (w[1] if w[1] is not None else end) - w[0])
            source, reason = "baseline phase", "baseline phase markers"
        else:
            present = [f for f in field_names if np.isfinite(tables.column(trace, f)).any()]
            stretch = find_idle_stretch(trace, markers, tuple(present) or ("power_w",),
                                        kw.get("floor_threshold_w", 5.0))
            if not stretch["found"]:
                return {"fields": {}, "quality": "no_data", "source": "no idle stretch", "idle_t_start_ns": None,
                        "idle_t_end_ns": None, "idle_window_s": None, "idle_reason": stretch["reason"]}
            t0, t1 = stretch["t_start_ns"], stretch["t_end_ns"]
            source, reason = "idle stretch", stretch["reason"]
        rows = tables.window(trace, t0, t1)
        fields = {}
        for field in field_names:
            if np.isfinite(tables.column(rows, field)).any():
                fields[field] = analyze_baseline(rows, field=field, **kw)
        quality = fields["power_w"]["quality"] if "power_w" in fields else "no_data"
        t_rows = rows["t_ns"].to_numpy(dtype=np.int64)
        return {"fields": fields, "quality": quality, "source": source,
                "idle_t_start_ns": int(t_rows[0]) if t_rows.size else t0,
                "idle_t_end_ns": int(t_rows[-1]) if t_rows.size else t1,
                "idle_window_s": rnd((t_rows[-1] - t_rows[0]) / 1e9, 3) if t_rows.size else None,
                "idle_reason": reason}

    return tables.per_device(trace_df, markers_df, one)


def _changes(x: np.ndarray) -> int:
    x = x[np.isfinite(x)]
    return int(np.sum(x[1:] != x[:-1])) if x.size > 1 else 0



