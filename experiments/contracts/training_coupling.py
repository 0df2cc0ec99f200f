"""The training coupling's report: whether a training run's gradient norm drives the
device's power, temperature slope or RLE collapses, with the block-bootstrap p-value and
the limits RLE was computed with (``experiments.analysis.coupling``), and the runner's
per-step records.

Without a power limit the verdict is ``insufficient data`` and only the verdict and its
reason are given; every other figure is null.
"""

from __future__ import annotations

from typing import Any, Literal

from .base import Contract, OpenRecord
from .report import Checks, Report

VERDICT = Literal["coupled", "not coupled", "insufficient data"]


class TargetTest(Contract):
    """The lagged rank correlation of grad norm with one target."""

    tested: bool
    reason: str | None  # why it was not tested
    lags: list[dict[str, Any]]
    best_lag: int | None
    correlation: float | None
    z: float | None
    p_value: float | None


class CouplingQuality(Contract):
    quality: Literal["ok", "degraded", "insufficient"]
    aligned_fraction: float | None
    n_steps: int
    n_aligned: int
    steps_outside_trace: int
    median_step_s: float | None
    median_tick_s: float | None
    steps_shorter_than_tick: int | None
    power_field: str | None
    clock: str
    clock_offset_ns: int
    n_boot: int
    block_steps: int | None
    p_floor: float | None
    alpha: float
    method: str
    untested: dict[str, str]


class CouplingSettings(Contract):
    """The settings the coupling analysis ran with (the config's ``analysis``)."""

    max_lag: int
    n_boot: int
    alpha: float
    spike_k: float
    detrend_window_steps: int
    min_steps: int
    require_collapses: bool
    power_field: str
    temp_slope_window_s: float
    clock_offset_ns: int
    seed: int


class WorkloadSignature(Contract):
    """5th and 95th percentiles of the good reads while training (null: no read)."""

    power_p05_w: float | None
    power_p95_w: float | None
    temp_p05_c: float | None
    temp_p95_c: float | None
    util_p05_pct: float | None
    util_p95_pct: float | None


class TrainingCouplingFigures(Contract):
    steps: int | None
    n_aligned: int | None
    aligned_fraction: float | None
    collapse_rate: float | None  # RLE collapses per gated hour
    collapse_rate_basis: str | None
    n_collapses: int | None
    verdict: VERDICT
    verdict_reason: str
    p_value: float | None
    best_lag: int | None
    correlation: float | None
    target: str | None
    lag_convention: str | None
    targets: dict[str, TargetTest] | None
    spikes: dict[str, Any] | None
    rle: dict[str, Any] | None
    energy_per_step_j_median: float | None
    quality: CouplingQuality | None
    rle_power_limit_w: float | None  # the limits RLE was computed with
    rle_slowdown_temp_c: float | None
    analysis_settings: CouplingSettings | None  # null: a report written before the settings were recorded
    signature: WorkloadSignature | None


class TrainingCouplingChecks(Checks):
    end_reason: str | None
    slowdown_temp_c_assumed: bool | None  # the device reported none: the thermal guard's fallback


class TrainingCouplingReport(Report):
    experiment: Literal["training_coupling"]
    figures: TrainingCouplingFigures | None
    checks: TrainingCouplingChecks
    steps: list[OpenRecord] | None  # the runner's per-step records (null: no power limit, no analysis)

    def overall_quality(self) -> str | None:
        quality = self.figures.quality if self.figures else None
        return quality.quality if quality else None
