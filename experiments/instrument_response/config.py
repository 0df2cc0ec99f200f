"""Instrument-response settings: a square wave idle / load / idle, repeated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from experiments.presets import pick


class InstrumentResponseConfig(BaseModel):
    """Segment lengths and repeats of the square wave."""

    model_config = ConfigDict(extra="forbid")

    idle_s: float = Field(3.0, gt=0, description="idle segment; longer than the slowest averaging window")
    load_s: float = Field(3.0, gt=0)
    repeats: int = Field(5, ge=1, le=1000)
    level: float = Field(1.0, gt=0, le=1.0, description="load level of the load segments")

    @classmethod
    def for_profile(cls, profile: str) -> "InstrumentResponseConfig":
        """Preset for a run profile."""
        return cls(idle_s=pick(profile, 2.5, 3.0, 5.0), load_s=pick(profile, 2.5, 3.0, 5.0),
                   repeats=pick(profile, 3, 5, 10))
