"""Baseline calibration settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from experiments.presets import pick


class BaselineConfig(BaseModel):
    """How long to idle, and the robust-statistics thresholds."""

    model_config = ConfigDict(extra="forbid")

    settle_s: float = Field(2.0, ge=0, description="idle before the window opens (sensor windows drain)")
    duration_s: float = Field(200.0, gt=0)
    floor_threshold_w: float = Field(5.0, ge=0, description="readings below are floor readings")
    outlier_k: float = Field(5.0, gt=0, description="outlier rule: median + k * MAD")

    @classmethod
    def for_profile(cls, profile: str) -> "BaselineConfig":
        """Preset for a run profile."""
        return cls(duration_s=pick(profile, 6.0, 30.0, 200.0), settle_s=pick(profile, 1.5, 3.0, 5.0))
