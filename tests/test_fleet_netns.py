"""A real multi-host fleet: three Ray nodes as three machines (network, mount and UTS
namespaces, see netns_cluster.py) that all share one hostname, the job submitted with
`ray job submit --working-dir .` and no --address, one host SIGKILLed mid-run.

Checked: a cluster with no GPU or simulated host refuses in one line (exit 2); then the
run ends partial, the two hosts that share a hostname are two hosts, the surviving host's
device is stored complete, the killed host's flushed trace is stored and it is `lost` with
a reason, and the CPU-only head is `skipped`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pytest

from netns_cluster import NetnsCluster, why_no_namespaces

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOSTNAME = "fpnode"  # every node's hostname, as on cloned VMs
EXCLUDES = [".venv", ".git", "runs", "test-artifacts", "*.duckdb", "__pycache__", ".pytest_cache"]


@pytest.fixture
def cluster_root():
    reason = why_no_namespaces()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="fpns", dir="/tmp"))  # short: Ray's socket paths stay under 108 bytes
    (root / "home").mkdir()
    (root / "shared").mkdir()  # the shared storage every node sees (only /tmp/ray is private)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _env(root: Path) -> dict[str, str]:
    """The nodes' environment: the project's Python first on PATH (the README's recipe), the
    cluster's token, and a prompt verdict on a dead node."""
    return {"PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(root / "home"), "LANG": "C.UTF-8",
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000",
            "RAY_health_check_failure_threshold": "3"}


def _submit(cluster: NetnsCluster, job_args: list[str], log_path: Path) -> subprocess.Popen:
    """`ray job submit --working-dir .` on the head, with no --address (Ray finds its own)."""
    cmd = [str(BIN / "ray"), "job", "submit", "--working-dir", ".", "--runtime-env-json",
           json.dumps({"excludes": EXCLUDES}), "--", "python", "-m", "cluster.job", *job_args]
    return cluster.run_in(0, ["sh", "-c", f'cd {REPO} && exec "$@"', "sh", *cmd],
                          stdout=open(log_path, "w"), stderr=subprocess.STDOUT)


def _wait_for_nodes(cluster: NetnsCluster, n: int, timeout_s: float = 240) -> None:
    probe = "import ray; ray.init(address='auto', log_to_driver=False); print(sum(x['Alive'] for x in ray.nodes()))"
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        p = cluster.run_in(0, [str(BIN / "python"), "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # a head still starting can keep a client waiting: ask again
            p.kill()
            p.communicate()
            continue
        if out.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    pytest.fail(f"{n} Ray nodes did not come up within {timeout_s:g} s\n{cluster.logs()}")


def _finish(proc: subprocess.Popen, log: Path, cluster: NetnsCluster, timeout_s: float) -> str:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the job did not end within {timeout_s:g} s:\n{log.read_text()[-4000:]}\n{cluster.logs()}")
    return log.read_text()


def test_three_hosts_one_hostname_one_killed(cluster_root):
    root, shared = cluster_root, cluster_root / "shared"
    warehouse, out = shared / "fleet.duckdb", shared / "runs"
    with NetnsCluster(root, HOSTNAME, _env(root)) as cluster:
        cluster.start_node(0, ["--head", "--port=6379", "--dashboard-host=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
                               "--object-store-memory=100000000", "--disable-usage-stats"])
        _wait_for_nodes(cluster, 1)

        # A cluster whose only node has nothing to measure: one line, exit 2, nothing simulated in its place.
        proc = _submit(cluster, ["--preset", "smoke", "--warehouse", str(warehouse), "--out", str(out)],
                       root / "job0.log")
        text = _finish(proc, root / "job0.log", cluster, 300)
        assert proc.returncode != 0, text[-3000:]
        lines = {ln for ln in text.splitlines() if ln.startswith("fleetphysics:")}  # Ray repeats the log once
        assert len(lines) == 1 and "no node has an NVIDIA GPU or simulated devices" in min(lines), text[-3000:]
        assert "Traceback" not in text and not warehouse.exists()

        for k in (1, 2):
            cluster.start_node(k, [f"--address={cluster.address(0)}:6379", "--num-cpus=2", "--num-gpus=0",
                                   "--object-store-memory=100000000", "--disable-usage-stats"],
                               env={"FLEETPHYSICS_SIMULATE": "rtx4090"})
        _wait_for_nodes(cluster, 3)
        proc = _submit(cluster, ["--preset", "smoke", "--experiments", "baseline,instrument_response",
                                 "--warehouse", str(warehouse), "--out", str(out), "--deadline-s", "300", "--json"],
                       root / "job1.log")
        victim = _kill_mid_run(cluster, out, proc, root / "job1.log")
        text = _finish(proc, root / "job1.log", cluster, 400)

    assert proc.returncode != 0, text[-3000:]  # a partial run exits 1: the job is FAILED, its data kept
    assert "Traceback" not in text, text[-4000:]
    con = duckdb.connect(str(warehouse), read_only=True)
    [(run_id, run_state)] = con.sql("SELECT run_id, run_state FROM runs").fetchall()
    assert run_state == "partial", text[-4000:]
    hosts = {h: (state, reason, node) for h, state, reason, node in
             con.sql("SELECT host, state, reason, node_id FROM run_hosts").fetchall()}
    assert len(hosts) == 3 and all(h.startswith(f"{HOSTNAME}-") for h in hosts), hosts  # one hostname, three hosts
    assert sorted(s for s, _, _ in hosts.values()) == ["done", "lost", "skipped"], hosts
    assert len({node for _, _, node in hosts.values()}) == 3
    assert hosts[victim][0] == "lost" and hosts[victim][1].startswith(f"node {hosts[victim][2][:8]} ({HOSTNAME}) "), hosts
    [survivor] = [h for h, (s, _, _) in hosts.items() if s == "done"]
    devices = {h: (uid, state, end, rows) for h, uid, state, end, rows in con.sql(
        "SELECT host, device_uid, run_state, end_reason, trace_rows FROM run_devices").fetchall()}
    assert set(devices) == {survivor, victim}
    assert devices[survivor][1:3] == ("completed", "completed") and devices[survivor][3] > 100
    assert devices[victim][1:3] == ("lost", "lost") and devices[victim][3] > 0  # flushed before the kill
    assert devices[survivor][0] != devices[victim][0]
    assert con.sql("SELECT count(*) FROM experiment_results WHERE device_uid = ?",
                   params=[devices[survivor][0]]).fetchall()[0][0] == 2


def _kill_mid_run(cluster: NetnsCluster, out: Path, proc: subprocess.Popen, log: Path) -> str:
    """Wait until node 2's host has flushed a trace part, then SIGKILL every process of node 2;
    its host label (found from the poller's command line, which names its artifact dir)."""
    end = time.monotonic() + 300
    while time.monotonic() < end and proc.poll() is None:
        for part in out.glob("*/*/*/power_trace/part-*.parquet"):
            label = part.parents[2].name
            if any(f"/{label}" in _cmdline(pid) for pid in cluster.pids(2)):
                time.sleep(1.0)
                assert cluster.kill_node(2) > 0
                return label
        time.sleep(0.3)
    pytest.fail(f"node 2 never flushed a trace part:\n{log.read_text()[-4000:]}\n{cluster.logs()}")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
