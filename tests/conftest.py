"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Keep every Ray test on loopback (Ray maps 127.0.0.1 to the first interface otherwise);
# read by Ray at import time, so it is set before any test imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def realdata() -> Path:
    """The real nvidia-smi recordings beside the repo (skips when absent)."""
    if not REALDATA.is_dir():
        pytest.skip(f"real recordings not found at ../shared/realdata (looked in {REALDATA}); they ship beside the repo")
    return REALDATA


# Fixtures that run the real fleet job on a local Ray (a minute or more on 2 cores): a test
# that asks for one is slow whatever module it lives in, so `make test-fast` leaves it out.
_FLEET_FIXTURES = {"fleet_warehouse", "fleet_app"}


def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test that needs the fleet-job fixture as slow."""
    for item in items:
        if _FLEET_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
