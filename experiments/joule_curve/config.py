"""Joule curve settings: model, batch sizes, repetitions, warmup and event lengths."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from experiments.model_shapes import legacy_model_fields
from experiments.presets import check_batch_sizes, pick


class JouleCurveConfig(BaseModel):
    """Batch sizes x repetitions of one prefill event and one decode event each.

    Every event repeats its pass until it lasts ``min_event_s``; keep that at ten sensor
    update periods or more (1 s for the built-in boards' 100 ms) so its energy is billable
    from the power trace. The same settings run on a GPU and on a simulated board, whose
    compute model times the passes.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field("124m", description="a built-in model (experiments.model_shapes.BUILTIN_CONFIGS) or a local "
                       "config.json or model directory; built from its config on the device (a simulated board's "
                       "compute and memory model run its shape)")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float16", description="weights and activations")
    attn_implementation: Literal["eager", "sdpa"] = "sdpa"
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    repetitions: int = Field(3, ge=1, description="measured events per batch size and phase")
    warmup_repetitions: int = Field(1, ge=0, description="unmeasured prefill+decode passes per batch size, run first")
    input_tokens: int = Field(128, ge=1, description="prompt length per sequence")
    output_tokens: int = Field(64, ge=1, description="decode steps per sequence")
    min_event_s: float = Field(1.0, ge=0, description="minimum event duration, seconds (passes repeat until then)")
    gap_s: float = Field(0.0, ge=0, description="idle between events, seconds")
    idle_s: float = Field(5.0, ge=0, description="a marked idle window after the model is built and before the "
                          "warmup, seconds, the accelerator quiet: the idle reference of net energy when the run "
                          "has no baseline experiment (its longest stable stretch counts: keep it a few sensor "
                          "windows longer than the board takes to settle); 0: none")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _legacy_fields(cls, data):
        return legacy_model_fields(data)

    @field_validator("batch_sizes")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        return check_batch_sizes(v)

    @classmethod
    def for_profile(cls, profile: str) -> "JouleCurveConfig":
        """Preset for a run profile (smoke: 6 events of ~1 s). Prompts of 256 tokens and batches
        up to 64 give the per-token energy a visible share of a pass next to its fixed cost."""
        return cls(
            batch_sizes=pick(profile, [1, 16, 64], [1, 4, 16, 64], [1, 2, 4, 8, 16, 32, 64]),
            repetitions=pick(profile, 1, 2, 5),
            warmup_repetitions=pick(profile, 1, 1, 2),
            input_tokens=pick(profile, 256, 256, 256),
            output_tokens=pick(profile, 16, 32, 128),
            min_event_s=pick(profile, 1.0, 1.0, 2.0),
            gap_s=pick(profile, 0.5, 0.5, 1.0),  # idle around events: each edge gets its correction
            idle_s=pick(profile, 4.0, 5.0, 10.0),
        )
