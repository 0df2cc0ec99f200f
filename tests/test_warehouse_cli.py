"""The warehouse's CLI subcommands and benchmarks, through a parser built as cluster/cli.py does."""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path

import duckdb
import pytest

import warehouse_fixtures as fx
from agents.errors import ConfigError, FleetPhysicsError
from cluster import analyze_commands
from warehouse import bench, cli
from warehouse.connection import connect_writer

FIXTURES = Path(__file__).parent / "fixtures" / "warehouse"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Parse and run like cluster.cli.main: (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="fleetphysics")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    analyze_commands.register(sub)
    bench_sub = sub.add_parser("bench").add_subparsers(dest="bench_command")
    bench.register(bench_sub)
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except FleetPhysicsError as exc:
        print(f"fleetphysics: {exc}", file=sys.stderr)
        code = exc.exit_code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def root(tmp_path):
    out = tmp_path / "out"
    fx.write_device_dir(out, "run-c1", "host-a", "dev-0")
    fx.write_device_dir(out, "run-c1", "host-a", "dev-1", seed=1)
    fx.write_device_dir(out, "run-c2", "host-a", "dev-0", seed=2)
    return out


def test_ingest_prints_what_it_wrote(root, tmp_path, capsys):
    wh = str(tmp_path / "w.duckdb")
    code, out, _ = run(["ingest", str(root / "run-c2"), "--warehouse", wh, "--json"], capsys)
    assert code == 0 and json.loads(out) == {"run_id": "run-c2", "devices": ["dev-0"], "rows": 2000}
    code, out, _ = run(["ingest", str(root), "--warehouse", wh], capsys)
    assert code == 0 and [r["run_id"] for r in json.loads(out)] == ["run-c1", "run-c2"]


