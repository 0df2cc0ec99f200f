"""Instrument response: how a power field answers a load step (idle -> load -> idle ...).

Per power field, separately:

* ``update_period_ms``: how often the field changes (:mod:`experiments.analysis.sensor`).
* Levels: ``idle_w``/``load_w`` are medians of the settled last 40 % of each segment
  between edges (robust to floor readings and noise).
* The response of one step is the line through the field's *update points* (each visible
  update at its estimated instant, with its new value), normalised to 0 before and 1
  after the step. Where consecutive points are more than 1.5 update periods apart the
  sensor updated without changing its value, so the line holds the old value until one
  period before the next point. ``rise_ms`` is the time from the 10 % to the 90 % crossing
  of that line (first crossings).
* ``delay_ms``: from the load edge (the command's time) to the first *update* that reports
  at least half the step, at that update's estimated instant. The field holds each value
  until the next update, so this is when a reader could first see half the step; the line
  between updates crosses 50 % up to one update period earlier, at values the field never
  reported (on a window about as long as the update period that is half a period early on
  average: 63 ms against the published 94 ms on the real RTX 4090). The read time of the
  first read past half the step (``delay_first_read_ms``) adds the poller's latency and
  stalls on top. One step's delay lands anywhere within one update period of the mean, so
  its standard error is at least U / sqrt(12).
* ``window_ms``: the equivalent boxcar averaging window. A boxcar of width W reports
  partial values at the updates that fall within W after the edge, W/U of them on average
  whatever the phase, and 0.8 W/U of them between 10 % and 90 % of the step; so
  W = U x (mean count of update values between 10 % and 90 %) / 0.8. (The 10-90 % band
  keeps slow few-percent tails, like a board settling into a lower P-state, out of it.) On a
  real board it includes the board's own power ramp, so it bounds the sensor's window
  from above.

Ground truth used by the tests for the simulator: the same line (and first update past
half the step) through the noise-free sensor's update points (its value at each exact
update instant), averaged over edge phases spread uniformly over one update period.

Rising and falling steps are measured alike. They are combined when they agree (a linear,
time-invariant sensor answers both the same way: within 20 % or 3 standard errors);
otherwise the rising steps are the figure and the falling ones are reported beside them.
A step is used only when both its levels are settled (the level of the segment's middle
part matches its last 40 % within 5 % of the step) and all three crossings happen before
the settled part.

Pass criteria depend on the measured class of the field: an ``instant`` field (window
under 500 ms) must rise within 300 ms (it resolves sub-second phases); an ``averaged``
field is judged against what an ideal boxcar of its own window, sampled at its own update
period, would do: rise <= 1.25 x 0.8 x window + update period.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.analysis import tables
from experiments.analysis.sensor import (
    effective_update_period_ms,
    estimate_update_period,
    update_points,
    window_posterior,
)
from experiments.analysis.stats import mad, rnd, rnd_sig, with_interval

FIELDS = ("power_w", "power_instant_w", "power_avg_1s_w")
LEVELS = (0.1, 0.5, 0.9)
SETTLED_FRACTION = 0.4  # the last 40 % of a segment gives its level
DRIFT_LIMIT = 0.05  # of the step: how much a "settled" level may still move
WINDOW_BAND = (0.1, 0.9)  # update values in this band of the step count as partial
AVERAGED_CLASS_MS = 500.0
INSTANT_RISE_LIMIT_MS = 300.0
SYMMETRY_TOLERANCE = 0.2
DELTA_P_MIN_W = 10.0  # TR122: mean(load) - mean(idle) > 10 W, or the test did not see the load


def analyze_step_response(trace: pd.DataFrame, edges: list[tuple[int, float]],
                          fields: tuple[str, ...] = FIELDS) -> dict:
    """Step response of each power field to the load ``edges`` [(t_ns, level), ...].

    The level before the first edge is taken as 0 (idle). Fields with no valid value
    (unsupported) are left out. Returns {field: figures}; figures keys: update_period_ms,
    update_period_se_ms, update_period_resolved, poll_ms, idle_w, load_w, delta_w, rise_ms,
    rise_sem_ms, delay_ms, delay_sem_ms, window_ms, window_sem_ms, sensor_class, edges_used,
    rising {n, rise_ms, delay_ms, window_ms}, falling {...}, n_steps, steps [per step],
    passed, criterion, quality (good | unresolved | no_data).
    """
    trace = tables.window(trace)
    out = {}
    for field in fields:
        t, v = tables.good(trace, field)
        if t.size == 0:
            continue
        out[field] = _field_response(t, v, _steps(edges, t))
    return out


def analyze(trace_df: pd.DataFrame, markers_df: pd.DataFrame | None, **kw) -> dict:
    """Step response with the edges taken from the ``load`` markers, within the
    ``instrument_response`` phase when the run marked one (else over the whole trace).

    Returns {"fields": {field: figures}, "quality", "n_edges", "source"} (per device when
    the trace holds several: {"devices": {uuid: ...}}).
    """

    def one(trace: pd.DataFrame, markers: pd.DataFrame | None) -> dict:
        edges = tables.load_edges(markers)
        windows = tables.phase_windows(markers, "instrument_response")
        source = "whole trace"
        if windows:
            end = int(trace["t_ns"].max()) if len(trace) else 0
            t0, t1 = max(windows, key=lambda w: (w[1] if w[1] is not None else end) - w[0])
            trace = tables.window(trace, t0, t1)
            edges = [(t, lv) for t, lv in edges if t0 <= t <= (t1 if t1 is not None else end)]
            source = "instrument_response phase"
        fields = analyze_step_response(trace, edges, **kw)
        qualities = [f["quality"] for f in fields.values()]
        quality = "good" if "good" in qualities else (qualities[0] if qualities else "no_data")
        return {"fields": fields, "quality": quality, "n_edges": len(edges), "source": source}

    return tables.per_device(trace_df, markers_df, one)


def _steps(edges: list[tuple[int, float]], t: np.ndarray) -> list[dict]:
    """Steps with their segments: [seg_start, edge) before and [edge, seg_end) after."""
    pts = []
    for t_ns, level in sorted((int(a), float(b)) for a, b in edges):
        if pts and pts[-1][1] == level:
            continue
        pts.append((t_ns, level))
    t_first, t_last = int(t[0]), int(t[-1])
    steps = []
    prev_level, prev_t = 0.0, t_first
    for i, (t_ns, level) in enumerate(pts):
        nxt = pts[i + 1][0] if i + 1 < len(pts) else t_last
        if level != prev_level and t_first < t_ns < t_last:
            steps.append({"t_ns": t_ns, "before": (prev_t, t_ns), "after": (t_ns, nxt), "rising": level > prev_level})
        prev_level, prev_t = level, max(t_ns, t_first)
    return steps


def _segment_level(t: np.ndarray, v: np.ndarray, seg: tuple[int, int]) -> tuple[float, float, float, int]:
    """(settled level, level of the middle part, noise sigma, settled-part start ns)."""
    a, b = seg
    span = b - a
    s0 = b - int(SETTLED_FRACTION * span)
    m0 = a + int(0.3 * span)
    i_m0, i_s0, i_b = np.searchsorted(t, [m0, s0, b], side="left")
    settled = v[i_s0:i_b]
    middle = v[i_m0:i_s0]
    if settled.size < 3:
        return math.nan, math.nan, math.nan, s0
    level = float(np.median(settled))
    mid = float(np.median(middle)) if middle.size >= 3 else math.nan
    return level, mid, mad(settled, scaled=True), s0


def _first_crossing(tt: np.ndarray, y: np.ndarray, level: float) -> float:
    above = np.flatnonzero(y >= level)
    if above.size == 0 or above[0] == 0:
        return math.nan
    j = int(above[0])
    y0, y1 = y[j - 1], y[j]
    return float(tt[j - 1] + (level - y0) / (y1 - y0) * (tt[j] - tt[j - 1]))


def _response_curve(tp: np.ndarray, yp: np.ndarray, u_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """Update points with a held-value point one period before each long gap's end."""
    gaps = np.flatnonzero(np.diff(tp) > 1.5 * u_ns)
    if gaps.size == 0:
        return tp, yp
    tt = np.insert(tp, gaps + 1, tp[gaps + 1] - u_ns)
    yy = np.insert(yp, gaps + 1, yp[gaps])
    return tt, yy


