"""RLE and its collapse detector, recomputed correctly over any trace.

RLE is the efficiency metric of the public repository Nemeca99/RLE
(``lab/monitoring/rle_core.py``, class ``RLECore``). Its definition, per sample::

    RLE_raw   = (util * stability) / (A_load * (1 + 1 / T_sustain))
    stability = 1 / (1 + stdev(util over the last 5 samples))        (population stdev)
    A_load    = power / rated_power
    T_sustain = (T_limit - T) / max(dT/dt, epsilon), clipped to [1, 600] s
    RLE       = mean of the last 5 RLE_raw                           ("smoothed")

and its canonical collapse detector, per sample after a warm-up:

    peak      = max(RLE, 0.998 * peak)                   (decaying rolling peak)
    gate      = (util > 60 % or A_load > 0.75) and temperature rising
    counter   = counter + 1 if gate and RLE < 0.65 * peak, else 0
    collapse  = counter >= 7 and evidence
    evidence  = T_sustain < 60 s or T > T_limit - 5 C or A_load > 0.95

What this module fixes (the unit and sampling mix-ups of the source code):

* **util is a fraction everywhere.** The source divides util by 100 for the numerator but
  takes the stdev of the *percent* history for ``stability``: a 5-point wobble in util
  gives stability 1/(1+5) = 0.17 instead of 1/(1+0.05) = 0.95. Here the trace's
  ``util_gpu`` (percent, see agents.trace_schema) is converted to a fraction once, and the
  60 % gate is compared against the fraction 0.60.
* **dT/dt is a least-squares slope** over the last ``slope_window_s`` seconds (10 s), not
  the difference of two samples: NVML reports whole degrees, so a two-sample difference is
  0 or 1 C per sample and both T_sustain and the "temperature rising" gate flicker. The
  source also assumes dt = 1 s whatever the sampling; here slopes are in C per second of
  the host monotonic clock.
* **rated power is the device's power limit** (``power_limit_w``), not the source's
  default constant of 100 W, so A_load is the fraction of the board's power budget.
* **T_limit is the device's slowdown threshold** (``slowdown_temp_c``), not the
  source's default constant of 85 C.
* **The sample clock is explicit.** The detector counts samples and decays its peak per
  sample, which in the source means a ~1 Hz logger. A poller can read every few
  milliseconds, where 7 samples would be a few tens of ms. So the trace is first reduced to
  ``period_s`` bins (1 s): util, power and temperature are bin means of the good reads,
  and "7 samples", "0.998 per sample", the 5-sample stdev and the 5-sample smoothing mean
  7 s, 0.998 per second, 5 s and 5 s, as the source intended at 1 Hz.

Inferred details (not stated by the definition; taken from the source or chosen here):

* The warm-up is 60 s of trace time from the first bin, as the issue states the canonical
  detector; the version of ``rle_core.py`` read for this module only waits for
  ``max(smooth_n, 5)`` samples. Both conditions are applied. During warm-up the peak and
  the counter are held at 0, as in the source.
* "Temperature rising" in the source is ``T[-1] - T[-2] > 0.05`` per sample; at 1 Hz this
  is 0.05 C/s, applied here to the least-squares slope.
* The source floors dT/dt at 1e-3 C/s, so a cooling or steady die has T_sustain = 600 s
  (the clip); A_load is floored at 1e-6 in the denominator. Both kept.
* A collapse *event* is a rising edge of the per-sample collapse flag (the source returns
  the flag on every sample while the condition lasts; a run of flagged samples is one
  collapse).
* Bins without any reading (a gap in the trace) give NaN components, are never gated and
  reset the hysteresis counter; the peak keeps decaying through them.

The collapse rate is ``collapses per hour of gated time``: gated time is the time after
warm-up during which the gate held (under load *and* temperature rising), the only time in
which the hysteresis counter can advance. The rate per hour under load (gate without the
heating condition) is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from experiments.analysis import tables
from experiments.analysis.stats import rnd

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class RLEParams:
    """Parameters of the RLE definition and its collapse detector (source defaults)."""

    period_s: float = 1.0  # bin width: the source's 1 Hz sample
    stability_window: int = 5  # samples in the util stdev
    smooth_n: int = 5  # samples in the RLE smoothing mean
    slope_window_s: float = 10.0  # least-squares window of dT/dt (trailing)
    dtdt_epsilon_c_per_s: float = 1e-3
    t_sustain_min_s: float = 1.0
    t_sustain_max_s: float = 600.0
    warmup_s: float = 60.0
    peak_decay: float = 0.998  # per sample
    drop_frac: float = 0.65
    hysteresis_samples: int = 7
    util_gate: float = 0.60  # fraction
    a_load_gate: float = 0.75
    heating_c_per_s: float = 0.05
    evidence_t_sustain_s: float = 60.0
    evidence_margin_c: float = 5.0
    evidence_a_load: float = 0.95

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


DEFAULT_PARAMS = RLEParams()


# -- components -----------------------------------------------------------------------------
def _trailing(values: np.ndarray, n: int, stat: str) -> np.ndarray:
    """``stat`` ("mean" or "std", population) over the finite values among the trailing n
    ending at each index (NaN if none); all windows at once, as np.mean / np.std compute it."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return np.full(0, np.nan)
    win = np.lib.stride_tricks.sliding_window_view(np.concatenate((np.full(n - 1, np.nan), values)), n)
    ok = np.isfinite(win)
    count = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, win, 0.0).sum(axis=1) / count
        if stat == "std":
            dev = np.where(ok, win - mean[:, None], 0.0)
            mean = np.sqrt((dev * dev).sum(axis=1) / count)
    return np.where(count > 0, mean, np.nan)


