"""Ctrl-C on `fleetphysics run`: markers closed, stats written, what exists ingested.

The driver runs the embedded default (a local Ray) in its own session; SIGINT goes to the
whole process group, as a terminal's Ctrl-C does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pytest

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def _wait_for_trace_parts(out: Path, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if list(out.glob("*/*/*/power_trace/part-*.parquet")):
            return
        time.sleep(0.5)
    raise AssertionError(f"no trace part under {out} within {timeout_s:g} s")


def test_ctrl_c_stops_gracefully_and_ingests_what_exists(tmp_path):
    out, warehouse = tmp_path / "runs", tmp_path / "fleet.duckdb"
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "run", "--simulate-boards", "rtx4090", "--preset", "smoke",
         "--warehouse", str(warehouse), "--out", str(out), "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # A terminal's driver takes SIGINT; under `cmd &` the shell has it ignored, and an
        # ignored SIGINT is inherited, so Python would never see the Ctrl-C this test sends.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_trace_parts(out, 180)
        time.sleep(5)  # into the suite: the baseline is running or done
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert time.monotonic() - sent < 60, "the run took more than a minute to stop after Ctrl-C"
    assert proc.returncode == 1, stderr[-3000:]  # not completed: exit 1, and no traceback
    assert "Traceback" not in stderr, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["run_state"] == "aborted"
    [device] = summary["devices"]
    assert (device["run_state"], device["end_reason"]) == ("aborted", "interrupted")

    con = duckdb.connect(str(warehouse), read_only=True)
    [(state, reason, rows)] = con.sql("SELECT run_state, end_reason, trace_rows FROM run_devices").fetchall()
    assert (state, reason) == ("aborted", "interrupted") and rows > 0
    # The poller stopped cleanly and wrote its stats; every row it counted was ingested.
    assert con.sql("SELECT samples FROM poller_stats").fetchall() == [(rows,)]
    # Markers closed: every phase that started has ended.
    phases = con.sql("""SELECT json_extract_string(attrs_json, '$.phase') AS phase,
                               count(*) FILTER (WHERE name = 'phase_start') AS starts,
                               count(*) FILTER (WHERE name = 'phase_end') AS ends
                        FROM markers WHERE name IN ('phase_start', 'phase_end') GROUP BY phase""").fetchall()
    assert phases and all(starts == ends for _, starts, ends in phases), phases
    # No poller outlives the run.
    left = [p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])]
    assert not left, [p.info["cmdline"][:3] for p in left]
