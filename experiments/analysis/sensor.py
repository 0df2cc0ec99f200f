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
