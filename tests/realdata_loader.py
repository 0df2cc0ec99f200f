"""Test-only loader for the real nvidia-smi recordings in ../shared/realdata.

(The production nvidia-smi importer lives in warehouse/; this one only serves the analysis
tests.) ``load_recording(folder)`` returns the trace as a DataFrame with the trace schema's
column names (t_ns = UTC epoch ns) and the load edges as [(t_ns, level)].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
LOCAL_UTC_OFFSET_NS = 3600 * 1_000_000_000  # the recordings' timestamps are UK summer time (UTC+1)

# nvidia-smi --query-gpu names -> trace columns
COLUMNS = {
    "utilization.gpu": "util_gpu",
    "temperature.gpu": "temp_c",
    "clocks.current.sm": "sm_clock_mhz",
    "power.draw": "power_w",
    "power.draw.average": "power_average_w",
    "power.draw.instant": "power_instant_w",
}

# What the SC'24 authors published for these boards (README of the data folder), per
# nvidia-smi column. The 3090's power.draw.average equals its power.draw in every row; the
# authors' own code treats the two as one field, so it carries power.draw's figures.
_AVG_1S_3090 = {"update_period_ms": 100, "rise_ms": 912, "delay_ms": 597, "window_ms": 1000}
PUBLISHED = {
    ("transient_response_3090_TR", "power.draw"): _AVG_1S_3090,
    ("transient_response_3090_TR", "power.draw.average"): _AVG_1S_3090,
    ("transient_response_3090_TR", "power.draw.instant"):
        {"update_period_ms": 100, "rise_ms": 249, "delay_ms": 136, "window_ms": 100},
    ("transient_response_4090_TR", "power.draw"):
        {"update_period_ms": 100, "rise_ms": 246, "delay_ms": 94, "window_ms": 111},
}


def realdata_dir() -> Path:
    """The recordings folder, or skip the test with a clear message."""
    if not REALDATA.is_dir():
        pytest.skip("real nvidia-smi recordings not found: expected the folder ../shared/realdata "
                    f"beside the repo ({REALDATA})")
    return REALDATA


def _strip_unit(name: str) -> str:
    return name.split("[")[0].strip()


def load_recording(folder: str) -> tuple[pd.DataFrame, list[tuple[int, float]]]:
    """(trace DataFrame, [(t_ns, level)]) of one recording folder."""
    base = realdata_dir() / folder
    raw = pd.read_csv(base / "gpudata.csv", skipinitialspace=True, na_values=["[N/A]", "N/A"])
    raw.columns = [_strip_unit(c) for c in raw.columns]
    local = pd.to_datetime(raw["timestamp"], format="%Y/%m/%d %H:%M:%S.%f")
    t_ns = (local - pd.Timestamp("1970-01-01")) // pd.Timedelta(1, "ns") - LOCAL_UTC_OFFSET_NS
    df = pd.DataFrame({"t_ns": t_ns.to_numpy(dtype=np.int64)})
    for src, dst in COLUMNS.items():
        if src in raw.columns:
            df[dst] = pd.to_numeric(raw[src], errors="coerce").astype(np.float64)
    if "pstate" in raw.columns:
        df["pstate"] = pd.to_numeric(raw["pstate"].astype(str).str.strip().str.lstrip("P"), errors="coerce")
    df["read_ok"] = df["power_w"].notna()
    df["device_uuid"] = folder
    edges_us = pd.read_csv(base / "timestamps.csv")["timestamp"].to_numpy(dtype=np.int64)
    distinct = list(dict.fromkeys(edges_us.tolist()))  # each edge is written twice
    # The README: the first edge switches the load on, the second off. A third timestamp
    # (about 6 s later, no change in the trace) marks the end of the recording's run.
    edges = [(distinct[0] * 1000, 1.0), (distinct[1] * 1000, 0.0)]
    return df, edges
