"""Validation of everything ingest writes, before it writes anything.

Each check is vectorised (pyarrow compute / numpy), never a Python loop over trace rows.
A failure raises :class:`agents.errors.ValidationError` with one line naming the file, the
column or field, what is wrong (row and values where it helps) and the fix.
"""

from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from experiments.contracts import Fingerprint, PollerStats, RunMetadata, parse, read_report
from experiments.contracts.run import upgrade_unversioned_metadata
from agents.errors import ValidationError
from experiments.contracts.base import finite_json

from .columns import (
    CLOCKS,
    END_REASONS,
    ENERGY_QUALITIES,
    EVENT_FIELDS,
    EVENT_REQUIRED,
    MARKER_FIELDS,
    MARKER_REQUIRED,
    MIN_PEAK_POWER_W,
    POWER_FIELDS,
    RUN_STATES,
    SCHEDULING_QUALITIES,
    SUPPORTED_SCHEMA_VERSION,
    TRACE_EXTRA_FIELDS,
    TRACE_FIELDS,
    TRACE_RANGES,
    WALL_NS_HINT,
    WALL_NS_RANGE,
    WAREHOUSE_TRACE_COLUMNS,
    null_column,
)

# Used with fullmatch: "$" would also match before a trailing newline.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,199}")

# No document fleetphysics writes nests deeper than a few levels; a deeper one is refused
# before any recursive code (json, clean_json, the figures) walks it.
MAX_JSON_DEPTH = 64


def fail(label: str, what: str, problem: str, fix: str) -> ValidationError:
    """A ValidationError whose one-line message reads ``label: what problem; fix``."""
    text = f"{label}: {what} {problem}; {fix}"
    return ValidationError(" ".join(text.split()))


