"""Run presets (`--preset`): `smoke` (whole suite under 60 s, for CI), `quick` (under 3 min),
`full` (TR122 durations: 200 s baseline, 30 min soak cap). A preset is how long a run measures;
a simulated *board* (`sim:<board>`) is what it measures. Older code calls presets profiles."""

from __future__ import annotations

from agents.errors import ConfigError

PRESETS = ("smoke", "quick", "full")
PROFILES = PRESETS  # the old name


def check_preset(name: str) -> str:
    """Validate a run preset name (one-line ConfigError otherwise)."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: use one of {', '.join(PRESETS)}")
    return name


check_profile = check_preset  # the old name


def pick(profile: str, smoke, quick, full):
    """The value for a run preset."""
    return {"smoke": smoke, "quick": quick, "full": full}[check_preset(profile)]


def check_batch_sizes(batch_sizes: list[int]) -> list[int]:
    """Validator shared by the configs that sweep batch sizes: non-empty, >= 1, increasing."""
    if not batch_sizes or any(b < 1 for b in batch_sizes) or any(b >= c for b, c in zip(batch_sizes, batch_sizes[1:])):
        raise ValueError("batch_sizes must be a non-empty, strictly increasing list of integers >= 1")
    return batch_sizes