def test_warehouse_default_comes_from_the_environment(root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLEETPHYSICS_WAREHOUSE", str(tmp_path / "env.duckdb"))
    code, _, _ = run(["ingest", str(root / "run-c2")], capsys)
    assert code == 0 and (tmp_path / "env.duckdb").is_file()


def test_import_commands(tmp_path, capsys):
    wh = str(tmp_path / "w.duckdb")
    code, out, _ = run(["import", "nvidia-smi", str(FIXTURES / "smi_mixed_units.csv"), "--edges",
                        str(FIXTURES / "smi_edges.csv"), "--tz", "+01:00", "--gpu-name", "Test GPU",
                        "--warehouse", wh, "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["rows"] == 40 and result["devices"] == ["GPU-1234-abcd"]  # the log's uuid
    code, _, err = run(["import", "nvidia-smi", str(FIXTURES / "smi_mixed_units.csv"), "--tz", "+1",
                        "--warehouse", wh], capsys)
    assert code == 2 and err.startswith("fleetphysics: --tz: '+1'") and err.count("\n") == 1
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "power_trace.csv").write_text("t_ns,power_w\n1,50\n2,51\n")
    code, out, _ = run(["import", "tr122", str(pack), "--warehouse", wh, "--json"], capsys)
    assert code == 0 and json.loads(out)["rows"] == 2


def test_sql_output_formats_and_refusals(root, tmp_path, capsys):
    wh = str(tmp_path / "w.duckdb")
    run(["ingest", str(root), "--warehouse", wh], capsys)
    code, out, _ = run(["sql", "SELECT device_uid, run_id FROM v_fleet_latest ORDER BY 1", "--warehouse", wh,
                        "--json"], capsys)
    assert code == 0 and json.loads(out) == [{"device_uid": "dev-0", "run_id": "run-c2"},
                                             {"device_uid": "dev-1", "run_id": "run-c1"}]
    code, out, _ = run(["sql", "SELECT 1 AS a, 'x' AS b", "--warehouse", wh, "--csv"], capsys)
    assert out == "a,b\n1,x\n"
    code, out, err = run(["sql", "SELECT * FROM range(5)", "--warehouse", wh, "--max-rows", "2"], capsys)
    assert code == 0 and len(out.splitlines()) == 3 and "showing the first 2 rows" in err
    for bad in ("INSERT INTO hosts (host) VALUES ('x')", "COPY hosts TO 'x.csv'", "SELECT * FROM read_csv('/etc/passwd')"):
        code, out, err = run(["sql", bad, "--warehouse", wh], capsys)
        assert code == 2 and out == "" and err.count("\n") == 1
    code, _, err = run(["sql", "SELECT 1", "--warehouse", str(tmp_path / "none.duckdb")], capsys)
    assert code == 1 and "fleetphysics ingest" in err


def test_export_command(root, tmp_path, capsys):
    wh = str(tmp_path / "w.duckdb")
    run(["ingest", str(root), "--warehouse", wh], capsys)
    code, _, err = run(["export", "--run", "run-c1", "--format", "tr122", "--out", str(tmp_path / "p"), "--warehouse", wh], capsys)
    assert code == 2 and "pass --device-uid" in err
    code, out, _ = run(["export", "--run", "run-c1", "--device-uid", "dev-1", "--format", "tr122", "--out", str(tmp_path / "p"),
                        "--warehouse", wh, "--json"], capsys)
    assert code == 0 and json.loads(out)["device_uid"] == "dev-1" and (tmp_path / "p" / "power_trace.csv").is_file()


def test_analyze_loads_the_run_and_calls_the_analysis(root, tmp_path, monkeypatch, capsys):
    wh = str(tmp_path / "w.duckdb")
    run(["ingest", str(root / "run-c1"), "--warehouse", wh], capsys)
    seen = []

    def analyze(trace_df, markers_df, **kw):
        seen.append((list(trace_df.columns), len(trace_df), list(markers_df["name"])))
        return {"n": len(trace_df), "mean_power_w": float(trace_df["power_w"].mean())}

    monkeypatch.setitem(sys.modules, "experiments.analysis.heat_soak", types.SimpleNamespace(analyze=analyze))
    # what this analysis returns is not a heat-soak report: storing it is refused, naming the contract's field
    code, _, err = run(["analyze", "--run", "run-c1", "--device-uid", "dev-1", "--experiment", "heat_soak",
                        "--warehouse", wh, "--json"], capsys)
    assert code == 2 and "breaks the report's contract: field" in err and len(err.strip().splitlines()) == 1
    seen.clear()
    code, out, _ = run(["analyze", "--run", "run-c1", "--device-uid", "dev-1", "--experiment", "heat_soak",
                        "--no-store", "--warehouse", wh, "--json"], capsys)
    assert code == 0 and json.loads(out)["result"]["n"] == 2000
    columns, rows, marker_names = seen[0]
    assert columns[:3] == ["t_ns", "wall_ns", "device_uuid"] and "power_avg_1s_w" in columns and rows == 2000
    assert marker_names == ["phase_start", "load", "load"]
    code, out, _ = run(["analyze", "--run", "run-c1", "--experiment", "heat_soak", "--no-store", "--warehouse", wh,
                        "--json"], capsys)
    assert [r["device_uid"] for r in json.loads(out)] == ["dev-0", "dev-1"]


def test_analyze_without_the_analysis_module_is_a_config_error(root, tmp_path, monkeypatch, capsys):
    wh = str(tmp_path / "w.duckdb")
    run(["ingest", str(root / "run-c2"), "--warehouse", wh], capsys)
    monkeypatch.setitem(sys.modules, "experiments.analysis.baseline", None)
    with pytest.raises(ConfigError, match="experiments.analysis.baseline is not available"):
        analyze_commands._analysis_module("baseline")
    code, _, err = run(["analyze", "--run", "run-c2", "--experiment", "baseline", "--warehouse", wh], capsys)
    assert code == 2 and "is not available" in err


def test_bench_ingest_reports_its_keys(capsys):
    code, out, _ = run(["bench", "ingest", "--rows", "20000", "--sample-rows", "200", "--repeats", "2", "--json"],
                       capsys)
    result = json.loads(out)
    assert code == 0 and list(result)[:5] == ["rows", "seconds", "rows_per_s", "executemany_rows_per_s", "ratio"]
    assert result["rows"] == 20000 and result["ratio"] > 1
    assert result["repeats"] == 2 and len(result["seconds_each"]) == 2
    assert sorted(result["seconds_each"])[0] <= result["seconds"] <= sorted(result["seconds_each"])[1]
    assert result["duckdb_floor_rows_per_s"] > 0 and result["of_floor"] > 0
    machine = result["machine"]
    assert machine["cpu_cores"] == os.cpu_count() and machine["duckdb"] == duckdb.__version__
    assert isinstance(machine["cpu_model"], str)
    # this ingest's own CPU time, not the process's since it started: no more than every core for the whole median
    assert 0 <= result["cpu_s"] <= max(result["seconds_each"]) * machine["cpu_cores"] + 0.02


def test_bench_ingest_unchecked_times_a_trace_table_without_its_checks(capsys, tmp_path):
    code, out, _ = run(["bench", "ingest", "--rows", "20000", "--sample-rows", "200", "--repeats", "1",
                        "--unchecked", "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["unchecked_rows_per_s"] > 0 and "checks_s" in result

    checked, bare = tmp_path / "checked.duckdb", tmp_path / "bare.duckdb"
    connect_writer(checked).close()
    bench._drop_trace_constraints(bare)
    columns = "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'power_trace' ORDER BY column_index"
    checks = "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'power_trace' AND constraint_type = 'CHECK'"
    stored_sql = "SELECT sql FROM duckdb_tables() WHERE table_name = 'power_trace'"
    with connect_writer(checked) as a, connect_writer(bare) as b:
        assert a.execute(columns).fetchall() == b.execute(columns).fetchall()
        # the same storage: each column keeps its named compression, only the CHECKs go
        assert "USING COMPRESSION RLE" in b.execute(stored_sql).fetchall()[0][0]
        assert bench.bare_trace_ddl(a) == bench.bare_trace_ddl(b) == b.execute(stored_sql).fetchall()[0][0]
        assert a.execute(checks).fetchall()[0][0] >= 11 and b.execute(checks).fetchall()[0][0] == 0
        b.execute("INSERT INTO power_trace (trace_key, t_ns, read_ok, power_w) VALUES (1, 0, true, 6000)")
        with pytest.raises(duckdb.ConstraintException):
            a.execute("INSERT INTO power_trace (trace_key, t_ns, read_ok, power_w) VALUES (1, 0, true, 6000)")


def test_bench_ingest_reports_its_repeats_and_the_executemany_sample():
    calls = []
    bench.bench_ingest(rows=3000, sample_rows=95, repeats=2, progress=lambda *call: calls.append(call))
    assert [c for c in calls if c[0] == "ingest repeats"] == [("ingest repeats", i, 2) for i in range(3)]
    sample = [c[1] for c in calls if c[0] == "executemany sample"]
    assert sample[0] == 0 and sample[-1] == 95 and sample == sorted(sample) and len(sample) == 11


def test_bench_views_reports_its_keys(capsys):
    code, out, _ = run(["bench", "views", "--rows", "3000", "--runs", "6", "--devices", "3", "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["rows"] == 3000 and result["runs"] == 6 and result["latest_rows"] == 3
    assert {"build_s", "query_s"} <= set(result) and result["machine"]["duckdb"] == duckdb.__version__
