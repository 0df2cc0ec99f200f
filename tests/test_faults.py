"""The continue/abort decision is a pure function: tested without Ray."""

from __future__ import annotations

import pytest

from cluster.faults import FleetStatus, HostStatus, decide


def fleet(*states, now=100.0, deadline=200.0, **kw):
    return FleetStatus(tuple(HostStatus(f"h{i}", s, deadline_s=deadline) for i, s in enumerate(states)), now, **kw)


def test_running_hosts_continue():
    d = decide(fleet("running", "done", "running"))
    assert d.action == "continue" and d.run_state is None and d.overdue == ()


def test_all_done_completes():
    assert decide(fleet("done", "done")).run_state == "completed"


def test_one_lost_of_three_finishes_partial_after_the_others():
    assert decide(fleet("lost", "running", "done")).action == "continue"
    d = decide(fleet("lost", "done", "done"))
    assert (d.action, d.run_state) == ("finish", "partial")


def test_silent_past_deadline_is_declared_lost():
    d = decide(fleet("running", "done", "done", now=300.0))
    assert d.overdue == ("h0",) and (d.action, d.run_state) == ("finish", "partial")


def test_too_many_lost_aborts():
    d = decide(fleet("lost", "failed", "running"))
    assert (d.action, d.run_state) == ("abort", "aborted")
    assert decide(fleet("lost", "failed", "running", max_lost_fraction=0.9)).action == "continue"


def test_interrupt_aborts():
    assert decide(fleet("running", interrupted=True)).run_state == "aborted"


def test_status_is_frozen_and_states_checked():
    s = fleet("running")
    with pytest.raises(Exception):
        s.now_s = 5
    with pytest.raises(ValueError):
        HostStatus("x", "exploded")
    assert s.with_host(HostStatus("h0", "done")).count("done") == 1