def _show(value) -> str:
    """A short, one-line rendering of a value for a message."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return quote(value, 60)


def quote(value, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: a cell quoted in a message never carries
    a file's content beyond a few characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def json_depth(value) -> int:
    """How deep lists and dicts nest in ``value`` (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


INT64_RANGE = (-(2**63), 2**63 - 1)


def check_json_numbers(label: str, doc) -> None:
    """Refuse a document nested deeper than MAX_JSON_DEPTH or holding an integer beyond 64
    bits (which no column stores), naming the field's path; walked without recursion."""
    stack = [(doc, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                raise fail(label, "document", f"is nested deeper than {MAX_JSON_DEPTH} levels",
                           "write the file with fleetphysics, or flatten it")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in pairs)
        elif isinstance(item, int) and not isinstance(item, bool) and not INT64_RANGE[0] <= item <= INT64_RANGE[1]:
            raise fail(label, f"field {path or 'document'}", f"is {_show(item)}, beyond a 64-bit integer",
                       "write a number that fits 64 bits: fix the file")


def parse_json(text: str | bytes) -> tuple[object, str | None, str]:
    """(document, problem, detail): problem is None for valid JSON nested at most
    MAX_JSON_DEPTH deep, else "is not valid JSON" or "is nested deeper than ... levels"."""
    deep = f"is nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        doc = json.loads(text)
    except RecursionError:
        return None, deep, ""
    except ValueError as exc:  # UnicodeDecodeError included
        if isinstance(exc, json.JSONDecodeError):
            return None, "is not valid JSON", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        return None, "is not valid JSON", "not UTF-8 text"
    if json_depth(doc) > MAX_JSON_DEPTH:
        return None, deep, ""
    return doc, None, ""


def load_json(text: str | bytes, label: str, fix: str):
    """Parse JSON text; invalid, or nested deeper than MAX_JSON_DEPTH, is a ValidationError."""
    doc, problem, detail = parse_json(text)
    if problem:
        raise fail(label, "document", problem + (f" ({detail})" if detail else ""), fix)
    return doc


def safe_name(value, label: str, field: str) -> str:
    """``value`` if it is a safe id (letters, digits, ``_.:@+=-``; no path separator, no '..')."""
    if not isinstance(value, str) or not value:
        raise fail(label, f"field {field}", f"is {_show(value)}, not a non-empty string", f"set {field} to a name like 'run-0001'")
    if "/" in value or "\\" in value or ".." in value or not _SAFE_NAME.fullmatch(value):
        raise fail(
            label,
            f"field {field}",
            f"is {_show(value)}, not a safe name",
            "use letters, digits and _ . : @ + = - only (no path separator, no '..', at most 200 characters)",
        )
    return value


# ---------------------------------------------------------------- column types


def _kind(dtype: pa.DataType) -> str:
    if pa.types.is_null(dtype):
        return "null"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "float"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "str"
    if pa.types.is_dictionary(dtype) and (
        pa.types.is_string(dtype.value_type) or pa.types.is_large_string(dtype.value_type)
    ):
        return "str"
    return "other"


_TARGET_KIND = {"int64": "int", "int32": "int", "double": "float", "string": "str", "bool": "bool"}
_UNIT_OF = {"_ns": "nanoseconds", "_w": "watts", "_c": "degrees Celsius", "_mhz": "MHz", "_mib": "MiB", "_s": "seconds", "_ms": "milliseconds", "_j": "joules"}


def _describe_target(name: str, target: pa.DataType) -> str:
    unit = next((u for suffix, u in _UNIT_OF.items() if name.endswith(suffix)), None)
    return f"{target}" + (f" ({unit})" if unit else "")


def first_index(mask) -> int:
    """Index of the first true value of a boolean (chunked) array, or -1."""
    return pc.index(mask, pa.scalar(True)).as_py()


def coerce_column(label: str, name: str, column: pa.ChunkedArray, target: pa.DataType,
                  whole_floats: bool = False) -> pa.ChunkedArray:
    """``column`` as ``target``, accepting only lossless conversions; else a ValidationError.

    With ``whole_floats``, a float column may fill an integer one when every value is a
    whole number (NaN becomes null): what pandas writes for an integer column with gaps.
    """
    if column.type == target:
        return column
    source = _kind(column.type)
    wanted = _TARGET_KIND[str(target)]
    if source == "null":
        return column.cast(target)
    if whole_floats and wanted == "int" and pa.types.is_floating(column.type):
        column = _nan_to_null(column)
        values = column.drop_null()
        if len(values) == 0 or pc.all(pc.equal(values, pc.floor(values))).as_py():
            return column.cast(target)
    if wanted == "int" and source == "float" and pa.types.is_floating(column.type):
        nan_at = first_index(pc.is_nan(column))
        if nan_at >= 0:
            raise fail(label, f"column {name}", f"has NaN at row {nan_at} (type {column.type})",
                       f"{name} must be {_describe_target(name, target)} in every row: drop or re-record that row")
    ok = (
        source == wanted
        or (wanted == "float" and source == "int")
    )
    if not ok:
        raise fail(label, f"column {name}", f"has type {column.type}, expected {_describe_target(name, target)}",
                   f"write {name} as {target}")
    try:
        return column.cast(target)  # safe cast: an overflow raises
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise fail(label, f"column {name}", f"does not fit {target} ({str(exc).splitlines()[0]})",
                   f"write {name} as {target}") from exc


def _nan_to_null(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Float NaN is stored as null (a value that could not be read)."""
    if column.null_count == len(column):
        return column
    if not pc.any(pc.is_nan(column)).as_py():
        return column
    return pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)


def _clean_bounds(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, tuple | None]:
    """(column with NaN as null, (min, max) of its values or None when all null).

    Fast path: chunks without nulls are reduced with numpy in place (a NaN shows up as a
    NaN min or max); anything else goes through pyarrow compute.
    """
    if column.null_count == len(column):
        return column, None
    floating = pa.types.is_floating(column.type)
    if column.null_count == 0 and column.num_chunks:
        lows, highs = [], []
        for chunk in column.chunks:
            if len(chunk) == 0:
                continue
            values = chunk.to_numpy(zero_copy_only=True)
            lows.append(values.min())
            highs.append(values.max())
        low, high = min(lows), max(highs)
        if not (floating and (np.isnan(low) or np.isnan(high))):
            return column, (float(low), float(high))
    if floating:
        column = _nan_to_null(column)
        if column.null_count == len(column):
            return column, None
    bounds = pc.min_max(column).as_py()
    return column, (bounds["min"], bounds["max"])


def _check_range(label: str, name: str, column: pa.ChunkedArray, low_high: tuple) -> None:
    low, high, unit, hint = TRACE_RANGES[name]
    if low_high[0] >= low and low_high[1] <= high:
        return
    row = first_index(pc.or_(pc.less(column, low), pc.greater(column, high)))
    value = column[row].as_py()
    where, limit = ("below", low) if value < low else ("above", high)
    raise fail(label, f"column {name}", f"is {_show(value)}{(' ' + unit) if unit else ''} at row {row}, {where} {_show(limit)}",
               f"{hint}; fix the units or re-record the trace")


def _check_finite(label: str, name: str, column: pa.ChunkedArray, low_high: tuple) -> None:
    if math.isfinite(low_high[0]) and math.isfinite(low_high[1]):
        return
    row = first_index(pc.is_inf(column))
    raise fail(label, f"column {name}", f"is {column[row].as_py()} at row {row}",
               "a measured value is finite: write null for a value that was not read, or re-record the trace")


def _check_failed_reads(label: str, columns: dict) -> None:
    """A row whose power could not be read (null or NaN power_w) is a failed read.

    A power_w column without any value is a field the source does not record (an
    nvidia-smi log of power.draw.instant only): it marks no row.
    """
    power, ok = columns["power_w"], columns["read_ok"]
    if power.null_count == 0 or power.null_count == len(power):
        return
    row = first_index(pc.and_(pc.is_null(power), ok))
    if row >= 0:
        raise fail(label, "column read_ok", f"is true at row {row}, where power_w is null or NaN (not read)",
                   "a row whose power was not read has read_ok false: fix read_ok, or re-record the trace")


def check_imported_power(label: str, trace: pa.Table) -> None:
    """An imported recording holds power readings in watts: at least one, peaking above
    MIN_PEAK_POWER_W (else its unit is wrong: W values under a [mW] header, or kW)."""
    if trace.num_rows == 0:
        return
    recorded = [n for n in POWER_FIELDS if trace.column(n).null_count < trace.num_rows]
    if not recorded:
        raise fail(label, "column power_w", f"has no power reading in any of its {trace.num_rows:,} rows (every cell failed)",
                   "a recording without power cannot be measured: record with a board that reports power")
    for name in recorded:
        peak = pc.max(trace.column(name)).as_py()
        if peak < MIN_PEAK_POWER_W:
            raise fail(label, f"column {name}", f"peaks at {_show(peak)} W, below {MIN_PEAK_POWER_W:g} W, which no powered GPU draws",
                       "the power unit is wrong (watts written under [mW], or kilowatts under [W]): fix the header's unit")


def distinct_strings(column: pa.ChunkedArray) -> list[str]:
    """The distinct non-null values of a string or dictionary column, in order of first use.

    A dictionary chunk (how a Parquet trace reads its device_uuid) is answered from its
    integer indices: one min/max pass when it uses a single entry, never a hash of every
    row's string.
    """
    found: dict[str, None] = {}
    for chunk in column.chunks:
        if chunk.null_count == len(chunk):
            continue
        if pa.types.is_dictionary(chunk.type):
            bounds = pc.min_max(chunk.indices).as_py()
            used = [bounds["min"]] if bounds["min"] == bounds["max"] else pc.unique(chunk.indices).drop_null().to_pylist()
            values = [chunk.dictionary[i].as_py() for i in used]
        else:
            values = pc.unique(chunk).drop_null().to_pylist()
        for value in values:
            found.setdefault(str(value), None)
    return list(found)


# ---------------------------------------------------------------- trace


@dataclass
class TraceData:
    """A validated trace in the warehouse's column order, with what the tables need of it."""

    table: pa.Table  # WAREHOUSE_TRACE_COLUMNS, canonical types
    device_uuid: str | None
    t_first_ns: int | None
    t_last_ns: int | None

    @property
    def rows(self) -> int:
        return self.table.num_rows


# Columns renamed since the first trace schema (the unit written into the name); a part
# written before the rename is read under today's name, values unchanged (already MiB).
RENAMED_TRACE_COLUMNS = {"vram_used_mb": "vram_used_mib"}  # schema before 012


def upgrade_trace_part(table: pa.Table) -> pa.Table:
    """A trace part written before a column rename, with today's column names."""
    names = table.column_names
    if not any(old in names and new not in names for old, new in RENAMED_TRACE_COLUMNS.items()):
        return table
    return table.rename_columns([RENAMED_TRACE_COLUMNS.get(n, n) if RENAMED_TRACE_COLUMNS.get(n) not in names else n
                                 for n in names])


def _normalize_trace_part(label: str, table: pa.Table, require_all: bool) -> tuple[pa.Table, str | None]:
    table = upgrade_trace_part(table)
    names = set(table.column_names)
    wanted = dict(TRACE_FIELDS) | dict(TRACE_EXTRA_FIELDS)
    columns = {}
    for name, target in wanted.items():
        if name not in names:
            if name in TRACE_EXTRA_FIELDS or (not require_all and name not in ("t_ns", "power_w", "read_ok")):
                columns[name] = null_column(table.num_rows, target)
                continue
            raise fail(label, f"column {name}", "is missing",
                       "a trace has every TRACE_SCHEMA column (agents/trace_schema.py); re-record it with this fleetphysics")
        if name == "device_uuid" and _kind(table.column(name).type) == "str":
            columns[name] = table.column(name)  # not stored per row: only its distinct values are needed
            continue
        columns[name] = coerce_column(label, name, table.column(name), target)

    for name, fix in (("t_ns", "every row needs its tick time: drop the row or re-record"),
                      ("read_ok", "read_ok is true or false in every row")):
        if columns[name].null_count:
            raise fail(label, f"column {name}", f"is null at row {first_index(pc.is_null(columns[name]))}", fix)
    if table.num_rows:
        t = columns["t_ns"].to_numpy()
        back = np.flatnonzero(t[1:] < t[:-1])
        if back.size:
            row = int(back[0]) + 1
            raise fail(label, "column t_ns", f"is not monotonic at row {row} (t_ns {int(t[row]):,} after {int(t[row - 1]):,})",
                       "re-record or sort the trace")
        if t[0] < 0:
            raise fail(label, "column t_ns", f"is {int(t[0]):,} at row 0, below 0",
                       "t_ns is nanoseconds on a clock counting from boot or the epoch, never negative: "
                       "fix the clock or re-record")
        if len(t) > 1 and t[0] == t[-1]:
            raise fail(label, "column t_ns", f"has the same value ({int(t[0]):,}) in all {len(t):,} rows",
                       "a trace's rows are ticks at different times: re-record it, or fix the time column")

    # numpy and pyarrow release the GIL: the bounds of the columns are taken on two threads,
    # then checked in column order so that the first bad column is the one reported.
    bounded = [n for n, target in wanted.items() if pa.types.is_floating(target) or n in TRACE_RANGES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        cleaned = dict(zip(bounded, pool.map(_clean_bounds, [columns[n] for n in bounded])))
    for name in bounded:
        columns[name], low_high = cleaned[name]
        if low_high is not None and pa.types.is_floating(wanted[name]):
            _check_finite(label, name, columns[name], low_high)
        if name in TRACE_RANGES and low_high is not None:
            _check_range(label, name, columns[name], low_high)
    _check_failed_reads(label, columns)

    device_uuid = None
    distinct = distinct_strings(columns["device_uuid"])
    if len(distinct) > 1:
        shown = ", ".join(distinct[:3])
        raise fail(label, "column device_uuid", f"holds {len(distinct)} devices ({shown})",
                   "one device dir holds one device's trace: split the trace per device")
    if distinct:
        device_uuid = distinct[0]
    out = pa.table({name: columns[name] for name in WAREHOUSE_TRACE_COLUMNS})
    return out, device_uuid


def normalize_trace(parts: list[tuple[str, pa.Table]], require_all: bool = True) -> TraceData:
    """Validate trace parts (label, table) in order and return one canonical trace.

    Checks each part's columns and types (all TRACE_SCHEMA columns when ``require_all``,
    else only t_ns, power_w and read_ok), nulls and NaN in t_ns, physical ranges (power
    >= 0, plausible temperature, dt_s >= 0, ...), one device_uuid, and that t_ns never goes
    back across the parts.
    """
    labels, tables, uuids = [], [], []
    for label, table in parts:
        normalized, uuid = _normalize_trace_part(label, table, require_all)
        labels.append(label)
        tables.append(normalized)
        if uuid is not None:
            uuids.append((label, uuid))
    if len({u for _, u in uuids}) > 1:
        (first_label, first), (other_label, other) = uuids[0], next(x for x in uuids if x[1] != uuids[0][1])
        raise fail(other_label, "column device_uuid", f"is {other!r} but {first_label} has {first!r}",
                   "one device dir holds one device's trace: move the part to its own device dir")
    t_first = t_last = None
    previous = None  # (label, last t_ns) of the last non-empty part: parts must join in order
    for label, table in zip(labels, tables):
        if table.num_rows == 0:
            continue
        first = table.column("t_ns")[0].as_py()
        if previous is not None and first < previous[1]:
            raise fail(label, "column t_ns", f"is not monotonic at row 0 (t_ns {first:,} after {previous[1]:,} "
                       f"at the end of {Path(previous[0]).name})", "re-record or sort the trace")
        previous = (label, table.column("t_ns")[-1].as_py())
        t_first = first if t_first is None else t_first
        t_last = previous[1]
    if tables:
        trace = pa.concat_tables(tables)
    else:
        trace = pa.table({n: pa.array([], (TRACE_FIELDS | TRACE_EXTRA_FIELDS)[n]) for n in WAREHOUSE_TRACE_COLUMNS})
    return TraceData(trace, uuids[0][1] if uuids else None, t_first, t_last)


# ---------------------------------------------------------------- markers and events


def _canonical(label: str, table: pa.Table, fields: dict, required: tuple,
               whole_floats: bool = False) -> dict[str, pa.ChunkedArray]:
    names = set(table.column_names)
    columns = {}
    for name, target in fields.items():
        if name not in names:
            if name in required:
                raise fail(label, f"column {name}", "is missing", f"the file needs columns {', '.join(required)}; re-write it")
            columns[name] = null_column(table.num_rows, target)
            continue
        columns[name] = coerce_column(label, name, table.column(name), target, whole_floats)
        if name in required and columns[name].null_count:
            null_at = first_index(pc.is_null(columns[name]))
            if null_at >= 0:
                raise fail(label, f"column {name}", f"is null at row {null_at}", f"every row needs {name}")
    return columns


def normalize_markers(label: str, table: pa.Table) -> pa.Table:
    """Validate markers (MARKER_SCHEMA; t_ns and name required) and add their ``seq``."""
    columns = _canonical(label, table, MARKER_FIELDS, MARKER_REQUIRED)
    attrs = columns["attrs_json"]
    for row, text in enumerate(attrs.to_pylist()):  # markers are few: hundreds, not millions
        if text is None:
            continue
        _, problem, detail = parse_json(text)
        if problem:
            raise fail(label, "column attrs_json", f"{problem} at row {row}" + (f" ({detail})" if detail else ""),
                       "write attrs_json with json.dumps(attrs, sort_keys=True)")
    columns["seq"] = pa.chunked_array([pa.array(np.arange(table.num_rows, dtype=np.int32))])
    return pa.table(columns)


def normalize_events(label: str, table: pa.Table) -> pa.Table:
    """Validate per-event figures (see columns.EVENT_FIELDS); energy_quality upper-cased.

    A ``quality`` column stands for energy_quality when that is absent (what
    experiments.analysis.energy writes); other columns go to ``extra_json`` per event.
    """
    if "energy_quality" not in table.column_names and "quality" in table.column_names:
        table = table.rename_columns(["energy_quality" if n == "quality" else n for n in table.column_names])
    columns = _canonical(label, table, EVENT_FIELDS, EVENT_REQUIRED, whole_floats=True)
    extras = [n for n in table.column_names if n not in EVENT_FIELDS]
    if extras:  # events are few (one per generation or step), so a row loop is fine here
        texts = [json.dumps(clean_json(row), sort_keys=True, default=str) for row in table.select(extras).to_pylist()]
        columns["extra_json"] = pa.chunked_array([pa.array(texts, pa.string())])
    else:
        columns["extra_json"] = null_column(table.num_rows, pa.string())
    ids = columns["event_id"]
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        dup = next(v["values"] for v in counts.to_pylist() if v["counts"] > 1)
        raise fail(label, "column event_id", f"repeats {dup!r}", "give every event its own event_id")
    before = first_index(pc.less(columns["t_end_ns"], columns["t_start_ns"]))
    if before >= 0:
        raise fail(label, "column t_end_ns", f"is before t_start_ns at row {before} "
                   f"({columns['t_end_ns'][before].as_py():,} < {columns['t_start_ns'][before].as_py():,})",
                   "write the event's end after its start")
    for name in ("energy_counter_j", "energy_integrated_j", "energy_net_j", "gap_fraction", "tokens_per_second"):
        columns[name] = _nan_to_null(columns[name])
        infinite = first_index(pc.is_inf(columns[name]))
        if infinite >= 0:
            raise fail(label, f"column {name}", f"is {columns[name][infinite].as_py()} at row {infinite}",
                       "a measured value is finite: write null for a value that was not measured")
    quality = pc.utf8_upper(columns["energy_quality"])
    bad = first_index(pc.invert(pc.is_in(quality, value_set=pa.array(ENERGY_QUALITIES))))
    if bad >= 0 and quality[bad].is_valid:
        raise fail(label, "column energy_quality", f"is {columns['energy_quality'][bad].as_py()!r} at row {bad}",
                   f"use one of {', '.join(ENERGY_QUALITIES)}")
    columns["energy_quality"] = quality
    checks = {
        "batch_size": (1, None, "batch_size is >= 1"),
        "input_tokens": (0, None, "token counts are >= 0"),
        "output_tokens": (0, None, "token counts are >= 0"),
        "energy_counter_j": (0, None, "energy is joules >= 0"),
        "energy_integrated_j": (0, None, "energy is joules >= 0"),
        "gap_fraction": (0, 1, "gap_fraction is a fraction 0..1"),
        "tokens_per_second": (0, None, "tokens_per_second is >= 0"),
    }
    for name, (low, high, hint) in checks.items():
        column = columns[name]
        bad_mask = pc.less(column, low) if high is None else pc.or_(pc.less(column, low), pc.greater(column, high))
        row = first_index(bad_mask)
        if row >= 0:
            raise fail(label, f"column {name}", f"is {_show(column[row].as_py())} at row {row}", hint)
    return pa.table(columns)


# ---------------------------------------------------------------- JSON documents


def _check_schema_version(label: str, doc: dict) -> int:
    version = doc.get("schema_version")
    if version != SUPPORTED_SCHEMA_VERSION or isinstance(version, bool):
        raise fail(label, "field schema_version", f"is {_show(version)}, not a version this fleetphysics reads ({SUPPORTED_SCHEMA_VERSION})",
                   "re-write the file with this fleetphysics, or upgrade fleetphysics")
    return version


def _optional_int(label: str, doc: dict, field: str) -> int | None:
    value = doc.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(label, f"field {field}", f"is {_show(value)}, not an integer", f"write {field} as integer nanoseconds")
    if field.endswith("_wall_ns") and not WALL_NS_RANGE[0] <= value < WALL_NS_RANGE[1]:
        raise fail(label, f"field {field}", f"is {_show(value)}, outside 2000..2100", f"{WALL_NS_HINT}: fix {field}")
    return value


def _optional_bool(label: str, doc: dict, field: str) -> bool | None:
    value = doc.get(field)
    if value is None or isinstance(value, bool):
        return value
    raise fail(label, f"field {field}", f"is {_show(value)}, not true/false", f"write {field} as a JSON boolean")


def _choice(label: str, doc: dict, field: str, allowed: tuple, default=None):
    value = doc.get(field, default)
    if value not in allowed:
        raise fail(label, f"field {field}", f"is {_show(value)}", f"use one of {', '.join(allowed)}")
    return value


def check_run_metadata(label: str, doc) -> dict:
    """Validated run metadata: ids safe, run_state and end_reason known, times ordered."""
    if not isinstance(doc, dict):
        raise fail(label, "document", f"is a {type(doc).__name__}, not a JSON object", "write run_metadata as a JSON object")
    check_json_numbers(label, doc)
    if "schema_version" not in doc:
        doc = upgrade_unversioned_metadata(doc)
    _check_schema_version(label, doc)
    meta = {
        "schema_version": SUPPORTED_SCHEMA_VERSION,
        "run_id": safe_name(doc.get("run_id"), label, "run_id"),
        "host": safe_name(doc.get("host"), label, "host"),
        "device_uid": safe_name(doc.get("device_uid"), label, "device_uid"),
        "run_state": _choice(label, doc, "run_state", RUN_STATES),
        "end_reason": _choice(label, doc, "end_reason", END_REASONS),
        "clock": _choice(label, doc, "clock", CLOCKS, "monotonic"),
        "started_wall_ns": _optional_int(label, doc, "started_wall_ns"),
        "ended_wall_ns": _optional_int(label, doc, "ended_wall_ns"),
        "git_dirty": _optional_bool(label, doc, "git_dirty"),
    }
    fingerprint = doc.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise fail(label, "field fingerprint", f"is {_show(fingerprint)}", "set it to fingerprint.json's fingerprint")
    meta["fingerprint"] = fingerprint
    simulated = doc.get("simulated")
    if not isinstance(simulated, bool):
        raise fail(label, "field simulated", f"is {_show(simulated)}, not true/false", "say whether the device was simulated")
    meta["simulated"] = simulated
    if meta["started_wall_ns"] is not None and meta["ended_wall_ns"] is not None and meta["ended_wall_ns"] < meta["started_wall_ns"]:
        raise fail(label, "field ended_wall_ns", f"({meta['ended_wall_ns']:,}) is before started_wall_ns ({meta['started_wall_ns']:,})",
                   "write the wall-clock end after the start")
    # the values above, then the contract (experiments.contracts.run): the other fields' types, no unknown key
    parse(RunMetadata, label, doc, "write run_metadata as fleetphysics does (experiments/contracts/run.py)")
    meta["git_hash"] = doc.get("git_hash")
    for field in ("config", "library_versions", "checks"):
        meta[field] = doc.get(field)
    meta["raw"] = doc
    return meta


def check_fingerprint(label: str, doc, run_meta: dict) -> dict:
    """Validated fingerprint.json, consistent with the run metadata beside it."""
    if not isinstance(doc, dict):
        raise fail(label, "document", f"is a {type(doc).__name__}, not a JSON object", "write fingerprint as a JSON object")
    check_json_numbers(label, doc)
    device_uid = safe_name(doc.get("device_uid"), label, "device_uid")
    if device_uid != run_meta["device_uid"]:
        raise fail(label, "field device_uid", f"is {device_uid!r} but run_metadata has {run_meta['device_uid']!r}",
                   "the two files must describe the same device")
    fingerprint = doc.get("fingerprint")
    if fingerprint != run_meta["fingerprint"]:
        raise fail(label, "field fingerprint", f"is {_show(fingerprint)} but run_metadata has {run_meta['fingerprint']!r}",
                   "write the same fingerprint in both files")
    fields = doc.get("fields", {})
    if not isinstance(fields, dict):
        raise fail(label, "field fields", f"is a {type(fields).__name__}, not an object", "write fields as a JSON object")
    if "vram_total_mb" in fields and "vram_total_mib" not in fields:  # schema before 012
        fields = {("vram_total_mib" if k == "vram_total_mb" else k): v for k, v in fields.items()}  # schema before 012
    simulated = doc.get("simulated", run_meta["simulated"])
    if not isinstance(simulated, bool):
        raise fail(label, "field simulated", f"is {_show(simulated)}, not true/false", "write simulated as a JSON boolean")
    _check_simulated(label, run_meta, fields, device_uid, simulated)
    parse(Fingerprint, label, doc, "write fingerprint.json as fleetphysics does (experiments/contracts/run.py)")
    key = doc.get("comparability_key")
    return {
        "device_uid": device_uid,
        "fingerprint": fingerprint,
        "comparability_key": None if key is None else str(key),
        "simulated": simulated,
        "fields": fields,
        "raw": doc,
    }


def _check_simulated(label: str, run_meta: dict, fields: dict, device_uid: str, simulated: bool) -> None:
    """Simulated data is always labelled simulated: run metadata and fingerprint agree, and a
    board that shows a simulation's marks (a physics profile's hash, fields.simulated, a SIM-
    device uid) is not called real."""
    if simulated != run_meta["simulated"]:
        raise fail(label, "field simulated", f"is {simulated} but run_metadata has {run_meta['simulated']}",
                   "write the same simulated flag in both files")
    marks = [name for name, present in (
        ("fields.simulated", fields.get("simulated") is True),
        ("fields.profile_sha256", bool(fields.get("profile_sha256"))),
        ("a SIM- device_uid", device_uid.startswith("SIM-")),
    ) if present]
    if marks and not simulated:
        raise fail(label, "field simulated", f"is false on a simulated board ({', '.join(marks)})",
                   "simulated data is always labelled simulated: set simulated to true")


def check_poller_stats(label: str, doc) -> dict | None:
    """Validated poller statistics (None stays None)."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise fail(label, "document", f"is a {type(doc).__name__}, not a JSON object", "write poller_stats as a JSON object")
    check_json_numbers(label, doc)
    for field in ("scheduling_quality", "continuity_quality"):
        if doc.get(field) is not None:
            _choice(label, doc, field, SCHEDULING_QUALITIES)
    parse(PollerStats, label, doc, "write poller_stats.json as the poller does (experiments/contracts/run.py)")
    return doc


def check_experiment(label: str, doc, expected_name: str | None = None):
    """The report read through its contract (``experiments.contracts.read_report``): an
    older version upgraded by its named step, then every field checked strictly; a
    missing, renamed or mistyped field is a one-line error naming ``label`` and the field."""
    if not isinstance(doc, dict):
        raise fail(label, "document", f"is a {type(doc).__name__}, not a JSON object", "write the experiment result as a JSON object")
    check_json_numbers(label, doc)
    name = safe_name(doc.get("experiment"), label, "experiment")
    if expected_name is not None and name != expected_name:
        raise fail(label, "field experiment", f"is {name!r} but the file is named {expected_name}.json",
                   "name the file after its experiment")
    return read_report(label, doc)


def check_choice(label: str, field: str, value, allowed: tuple):
    """``value`` if it is one of ``allowed``; else a ValidationError."""
    if value not in allowed:
        raise fail(label, f"field {field}", f"is {_show(value)}", f"use one of {', '.join(allowed)}")
    return value


clean_json = finite_json  # ``value`` with NaN and infinities as None, so that it dumps as strict JSON


def finite_or_none(value):
    """A float, or None for anything missing, non-numeric, NaN or infinite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