def _one_step(step: dict, t: np.ndarray, v: np.ndarray, tp: np.ndarray, vp: np.ndarray, u_ms: float,
              levels: dict) -> dict:
    for seg in (step["before"], step["after"]):
        if seg not in levels:  # each segment is one step's "after" and the next one's "before"
            levels[seg] = _segment_level(t, v, seg)
    before, before_mid, noise_b, _ = levels[step["before"]]
    after, after_mid, noise_a, settle_start = levels[step["after"]]
    edge = step["t_ns"]
    rec = {"t_ns": int(edge), "direction": "rising" if step["rising"] else "falling", "before_w": rnd(before, 3),
           "after_w": rnd(after, 3), "rise_ms": None, "delay_ms": None, "window_ms": None, "noise_w": None,
           "used": False, "reason": None}
    delta = after - before
    noise = np.nanmax([noise_a, noise_b, 0.0])
    if not (math.isfinite(delta) and abs(delta) > max(10 * noise, 1e-9)):
        rec["reason"] = "no step: levels not distinct from noise or not enough samples"
        return rec
    u_ns = u_ms * 1e6
    j0 = max(int(np.searchsorted(tp, edge, side="right")) - 1, 0)
    j1 = int(np.searchsorted(tp, settle_start, side="left"))
    y = np.clip((vp[j0:j1] - before) / delta, 0.0, 1.0)
    tt, yy = _response_curve(tp[j0:j1], y, u_ns)
    crossings = [_first_crossing(tt, yy, lv) for lv in LEVELS]
    lo, hi = WINDOW_BAND
    n_partial = int(((tp[j0:j1] > edge) & (y > lo) & (y < hi)).sum())
    drift = max(abs(before_mid - before), abs(after_mid - after)) / abs(delta)
    if not all(math.isfinite(c) for c in crossings) or not math.isfinite(_first_update_at_or_above(tp[j0:j1], y, 0.5)):
        rec["reason"] = "the response did not complete before the settled part of the segment"
        return rec
    rec.update(rise_ms=(crossings[2] - crossings[0]) / 1e6,
               delay_ms=(_first_update_at_or_above(tp[j0:j1], y, 0.5) - edge) / 1e6,
               window_ms=u_ms * n_partial / (hi - lo), noise_w=noise,
               delay_first_read_ms=_first_read_at_or_above(t, (v - before) / delta, edge, 0.5))
    k0 = int(np.searchsorted(tp, edge - 2 * u_ns, side="left"))
    yw = (vp[k0:j1] - before) / delta
    # Only the points around the transition bound the window: two settled ones either side.
    first = np.flatnonzero(yw > lo)
    last = np.flatnonzero(yw >= hi)
    a = max(int(first[0]) - 2, 0) if first.size else 0
    b = int(last[last >= (first[0] if first.size else 0)][0]) + 3 if last.size else yw.size
    t_pts = (tp[k0:j1][a:b] - edge) / 1e6
    max_window = (settle_start - edge) / 1e6
    half = np.flatnonzero(yw[a:b] >= 0.5)
    # The step's onset lies before the first reading past half the step.
    rec["window_points"] = {
        "t_ms": t_pts, "y": yw[a:b], "sigma": noise / abs(delta),
        "onset_hi_ms": float(t_pts[half[0]]) if half.size else float(t_pts[-1]), "max_window_ms": max_window}
    if math.isfinite(drift) and drift > DRIFT_LIMIT:
        rec["reason"] = f"level not settled: it moves {100 * drift:.1f} % of the step within the segment"
        return rec
    rec["used"] = True
    return rec


