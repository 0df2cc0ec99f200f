"""power_trace names one compression method per column (migration 006) instead of letting
DuckDB try them all on every checkpoint. The names must be the ones DuckDB itself picks on
real and simulated traces, or naming them would cost space; and DuckDB must store what the
schema names."""

from __future__ import annotations

import re

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import warehouse_fixtures as fx
from training_fixtures import trace_table
from warehouse.connection import connect_readonly
from warehouse.importers.nvidia_smi import import_nvidia_smi
from warehouse.ingest import ingest_tables
from warehouse.query import fetch_arrow

REAL = [fx.REALDATA / "transient_response_3090_TR", fx.REALDATA / "transient_response_4090_TR"]

STORED = ("SELECT column_name, lower(compression) FROM pragma_storage_info('{table}') "
          "WHERE segment_type <> 'VALIDITY'")


def declared(con) -> dict[str, str]:
    """column -> the compression its DDL names (lower case), from DuckDB's stored CREATE TABLE."""
    sql = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'power_trace'").fetchall()[0][0]
    return {m.group(1): m.group(2).lower() for m in re.finditer(r"(\w+) \w+(?:\(\d+, ?\d+\))? USING COMPRESSION (\w+)", sql)}


def stored(con, table: str) -> dict[str, set[str]]:
    """column -> the compression methods of its stored segments."""
    found: dict[str, set[str]] = {}
    for column, method in con.execute(STORED.format(table=table)).fetchall():
        found.setdefault(column, set()).add(method)
    return found


def duckdb_own_choice(warehouse, tmp_path) -> dict[str, set[str]]:
    """The methods DuckDB picks by itself for the warehouse's trace rows, in a table that
    names none (CREATE TABLE AS from Arrow, in a fresh file, checkpointed by close)."""
    with connect_readonly(warehouse) as con:
        rows = fetch_arrow(con, "SELECT * EXCLUDE (trace_key) FROM power_trace ORDER BY trace_key, t_ns")
    path = tmp_path / "own-choice.duckdb"
    with duckdb.connect(str(path)) as con:
        con.register("rows", rows)
        con.execute("CREATE TABLE own AS SELECT * FROM rows")
    with duckdb.connect(str(path), read_only=True) as con:
        return stored(con, "own")


def assert_named_methods_are_duckdbs_own(warehouse, tmp_path) -> None:
    with connect_readonly(warehouse) as con:
        names, kept = declared(con), stored(con, "power_trace")
    assert {"t_ns", "power_w", "temp_c", "read_ok", "dt_s"} <= set(names) and "energy_j" not in names
    own = duckdb_own_choice(warehouse, tmp_path)
    for column, method in names.items():
        # Constant: a segment of one value is stored as that value whatever the method named.
        assert kept[column] <= {method, "constant"}, (column, method, kept[column])
        if column != "trace_key":
            assert own[column] <= {method, "constant"}, (column, method, own[column])


def test_simulated_trace_is_stored_as_named_and_as_duckdb_would(tmp_path):
    from agents.physics import LoadEdge, render_trace
    from agents.profiles import load_profile

    s = 10**9
    t0 = 1_000 * s
    t_ns = t0 + np.arange(6_000, dtype=np.int64) * fx.PERIOD_NS  # 60 s on the 10 ms grid
    edges = [LoadEdge(t0 + 10 * s, 1.0, vram_mib=20_000), LoadEdge(t0 + 40 * s, 0.0, vram_mib=0)]
    out = render_trace(load_profile("h100-sxm"), edges, t_ns, seed=3)
    trace = trace_table(out, t_ns, "GPU-sim-compression")
    assert not out["read_ok"].all() and np.unique(out["power_w"]).size > 20  # failed reads and real steps

    warehouse = tmp_path / "sim.duckdb"
    ingest_tables(warehouse, fx.run_metadata(), fx.fingerprint(), trace, fx.make_markers(trace))
    assert_named_methods_are_duckdbs_own(warehouse, tmp_path)


@pytest.mark.skipif(not all((d / "gpudata.csv").is_file() for d in REAL),
                    reason=f"real recordings not found at {fx.REALDATA} (the shared/realdata folder beside the repo)")
def test_real_nvidia_smi_traces_are_stored_as_named_and_as_duckdb_would(tmp_path):
    warehouse = tmp_path / "real.duckdb"
    for d in REAL:
        import_nvidia_smi(warehouse, d / "gpudata.csv", d / "timestamps.csv", tz="+01:00")
    assert_named_methods_are_duckdbs_own(warehouse, tmp_path)


def test_a_column_without_runs_is_still_stored_as_named(tmp_path):
    """DuckDB keeps the named method even where another would win: util_gpu that changes on
    every sample stays RLE (this is the cost side of naming methods, and why 006 names them
    only for fields that the sensors update slower than the poller reads)."""
    trace = fx.make_trace(rows=5_000)
    noisy = np.random.default_rng(0).uniform(0, 100, trace.num_rows).round(1)
    trace = trace.set_column(trace.schema.get_field_index("util_gpu"), "util_gpu",
                             pa.array(noisy, trace.schema.field("util_gpu").type))
    warehouse = tmp_path / "noisy.duckdb"
    ingest_tables(warehouse, fx.run_metadata(), fx.fingerprint(), trace, fx.make_markers(trace))
    with connect_readonly(warehouse) as con:
        assert stored(con, "power_trace")["util_gpu"] == {"rle"}
    assert duckdb_own_choice(warehouse, tmp_path)["util_gpu"] != {"rle"}
