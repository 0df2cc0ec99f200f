"""Run profiles: `smoke` (whole suite under 60 s, for CI), `quick` (under 3 min), `full`
(TR122 durations: 200 s baseline, 30 min soak cap)."""

from __future__ import annotations

from agents.errors import ConfigError

PROFILES = ("smoke", "quick", "full")


def check_profile(name: str) -> str:
    """Validate a run profile name (one-line ConfigError otherwise)."""
    if name not in PROFILES:
        raise ConfigError(f"--profile {name!r}: use one of {', '.join(PROFILES)}")
    return name


def pick(profile: str, smoke, quick, full):
    """The value for a run profile."""
    return {"smoke": smoke, "quick": quick, "full": full}[check_profile(profile)]
