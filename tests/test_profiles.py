"""Profiles: built-ins load with their documented truth; bad ones give one clear line."""

from __future__ import annotations

import pytest
import yaml

from agents.errors import ConfigError
from agents.profiles import builtin_profile_names, load_profile

REQUIRED = ["name", "idle_power_w", "max_power_w", "power_limit_w", "floor_fraction", "floor_power_w", "ambient_c",
            "thermal_resistance_c_per_w", "thermal_capacitance_j_per_c", "sensor_update_period_ms", "instant_window_ms",
            "average_window_ms", "energy_counter_update_ms", "read_error_rate", "slowdown_temp_c", "shutdown_temp_c",
            "vram_total_mib"]


def test_builtin_profiles_present_and_valid():
    names = builtin_profile_names()
    for required in ("rtx4080-laptop", "rtx4090", "a100-sxm", "h100-sxm"):
        assert required in names
    laptop = load_profile("rtx4080-laptop")
    assert laptop.idle_power_w == pytest.approx(24.1)
    assert laptop.floor_fraction == pytest.approx(0.15)
    assert laptop.floor_power_w == pytest.approx(1.2)
    assert laptop.power_limit_w == 150
    assert laptop.vram_total_mib == pytest.approx(12282)
    h100 = load_profile("h100-sxm")
    assert (h100.instant_window_ms, h100.sensor_update_period_ms) == (25, 100)


def _write(tmp_path, data, name="board.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _base():
    return load_profile("rtx4090").model_dump()


def test_user_profile_file_loads(tmp_path):
    data = _base() | {"name": "my-board", "idle_power_w": 33.0}
    prof = load_profile(str(_write(tmp_path, data)))
    assert prof.name == "my-board" and prof.idle_power_w == 33.0


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_required_field_is_named(tmp_path, field):
    data = _base()
    data.pop(field)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_profile(str(path))
    msg = str(exc.value)
    assert str(path) in msg and field in msg and "required" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "field,value,rule",
    [
        ("idle_power_w", -3, "greater than 0"),
        ("floor_fraction", 1.5, "less than 1"),
        ("max_power_w", 10, "max_power_w must be >= idle_power_w"),
        ("shutdown_temp_c", 50, "shutdown_temp_c must be > slowdown_temp_c"),
        ("sensor_update_period_ms", "fast", "number"),
        ("colour", "red", "not a profile field"),
    ],
)
def test_rule_violations_name_field_and_rule(tmp_path, field, value, rule):
    path = _write(tmp_path, _base() | {field: value})
    with pytest.raises(ConfigError) as exc:
        load_profile(str(path))
    msg = str(exc.value)
    assert field in msg and rule in msg and str(path) in msg and "\n" not in msg


def test_bad_yaml_and_unknown_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(str(bad))
    with pytest.raises(ConfigError, match="unknown simulated profile 'nope'"):
        load_profile("nope")
    with pytest.raises(ConfigError, match="not found"):
        load_profile(str(tmp_path / "missing.yaml"))


def test_content_hash_tracks_physics_only():
    a = load_profile("h100-sxm")
    b = a.model_copy(update={"description": "other words"})
    c = a.model_copy(update={"idle_power_w": 71.0})
    assert a.content_sha256() == b.content_sha256() != c.content_sha256()
