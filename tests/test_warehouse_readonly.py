"""The read-only surface: refusals, row and time limits, missing files, lock retries."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import warehouse_fixtures as fx
from agents.errors import ReadOnlyViolation, ValidationError, WarehouseError
from warehouse.connection import connect_readonly, connect_writer, readonly
from warehouse.ingest import ingest_tables
from warehouse.query import query

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    path = tmp_path_factory.mktemp("ro") / "w.duckdb"
    trace = fx.make_trace(500)
    ingest_tables(path, fx.run_metadata(), fx.fingerprint(), trace, fx.make_markers(trace))
    return path


REFUSED = {
    "INSERT INTO hosts (host) VALUES ('x')": "INSERT statements are refused",
    "CREATE TABLE t (a INTEGER)": "CREATE statements are refused",
    "CREATE TEMP TABLE t AS SELECT 1": "CREATE statements are refused",
    "DROP TABLE power_trace": "DROP statements are refused",
    "DELETE FROM power_trace": "DELETE statements are refused",
    "UPDATE hosts SET cpu_model = 'x'": "UPDATE statements are refused",
    "COPY hosts TO 'hosts.csv'": "COPY statements are refused",
    "ATTACH 'other.duckdb'": "ATTACH statements are refused",
    "INSTALL httpfs": "statements are refused",
    "SET enable_external_access = true": "SET statements are refused",
    "SELECT 1; DELETE FROM hosts": "2 statements given",
    "SELECT * FROM read_csv('/etc/passwd')": "file and network access is disabled",
    "SELECT * FROM read_text('/etc/passwd')": "file and network access is disabled",
    "SELECT * FROM read_parquet('x.parquet')": "file and network access is disabled",
    "SELECT * FROM glob('/etc/*')": "file and network access is disabled",
}


@pytest.mark.parametrize("sql", sorted(REFUSED))
def test_writes_and_file_access_are_refused(wh, sql):
    before = fx.table_fingerprint(wh)
    with pytest.raises(ReadOnlyViolation) as info:
        query(wh, sql)
    assert REFUSED[sql] in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 2
    assert fx.table_fingerprint(wh) == before


def test_selects_views_and_parameters_work(wh):
    df = query(wh, "SELECT count(*) AS n FROM v_power_trace WHERE run_id = ?", ["run-0001"])
    assert df["n"].tolist() == [500] and df.attrs["truncated"] is False
    assert "v_fleet_latest" in query(wh, "SHOW TABLES")["name"].tolist()
    assert len(query(wh, "DESCRIBE v_fleet_latest")) > 20
    assert len(query(wh, "EXPLAIN SELECT * FROM v_fleet_latest")) >= 1


def test_row_limit(wh):
    df = query(wh, "SELECT * FROM range(25000)")
    assert len(df) == 10_000 and df.attrs["truncated"] is True
    df = query(wh, "SELECT * FROM range(25000)", max_rows=5)
    assert df["range"].tolist() == [0, 1, 2, 3, 4] and df.attrs["truncated"] is True
    assert query(wh, "SELECT * FROM range(5)", max_rows=5).attrs["truncated"] is False


def test_time_limit_interrupts_the_query(wh):
    start = time.monotonic()
    with pytest.raises(WarehouseError, match="time limit"):
        query(wh, "SELECT sum(hash(a.range * b.range)) FROM range(1000000) a, range(1000000) b", timeout_s=0.5)
    assert time.monotonic() - start < 10


def test_bad_sql_is_bad_input(wh):
    with pytest.raises(ValidationError, match="^sql: .*nope"):
        query(wh, "SELECT * FROM nope")
    with pytest.raises(ValidationError, match="^sql: cannot parse"):
        query(wh, "SELEC 1")


def test_missing_warehouse_says_how_to_make_one(tmp_path):
    with pytest.raises(WarehouseError, match="fleetphysics run.*fleetphysics ingest"):
        query(tmp_path / "nothing.duckdb", "SELECT 1")
    with pytest.raises(WarehouseError, match="no warehouse file"):
        connect_readonly(tmp_path / "nothing.duckdb")
    assert not (tmp_path / "nothing.duckdb").exists()


def test_readonly_context_manager(wh):
    with readonly(wh) as con:
        assert con.execute("SELECT count(*) FROM run_devices").fetchall() == [(1,)]


HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from warehouse.connection import connect_writer
    con = connect_writer(sys.argv[1])
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    print("released", flush=True)
    time.sleep(30)
""")


def _hold(path: Path, seconds: float, tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER.format(repo=str(REPO)))
    child = subprocess.Popen([sys.executable, str(script), str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


@pytest.mark.realtime  # a child holds the lock for 2 s of wall clock
def test_readers_and_writers_wait_for_the_lock_then_say_who_holds_it(tmp_path):
    path = tmp_path / "w.duckdb"
    connect_writer(path).close()
    child = _hold(path, 2.0, tmp_path)
    try:
        with pytest.raises(WarehouseError, match=rf"held by process {child.pid} for more than 0.3 s"):
            connect_readonly(path, timeout_s=0.3)
        with pytest.raises(WarehouseError, match=rf"held by process {child.pid}.*this writer could not open it"):
            connect_writer(path, timeout_s=0.3)
        df = query(path, "SELECT count(*) AS n FROM runs", lock_timeout_s=30)  # retries until released
        assert df["n"].tolist() == [0]
        assert child.stdout.readline().strip() == "released"  # it could only open after the writer let go
    finally:
        child.kill()
        child.wait()


def test_two_readers_of_one_file_in_one_process(tmp_path):
    """Streamlit serves every session from one process: readers must not trip on each other."""
    from warehouse.connection import connect_readonly, connect_writer

    path = tmp_path / "w.duckdb"
    connect_writer(path).close()
    a = connect_readonly(path)
    b = connect_readonly(path)
    try:
        assert a.execute("SELECT count(*) FROM runs").fetchall() == b.execute("SELECT count(*) FROM runs").fetchall()
        assert b.execute("SELECT current_setting('lock_configuration')").fetchall()[0][0] is True
    finally:
        a.close()
        b.close()
