"""Multi-node fleet runs on a local ray.cluster_utils cluster (simulated hosts, logical GPUs)."""

from __future__ import annotations

import socket
import threading
import time

import duckdb
import pytest

pytestmark = pytest.mark.ray

SHORT = {"baseline": {"duration_s": 4.0, "settle_s": 0.5}}
PROFILES = ("rtx4090", "h100-sxm", "a100-sxm")
# Nodes 0 and 1 name no host: both are this machine's hostname, as cloned VMs would be.
HOST_IDS = (None, None, "host2")


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1, num_gpus=1, env_vars={"FLEETPHYSICS_SIMULATE": p} | (
        {"FLEETPHYSICS_HOST_ID": h} if h else {})) for p, h in zip(PROFILES, HOST_IDS)]
    ray.init(address=c.address, log_to_driver=False)
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def _labels(nodes) -> list[str]:
    """The host labels the run must use: hostname-<node id digits> for the twins."""
    hostname = socket.gethostname()
    return [h or f"{hostname}-{n.node_id[:8]}" for n, h in zip(nodes, HOST_IDS)]


def _opts(tmp_path, configs=SHORT, **kw):
    from cluster.job import FleetOptions

    kw.setdefault("address", "auto")
    return FleetOptions(profile="smoke", experiments=("baseline",), configs=configs, warehouse=str(tmp_path / "fleet.duckdb"), out=str(tmp_path / "runs"), show_progress=False,
                        period_ms=50.0, **kw)


def test_every_device_lands_with_its_own_fingerprint(cluster, tmp_path, monkeypatch):
    """Inside a Ray job (RAY_ADDRESS set, no --address) the job measures the cluster's
    simulated nodes, two of which share a hostname: never the driver's stand-in fleet."""
    from cluster.job import run_fleet

    c, nodes = cluster
    monkeypatch.setenv("RAY_ADDRESS", c.address)
    summary = run_fleet(_opts(tmp_path, address=None))
    assert summary["run_state"] == "completed", summary["hosts"]  # each host's state and why, when it fails
    labels = _labels(nodes)
    assert sorted(d["host"] for d in summary["devices"]) == sorted(labels)
    assert {h: r["state"] for h, r in summary["hosts"].items() if r["state"] != "skipped"} == dict.fromkeys(labels, "done")
    [(head, skipped)] = [(h, r) for h, r in summary["hosts"].items() if r["state"] == "skipped"]  # the CPU-only head
    assert "nothing to measure" in skipped["reason"] and skipped["node_id"] not in {n.node_id for n in nodes}
    assert {summary["hosts"][label]["node_id"] for label in labels} == {n.node_id for n in nodes}
    con = duckdb.connect(str(tmp_path / "fleet.duckdb"), read_only=True)
    rows = con.sql("SELECT device_uid, fingerprint, simulated, run_state FROM run_devices ORDER BY device_uid").fetchall()
    assert len(rows) == 3 and len({r[1] for r in rows}) == 3
    assert all(r[2] is True and r[3] == "completed" for r in rows)
    per_device = dict(con.sql("SELECT device_uid, count(*) FROM v_power_trace GROUP BY 1").fetchall())
    assert all(n > 40 for n in per_device.values())  # ~4.5 s at 50 ms each
    assert sorted(r[0] for r in con.sql("SELECT DISTINCT host FROM run_devices").fetchall()) == sorted(labels)
    assert con.sql("SELECT run_state FROM runs").fetchall() == [("completed",)]
    assert sorted(con.sql("SELECT host, state FROM run_hosts WHERE state = 'done'").fetchall()) == sorted(
        (label, "done") for label in labels)


def test_node_removed_mid_run_leaves_others_complete_and_run_partial(cluster, tmp_path):
    from cluster.job import run_fleet

    c, nodes = cluster
    run_id = "test-lost-node"
    opts = _opts(tmp_path, run_id=run_id, configs={"baseline": {"duration_s": 12.0, "settle_s": 0.5}})
    result = {}
    thread = threading.Thread(target=lambda: result.update(run_fleet(opts)), daemon=True)
    thread.start()
    twin = _labels(nodes)[1]
    parts_dir = tmp_path / "runs" / run_id / twin
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(parts_dir.glob("*/power_trace/part-*.parquet")):
        time.sleep(0.2)
    assert list(parts_dir.glob("*/power_trace/part-*.parquet")), f"{twin} never flushed a part"
    time.sleep(1.0)
    c.remove_node(nodes[1])
    thread.join(240)
    assert not thread.is_alive()
    assert result["run_state"] == "partial", result["hosts"]  # each host's state and why, when it fails
    states = {d["host"]: d["run_state"] for d in result["devices"]}
    other = _labels(nodes)[0]  # the lost twin's label never hides behind its namesake's "done"
    assert states[other] == states["host2"] == "completed" and states[twin] == "lost"
    assert result["hosts"][twin]["state"] == "lost" and result["hosts"][twin]["reason"]
    con = duckdb.connect(str(tmp_path / "fleet.duckdb"), read_only=True)
    lost = con.sql("SELECT device_uid, run_state, end_reason FROM run_devices WHERE run_state = 'lost'").fetchall()
    assert len(lost) == 1 and lost[0][2] == "lost"
    n_rows = con.sql("SELECT count(*) FROM v_power_trace WHERE device_uid = ?", params=[lost[0][0]]).fetchall()[0][0]
    assert n_rows > 0  # its trace up to the last flush is in the warehouse
    assert con.sql("SELECT run_state FROM runs WHERE run_id = ?", params=[run_id]).fetchall() == [("partial",)]
    [(state, reason)] = con.sql("SELECT state, reason FROM run_hosts WHERE run_id = ? AND host = ?",
                                params=[run_id, twin]).fetchall()
    assert state == "lost" and reason
