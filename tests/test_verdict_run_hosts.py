"""`fleetphysics verdict` alone sees the run's hosts (``run_hosts``): a lost or failed host is
not ready with its reason, even one that left nothing in the warehouse; a skipped one is not."""

from __future__ import annotations

import json
import shutil

import pytest

from cluster.cli import main
from verdict_fleet import build_fleet, plant
from warehouse.run_state import record_run_state

RUN = "run-hosts"


def _verdict(capsys, path, *extra) -> tuple[int, dict]:
    """`fleetphysics verdict --json` in this process (test_verdict_fleet runs it as a command)."""
    rc = main(["verdict", "--json", "--warehouse", str(path), *extra])
    out, err = capsys.readouterr()
    assert err == "" or rc in (0, 3), err
    return rc, json.loads(out)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A clean 5-unit rendered fleet, rendered once for the module."""
    path = tmp_path_factory.mktemp("run-hosts") / "fleet.duckdb"
    hosts = plant(5, "h100-sxm", {})
    build_fleet(path, hosts, RUN)
    return path, [h for h, _, _ in hosts]


@pytest.fixture
def clean(rendered, tmp_path):
    """A copy of the clean fleet for one test: every device ready before any host state is recorded."""
    path = tmp_path / "fleet.duckdb"
    assert not rendered[0].with_name(rendered[0].name + ".wal").exists()  # closed: the file is the whole warehouse
    shutil.copyfile(rendered[0], path)
    return path, rendered[1]


def test_a_lost_host_that_left_nothing_is_not_ready_with_its_reason(clean, capsys):
    path, hosts = clean
    rc, before = _verdict(capsys, path)
    assert rc == 0 and {d["verdict"] for d in before["devices"]} == {"ready"}
    states = {h: {"state": "done"} for h in hosts}
    states["sim-6-h100-sxm"] = {"state": "lost", "reason": "silent past its deadline (node ab12 on gpu-box-6)"}
    states["sim-7-h100-sxm"] = {"state": "failed", "reason": "ModuleNotFoundError: no module named 'pynvml'"}
    states["head"] = {"state": "skipped", "reason": "nothing to measure: no NVIDIA GPU"}
    record_run_state(path, RUN, "partial", states)
    rc, after = _verdict(capsys, path)
    assert rc == 3
    bad = {d["host"]: d for d in after["devices"] if d["verdict"] == "not_ready"}
    assert sorted(bad) == ["sim-6-h100-sxm", "sim-7-h100-sxm"]
    assert bad["sim-6-h100-sxm"]["reasons"] == [
        "host lost during the run, nothing of it in the warehouse: silent past its deadline (node ab12 on gpu-box-6)"]
    assert "host failed during the run" in bad["sim-7-h100-sxm"]["reasons"][0]
    assert "pynvml" in bad["sim-7-h100-sxm"]["reasons"][0] and bad["sim-7-h100-sxm"]["device_uid"] is None
    assert "head" not in {d["host"] for d in after["devices"]}  # a CPU head node is skipped, not lost
    assert [d["host"] for d in after["devices"][:2]] == ["sim-6-h100-sxm", "sim-7-h100-sxm"]  # suspects first


def test_a_lost_host_with_stored_devices_makes_them_not_ready(clean, capsys):
    from warehouse.verdict_store import judge_run, with_missing_hosts

    path, hosts = clean
    states = {h: {"state": "done"} for h in hosts}
    states[hosts[2]] = {"state": "lost", "reason": "node marked dead"}
    record_run_state(path, RUN, "partial", states)
    rc, out = _verdict(capsys, path, "--run", RUN)
    assert rc == 3
    bad = [d for d in out["devices"] if d["verdict"] == "not_ready"]
    assert [d["host"] for d in bad] == [hosts[2]] and bad[0]["device_uid"]
    assert bad[0]["reasons"][0] == "host lost during the run, its figures may be partial: node marked dead"
    # the driver applies the run summary's hosts again: nothing doubles
    again = with_missing_hosts(judge_run(path, RUN), states)
    assert again["devices"] == judge_run(path, RUN)["devices"]


def test_a_run_whose_hosts_all_failed_is_judged_and_not_ready(tmp_path, capsys):
    path = tmp_path / "fleet.duckdb"
    record_run_state(path, "run-9", "failed", {"gpu-1": {"state": "failed", "reason": "no module named 'duckdb'"},
                                               "head": {"state": "skipped", "reason": "no NVIDIA GPU"}})
    rc, out = _verdict(capsys, path)
    assert rc == 3 and out["run_id"] == "run-9"
    assert [(d["host"], d["verdict"]) for d in out["devices"]] == [("gpu-1", "not_ready")]
    assert "no module named 'duckdb'" in out["devices"][0]["reasons"][0]
