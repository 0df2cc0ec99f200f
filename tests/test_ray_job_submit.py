"""End to end through a real `ray start --head` on loopback and `ray job submit --working-dir .`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# Ports a Ray head binds by default (ray_constants, dashboard/consts.py, `ray start`):
# 44227 (the dashboard's metrics server) and 52365 (the dashboard agent) lie in Linux's
# ephemeral range, so a "free" port picked below can be one of them. Once the test handed
# 44227 to --dashboard-port, the metrics server took it first, the dashboard never started
# and `ray job submit` hung.
RAY_DEFAULT_PORTS = {6379, 8265, 10001, 44227, 52365}


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS:
            return port


def _wait_for_dashboard(url: str, log_dir: Path, timeout_s: float = 120.0) -> None:
    """Fail with the dashboard's own error when it does not answer, instead of a hung submit."""
    import urllib.error
    import urllib.request

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:  # it answers (401 without the cluster's token): it is up
            return
        except OSError:
            time.sleep(1.0)
    logs = sorted(log_dir.glob("session_*/logs/dashboard.log"))
    tail = logs[-1].read_text()[-2000:] if logs else "(no dashboard.log)"
    pytest.fail(f"the Ray dashboard at {url} did not answer within {timeout_s:g} s; dashboard.log ends:\n{tail}")


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A real Ray head on 127.0.0.1 presenting one simulated device; stopped by PID afterwards."""
    tmp = tmp_path_factory.mktemp("ray")
    # Every port the job path needs is picked free: another Ray on the machine (a developer's
    # run, another test session) holding the agent's default 52365 left the job agent unbound
    # and `ray job submit` hung until the test's timeout.
    gcs, dash, agent = _free_port(), _free_port(), _free_port()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_USAGE_STATS_ENABLED="0", FLEETPHYSICS_SIMULATE="rtx4090", FLEETPHYSICS_HOST_ID="e2e-host",
               RAY_AUTH_MODE="token")
    start = subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}",
                            "--num-cpus=2", "--num-gpus=0",
                            f"--temp-dir={tmp}", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=180)
    if start.returncode != 0:
        pytest.fail(f"ray start failed: {start.stderr[-2000:]}")
    try:
        _wait_for_dashboard(f"http://127.0.0.1:{dash}", tmp)
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dash}", "tmp": tmp}
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_ray_job_submit_working_dir_lands_in_warehouse(head, tmp_path):
    warehouse = tmp_path / "fleet.duckdb"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", head["dashboard"], "--working-dir", ".",
           "--runtime-env-json", json.dumps({"excludes": [".venv", ".git", "runs", "test-artifacts"]}), "--",
           "python", "-m", "cluster.job", "--address", "auto", "--preset", "smoke", "--experiments", "baseline",
           "--warehouse", str(warehouse), "--out", str(tmp_path / "runs"), "--json"]
    for _ in range(30):  # right after `ray start` the head's job agent is not up yet
        proc = subprocess.run(cmd, cwd=REPO, env=head["env"], capture_output=True, text=True, timeout=400)
        if "No available agent" not in proc.stdout + proc.stderr:
            break
        time.sleep(3)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = con.sql("SELECT host, simulated, run_state FROM run_devices").fetchall()
    assert rows == [("e2e-host", True, "completed")]
    assert con.sql("SELECT count(*) FROM v_power_trace").fetchall()[0][0] > 50


def test_missing_auth_token_is_one_clear_line(head, tmp_path):
    env = dict(head["env"], HOME=str(tmp_path), RAY_AUTH_TOKEN_PATH=str(tmp_path / "none"))
    env.pop("RAY_AUTH_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "submit", "--address", head["dashboard"], "--no-wait",
                           "--", "--preset", "smoke"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "RAY_AUTH_TOKEN" in err[0]


def test_unreachable_address_is_one_clear_line():
    port = _free_port()
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "run", "--address", f"127.0.0.1:{port}", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_board_is_one_clear_line():
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "run", "--simulate-boards", "gtx480"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown simulated board 'gtx480'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