def _first_update_at_or_above(tu: np.ndarray, y: np.ndarray, level: float) -> float:
    """Instant (ns) of the first update point at or above ``level``; NaN when none is, or when
    the first point (the update in force at the edge) already is: the crossing then lies
    before the edge's last update and is not measured."""
    above = np.flatnonzero(y >= level)
    if above.size == 0 or above[0] == 0:
        return math.nan
    return float(tu[above[0]])


def _first_read_at_or_above(t: np.ndarray, y: np.ndarray, edge: int, level: float) -> float:
    """ms from the edge to the first read at or above ``level`` of the step (SC'24's reading
    of a delay: a read time, not an interpolated update instant)."""
    i0 = int(np.searchsorted(t, edge, side="right"))
    above = np.flatnonzero(y[i0:] >= level)
    return float((t[i0 + above[0]] - edge) / 1e6) if above.size else math.nan


def _window(used: list[dict], u_ms: float) -> dict:
    """The window posterior over the used steps (:func:`sensor.window_posterior`).

    Rising and falling steps are combined when their intervals overlap; otherwise the
    direction with the shorter window is the figure: a board's own power ramp (clocks and
    voltage coming up) lengthens one direction's response, never shortens it.
    """
    def post(recs):
        pts = [r["window_points"] for r in recs]
        if not pts:
            return window_posterior([], u_ms, 0.0)
        return window_posterior(pts, u_ms, min(p["max_window_ms"] for p in pts))

    rising = post([r for r in used if r["direction"] == "rising"])
    falling = post([r for r in used if r["direction"] == "falling"])
    if rising["window_ms"] is not None and falling["window_ms"] is not None:
        overlap = rising["ci_low_ms"] <= falling["ci_high_ms"] and falling["ci_low_ms"] <= rising["ci_high_ms"]
        if overlap:
            return post(used) | {"edges": "both"}
        return (rising | {"edges": "rising"}) if rising["window_ms"] < falling["window_ms"] \
            else (falling | {"edges": "falling"})
    if rising["window_ms"] is not None:
        return rising | {"edges": "rising"}
    return falling | {"edges": "falling" if falling["window_ms"] is not None else "none"}


