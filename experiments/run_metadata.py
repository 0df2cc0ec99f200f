"""Run metadata: identity, what happened (run_state) and why (end_reason), as separate fields."""

from __future__ import annotations

import platform
import subprocess
import time
import uuid
from importlib import metadata
from pathlib import Path

SCHEMA_VERSION = 1
RUN_STATES = ("completed", "aborted", "timeout", "partial", "lost")
END_REASONS = ("completed", "equilibrium", "thermal_trip", "timeout", "poller_degraded", "error", "interrupted", "lost")
LIBRARIES = ("numpy", "pandas", "pyarrow", "torch", "transformers", "nvidia-ml-py", "ray", "duckdb", "pydantic")


def mint_run_id() -> str:
    """A run id minted at the start of a run: UTC time plus 8 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit hash, dirty flag) of the code that ran, or (None, None) outside a checkout."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, timeout=5)
        return commit.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def library_versions() -> dict:
    """Versions of the libraries that shape the numbers (None when absent)."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def new_metadata(run_id: str, host: str, device_uid: str, fingerprint: str, simulated: bool, config: dict) -> dict:
    """The metadata written at the start of a run: pessimistic until the end overwrites it
    (built through its contract, experiments.contracts.RunMetadata)."""
    commit, dirty = git_state()
    return checked({
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "host": host,
        "device_uid": device_uid,
        "fingerprint": fingerprint,
        "simulated": simulated,
        "run_state": "partial",  # what a crashed run leaves behind
        "end_reason": "error",
        "started_wall_ns": time.time_ns(),
        "started_t_ns": time.monotonic_ns(),
        "ended_wall_ns": None,
        "clock": "monotonic",
        "git_hash": commit,
        "git_dirty": dirty,
        "config": config,
        "library_versions": library_versions(),
        "checks": {},
    })


def checked(meta: dict) -> dict:
    """``meta`` validated by the run metadata's contract, as the JSON document written."""
    from experiments.contracts import RunMetadata, dump

    return dump(RunMetadata.model_validate(meta))
