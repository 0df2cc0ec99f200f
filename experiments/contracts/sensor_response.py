"""The sensor (instrument) response's report: per power field, how often the sensor
updates, how fast it rises, how late it follows the load and over what window it averages
(``experiments.analysis.instrument_response.analyze_step_response``).

A field the device does not report is null. Every timing figure carries its uncertainty
(:func:`~experiments.contracts.base.interval`); with no usable step the figures are null
and ``quality`` is ``no_data``.
"""

from __future__ import annotations

from typing import Any, Literal

from .base import Contract, OpenRecord, interval, model
from .report import Checks, Report

SensorFieldFigures = model(
    "SensorFieldFigures",
    __name__,
    doc="One power field's response to the load steps.",
    **interval("update_period", "ms"),
    poll_ms=(float | None, ...),
    idle_w=(float | None, ...),
    load_w=(float | None, ...),
    delta_w=(float | None, ...),
    delta_p_ok=(bool, ...),  # TR122: |load - idle| > 10 W
    **interval("rise", "ms"),
    rise_sem_ms=(float | None, ...),
    **interval("delay", "ms"),
    delay_sem_ms=(float | None, ...),
    **interval("delay_first_read", "ms"),
    **interval("window", "ms"),
    window_edges=(str, ...),
    window_count_ms=(float | None, ...),
    timing_resolution_ms=(float | None, ...),
    sensor_class=(Literal["averaged", "instant"] | None, ...),  # null: the window is unknown
    edges_used=(str, ...),
    rising=(dict[str, Any], ...),
    falling=(dict[str, Any], ...),
    n_steps=(int, ...),
    n_steps_seen=(int, ...),
    steps=(list[OpenRecord], ...),  # one diagnostic record per step
    passed=(bool | None, ...),
    criterion=(str | None, ...),
    quality=(Literal["good", "unresolved", "no_data"], ...),
)


class SensorResponseFigures(Contract):
    """One entry per power field (null: the device does not report that field)."""

    power_w: SensorFieldFigures | None
    power_instant_w: SensorFieldFigures | None
    power_avg_1s_w: SensorFieldFigures | None

    def fields(self) -> dict[str, Any]:
        """The power fields the device reported, by name."""
        return {name: value for name, value in self if value is not None}


class SensorResponseChecks(Checks):
    steps: int | None  # load steps the runner made


class SensorResponseReport(Report):
    experiment: Literal["instrument_response"]
    figures: SensorResponseFigures | None
    checks: SensorResponseChecks
