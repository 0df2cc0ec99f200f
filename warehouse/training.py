"""The training_coupling experiment in the warehouse: training_steps, rle_series, training_coupling.

Loaded, never recomputed. The experiment writes what its analysis computed, with the
settings it ran with: the per-step figures and RLE's 1 s bins as Parquet artifacts
(experiments.contracts.tables: ``training_coupling_steps``, ``training_coupling_rle``) and
the verdict, statistics, RLE's limits and the workload's signature in its report
(``training_coupling.json``). Ingest checks each table against its contract: a missing
table or column, a column of another type, an extra column, a repeated key or a step that
ends before it starts is a ValidationError naming the file and the column. As in
figures.py, a value outside its physical range becomes null (experiment_results keeps the
report as written).

An artifact dir from before the experiments wrote their tables has the report without
them; ingest refuses it with the command that writes them (``fleetphysics reanalyze DIR``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from experiments.contracts.tables import RLE_SERIES, TRAINING_STEPS, ArtifactTable, tables_of

from .figures import quality_of, typed_row
from .validate import fail

EXPERIMENT = "training_coupling"
TABLES = ("training_steps", "rle_series", "training_coupling")
WAREHOUSE_TABLE = {TRAINING_STEPS.name: "training_steps", RLE_SERIES.name: "rle_series"}
VERDICTS = ("coupled", "not coupled", "insufficient data")
FIX = "write the tables with `fleetphysics reanalyze <device dir>` (or run the suite again), then ingest again"
# column -> (low, high) physical range; a value outside becomes null
RANGES = {
    TRAINING_STEPS.name: {"grad_norm": (0, None), "lr": (0, None), "load_level": (0, 1), "energy_j": (0, None),
                          "energy_trace_j": (0, None), "n_samples": (0, None), "power_w": (0, 5000),
                          "temp_c": (-40, 150), "rle": (0, None)},
    RLE_SERIES.name: {"n_reads": (0, None), "util_pct": (0, 100), "power_w": (0, 5000), "temp_c": (-40, 150),
                      "a_load": (0, None), "t_sustain_s": (0, None), "rle": (0, None)},
}

SUMMARY = {  # column -> (kind, low, high[, alternative keys]) read from the report's figures
    "verdict_reason": ("str",), "p_value": ("float", 0, 1), "best_lag": ("int", None, None),
    "correlation": ("float", -1, 1), "target": ("str",), "steps": ("int", 0, None), "n_aligned": ("int", 0, None),
    "aligned_fraction": ("float", 0, 1), "n_collapses": ("int", 0, None),
    "collapse_rate_per_gated_h": ("float", 0, None, ("collapse_rate",)),
    "energy_per_step_median_j": ("float", 0, None, ("energy_per_step_j_median",)),
    "rle_power_limit_w": ("float", 1e-9, None), "rle_slowdown_temp_c": ("float", -40, 200),
}
RATE = {"collapse_rate_per_under_load_h": ("float", 0, None), "gated_h": ("float", 0, None)}
QUALITY = {"alpha": ("float", 0, 1), "power_field": ("str",)}
POWER_FIELDS = ("power_w", "power_instant_w", "power_avg_1s_w")
SIGNATURE = (("power_{}_w", (0, 5000)), ("temp_{}_c", (-40, 150)), ("util_{}_pct", (0, 100)))


def training_tables(experiments: dict[str, dict], tables: dict[str, pa.Table], labels: dict[str, str],
                    simulated: bool) -> dict[str, pa.Table]:
    """The three warehouse tables' rows (without run_id and device_uid) when ``experiments``
    holds a training_coupling report; {} otherwise. ``tables`` maps artifact table name to
    its table, ``labels`` an artifact table name to where it came from (for messages)."""
    doc = experiments.get(EXPERIMENT)
    if not isinstance(doc, dict):
        return {}
    figures = doc.get("figures") if isinstance(doc.get("figures"), dict) else {}
    out = {EXPERIMENT: pa.Table.from_pylist([summary_row(doc, figures, simulated)])}
    for contract in tables_of(EXPERIMENT):
        label = labels.get(contract.name, f"{contract.file_name} (in memory)")
        data = checked_table(contract, tables.get(contract.name), label)
        if data.num_rows:
            out[WAREHOUSE_TABLE[contract.name]] = data
    return out


def checked_table(contract: ArtifactTable, data: pa.Table | None, label: str) -> pa.Table:
    """``data`` in its contract's columns and types, values outside physics nulled (raises
    ValidationError naming ``label`` and the column for anything else)."""
    if data is None:
        raise fail(label, "file", f"is missing; the {contract.experiment} report comes with it ({contract.about})",
                   FIX)
    for field in contract.schema:
        if field.name not in data.column_names:
            raise fail(label, f"column {field.name}", "is missing", FIX)
    for name in data.column_names:
        if contract.schema.get_field_index(name) < 0:
            raise fail(label, f"column {name}", f"is not a column of {contract.name} (experiments/contracts/tables.py)",
                       FIX)
    columns = {}
    for field in contract.schema:
        column = data.column(field.name)
        try:
            columns[field.name] = column.cast(field.type) if column.type != field.type else column
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise fail(label, f"column {field.name}", f"is {column.type}, not {field.type} ({str(exc)[:80]})",
                       FIX) from exc
    table = pa.table(columns, schema=contract.schema)
    for key in contract.key:
        column = table.column(key)
        if column.null_count:
            raise fail(label, f"column {key}", f"has {column.null_count} null values (it keys the rows)", FIX)
        if pc.count_distinct(column).as_py() != table.num_rows:
            raise fail(label, f"column {key}", "repeats a value (it keys the rows: one row each)", FIX)
    if contract is TRAINING_STEPS and table.num_rows:
        start, end = table.column("t_start_ns"), table.column("t_end_ns")
        if start.null_count or end.null_count:
            raise fail(label, "column t_start_ns" if start.null_count else "column t_end_ns", "has null values",
                       FIX)
        if pc.any(pc.less(end, start)).as_py():
            raise fail(label, "column t_end_ns", "is before t_start_ns in a step", FIX)
    for name, (low, high) in RANGES[contract.name].items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, bounded(table.column(name), low, high))
    return table


def bounded(column: pa.ChunkedArray, low: float | None = None, high: float | None = None) -> pa.Array:
    """The column (float64 or int64) with null for NaN, infinities and values outside [low, high]."""
    v = column.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(v)
    with np.errstate(invalid="ignore"):
        if low is not None:
            bad |= v < low
        if high is not None:
            bad |= v > high
    if not bad.any():
        return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return pa.array(np.where(bad, 0.0, v), pa.float64(), mask=bad).cast(column.type)


def summary_row(doc: dict, figures: dict, simulated: bool) -> dict:
    """The training_coupling row: the report's figures (verdict, statistics, RLE's limits,
    the workload's signature)."""

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
    if row["power_field"] not in POWER_FIELDS:
        row["power_field"] = None
    signature = sub("signature")
    for name, (low, high) in SIGNATURE:
        spec = {name.format(q): ("float", low, high) for q in ("p05", "p95")}
        p05, p95 = typed_row(signature, spec).values()
        ok = p05 is not None and p95 is not None and p05 <= p95
        row[name.format("p05")], row[name.format("p95")] = (p05, p95) if ok else (None, None)
    row["quality"] = quality_of(quality) or quality_of(figures.get("quality"))
    return row
