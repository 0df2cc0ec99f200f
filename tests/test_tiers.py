"""The tier rule (tests/tiers.py): marks reach the tests through the fixtures they use, ray and
browser imply slow, and a fast subset of parametrize cases keeps the rest in the slow tier."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tiers import fast_subset, marks_users

pytest_plugins = ["pytester"]
HERE = Path(__file__).resolve().parent

MODULE = '''
import pytest
from tiers import marks_users, fast_subset

@pytest.fixture(scope="module")
@marks_users("ray")
def cluster():
    return "ray"

@pytest.fixture
def job(cluster):  # marks travel through fixtures that use a marked one
    return cluster

@pytest.fixture
@marks_users("realtime")
def clock():
    return 0

def test_plain():
    pass

def test_on_the_cluster(job):
    pass

def test_on_the_clock(clock):
    pass

@pytest.mark.browser
def test_in_a_browser():
    pass

@pytest.mark.parametrize("n", fast_subset([1, 2, 3], keep=1))
def test_cases(n):
    pass
'''


@pytest.fixture
def suite(pytester):
    for name in ("conftest.py", "tiers.py"):
        shutil.copy(HERE / name, pytester.path / name)
    pytester.makepyfile(test_example=MODULE)
    pytester.makeini("[pytest]\nmarkers =\n    slow\n    ray\n    browser\n    realtime\n    fuzz\n")
    return pytester


def test_the_fast_tier_leaves_out_what_the_fixtures_and_marks_say(suite):
    items, _ = suite.inline_genitems("-p", "no:cacheprovider")
    marks = {item.name: {m for m in ("slow", "ray", "browser", "realtime", "fuzz") if item.get_closest_marker(m)}
             for item in items}
    assert marks == {"test_plain": set(), "test_on_the_cluster": {"ray", "slow"}, "test_on_the_clock": {"realtime"},
                     "test_in_a_browser": {"browser", "slow"}, "test_cases[1]": set(), "test_cases[2]": {"slow"},
                     "test_cases[3]": {"slow"}}


def test_an_unknown_tier_mark_is_refused():
    with pytest.raises(ValueError, match="unknown tier mark.*'slo'"):
        marks_users("slo")


def test_fast_subset_keeps_ids_and_marks():
    cases = fast_subset([pytest.param(1, id="one"), pytest.param(2, id="two", marks=pytest.mark.fuzz), (3, 4)], keep=1)
    assert cases[0].id == "one" and not cases[0].marks
    assert cases[1].id == "two" and {m.name for m in cases[1].marks} == {"fuzz", "slow"}
    assert cases[2].values == (3, 4) and [m.name for m in cases[2].marks] == ["slow"]


PACKAGES = ("agents", "experiments", "warehouse", "cluster", "dashboard")


@pytest.mark.slow  # collects the whole suite in a fresh process: seconds
def test_the_fast_tier_exercises_every_package():
    """`make test-fast` (its marker expression read from the Makefile) keeps tests of each package."""
    import re
    import subprocess
    import sys

    repo = HERE.parent
    expr = re.search(r"^FAST_TIER := (.+)$", (repo / "Makefile").read_text(), re.M).group(1).strip()
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", expr],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    per_file: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        if "::" in line:
            per_file[line.split("::")[0]] = per_file.get(line.split("::")[0], 0) + 1
    fast = {}
    for package in PACKAGES:
        imports = re.compile(rf"^\s*(from|import) {package}\b", re.M)
        fast[package] = sum(n for f, n in per_file.items() if imports.search((repo / f).read_text()))
    assert all(n >= 5 for n in fast.values()), f"fast tests per package: {fast}"
