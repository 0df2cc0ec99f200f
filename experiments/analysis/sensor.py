"""What a sampled sensor field reveals about its sensor: the instants its value changed
(its updates) and its update period.

A power field holds its value between sensor updates, so a poller reading faster than
the sensor sees each update as a change at the first read after it. The update happened
somewhere between that read and the previous one; we place it at the midpoint (an
unbiased estimate when the poller's phase is unrelated to the sensor's).
"""

from __future__ import annotations

import math

import numpy as np

from experiments.analysis.stats import ls_slope

# Above this fraction of reads showing a new value the poller may be slower than the
# sensor: intervals between changes then measure the poller, not the sensor.
MAX_RESOLVED_CHANGE_FRACTION = 0.75
MAX_MULTIPLE = 20  # intervals longer than this many periods are stalls, not updates


def change_points(t_ns: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(time_ns float64, value) of each visible update: every read whose value differs from
    the previous read's, at the midpoint between the two reads. Inputs: valid reads, sorted."""
    t = np.asarray(t_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if t.size < 2:
        return np.empty(0), np.empty(0)
    changed = np.flatnonzero(v[1:] != v[:-1]) + 1
    tc = (t[changed - 1].astype(np.float64) + t[changed].astype(np.float64)) / 2.0
    return tc, v[changed]


def update_points(t_ns: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The change points preceded by the first read (its update time unknown: its read time)."""
    t = np.asarray(t_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if t.size == 0:
        return np.empty(0), np.empty(0)
    tc, vc = change_points(t, v)
    return np.concatenate(([float(t[0])], tc)), np.concatenate(([v[0]], vc))


def estimate_update_period(t_ns: np.ndarray, values: np.ndarray) -> dict:
    """The sensor's update period from the instants its value changed.

    An interval between two changes is a whole multiple k of the period U (an update
    whose value repeats is invisible, so k > 1 happens), give or take the poll gaps at its
    two ends. Given a first guess, each interval gets its k and U is refit as total time
    over total count until stable. First guesses: the lower quartile of the intervals
    (robust to many repeated values), their median, and the span over the number of
    changes (exact when no value repeats). Each refined candidate is scored by the share
    of intervals it explains within their poll gaps; among the best, the longest period
    wins (a period's halves explain the same intervals, with invisible updates). The
    median interval alone is biased when the poll period does not divide U.

    Returns ``{"update_period_ms", "update_period_se_ms", "resolved", "poll_ms",
    "change_fraction", "n_changes", "consistency"}``. ``resolved`` is False when the poller
    is too slow to see the sensor's updates separately (then ``update_period_ms`` is None
    and the period is only known to be at most about ``poll_ms``) or when there are too
    few changes.
    """
    t = np.asarray(t_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    out = {"update_period_ms": None, "update_period_se_ms": None, "resolved": False, "poll_ms": None,
           "change_fraction": None, "n_changes": 0, "consistency": None}
    if t.size < 3:
        return out
    poll_ms = float(np.median(np.diff(t))) / 1e6
    changed = np.flatnonzero(v[1:] != v[:-1]) + 1
    n_changes = int(changed.size)
    frac = n_changes / (t.size - 1)
    out.update(poll_ms=poll_ms, change_fraction=frac, n_changes=n_changes)
    if n_changes < 4 or frac > MAX_RESOLVED_CHANGE_FRACTION:
        return out
    tc = (t[changed - 1] + t[changed]) / 2.0 / 1e6
    gap = (t[changed] - t[changed - 1]) / 1e6  # where each change could have happened
    d = np.diff(tc)
    tol = (gap[:-1] + gap[1:]) / 2.0 + 0.02 * d
    starts = (float(np.percentile(d, 25)), float(np.median(d)), float((tc[-1] - tc[0]) / n_changes))
    best, tried = None, []
    for u0 in starts:
        u = _refine(d, u0)
        if u is None or any(abs(u - x) < 1e-6 * x for x in tried):
            continue
        tried.append(u)
        k = np.maximum(np.rint(d / u), 1.0)
        keep = k <= MAX_MULTIPLE
        score = float(np.mean(keep & (np.abs(d - k * u) <= tol)))
        if best is None or score > best[0] + 0.02 or (score >= best[0] - 0.02 and u > best[1]):
            best = (max(score, best[0]) if best else score, u)
    if best is None:
        return out
    u = best[1]
    # Refit as a line (change time vs update count) over the kept intervals for an error bar.
    k = np.maximum(np.rint(d / u), 1.0)
    keep = k <= MAX_MULTIPLE
    counts = np.concatenate(([0.0], np.cumsum(np.where(keep, k, 0.0))))
    times = np.concatenate(([0.0], np.cumsum(np.where(keep, d, 0.0))))
    se = ls_slope(counts, times)["slope_se"]
    out.update(update_period_ms=u, update_period_se_ms=se if math.isfinite(se) else None, resolved=True,
               consistency=best[0])
    return out


def _refine(d: np.ndarray, u: float) -> float | None:
    """Iterate U = sum(d) / sum(k), k = round(d / U), over intervals of at most 20 periods."""
    k_prev = None
    for _ in range(12):
        if not (u > 0):
            return None
        k = np.maximum(np.rint(d / u), 1.0)
        keep = k <= MAX_MULTIPLE
        if keep.sum() < 3:
            return None
        u_new = float(d[keep].sum() / k[keep].sum())
        if abs(u_new - u) < 1e-9 * u or (k_prev is not None and np.array_equal(k, k_prev)):
            return u_new
        k_prev = k
        u = u_new
    return u


def effective_update_period_ms(info: dict) -> float | None:
    """The period to use downstream: the estimate, else the poll interval (an upper bound)."""
    if info.get("update_period_ms"):
        return float(info["update_period_ms"])
    return info.get("poll_ms")


# -- the averaging window --------------------------------------------------------------------
WINDOW_GRID_POINTS = 60
ONSET_GRID_POINTS = 50
MIN_SIGMA = 0.02  # of the step: model slack for real boards (sensor resolution, small drifts)


def window_log_likelihood(t_ms: np.ndarray, y: np.ndarray, sigma: float, onset_hi_ms: float,
                          windows_ms: np.ndarray, band: tuple[float, float] = (0.1, 0.9)) -> np.ndarray:
    """log p(points | W) of one step under a boxcar sensor, for each W in ``windows_ms``.

    A boxcar of width W over a step at t_s reads clip((t - t_s) / W, 0, 1) at an update at
    t. ``t_ms``/``y`` are the step's update points (ms since the load edge, value
    normalised to 0 before and 1 after the step), ``sigma`` their noise in those units. The
    unknown onset t_s is marginalised over ``onsets_ms`` (uniform prior). Values inside
    ``band`` are partial readings and weigh as Gaussian errors; values outside it only say
    the model is also outside it (censored): a real board's slow few-percent tail (settling
    into a lower P-state) then does not stretch the window.
    """
    from scipy.special import ndtr

    t_pts = np.asarray(t_ms, dtype=np.float64)
    y_pts = np.asarray(y, dtype=np.float64)
    w = np.asarray(windows_ms, dtype=np.float64)
    lo, hi = band
    low = np.flatnonzero((y_pts <= lo) & (t_pts < onset_hi_ms))
    t_low = t_pts[low[-1]] if low.size else t_pts[0] - 1.0
    # Onsets before t_low - (lo + 4 sigma) W would make that reading partial: negligible.
    start = np.minimum(t_low - (lo + 4 * sigma) * w, onset_hi_ms - 1e-6)
    frac = np.linspace(0.0, 1.0, ONSET_GRID_POINTS)
    ts = (start[:, None] + (onset_hi_ms - start)[:, None] * frac[None, :])[:, :, None]  # (W, onset, 1)
    partial = (y_pts > lo) & (y_pts < hi)
    wb = w[:, None, None]

    def model(t):  # the boxcar's reading at times t, (W, onset, len(t)), before the clip
        return (t[None, None, :] - ts) / wb

    mp = np.clip(model(t_pts[partial]), 0.0, 1.0)
    ll = (-0.5 * ((y_pts[partial] - mp) / sigma) ** 2).sum(axis=2)  # (W, onset)
    # Censored readings: the normal tail, computed only where the model is strictly between
    # 0 and 1; where the boxcar has not started (0) or is full (1) it is one number per point
    # (ndtr is most of this function's cost, and most elements are such plateaus).
    below = y_pts[~partial] <= lo

    def tail(mv, b):
        return np.log(np.maximum(ndtr(np.where(b, lo - mv, mv - hi) / sigma), 1e-300))

    m = model(t_pts[~partial])
    terms = np.where(m <= 0.0, tail(0.0, below), tail(1.0, below))
    mid = (m > 0.0) & (m < 1.0)
    terms[mid] = tail(m[mid], np.broadcast_to(below, m.shape)[mid])
    ll = ll + terms.sum(axis=2)
    peak = ll.max(axis=1, keepdims=True)
    # uniform prior on the onset: the mean over each W's grid times that grid's length
    mean = peak[:, 0] + np.log(np.mean(np.exp(ll - peak), axis=1))
    return mean + np.log(onset_hi_ms - start)


def window_posterior(steps: list[dict], update_ms: float, max_window_ms: float) -> dict:
    """The averaging window from the steps' update points, with its 95 % interval.

    ``steps``: [{"t_ms", "y", "sigma", "onset_hi_ms"}], one per step. Each
    step's likelihood over W (:func:`window_log_likelihood`) is multiplied across steps,
    with a flat prior on W in (0, ``max_window_ms``]. A window shorter than the update period
    shows as one partial value in some steps and none in others, so the counts and values
    of the partial readings carry it, not their number alone (which is quantised to the
    update period). Returns {window_ms (posterior median), ci_low_ms, ci_high_ms, se_ms
    (interval width / 3.92), resolved, n_steps}. ``resolved`` is False when the interval
    reaches down to a tenth of the update period (the data cannot tell W from 0) or up to
    ``max_window_ms``.
    """
    out = {"window_ms": None, "ci_low_ms": None, "ci_high_ms": None, "se_ms": None, "resolved": False,
           "n_steps": len(steps)}
    if not steps or not (update_ms > 0) or not (max_window_ms > 0):
        return out
    lo_w = update_ms / 50.0
    hi_w = max(max_window_ms, 2 * lo_w)

    def log_post(grid: np.ndarray) -> np.ndarray:
        total = np.zeros(grid.size)
        for s in steps:
            total += window_log_likelihood(s["t_ms"], s["y"], max(s["sigma"], MIN_SIGMA), s["onset_hi_ms"], grid)
        return total

    # A coarse log-spaced pass finds where the posterior lives, a fine linear one measures it.
    coarse = np.geomspace(lo_w, hi_w, WINDOW_GRID_POINTS)
    lp = log_post(coarse)
    alive = np.flatnonzero(lp > lp.max() - 20.0)
    a, b = max(alive[0] - 1, 0), min(alive[-1] + 1, coarse.size - 1)
    grid = np.linspace(coarse[a], coarse[b], WINDOW_GRID_POINTS)
    total = log_post(grid)
    # flat prior on W: weight each grid point by the width it stands for
    widths = np.gradient(grid)
    post = np.exp(total - total.max()) * widths
    cdf = np.cumsum(post)
    cdf /= cdf[-1]
    q = np.interp([0.025, 0.5, 0.975], cdf, grid)
    resolved = bool(q[0] > update_ms / 10.0 and q[2] < 0.98 * hi_w)
    return out | {"window_ms": float(q[1]), "ci_low_ms": float(q[0]), "ci_high_ms": float(q[2]),
                  "se_ms": float((q[2] - q[0]) / 3.92), "resolved": resolved}
