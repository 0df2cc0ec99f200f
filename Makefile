# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fleetphysics-installed
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install run test test-fast clean browser netns

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

# The fast tier for your own feedback: no Ray, browser, real-time poller, fleet-job fixture
# or fuzz tier (about 3 minutes on 2 cores). `make test` still runs everything; CI runs it.
test-fast: install
	$(PY) -m pytest -q -m "not slow and not realtime and not fuzz"

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
