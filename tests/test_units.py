"""Simulated units: each unit its own constants within its board's spread; overrides model
a fault on one unit without leaving the board's comparability group."""

from __future__ import annotations

import os

import numpy as np
import pytest

from agents.errors import ConfigError
from agents.factory import SIMULATE_ENV, DeviceSpec, open_device, parse_device_specs, simulated_specs_from_env
from agents.fingerprint import fingerprint_device
from agents.profiles import load_profile
from agents.units import board_name, draw_unit, split_target, unit_profile

HOST = {"cpu_model": "x", "cpu_cores": 2, "ram_gb": 4.0, "os_kernel": "k"}


def test_units_draw_their_own_constants_within_the_spread_and_repeat():
    board = load_profile("h100-sxm")
    units = [draw_unit(board, f"sim-{i}-h100-sxm", 0) for i in range(200)]
    idle = np.array([u.idle_power_w for u in units])
    spread = board.unit_spread["idle_power_w"]
    assert np.all(np.abs(idle / board.idle_power_w - 1) <= spread)
    assert idle.std() > 0.4 * spread * board.idle_power_w / np.sqrt(3)  # spread over the band, not one value
    assert len({round(x, 6) for x in idle}) == 200
    assert draw_unit(board, "sim-3-h100-sxm", 0) == draw_unit(board, "sim-3-h100-sxm", 0)
    assert draw_unit(board, "sim-3-h100-sxm", 0) != draw_unit(board, "sim-3-h100-sxm", 1)
    assert units[0].sensor_update_period_ms == board.sensor_update_period_ms  # not in the spread: nominal


def test_a_board_without_spread_gives_the_nominal_unit():
    board = load_profile("rtx4080-laptop")
    assert board.unit_spread == {}
    assert draw_unit(board, "any", 3) == board


def test_overrides_replace_the_drawn_value():
    unit, board = unit_profile("h100-sxm?idle_power_w=95&ambient_c=38", "sim-1-h100-sxm", 0)
    assert (unit.idle_power_w, unit.ambient_c) == (95.0, 38.0)
    assert unit.thermal_resistance_c_per_w == draw_unit(board, "sim-1-h100-sxm", 0).thermal_resistance_c_per_w
    assert board == load_profile("h100-sxm")
    assert split_target("h100-sxm?has_energy_counter=false") == ("h100-sxm", {"has_energy_counter": False})
    assert board_name("h100-sxm?idle_power_w=95") == "h100-sxm"


def test_a_faulty_unit_stays_in_its_boards_group_and_behaves_as_overridden():
    plain = open_device(DeviceSpec("sim", "h100-sxm", 0, "sim-1-h100-sxm"))
    leaky = open_device(DeviceSpec("sim", "h100-sxm?idle_power_w=95&power_limit_w=400", 0, "sim-2-h100-sxm"))
    a, b = fingerprint_device(plain, HOST), fingerprint_device(leaky, HOST)
    assert a.comparability_key == b.comparability_key
    assert leaky.info.power_limit_w == 700.0  # reports its board's limit ...
    assert leaky.sim_profile.power_limit_w == 400.0  # ... and caps below it
    (board,) = leaky._lib.boards  # the simulated NVML library's board runs the unit's physics
    assert board.timeline.state(np.array([10**9]))["power_w"][0] == pytest.approx(95.0)
    assert board.profile.power_limit_w == 400.0 and board.identity.power_limit_w == 700.0
    assert leaky.uuid == "SIM-h100-sxm-sim-2-h100-sxm-0"


@pytest.mark.parametrize("spec, words", [
    ("sim:h100-sxm?idle_pwr=95", "'idle_pwr' is not a unit field"),
    ("sim:h100-sxm?idle_power_w=lots", "idle_power_w='lots' is not a number"),
    ("sim:h100-sxm?idle_power_w=800", "would break a profile rule"),
    ("sim:h100-sxm?name=other", "'name' is not a unit field"),
])
def test_bad_overrides_are_one_line_of_bad_input(spec, words):
    with pytest.raises(ConfigError, match="device spec sim:h100-sxm") as exc:
        parse_device_specs(spec, host="h")
    assert words in str(exc.value) and "\n" not in str(exc.value) and exc.value.exit_code == 2


def test_overrides_work_in_the_simulate_env(monkeypatch):
    monkeypatch.setenv(SIMULATE_ENV, "h100-sxm,h100-sxm?ambient_c=38")
    specs = simulated_specs_from_env("h", 0)
    assert [s.target for s in specs] == ["h100-sxm", "h100-sxm?ambient_c=38"]
    assert open_device(specs[1]).sim_profile.ambient_c == 38.0
    monkeypatch.setenv(SIMULATE_ENV, "h100-sxm?ambient=38")
    with pytest.raises(ConfigError):
        simulated_specs_from_env("h", 0)
    assert os.environ[SIMULATE_ENV]


def test_the_spread_field_is_checked():
    from agents.profiles import Profile

    data = load_profile("h100-sxm").model_dump()
    with pytest.raises(ValueError, match="unit_spread.vram_total_mib"):
        Profile(**(data | {"unit_spread": {"vram_total_mib": 0.1}}))
    with pytest.raises(ValueError, match="unit_spread.idle_power_w"):
        Profile(**(data | {"unit_spread": {"idle_power_w": 0.7}}))
