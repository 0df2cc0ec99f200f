"""Issue 22, the dashboard: a viewer must not be able to make ingests fail (defect 3), and
what viewers see and download (defect 9): formulas in CSV downloads, the warehouse's path,
and a `fleetphysics dashboard` that stops its server when it is stopped."""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

import warehouse_fixtures as fx
from agents.errors import WarehouseError
from warehouse.connection import WRITER_LOCK_TIMEOUT_S, connect_writer
from warehouse.ingest import ingest_tables

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dashboard" / "app.py"
FORMULA_GPU = "=cmd|' /C calc'!A0"
SLOW_SQL = "SELECT sum(hash(a.range * b.range)) AS s FROM range(1000000) a, range(1000000) b"


@pytest.fixture
def wh(tmp_path):
    path = tmp_path / "viewer-test.duckdb"
    trace = fx.make_trace(300)
    ingest_tables(path, fx.run_metadata(), fx.fingerprint(fields={"gpu_name": FORMULA_GPU, "vram_total_mib": 1}),
                  trace, fx.make_markers(trace))
    return path


def _app(monkeypatch, warehouse, query_params: dict | None = None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FLEETPHYSICS_WAREHOUSE", str(warehouse))
    at = AppTest.from_file(str(APP), default_timeout=60)
    for key, value in (query_params or {}).items():
        at.query_params[key] = value
    return at


def _texts(at) -> str:
    parts = []
    for kind in ("markdown", "caption", "title", "info", "warning", "error", "code", "text"):
        parts += [str(e.value) for e in at.get(kind)]
    for df in at.dataframe:
        parts.append(df.value.to_csv(index=False))
    return "\n".join(parts)


# ---------------------------------------------------------------- defect 3: viewers and writers


def test_the_file_is_free_between_the_queries_of_one_request(wh):
    """A page held the shared connection from its first query to the end of its script run
    (charts drawn, CSVs encoded): an ingest could not get the file in between."""
    from dashboard import data

    with data.reading(str(wh)):
        assert data.frame("SELECT 7 AS a")["a"].tolist() == [7]
        connect_writer(wh, timeout_s=0.5).close()  # the page is still running, the file is free
        assert data.frame("SELECT 8 AS a")["a"].tolist() == [8]
    assert not data._SHARED


@pytest.mark.realtime  # a query running for a second of wall clock, then cancelled within 3 s
def test_a_query_is_cancelled_when_its_session_ends(wh, monkeypatch):
    """Streamlit asks a run to stop when its session disconnects; a query inside DuckDB never
    saw that and held the file until its time limit."""
    from streamlit.runtime.scriptrunner_utils import script_run_context
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequests

    from dashboard import data

    requests = ScriptRequests()
    ctx = type("Ctx", (), {"script_requests": requests})()
    monkeypatch.setattr(script_run_context, "get_script_run_ctx", lambda suppress_warning=False: ctx)
    outcome = {}

    def viewer() -> None:
        try:
            with data.reading(str(wh)):
                data.frame(SLOW_SQL, timeout_s=120)
        except WarehouseError as exc:
            outcome["error"] = str(exc)
        outcome["done"] = time.monotonic()

    thread = threading.Thread(target=viewer, daemon=True)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive(), outcome
    stopped = time.monotonic()
    requests.request_stop()  # what Streamlit does when the browser tab closes
    thread.join(10)
    assert not thread.is_alive(), "the query kept running after its session ended"
    assert "cancelled" in outcome["error"] and outcome["done"] - stopped < 3
    connect_writer(wh, timeout_s=1).close()  # and the file is free for the next ingest


BUSY_DASHBOARD = textwrap.dedent("""
    import itertools, sys, threading, time
    sys.path.insert(0, {repo!r})
    from dashboard import data
    path, stop_file = sys.argv[1], sys.argv[2]
    counter, errors = itertools.count(), []
    import os

    def viewer(delay_s):
        time.sleep(delay_s)  # staggered: one query is always in flight
        while not os.path.exists(stop_file):
            try:
                with data.reading(path):  # a new text each time, so no cached result
                    data.frame(f"SELECT count(*) + {{next(counter)}} AS n FROM range(10000000) WHERE hash(range) % 7 = 0")
            except Exception as exc:  # the yield to a waiting writer may time out: keep going
                errors.append(repr(exc))

    threads = [threading.Thread(target=viewer, args=(d,), daemon=True) for d in [i * 0.05 for i in range(8)]]
    for t in threads:
        t.start()
    time.sleep(1.0)
    print("busy", flush=True)
    for t in threads:
        t.join()
    print(next(counter), len(errors), flush=True)
""")


@pytest.mark.realtime  # eight viewer threads in a child process, overlapping on the clock
def test_a_busy_dashboard_lets_a_waiting_writer_in(wh, tmp_path):
    """Eight viewers whose queries overlap without a gap kept the file open for good: the
    shared instance never closed and the ingest gave up after 30 s. Readers now yield to a
    waiting writer, which gets the file when the queries in flight end."""
    script = tmp_path / "busy.py"
    script.write_text(BUSY_DASHBOARD.format(repo=str(REPO)))
    stop_file = tmp_path / "stop"
    child = subprocess.Popen([sys.executable, str(script), str(wh), str(stop_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "busy"
        start = time.monotonic()
        con = connect_writer(wh, timeout_s=30)  # was: held by process N for more than 30 s
        waited_s = time.monotonic() - start
        con.close()
        assert not Path(str(wh) + ".writer-waiting").exists()
        time.sleep(1.0)  # the viewers carry on once the writer is done
        stop_file.write_text("")
        queries, errors = map(int, child.stdout.readline().split())
        assert queries > 6, (queries, errors)
        print(f"writer waited {waited_s:.2f} s; viewers ran {queries} queries")
    finally:
        child.kill()
        child.wait()


def test_a_query_from_a_link_waits_for_run(wh, monkeypatch):
    """Opening /sql?q=... ran the query on load, so a link could keep the file busy."""
    from dashboard import data

    calls = []
    real = data.user_query
    monkeypatch.setattr(data, "user_query", lambda sql, **kw: calls.append(sql) or real(sql, **kw))
    at = _app(monkeypatch, wh, {"q": "SELECT 42 AS answer"})
    at.switch_page("app_pages/sql.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.text_area(key="q").value == "SELECT 42 AS answer"
    assert calls == [] and not at.dataframe
    # No viewer's query may outlast half of a writer's wait for the file.
    assert at.number_input(key="sql_timeout").max <= WRITER_LOCK_TIMEOUT_S / 2
    assert any("Press Run" in i.value for i in at.info)
    at = at.button(key="sql_run").click().run()
    assert calls == ["SELECT 42 AS answer"] and at.dataframe[0].value["answer"].tolist() == [42]
    # The page's own default query is cheap and runs on load.
    at = _app(monkeypatch, wh)
    at.switch_page("app_pages/sql.py").run()
    assert calls[-1] == "SELECT * FROM v_fleet_latest" and at.dataframe


# ---------------------------------------------------------------- defect 9: downloads, paths, stopping


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_csv_downloads_neutralise_spreadsheet_formulas(wh, monkeypatch):
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    served = []
    real = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        if mimetype == "text/csv":
            served.append(path_or_data.decode())
        return real(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    at = _app(monkeypatch, wh).run()  # the Fleet page: its charts' CSVs carry the GPU name
    assert not at.exception, [e.message for e in at.exception]
    at.switch_page("app_pages/sql.py").run()
    at = at.text_area(key="q").input("SELECT gpu_name, '-1+2' AS f, -3 AS n FROM fingerprints").run()
    at = at.button(key="sql_run").click().run()
    assert at.dataframe[0].value["gpu_name"].tolist() == [FORMULA_GPU]  # shown as it is
    assert served and any(FORMULA_GPU in text for text in served)
    for text in served:  # no cell a spreadsheet would run: each starts with ' or is a number
        for row in csv.reader(io.StringIO(text)):
            for cell in row:
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")) or _is_number(cell), (cell, text)
    assert "'=cmd|' /C calc'!A0,'-1+2,-3" in served[-1]


def test_viewers_never_see_where_the_warehouse_lives(wh, monkeypatch):
    at = _app(monkeypatch, wh).run()
    assert not at.exception
    sidebar = "\n".join(c.value for c in at.sidebar.caption)
    assert "viewer-test.duckdb" in sidebar and str(wh.parent) not in sidebar
    at.switch_page("app_pages/sql.py").run()
    for sql in ("SELECT path FROM duckdb_databases()", "SELECT current_setting('temp_directory')",
                "SELECT * FROM duckdb_settings()", "SELECT * FROM nope"):
        at = at.text_area(key="q").input(sql).run()
        at = at.button(key="sql_run").click().run()
        assert at.error, sql
        assert str(wh.parent) not in _texts(at), sql


def test_errors_and_the_first_run_screen_show_the_file_name_only(tmp_path, monkeypatch):
    from dashboard import data

    path = tmp_path / "deep" / "fleet.duckdb"
    text = data.public_text(f"{path}: held by process 12 for more than 15 s", str(path))
    assert text == "fleet.duckdb: held by process 12 for more than 15 s"
    at = _app(monkeypatch, path).run()
    assert not at.exception
    assert "fleet.duckdb" in _texts(at) and str(tmp_path) not in _texts(at)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.realtime  # a real Streamlit server, waited for on the clock
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_cli_stops_the_streamlit_server(tmp_path, signum):
    """SIGTERM to `fleetphysics dashboard` left the Streamlit server serving."""
    port = _free_port()
    cli = subprocess.Popen([sys.executable, "-m", "cluster.cli", "dashboard", "--warehouse",
                            str(tmp_path / "w.duckdb"), "--port", str(port)], cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # a signal to the CLI alone, as `kill PID` sends it
    children = []
    try:
        deadline = time.monotonic() + 120
        while not _serving(port):
            assert cli.poll() is None and time.monotonic() < deadline, cli.stderr.read() if cli.poll() else "no server"
            time.sleep(0.3)
        children = psutil.Process(cli.pid).children(recursive=True)
        assert children, "the CLI runs Streamlit in a child process"
        cli.send_signal(signum)
        cli.wait(30)
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"still running after the CLI stopped: {alive}"
        assert not _serving(port)
        assert cli.returncode in (128 + signum, 130)
    finally:
        for proc in [cli, *children]:
            try:
                proc.kill()
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
        cli.wait(10)
