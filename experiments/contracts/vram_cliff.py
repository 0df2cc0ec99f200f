"""The VRAM cliff's report: per batch size the largest context that fits and why the
next one did not, the allocator's fragmentation, every probe of the search, and the
memory model's prediction beside the measured cliff (``experiments.vram_cliff.runner``).

A figure the search could not reach (no passing probe, no cliff found) is null.
"""

from __future__ import annotations

from typing import Any, Literal

from .base import Contract
from .report import Checks, Report


class CliffPoint(Contract):
    """The cliff at one batch size."""

    batch_size: int
    max_context: int
    cause: str | None  # memory | architecture; null: the search stopped before it
    search_step: int
    first_failing_context: int | None
    model_max_context: int
    delta_tokens: int  # measured - the memory model's
    probes: int
    peak_component: str
    peak_allocated_mb: float | None  # of the largest passing probe; null: none passed
    reserved_mb: float | None
    nvml_used_mb: float | None


class Fragmentation(Contract):
    """The allocator torture's figures (read before empty_cache)."""

    fragmentation: float
    inactive_split_mb: float
    inactive_split_blocks: int
    reserved_mb: float
    allocated_mb: float
    largest_free_block_mb: float
    largest_allocatable_mb: float
    blocks_carved: int
    holes: int
    pressure_blocks_until_oom: int | None
    fragmentation_at_oom: float | None
    reserved_at_oom_mb: float | None
    allocated_at_oom_mb: float | None
    capacity_mb: float
    fill_target_mb: float
    tr122_method_value: float | None
    fragmentation_after_empty_cache: float | None
    read_order: list[str]


class Probe(Contract):
    """One (batch size, context) prefill of the search."""

    batch_size: int
    context: int
    ok: bool
    oom: bool
    error: str | None
    peak_allocated_mb: float
    alloc_mb: float
    reserved_mb: float
    peak_reserved_mb: float
    nvml_used_mb: float | None  # null: NVML could not be read
    power_w: float | None
    model_peak_mb: float
    peak_component: str
    t_start_ns: int
    t_end_ns: int
    elapsed_s: float


class VramCliffFigures(Contract):
    vram_total_mb: float
    predicted_max_context: int | None
    max_context: int | None
    max_context_batch1: int | None
    limiting_cause: str | None
    cliff_mb: float | None
    cliff_fraction: float | None
    oom_mb: float | None
    max_alloc_mb: float | None
    cliff: list[CliffPoint]
    fragmentation: Fragmentation
    capacity_mb: float
    weights_mb: float
    weights_reserved_mb: float
    n_positions: int
    model: dict[str, Any]  # the model measured: shape, dtype, KV bytes per token, weights
    predicted_cliff_mb: float | None


class VramCliffChecks(Checks):
    fragmentation_positive: bool | None
    cliff_found: bool | None
    cliff_is_memory: bool | None


class VramCliffReport(Report):
    experiment: Literal["vram_cliff"]
    figures: VramCliffFigures | None
    checks: VramCliffChecks
    probes: list[Probe] | None  # null: the experiment failed before probing
