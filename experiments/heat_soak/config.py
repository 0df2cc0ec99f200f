"""Heat-soak settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from experiments.analysis.heat_soak import TR122_WINDOW_S
from experiments.presets import pick

TR122_SOAK_CAP_S = 1800.0  # TR122's heat-soak time cap


class HeatSoakConfig(BaseModel):
    """Load level, time cap, the equilibrium rule's window and the thermal guard's margin."""

    model_config = ConfigDict(extra="forbid")

    level: float = Field(1.0, gt=0, le=1.0)
    max_duration_s: float = Field(1800.0, gt=0)
    window_s: float = Field(TR122_WINDOW_S, gt=0, description="rolling least-squares window of the slope "
                                                            "(TR122: 5 minutes)")
    window_note: str | None = Field(None, description="how and why the window departs from TR122's, for the report")
    check_period_s: float = Field(0.1, gt=0, description="how often the runner checks temperature")
    trip_margin_c: float = Field(5.0, ge=0, description="trip at the device slowdown threshold minus this")
    stop_at_equilibrium: bool = True

    @classmethod
    def for_profile(cls, profile: str) -> "HeatSoakConfig":
        """Preset for a run profile: the full preset uses TR122's 30 min cap and 5-minute windows;
        the shorter ones scale the window with their cap (and say so in the report)."""
        cap = pick(profile, 12.0, 60.0, TR122_SOAK_CAP_S)
        window = TR122_WINDOW_S * cap / TR122_SOAK_CAP_S
        note = None if cap == TR122_SOAK_CAP_S else (
            f"TR122's {TR122_WINDOW_S:g} s slope window scaled to {window:g} s by the {profile} preset's "
            f"{cap:g} s soak cap (TR122: {TR122_SOAK_CAP_S:g} s)")
        return cls(max_duration_s=cap, window_s=window, window_note=note)
