"""`fleetphysics run --gate`: the run's verdict is judged and stored, and exits 3 when a
device (or a host that left nothing) is not ready."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from verdict_fleet import build_fleet, plant

REPO = Path(__file__).resolve().parents[1]


def _args(warehouse, gate=True, as_json=True):
    from cluster.job import build_parser

    argv = ["--warehouse", str(warehouse)] + (["--gate"] if gate else []) + (["--json"] if as_json else [])
    return build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A 6-unit rendered fleet with one unit idling under background load (fake idle)."""
    path = tmp_path_factory.mktemp("gate") / "fleet.duckdb"
    hosts = plant(6, "h100-sxm", {4: "background_load"})
    build_fleet(path, hosts, "run-gate")
    devices = [{"host": h, "device_uid": f"SIM-h100-sxm-{h}-0"} for h, _, _ in hosts]
    return path, hosts, devices


def _fake_run(monkeypatch, path, devices, state="completed", hosts=None):
    import cluster.job as job

    summary = {"run_id": "run-gate", "run_state": state, "warehouse": str(path), "devices": devices,
               "hosts": hosts or {d["host"]: {"state": "done", "reason": None} for d in devices}}
    monkeypatch.setattr(job, "run_fleet", lambda opts: dict(summary))


def test_gate_exits_3_on_a_not_ready_device_and_stores_the_verdict(monkeypatch, capsys, stored):
    from cluster.job import cmd_run
    from warehouse.query import query

    path, hosts, devices = stored
    _fake_run(monkeypatch, path, devices)
    assert cmd_run(_args(path)) == 3
    out = json.loads(capsys.readouterr().out)
    bad = [d for d in out["verdict"]["devices"] if d["verdict"] == "not_ready"]
    assert [d["host"] for d in bad] == [hosts[4][0]] and "fake idle" in bad[0]["reasons"][0]
    rows = query(path, "SELECT host, verdict FROM v_fleet_verdict WHERE run_id = 'run-gate' ORDER BY host")
    assert len(rows) == 6 and dict(zip(rows["host"], rows["verdict"]))[hosts[4][0]] == "not_ready"
    assert cmd_run(_args(path, gate=False)) == 0  # without --gate the run's own state decides


def test_gate_counts_a_lost_host_that_left_nothing(monkeypatch, capsys, stored):
    from cluster.job import cmd_run

    path, hosts, devices = stored
    clean = [d for d in devices if d["host"] != hosts[4][0]]
    with_lost = {d["host"]: {"state": "done", "reason": None} for d in clean}
    with_lost["sim-9-h100-sxm"] = {"state": "lost", "reason": "silent past its deadline"}
    from warehouse.verdict_store import judge_run, with_missing_hosts

    verdict = with_missing_hosts(judge_run(path, "run-gate"), with_lost)
    lost = [d for d in verdict["devices"] if d["host"] == "sim-9-h100-sxm"]
    assert lost and lost[0]["verdict"] == "not_ready" and "silent past its deadline" in lost[0]["reasons"][0]
    _fake_run(monkeypatch, path, clean, state="partial", hosts=with_lost)
    assert cmd_run(_args(path, as_json=False)) == 3
    text = capsys.readouterr().out
    assert "NOT READY  sim-9-h100-sxm" in text and "host lost during the run" in text


@pytest.mark.ray  # the real job on the embedded Ray
def test_run_gate_end_to_end_with_a_faulty_simulated_unit(tmp_path):
    """The real job on the embedded Ray: two simulated hosts, one idling under load."""
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    env.pop("FLEETPHYSICS_SIMULATE", None)
    wh = tmp_path / "fleet.duckdb"
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "run", "--simulate-boards",
                           "h100-sxm,h100-sxm?idle_util_pct=45", "--experiments", "baseline", "--warehouse", str(wh),
                           "--out", str(tmp_path / "runs"), "--gate", "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["run_state"] == "completed"
    by_host = {d["host"]: d for d in summary["verdict"]["devices"]}
    assert set(by_host) == {"sim-1-h100-sxm", "sim-2-h100-sxm"}
    assert by_host["sim-2-h100-sxm"]["verdict"] == "not_ready"
    assert any("fake idle" in r for r in by_host["sim-2-h100-sxm"]["reasons"])
    assert by_host["sim-1-h100-sxm"]["verdict"] != "not_ready"
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "verdict", "--warehouse", str(wh), "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and json.loads(proc.stdout)["run_id"] == summary["run_id"]
