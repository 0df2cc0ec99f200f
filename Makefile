# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fleetphysics-installed
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install run test test-fast clean browser netns

# Tests start many Python processes (the CLI, pollers, xdist workers): let them share compiled
# bytecode (__pycache__, git-ignored) even where the environment sets PYTHONDONTWRITEBYTECODE.
unexport PYTHONDONTWRITEBYTECODE

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and from TORCH_SPEC: an unpinned torch pulls several GB of CUDA wheels.
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

run: install
	$(VENV)/bin/fleetphysics run --address local --preset smoke --warehouse fleet.duckdb --out runs

# The dashboard's real-browser test drives Debian's chromium (never a downloaded browser).
browser:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# The multi-host test builds its cluster from network namespaces: iproute2's `ip`.
netns:
	@command -v ip >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iproute2; }

test: install browser netns
	$(PY) -m pytest -q

# The fast tier for your own feedback: every test but those marked slow, ray, browser, realtime
# or fuzz (the rule: tests/tiers.py), on one pytest-xdist worker per core; the tests that share
# a module's fixture stay on one worker (loadgroup), so it is built once. `make test` still
# runs everything, in one process; CI runs it.
FAST_TIER := not slow and not ray and not browser and not realtime and not fuzz
FAST_WORKERS ?= auto
test-fast: install
	$(PY) -m pytest -q -m "$(FAST_TIER)" -n $(FAST_WORKERS) --dist loadgroup

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
