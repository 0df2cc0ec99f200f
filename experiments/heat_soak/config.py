"""Heat-soak settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from experiments.presets import pick


class HeatSoakConfig(BaseModel):
    """Load level, time cap, the equilibrium rule's window and the thermal guard's margin."""

    model_config = ConfigDict(extra="forbid")

    level: float = Field(1.0, gt=0, le=1.0)
    max_duration_s: float = Field(1800.0, gt=0)
    window_s: float = Field(60.0, gt=0, description="rolling least-squares window of the slope")
    check_period_s: float = Field(0.1, gt=0, description="how often the runner checks temperature")
    trip_margin_c: float = Field(5.0, ge=0, description="trip at the device slowdown threshold minus this")
    stop_at_equilibrium: bool = True

    @classmethod
    def for_profile(cls, profile: str) -> "HeatSoakConfig":
        """Preset for a run profile."""
        return cls(max_duration_s=pick(profile, 12.0, 60.0, 1800.0), window_s=pick(profile, 5.0, 20.0, 60.0))