def trailing_slope(t_s: np.ndarray, y: np.ndarray, window_s: float, min_points: int = 2) -> np.ndarray:
    """Least-squares slope of y over (t - window_s, t] at each t (NaN with < min_points).

    ``t_s`` must be increasing. Vectorised with cumulative sums over the finite points.
    """
    t_s = np.asarray(t_s, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(t_s) & np.isfinite(y)
    tc = np.where(ok, t_s - (t_s[ok][0] if ok.any() else 0.0), 0.0)
    yc = np.where(ok, y - (np.nanmean(y[ok]) if ok.any() else 0.0), 0.0)
    w = ok.astype(np.float64)

    def csum(a):
        return np.concatenate(([0.0], np.cumsum(a)))

    c1, ct, cy, ctt, cty = csum(w), csum(tc * w), csum(yc * w), csum(tc * tc * w), csum(tc * yc * w)
    # A tiny tolerance so that a window of exactly window_s keeps its oldest edge out.
    lo = np.searchsorted(t_s, t_s - window_s + 1e-9, side="left")
    hi = np.arange(t_s.size) + 1
    n = c1[hi] - c1[lo]
    st, sy = ct[hi] - ct[lo], cy[hi] - cy[lo]
    stt, sty = ctt[hi] - ctt[lo], cty[hi] - cty[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        sxx = stt - st * st / n
        sxy = sty - st * sy / n
        slope = sxy / sxx
    bad = (n < min_points) | ~(sxx > 1e-12)
    return np.where(bad, np.nan, slope)


def rle_components(
    t_s,
    util_frac,
    temp_c,
    power_w,
    power_limit_w: float,
    slowdown_temp_c: float,
    params: RLEParams = DEFAULT_PARAMS,
) -> dict[str, np.ndarray]:
    """RLE and its components for evenly spaced samples (one per ``params.period_s``).

    ``util_frac`` is utilisation as a fraction 0..1 (not percent). ``power_limit_w`` is the
    rated power of A_load, ``slowdown_temp_c`` the T_limit of T_sustain.
    Returns arrays ``stability, a_load, dtdt_c_per_s, t_sustain_s, rle_raw, rle``.
    """
    if not (power_limit_w and power_limit_w > 0):
        raise ValueError(f"power_limit_w must be > 0 (the device's power limit), got {power_limit_w}")
    if slowdown_temp_c is None or not math.isfinite(float(slowdown_temp_c)):
        raise ValueError(f"slowdown_temp_c must be a temperature (the device's slowdown threshold), got {slowdown_temp_c}")
    t_s = np.asarray(t_s, dtype=np.float64)
    util = np.asarray(util_frac, dtype=np.float64)
    temp = np.asarray(temp_c, dtype=np.float64)
    power = np.asarray(power_w, dtype=np.float64)
    if np.nanmax(util, initial=0.0) > 1.0 + 1e-9:
        raise ValueError("util_frac must be a fraction 0..1; convert util_gpu percent with / 100")

    stdev = _trailing(util, params.stability_window, "std")
    stability = 1.0 / (1.0 + stdev)
    stability = np.where(np.isfinite(util), stability, np.nan)
    a_load = power / float(power_limit_w)
    dtdt = trailing_slope(t_s, temp, params.slope_window_s)
    # Too few points for a slope reads as "not heating", as the source does with < 2 samples.
    rate = np.maximum(np.where(np.isfinite(dtdt), dtdt, 0.0), params.dtdt_epsilon_c_per_s)
    t_sustain = np.clip((float(slowdown_temp_c) - temp) / rate, params.t_sustain_min_s, params.t_sustain_max_s)
    denom = np.maximum(a_load, 1e-6) * (1.0 + 1.0 / t_sustain)
    rle_raw = util * stability / denom
    rle = _trailing(rle_raw, params.smooth_n, "mean")
    rle = np.where(np.isfinite(rle_raw), rle, np.nan)
    return {"stability": stability, "a_load": a_load, "dtdt_c_per_s": dtdt, "t_sustain_s": t_sustain,
            "rle_raw": rle_raw, "rle": rle}


# -- collapse detector ----------------------------------------------------------------------
def detect_collapses(
    t_s,
    rle,
    util_frac,
    a_load,
    temp_c,
    dtdt_c_per_s,
    t_sustain_s,
    slowdown_temp_c: float,
    params: RLEParams = DEFAULT_PARAMS,
) -> dict[str, np.ndarray]:
    """The canonical collapse detector over a series (one value per sample).

    Returns arrays ``warm, peak, under_load, heating, gated, drop, below_count, evidence,
    collapse`` (per-sample flag) and ``collapse_start`` (rising edges: one per collapse).
    """
    t_s = np.asarray(t_s, dtype=np.float64)
    rle = np.asarray(rle, dtype=np.float64)
    util = np.asarray(util_frac, dtype=np.float64)
    a_load = np.asarray(a_load, dtype=np.float64)
    temp = np.asarray(temp_c, dtype=np.float64)
    dtdt = np.asarray(dtdt_c_per_s, dtype=np.float64)
    t_sus = np.asarray(t_sustain_s, dtype=np.float64)
    n = rle.size
    valid = np.isfinite(rle)
    t0 = t_s[0] if n else 0.0
    warm = ((t_s - t0) >= params.warmup_s) & (np.cumsum(valid) >= max(params.smooth_n, 5))
    with np.errstate(invalid="ignore"):
        under_load = (util > params.util_gate) | (a_load > params.a_load_gate)
        heating = dtdt > params.heating_c_per_s
        evidence = (t_sus < params.evidence_t_sustain_s) | (temp > slowdown_temp_c - params.evidence_margin_c) | (
            a_load > params.evidence_a_load)
    gated = warm & valid & under_load & heating
    peak = np.zeros(n)
    drop = np.zeros(n, dtype=bool)
    count = np.zeros(n, dtype=np.int64)
    p, c = 0.0, 0
    for i in range(n):
        if not warm[i]:
            p, c = 0.0, 0
        elif not valid[i]:
            p, c = p * params.peak_decay, 0
        else:
            p = max(rle[i], p * params.peak_decay)
            drop[i] = rle[i] < params.drop_frac * max(p, 1e-6)
            c = c + 1 if (gated[i] and drop[i]) else 0
        peak[i], count[i] = p, c
    collapse = (count >= params.hysteresis_samples) & evidence
    start = collapse & ~np.concatenate(([False], collapse[:-1]))
    return {"warm": warm, "peak": peak, "under_load": under_load & warm & valid, "heating": heating & warm & valid,
            "gated": gated, "drop": drop, "below_count": count, "evidence": evidence, "collapse": collapse,
            "collapse_start": start}


# -- over a trace ---------------------------------------------------------------------------
def bin_trace(trace: pd.DataFrame, period_s: float = 1.0) -> pd.DataFrame:
    """Reduce a one-device trace to ``period_s`` bins from its first row.

    Columns: ``t_ns`` (bin start), ``t_end_ns``, ``n_reads``, ``util_frac`` (util_gpu / 100),
    ``power_w`` (good reads only), ``temp_c``: means over the bin, NaN where it had none.
    """
    cols = ["t_ns", "t_end_ns", "n_reads", "util_frac", "power_w", "temp_c"]
    if trace is None or len(trace) == 0:
        return pd.DataFrame(columns=cols)
    t = trace["t_ns"].to_numpy(dtype=np.int64)
    period_ns = int(round(period_s * NS_PER_S))
    t0 = int(t.min())
    k = (t - t0) // period_ns
    nbins = int(k.max()) + 1
    ok = tables.read_ok(trace)
    power = np.where(ok, tables.column(trace, "power_w"), np.nan)
    util = tables.column(trace, "util_gpu") / 100.0
    temp = tables.column(trace, "temp_c")

    def bin_mean(v):
        m = np.isfinite(v)
        s = np.bincount(k[m], weights=v[m], minlength=nbins)
        c = np.bincount(k[m], minlength=nbins)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan)

    starts = t0 + np.arange(nbins, dtype=np.int64) * period_ns
    return pd.DataFrame({
        "t_ns": starts, "t_end_ns": starts + period_ns, "n_reads": np.bincount(k, minlength=nbins),
        "util_frac": np.clip(bin_mean(util), 0.0, 1.0), "power_w": bin_mean(power), "temp_c": bin_mean(temp),
    })


def rle_series(trace: pd.DataFrame, power_limit_w: float, slowdown_temp_c: float,
               params: RLEParams = DEFAULT_PARAMS) -> pd.DataFrame:
    """RLE, its components and the collapse detector over a one-device trace.

    One row per ``params.period_s`` bin: the :func:`bin_trace` columns, then
    ``stability, a_load, dtdt_c_per_s, t_sustain_s, rle_raw, rle, warm, peak, under_load,
    heating, gated, drop, below_count, evidence, collapse, collapse_start``.
    Give the whole trace (not only the window of interest) so that the warm-up is spent
    before it.
    """
    bins = bin_trace(trace, params.period_s)
    if len(bins) == 0:
        return bins
    t_s = (bins["t_ns"].to_numpy(dtype=np.int64) - int(bins["t_ns"].iloc[0])) / NS_PER_S
    comp = rle_components(t_s, bins["util_frac"].to_numpy(float), bins["temp_c"].to_numpy(float),
                          bins["power_w"].to_numpy(float), power_limit_w, slowdown_temp_c, params)
    det = detect_collapses(t_s, comp["rle"], bins["util_frac"].to_numpy(float), comp["a_load"],
                           bins["temp_c"].to_numpy(float), comp["dtdt_c_per_s"], comp["t_sustain_s"],
                           slowdown_temp_c, params)
    out = bins.copy()
    for name, values in {**comp, **det}.items():
        out[name] = values
    return out


def collapse_events(series: pd.DataFrame) -> list[dict]:
    """One dict per collapse of an :func:`rle_series`: when it started and ended (ns, host
    monotonic), its duration and the state at its start (rle, peak, temp_c, a_load,
    t_sustain_s, util_frac)."""
    if series is None or len(series) == 0 or "collapse" not in series:
        return []
    flag = series["collapse"].to_numpy(dtype=bool)
    t0 = series["t_ns"].to_numpy(dtype=np.int64)
    t1 = series["t_end_ns"].to_numpy(dtype=np.int64)
    events = []
    i = 0
    while i < flag.size:
        if not flag[i]:
            i += 1
            continue
        j = i
        while j + 1 < flag.size and flag[j + 1]:
            j += 1
        row = series.iloc[i]
        events.append({
            "t_start_ns": int(t0[i]), "t_end_ns": int(t1[j]), "duration_s": rnd((t1[j] - t0[i]) / NS_PER_S, 3),
            "rle": rnd(row["rle"], 4), "peak": rnd(row["peak"], 4), "temp_c": rnd(row["temp_c"], 2),
            "a_load": rnd(row["a_load"], 4), "t_sustain_s": rnd(row["t_sustain_s"], 1),
            "util_frac": rnd(row["util_frac"], 3),
        })
        i = j + 1
    return events


def collapse_rate(series: pd.DataFrame, params: RLEParams = DEFAULT_PARAMS) -> dict:
    """Collapses per hour of gated time (and per hour under load) of an :func:`rle_series`.

    Returns ``{"n_collapses", "gated_h", "under_load_h", "observed_h",
    "collapse_rate_per_gated_h", "collapse_rate_per_under_load_h", "basis"}``; a rate is None
    when its denominator is zero.
    """
    basis = ("collapses per hour of gated time: post-warm-up time with util > 60 % or A_load > 0.75 "
             "and temperature rising (the only time the detector's counter can advance)")
    if series is None or len(series) == 0:
        return {"n_collapses": 0, "gated_h": 0.0, "under_load_h": 0.0, "observed_h": 0.0,
                "collapse_rate_per_gated_h": None, "collapse_rate_per_under_load_h": None, "basis": basis}
    hours = params.period_s / 3600.0
    n = int(series["collapse_start"].sum())
    gated_h = float(series["gated"].sum()) * hours
    load_h = float(series["under_load"].sum()) * hours
    return {
        "n_collapses": n,
        "gated_h": rnd(gated_h, 6),
        "under_load_h": rnd(load_h, 6),
        "observed_h": rnd(len(series) * hours, 6),
        "collapse_rate_per_gated_h": rnd(n / gated_h, 4) if gated_h > 0 else None,
        "collapse_rate_per_under_load_h": rnd(n / load_h, 4) if load_h > 0 else None,
        "basis": basis,
    }


def analyze_rle(trace: pd.DataFrame, power_limit_w: float, slowdown_temp_c: float,
                params: RLEParams = DEFAULT_PARAMS) -> dict:
    """RLE summary of one device's trace: distribution, collapse events and rate (JSON-safe).

    Returns ``{"n_bins", "rle_median", "rle_p05", "rle_p95", "collapse_rate" (per gated hour,
    or None), "rate" (the :func:`collapse_rate` dict), "events", "params", "quality"}``.
    """
    series = rle_series(trace, power_limit_w, slowdown_temp_c, params)
    rate = collapse_rate(series, params)
    rle = series["rle"].to_numpy(float) if len(series) else np.array([])
    rle = rle[np.isfinite(rle)]
    n = int(len(series))
    missing = int(series["rle"].isna().sum()) if n else 0
    return {
        "n_bins": n,
        "rle_median": rnd(np.median(rle), 4) if rle.size else None,
        "rle_p05": rnd(np.percentile(rle, 5), 4) if rle.size else None,
        "rle_p95": rnd(np.percentile(rle, 95), 4) if rle.size else None,
        "collapse_rate": rate["collapse_rate_per_gated_h"],
        "rate": rate,
        "events": collapse_events(series),
        "params": {**params.to_dict(), "power_limit_w": float(power_limit_w), "slowdown_temp_c": float(slowdown_temp_c)},
        "quality": {
            "quality": "ok" if n and missing / n < 0.05 and rate["observed_h"] * 3600 > params.warmup_s else "degraded",
            "empty_bins": missing,
            "warmup_covers_trace": bool(n == 0 or rate["observed_h"] * 3600 <= params.warmup_s),
        },
    }


def collapse_rates_per_device(trace: pd.DataFrame, limits: dict[str, dict],
                              params: RLEParams = DEFAULT_PARAMS) -> dict[str, dict]:
    """:func:`collapse_rate` for each device of a multi-device trace.

    ``limits`` maps device_uuid to ``{"power_limit_w", "slowdown_temp_c"}`` (the device's
    own limits; devices missing from it are skipped).
    """
    out = {}
    if trace is None or len(trace) == 0:
        return out
    groups = trace.groupby("device_uuid", sort=True) if "device_uuid" in trace else [(None, trace)]
    for uuid, rows in groups:
        lim = limits.get(uuid) if uuid is not None else next(iter(limits.values()), None)
        if not lim:
            continue
        series = rle_series(rows, lim["power_limit_w"], lim["slowdown_temp_c"], params)
        out[str(uuid)] = collapse_rate(series, params)
    return out
