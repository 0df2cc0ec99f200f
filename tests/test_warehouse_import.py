"""Importers (nvidia-smi logs, TR122 packs), export back to TR122, Parquet runs as views."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

import warehouse_fixtures as fx
from agents.errors import ReadOnlyViolation, ValidationError
from warehouse.connection import connect_writer
from warehouse.export import export_tr122
from warehouse.importers.nvidia_smi import import_nvidia_smi, parse_tz, read_edges
from warehouse.importers.tr122 import import_tr122
from warehouse.artifacts import ingest_paths
from warehouse.ingest import ingest_tables
from warehouse.query import query
from warehouse.scale import attach_parquet_runs

FIXTURES = Path(__file__).parent / "fixtures" / "warehouse"
REAL = {
    "RTX 3090": fx.REALDATA / "transient_response_3090_TR",
    "RTX 4090": fx.REALDATA / "transient_response_4090_TR",
}
needs_realdata = pytest.mark.skipif(
    not all((d / "gpudata.csv").is_file() for d in REAL.values()),
    reason=f"real recordings not found at {fx.REALDATA} (the shared/realdata folder beside the repo)",
)


@needs_realdata
def test_real_recordings_import_and_look_right(tmp_path):
    wh = tmp_path / "w.duckdb"
    results = {gpu: import_nvidia_smi(wh, d / "gpudata.csv", d / "timestamps.csv", tz="+01:00", gpu_name=gpu)
               for gpu, d in REAL.items()}
    assert results["RTX 3090"]["rows"] == 2308 and results["RTX 4090"]["rows"] == 2311
    for gpu, expect in {"RTX 3090": dict(idle=127.0, peak=(410, 425), instant=True),
                        "RTX 4090": dict(idle=52.0, peak=(380, 400), instant=False)}.items():
        run_id, device = results[gpu]["run_id"], results[gpu]["device_uid"]
        trace = query(wh, "SELECT * FROM v_power_trace WHERE run_id = ? ORDER BY t_ns", [run_id])
        markers = query(wh, "SELECT * FROM markers WHERE run_id = ? ORDER BY seq", [run_id])
        assert device.startswith("smi-")  # no uuid in the log: the file's digest, whatever the flags
        assert trace["read_ok"].all() and (trace["clock"] == "wall").all() and (trace["source"] == "nvidia-smi").all()
        assert (trace["t_ns"] == trace["wall_ns"]).all() and trace["t_ns"].is_monotonic_increasing
        assert 0.005 < trace["dt_s"].median() < 0.015  # sampled every 7 to 14 ms
        load = markers[markers["name"] == "load"]
        assert [json.loads(a)["level"] for a in load["attrs_json"]] == [1.0, 0.0]
        on_ns, off_ns = load["t_ns"].tolist()
        assert 5.5e9 < off_ns - on_ns < 6.5e9  # the load lasts about 6 s
        idle = trace[trace["t_ns"] < on_ns]["power_w"]
        assert abs(idle.median() - expect["idle"]) < 3
        low, high = expect["peak"]
        assert low < trace["power_w"].max() < high and trace["power_w"].min() > 0.8 * expect["idle"]
        during = trace[(trace["t_ns"] > on_ns + 2e9) & (trace["t_ns"] < off_ns)]["power_w"]
        assert during.min() > 0.8 * low  # the trace and the edges share one time base (the --tz is right)
        fast = "power_instant_w" if expect["instant"] else "power_w"
        first_high = trace[(trace["t_ns"] > on_ns) & (trace[fast] > (expect["idle"] + low) / 2)]["t_ns"].iloc[0]
        assert 0 < first_high - on_ns < 1e9  # the sensor answers within a second of the edge
        if gpu == "RTX 3090":  # power.draw.average -> power_w, power.draw (1 s average) kept beside it
            assert trace["power_avg_1s_w"].notna().all() and trace["power_instant_w"].max() > 400
        else:
            assert trace["power_avg_1s_w"].isna().all() and trace["power_instant_w"].isna().all()
    runs = query(wh, "SELECT simulated, run_state, end_reason, host, clock FROM run_devices")
    assert runs.values.tolist() == [[False, "completed", "completed", "imported", "wall"]] * 2


@needs_realdata
def test_reimporting_the_same_log_replaces_the_run(tmp_path):
    wh = tmp_path / "w.duckdb"
    d = REAL["RTX 4090"]
    import_nvidia_smi(wh, d / "gpudata.csv", d / "timestamps.csv", tz="+01:00", gpu_name="RTX 4090")
    before = fx.table_fingerprint(wh)
    import_nvidia_smi(wh, d / "gpudata.csv", d / "timestamps.csv", tz="+01:00", gpu_name="RTX 4090")
    assert fx.table_fingerprint(wh) == before


def test_nvidia_smi_units_failed_reads_and_edges(tmp_path):
    wh = tmp_path / "w.duckdb"
    result = import_nvidia_smi(wh, FIXTURES / "smi_mixed_units.csv", FIXTURES / "smi_edges.csv", tz="+01:00")
    assert result["rows"] == 40 and result["device_uid"] == "GPU-1234-abcd"  # the logged uuid
    trace = query(wh, "SELECT * FROM v_power_trace ORDER BY t_ns")
    first = trace.iloc[0]
    assert first["t_ns"] == 1688840856000000000  # 19:27:36 at UTC+01:00
    assert first["power_w"] == 60.0 and first["power_avg_1s_w"] == 60.0  # from .average [W] and power.draw [mW]
    assert first["power_instant_w"] == 61.0  # "61.00 W": a unit in the cell is accepted
    assert first["vram_used_mib"] == pytest.approx(1024)  # MiB stays MiB, the trace's memory unit
    assert first["util_gpu"] == 0.0 and first["sm_clock_mhz"] == 210.0 and first["pstate"] == 8
    assert first["device_uuid"] == "GPU-1234-abcd"
    failed = trace[~trace["read_ok"]]
    assert failed.index.tolist() == [5, 7, 9]  # [N/A], [Unknown Error], [Not Supported]: rows kept
    assert failed["power_instant_w"].isna().tolist() == [True, False, False]
    assert failed["power_w"].isna().tolist() == [False, True, False]
    assert failed["temp_c"].isna().tolist() == [False, False, True]
    markers = query(wh, "SELECT t_ns, name, attrs_json FROM markers ORDER BY seq")
    assert markers.values.tolist() == [[1688840857500000000, "load", '{"level": 1.0}'],
                                       [1688840859000000000, "load", '{"level": 0.0}']]
    meta = json.loads(query(wh, "SELECT metadata_json FROM run_devices")["metadata_json"].iloc[0])
    assert meta["config"]["file"] == "smi_mixed_units.csv" and meta["config"]["tz"] == "+01:00"
    assert str(FIXTURES) not in json.dumps(meta)  # no machine paths in the warehouse


def test_edge_file_rules(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("timestamp\n1688840857\n1688840857\n1688840863\n1688840869\n")
    assert read_edges(path).tolist() == [1688840857 * 10**9, 1688840863 * 10**9, 1688840869 * 10**9]
    path.write_text("t\n1688840857595\n1688840863524\n")
    assert read_edges(path).tolist() == [1688840857595 * 10**6, 1688840863524 * 10**6]
    assert parse_tz("+01:00") == 3600 * 10**9 and parse_tz("-0530") == -(5 * 3600 + 1800) * 10**9 and parse_tz("Z") == 0


def test_odd_last_edge_closes_the_idle_period(tmp_path):
    edges = tmp_path / "edges.csv"
    edges.write_text("timestamp\n1688840857500000\n1688840859000000\n1688840859500000\n")
    wh = tmp_path / "w.duckdb"
    import_nvidia_smi(wh, FIXTURES / "smi_mixed_units.csv", edges, tz="+01:00")
    names = query(wh, "SELECT name FROM markers ORDER BY seq")["name"].tolist()
    assert names == ["load", "load", "load_edges_end"]


def test_tr122_export_round_trip(tmp_path):
    wh = tmp_path / "w.duckdb"
    trace = fx.make_trace(700)
    ingest_tables(wh, fx.run_metadata("run-rt"), fx.fingerprint(), trace, fx.make_markers(trace), fx.make_events(),
                  fx.experiments(62.0), fx.poller_stats())
    out = tmp_path / "pack"
    result = export_tr122(wh, "run-rt", out)
    assert result["rows"] == 700 and sorted(p.name for p in out.iterdir()) == sorted(result["files"])
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # the staging folder was renamed
    header = (out / "power_trace.csv").read_text().splitlines()[0]
    assert header == "t_ns,power_w,temp_c,sm_clock_mhz,mem_clock_mhz,util_gpu,util_mem,vram_used_mib,read_ok,dt_s"
    assert json.loads((out / "baseline.json").read_text())["idle_w"] == 62.0
    assert len((out / "generation_events.jsonl").read_text().splitlines()) == 4

    other = tmp_path / "other.duckdb"
    back = import_tr122(other, out)
    assert back == {"run_id": "run-rt", "device_uid": "dev-0", "rows": 700}
    original = query(wh, "SELECT t_ns, power_w, temp_c, read_ok, dt_s FROM v_power_trace ORDER BY t_ns")
    copy = query(other, "SELECT t_ns, power_w, temp_c, read_ok, dt_s FROM v_power_trace ORDER BY t_ns")
    assert copy.equals(original)
    assert query(other, "SELECT idle_robust_w FROM baselines")["idle_robust_w"].tolist() == [62.0]
    events = query(other, "SELECT energy_integrated_j, energy_net_j, energy_quality FROM events ORDER BY event_id")
    assert events.iloc[0].tolist() == [99.0, 70.0, "GOOD"]
    assert query(other, "SELECT fingerprint, comparability_key, source FROM v_run_constants").iloc[0].tolist() == [
        "fp-dev-0", "sim-a100", "tr122"]

    with pytest.raises(ValidationError, match="already exists and is not an empty folder"):
        export_tr122(wh, "run-rt", out)
    with pytest.raises(ValidationError, match="run 'nope' is not in the warehouse"):
        export_tr122(wh, "nope", tmp_path / "x")


def test_tr122_pack_with_only_the_required_columns(tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "power_trace.csv").write_text("t_ns,power_w\n1000,50.5\n2000,[N/A]\n3000,52\n")
    (pack / "baseline.json").write_text(json.dumps({"idle_w": 50.0, "n": 100}))
    wh = tmp_path / "w.duckdb"
    result = import_tr122(wh, pack)
    assert result["rows"] == 3 and result["run_id"].startswith("tr122-")
    trace = query(wh, "SELECT power_w, read_ok, dt_s, temp_c FROM v_power_trace ORDER BY t_ns")
    assert trace["read_ok"].tolist() == [True, False, True] and trace["temp_c"].isna().all()
    assert trace["dt_s"].tolist()[1:] == [1e-6, 1e-6]
    assert query(wh, "SELECT idle_robust_w, n_samples FROM baselines").iloc[0].tolist() == [50.0, 100]
    assert query(wh, "SELECT clock FROM run_devices")["clock"].tolist() == ["monotonic"]


def test_attach_parquet_runs_exposes_a_folder_of_runs(tmp_path):
    root = tmp_path / "out"
    fx.write_device_dir(root, "run-p1", "host-a", "dev-0", rows=300, parts=3)
    fx.write_device_dir(root, "run-p1", "host-b", "dev-1", rows=200, parts=1)
    fx.write_device_dir(root, "run-p2", "host-a", "dev-0", rows=100, parts=2)
    wh = tmp_path / "w.duckdb"
    con = connect_writer(wh)  # an admin connection: external access on
    try:
        assert attach_parquet_runs(con, root) == ["parquet_power_trace", "parquet_markers"]
        rows = con.execute("SELECT run_id, host, device_uid, count(*), min(t_ns) > 0 FROM parquet_power_trace "
                           "GROUP BY ALL ORDER BY ALL").fetchall()
        assert rows == [("run-p1", "host-a", "dev-0", 300, True), ("run-p1", "host-b", "dev-1", 200, True),
                        ("run-p2", "host-a", "dev-0", 100, True)]
        assert con.execute("SELECT count(*) FROM parquet_markers WHERE name = 'load'").fetchall() == [(6,)]
        attach_parquet_runs(con, root, prefix="shared", temporary=False)
    finally:
        con.close()
    with pytest.raises(ReadOnlyViolation, match="file and network access is disabled"):
        query(wh, "SELECT count(*) FROM shared_power_trace")  # readers cannot follow it to the files
    con = duckdb.connect(str(wh))
    try:
        assert con.execute("SELECT count(*) FROM shared_power_trace").fetchall() == [(600,)]
    finally:
        con.close()
    assert ingest_paths(wh, [root])  # the same folder can still be ingested whole
