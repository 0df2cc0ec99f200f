"""Simulated-board profiles: YAML data with documented ground truth.

Built-in profiles live in ``agents/profiles/*.yaml``; a user passes their own with
``--device sim:path/to/board.yaml``. A bad profile raises :class:`ConfigError` with one
line naming the file, the field and the rule.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents.errors import ConfigError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
# Physical constants that differ from unit to unit of one board (unit_spread keys).
SPREADABLE_FIELDS = ("idle_power_w", "max_power_w", "ambient_c", "thermal_resistance_c_per_w",
                     "thermal_capacitance_j_per_c", "noise_w", "floor_fraction")


class Profile(BaseModel):
    """Physics of one simulated board. Every field is ground truth for the tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    idle_power_w: float = Field(gt=0, description="true power at load level 0")
    max_power_w: float = Field(gt=0, description="power demanded at load level 1, before the limit")
    power_limit_w: float = Field(gt=0, description="power cap; demand above it is capped")
    floor_fraction: float = Field(ge=0, lt=1, description="fraction of idle sensor updates read at the floor")
    floor_power_w: float = Field(ge=0, description="value of a floor reading")
    ambient_c: float = Field(ge=-20, le=60)
    thermal_resistance_c_per_w: float = Field(gt=0, description="R of the thermal RC model")
    thermal_capacitance_j_per_c: float = Field(gt=0, description="C of the thermal RC model; tau = R*C")
    sensor_update_period_ms: float = Field(gt=0, le=5000, description="power fields change this often")
    instant_window_ms: float = Field(gt=0, description="boxcar window of the instant power field")
    average_window_ms: float = Field(gt=0, description="window of the averaged power field")
    energy_counter_update_ms: float = Field(gt=0, le=5000, description="energy counter refresh period")
    read_error_rate: float = Field(ge=0, lt=1, description="probability that one read fails")
    slowdown_temp_c: float = Field(gt=0, description="thermal throttling holds the die here")
    shutdown_temp_c: float = Field(gt=0)
    vram_total_mib: float = Field(gt=0)
    # Optional fields with defaults (documented in the built-in YAML files).
    noise_w: float = Field(default=0.0, ge=0, description="std of gaussian noise per sensor update")
    idle_util_pct: float = Field(default=0.0, ge=0, le=100)
    vram_base_mib: float = Field(default=300.0, ge=0, description="VRAM used by the driver at rest")
    sm_clock_idle_mhz: float = Field(default=210.0, gt=0)
    sm_clock_max_mhz: float = Field(default=1980.0, gt=0)
    mem_clock_mhz: float = Field(default=2619.0, gt=0)
    has_instant_field: bool = True
    has_energy_counter: bool = True
    # Unit-to-unit spread: field -> relative half-width; each simulated unit draws its own
    # value of the field uniformly within nominal * (1 +- spread) (agents/units.py).
    unit_spread: dict[str, float] = Field(default_factory=dict)
    # Compute model of the simulated accelerator (experiments/sim_accelerator.py): how long the
    # work the runners launch takes on this board and how hard it drives it.
    compute_tflops: float = Field(default=100.0, gt=0, description="dense half-precision throughput work reaches")
    mem_bandwidth_gbs: float = Field(default=1000.0, gt=0, description="memory bandwidth work reaches, GB/s")
    kernel_launch_us: float = Field(default=5.0, ge=0, description="fixed cost of one kernel launch")
    compute_level: float = Field(default=0.95, gt=0, le=1, description="load level of compute-bound work")
    memory_level: float = Field(default=0.45, gt=0, le=1, description="load level of launch- and memory-bound work")
    description: str = ""

    @model_validator(mode="after")
    def _physics_rules(self) -> "Profile":
        rules = [
            (self.max_power_w >= self.idle_power_w, "max_power_w", "must be >= idle_power_w"),
            (self.power_limit_w > self.idle_power_w, "power_limit_w", "must be > idle_power_w"),
            (self.shutdown_temp_c > self.slowdown_temp_c, "shutdown_temp_c", "must be > slowdown_temp_c"),
            (
                self.slowdown_temp_c > self.idle_temp_c,
                "slowdown_temp_c",
                "must be above the idle temperature ambient_c + idle_power_w * thermal_resistance_c_per_w",
            ),
            (self.floor_power_w < self.idle_power_w, "floor_power_w", "must be below idle_power_w"),
            (self.vram_base_mib < self.vram_total_mib, "vram_base_mib", "must be below vram_total_mib"),
        ]
        for key, spread in self.unit_spread.items():
            rules.append((key in SPREADABLE_FIELDS, f"unit_spread.{key}",
                          f"is not a field a unit can vary (one of {', '.join(SPREADABLE_FIELDS)})"))
            rules.append((0 <= spread < 0.5, f"unit_spread.{key}", "must be a relative spread within 0 .. 0.5"))
        for ok, field_name, rule in rules:
            if not ok:
                raise ValueError(f"{field_name} {rule}")
        return self

    @property
    def tau_s(self) -> float:
        """Thermal time constant R*C in seconds."""
        return self.thermal_resistance_c_per_w * self.thermal_capacitance_j_per_c

    @property
    def idle_temp_c(self) -> float:
        """Steady-state temperature at idle."""
        return self.ambient_c + self.idle_power_w * self.thermal_resistance_c_per_w

    def demand_w(self, level: float) -> float:
        """Power demanded at a load level in [0, 1], before the power limit."""
        return self.idle_power_w + level * (self.max_power_w - self.idle_power_w)

    def content_sha256(self) -> str:
        """Hash of the profile's physics (sorted-key JSON), part of the fingerprint."""
        payload = json.dumps(self.model_dump(exclude={"description"}), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


def builtin_profile_names() -> list[str]:
    """Names of the profiles shipped in agents/profiles/."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a built-in profile by name or a user profile from a YAML path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            known = ", ".join(builtin_profile_names())
            raise ConfigError(
                f"unknown simulated profile {name_or_path!r}: use one of {known} or a path to a .yaml profile"
            )
    if not path.exists():
        raise ConfigError(f"{path}: profile file not found; check the path after 'sim:'")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile is a YAML mapping of field: value; see agents/profiles/h100-sxm.yaml")
    try:
        return Profile(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or _field_from_msg(err["msg"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "extra_forbidden":
            msg = "is not a profile field (check its spelling)"
        raise ConfigError(f"{path}: field {loc} {msg}".replace(f"field {loc} {loc} ", f"field {loc} ")) from None


def _field_from_msg(msg: str) -> str:
    return msg.removeprefix("Value error, ").split(" ", 1)[0]
