"""The idle baseline's report (``experiments.analysis.baseline.analyze_baseline`` on the
suite's baseline window, one power field).

With fewer than 2 readings the figures are ``no_data``: the counts and the window are
given, every other figure is null. A TR122 pack's baseline.json is upgraded into these
figures by :func:`experiments.contracts.tr122.baseline_report_from_tr122`.
"""

from __future__ import annotations

from typing import Literal

from .base import Contract
from .report import Checks, Report

QUALITY = Literal["good", "gappy", "no_data"]


class BaselineFigures(Contract):
    """Idle figures of one power field over the baseline window."""

    field: str
    t_start_ns: int | None
    t_end_ns: int | None
    n_rows: int | None  # null: not recorded (an imported TR122 baseline)
    n: int | None
    window_s: float | None
    read_error_fraction: float | None
    gap_fraction: float | None
    max_gap_ms: float | None
    mean_all_w: float | None
    mean_robust_w: float | None  # the idle level: floor readings excluded
    median_w: float | None
    mad_w: float | None
    std_w: float | None
    min_w: float | None
    max_w: float | None
    floor_fraction: float | None
    floor_w: float | None  # null: no floor reading
    idle_temp_c: float | None
    util_p95: float | None
    lag1_autocorr: float | None
    n_eff: float | None
    sem_eff_w: float | None  # the standard error of mean_robust_w (autocorrelation counted)
    outlier_fraction: float | None
    outlier_threshold_w: float | None
    pstate_changes: int | None
    sm_clock_changes: int | None
    fake_idle: bool | None  # null: no_data
    fake_idle_reasons: list[str] | None  # null: not recorded (an imported TR122 baseline)
    quality: QUALITY


class BaselineChecks(Checks):
    completed: bool | None  # the runner held the idle window to its end


class BaselineReport(Report):
    experiment: Literal["baseline"]
    figures: BaselineFigures | None
    checks: BaselineChecks

    def overall_quality(self) -> str | None:
        return self.figures.quality if self.figures else None
