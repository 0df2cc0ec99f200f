"""Ingest of artifact dirs and in-memory Arrow tables: counts, idempotency, typed tables."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import warehouse_fixtures as fx
from agents.errors import ValidationError
from warehouse.connection import connect_writer
from warehouse.artifacts import find_device_dirs, ingest_paths
from warehouse.ingest import ingest_tables, summarize
from warehouse.query import query


@pytest.fixture
def artifacts(tmp_path):
    root = tmp_path / "out"
    fx.write_device_dir(root, "run-0001", "host-a", "dev-0", throttle_from=500)
    fx.write_device_dir(root, "run-0001", "host-a", "dev-1", seed=1, idle_w=64.0)
    fx.write_device_dir(root, "run-0002", "host-b", "dev-0", seed=2, idle_w=61.0,
                        meta_over={"started_wall_ns": fx.T0_WALL_NS + 10**12, "ended_wall_ns": fx.T0_WALL_NS + 2 * 10**12})
    return root


def _one(path, sql, params=None):
    return query(path, sql, params).iloc[0].tolist()


def test_device_run_and_root_dirs_are_found(artifacts):
    assert len(find_device_dirs(artifacts)) == 3
    assert len(find_device_dirs(artifacts / "run-0001")) == 2
    assert find_device_dirs(artifacts / "run-0001" / "host-a" / "dev-0") == [artifacts / "run-0001" / "host-a" / "dev-0"]
    (artifacts / "run-0001" / "host-a" / "dev-0" / "tr122").mkdir()
    (artifacts / "run-0001" / "host-a" / "dev-0" / "tr122" / "run_metadata.json").write_text("{}")
    assert len(find_device_dirs(artifacts)) == 3  # a pack inside a device dir is not a device dir


def test_ingest_root_writes_every_table(artifacts, tmp_path):
    wh = tmp_path / "w.duckdb"
    runs = summarize(ingest_paths(wh, [artifacts]))
    assert runs == [{"run_id": "run-0001", "devices": ["dev-0", "dev-1"], "rows": 4000},
                    {"run_id": "run-0002", "devices": ["dev-0"], "rows": 2000}]
    state = fx.table_fingerprint(wh)
    counts = {t: n for t, (n, _) in state.items()}
    assert counts["power_trace"] == 6000
    assert counts["run_devices"] == 3 and counts["runs"] == 2 and counts["devices"] == 2 and counts["hosts"] == 2
    assert counts["markers"] == 9 and counts["events"] == 12 and counts["poller_stats"] == 3
    assert counts["experiment_results"] == 15
    assert counts["baselines"] == 3 and counts["instrument_response"] == 6  # the suite's baseline: power_w
    assert counts["vram_cliff"] == 3 and counts["vram_cliff_points"] == 6 and counts["vram_cliff_probes"] == 6
    assert counts["joule_curve"] == 9 and counts["joule_fit"] == 3 and counts["heat_soak"] == 3
    assert counts["heat_soak_series"] == 60  # 20 s traces, 1 s bins (no series in the figures)
    assert counts["throttle_events"] == 1
    # the trace keeps every poller field, and device_uuid comes back through the view
    assert _one(wh, "SELECT device_uuid, count(*) FROM v_power_trace WHERE run_id = 'run-0001' AND device_uid = 'dev-1' "
                    "GROUP BY 1") == ["GPU-dev-1", 2000]
    assert _one(wh, "SELECT count(*) FROM power_trace WHERE dt_s IS NULL") == [3]  # first rows: NaN stored as null


def test_ingest_reports_each_device_dir_validated_then_written(artifacts, tmp_path):
    calls = []
    ingest_paths(tmp_path / "w.duckdb", [artifacts], progress=lambda *call: calls.append(call))
    assert calls == [("validating", i, 3) for i in range(4)] + [("writing", i, 3) for i in range(4)]

    (artifacts / "run-0002" / "host-b" / "dev-0" / "run_metadata.json").write_text("{not json")
    calls.clear()
    with pytest.raises(ValidationError, match="not valid JSON"):
        ingest_paths(tmp_path / "w2.duckdb", [artifacts], progress=lambda *call: calls.append(call))
    assert calls[-1] == ("validating", 2, 3) and not [c for c in calls if c[0] == "writing"]


def test_three_ingests_give_the_same_warehouse(artifacts, tmp_path):
    wh = tmp_path / "w.duckdb"
    ingest_paths(wh, [artifacts])
    first = fx.table_fingerprint(wh)
    ingest_paths(wh, [artifacts])
    ingest_paths(wh, [artifacts / "run-0001"])
    assert fx.table_fingerprint(wh) == first


def test_reingest_replaces_a_changed_run(artifacts, tmp_path):
    wh = tmp_path / "w.duckdb"
    ingest_paths(wh, [artifacts])
    fx.write_device_dir(artifacts, "run-0001", "host-a", "dev-0", rows=500, parts=1, with_events=False, idle_w=70.0)
    (artifacts / "run-0001" / "host-a" / "dev-0" / "events.parquet").unlink()
    for part in (artifacts / "run-0001" / "host-a" / "dev-0" / "power_trace").glob("part-0000[1-9].parquet"):
        part.unlink()
    ingest_paths(wh, [artifacts / "run-0001" / "host-a" / "dev-0"])
    assert _one(wh, "SELECT trace_rows FROM run_devices WHERE run_id = 'run-0001' AND device_uid = 'dev-0'") == [500]
    assert _one(wh, "SELECT count(*) FROM v_power_trace WHERE run_id = 'run-0001' AND device_uid = 'dev-0'") == [500]
    assert _one(wh, "SELECT count(*) FROM events WHERE run_id = 'run-0001' AND device_uid = 'dev-0'") == [0]
    assert _one(wh, "SELECT idle_robust_w FROM baselines WHERE run_id = 'run-0001' AND device_uid = 'dev-0' "
                    "AND field = 'power_w'") == [70.0]
    assert _one(wh, "SELECT count(*) FROM power_trace") == [4500]


def test_typed_tables_and_views_carry_the_figures(artifacts, tmp_path):
    wh = tmp_path / "w.duckdb"
    ingest_paths(wh, [artifacts])
    latest = query(wh, "SELECT * FROM v_fleet_latest ORDER BY device_uid").set_index("device_uid")
    assert list(latest.index) == ["dev-0", "dev-1"]
    dev0 = latest.loc["dev-0"]
    assert dev0["run_id"] == "run-0002"  # the later run of dev-0
    assert dev0["idle_robust_w"] == 61.0 and dev0["idle_sem_w"] == 0.05 and not dev0["fake_idle"]
    assert dev0["power_w_rise_ms"] == 900.0 and dev0["power_instant_w_rise_ms"] == 250.0
    assert dev0["power_instant_w_response_quality"] == "unresolved"
    assert dev0["vram_max_context_batch1"] == 30000 and dev0["vram_max_context_max_batch"] == 4000
    assert dev0["vram_cliff_quality"] == "good"  # from the checks that ran
    assert dev0["j_per_token_batch1"] == 2.0 and dev0["j_per_token_max_batch"] == 0.4
    assert dev0["max_batch_size"] == 8 and dev0["joule_phase"] == "decode"
    assert dev0["tau_s"] == 120.0 and dev0["t_inf_c"] == 78.0 and dev0["equilibrium_kind"] == "predicted"
    assert dev0["run_quality"] == "strict" and bool(dev0["simulated"])
    assert bool(latest.loc["dev-1"]["throttled"]) is False
    drift = query(wh, "SELECT run_id, run_seq, idle_delta_w FROM v_device_drift WHERE device_uid = 'dev-0' ORDER BY run_seq")
    assert drift["run_id"].tolist() == ["run-0001", "run-0002"] and drift["idle_delta_w"].iloc[1] == 1.0
    compare = query(wh, "SELECT device_uid, peers, peer_median_idle_w FROM v_baseline_compare ORDER BY device_uid")
    assert compare["peers"].tolist() == [2, 2] and compare["peer_median_idle_w"].iloc[0] == 62.5
    for view in ("v_equilibrium_compare", "v_vram_cliff_compare", "v_joule_compare"):
        assert len(query(wh, f"SELECT * FROM {view}")) == 2
    throttle = query(wh, "SELECT * FROM throttle_events")
    assert throttle["samples"].tolist() == [50] and bool(throttle["thermal"].iloc[0])
    assert abs(throttle["duration_s"].iloc[0] - 0.5) < 0.01
    run1 = query(wh, "SELECT throttled, throttle_events FROM v_run_constants WHERE run_id = 'run-0001' AND device_uid = 'dev-0'")
    assert bool(run1["throttled"].iloc[0]) and run1["throttle_events"].iloc[0] == 1


def test_the_stored_payload_is_the_contracts_document(artifacts, tmp_path):
    wh = tmp_path / "w.duckdb"
    ingest_paths(wh, [artifacts / "run-0002"])
    payload = _one(wh, "SELECT payload_json FROM experiment_results WHERE experiment = 'heat_soak'")[0]
    doc = json.loads(payload)
    assert doc["schema_version"] == 2 and doc["figures"]["thermal_trip"] is None  # absent: null, never left out
    assert _one(wh, "SELECT json_extract_string(payload_json, '$.figures.tau_s') FROM experiment_results "
                    "WHERE experiment = 'heat_soak'") == ["120.0"]


@pytest.mark.parametrize("name, doc, words", [
    ("baseline", {"experiment": "baseline", "schema_version": 1,
                  "figures": {"idle_robust_w": "not a number", "fake_idle": 3}},
     ["field simulated is missing", "figures.idle_robust_w is not a field"]),
    ("vram_cliff", {"experiment": "vram_cliff", "schema_version": 2, "simulated": True, "quality": {}, "checks": {},
                    "source": None, "raw": None, "probes": None}, ["field figures is missing"]),
    ("mystery", {"experiment": "mystery", "schema_version": 1, "figures": {"x": 1}},
     ["field experiment is 'mystery'", "no contract"]),
])
def test_figures_are_read_strictly(artifacts, tmp_path, name, doc, words):
    d = artifacts / "run-0002" / "host-b" / "dev-0"
    (d / f"{name}.json").write_text(json.dumps(doc))
    (d / "notes.json").write_text(json.dumps({"comment": "not an experiment"}))  # not a report: skipped
    wh = tmp_path / "w.duckdb"
    with pytest.raises(ValidationError) as err:
        ingest_paths(wh, [d])
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(d / f"{name}.json")), message
    assert all(w in message for w in words), message
    assert not wh.exists()


def test_compacted_single_file_trace_and_a_lost_run(tmp_path):
    root = tmp_path / "out"
    d = fx.write_device_dir(root, "run-0003", "host-a", "dev-0", parts=3)
    table = pa.concat_tables([pq.read_table(p) for p in sorted((d / "power_trace").glob("*.parquet"))])
    pq.write_table(table, d / "power_trace.parquet")
    shutil.rmtree(d / "power_trace")
    lost = fx.write_device_dir(root, "run-0003", "host-a", "dev-9", meta_over={"run_state": "lost", "end_reason": "lost"})
    shutil.rmtree(lost / "power_trace")
    wh = tmp_path / "w.duckdb"
    runs = summarize(ingest_paths(wh, [root]))
    assert runs == [{"run_id": "run-0003", "devices": ["dev-0", "dev-9"], "rows": 2000}]
    assert _one(wh, "SELECT run_quality, trace_rows FROM v_run_constants WHERE device_uid = 'dev-9'") == ["failed", 0]


def test_ingest_tables_from_memory(tmp_path):
    wh = tmp_path / "w.duckdb"
    trace = fx.make_trace(1000)
    result = ingest_tables(wh, fx.run_metadata("run-mem"), fx.fingerprint(), trace, fx.make_markers(trace),
                           fx.make_events(), fx.experiments(), fx.poller_stats())
    assert result == {"run_id": "run-mem", "device_uid": "dev-0", "rows": 1000}
    assert _one(wh, "SELECT source, clock, trace_rows FROM run_devices") == ["arrow", "monotonic", 1000]
    con = connect_writer(wh)  # an open connection works too, and stays open
    try:
        ingest_tables(con, fx.run_metadata("run-mem"), fx.fingerprint(), trace.to_pandas(), None)  # pandas too
        assert con.execute("SELECT count(*) FROM markers").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM power_trace").fetchall() == [(1000,)]
    finally:
        con.close()


def test_in_memory_errors_name_the_input(tmp_path):
    trace = fx.make_trace(100).drop_columns(["temp_c"])
    with pytest.raises(ValidationError, match=r"^power_trace \(in memory\): column temp_c is missing"):
        ingest_tables(tmp_path / "w.duckdb", fx.run_metadata(), fx.fingerprint(), trace, None)
    assert not (tmp_path / "w.duckdb").exists()  # validation runs before the file is even opened


def test_pandas_style_events_are_accepted(tmp_path):
    """experiments/ writes events from pandas: float batch sizes with gaps, 'quality', extra columns."""
    events = pa.table({
        "event_id": ["a", "b"], "phase": ["prefill", "decode"], "batch_size": [1.0, float("nan")],
        "t_start_ns": [1, 5], "t_end_ns": [2, 9], "quality": ["good", "BILLABLE"],
        "duration_s": [1e-9, 4e-9], "sigma_e_j": [0.1, float("nan")],
    })
    wh = tmp_path / "w.duckdb"
    ingest_tables(wh, fx.run_metadata(), fx.fingerprint(), fx.make_trace(100), None, events)
    rows = query(wh, "SELECT event_id, batch_size, energy_quality, extra_json FROM events ORDER BY event_id")
    assert rows["energy_quality"].tolist() == ["GOOD", "BILLABLE"]
    assert rows["batch_size"].iloc[0] == 1 and rows["batch_size"].isna().iloc[1]
    assert json.loads(rows["extra_json"].iloc[1]) == {"duration_s": 4e-9, "sigma_e_j": None}


@pytest.mark.parametrize("rows", [0, 1, 65_535, 65_536, 65_537, 200_000])
def test_null_column_has_the_rows_all_null_and_the_type(rows):
    from warehouse.columns import null_column

    col = null_column(rows, pa.float64())
    assert len(col) == rows and col.null_count == rows and col.type == pa.float64()
    assert pa.table({"x": col}).to_pandas()["x"].isna().all()


def test_any_bits_finds_a_bit_in_any_block():
    import numpy as np

    from warehouse.ingest import _any_bits

    values = np.zeros(1000, dtype=np.int64)
    assert not _any_bits(values, 0b1100, block=64)
    values[999] = 0b0100  # in the last, partial block
    assert _any_bits(values, 0b1100, block=64)
    values[999] = 0b0001  # a bit outside the mask
    assert not _any_bits(values, 0b1100, block=64)
    assert not _any_bits(np.zeros(0, dtype=np.int64), 0b1100)


def test_distinct_strings_reads_dictionaries_through_their_indices():
    from warehouse.validate import distinct_strings

    def dictionary(indices, values):
        return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(values))

    # An unused dictionary entry is not a device; nulls are not either.
    one = pa.chunked_array([dictionary([1, 1, None], ["GPU-unused", "GPU-a"])])
    assert distinct_strings(one) == ["GPU-a"]
    two = pa.chunked_array([dictionary([0, 0], ["GPU-a", "GPU-b"]), dictionary([1, 0, 1], ["GPU-a", "GPU-b"])])
    assert distinct_strings(two) == ["GPU-a", "GPU-b"]
    plain = pa.chunked_array([pa.array(["GPU-b", None, "GPU-a", "GPU-b"])])
    assert distinct_strings(plain) == ["GPU-b", "GPU-a"]
    assert distinct_strings(pa.chunked_array([pa.array([None, None], pa.string())])) == []
