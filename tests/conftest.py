"""Shared test helpers, and the tier rule.

The rule (tests/tiers.py has the details): everything that needs Ray (`ray`), a browser
(`browser`), the wall clock (`realtime`) or more than a few seconds of CPU (`slow`), and the
property tests (`fuzz`), is marked and left out of `make test-fast`; `make test` runs it all.
A fixture decorated with ``tiers.marks_users`` marks every test that uses it, so new tests on
an expensive fixture are classified without a list to keep.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiers import FAST_BUDGET_CPU_S, IMPLIES_SLOW, fixture_marks

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Keep every Ray test on loopback (Ray maps 127.0.0.1 to the first interface otherwise);
# read by Ray at import time, so it is set before any test imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The tests' tensors are tiny: a second OpenMP thread only spins (it doubled the CPU time of the
# torch tests on 2 cores, more with two xdist workers). Read when torch loads, after this file.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def realdata() -> Path:
    """The real nvidia-smi recordings beside the repo (skips when absent)."""
    if not REALDATA.is_dir():
        pytest.skip(f"real recordings not found at ../shared/realdata (looked in {REALDATA}); they ship beside the repo")
    return REALDATA


def pytest_collection_modifyitems(config, items) -> None:
    """Give each test the tier marks of the fixtures it uses (directly or through other
    fixtures), and `slow` to every test marked `ray` or `browser` (tests/tiers.py)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs if info is not None else {}
        for name in getattr(item, "fixturenames", ()):
            if defs.get(name):
                for mark in fixture_marks(defs[name][-1].func):
                    item.add_marker(mark)
        if any(item.get_closest_marker(m) for m in IMPLIES_SLOW) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
        shared = sorted(f"{d[-1].baseid}::{name}" for name, d in defs.items()
                        if d and d[-1].baseid and d[-1].scope != "function" and name in item.fixturenames)
        if shared:  # under `--dist loadgroup` the tests of one shared fixture run on one worker: built once
            item.add_marker(pytest.mark.xdist_group(shared[0]))


# ------------------------------------------------ the fast tier's budget, measured per test

_CPU_START = pytest.StashKey[float]()


def _cpu_s() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    item.stash[_CPU_START] = _cpu_s()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call" and _CPU_START in item.stash:
        # setup and call together: a module fixture's cost lands on its first test
        outcome.get_result().user_properties.append(("cpu_s", round(_cpu_s() - item.stash[_CPU_START], 3)))


_OVER_BUDGET: list[tuple[float, str]] = []


def pytest_runtest_logreport(report) -> None:
    """Runs where the reports arrive (the controller under xdist)."""
    if report.when == "call":
        cpu_s = dict(report.user_properties).get("cpu_s")
        if cpu_s is not None and cpu_s > FAST_BUDGET_CPU_S:
            _OVER_BUDGET.append((cpu_s, report.nodeid))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """In a run that leaves the slow tier out, name the tests over the fast tier's budget."""
    if "not slow" not in (config.option.markexpr or "") or not _OVER_BUDGET:
        return
    terminalreporter.section("fast tier budget")
    terminalreporter.write_line(f"{len(_OVER_BUDGET)} test(s) took more than {FAST_BUDGET_CPU_S:g} s of CPU: make them "
                                "cheaper or mark them (tests/tiers.py says how)")
    for cpu_s, nodeid in sorted(_OVER_BUDGET, reverse=True):
        terminalreporter.write_line(f"  {cpu_s:6.2f} s  {nodeid}")


@pytest.fixture(autouse=True)
def _no_terminal_size_from_xdist(monkeypatch):
    """pytest-xdist starts its workers with COLUMNS=80 and LINES=24, which a user's pipe does
    not have: tests see the environment they would see under plain pytest."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        monkeypatch.delenv("COLUMNS", raising=False)
        monkeypatch.delenv("LINES", raising=False)
