"""power_trace stores the sensor columns at the resolution the sensors report (migration 007):
whole milliwatts, 0.01 degree, whole MHz and whole percent in integer types. What the poller,
the simulated devices and nvidia-smi write at that resolution comes back exactly, as DOUBLE,
through v_power_trace; a finer value is rounded to the resolution."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import warehouse_fixtures as fx
from cluster.cli import main
from training_fixtures import trace_table
from warehouse import migrations
from warehouse.connection import connect_readonly, connect_writer
from warehouse.importers.nvidia_smi import read_nvidia_smi
from warehouse.importers.common import write_imported
from warehouse.ingest import ingest_tables
from warehouse.query import fetch_arrow

SENSORS = ("power_w", "power_instant_w", "temp_c", "sm_clock_mhz", "mem_clock_mhz", "util_gpu", "util_mem")
REAL = fx.REALDATA / "transient_response_4090_TR"


def _stored_types(con) -> dict[str, str]:
    return dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() "
                            "WHERE table_name = 'power_trace'").fetchall())


def _view(con, columns) -> pa.Table:
    return fetch_arrow(con, f"SELECT {', '.join(columns)} FROM v_power_trace ORDER BY t_ns")


def test_a_simulated_trace_comes_back_exactly_through_the_view(tmp_path):
    from agents.physics import LoadEdge, SensorModel, Timeline, render_trace
    from agents.profiles import load_profile

    s = 10**9
    t0 = 1_000 * s
    t_ns = t0 + np.arange(3_000, dtype=np.int64) * fx.PERIOD_NS  # 30 s: idle, loaded, idle
    profile = load_profile("h100-sxm")
    edges = [LoadEdge(t0 + 5 * s, 0.7, vram_mib=20_000), LoadEdge(t0 + 20 * s, 0.0, vram_mib=0)]
    out = render_trace(profile, edges, t_ns, seed=11)
    trace = trace_table(out, t_ns, "GPU-sim-types")
    # the idle memory clock is a fraction of the loaded one: whole MHz, as NVML reports it
    assert len(np.unique(out["mem_clock_mhz"])) == 2 and np.all(out["mem_clock_mhz"] == np.round(out["mem_clock_mhz"]))
    timeline = Timeline(profile, t0, seed=11)
    for edge in edges:
        timeline.add_edge(edge)
    one = SensorModel(timeline).read_one(int(t0 + 25 * s))  # the poller's per-sample path
    assert all(float(one[name]) == round(float(one[name])) for name in ("mem_clock_mhz", "util_gpu", "temp_c"))

    warehouse = tmp_path / "sim.duckdb"
    ingest_tables(warehouse, fx.run_metadata(), fx.fingerprint(), trace, fx.make_markers(trace))
    with connect_readonly(warehouse) as con:
        types = _stored_types(con)
        got = _view(con, ("t_ns",) + SENSORS)
    assert types["power_w"] == "DECIMAL(8,3)" and types["util_gpu"] == "UTINYINT" and types["sm_clock_mhz"] == "INTEGER"
    for name in SENSORS:
        assert got.schema.field(name).type == pa.float64(), name
        assert got.column(name).equals(trace.column(name).cast(pa.float64())), name


@pytest.mark.skipif(not (REAL / "gpudata.csv").is_file(),
                    reason=f"real recording not found at {REAL} (the shared/realdata folder beside the repo)")
def test_a_real_nvidia_smi_log_comes_back_exactly_through_the_view(tmp_path):
    run = read_nvidia_smi(REAL / "gpudata.csv", REAL / "timestamps.csv", tz="+01:00")
    warehouse = tmp_path / "real.duckdb"
    write_imported(warehouse, run, "nvidia-smi")
    present = [n for n in SENSORS + ("power_avg_1s_w",) if n in run.trace.column_names
               and run.trace.column(n).null_count < run.trace.num_rows]
    assert {"power_w", "temp_c"} <= set(present)
    with connect_readonly(warehouse) as con:
        got = _view(con, ["t_ns"] + present)
    assert got.num_rows == run.trace.num_rows > 1000
    for name in present:
        assert got.column(name).equals(run.trace.column(name).cast(pa.float64())), name


def test_version_6_rows_are_rounded_to_the_sensor_resolution_in_their_order(tmp_path):
    path = tmp_path / "v6.duckdb"
    con = duckdb.connect(str(path))
    migrations.migrate(con, label=str(path), target=6)
    columns = "trace_key, t_ns, power_w, temp_c, sm_clock_mhz, mem_clock_mhz, util_gpu, power_avg_1s_w, energy_j, read_ok"
    rows = [(1, 30, 123.456, 45.0, 1980.0, 2619.0, 100.0, 99.99, 1234.5678, True),  # at the resolution: exact
            (1, 10, 123.4567, 45.678, 523.8, 523.5, 37.5, None, None, True),      # finer: rounded
            (2, 20, None, None, None, None, None, None, None, False)]
    con.executemany(f"INSERT INTO power_trace ({columns}) VALUES ({', '.join('?' * 10)})", rows)
    con.close()

    con = connect_writer(path)  # applies 007
    try:
        assert migrations.current_version(con) >= 7
        assert _stored_types(con)["temp_c"] == "DECIMAL(5,2)" and _stored_types(con)["energy_j"] == "DOUBLE"
        got = con.execute(f"SELECT {columns} FROM power_trace").fetchall()  # stored order, not t_ns order
        assert [tuple(None if v is None else float(v) if not isinstance(v, (bool, int)) else v for v in row)
                for row in got] == [
            (1, 30, 123.456, 45.0, 1980, 2619, 100, 99.99, 1234.5678, True),
            (1, 10, 123.457, 45.68, 524, 524, 38, None, None, True),  # half away from zero
            (2, 20, None, None, None, None, None, None, None, False)]
        with pytest.raises(duckdb.ConstraintException):
            con.execute("INSERT INTO power_trace (trace_key, t_ns, util_gpu, read_ok) VALUES (3, 1, 101, true)")
    finally:
        con.close()


def test_ingest_rounds_a_value_finer_than_the_sensor_resolution(tmp_path):
    trace = fx.make_trace(rows=200)
    fine = pa.array(np.full(trace.num_rows, 61.2345), pa.float64())
    trace = trace.set_column(trace.schema.get_field_index("power_w"), "power_w", fine)
    warehouse = tmp_path / "fine.duckdb"
    ingest_tables(warehouse, fx.run_metadata(), fx.fingerprint(), trace, fx.make_markers(trace))
    with connect_readonly(warehouse) as con:
        assert con.execute("SELECT DISTINCT power_w FROM v_power_trace").fetchall() == [(61.235,)]


def test_sql_gives_the_stored_decimals_as_numbers(tmp_path, capsys):
    trace = fx.make_trace(rows=50)
    warehouse = tmp_path / "w.duckdb"
    ingest_tables(warehouse, fx.run_metadata(), fx.fingerprint(), trace, fx.make_markers(trace))
    sql = "SELECT power_w, temp_c, util_gpu FROM power_trace ORDER BY t_ns LIMIT 1"  # the table, not the view
    capsys.readouterr()
    code = main(["sql", sql, "--warehouse", str(warehouse), "--json"])
    row = json.loads(capsys.readouterr().out)[0]
    assert code == 0 and all(isinstance(v, (int, float)) for v in row.values()), row
    assert row["power_w"] == trace.column("power_w")[0].as_py()
