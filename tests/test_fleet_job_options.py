"""The fleet job's address, output paths, `submit` defaults and report, without a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.env_check import environment_problems, installed_versions
from cluster.fleet_commands import SUBMIT_DEFAULTS, job_arguments
from cluster.job import resolve_address
from tiers import fast_subset

REPO = Path(__file__).resolve().parents[1]


def test_no_address_is_the_ray_job_cluster_inside_a_job_else_a_fresh_local_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == "local" and resolve_address("local") == "local"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # what `ray job submit` sets for the entrypoint
    assert resolve_address(None) == "auto"
    assert resolve_address("local") == "local"  # asked for: a fresh local Ray, whatever the environment
    assert resolve_address("10.0.0.2:6379") == "10.0.0.2:6379"


@pytest.mark.parametrize("flag", fast_subset(["--warehouse", "--out"], keep=1))  # a job driver each: a second apiece
def test_a_relative_path_inside_a_ray_job_is_one_line_and_exit_2(tmp_path, flag):
    args = {"--warehouse": str(tmp_path / "w.duckdb"), "--out": str(tmp_path / "runs")}
    args[flag] = "relative/place"
    proc = subprocess.run([sys.executable, "-m", "cluster.job", *sum(args.items(), ())], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS="127.0.0.1:9"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert f"{flag} relative/place" in line and "absolute path" in line and "fleetphysics submit" in line
    assert not (tmp_path / "relative").exists()


def test_submit_adds_absolute_defaults_and_keeps_what_the_user_gave():
    args, where = job_arguments(["--preset", "quick"])
    assert args == ["--preset", "quick", "--warehouse", SUBMIT_DEFAULTS["--warehouse"], "--out", SUBMIT_DEFAULTS["--out"]]
    assert all(v.startswith("~/") for v in where.values())
    args, where = job_arguments(["--warehouse", "/shared/f.duckdb", "--out=/shared/runs"])
    assert args == ["--warehouse", "/shared/f.duckdb", "--out=/shared/runs"]
    assert where == {"warehouse": "/shared/f.duckdb", "out": "/shared/runs"}


def test_the_comparison_in_a_pipe_keeps_long_ids_whole(capsys):
    from cluster.progress import print_comparison

    host, uid = "ip-10-0-12-34.eu-west-1.compute.internal-a1b2c3d4", "GPU-3f9a1c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
    print_comparison({"run_id": "run-1", "run_state": "completed", "warehouse": "/data/fleet.duckdb",
                      "out": "/data/runs", "hosts": {host: {"state": "done"}},
                      "devices": [{"host": host, "device_uid": uid, "simulated": False, "idle_w": 61.234,
                                   "idle_sem_w": 0.05, "run_state": "completed", "end_reason": "completed"}]})
    out = capsys.readouterr().out
    assert host in out and uid in out and "…" not in out  # rich cut cells to 80 columns in a pipe
    assert "artifacts: /data/runs/run-1/<host>/<device_uid>" in out


def test_a_node_without_the_environment_is_told_what_is_missing_and_the_fix():
    driver = installed_versions()
    assert environment_problems(driver, driver) == []  # this environment can run it
    node = dict(driver, duckdb=None, pyarrow=None, pydantic="2.0.1", ray="2.9.0")
    problems = environment_problems(node, driver)
    assert "no module named 'pyarrow' (pip install 'pyarrow>=14')" in problems
    assert "pydantic 2.0.1 is older than 2.5" in problems
    assert any(p.startswith("ray 2.9.0 where the driver has") for p in problems)
    older_python = dict(driver, python="3.9.18")
    assert any(p.startswith("python 3.9.18 where the driver has") for p in environment_problems(older_python, driver))


def _agent(**kw):
    from cluster.host_agent import HostAgent

    return HostAgent(run_id="run-1", out_root="/nonexistent", **kw)


def test_every_node_checks_itself_before_the_suite(monkeypatch):
    from agents.env_check import FIX

    monkeypatch.setenv("FLEETPHYSICS_SIMULATE", "rtx4090")
    monkeypatch.setenv("FLEETPHYSICS_HOST_ID", "gpu-7")
    driver = installed_versions()
    info = _agent().check(driver)
    assert (info["state"], info["devices"], info["name"]) == ("ready", ["sim:rtx4090"], "gpu-7")
    info = _agent().check(dict(driver, pyarrow="1.0.0"))  # the driver's Arrow is another major version
    assert info["state"] == "failed" and "pyarrow" in info["reason"] and info["reason"].endswith(FIX)
    monkeypatch.setenv("FLEETPHYSICS_SIMULATE", "gtx480")
    info = _agent().check(driver)
    assert info["state"] == "failed" and "gtx480" in info["reason"]


def test_a_node_with_nothing_to_measure_is_skipped(monkeypatch):
    import agents.nvml

    monkeypatch.delenv("FLEETPHYSICS_SIMULATE", raising=False)
    if agents.nvml.nvml_available():
        pytest.skip("this machine has an NVIDIA GPU")
    info = _agent().check(installed_versions())
    assert info["state"] == "skipped" and info["reason"].startswith("nothing to measure")


def test_the_label_names_the_simulated_devices(monkeypatch):
    monkeypatch.setenv("FLEETPHYSICS_SIMULATE", "rtx4090,h100-sxm")
    agent = _agent()
    assert agent.assign("ubuntu-a1b2c3d4") == ["sim:rtx4090", "sim:h100-sxm"]
    assert {s.host_id for s in agent.specs} == {"ubuntu-a1b2c3d4"} and agent.host_dir().endswith("/run-1/ubuntu-a1b2c3d4")


def test_a_driver_without_the_environment_says_the_fix_in_one_line(tmp_path):
    (tmp_path / "duckdb.py").write_text("raise ModuleNotFoundError(\"No module named 'duckdb'\")\n")
    proc = subprocess.run([sys.executable, "-m", "cluster.job", "--preset", "smoke"], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "no module named 'duckdb'" in line and "environment on PATH" in line and "Traceback" not in proc.stderr


def test_a_short_soaks_tau_is_printed_with_its_digits_never_as_0(capsys):
    from cluster.progress import print_comparison

    devices = [{"host": f"h{i}", "device_uid": f"GPU-{i}", "simulated": True, "tau_s": tau, "run_state": "completed",
                "end_reason": "completed"} for i, tau in enumerate((0.17, 230.4))]
    print_comparison({"run_id": "run-1", "run_state": "completed", "warehouse": "w.duckdb", "out": "runs",
                      "hosts": {}, "devices": devices})
    out = capsys.readouterr().out
    assert "0.17" in out and "230" in out and "│     0 │" not in out
