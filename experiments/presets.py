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


def check_batch_sizes(batch_sizes: list[int]) -> list[int]:
    """Validator shared by the configs that sweep batch sizes: non-empty, >= 1, increasing."""
    if not batch_sizes or any(b < 1 for b in batch_sizes) or any(b >= c for b, c in zip(batch_sizes, batch_sizes[1:])):
        raise ValueError("batch_sizes must be a non-empty, strictly increasing list of integers >= 1")
    return batch_sizes
