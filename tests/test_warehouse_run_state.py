"""Run-level state: runs.run_state and run_hosts (warehouse.run_state, migration *_run_state.sql)."""

from __future__ import annotations

import duckdb
import pytest

from agents.errors import ValidationError
from warehouse.artifacts import ingest_paths
from warehouse.run_state import record_run_state
from warehouse_fixtures import table_fingerprint, write_device_dir

RUN = "run-0001"
T = 1_700_000_000_000_000_000


def _hosts():
    return {
        "ubuntu-a1b2c3d4": {"node_id": "a1b2c3d4" + "0" * 48, "hostname": "ubuntu", "state": "done", "reason": None,
                            "first_seen_wall_ns": T, "last_seen_wall_ns": T + 60_000_000_000},
        "ubuntu-ffee0011": {"node_id": "ffee0011" + "0" * 48, "hostname": "ubuntu", "state": "lost",
                            "reason": "The node with node id ffee0011 has been marked dead",
                            "first_seen_wall_ns": T, "last_seen_wall_ns": T + 20_000_000_000},
        "head": {"node_id": "0123" + "0" * 52, "hostname": "head", "state": "skipped",
                 "reason": "nothing to measure: no NVIDIA GPU", "first_seen_wall_ns": T, "last_seen_wall_ns": T},
    }


@pytest.fixture
def warehouse(tmp_path):
    """A warehouse holding one device of each of the run's two measured hosts."""
    for host, dev in (("ubuntu-a1b2c3d4", "dev-0"), ("ubuntu-ffee0011", "dev-1")):
        write_device_dir(tmp_path / "runs", RUN, host, dev, rows=500, with_events=False, with_experiments=False)
    path = tmp_path / "fleet.duckdb"
    ingest_paths(path, [tmp_path / "runs"])
    return path


def test_which_runs_were_partial_and_why_is_a_query(warehouse):
    assert record_run_state(warehouse, RUN, "partial", _hosts()) == {"run_id": RUN, "run_state": "partial", "hosts": 3}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.sql("SELECT run_id, run_state FROM runs").fetchall() == [(RUN, "partial")]
        rows = con.sql("""SELECT host, state, reason, devices_stored, trace_rows_stored, last_seen > first_seen
                          FROM v_run_hosts WHERE run_state = 'partial' ORDER BY host""").fetchall()
    assert rows == [("head", "skipped", "nothing to measure: no NVIDIA GPU", 0, 0, False),
                    ("ubuntu-a1b2c3d4", "done", None, 1, 500, True),
                    ("ubuntu-ffee0011", "lost", "The node with node id ffee0011 has been marked dead", 1, 500, True)]


def test_recording_again_replaces_the_hosts_and_reingest_keeps_the_state(warehouse, tmp_path):
    record_run_state(warehouse, RUN, "partial", _hosts())
    record_run_state(warehouse, RUN, "completed", {"h": {"state": "done"}})
    ingest_paths(warehouse, [tmp_path / "runs"])  # a device ingested again never resets the run's state
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.sql("SELECT run_state FROM runs").fetchall() == [("completed",)]
        assert con.sql("SELECT host, state FROM run_hosts").fetchall() == [("h", "done")]


def test_a_run_with_no_stored_device_still_gets_its_state(tmp_path):
    path = tmp_path / "fleet.duckdb"
    record_run_state(path, "run-9", "failed", {"gpu-1": {"state": "failed", "reason": "no module named 'duckdb'"}})
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.sql("SELECT run_id, run_state FROM runs").fetchall() == [("run-9", "failed")]


@pytest.mark.parametrize("run_state, hosts, words", [
    ("finished", {}, "field run_state"),
    ("partial", {"h": {"state": "gone", "reason": "x"}}, "field state"),
    ("partial", {"h": {"state": "lost"}}, "field reason"),
    ("partial", {"../h": {"state": "done"}}, "field host"),
    ("partial", {"h": {"state": "done", "first_seen_wall_ns": 5, "last_seen_wall_ns": 4}}, "last_seen_wall_ns"),
])
def test_bad_state_is_one_line_and_leaves_the_warehouse_as_it_was(warehouse, run_state, hosts, words):
    before = table_fingerprint(warehouse)
    with pytest.raises(ValidationError) as err:
        record_run_state(warehouse, RUN, run_state, hosts)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert table_fingerprint(warehouse) == before
