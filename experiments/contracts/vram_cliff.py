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
    peak_allocated_mib: float | None  # of the largest passing probe; null: none passed
    reserved_mib: float | None
    nvml_used_mib: float | None


class Fragmentation(Contract):
    """The allocator torture's figures (read before empty_cache)."""

    fragmentation: float
    inactive_split_mib: float
    inactive_split_blocks: int
    reserved_mib: float
    allocated_mib: float
    largest_free_block_mib: float
    largest_allocatable_mib: float
    blocks_carved: int
    holes: int
    pressure_blocks_until_oom: int | None
    fragmentation_at_oom: float | None
    reserved_at_oom_mib: float | None
    allocated_at_oom_mib: float | None
    capacity_mib: float
    fill_target_mib: float
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
    peak_allocated_mib: float
    alloc_mib: float
    reserved_mib: float
    peak_reserved_mib: float
    nvml_used_mib: float | None  # null: NVML could not be read
    power_w: float | None
    model_peak_mib: float
    peak_component: str
    t_start_ns: int
    t_end_ns: int
    elapsed_s: float


class VramCliffFigures(Contract):
    vram_total_mib: float
    predicted_max_context: int | None
    max_context: int | None
    max_context_batch1: int | None
    limiting_cause: str | None
    cliff_mib: float | None
    cliff_fraction: float | None
    oom_mib: float | None
    max_alloc_mib: float | None
    cliff: list[CliffPoint]
    fragmentation: Fragmentation
    capacity_mib: float
    weights_mib: float
    weights_reserved_mib: float
    n_positions: int
    model: dict[str, Any]  # the model measured: shape, dtype, KV bytes per token, weights
    predicted_cliff_mib: float | None


class VramCliffChecks(Checks):
    fragmentation_positive: bool | None
    cliff_found: bool | None
    cliff_is_memory: bool | None


class VramCliffReport(Report):
    experiment: Literal["vram_cliff"]
    figures: VramCliffFigures | None
    checks: VramCliffChecks
    probes: list[Probe] | None  # null: the experiment failed before probing
