"""Joule curve settings: batch sizes, repetitions, warmup, event lengths and the simulated load model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from experiments.model_shapes import legacy_model_fields
from experiments.presets import check_batch_sizes, pick


class JouleCurveConfig(BaseModel):
    """Batch sizes x repetitions of one prefill event and one decode event each.

    Load model (simulated devices only; a real GPU draws what it draws): no model runs,
    unless ``cpu_stand_in`` asks for the tiny one of the model's family on the CPU; while an event
    runs the runner declares ``level = min(1, base + per_batch * batch_size)``, with a
    higher base and slope for prefill (compute bound) than for decode (memory bound).
    Every event lasts at least ``max(min_event_s, min_sensor_periods x the sensor update
    period)`` so its energy is billable from the power trace.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field("124m", description="a built-in model (experiments.model_shapes.BUILTIN_CONFIGS) or a local "
                       "config.json or model directory: run on a real GPU; on a simulated board it sizes the "
                       "declared VRAM, and its tiny version of the same family is the CPU stand-in")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float16", description="the model's dtype (the CPU stand-in runs float32)"
    )
    attn_implementation: Literal["eager", "sdpa"] = "sdpa"
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    repetitions: int = Field(3, ge=1, description="measured events per batch size and phase")
    warmup_repetitions: int = Field(1, ge=0, description="unmeasured prefill+decode passes per batch size, run first")
    input_tokens: int = Field(128, ge=1, description="prompt length per sequence")
    output_tokens: int = Field(64, ge=1, description="decode steps per sequence")
    min_event_s: float = Field(1.0, ge=0, description="minimum event duration, seconds")
    min_sensor_periods: int = Field(10, ge=0, description="minimum event duration in sensor update periods (simulated)")
    gap_s: float = Field(0.0, ge=0, description="idle between events, seconds")
    cpu_stand_in: bool = Field(
        False, description="simulated devices: also run the model's tiny twin on the CPU in each pass (exercises the "
        "workload code; costs a torch + transformers import and CPU time, and changes nothing the sensors see)")
    prefill_level_base: float = Field(0.55, ge=0, le=1)
    prefill_level_per_batch: float = Field(0.05, ge=0)
    decode_level_base: float = Field(0.25, ge=0, le=1)
    decode_level_per_batch: float = Field(0.04, ge=0)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _legacy_fields(cls, data):
        return legacy_model_fields(data)

    @field_validator("batch_sizes")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        return check_batch_sizes(v)

    def load_level(self, phase: str, batch_size: int) -> float:
        """The load level declared for an event of ``phase`` at ``batch_size`` (0..1)."""
        if phase == "prefill":
            return min(1.0, self.prefill_level_base + self.prefill_level_per_batch * batch_size)
        return min(1.0, self.decode_level_base + self.decode_level_per_batch * batch_size)

    @classmethod
    def for_profile(cls, profile: str) -> "JouleCurveConfig":
        """Preset for a run profile (smoke: 6 events of ~1 s on a simulated device)."""
        return cls(
            batch_sizes=pick(profile, [1, 4, 16], [1, 2, 4, 8, 16], [1, 2, 4, 8, 16, 32, 64]),
            repetitions=pick(profile, 1, 2, 5),
            warmup_repetitions=pick(profile, 1, 1, 2),
            input_tokens=pick(profile, 32, 64, 128),
            output_tokens=pick(profile, 8, 32, 128),
            min_event_s=pick(profile, 1.0, 1.0, 2.0),
            gap_s=pick(profile, 0.0, 0.2, 1.0),
        )
