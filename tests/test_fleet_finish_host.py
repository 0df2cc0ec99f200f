"""What the driver makes of one host's answer (cluster.job.finish_host), without a cluster.

The answer is whatever ``ray.get`` of the agent's run gives: the artifacts as tables, or one
of Ray's exceptions. Ray's exception objects are built here as Ray builds them.
"""

from __future__ import annotations

import duckdb
import pyarrow.compute as pc
import pytest

from agents.errors import PollerError
from cluster.host_agent import collect_device_artifacts
from cluster.faults import HostStatus
from cluster.job import FleetOptions, finish_host
from warehouse_fixtures import write_device_dir

RUN = "run-0001"


def _opts(tmp_path) -> FleetOptions:
    return FleetOptions(warehouse=str(tmp_path / "fleet.duckdb"), out=str(tmp_path / "runs"), show_progress=False)


def _run_devices(tmp_path) -> list[tuple]:
    with duckdb.connect(str(tmp_path / "fleet.duckdb"), read_only=True) as con:
        return con.sql("SELECT device_uid, run_state, end_reason, trace_rows FROM run_devices ORDER BY 1").fetchall()


def _raises(exc: BaseException):
    def get():
        raise exc
    return get


def test_a_host_whose_run_raised_keeps_its_flushed_trace(tmp_path):
    """A poller that would not stop fails the agent's run: the host is failed, with the cause,
    and what its device flushed lands in the warehouse as aborted."""
    import ray.exceptions

    write_device_dir(tmp_path / "runs", RUN, "host-a", "dev-0", rows=1_500, with_events=False, with_experiments=False)
    cause = PollerError("poller did not stop within 30 s; its flushed parts are in runs/run-0001/host-a")
    exc = ray.exceptions.RayTaskError(
        "HostAgent.run", "Traceback (most recent call last):\n  File \"agents/poller.py\"\n"
        f"agents.errors.PollerError: {cause}", cause).as_instanceof_cause()
    assert isinstance(exc, PollerError)  # what made the driver skip the salvage before

    status, rows = finish_host(_opts(tmp_path), RUN, "host-a", _raises(exc))

    assert status.state == "failed" and "poller did not stop within 30 s" in status.reason
    assert [(r["device_uid"], r["run_state"], r["end_reason"], r["rows"]) for r in rows] == [
        ("dev-0", "aborted", "error", 1_500)]
    assert _run_devices(tmp_path) == [("dev-0", "aborted", "error", 1_500)]


def test_a_host_whose_actor_died_is_lost_and_salvaged(tmp_path):
    import ray.exceptions

    write_device_dir(tmp_path / "runs", RUN, "host-a", "dev-0", rows=800, with_events=False, with_experiments=False)
    status, rows = finish_host(_opts(tmp_path), RUN, "host-a", _raises(ray.exceptions.ActorDiedError()))
    assert status.state == "lost" and "actor died" in status.reason
    assert _run_devices(tmp_path) == [("dev-0", "lost", "lost", 800)]


def test_a_host_whose_device_worker_died_answered_and_is_failed_not_lost(tmp_path):
    """The agent is alive and its run raised because one of its DeviceWorker actors died:
    Ray's error is then both a task error and an actor error. The host answered, so it is
    failed (what it flushed is kept as aborted), not lost."""
    import ray.exceptions

    write_device_dir(tmp_path / "runs", RUN, "host-a", "dev-0", rows=600, with_events=False, with_experiments=False)
    exc = ray.exceptions.RayTaskError(
        "HostAgent.run", "Traceback (most recent call last):\nray.exceptions.ActorDiedError: The actor died unexpectedly",
        ray.exceptions.ActorDiedError()).as_instanceof_cause()
    assert isinstance(exc, ray.exceptions.RayActorError)
    status, _ = finish_host(_opts(tmp_path), RUN, "host-a", _raises(exc))
    assert status.state == "failed" and "ActorDiedError" in status.reason
    assert _run_devices(tmp_path) == [("dev-0", "aborted", "error", 600)]


def test_a_device_the_driver_cannot_ingest_fails_its_host_and_spares_the_others(tmp_path):
    """Two devices answer; the second's trace runs backwards. The first is ingested with its
    figures, the second is reported with the validation error, the host is failed with it."""
    good = collect_device_artifacts(str(write_device_dir(tmp_path / "art", RUN, "host-a", "dev-0")))
    bad = collect_device_artifacts(str(write_device_dir(tmp_path / "art", RUN, "host-a", "dev-1", seed=1)))
    t = bad["trace"]
    bad["trace"] = t.set_column(0, "t_ns", pc.subtract(pc.max(t["t_ns"]), t["t_ns"]))
    status, rows = finish_host(_opts(tmp_path), RUN, "host-a", lambda: {"host": "host-a", "devices": [good, bad]})

    assert status.state == "failed"
    assert status.reason.startswith("not ingested: dev-1: ") and "t_ns" in status.reason and "monotonic" in status.reason
    by_uid = {r["device_uid"]: r for r in rows}
    assert "error" not in by_uid["dev-0"] and by_uid["dev-0"]["update_period_ms"] == 100  # its headline figures
    assert "t_ns" in by_uid["dev-1"]["error"] and by_uid["dev-1"]["note"] == "not in the warehouse"
    assert [r[0] for r in _run_devices(tmp_path)] == ["dev-0"]


def test_a_host_that_answered_is_done(tmp_path):
    answer = collect_device_artifacts(str(write_device_dir(tmp_path / "art", RUN, "host-a", "dev-0")))
    status, rows = finish_host(_opts(tmp_path), RUN, "host-a", lambda: {"host": "host-a", "devices": [answer]})
    assert status == HostStatus("host-a", "done")
    assert [r["device_uid"] for r in rows] == ["dev-0"] and _run_devices(tmp_path)[0][:2] == ("dev-0", "completed")


@pytest.mark.parametrize("reason", ["not ingested: dev-1: column t_ns is not monotonic", "reads [N/A] at row 3"])
def test_the_comparison_says_why_a_run_is_partial(capsys, reason):
    from cluster.progress import print_comparison

    print_comparison({"run_id": RUN, "run_state": "partial", "warehouse": "fleet.duckdb",
                      "devices": [{"host": "host-b", "device_uid": "dev-1", "run_state": "completed",
                                   "end_reason": "completed", "error": reason, "note": "not in the warehouse"}],
                      "hosts": {"host-a": {"state": "done", "reason": None},
                                "host-b": {"state": "failed", "reason": reason}}})
    out = capsys.readouterr().out
    assert f"host-b: failed - {reason}" in out and "host-a: done" not in out
    assert f"host-b dev-1: not in the warehouse - {reason}" in out
