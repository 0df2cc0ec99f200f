"""Reading trace and marker tables: time windows, good rows, marker attributes, phases,
load edges and events. Only pandas/numpy and the trace schema's column names."""

from __future__ import annotations

import json
import math
from typing import Callable

import numpy as np
import pandas as pd

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

def column(df: pd.DataFrame, name: str) -> np.ndarray:
    """A column as float64 with NaN for nulls; all-NaN when the column is absent."""
    if name not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def read_ok(df: pd.DataFrame) -> np.ndarray:
    """The read_ok flag as a bool array. Absent or null (an importer that cannot tell)
    counts as True: the field's own null still marks a value that was not read."""
    if "read_ok" not in df.columns:
        return np.ones(len(df), dtype=bool)
    col = df["read_ok"]
    if col.dtype == bool:  # no nulls possible: skip the object round trip (a 1 h trace's columns are this)
        return col.to_numpy(copy=True)
    return col.astype(object).where(col.notna(), True).to_numpy(dtype=bool)


def window(df: pd.DataFrame, t_start_ns: int | None = None, t_end_ns: int | None = None) -> pd.DataFrame:
    """Rows with t_start_ns <= t_ns <= t_end_ns, sorted by t_ns."""
    out = df
    if not out["t_ns"].is_monotonic_increasing:
        out = out.sort_values("t_ns", kind="stable")
    t = out["t_ns"].to_numpy(dtype=np.int64)
    lo = 0 if t_start_ns is None else int(np.searchsorted(t, int(t_start_ns), side="left"))
    hi = len(t) if t_end_ns is None else int(np.searchsorted(t, int(t_end_ns), side="right"))
    return out.iloc[lo:hi]


def good(df: pd.DataFrame, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(t_ns int64, value float64) of the rows with read_ok and a finite ``field``, sorted."""
    t = df["t_ns"].to_numpy(dtype=np.int64)
    v = column(df, field)
    ok = read_ok(df) & np.isfinite(v)
    t, v = t[ok], v[ok]
    if t.size > 1 and np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
    return t, v


def _attrs(row) -> dict:
    raw = row.get("attrs_json") if "attrs_json" in row else row.get("attrs")
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def marker_rows(markers: pd.DataFrame | None, name: str | None = None) -> list[dict]:
    """Markers as dicts {t_ns, device_uuid, name, attrs}, sorted by t_ns, optionally one name."""
    if markers is None or len(markers) == 0:
        return []
    rows = []
    for rec in markers.to_dict("records"):
        if name is not None and rec.get("name") != name:
            continue
        rows.append({"t_ns": int(rec["t_ns"]), "device_uuid": rec.get("device_uuid"), "name": rec.get("name"),
                     "attrs": _attrs(rec)})
    rows.sort(key=lambda r: r["t_ns"])
    return rows


def phase_windows(markers: pd.DataFrame | None, phase: str) -> list[tuple[int, int | None]]:
    """(start, end) of each ``phase_start``/``phase_end`` pair with attrs phase == ``phase``.

    An unterminated phase has end None (it ran to the end of the trace).
    """
    out: list[tuple[int, int | None]] = []
    start = None
    for m in marker_rows(markers):
        if m["attrs"].get("phase") != phase:
            continue
        if m["name"] == "phase_start":
            start = m["t_ns"]
        elif m["name"] == "phase_end" and start is not None:
            out.append((start, m["t_ns"]))
            start = None
    if start is not None:
        out.append((start, None))
    return out


def load_edges(markers: pd.DataFrame | None) -> list[tuple[int, float]]:
    """(t_ns, level) of every ``load`` marker that changes the level (the first one counts)."""
    edges: list[tuple[int, float]] = []
    for m in marker_rows(markers, "load"):
        level = m["attrs"].get("level")
        try:
            level = float(level)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(level):
            continue
        if edges and edges[-1][1] == level:
            continue
        edges.append((m["t_ns"], level))
    return edges


def event_windows(markers: pd.DataFrame | None) -> pd.DataFrame:
    """One row per completed event: event_id, t_start_ns, t_end_ns, phase, batch_size,
    input_tokens, output_tokens, counter_start_j, counter_end_j (NaN when not recorded). An
    event whose end is marked ``aborted`` (out of memory, a thermal trip) is no measurement
    and is left out; a rerun under the same id is its own start/end pair."""
    starts: dict = {}
    rows = []
    for m in marker_rows(markers):
        if m["name"] not in ("event_start", "event_end"):
            continue
        key = (m["device_uuid"], m["attrs"].get("event_id"))
        if m["name"] == "event_start":
            starts[key] = m
            continue
        s = starts.pop(key, None)
        if s is None or m["attrs"].get("aborted"):
            continue
        a = {**s["attrs"], **{k: v for k, v in m["attrs"].items() if v is not None}}
        rows.append({
            "event_id": a.get("event_id"), "t_start_ns": s["t_ns"], "t_end_ns": m["t_ns"],
            "phase": a.get("phase"), "batch_size": _num(a.get("batch_size")),
            "input_tokens": _num(a.get("input_tokens")), "output_tokens": _num(a.get("output_tokens")),
            "counter_start_j": _num(s["attrs"].get("energy_counter_j")),
            "counter_end_j": _num(m["attrs"].get("energy_counter_j")),
        })
    cols = ["event_id", "t_start_ns", "t_end_ns", "phase", "batch_size", "input_tokens", "output_tokens",
            "counter_start_j", "counter_end_j"]
    return pd.DataFrame(rows, columns=cols)


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def per_device(trace: pd.DataFrame, markers: pd.DataFrame | None,
               fn: Callable[[pd.DataFrame, pd.DataFrame | None], dict]) -> dict:
    """Run ``fn(trace, markers)`` on one device's rows.

    A trace with one device (or no device column) gives ``fn``'s result; several devices
    give ``{"devices": {uuid: result}}``, each with its own and the host-wide markers.
    """
    if "device_uuid" not in trace.columns or trace["device_uuid"].nunique(dropna=False) <= 1:
        uuid = trace["device_uuid"].iloc[0] if "device_uuid" in trace.columns and len(trace) else None
        return fn(trace, _markers_for(markers, uuid))
    out = {}
    for uuid, rows in trace.groupby("device_uuid", sort=True):
        out[str(uuid)] = fn(rows, _markers_for(markers, uuid))
    return {"devices": out}


def _markers_for(markers: pd.DataFrame | None, uuid) -> pd.DataFrame | None:
    if markers is None or uuid is None or "device_uuid" not in markers.columns:
        return markers
    m = markers["device_uuid"]
    return markers[m.isna() | (m == uuid)]