def _summary(steps: list[dict]) -> dict:
    out = {"n": len(steps)}
    for key in ("rise_ms", "delay_ms", "window_ms", "delay_first_read_ms"):
        vals = np.array([s[key] for s in steps], dtype=np.float64)
        out[key] = float(vals.mean()) if vals.size else math.nan
        sem = float(vals.std(ddof=1) / math.sqrt(vals.size)) if vals.size > 1 else math.nan
        out[key.replace("_ms", "_sem_ms")] = sem
    return out


def _agree(a: dict, b: dict, u_ms: float) -> bool:
    """Rising and falling rise times agree: within 20 % or within 3 standard errors."""
    diff = abs(a["rise_ms"] - b["rise_ms"])
    if diff <= SYMMETRY_TOLERANCE * max(a["rise_ms"], b["rise_ms"], u_ms):
        return True
    sems = [a["rise_sem_ms"], b["rise_sem_ms"]]
    return all(math.isfinite(x) for x in sems) and diff <= 3 * math.hypot(*sems)


def _field_response(t: np.ndarray, v: np.ndarray, steps: list[dict]) -> dict:
    upd = estimate_update_period(t, v)
    u_ms = effective_update_period_ms(upd) or 0.0
    tp, vp = update_points(t, v)
    levels: dict = {}
    recs = [_one_step(s, t, v, tp, vp, u_ms, levels) for s in steps] if u_ms > 0 else []
    used = [r for r in recs if r["used"]]
    rising = _summary([r for r in used if r["direction"] == "rising"])
    falling = _summary([r for r in used if r["direction"] == "falling"])
    if rising["n"] and falling["n"]:
        symmetric = _agree(rising, falling, u_ms)
        chosen = used if symmetric else [r for r in used if r["direction"] == "rising"]
        edges_used = "both" if symmetric else "rising"
    else:
        chosen = used
        edges_used = "rising" if rising["n"] else ("falling" if falling["n"] else "none")
    main = _summary(chosen)
    idle = [r["before_w"] if r["direction"] == "rising" else r["after_w"] for r in chosen]
    load = [r["after_w"] if r["direction"] == "rising" else r["before_w"] for r in chosen]
    idle_w = float(np.median(idle)) if idle else math.nan
    load_w = float(np.median(load)) if load else math.nan
    win = _window(chosen_for_window(used), u_ms) if used else window_posterior([], u_ms, 0.0) | {"edges": "none"}
    window_ms = win["window_ms"] if win["window_ms"] is not None else math.nan
    sensor_class = None
    if math.isfinite(window_ms):
        sensor_class = "averaged" if window_ms >= AVERAGED_CLASS_MS else "instant"
    delta_w = load_w - idle_w
    passed, criterion = _criterion(sensor_class, main["rise_ms"], window_ms, u_ms, delta_w)
    if not used:
        quality = "no_data"
    elif not upd["resolved"]:
        quality = "unresolved"
    else:
        quality = "good"
    res = upd["update_period_se_ms"]
    poll = upd["poll_ms"]
    timing = poll / 2 if poll else None  # each crossing is placed within half a poll interval
    no_step = None if used else "no usable step"
    period = with_interval("update_period", "ms", upd["update_period_ms"], res if res is not None else None,
                           resolved=bool(upd["resolved"]),
                           reason="the poller is too slow to see the sensor's updates separately, or too few changes")
    return {
        **period,
        "update_period_ms": rnd_sig(upd["update_period_ms"], max(res or 0, 0.1)) if upd["update_period_ms"] else None,
        "poll_ms": rnd(poll, 2),
        "idle_w": rnd(idle_w, 2),
        "load_w": rnd(load_w, 2),
        "delta_w": rnd(delta_w, 2),
        "delta_p_ok": bool(math.isfinite(delta_w) and abs(delta_w) > DELTA_P_MIN_W),
        **_timed("rise", main["rise_ms"], main["rise_sem_ms"], timing, no_step, n=main["n"]),
        "rise_sem_ms": rnd(main["rise_sem_ms"], 1),
        # one step's delay is one draw of the update phase: uniform over one update period
        **_timed("delay", main["delay_ms"], main["delay_sem_ms"], max(timing or 0.0, u_ms / 2) or None, no_step,
                 signed=True, n=main["n"]),
        "delay_sem_ms": rnd(main["delay_sem_ms"], 1),
        **_timed("delay_first_read", main["delay_first_read_ms"], main["delay_first_read_sem_ms"], timing, no_step,
                 signed=True, n=main["n"]),
        **with_interval("window", "ms", win["window_ms"], win["se_ms"], resolved=win["resolved"],
                        reason="the steps' update values cannot bound the window away from 0 (or from the segment "
                               "length)" if used else "no usable step"),
        "window_ci_low_ms": rnd(win["ci_low_ms"], 1),
        "window_ci_high_ms": rnd(win["ci_high_ms"], 1),
        "window_edges": win["edges"],
        "window_count_ms": rnd(main["window_ms"], 1),
        "timing_resolution_ms": rnd(timing, 1),
        "sensor_class": sensor_class,
        "edges_used": edges_used,
        "rising": _brief(rising),
        "falling": _brief(falling),
        "n_steps": len(chosen),
        "n_steps_seen": len(recs),
        "steps": [_step_json(r) for r in recs],
        "passed": passed,
        "criterion": criterion,
        "quality": quality,
    }


