"""`fleetphysics run --address local` (so `make run`) after a crashed Ray left its address file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def test_a_stale_current_cluster_file_does_not_stop_a_local_run():
    # Ray's default address file is <RAY_TMPDIR or /tmp>/ray/ray_current_cluster: a private
    # RAY_TMPDIR (short: Ray's socket paths must stay under 108 bytes) leaves the real one alone.
    tmp = Path(tempfile.mkdtemp(prefix="fpst", dir="/tmp"))
    try:
        (tmp / "ray").mkdir()
        (tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")  # a dead address (discard port)
        env = dict(os.environ, RAY_TMPDIR=str(tmp), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run(
            [sys.executable, "-m", "cluster.cli", "run", "--address", "local", "--simulate-boards", "rtx4090",
             "--experiments", "baseline", "--warehouse", str(tmp / "fleet.duckdb"), "--out", str(tmp / "runs"),
             "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout)
        assert summary["run_state"] == "completed" and summary["warehouse"] == str(tmp / "fleet.duckdb")
        with duckdb.connect(str(tmp / "fleet.duckdb"), read_only=True) as con:
            assert con.sql("SELECT run_state FROM runs").fetchall() == [("completed",)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
