"""A writer killed (SIGKILL) in the middle of a large ingest leaves the warehouse as it was
before that ingest, and ingesting again completes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import warehouse_fixtures as fx
from warehouse.bench import synthetic_trace
from warehouse.ingest import ingest_tables
from warehouse.query import query
from tiers import fast_subset

REPO = Path(__file__).resolve().parents[1]
BIG_ROWS = 1_200_000  # several DuckDB row groups: rows reach the file before the commit

CHILD = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    import warehouse_fixtures as fx
    from warehouse.bench import synthetic_trace
    from warehouse.connection import connect_writer
    from warehouse.ingest import ingest_tables

    path, sentinel, pause_after = sys.argv[1:4]

    class PausingConnection:
        # Passes everything to DuckDB; after the chosen statement, signals and waits to be killed.
        def __init__(self, con):
            self._con = con
        def execute(self, sql, *args, **kwargs):
            result = self._con.execute(sql, *args, **kwargs)
            if sql.lstrip().startswith(pause_after):
                open(sentinel, "w").write(sql[:40])
                time.sleep(120)
            return result
        def __getattr__(self, name):
            return getattr(self._con, name)

    con = connect_writer(path)
    trace = synthetic_trace({rows}, seed=5, device_uuid="GPU-dev-1")
    ingest_tables(PausingConnection(con), fx.run_metadata("run-big", device_uid="dev-1"),
                  fx.fingerprint("dev-1"), trace, None, experiments=fx.experiments(70.0))
""")


def _small_runs(wh: Path) -> None:
    for run, device, rows in (("run-a", "dev-0", 800), ("run-big", "dev-1", 300)):
        trace = fx.make_trace(rows, device_uuid=f"GPU-{device}")
        ingest_tables(wh, fx.run_metadata(run, device_uid=device), fx.fingerprint(device), trace,
                      fx.make_markers(trace), fx.make_events(), fx.experiments(), fx.poller_stats())


# a process killed mid-ingest (~3 s of CPU a case): make test kills it mid-insert and between the
# delete and the insert
@pytest.mark.parametrize("pause_after", fast_subset(["INSERT INTO power_trace", "DELETE FROM power_trace"], keep=0))
def test_killed_ingest_leaves_the_warehouse_consistent(tmp_path, pause_after):
    wh = tmp_path / "w.duckdb"
    _small_runs(wh)
    before = fx.table_fingerprint(wh)
    size_before = wh.stat().st_size
    sentinel = tmp_path / "paused"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), tests=str(REPO / "tests"), rows=BIG_ROWS))
    child = subprocess.Popen([sys.executable, str(script), str(wh), str(sentinel), pause_after],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def uncommitted_rows_reached_the_file():
        if pause_after.startswith("INSERT"):
            assert wh.stat().st_size > size_before

    fx.kill_when_paused(child, sentinel, uncommitted_rows_reached_the_file)

    # Nothing of the killed transaction is visible: the old run-big is still whole.
    assert fx.table_fingerprint(wh) == before
    assert query(wh, "SELECT trace_rows FROM run_devices WHERE run_id = 'run-big'")["trace_rows"].tolist() == [300]

    # Ingesting again completes it.
    trace = synthetic_trace(BIG_ROWS, seed=5, device_uuid="GPU-dev-1")
    ingest_tables(wh, fx.run_metadata("run-big", device_uid="dev-1"), fx.fingerprint("dev-1"), trace, None,
                  experiments=fx.experiments(70.0))
    counts = query(wh, "SELECT run_id, count(*) AS n FROM v_power_trace GROUP BY 1 ORDER BY 1")
    assert counts.values.tolist() == [["run-a", 800], ["run-big", BIG_ROWS]]
    after = fx.table_fingerprint(wh)
    assert after["markers"][0] == before["markers"][0] - 3  # the new run-big has no markers
    assert after["run_devices"][0] == 2 and after["runs"][0] == 2
