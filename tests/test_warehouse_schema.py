"""Schema files, migrations and the column contracts the warehouse mirrors."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from agents.errors import WarehouseError
from agents.trace_schema import MARKER_SCHEMA, THERMAL_MASK, THROTTLE_MASK, TRACE_SCHEMA
from warehouse import columns, migrations
from warehouse.connection import MIN_DUCKDB, connect_readonly, connect_writer, require_duckdb

VIEWS = ("v_power_trace", "v_power_trace_values", "v_run_quality", "v_run_constants", "v_fleet_latest", "v_baseline_compare",
         "v_equilibrium_compare", "v_vram_cliff_compare", "v_joule_compare", "v_device_drift",
         "v_training_coupling_compare")


def test_columns_mirror_the_trace_and_marker_contracts():
    assert columns.TRACE_FIELDS == {f.name: f.type for f in TRACE_SCHEMA}
    assert columns.MARKER_FIELDS == {f.name: f.type for f in MARKER_SCHEMA}
    assert (columns.THROTTLE_MASK, columns.THERMAL_MASK) == (THROTTLE_MASK, THERMAL_MASK)


def test_migrations_are_numbered_without_gaps():
    found = migrations.available_migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert migrations.latest_version() >= 4


def test_new_warehouse_has_every_table_and_view(tmp_path):
    con = connect_writer(tmp_path / "w.duckdb")
    try:
        names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        versions = [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()]
    finally:
        con.close()
    for table in ("hosts", "devices", "fingerprints", "runs", "run_devices", "power_trace", "markers", "events",
                  "poller_stats", "baselines", "instrument_response", "vram_cliff", "vram_cliff_points",
                  "vram_cliff_probes", "joule_curve", "joule_fit", "heat_soak", "heat_soak_series",
                  "throttle_events", "experiment_results", "schema_version", "training_steps", "rle_series",
                  "training_coupling"):
        assert table in names
    for view in VIEWS:
        assert view in names
    assert versions == list(range(1, migrations.latest_version() + 1))


def test_opening_a_version_1_file_upgrades_it_and_keeps_its_rows(tmp_path):
    path = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(path))
    migrations.migrate(con, label=str(path), target=1)
    assert migrations.current_version(con) == 1
    con.execute("""INSERT INTO run_devices (run_id, device_uid, trace_key, host, fingerprint, simulated, run_state,
                   end_reason, trace_rows, metadata_json, ingested_at, started_wall_ns)
                   VALUES ('r1', 'd1', 1, 'h1', 'fp1', true, 'completed', 'completed', 1, '{}', now(), 5)""")
    con.execute("INSERT INTO power_trace (trace_key, t_ns, power_w, read_ok) VALUES (1, 10, 55.5, true)")
    with pytest.raises(duckdb.Error):
        con.execute("SELECT clock FROM run_devices")  # added by 002
    con.close()

    con = connect_writer(path)  # applies 002 onwards
    try:
        assert migrations.current_version(con) == migrations.latest_version()
        assert con.execute("SELECT clock, source FROM run_devices").fetchall() == [("monotonic", "artifact")]
        assert con.execute("SELECT power_w, power_avg_1s_w FROM power_trace").fetchall() == [(55.5, None)]
        assert con.execute("SELECT run_id, device_uid FROM v_fleet_latest").fetchall() == [("r1", "d1")]
        assert con.execute("SELECT count(*) FROM v_power_trace WHERE run_id = 'r1'").fetchall() == [(1,)]
    finally:
        con.close()


def test_a_version_4_trace_keeps_its_rows_in_order_gains_the_power_avg_check_and_named_compression(tmp_path, capsys):
    path = tmp_path / "v4.duckdb"
    con = duckdb.connect(str(path))
    migrations.migrate(con, label=str(path), target=4)
    # Out of t_ns order on purpose: the copy must keep the stored order, not sort it.
    rows = [(1, 30, 50.0, None, True), (1, 10, None, 20.5, False), (2, 20, 60.25, 6000.0, True)]
    con.executemany("INSERT INTO power_trace (trace_key, t_ns, power_w, power_avg_1s_w, read_ok) VALUES (?, ?, ?, ?, ?)",
                    rows)  # 6000 W: version 4 had no CHECK on power_avg_1s_w
    con.execute("DELETE FROM power_trace WHERE power_avg_1s_w > 5000")
    con.close()

    capsys.readouterr()
    con = connect_writer(path)  # applies 005 and 006
    err = capsys.readouterr().err
    assert "upgrading" in err and "from schema version 4 to" in err and "005_power_trace_checks" in err
    assert "006_power_trace_compression" in err
    try:
        assert migrations.current_version(con) == migrations.latest_version() >= 6
        table_sql = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'power_trace'").fetchall()[0][0]
        assert "t_ns BIGINT USING COMPRESSION BitPacking NOT NULL" in table_sql  # 006 names each method
        assert "power_w DECIMAL(8,3) USING COMPRESSION RLE" in table_sql and "energy_j DOUBLE," in table_sql  # 007
        got = con.execute("SELECT trace_key, t_ns, power_w, power_avg_1s_w, read_ok FROM power_trace").fetchall()
        assert got == rows[:2]
        with pytest.raises(duckdb.ConstraintException):
            con.execute("INSERT INTO power_trace (trace_key, t_ns, power_avg_1s_w, read_ok) VALUES (3, 1, 6000, true)")
        for column, bad in (("power_w", -1), ("temp_c", 151), ("util_gpu", 101), ("dt_s", -0.01), ("pstate", 33)):
            with pytest.raises(duckdb.ConstraintException):
                con.execute(f"INSERT INTO power_trace (trace_key, t_ns, {column}, read_ok) VALUES (3, 1, ?, true)", [bad])
        con.execute("INSERT INTO power_trace (trace_key, t_ns, power_w, temp_c, read_ok) VALUES (3, 1, NULL, NULL, false)")
        assert con.execute("SELECT count(*) FROM v_power_trace").fetchall() == [(0,)]  # no run_devices rows yet
    finally:
        con.close()


def test_a_file_from_a_newer_fleetphysics_is_refused(tmp_path):
    path = tmp_path / "future.duckdb"
    connect_writer(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version (version, name) VALUES (99, 'future')")
    con.close()
    for opener in (connect_writer, connect_readonly):
        with pytest.raises(WarehouseError, match="schema version 99 is newer"):
            opener(path)


def test_check_constraints_hold_the_physics(tmp_path):
    con = connect_writer(tmp_path / "w.duckdb")
    try:
        for bad in ("INSERT INTO power_trace (trace_key, t_ns, power_w, read_ok) VALUES (1, 1, -1.0, true)",
                    "INSERT INTO power_trace (trace_key, t_ns, temp_c, read_ok) VALUES (1, 1, 400.0, true)",
                    "INSERT INTO power_trace (trace_key, t_ns, dt_s, read_ok) VALUES (1, 1, -0.01, true)",
                    """INSERT INTO run_devices (run_id, device_uid, trace_key, host, fingerprint, simulated,
                       run_state, end_reason, trace_rows, metadata_json, ingested_at)
                       VALUES ('r', 'd', 1, 'h', 'f', true, 'finished', 'completed', 0, '{}', now())"""):
            with pytest.raises(duckdb.ConstraintException):
                con.execute(bad)
        # NaN has no DECIMAL: the sensor columns' types refuse it before any CHECK (007)
        for column in ("power_w", "temp_c", "util_gpu", "sm_clock_mhz"):
            with pytest.raises(duckdb.ConversionException):
                con.execute(f"INSERT INTO power_trace (trace_key, t_ns, {column}, read_ok) VALUES (1, 1, 'nan'::DOUBLE, true)")
    finally:
        con.close()


@pytest.mark.parametrize("version, ok", [("1.1.3", False), ("1.4.5", False), ("1.5.6", False), ("2.0.0", True),
                                         ("2.0.1", True), ("2.1.0-dev42", True), ("10.0.0", True)])
def test_duckdb_older_than_the_minimum_is_named_with_its_fix(version, ok):
    if ok:
        require_duckdb("w.duckdb", version)
        return
    with pytest.raises(WarehouseError) as err:
        require_duckdb("w.duckdb", version)
    message = str(err.value)
    assert message.startswith("w.duckdb: ") and f"DuckDB {version}" in message and "pip install 'duckdb>=2.0'" in message
    assert "\n" not in message


def test_openers_refuse_an_old_duckdb_before_touching_the_file(tmp_path, monkeypatch):
    existing = tmp_path / "w.duckdb"
    connect_writer(existing).close()
    before = existing.read_bytes()
    monkeypatch.setattr(duckdb, "__version__", "1.4.5")
    with pytest.raises(WarehouseError, match="DuckDB 1.4.5"):
        connect_writer(tmp_path / "new.duckdb")
    assert not (tmp_path / "new.duckdb").exists()
    for opener in (connect_writer, connect_readonly):
        with pytest.raises(WarehouseError, match="needs DuckDB 2.0 or newer"):
            opener(existing)
    assert existing.read_bytes() == before


def test_pyproject_asks_for_the_duckdb_the_warehouse_needs():
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()  # tomllib is 3.11+, we run on 3.10
    assert re.findall(r'"(duckdb[^"]*)"', pyproject) == ["duckdb>=" + ".".join(map(str, MIN_DUCKDB))]


def test_vram_mib_migration_converts_the_decimal_mib_rows_of_a_warehouse_written_by_the_schema_before(tmp_path):
    """NVML-read memory of real devices and nvidia-smi imports were decimal MB; the simulated
    boards', the TR122 packs' and the allocator's figures were MiB already and stay."""
    mib_version = next(m.version for m in migrations.available_migrations() if m.name == "vram_mib")
    path = tmp_path / "before.duckdb"
    con = duckdb.connect(str(path))
    migrations.migrate(con, label=str(path), target=mib_version - 1)
    runs = [("r-gpu", "GPU-1", 1, False, "artifact"), ("r-sim", "SIM-1", 2, True, "artifact"),
            ("r-smi", "smi-1", 3, False, "nvidia-smi"), ("r-tr", "tr-1", 4, False, "tr122")]
    for run_id, uid, key, sim, source in runs:
        con.execute("""INSERT INTO run_devices (run_id, device_uid, trace_key, host, fingerprint, simulated, run_state,
                       end_reason, trace_rows, metadata_json, ingested_at, source)
                       VALUES (?, ?, ?, 'h', ?, ?, 'completed', 'completed', 1, '{}', now(), ?)""",
                    [run_id, uid, key, f"fp-{uid}", sim, source])
        con.execute("INSERT INTO devices (device_uid, host, vram_total_mib, simulated) VALUES (?, 'h', 85520.0, ?)",
                    [uid, sim])
        con.execute("""INSERT INTO fingerprints (fingerprint, device_uid, simulated, vram_total_mib, fields_json)
                       VALUES (?, ?, ?, 85520.0, '{}')""", [f"fp-{uid}", uid, sim])
        con.execute("INSERT INTO power_trace (trace_key, t_ns, vram_used_mib, read_ok) VALUES (?, 1, 1048.576, true)",
                    [key])
        con.execute("""INSERT INTO vram_cliff_probes (run_id, device_uid, probe_idx, nvml_used_mib, reserved_mib)
                       VALUES (?, ?, 0, 1048.576, 500.0)""", [run_id, uid])
    con.close()

    con = connect_writer(path)
    try:
        assert migrations.current_version(con) == migrations.latest_version()
        got = dict(con.execute("""SELECT rd.device_uid, pt.vram_used_mib FROM power_trace pt
                                  JOIN run_devices rd USING (trace_key)""").fetchall())
        assert got["GPU-1"] == pytest.approx(1000.0) and got["smi-1"] == pytest.approx(1000.0)  # 1048.576 MB = 1000 MiB
        assert got["SIM-1"] == pytest.approx(1048.576) and got["tr-1"] == pytest.approx(1048.576)  # MiB already
        probes = dict(con.execute("SELECT device_uid, nvml_used_mib FROM vram_cliff_probes").fetchall())
        assert probes["GPU-1"] == pytest.approx(1000.0) and probes["SIM-1"] == pytest.approx(1048.576)
        assert con.execute("SELECT DISTINCT reserved_mib FROM vram_cliff_probes").fetchall() == [(500.0,)]  # allocator MiB
        totals = dict(con.execute("SELECT device_uid, vram_total_mib FROM devices").fetchall())
        assert totals["GPU-1"] == pytest.approx(81558.2, abs=0.1) and totals["SIM-1"] == 85520.0
        fps = dict(con.execute("SELECT device_uid, vram_total_mib FROM fingerprints").fetchall())
        assert fps["GPU-1"] == pytest.approx(81558.2, abs=0.1) and fps["smi-1"] == 85520.0
    finally:
        con.close()