def chosen_for_window(used: list[dict]) -> list[dict]:
    """Every used step: the window takes both directions and picks between them itself."""
    return used


def _timed(name: str, value: float, sem: float, resolution: float | None, no_step: str | None,
           signed: bool = False, n: int = 0) -> dict:
    """A timing figure (ms) with its standard error (the steps' spread, at least the timing
    resolution / sqrt 3), 95 % interval and resolved flag (a delay may be near 0 and still
    measured; a rise is resolved when its interval excludes 0)."""
    se = sem if math.isfinite(sem) else math.nan
    spread = math.isfinite(se)
    if resolution and (not math.isfinite(se) or se < resolution / math.sqrt(3)):
        se, spread = resolution / math.sqrt(3), False
    finite = math.isfinite(value)
    resolved = finite if signed else None
    # a spread over n steps is itself uncertain: Student's t with n - 1 degrees of freedom
    out = with_interval(name, "ms", value if finite else None, se if math.isfinite(se) else None, resolved=resolved,
                        reason=no_step or f"{name}'s interval reaches 0", dof=n - 1 if spread and n > 1 else None)
    out[f"{name}_ms"] = _ms(value, sem, resolution)
    return out


def _ms(value: float, sem: float, resolution: float | None):
    """Milliseconds rounded to their uncertainty (the spread, or the timing resolution)."""
    sig = sem if math.isfinite(sem) else math.nan
    if resolution and (not math.isfinite(sig) or sig < resolution / math.sqrt(3)):
        sig = resolution / math.sqrt(3)
    return rnd_sig(value, sig if math.isfinite(sig) else None, max_digits=1)


