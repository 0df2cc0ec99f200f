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
