"""Heat soak: how fast the board heats under constant load, where it settles, and whether
it throttles.

* Slopes: least-squares slope of temperature over a rolling window on the real
  timestamps (TR122: 5 minutes, ``TR122_WINDOW_S``), evaluated every ``step_s`` (default
  one window: consecutive windows), each with its standard error.
* Equilibrium by TR122's margin rule on the slope's upper 95 % bound |slope| + 1.96 se:
  two consecutive windows below 0.5 C/min, or one below 0.4 C/min; and (our addition) no
  such window may be *still moving*: over the two windows ending there (the span whole
  degrees need to show a sub-degree drift) the slope's 95 % interval excludes 0 and it moves
  the temperature by at least half a degree per window (``DRIFT_MIN_C``). TR122's margin
  alone passes a drift of up to 2 C per 5 minutes; a whole-degree warm-up still rising
  0.7 C per 5 minutes passed it. The drift test needs the drift to be both measured (its
  interval) and physical (half of NVML's 1 C resolution), so a continuous sensor's tiny
  significant drift never blocks it, and every exponential approach ends up passing it. A
  soak shorter than two windows is ``not assessable``. The same rule code serves the
  offline analysis and the runner's online :class:`EquilibriumDetector`.
* Whole-degree readings: a window's slope error is at least the quantisation's,
  1 C / (window * sqrt(12)), so a 60 s window of whole degrees can never show a slope
  under the margin (its bound alone is 0.57 C/min), a 5-minute window can.
* Whole-degree temperatures (NVML reports integers) defeat a plain 60 s slope near the
  margin: one 1 C step inside a window reads up to 1.5 C/min, a window without one reads
  0. So when the readings are quantised the slope is taken on a reconstruction: the
  exponential fit, corrected to pass through every transition point (where the reading
  changes the true temperature crosses the midpoint of the two readings, at about the
  midpoint in time of the two reads). Between transitions the correction is interpolated,
  beyond the last one it is held, so the fit only carries the shape where the readings
  carry no information. Continuous readings are used as they are.
* Fit: T(t) = T_inf - (T_inf - T0) exp(-t / tau) by least squares (scipy curve_fit) on
  the readings, with standard errors inflated by the residuals' autocorrelation (N_eff).
  The fitted curve, continued, gives the predicted time to equilibrium (the margin rule
  applied to its window slopes); it is the reported time, labelled ``predicted``, when the
  soak stopped before the rule fired on the data.
* Throttling, reported separately: the clocks-event bitmask decoded to names, and a
  heuristic on the samples (SM clock more than 10 % below its loaded reference while
  util > 80 %).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from agents.trace_schema import THERMAL_MASK, THROTTLE_MASK, decode_clocks_event_reasons
from experiments.analysis import tables
from experiments.analysis.stats import Z95, lag1_autocorr, ls_slope, n_eff, rnd, rnd_sig, with_interval

MARGIN_ONE_C_PER_MIN = 0.4
MARGIN_TWO_C_PER_MIN = 0.5
TR122_WINDOW_S = 300.0  # TR122's rolling 5-minute slope window
GOOD_REL_SE = 0.15  # a fit is good by precision when tau and the rise have relative SE under this
FALLBACK_TRIP_C = 83.0
RESUME_C = 80.0
HEURISTIC_UTIL_PCT = 80.0
HEURISTIC_DROP = 0.10
DRIFT_MIN_C = 0.5  # per window: half of NVML's whole-degree resolution
DRIFT_SPAN_WINDOWS = 2  # the drift test's span, in windows
MAX_FIT_POINTS = 3000
MIN_TRANSITIONS = 6
SERIES_POINTS = 300


# -- the rule -----------------------------------------------------------------------------
def margin_rule(slopes_c_per_min: list[float] | np.ndarray, se_c_per_min: list[float] | np.ndarray | None = None,
                one: float = MARGIN_ONE_C_PER_MIN, two: float = MARGIN_TWO_C_PER_MIN,
                moving: list[bool] | np.ndarray | None = None) -> int | None:
    """Index of the first window at which equilibrium is reached, or None.

    The bound tested is |slope_k| + 1.96 se_k (the slope's upper 95 % bound; se 0 when not
    given). Reached at window k when bound_k < ``one``, or when bound_k and bound_{k-1} are
    both below ``two``. NaN slopes or errors (empty windows) never count, nor does a window
    flagged in ``moving`` (:func:`still_moving`).
    """
    s = np.abs(np.asarray(slopes_c_per_min, dtype=np.float64))
    if se_c_per_min is not None:
        s = s + Z95 * np.asarray(se_c_per_min, dtype=np.float64)
    if moving is not None:
        s = np.where(np.asarray(moving, dtype=bool), np.inf, s)
    below_two = s < two
    for k in range(s.size):
        if s[k] < one or (k > 0 and below_two[k] and below_two[k - 1]):
            return k
    return None


def still_moving(slopes_c_per_min: np.ndarray, se_c_per_min: np.ndarray, window_s: float,
                 drift_min_c: float = DRIFT_MIN_C) -> np.ndarray:
    """Per window: the temperature is still moving. The slope (over the drift span) has a 95 %
    interval that excludes 0 and moves the temperature by at least ``drift_min_c`` per
    window. NaN slopes are not flagged (the margin rule already refuses them)."""
    s = np.asarray(slopes_c_per_min, dtype=np.float64)
    se = np.asarray(se_c_per_min, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (np.abs(s) - Z95 * se > 0) & (np.abs(s) * float(window_s) / 60.0 >= drift_min_c)


def drift_figures(t_s: np.ndarray, temp_c: np.ndarray, recon: np.ndarray, ends_s: np.ndarray,
                  window_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slope, se, still moving) over the ``DRIFT_SPAN_WINDOWS`` windows ending at each end:
    the slope from the reconstruction, its error from the readings (as the windows')."""
    span = DRIFT_SPAN_WINDOWS * float(window_s)
    slope = window_slopes(t_s, recon, ends_s, span)
    se = window_slope_se(t_s, temp_c, ends_s, span, is_quantised(temp_c))
    return slope, se, still_moving(slope, se, window_s)


