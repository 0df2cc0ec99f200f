"""The training_coupling experiment as typed tables: training_steps, rle_series, training_coupling.

From one run x device's ``training_coupling.json`` (the report of experiments/reports.py: the
runner's ``steps`` and the analysis' ``figures``) and its trace:

* ``training_coupling``: the report's verdict and statistics as it wrote them, and the
  workload's signature over the training window (5th and 95th percentiles of power,
  temperature and utilization of the good reads between the first step's start and the last
  step's end);
* ``training_steps``: the runner's columns per step and the analysed ones (aligned, power,
  temperature and its slope, RLE, collapse, spike), from the same functions of
  experiments/analysis/coupling.py and rle.py the report used, repeated over the trace with
  the report's defaults;
* ``rle_series``: RLE and its collapse detector in the analysis' 1 s bins of the whole trace.

RLE needs the device's power limit and slowdown temperature. The report records the ones it
used (``rle_power_limit_w``, ``rle_slowdown_temp_c``); a report from before it did falls
back to the fingerprint's power limit and, only when the report says it assumed one, the
fallback slowdown temperature. Otherwise RLE is left null rather than guessed. Without a
trace every analysed column is null. As in figures.py, a value outside its physical range
becomes null (the raw JSON in experiment_results keeps the original).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from .figures import quality_of, typed_row

EXPERIMENT = "training_coupling"
TABLES = ("training_steps", "rle_series", "training_coupling")
VERDICTS = ("coupled", "not coupled", "insufficient data")
NS_PER_S = 1_000_000_000
# The trace columns the analysis reads.
ANALYSIS_COLUMNS = ("t_ns", "power_w", "power_instant_w", "temp_c", "util_gpu", "read_ok")

SUMMARY = {  # column -> (kind, low, high[, alternative keys]) read from the report's figures
    "verdict_reason": ("str",), "p_value": ("float", 0, 1), "best_lag": ("int", None, None),
    "correlation": ("float", -1, 1), "target": ("str",), "steps": ("int", 0, None), "n_aligned": ("int", 0, None),
    "aligned_fraction": ("float", 0, 1), "n_collapses": ("int", 0, None),
    "collapse_rate_per_gated_h": ("float", 0, None, ("collapse_rate",)),
    "energy_per_step_median_j": ("float", 0, None, ("energy_per_step_j_median",)),
}
RATE = {"collapse_rate_per_under_load_h": ("float", 0, None), "gated_h": ("float", 0, None)}
QUALITY = {"alpha": ("float", 0, 1), "power_field": ("str",)}


def training_tables(experiments: dict[str, dict], trace: pa.Table, simulated: bool,
                    fingerprint_fields: dict) -> dict[str, pa.Table]:
    """The three tables' rows (without run_id and device_uid) when ``experiments`` holds a
    training_coupling result; {} otherwise. ``trace`` is the run x device's validated trace."""
    doc = experiments.get(EXPERIMENT)
    if not isinstance(doc, dict):
        return {}
    figures = doc.get("figures") if isinstance(doc.get("figures"), dict) else {}
    steps = raw_steps(doc.get("steps"))
    frame = _trace_frame(trace)
    limits = rle_limits(doc, fingerprint_fields)
    per, series = analyse_steps(frame, steps, limits)
    used = limits if series is not None else None
    out = {EXPERIMENT: pa.Table.from_pylist([summary_row(doc, figures, simulated, frame, steps, used)])}
    if len(steps):
        out["training_steps"] = steps_table(steps, per)
    if series is not None and len(series):
        out["rle_series"] = series_table(series)
    return out


def rle_limits(doc: dict, fingerprint_fields: dict) -> tuple[float, float] | None:
    """(power_limit_w, slowdown_temp_c) the report computed RLE with, or None when unknown."""
    from experiments.reports import FALLBACK_SLOWDOWN_C

    figures = doc.get("figures") if isinstance(doc.get("figures"), dict) else {}
    recorded = typed_row(figures, {"rle_power_limit_w": ("float", 1e-9, None),
                                   "rle_slowdown_temp_c": ("float", -40, 200)})
    if None not in recorded.values():
        return recorded["rle_power_limit_w"], recorded["rle_slowdown_temp_c"]
    limit = typed_row(fingerprint_fields, {"power_limit_w": ("float", 1e-9, None)})["power_limit_w"]
    checks = doc.get("checks") if isinstance(doc.get("checks"), dict) else {}
    if limit is not None and checks.get("slowdown_temp_c_assumed") is True:
        return limit, FALLBACK_SLOWDOWN_C
    return None


