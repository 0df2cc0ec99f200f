"""The heat soak's report: the exponential fit (tau, T_inf), TR122's equilibrium rule, the
throttling seen and a downsampled series (``experiments.analysis.heat_soak``).

With fewer than 3 temperature readings the figures are ``no_data``: the window, the
count, the equilibrium words and the quality are given, every other figure is null.
"""

from __future__ import annotations

from typing import Any, Literal

from .base import Contract, interval, model
from .report import Checks, Report


class SlopeWindow(Contract):
    """One slope window of the equilibrium rule."""

    t_s: float
    slope_c_per_min: float | None
    slope_se_c_per_min: float | None
    slope_upper_c_per_min: float | None
    # the "still moving" test over the two windows ending here (null where it cannot run)
    drift_c_per_min: float | None
    drift_se_c_per_min: float | None
    still_moving: bool | None


class SoakSeries(Contract):
    """The soak downsampled, column by column (equal lengths)."""

    t_s: list[float | None]
    temp_c: list[float | None]
    power_w: list[float | None]
    sm_clock_mhz: list[float | None]


class ThrottleHeuristic(Contract):
    fired: bool
    fraction: float | None
    reference_sm_clock_mhz: float | None
    first_s: float | None
    n_busy: int


HeatSoakFigures = model(
    "HeatSoakFigures",
    __name__,
    doc="The soak's figures, times in seconds since its first reading.",
    window_s=(float, ...),
    step_s=(float, ...),
    window_note=(str | None, ...),  # how a short preset scaled TR122's 5-minute window
    n=(int, ...),
    t_start_ns=(int | None, ...),
    duration_s=(float | None, ...),
    quantised=(bool | None, ...),
    t_start_c=(float | None, ...),
    t_end_c=(float | None, ...),
    **interval("slope", "c_per_min", nullable_resolved=True),  # null: no_data
    slope_upper_c_per_min=(float | None, ...),
    windows=(list[SlopeWindow] | None, ...),
    equilibrium=(bool, ...),
    equilibrium_status=(Literal["equilibrium", "predicted", "not assessable", "not reached"], ...),
    equilibrium_assessable=(bool | None, ...),
    equilibrium_measured_s=(float | None, ...),
    **interval("equilibrium_predicted", "s", nullable_resolved=True),
    time_to_equilibrium_s=(float | None, ...),
    equilibrium_kind=(Literal["measured", "predicted"] | None, ...),
    **interval("tau", "s", nullable_resolved=True),
    **interval("t_inf", "c", nullable_resolved=True),
    t0_c=(float | None, ...),
    fit_r2=(float | None, ...),
    fit_rmse_c=(float | None, ...),
    coverage_tau=(float | None, ...),
    tau_rel_se=(float | None, ...),
    t_inf_rel_se=(float | None, ...),
    power_mean_w=(float | None, ...),
    throttled=(bool | None, ...),
    thermal_throttled=(bool | None, ...),
    throttle_s=(float | None, ...),
    throttle_bits=(dict[str, float] | None, ...),  # fraction of the soak with each throttle bit set
    throttle_bits_first_s=(float | None, ...),
    throttle_heuristic=(ThrottleHeuristic | None, ...),
    series=(SoakSeries | None, ...),
    quality=(Literal["good", "insufficient", "no_data"], ...),
    quality_reason=(str, ...),
    end_reason=(str | None, ...),  # the runner's (null: analysed from the warehouse)
    thermal_trip=(dict[str, Any] | None, ...),  # the runner's trip, null when none
)


class HeatSoakChecks(Checks):
    end_reason: str | None


class HeatSoakReport(Report):
    experiment: Literal["heat_soak"]
    figures: HeatSoakFigures | None
    checks: HeatSoakChecks

    def overall_quality(self) -> str | None:
        return self.figures.quality if self.figures else None
