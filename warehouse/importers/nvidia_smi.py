"""Import an ``nvidia-smi --query-gpu=... --format=csv -lms N`` log as a run.

Any subset of columns; units come from the header (``power.draw [W]``). Mapping:

=============================================  ==================  ===========================
nvidia-smi column                              warehouse column    units accepted
=============================================  ==================  ===========================
timestamp (local time, ``--tz``)               t_ns, wall_ns       ``2023/07/08 19:27:36.359``
power.draw.average                             power_w             W, mW, kW
power.draw (1 s average)                       power_w, or power_avg_1s_w when power.draw.average is there
power.draw.instant                             power_instant_w     W, mW, kW
temperature.gpu                                temp_c              none, C, degC
clocks.current.sm / clocks.sm                  sm_clock_mhz        MHz, GHz, kHz
clocks.current.memory / clocks.mem             mem_clock_mhz       MHz, GHz, kHz
utilization.gpu / utilization.memory           util_gpu / util_mem %
memory.used                                    vram_used_mib        MiB, MB, GiB, GB, KiB
total_energy_consumption                       energy_j            mJ, J, kJ
pstate (P0..P15)                               pstate
clocks_event_reasons.active (also _throttle_)  clocks_event_reasons  hex bitmask
uuid                                           run_devices.device_uuid
=============================================  ==================  ===========================

Other columns are ignored and listed in the run's config. ``[N/A]``, ``[Unknown Error]``,
``[Not Supported]`` cells are failed reads: the value is null and the row is kept with
``read_ok = false`` (a column that never reads, i.e. unsupported on the board, does not
mark rows failed). nvidia-smi has no monotonic clock, so ``t_ns = wall_ns`` = UTC epoch ns
and the run's clock is ``wall``. The optional edge file (header line, one epoch timestamp
per line in s, ms, us or ns, duplicates collapsed) alternates load on / load off starting
with on; each edge becomes a ``load`` marker with ``{"level": 1.0}`` or ``{"level": 0.0}``.
An odd final edge closes the last idle period (the SC'24 benchmark writes one) and becomes
a ``load_edges_end`` marker, not a load edge.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from agents.errors import ConfigError, ValidationError

from ..columns import TRACE_EXTRA_FIELDS, TRACE_FIELDS, WALL_NS_HINT, WALL_NS_RANGE
from ..connection import WRITER_LOCK_TIMEOUT_S
from ..validate import quote, safe_name
from .common import ImportedRun, basename, failed_cells, file_sha256, parse_numbers, read_text_csv, slug, write_imported

_HEADER = re.compile(r"^(?P<name>[^\[\]]+?)\s*(\[(?P<unit>[^\]]*)\])?$")

# quantity -> {unit: factor to the warehouse unit}; None is "no unit in the header"
UNIT_FACTORS = {
    "power": {"W": 1.0, "mW": 1e-3, "kW": 1e3},
    "temperature": {None: 1.0, "C": 1.0, "degC": 1.0, "°C": 1.0},
    "clock": {"MHz": 1.0, "GHz": 1e3, "kHz": 1e-3},
    "percent": {"%": 1.0, None: 1.0},
    # memory in MiB, the unit of every trace (NVML's bytes are converted to MiB in agents/nvml.py)
    "memory": {"MiB": 1.0, "MB": 1e6 / 2**20, "GiB": 1024.0, "GB": 1e9 / 2**20, "KiB": 1 / 1024, "KB": 1e3 / 2**20},
    "energy": {"mJ": 1e-3, "J": 1.0, "kJ": 1e3},
}

# nvidia-smi name -> (quantity, warehouse column)
COLUMNS = {
    "power.draw.average": ("power", "power_w"),
    "power.draw": ("power", "power_w"),
    "power.draw.instant": ("power", "power_instant_w"),
    "temperature.gpu": ("temperature", "temp_c"),
    "clocks.current.sm": ("clock", "sm_clock_mhz"),
    "clocks.sm": ("clock", "sm_clock_mhz"),
    "clocks.current.memory": ("clock", "mem_clock_mhz"),
    "clocks.mem": ("clock", "mem_clock_mhz"),
    "utilization.gpu": ("percent", "util_gpu"),
    "utilization.memory": ("percent", "util_mem"),
    "memory.used": ("memory", "vram_used_mib"),
    "total_energy_consumption": ("energy", "energy_j"),
}
BITMASK_COLUMNS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")
EDGE_WINDOW_S = 60.0  # edges may lie this far outside the trace before --tz is suspected


def parse_tz(text: str) -> int:
    """A ``+HH:MM`` / ``-HH:MM`` offset (also ``+HHMM``, ``Z``, ``UTC``) in nanoseconds."""
    if text in ("Z", "UTC", "utc", "z"):
        return 0
    match = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text or "")
    if not match or int(match.group(3)) >= 60 or int(match.group(2)) * 60 + int(match.group(3)) > 14 * 60:
        raise ConfigError(
            f"--tz: {text!r} is not a UTC offset; write it as +HH:MM or -HH:MM (e.g. +01:00 for UK summer time)"
        )
    minutes = int(match.group(2)) * 60 + int(match.group(3))
    return (1 if match.group(1) == "+" else -1) * minutes * 60 * 10**9


def _parse_header(label: str, header: list[str]) -> list[tuple[str, str | None]]:
    parsed, seen = [], {}
    for i, cell in enumerate(header):
        match = _HEADER.match(cell)
        if not match:
            raise ValidationError(f"{label}: header column {i + 1} ({quote(cell)}) is not 'name [unit]'; re-export the log")
        name, unit = match.group("name").strip(), match.group("unit")
        unit = unit.strip() if unit is not None else None
        if name in seen:
            raise ValidationError(
                f"{label}: column {name} appears twice in the header ([{seen[name]}] and [{unit}]); "
                "keep one column per quantity"
            )
        seen[name] = unit
        parsed.append((name, unit))
    return parsed


def _timestamps(label: str, values: pa.ChunkedArray, tz_ns: int) -> np.ndarray:
    failed = failed_cells(values)
    row = pc.index(failed, pa.scalar(True)).as_py()
    if row >= 0:
        raise ValidationError(f"{label}: column timestamp is {quote(values[row].as_py())} at line {row + 2}; "
                              "every row needs its time: delete that line")
    series = pd.Series(values.to_numpy(zero_copy_only=False))
    parsed = pd.to_datetime(series, format="%Y/%m/%d %H:%M:%S.%f", errors="coerce")
    missing = parsed.isna()
    if missing.any():
        parsed[missing] = pd.to_datetime(series[missing], format="%Y/%m/%d %H:%M:%S", errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise ValidationError(f"{label}: column timestamp has {quote(series[row])} at line {row + 2}; "
                              "expected nvidia-smi's 'YYYY/MM/DD HH:MM:SS.mmm': fix or delete that line")
    # Check the year before converting to ns: a year outside datetime64[ns] would wrap around.
    low, high = (np.datetime64(ns, "ns") for ns in WALL_NS_RANGE)
    outside = np.flatnonzero(((parsed < low) | (parsed >= high)).to_numpy())
    if outside.size:
        row = int(outside[0])
        raise ValidationError(f"{label}: column timestamp has {quote(series[row])} at line {row + 2}, outside "
                              f"2000..2100; {WALL_NS_HINT}: fix the recording machine's clock or that line")
    local_ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return local_ns - tz_ns


def _pstate(label: str, values: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    failed = failed_cells(values)
    good = pc.match_substring_regex(values, r"^P\d{1,2}$")
    row = pc.index(pc.and_(pc.invert(good), pc.invert(failed)), pa.scalar(True)).as_py()
    if row >= 0:
        raise ValidationError(f"{label}: column pstate has {quote(values[row].as_py())} at line {row + 2}; "
                              "expected P0..P15 or [N/A]: fix or delete that line")
    numbers = pc.if_else(failed, pa.scalar(None, pa.string()), pc.utf8_slice_codeunits(values, 1))
    return numbers.cast(pa.int32()), failed


def _bitmask(label: str, column: str, values: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    failed = failed_cells(values)
    good = pc.match_substring_regex(values, r"^0x[0-9A-Fa-f]{1,16}$")
    row = pc.index(pc.and_(pc.invert(good), pc.invert(failed)), pa.scalar(True)).as_py()
    if row >= 0:
        raise ValidationError(f"{label}: column {column} has {quote(values[row].as_py())} at line {row + 2}; "
                              "expected a hex bitmask like 0x0000000000000004 or [N/A]")
    texts = values.to_pylist()  # bitmask columns are rare; int(x, 16) has no vector form
    ints = [None if f else int(t, 16) for t, f in zip(texts, failed.to_pylist())]
    return pa.chunked_array([pa.array(ints, pa.int64())]), failed


def read_edges(path: Path, label: str | None = None) -> np.ndarray:
    """Load edges as UTC epoch ns: header line, one timestamp per line, duplicates collapsed."""
    label = label or str(path)
    if not path.is_file():
        raise ValidationError(f"{label}: file is missing; pass the edge file's path to --edges")
    lines = [line.strip() for line in path.read_text("utf-8", errors="replace").splitlines()]
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line]
    if numbered and not re.fullmatch(r"[-+]?\d+(\.\d*)?", numbered[0][1]):
        numbered = numbered[1:]  # the header line
    if not numbered:
        raise ValidationError(f"{label}: no timestamps after the header; write one epoch timestamp per line")
    values = []
    for number, line in numbered:
        if not re.fullmatch(r"\d+(\.\d*)?", line):
            raise ValidationError(f"{label}: column timestamp has {line[:40]!r} at line {number}; "
                                  "write one epoch timestamp (s, ms, us or ns) per line")
        values.append(float(line) if "." in line else int(line))
    scales = []
    for (number, _), value in zip(numbered, values):
        if value >= 1e19:
            raise ValidationError(f"{label}: column timestamp has {quote(value)} at line {number}, too large for an "
                                  "epoch timestamp; write epoch seconds, ms, us or ns")
        if value >= 1e17:
            scales.append(1)
        elif value >= 1e14:
            scales.append(1_000)
        elif value >= 1e11:
            scales.append(1_000_000)
        elif value >= 1e8:
            scales.append(1_000_000_000)
        else:
            raise ValidationError(f"{label}: column timestamp has {value!r} at line {number}, too small for an "
                                  "epoch timestamp; write epoch seconds, ms, us or ns")
    if len(set(scales)) > 1:
        number = next(n for (n, _), scale in zip(numbered, scales) if scale != scales[0])
        raise ValidationError(f"{label}: column timestamp mixes units (line {number} differs from line "
                              f"{numbered[0][0]}); write every edge in the same unit")
    ns = np.array([int(round(v * scales[0])) if isinstance(v, float) else v * scales[0] for v in values], dtype=np.int64)
    outside = np.flatnonzero((ns < WALL_NS_RANGE[0]) | (ns >= WALL_NS_RANGE[1]))
    if outside.size:
        raise ValidationError(f"{label}: column timestamp has {quote(values[outside[0]])} at line "
                              f"{numbered[outside[0]][0]}, outside 2000..2100; {WALL_NS_HINT}: fix that line")
    keep = np.concatenate([[True], ns[1:] != ns[:-1]])
    ns, lines_kept = ns[keep], [n for (n, _), k in zip(numbered, keep) if k]
    back = np.flatnonzero(ns[1:] < ns[:-1])
    if back.size:
        raise ValidationError(f"{label}: column timestamp goes back in time at line {lines_kept[back[0] + 1]}; "
                              "edges are written in time order")
    return ns


def edge_markers(edges_ns: np.ndarray) -> pa.Table:
    """``load`` markers alternating on/off from the first edge (an odd last edge ends the idle)."""
    names, attrs = [], []
    paired = len(edges_ns) - (len(edges_ns) % 2 if len(edges_ns) > 1 else 0)
    for i in range(len(edges_ns)):
        if i < paired:
            names.append("load")
            attrs.append(json.dumps({"level": 1.0 if i % 2 == 0 else 0.0}, sort_keys=True))
        else:
            names.append("load_edges_end")
            attrs.append(json.dumps({"edge_index": i, "level": 0.0}, sort_keys=True))
    return pa.table({
        "t_ns": pa.array(edges_ns, pa.int64()),
        "wall_ns": pa.array(edges_ns, pa.int64()),
        "device_uuid": pa.nulls(len(edges_ns), pa.string()),
        "name": pa.array(names, pa.string()),
        "attrs_json": pa.array(attrs, pa.string()),
    })


def read_nvidia_smi(csv_path, edges_path=None, tz: str = "+00:00", gpu_name: str | None = None,
                    host: str = "imported") -> ImportedRun:
    """Parse and check an nvidia-smi CSV (and edge file) into an :class:`ImportedRun`."""
    csv_path = Path(csv_path)
    label = str(csv_path)
    tz_ns = parse_tz(tz)
    host = safe_name(host, "--host", "host")
    header, table, skipped = read_text_csv(csv_path, label)
    columns = _parse_header(label, header)
    names = [n for n, _ in columns]
    if "timestamp" not in names:
        raise ValidationError(f"{label}: column timestamp is missing; query it first: --query-gpu=timestamp,power.draw,...")
    if not any(n.startswith("power.draw") for n in names):
        raise ValidationError(f"{label}: column power.draw is missing (no power.draw, power.draw.average or "
                              "power.draw.instant); add one to --query-gpu")
    rows = table.num_rows
    if rows == 0:
        raise ValidationError(f"{label}: no rows after the header; record for longer")
    out: dict[str, pa.ChunkedArray] = {}
    failures: list[pa.ChunkedArray] = []
    mapping: dict[str, str] = {}
    ignored: list[str] = []
    uuid = None
    has_average = "power.draw.average" in names
    # The power a row is for: power_w, else (a log of power.draw.instant only) the instant.
    primary_power = "power_w" if {"power.draw", "power.draw.average"} & set(names) else "power_instant_w"
    for i, (name, unit) in enumerate(columns):
        values = table.column(f"c{i}")
        cell = f"{name}" + (f" [{unit}]" if unit is not None else "")
        if name == "timestamp":
            t = _timestamps(label, values, tz_ns)
            continue
        if name in COLUMNS:
            quantity, target = COLUMNS[name]
            if name == "power.draw" and has_average:
                target = "power_avg_1s_w"
            factors = UNIT_FACTORS[quantity]
            if unit not in factors:
                known = ", ".join(u for u in factors if u) or "none"
                raise ValidationError(f"{label}: column {cell} has unknown unit {unit!r} for {quantity}; "
                                      f"use one of {known}")
            numbers, failed = parse_numbers(label, cell, values, unit)
            out[target] = pc.multiply(numbers, factors[unit]) if factors[unit] != 1.0 else numbers
        elif name == "pstate":
            target = "pstate"
            out[target], failed = _pstate(label, values)
        elif name in BITMASK_COLUMNS:
            target = "clocks_event_reasons"
            out[target], failed = _bitmask(label, cell, values)
        elif name == "uuid":
            distinct = pc.unique(values).to_pylist()
            uuid = distinct[0] if len(distinct) == 1 else None
            mapping[cell] = "device_uuid"
            continue
        elif name == "name" and gpu_name is None:
            distinct = pc.unique(values).to_pylist()
            gpu_name = distinct[0] if len(distinct) == 1 else None
            ignored.append(cell)
            continue
        else:
            ignored.append(cell)
            continue
        mapping[cell] = target
        # An unsupported column (never read) marks no row failed; the primary power is what
        # a row is for, so a failed power cell always makes its row a failed read.
        if target == primary_power or not pc.all(failed).as_py():
            failures.append(failed)
    read_ok = np.ones(rows, dtype=bool)
    for failed in failures:
        read_ok &= ~failed.to_numpy(zero_copy_only=False)
    dt_s = np.empty(rows)
    dt_s[0] = np.nan
    dt_s[1:] = np.diff(t) / 1e9
    trace_columns = {}
    for name, dtype in (TRACE_FIELDS | TRACE_EXTRA_FIELDS).items():
        if name in out:
            trace_columns[name] = out[name].cast(dtype)
        else:
            trace_columns[name] = pa.chunked_array([pa.nulls(rows, dtype)])
    trace_columns["t_ns"] = pa.chunked_array([pa.array(t, pa.int64())])
    trace_columns["wall_ns"] = trace_columns["t_ns"]
    trace_columns["device_uuid"] = pa.chunked_array([pa.array([uuid] * rows, pa.string())])
    trace_columns["read_ok"] = pa.chunked_array([pa.array(read_ok)])
    trace_columns["dt_s"] = pa.chunked_array([pa.array(dt_s, mask=np.isnan(dt_s))])
    trace = pa.table(trace_columns)

    markers = None
    edges_label = None
    if edges_path is not None:
        edges_path = Path(edges_path)
        edges_label = str(edges_path)
        edges = read_edges(edges_path, edges_label)
        _check_edges_in_trace(edges_label, edges, int(t.min()), int(t.max()))
        markers = edge_markers(edges)

    digest = file_sha256(csv_path, edges_path)
    gpu = gpu_name or "gpu"
    # Identity never depends on the flags (--gpu-name, --tz, --host): importing the same file
    # again replaces its run x device, whatever was passed. The GPU's UUID when logged.
    device_uid = safe_name(uuid, label, "uuid") if uuid else f"smi-{file_sha256(csv_path)[:12]}"
    run_id = f"smi-{digest[:16]}"
    fields = {"gpu_name": gpu_name, "source": "nvidia-smi"}
    fingerprint = f"smi-{digest[:12]}"
    meta = {
        "schema_version": 1, "run_id": run_id, "host": host, "device_uid": device_uid,
        "fingerprint": fingerprint, "simulated": False, "run_state": "completed", "end_reason": "completed",
        "started_wall_ns": int(t.min()), "ended_wall_ns": int(t.max()), "clock": "wall",
        "config": {"importer": "nvidia-smi", "file": basename(csv_path), "edges_file": basename(edges_path),
                   "tz": tz, "columns": mapping, "ignored_columns": ignored,
                   "skipped_last_line": bool(skipped)},
    }
    fp = {"device_uid": device_uid, "fingerprint": fingerprint, "comparability_key": slug(gpu),
          "simulated": False, "fields": fields}
    labels = {"run_metadata": label, "fingerprint": label}
    if edges_label:
        labels["markers"] = edges_label
    return ImportedRun(label, meta, fp, trace, markers, labels=labels)


def _check_edges_in_trace(label: str, edges: np.ndarray, t_first: int, t_last: int) -> None:
    window = int(EDGE_WINDOW_S * 1e9)
    outside = np.flatnonzero((edges < t_first - window) | (edges > t_last + window))
    if outside.size:
        edge = int(edges[outside[0]])
        off_s = (t_first - edge) / 1e9 if edge < t_first else (edge - t_last) / 1e9
        where = "before the trace starts" if edge < t_first else "after the trace ends"
        raise ValidationError(
            f"{label}: column timestamp edge {int(outside[0]) + 1} lies {off_s:,.0f} s {where}; "
            "the log's timestamps are local time: pass its UTC offset with --tz (e.g. --tz +01:00)"
        )


def import_nvidia_smi(warehouse, csv_path, edges_path=None, tz: str = "+00:00", gpu_name: str | None = None,
                      host: str = "imported", lock_timeout_s: float = WRITER_LOCK_TIMEOUT_S,
                      replace: bool = False) -> dict:
    """Import an nvidia-smi CSV log (and optional edge file) as one run; returns the ingest result.

    The run_id and device_uid come from the files' SHA-256, so importing the same files
    again replaces the run; a run stored from another kind of source only with ``replace``.
    The warehouse is unchanged on any error.
    """
    run = read_nvidia_smi(csv_path, edges_path, tz=tz, gpu_name=gpu_name, host=host)
    return write_imported(warehouse, run, "nvidia-smi", lock_timeout_s, replace)
