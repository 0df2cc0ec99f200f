"""The test tiers: which tests `make test-fast` leaves out, and the rule that decides it.

Every test runs in `make test` (and CI). `make test-fast` runs the rest after leaving out
every test marked

- ``ray``: starts a Ray cluster (in-process, a job, network namespaces);
- ``browser``: drives a real browser;
- ``realtime``: depends on wall-clock waits of real processes or threads (a poller's
  timing, a server answering, a run that paces itself on the clock): slow, and flaky on a
  loaded machine;
- ``fuzz``: the importers' property tests;
- ``slow``: anything else that takes more than a few seconds of CPU (``ray`` and
  ``browser`` imply it).

A test is marked by its module (``pytestmark``), by itself, or by a fixture it uses, directly
or through another fixture: a fixture decorated with :func:`marks_users` marks every test that
uses it, so a new test on an expensive fixture lands in the right tier without a list to keep.
After a fast-tier run, tests over :data:`FAST_BUDGET_CPU_S` are listed in the summary.
"""

from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

TIER_MARKS = ("slow", "ray", "browser", "realtime", "fuzz")
IMPLIES_SLOW = ("ray", "browser")
# CPU seconds (the test's process and the children it waited for, setup and call together)
# above which a fast-tier test is named in the run's summary as one to make cheaper or mark.
FAST_BUDGET_CPU_S = 3.0
_ATTR = "fleetphysics_tier_marks"


def marks_users(*marks: str) -> Callable[[F], F]:
    """Decorate a fixture function (below ``@pytest.fixture``) so that every test using it,
    directly or through other fixtures, carries ``marks``."""
    unknown = set(marks) - set(TIER_MARKS)
    if unknown:
        raise ValueError(f"marks_users: unknown tier mark(s) {sorted(unknown)}; use {', '.join(TIER_MARKS)}")

    def decorate(fn: F) -> F:
        setattr(fn, _ATTR, tuple(marks))
        return fn

    return decorate


def fixture_marks(func: Callable) -> tuple[str, ...]:
    """The tier marks a fixture function declares (empty when none)."""
    return tuple(getattr(func, _ATTR, ()))


def fast_subset(cases, keep: int) -> list:
    """Parametrize ``cases`` with the first ``keep`` in the fast tier and the rest marked
    ``slow``: `make test` still runs every case, `make test-fast` a sample that covers each
    code path. A tuple case gives one value per argument name; ids stay as pytest makes them."""
    import pytest
    from _pytest.mark.structures import ParameterSet

    out = []
    for i, case in enumerate(cases):
        if i < keep:
            out.append(case)
        elif isinstance(case, ParameterSet):
            out.append(pytest.param(*case.values, marks=(*case.marks, pytest.mark.slow), id=case.id))
        elif isinstance(case, tuple):
            out.append(pytest.param(*case, marks=pytest.mark.slow))
        else:
            out.append(pytest.param(case, marks=pytest.mark.slow))
    return out
