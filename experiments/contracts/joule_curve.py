"""The Joule curve's report: J/token per (phase, batch size) from the per-event energy,
the per-pass fit E_net/pass = E_fixed + E_token x tokens/pass per phase
(``experiments.analysis.energy.joule_curve``), the headline J/token at batch 1 and at the
largest batch, the model measured and, on a simulated board, the compute model's law.

With no event the curve is null (points, fits, counts and headline figures).
"""

from __future__ import annotations

from typing import Any, Literal

from .base import Contract
from .report import Checks, Report

ENERGY_QUALITY = Literal["NO_DATA", "GAPPY", "GOOD", "BILLABLE"]


class JoulePoint(Contract):
    phase: str
    batch_size: int | None
    j_per_token: float | None
    j_per_token_sem: float | None  # null: a single event
    tokens_per_s: float | None
    power_w: float | None
    n_events: int
    energy_quality: ENERGY_QUALITY  # the worst event's tier
    passes_median: float


class FitParams(Contract):
    e_fixed_j: float | None
    e_fixed_se_j: float | None
    e_fixed_ci_low_j: float | None  # 95 %, Student's t on n - 2 degrees of freedom
    e_fixed_ci_high_j: float | None
    e_fixed_resolved: bool | None  # false: no finite interval, or it reaches 0 (null: written before intervals)
    e_token_j: float | None
    e_token_se_j: float | None
    e_token_ci_low_j: float | None
    e_token_ci_high_j: float | None
    e_token_resolved: bool | None


class JouleFit(Contract):
    phase: str
    model: str
    params: FitParams
    r2: float | None
    n_events: int
    quality: Literal["good", "insufficient"]  # good: >= 3 events and a finite slope SE


class PhaseLaw(Contract):
    """The compute model's energy law of one phase (simulated boards only)."""

    e_fixed_j: float
    e_token_j: float


class IdleReference(Contract):
    """The idle power every net figure subtracts (``experiments.analysis.idle``): its source
    in order of preference, its window and SEM; ``power_w`` null when none was found."""

    power_w: float | None
    sem_w: float | None
    source: Literal["baseline experiment", "baseline phase", "runner idle window", "idle finder"] | None
    t_start_ns: int | None
    t_end_ns: int | None
    window_s: float | None
    quality: str | None
    reason: str


class JouleCurveFigures(Contract):
    points: list[JoulePoint] | None
    fits: list[JouleFit] | None
    quality_counts: dict[str, int] | None  # events per energy tier
    n_events: int | None
    n_used: int | None
    j_per_token: float | None
    j_per_token_batch1: float | None  # null: batch 1 was not measured
    j_per_token_batch1_sem: float | None
    j_per_token_max_batch: float | None
    j_per_token_max_batch_sem: float | None
    max_batch: int | None
    model: dict[str, Any] | None  # the model measured: shape, dtype, memory figures
    truth: dict[str, PhaseLaw] | None  # null on hardware
    idle: IdleReference | None  # null: no events
    quality: Literal["insufficient"] | None  # insufficient: no idle reference, the net figures are null
    quality_reason: str | None


class JouleCurveChecks(Checks):
    warmup_ran: bool | None
    events_matched: bool | None
    batch_sizes_increasing: bool | None
    min_event_duration_met: bool | None
    energy_counter_read: bool | None


class JouleCurveReport(Report):
    experiment: Literal["joule_curve"]
    figures: JouleCurveFigures | None
    checks: JouleCurveChecks