def raw_steps(steps) -> pd.DataFrame:
    """The runner's steps with times, one row per step number (the last wins), in time order.

    Steps without both times, or ending before they start, cannot be placed on the trace
    and are left out; a missing step number is the step's position, as the analysis does.
    """
    df = pd.DataFrame([s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else [])
    if df.empty or not {"t_start_ns", "t_end_ns"} <= set(df.columns):
        return pd.DataFrame(columns=["step", "t_start_ns", "t_end_ns"])
    if "step" not in df.columns:
        df["step"] = np.arange(len(df))
    keys = {c: pd.to_numeric(df[c], errors="coerce") for c in ("step", "t_start_ns", "t_end_ns")}
    ok = keys["step"].notna() & keys["t_start_ns"].notna() & keys["t_end_ns"].notna()
    ok &= (keys["step"] >= 0) & (keys["step"] == keys["step"].round()) & (keys["t_end_ns"] >= keys["t_start_ns"])
    df = df[ok].copy()
    for c in keys:
        df[c] = keys[c][ok].astype(np.int64)
    df = df.drop_duplicates("step", keep="last")
    return df.sort_values("t_start_ns", kind="stable").reset_index(drop=True)


def _trace_frame(trace: pa.Table | None) -> pd.DataFrame | None:
    if trace is None or trace.num_rows == 0:
        return None
    return trace.select([c for c in ANALYSIS_COLUMNS if c in trace.column_names]).to_pandas()


def analyse_steps(frame: pd.DataFrame | None, steps: pd.DataFrame,
                  limits: tuple[float, float] | None) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(per-step figures with ``spike``, RLE series) as analyze_training_coupling computes them.

    The series needs the trace and RLE's limits (None otherwise); the per-step figures need
    steps (None without), and the trace for all but ``spike``, which depends on grad_norm alone.
    """
    from experiments.analysis.coupling import align_steps, grad_spikes
    from experiments.analysis.rle import rle_series

    series = rle_series(frame, *limits) if frame is not None and limits is not None else None
    if not len(steps):
        return None, series
    if frame is not None:
        per = align_steps(frame, steps, rle=series)
    else:
        per = pd.DataFrame({"step": steps["step"].to_numpy(), "grad_norm": _number(steps, "grad_norm")})
    per["spike"] = grad_spikes(per["grad_norm"].to_numpy(float))["mask"]
    return per, series


def _number(df: pd.DataFrame, column: str) -> np.ndarray:
    if column not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def bounded(values, low: float | None = None, high: float | None = None) -> pa.Array:
    """float64 with null for NaN, infinities and values outside [low, high]."""
    v = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(v)
    with np.errstate(invalid="ignore"):
        if low is not None:
            bad |= v < low
        if high is not None:
            bad |= v > high
    return pa.array(np.where(bad, 0.0, v), pa.float64(), mask=bad)


def flags(values) -> pa.Array:
    """Booleans from bools or numbers (non-zero is true); null for NaN, None and anything else."""
    s = pd.Series(values)
    if s.dtype == bool:
        return pa.array(s.to_numpy(), pa.bool_())
    number = s.map(lambda v: float(v) if isinstance(v, (bool, int, float, np.bool_, np.number)) else np.nan)
    number = number.to_numpy(dtype=np.float64)
    missing = ~np.isfinite(number)
    return pa.array(np.where(missing, 0.0, number) != 0, pa.bool_(), mask=missing)


def steps_table(steps: pd.DataFrame, per: pd.DataFrame | None) -> pa.Table:
    """training_steps rows: the runner's columns, then the analysed ones matched by step."""
    n = len(steps)
    analysed = (per.drop(columns=[c for c in ("loss", "grad_norm", "lr", "t_start_ns", "t_end_ns", "energy_j")
                                  if c in per.columns])
                if per is not None else pd.DataFrame({"step": steps["step"]}))
    merged = steps[["step"]].merge(analysed, on="step", how="left")
    has = set(merged.columns)

    def col(name, low=None, high=None):
        return bounded(_number(merged, name), low, high) if name in has else pa.nulls(n, pa.float64())

    return pa.table({
        "step": pa.array(steps["step"].to_numpy(dtype=np.int64)),
        "t_start_ns": pa.array(steps["t_start_ns"].to_numpy(dtype=np.int64)),
        "t_end_ns": pa.array(steps["t_end_ns"].to_numpy(dtype=np.int64)),
        "loss": bounded(_number(steps, "loss")),
        "grad_norm": bounded(_number(steps, "grad_norm"), 0),
        "lr": bounded(_number(steps, "lr"), 0),
        "lr_spike": flags(steps["lr_spike"]) if "lr_spike" in steps else pa.nulls(n, pa.bool_()),
        "load_level": bounded(_number(steps, "load_level"), 0, 1),
        "energy_j": bounded(_number(steps, "energy_j"), 0),
        "energy_trace_j": col("energy_trace_j", 0),
        "aligned": flags(merged["aligned"]) if "aligned" in has else pa.nulls(n, pa.bool_()),
        "n_samples": (pa.array(_number(merged, "n_samples"), pa.float64(), from_pandas=True).cast(pa.int64())
                      if "n_samples" in has else pa.nulls(n, pa.int64())),
        "power_w": col("power_w", 0, 5000),
        "temp_c": col("temp_c", -40, 150),
        "temp_slope_c_per_s": col("temp_slope_c_per_s"),
        "rle": col("rle", 0),
        "collapse": flags(merged["collapse"]) if "collapse" in has else pa.nulls(n, pa.bool_()),
        "spike": flags(merged["spike"]) if "spike" in has else pa.nulls(n, pa.bool_()),
    })


def series_table(series: pd.DataFrame) -> pa.Table:
    """rle_series rows from an :func:`experiments.analysis.rle.rle_series` frame."""
    t = series["t_ns"].to_numpy(dtype=np.int64)
    return pa.table({
        "t_ns": pa.array(t),
        "t_s": pa.array((t - t[0]) / NS_PER_S),
        "n_reads": pa.array(series["n_reads"].to_numpy(dtype=np.int64)),
        "util_pct": bounded(_number(series, "util_frac") * 100.0, 0, 100),
        "power_w": bounded(_number(series, "power_w"), 0, 5000),
        "temp_c": bounded(_number(series, "temp_c"), -40, 150),
        "a_load": bounded(_number(series, "a_load"), 0),
        "dtdt_c_per_s": bounded(_number(series, "dtdt_c_per_s")),
        "t_sustain_s": bounded(_number(series, "t_sustain_s"), 0),
        "rle": bounded(_number(series, "rle"), 0),
        "gated": flags(series["gated"]),
        "collapse": flags(series["collapse"]),
        "collapse_start": flags(series["collapse_start"]),
    })


def _percentiles(frame: pd.DataFrame | None, field: str, t0: int | None, t1: int | None) -> tuple:
    """5th and 95th percentiles of the good reads of ``field`` in [t0, t1] (None, None if none)."""
    from experiments.analysis import tables

    if frame is None or t0 is None or field not in frame.columns:
        return None, None
    t, v = tables.good(frame, field)
    v = v[(t >= t0) & (t <= t1)]
    if not v.size:
        return None, None
    lo, hi = np.percentile(v, [5, 95])
    return float(lo), float(hi)


def summary_row(doc: dict, figures: dict, simulated: bool, frame: pd.DataFrame | None, steps: pd.DataFrame,
                limits: tuple[float, float] | None) -> dict:
    """The training_coupling row: the report's figures and the trace's signature."""
    from experiments.analysis.coupling import pick_power_field

    def sub(*keys) -> dict:
        value = figures
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        return value if isinstance(value, dict) else {}

    quality = doc.get("quality") if isinstance(doc.get("quality"), dict) else {}
    checks = doc.get("checks") if isinstance(doc.get("checks"), dict) else {}
    verdict = figures.get("verdict") if figures.get("verdict") in VERDICTS else None
    row = {"simulated": bool(simulated), "verdict": verdict} | typed_row(figures, SUMMARY)
    if row["verdict_reason"] is None and isinstance(checks.get("error"), str):
        row["verdict_reason"] = f"the experiment failed: {checks['error']}"
    row |= typed_row(sub("rle", "rate"), RATE) | {
        "n_spikes": typed_row(sub("spikes"), {"n_spikes": ("int", 0, None)})["n_spikes"],
        "rle_median": typed_row(sub("rle"), {"rle_median": ("float", 0, None)})["rle_median"],
    }
    from_figures, from_doc = typed_row(sub("quality"), QUALITY), typed_row(quality, QUALITY)
    row |= {k: from_figures[k] if from_figures[k] is not None else from_doc[k] for k in QUALITY}
    if frame is not None and row["power_field"] not in ("power_w", "power_instant_w", "power_avg_1s_w"):
        row["power_field"] = pick_power_field(frame)
    if len(steps):
        t0, t1 = int(steps["t_start_ns"].min()), int(steps["t_end_ns"].max())
    else:
        t0, t1 = (typed_row(doc, {"t_start_ns": ("int", None, None)})["t_start_ns"],
                  typed_row(doc, {"t_end_ns": ("int", None, None)})["t_end_ns"])
        t0, t1 = (t0, t1) if t0 is not None and t1 is not None and t1 >= t0 else (None, None)
    for name, field, (low, high) in (("power_{}_w", row["power_field"] or "power_w", (0, 5000)),
                                     ("temp_{}_c", "temp_c", (-40, 150)), ("util_{}_pct", "util_gpu", (0, 100))):
        p05, p95 = _percentiles(frame, field, t0, t1)
        ok = p05 is not None and low <= p05 <= p95 <= high
        row[name.format("p05")], row[name.format("p95")] = (p05, p95) if ok else (None, None)
    row["rle_power_limit_w"], row["rle_slowdown_temp_c"] = limits if limits is not None else (None, None)
    row["quality"] = quality_of(quality) or quality_of(figures.get("quality"))
    return row
