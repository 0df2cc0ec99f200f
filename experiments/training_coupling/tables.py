"""training_coupling's tables in their contract shapes (experiments.contracts.tables).

Built from what the coupling analysis computed (its per-step frame and RLE series, with the
settings it ran with) and the runner's step rows; written beside the report, so the
warehouse loads them instead of repeating the analysis.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from experiments.contracts.tables import RLE_SERIES, TRAINING_STEPS, empty

NS_PER_S = 1_000_000_000
RUNNER_ONLY = ("lr_spike", "load_level")  # the runner's columns the analysis does not carry


def _floats(df: pd.DataFrame, name: str) -> pa.Array:
    if name not in df.columns:
        return pa.nulls(len(df), pa.float64())
    v = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return pa.array(v, pa.float64(), mask=np.isnan(v))


def _flags(df: pd.DataFrame, name: str) -> pa.Array:
    """Booleans; null where the value is missing or not a bool or number (a 0/1 float is a flag)."""
    if name not in df.columns:
        return pa.nulls(len(df), pa.bool_())
    values = df[name].map(lambda v: float(v) if isinstance(v, (bool, int, float, np.bool_, np.number)) else np.nan)
    v = values.to_numpy(dtype=np.float64)
    missing = ~np.isfinite(v)
    return pa.array(np.where(missing, 0.0, v) != 0, pa.bool_(), mask=missing)


def _ints(df: pd.DataFrame, name: str) -> pa.Array:
    if name not in df.columns:
        return pa.nulls(len(df), pa.int64())
    return pa.array(pd.to_numeric(df[name], errors="coerce").astype("Int64"), pa.int64(), from_pandas=True)


def runner_steps(steps) -> pd.DataFrame:
    """The runner's rows in the analysis' order (by t_start_ns, stable), as a DataFrame."""
    df = pd.DataFrame(list(steps)) if not isinstance(steps, pd.DataFrame) else steps.copy()
    if not len(df):
        return pd.DataFrame(columns=["step", "t_start_ns", "t_end_ns"])
    if "step" not in df.columns:
        df["step"] = np.arange(len(df))
    return df.sort_values("t_start_ns", kind="stable").reset_index(drop=True)


def steps_table(steps, per: pd.DataFrame | None) -> pa.Table:
    """training_coupling_steps: the runner's columns, then the analysed ones (null without ``per``).

    ``per`` is the analysis' per-step frame (one row per runner step in the same order, step
    times on the trace's clock); without it the runner's own times are kept.
    """
    raw = runner_steps(steps)
    if not len(raw):
        return empty(TRAINING_STEPS)
    base = per.reset_index(drop=True) if per is not None else raw
    if per is not None and len(per) != len(raw):
        raise ValueError(f"the analysis has {len(per)} steps, the runner {len(raw)}")
    columns = {
        "step": _ints(base, "step"), "t_start_ns": _ints(base, "t_start_ns"), "t_end_ns": _ints(base, "t_end_ns"),
        "loss": _floats(base, "loss"), "grad_norm": _floats(base, "grad_norm"), "lr": _floats(base, "lr"),
        "lr_spike": _flags(raw, "lr_spike"), "load_level": _floats(raw, "load_level"),
        "energy_j": _floats(base, "energy_j"),
    }
    analysed = per if per is not None else pd.DataFrame(index=raw.index)
    for field in TRAINING_STEPS.schema:
        if field.name in columns:
            continue
        kind = {pa.bool_(): _flags, pa.int64(): _ints}.get(field.type, _floats)
        columns[field.name] = kind(analysed, field.name)
    return pa.table(columns, schema=TRAINING_STEPS.schema)


def rle_table(series: pd.DataFrame | None) -> pa.Table:
    """training_coupling_rle from an :func:`experiments.analysis.rle.rle_series` frame."""
    if series is None or not len(series):
        return empty(RLE_SERIES)
    t = series["t_ns"].to_numpy(dtype=np.int64)
    util = pd.to_numeric(series["util_frac"], errors="coerce").to_numpy(dtype=np.float64) * 100.0
    return pa.table({
        "t_ns": pa.array(t), "t_s": pa.array((t - t[0]) / NS_PER_S), "n_reads": _ints(series, "n_reads"),
        "util_pct": pa.array(util, pa.float64(), mask=np.isnan(util)), "power_w": _floats(series, "power_w"),
        "temp_c": _floats(series, "temp_c"), "a_load": _floats(series, "a_load"),
        "dtdt_c_per_s": _floats(series, "dtdt_c_per_s"), "t_sustain_s": _floats(series, "t_sustain_s"),
        "rle": _floats(series, "rle"), "gated": _flags(series, "gated"), "collapse": _flags(series, "collapse"),
        "collapse_start": _flags(series, "collapse_start"),
    }, schema=RLE_SERIES.schema)


def tables(steps, per: pd.DataFrame | None, series: pd.DataFrame | None) -> dict[str, pa.Table]:
    """Both tables by name, as the report comes with them."""
    return {TRAINING_STEPS.name: steps_table(steps, per), RLE_SERIES.name: rle_table(series)}
