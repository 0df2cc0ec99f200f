"""The per-device documents of a run beside the reports: run metadata, the hardware
fingerprint and the poller's statistics.

Run metadata is written by the suite (``experiments.run_metadata``: pessimistic at the
start, overwritten at the end), by the fleet driver and by the importers (TR122,
nvidia-smi). Its required fields are the ones every writer has; the others are optional
in version 1 (null or left out: an importer has no git state, a crashed run no end), and
the warehouse checks the values (safe ids, known states, ordered times) on top of these
types. Fingerprint fields are a documented but open list per backend
(``agents.fingerprint``), so ``fields`` is an object of any keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import Contract

RUN_METADATA_SCHEMA_VERSION = 1


class RunMetadata(Contract):
    """run_metadata.json."""

    schema_version: Literal[1]
    run_id: str
    host: str
    device_uid: str
    fingerprint: str
    simulated: bool
    run_state: str
    end_reason: str
    clock: Literal["monotonic", "wall"] = "monotonic"
    started_wall_ns: int | None = None
    ended_wall_ns: int | None = None
    started_t_ns: int | None = None  # the host's monotonic clock at the start
    git_hash: str | None = None
    git_dirty: bool | None = None
    config: dict[str, Any] | None = None
    library_versions: dict[str, str | None] | None = None
    checks: dict[str, Any] | None = None  # every experiment's checks, by experiment
    source: str | None = None  # who wrote the artifacts (tr122, nvidia-smi); null: the suite (artifact)


def upgrade_unversioned_metadata(doc: dict) -> dict:
    """Run metadata without ``schema_version`` is this project's version 1 (the same keys)."""
    return {**doc, "schema_version": 1}


class Fingerprint(Contract):
    """fingerprint.json (``agents.fingerprint.Fingerprint.to_dict``)."""

    device_uid: str
    fingerprint: str
    comparability_key: str | None = None
    simulated: bool | None = None  # left out: run_metadata's flag
    fields: dict[str, Any] = Field(default_factory=dict)
    version: int | None = None  # of the fingerprint's field list


class DtPercentiles(Contract):
    median: float | None = None
    p95: float | None = None
    p99: float | None = None


class LatenessPercentiles(Contract):
    p50: float | None = None
    p99: float | None = None
    max: float | None = None


class DtHistogram(Contract):
    edges_ms: list[float | None]
    counts: list[int]




class PollerStats(Contract):
    """poller_stats.json (``agents.poller_stats`` and the poller's own additions); a stat the
    poller could not compute is null or left out (a lost host's partial statistics)."""

    period_ms: float | None = None
    seconds: float | None = None
    devices: int | None = None
    ticks: int | None = None
    samples: int | None = None
    expected_samples: int | None = None
    dropped_ticks: int | None = None
    read_errors: int | None = None
    dt_ms: DtPercentiles | None = None
    lateness_ms: LatenessPercentiles | None = None
    dt_histogram: DtHistogram | None = None
    max_gap_ms: float | None = None
    gap_count: int | None = None
    scheduling_quality: str | None = None
    continuity_quality: str | None = None
    scheduling_policy: str | None = None  # SCHED_FIFO, nice -10 or the default policy
    cpu_s: float | None = None  # the host's stats only: the poller's CPU time
    cpu_pct: float | None = None