def _brief(s: dict) -> dict:
    return {"n": s["n"], "rise_ms": rnd(s["rise_ms"], 1), "delay_ms": rnd(s["delay_ms"], 1),
            "window_ms": rnd(s["window_ms"], 1)}


def _step_json(r: dict) -> dict:
    return {k: (rnd(v, 1) if k in ("rise_ms", "delay_ms", "window_ms", "delay_first_read_ms")
                else (rnd(v, 3) if k == "noise_w" else v))
            for k, v in r.items() if k != "window_points"}


def _criterion(sensor_class: str | None, rise_ms: float, window_ms: float, u_ms: float,
               delta_w: float = math.inf) -> tuple[bool, str]:
    if sensor_class is None or not math.isfinite(rise_ms):
        return False, "no usable step: the response could not be measured"
    if not (math.isfinite(delta_w) and abs(delta_w) > DELTA_P_MIN_W):
        return False, (f"TR122's delta-P rule: the step must move the field by more than {DELTA_P_MIN_W:.0f} W "
                       f"(it moved {delta_w:.1f} W)")
    if sensor_class == "instant":
        ok = rise_ms <= INSTANT_RISE_LIMIT_MS
        return ok, (f"instant-class field (window {window_ms:.0f} ms < {AVERAGED_CLASS_MS:.0f} ms) must rise "
                    f"within {INSTANT_RISE_LIMIT_MS:.0f} ms to resolve sub-second phases: "
                    f"rise {rise_ms:.0f} ms {'<=' if ok else '>'} {INSTANT_RISE_LIMIT_MS:.0f} ms")
    bound = 1.25 * 0.8 * window_ms + u_ms
    ok = rise_ms <= bound
    return ok, (f"averaged-class field (window {window_ms:.0f} ms) must rise like an ideal boxcar of its "
                f"window: rise {rise_ms:.0f} ms {'<=' if ok else '>'} 1.25 x 0.8 x window + update period "
                f"= {bound:.0f} ms; it smears events shorter than a few windows")