def slope_upper_bound(slope_c_per_min: float, se_c_per_min: float) -> float:
    """|slope| + 1.96 se: the bound the margin rule compares with its thresholds."""
    return abs(float(slope_c_per_min)) + Z95 * float(se_c_per_min)


def quantisation_se_c_per_min(window_s: float) -> float:
    """The least slope error of whole-degree readings over a window: 1 C / (window sqrt(12))."""
    return 60.0 / float(window_s) / math.sqrt(12.0)


def window_slope_se(t_s: np.ndarray, temp_c: np.ndarray, ends_s: np.ndarray, window_s: float,
                    quantised: bool) -> np.ndarray:
    """Standard error (C/min) of each window's slope from the readings themselves.

    The residuals' autocorrelation shrinks the degrees of freedom (N_eff); whole-degree
    readings add the quantisation floor (:func:`quantisation_se_c_per_min`). NaN when the
    window holds fewer than 3 readings.
    """
    t_s = np.asarray(t_s, dtype=np.float64)
    temp_c = np.asarray(temp_c, dtype=np.float64)
    lo = np.searchsorted(t_s, np.asarray(ends_s) - window_s, side="right")
    hi = np.searchsorted(t_s, np.asarray(ends_s), side="right")
    floor = quantisation_se_c_per_min(window_s) if quantised else 0.0
    out = np.full(len(ends_s), np.nan)
    for k, (a, b) in enumerate(zip(lo, hi)):
        if b - a < 3:
            continue
        step = max(1, (b - a) // 5000)  # the error needs no more than a few thousand points
        se = ls_slope(t_s[a:b:step] / 60.0, temp_c[a:b:step])["slope_se"]
        se = se if math.isfinite(se) else 0.0
        out[k] = max(se, floor)
    return out


def window_ends(t_first_s: float, t_last_s: float, window_s: float, step_s: float) -> np.ndarray:
    """Ends of the evaluation windows: first one full window after the start, then every step."""
    if t_last_s - t_first_s < window_s:
        return np.empty(0)
    n = int(math.floor((t_last_s - t_first_s - window_s) / step_s + 1e-9)) + 1
    return t_first_s + window_s + step_s * np.arange(n)


def window_slopes(t_s: np.ndarray, temp_c: np.ndarray, ends_s: np.ndarray, window_s: float) -> np.ndarray:
    """Least-squares slope (C/min) of temp over (end - window, end] for each end (NaN if < 3 points)."""
    t_s = np.asarray(t_s, dtype=np.float64)
    temp_c = np.asarray(temp_c, dtype=np.float64)
    out = np.full(len(ends_s), np.nan)
    # Prefix sums make every window O(1).
    c1 = np.concatenate(([0.0], np.cumsum(t_s)))
    c2 = np.concatenate(([0.0], np.cumsum(t_s * t_s)))
    cy = np.concatenate(([0.0], np.cumsum(temp_c)))
    cxy = np.concatenate(([0.0], np.cumsum(t_s * temp_c)))
    lo = np.searchsorted(t_s, np.asarray(ends_s) - window_s, side="right")
    hi = np.searchsorted(t_s, np.asarray(ends_s), side="right")
    for k, (a, b) in enumerate(zip(lo, hi)):
        n = b - a
        if n < 3:
            continue
        # Centre on the window's first time to keep the sums well conditioned.
        x0 = t_s[a]
        sx = c1[b] - c1[a] - n * x0
        sxx = c2[b] - c2[a] - 2 * x0 * (c1[b] - c1[a]) + n * x0 * x0
        sy = cy[b] - cy[a]
        sxy = cxy[b] - cxy[a] - x0 * sy
        den = n * sxx - sx * sx
        if den > 1e-12:
            out[k] = (n * sxy - sx * sy) / den * 60.0
    return out


# -- the fit ----------------------------------------------------------------------------------
def _exp_model(t, t_inf, t0, tau):
    return t_inf - (t_inf - t0) * np.exp(-t / tau)


def fit_exponential(t_s: np.ndarray, temp_c: np.ndarray) -> dict | None:
    """Least-squares T(t) = T_inf - (T_inf - T0) exp(-t/tau), t in seconds since the soak's
    first sample (``t_s[0]`` should be 0).

    Whole-degree readings are fitted through their transition points (see
    :func:`transition_points`), which are unbiased samples of the true curve; fitting the
    rounded readings themselves biases T_inf by up to half a degree and tau with it.
    Returns {t_inf_c, t_inf_se_c, t0_c, t0_se_c, tau_s, tau_se_s, r2, rmse_c, n, n_eff,
    points} or None when the curve is too flat or the fit fails. Errors are scaled by
    n / N_eff of the residuals.
    """
    from scipy.optimize import curve_fit

    t = np.asarray(t_s, dtype=np.float64)
    y = np.asarray(temp_c, dtype=np.float64)
    if t.size < 10 or np.ptp(y) < 2.0 or np.ptp(t) <= 0:
        return None
    points = "readings"
    if is_quantised(y):
        tp, yp = transition_points(t, y)
        if tp.size >= MIN_TRANSITIONS:
            t, y, points = tp, yp, "transitions"
    tb, yb = _bin(t, y, MAX_FIT_POINTS)
    span = float(tb[-1] - tb[0])
    y0, y1 = float(np.median(yb[: max(3, yb.size // 50)])), float(np.median(yb[-max(3, yb.size // 50):]))
    target = y0 + (1 - math.exp(-1)) * (y1 - y0)
    cross = np.flatnonzero((yb - target) * np.sign(y1 - y0) >= 0)
    tau0 = float(tb[cross[0]]) if cross.size and tb[cross[0]] > 0 else span / 3
    lo_y, hi_y = float(yb.min()), float(yb.max())
    bounds = ([lo_y - 100.0, lo_y - 50.0, 1e-3], [hi_y + 100.0, hi_y + 50.0, 1e3 * max(span, 1.0)])
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tau_start in (tau0, span / 3, span):
            p0 = [y1, y0, min(max(tau_start, 1e-2), bounds[1][2] / 2)]
            try:
                popt, pcov = curve_fit(_exp_model, tb, yb, p0=p0, bounds=bounds, maxfev=5000)
            except (RuntimeError, ValueError):
                continue
            sse = float(np.sum((yb - _exp_model(tb, *popt)) ** 2))
            if best is None or sse < best[2]:
                best = (popt, pcov, sse)
    if best is None:
        return None
    popt, pcov, sse = best
    resid = y - _exp_model(t, *popt)
    n = int(y.size)
    ne = n_eff(n, lag1_autocorr(resid))
    # pcov is scaled to the binned residuals; rescale to the raw residuals' information.
    nb = tb.size
    scale = (float(np.mean(resid ** 2)) / max(sse / max(nb - 3, 1), 1e-300)) * (nb / ne)
    err = np.sqrt(np.clip(np.diag(pcov) * scale, 0, None))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"t_inf_c": float(popt[0]), "t_inf_se_c": float(err[0]), "t0_c": float(popt[1]), "t0_se_c": float(err[1]),
            "tau_s": float(popt[2]), "tau_se_s": float(err[2]),
            "r2": 1.0 - float(np.sum(resid ** 2)) / ss_tot if ss_tot > 0 else math.nan,
            "rmse_c": float(np.sqrt(np.mean(resid ** 2))), "n": n, "n_eff": ne, "points": points}


def _bin(t: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    if t.size <= max_points:
        return t, y
    edges = np.linspace(t[0], t[-1], max_points + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, max_points - 1)
    counts = np.bincount(idx, minlength=max_points)
    keep = counts > 0
    tb = np.bincount(idx, weights=t, minlength=max_points)[keep] / counts[keep]
    yb = np.bincount(idx, weights=y, minlength=max_points)[keep] / counts[keep]
    return tb, yb


def fitted_curve(fit: dict):
    """The fitted T(t) as a function of seconds since the soak's first sample."""
    return lambda t: _exp_model(np.asarray(t, dtype=np.float64), fit["t_inf_c"], fit["t0_c"], fit["tau_s"])


# -- de-quantising ------------------------------------------------------------------------------
def resolve_quantised(t_s: np.ndarray, temp_c: np.ndarray, fit: dict | None, ends_s: np.ndarray,
                      slopes: np.ndarray) -> np.ndarray:
    """Keep only the slopes whole-degree readings can resolve.

    Without a fit (too few changes of reading to reconstruct the curve), a window's slope
    is unknown, not zero: one degree of drift can hide in any window shorter than
    1 C / 0.4 C/min = 150 s. Such a slope counts as 0 only once the reading has been
    constant for that long before the window's end; otherwise it is NaN (the rule fails).
    """
    slopes = np.asarray(slopes, dtype=np.float64).copy()
    if fit is not None or not is_quantised(temp_c) or slopes.size == 0:
        return slopes
    t = np.asarray(t_s, dtype=np.float64)
    y = np.asarray(temp_c, dtype=np.float64)
    needed_s = 60.0 / MARGIN_ONE_C_PER_MIN  # seconds of a constant reading that bound |slope| below the margin
    changes = t[1:][np.diff(y) != 0]
    for i, end in enumerate(ends_s):
        before = changes[changes <= end]
        last_change = before[-1] if before.size else t[0]
        slopes[i] = 0.0 if end - last_change >= needed_s else np.nan
    return slopes


def is_quantised(temp_c: np.ndarray) -> bool:
    """True when every reading is a whole degree (NVML style)."""
    y = np.asarray(temp_c, dtype=np.float64)
    return y.size > 0 and bool(np.all(np.abs(y - np.round(y)) < 1e-6))


def transition_points(t_s: np.ndarray, temp_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where whole-degree readings change: midpoint time of the two reads, midpoint level."""
    t = np.asarray(t_s, dtype=np.float64)
    y = np.asarray(temp_c, dtype=np.float64)
    ch = np.flatnonzero(y[1:] != y[:-1]) + 1
    return (t[ch - 1] + t[ch]) / 2.0, (y[ch - 1] + y[ch]) / 2.0


def reconstruct(t_s: np.ndarray, temp_c: np.ndarray, fit: dict | None) -> np.ndarray:
    """Temperature at the sample times for slope estimation (see the module doc).

    ``t_s`` are seconds since the soak's first sample. Continuous readings are returned as
    they are; whole-degree readings become the fit corrected through the transition points
    (without a fit, the line through the transition points, held flat beyond them).
    """
    t = np.asarray(t_s, dtype=np.float64)
    y = np.asarray(temp_c, dtype=np.float64)
    if not is_quantised(y) or y.size < 2:
        return y
    tp, level = transition_points(t, y)
    base = fitted_curve(fit)(t) if fit else np.zeros_like(t)
    if tp.size == 0:
        return base if fit else y
    resid = level - (fitted_curve(fit)(tp) if fit else 0.0)
    return base + np.interp(t, tp, resid)


# -- the analysis -----------------------------------------------------------------------------
def analyze_heat_soak(trace: pd.DataFrame, t_start_ns: int | None = None, t_end_ns: int | None = None,
                      window_s: float = TR122_WINDOW_S, step_s: float | None = None,
                      window_note: str | None = None) -> dict:
    """Heat-soak figures over [t_start_ns, t_end_ns] (the load should be on from the start).

    ``window_s`` is TR122's 5 minutes unless a shorter preset scales it (``window_note``
    then says how, and travels into the report).

    Returns: t_start_ns, duration_s, n, quantised, window_s, step_s, window_note,
    t_start_c, t_end_c, slope_c_per_min with its se, 95 % interval and ``slope_upper_c_per_min``
    (last window), windows [{t_s, slope_c_per_min, slope_se_c_per_min,
    slope_upper_c_per_min}], equilibrium (reached on the data), equilibrium_status
    (equilibrium | predicted | not assessable | not reached), equilibrium_measured_s,
    equilibrium_predicted_s with its se, interval and resolved flag,
    time_to_equilibrium_s, equilibrium_kind (measured | predicted | None), tau_s and t_inf_c
    each with se, interval and resolved flag, t0_c, fit_r2, fit_rmse_c, coverage_tau
    (duration over tau), power_mean_w, throttling figures, series, quality (good |
    insufficient | no_data) and quality_reason. Times in seconds since the first sample.
    """
    window_s = float(window_s)
    step_s = window_s if step_s is None else float(step_s)
    rows = tables.window(trace, t_start_ns, t_end_ns)
    rows = rows[tables.read_ok(rows)]
    t_ns, temp = tables.good(rows, "temp_c")
    out = {"window_s": window_s, "step_s": step_s, "window_note": window_note, "n": int(t_ns.size)}
    if t_ns.size < 3:
        return out | {"quality": "no_data", "quality_reason": "fewer than 3 temperature readings",
                      "equilibrium": False, "equilibrium_kind": None, "equilibrium_status": "not assessable"}
    t = (t_ns - t_ns[0]) / 1e9
    quantised = is_quantised(temp)
    fit = fit_exponential(t, temp)
    recon = reconstruct(t, temp, fit)
    ends = window_ends(0.0, float(t[-1]), window_s, step_s)
    slopes = resolve_quantised(t, temp, fit, ends, window_slopes(t, recon, ends, window_s))
    ses = window_slope_se(t, temp, ends, window_s, quantised)
    drift, drift_se, moving = drift_figures(t, temp, recon, ends, window_s)
    assessable = float(t[-1]) >= 2 * window_s
    k = margin_rule(slopes, ses, moving=moving) if assessable else None
    measured = float(ends[k]) if k is not None else None
    # The prediction is of the physics: when TR122's rule (5-minute windows) fires on the fitted
    # curve, whatever window a short preset measures with.
    predicted = predict_equilibrium_s(fit, TR122_WINDOW_S, TR122_WINDOW_S * step_s / window_s,
                                      _typical_se(fit, float(t[-1]), quantised, TR122_WINDOW_S)) if fit else None
    kind = "measured" if measured is not None else ("predicted" if predicted is not None else None)
    status = ("equilibrium" if measured is not None else "not assessable" if not assessable
              else "predicted" if predicted is not None else "not reached")
    last = _last_window_slope(t, temp, recon, window_s)
    power = tables.column(rows, "power_w")
    power = power[np.isfinite(power)]
    last_mask = t > t[-1] - window_s
    duration = float(t[-1])
    fit_figs, quality, reason = _fit_figures(fit, duration)
    pred_se = _predicted_se(fit, predicted)
    return out | {
        "t_start_ns": int(t_ns[0]),
        "duration_s": rnd(duration, 1),
        "quantised": quantised,
        "t_start_c": rnd(float(np.median(temp[t < min(window_s / 4, t[-1] / 10) + 1e-9])), 1),
        "t_end_c": rnd(float(np.median(temp[last_mask])), 1),
        **with_interval("slope", "c_per_min", last[0] if last else None, last[1] if last else None,
                        resolved=last is not None, reason=None if last else "fewer than 3 readings in the last window"),
        "slope_upper_c_per_min": rnd(slope_upper_bound(*last), 3) if last else None,
        "windows": [{"t_s": rnd(e, 1), "slope_c_per_min": rnd(s, 3), "slope_se_c_per_min": rnd(se, 3),
                     "slope_upper_c_per_min": rnd(slope_upper_bound(s, se), 3),
                     "drift_c_per_min": rnd(d, 3), "drift_se_c_per_min": rnd(dse, 3), "still_moving": bool(m)}
                    for e, s, se, d, dse, m in zip(ends, slopes, ses, drift, drift_se, moving)],
        "equilibrium": measured is not None,
        "equilibrium_status": status,
        "equilibrium_assessable": assessable,
        "equilibrium_measured_s": rnd(measured, 1),
        **with_interval("equilibrium_predicted", "s", predicted, pred_se,
                        resolved=bool(predicted is not None and fit_figs.get("tau_resolved")),
                        reason="no fit, or tau not resolved" if predicted is None or not fit_figs.get("tau_resolved") else None),
        "time_to_equilibrium_s": rnd(measured if measured is not None else predicted, 1),
        "equilibrium_kind": kind,
        **fit_figs,
        "power_mean_w": rnd(float(power.mean()), 2) if power.size else None,
        **throttling(rows),
        "series": _series(rows, t_ns[0]),
        "quality": quality,
        "quality_reason": reason,
    }


def _fit_figures(fit: dict | None, duration_s: float) -> tuple[dict, str, str]:
    """tau and T_inf with intervals and resolved flags, and the fit's quality by the rule:

    ``good`` when tau and the rise T_inf - T0 are both resolved (their 95 % intervals exclude
    zero) and either the soak covered at least one tau (at tau's upper 95 % bound) or tau
    and T_inf have relative standard errors under 15 % (T_inf's relative to the rise, since
    a Celsius value has no natural zero); ``insufficient`` otherwise.
    """
    if fit is None:
        empty = with_interval("tau", "s", None, None, resolved=False, reason="no exponential fit") | with_interval(
            "t_inf", "c", None, None, resolved=False, reason="no exponential fit")
        return empty | {"t0_c": None, "fit_r2": None, "fit_rmse_c": None, "coverage_tau": None,
                        "tau_rel_se": None, "t_inf_rel_se": None}, "insufficient", \
            "no exponential fit (temperature range under 2 C, or the fit failed)"
    tau, tau_se = fit["tau_s"], fit["tau_se_s"]
    rise = abs(fit["t_inf_c"] - fit["t0_c"])
    tau_rel = tau_se / tau if tau > 0 else math.inf
    tinf_rel = fit["t_inf_se_c"] / rise if rise > 0 else math.inf
    tau_ok = math.isfinite(tau_rel) and tau - Z95 * tau_se > 0
    tinf_ok = math.isfinite(tinf_rel) and rise - Z95 * fit["t_inf_se_c"] > 0
    covered = tau_ok and duration_s >= tau + Z95 * tau_se
    precise = tau_rel < GOOD_REL_SE and tinf_rel < GOOD_REL_SE
    figs = with_interval("tau", "s", tau, tau_se, resolved=tau_ok, reason="tau's 95 % interval reaches 0") \
        | with_interval("t_inf", "c", fit["t_inf_c"], fit["t_inf_se_c"], resolved=tinf_ok,
                        reason="the rise T_inf - T0 is within 1.96 se of 0")
    figs["t_inf_c"] = rnd_sig(fit["t_inf_c"], fit["t_inf_se_c"], max_digits=2)
    figs |= {"t0_c": rnd(fit["t0_c"], 2), "fit_r2": rnd(fit["r2"], 4), "fit_rmse_c": rnd(fit["rmse_c"], 3),
             "coverage_tau": rnd(duration_s / tau, 2) if tau > 0 else None,
             "tau_rel_se": rnd(tau_rel, 3), "t_inf_rel_se": rnd(tinf_rel, 3)}
    if not (tau_ok and tinf_ok):
        return figs, "insufficient", "tau or T_inf not resolved (interval reaches 0)"
    if covered or precise:
        why = "soak covered one tau" if covered else "tau and T_inf relative SE under 15 %"
        return figs, "good", why
    return figs, "insufficient", (f"soak of {duration_s:.0f} s covered {duration_s / tau:.2f} tau and the relative SE "
                                  f"(tau {tau_rel:.0%}, T_inf {tinf_rel:.0%}) is not under 15 %")


def _typical_se(fit: dict, duration_s: float, quantised: bool, window_s: float) -> float:
    """The slope error the rule will see once the curve is flat: the fit's residual scatter
    over one window's share of its effective samples (an LS slope's error is
    rmse sqrt(12 / N_eff) / window), at least the quantisation floor for whole degrees."""
    n_window = max(fit["n_eff"] * min(window_s / max(duration_s, 1e-9), 1.0), 1.0)
    se = fit["rmse_c"] * math.sqrt(12.0 / n_window) / window_s * 60.0
    return max(se, quantisation_se_c_per_min(window_s) if quantised else 0.0)


def predict_equilibrium_s(fit: dict, window_s: float, step_s: float, se_c_per_min: float = 0.0,
                          horizon_tau: float = 30.0) -> float | None:
    """When the margin rule fires on the fitted curve's window slopes (seconds since the start),
    with ``se_c_per_min`` the slope error the data's windows carry."""
    horizon = max(fit["tau_s"] * horizon_tau, 10 * window_s)
    ends = window_ends(0.0, horizon, window_s, step_s)
    if ends.size == 0 or ends.size > 200_000:
        return None
    def slopes_over(span_s: float) -> np.ndarray:
        s = np.linspace(-span_s, 0.0, 61)
        w = (s - s.mean()) / np.sum((s - s.mean()) ** 2)
        curve = fitted_curve(fit)(ends[:, None] + s[None, :])
        return (curve - curve.mean(axis=1, keepdims=True)) @ w * 60.0

    slopes = slopes_over(window_s)
    # the drift span's error: the window's scaled as the quantisation floor scales (1 / span)
    drift_se = se_c_per_min / DRIFT_SPAN_WINDOWS
    moving = still_moving(slopes_over(DRIFT_SPAN_WINDOWS * window_s), np.full(ends.size, drift_se), window_s)
    k = margin_rule(slopes, np.full(slopes.size, se_c_per_min), moving=moving)
    return float(ends[k]) if k is not None else None


def _predicted_se(fit: dict | None, predicted: float | None) -> float | None:
    # The predicted time scales with tau; its relative error is tau's (at least one second).
    if not fit or not predicted:
        return None
    return max(predicted * fit["tau_se_s"] / fit["tau_s"], 1.0)


def _last_window_slope(t: np.ndarray, temp: np.ndarray, recon: np.ndarray, window_s: float):
    m = t > t[-1] - window_s
    if m.sum() < 3:
        return None
    slope = window_slopes(t, recon, np.array([t[-1]]), window_s)[0]
    se = window_slope_se(t, temp, np.array([t[-1]]), window_s, is_quantised(temp))[0]
    if not (math.isfinite(slope) and math.isfinite(se)):
        return None
    return slope, se


def throttling(rows: pd.DataFrame) -> dict:
    """Throttling from the clocks-event bitmask and, separately, the clock-drop heuristic."""
    t = rows["t_ns"].to_numpy(dtype=np.int64)
    dt = np.diff(t, append=t[-1]) / 1e9 if t.size else np.empty(0)
    reasons = tables.column(rows, "clocks_event_reasons")
    known = np.isfinite(reasons)
    bits = np.where(known, reasons, 0).astype(np.int64)
    names: dict[str, float] = {}
    for bit in sorted({int(b) for b in np.unique(bits) if b}):
        for name in decode_clocks_event_reasons(bit):
            names[name] = names.get(name, 0.0) + float(np.sum(bits == bit))
    denom = max(int(known.sum()), 1)
    throttle = (bits & THROTTLE_MASK) != 0
    thermal = (bits & THERMAL_MASK) != 0
    heuristic = clock_drop_heuristic(rows)
    return {
        "throttled": bool(throttle.any() or heuristic["fired"]),
        "thermal_throttled": bool(thermal.any()),
        "throttle_s": rnd(float(dt[throttle].sum()), 1),
        "throttle_bits": {k: rnd(v / denom, 4) for k, v in sorted(names.items())},
        "throttle_bits_first_s": rnd((t[throttle][0] - t[0]) / 1e9, 1) if throttle.any() else None,
        "throttle_heuristic": heuristic,
    }


def clock_drop_heuristic(rows: pd.DataFrame, util_pct: float = HEURISTIC_UTIL_PCT,
                         drop: float = HEURISTIC_DROP) -> dict:
    """SM clock more than ``drop`` below its loaded reference while util > ``util_pct``.

    The reference is the 95th percentile of the SM clock over the busy samples (the boost
    clock the board reaches unthrottled). Fires when more than 1 % of busy samples drop.
    """
    t = rows["t_ns"].to_numpy(dtype=np.int64)
    util = tables.column(rows, "util_gpu")
    clock = tables.column(rows, "sm_clock_mhz")
    busy = np.isfinite(util) & np.isfinite(clock) & (util > util_pct)
    if busy.sum() < 10:
        return {"fired": False, "fraction": None, "reference_sm_clock_mhz": None, "first_s": None,
                "n_busy": int(busy.sum())}
    ref = float(np.percentile(clock[busy], 95))
    low = busy & (clock < (1 - drop) * ref)
    fraction = float(low.sum() / busy.sum())
    return {"fired": fraction > 0.01, "fraction": rnd(fraction, 4), "reference_sm_clock_mhz": rnd(ref, 0),
            "first_s": rnd((t[low][0] - t[0]) / 1e9, 1) if low.any() else None, "n_busy": int(busy.sum())}


def _series(rows: pd.DataFrame, t0_ns: int) -> dict:
    n = len(rows)
    idx = np.unique(np.linspace(0, n - 1, min(n, SERIES_POINTS)).astype(int)) if n else np.empty(0, int)
    sub = rows.iloc[idx]
    t = (sub["t_ns"].to_numpy(dtype=np.int64) - t0_ns) / 1e9
    return {"t_s": [rnd(x, 1) for x in t],
            "temp_c": [rnd(x, 1) for x in tables.column(sub, "temp_c")],
            "power_w": [rnd(x, 1) for x in tables.column(sub, "power_w")],
            "sm_clock_mhz": [rnd(x, 0) for x in tables.column(sub, "sm_clock_mhz")]}


def analyze(trace_df: pd.DataFrame, markers_df: pd.DataFrame | None, **kw) -> dict:
    """Heat soak over the ``heat_soak`` phase (the longest), else from the first load
    marker with level > 0 (else the whole trace) to the end."""

    def one(trace: pd.DataFrame, markers: pd.DataFrame | None) -> dict:
        windows = tables.phase_windows(markers, "heat_soak")
        if windows:
            end = int(trace["t_ns"].max()) if len(trace) else 0
            t0, t1 = max(windows, key=lambda w: (w[1] if w[1] is not None else end) - w[0])
            source = "heat_soak phase"
        else:
            on = [t for t, level in tables.load_edges(markers) if level > 0]
            t0, t1 = (on[0] if on else None), None
            source = "from the first load edge" if on else "whole trace"
        return analyze_heat_soak(trace, t0, t1, **kw) | {"source": source}

    return tables.per_device(trace_df, markers_df, one)


# -- online ---------------------------------------------------------------------------------
class EquilibriumDetector:
    """Online margin rule for the runner: feed every temperature reading, get True once the
    soak has reached equilibrium (and from then on).

    Slopes and their errors are computed as offline (same window, step, reconstruction and
    rule) on the readings seen so far; the exponential fit is refreshed at each window end.
    The rule is first applied once two windows have passed (before that the soak is not
    assessable), and then reports the first window at which it holds, as offline.
    """

    def __init__(self, window_s: float = TR122_WINDOW_S, step_s: float | None = None) -> None:
        self.window_s = float(window_s)
        self.step_s = self.window_s if step_s is None else float(step_s)
        self._t: list[float] = []
        self._y: list[float] = []
        self._t0_ns: int | None = None
        self._next_end = self.window_s
        self.slopes: list[float] = []
        self.slope_se: list[float] = []
        self.moving: list[bool] = []
        self._ends: list[float] = []
        self.reached_at_s: float | None = None

    @property
    def reached(self) -> bool:
        """True once the rule has fired."""
        return self.reached_at_s is not None

    def update(self, t_ns: int, temp_c: float | None) -> bool:
        """Add one reading (None or NaN is skipped); returns whether equilibrium is reached."""
        if self.reached:
            return True
        if temp_c is None or not math.isfinite(float(temp_c)):
            return False
        if self._t0_ns is None:
            self._t0_ns = int(t_ns)
        t = (int(t_ns) - self._t0_ns) / 1e9
        # A window closes when the first reading past its end arrives; evaluate it first.
        while t > self._next_end + 1e-9 and not self.reached:
            self._evaluate(self._next_end)
            self._next_end += self.step_s
        self._t.append(t)
        self._y.append(float(temp_c))
        if not self.reached and abs(t - self._next_end) < 1e-9:
            self._evaluate(self._next_end)
            self._next_end += self.step_s
        return self.reached

    def _evaluate(self, end: float) -> None:
        t = np.asarray(self._t)
        y = np.asarray(self._y)
        fit = fit_exponential(t, y) if is_quantised(y) else None
        recon = reconstruct(t, y, fit)
        slope = window_slopes(t, recon, np.array([end]), self.window_s)
        self.slopes.append(float(resolve_quantised(t, y, fit, np.array([end]), slope)[0]))
        self.slope_se.append(float(window_slope_se(t, y, np.array([end]), self.window_s, is_quantised(y))[0]))
        self.moving.append(bool(drift_figures(t, y, recon, np.array([end]), self.window_s)[2][0]))
        self._ends.append(end)
        if end < 2 * self.window_s - 1e-9:
            return
        k = margin_rule(self.slopes, self.slope_se, moving=self.moving)
        if k is not None:
            self.reached_at_s = self._ends[k]


class ThermalGuard:
    """Pause the workload before the board throttles; resume once it has cooled.

    Trips at ``slowdown_temp_c - margin_c`` when the device reports a slowdown threshold,
    else at 83 C; resumes at 80 C (or 3 C below the trip point when that is lower).
    """

    def __init__(self, slowdown_temp_c: float | None = None, margin_c: float = 5.0,
                 resume_c: float = RESUME_C) -> None:
        self.trip_c = (float(slowdown_temp_c) - margin_c) if slowdown_temp_c else FALLBACK_TRIP_C
        self.resume_c = min(float(resume_c), self.trip_c - 3.0)
        self.tripped = False
        self.trips = 0

    def update(self, t_ns: int, temp_c: float | None) -> bool:
        """Feed one reading; returns True while the guard is tripped (the workload must pause)."""
        if temp_c is None or not math.isfinite(float(temp_c)):
            return self.tripped
        if not self.tripped and temp_c >= self.trip_c:
            self.tripped = True
            self.trips += 1
        elif self.tripped and temp_c <= self.resume_c:
            self.tripped = False
        return self.tripped
