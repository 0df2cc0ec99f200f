"""VRAM cliff settings: the allocator torture test and the batch x context search."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from experiments.model_shapes import legacy_model_fields
from experiments.presets import check_batch_sizes, pick


class VramCliffConfig(BaseModel):
    """What to torture and search, and how finely.

    The search doubles the context from ``context_start`` until a probe fails (or the
    position limit is reached), then bisects until the failing and passing contexts are at
    most ``context_step`` apart. ``n_positions`` None picks a position limit above what
    memory allows (from the activation model), so the cliff found is memory's.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field("124m", description="a built-in model (experiments.model_shapes.BUILTIN_CONFIGS) or a local "
                       "config.json or model directory; the memory model and the GPU's prefill use it")
    n_positions: int | None = Field(None, ge=1, description="position limit override; None = above memory's limit")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    attn_implementation: Literal["eager", "sdpa"] = Field(
        "eager", description="eager materialises the T x T scores (TR122's setting); sdpa does not"
    )
    kv_cache: bool = Field(True, description="the prefill keeps its KV cache (as a serving prefill does)")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    context_start: int = Field(256, ge=1, description="first context probed, tokens")
    context_step: int = Field(128, ge=1, description="search resolution, tokens")
    probe_hold_s: float = Field(0.1, ge=0, description="how long a probe's memory is held (the trace sees it)")
    probe_load_level: float = Field(0.9, ge=0, le=1, description="load level marked while a probe's memory is held")
    torture_fill_fraction: float = Field(0.9, gt=0, lt=1, description="fill this fraction of free memory")
    torture_min_block_mib: float = Field(2.0, gt=0)
    torture_max_block_mib: float = Field(64.0, gt=0)
    torture_resolution_mib: float = Field(2.0, gt=0, description="resolution of the largest-block probe")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _legacy_fields(cls, data):
        return legacy_model_fields(data)

    @field_validator("batch_sizes")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        return check_batch_sizes(v)

    @model_validator(mode="after")
    def _blocks(self) -> "VramCliffConfig":
        if self.torture_min_block_mib > self.torture_max_block_mib:
            raise ValueError("torture_min_block_mib must be <= torture_max_block_mib")
        return self

    @classmethod
    def for_profile(cls, profile: str) -> "VramCliffConfig":
        """Preset for a run profile (smoke: ~2 s on a simulated device)."""
        return cls(
            batch_sizes=pick(profile, [1, 4], [1, 2, 4, 8, 16], [1, 2, 4, 8, 16, 32, 64]),
            context_start=pick(profile, 512, 256, 128),
            context_step=pick(profile, 256, 128, 32),
            probe_hold_s=pick(profile, 0.05, 0.1, 0.25),
        )
