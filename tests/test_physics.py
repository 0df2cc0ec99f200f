"""Ground truth of the simulated GPU: the physics the analyses must later recover."""

from __future__ import annotations

import numpy as np
import pytest

from agents.markers import MarkerTail, MarkerWriter
from agents.physics import NS, LoadEdge, SensorModel, Timeline, render_trace
from agents.profiles import builtin_profile_names, load_profile
from agents.simulated import SimulatedDevice, load_edges_from_markers

MS = 1_000_000


def quiet(name: str, **update):
    """A profile without noise, floor or read errors (exact comparisons)."""
    base = {"noise_w": 0.0, "floor_fraction": 0.0, "read_error_rate": 0.0}
    return load_profile(name).model_copy(update=base | update)


def grid(seconds: float, period_ms: float = 10.0, start_s: float = 0.0) -> np.ndarray:
    return (np.arange(0, seconds * 1000 / period_ms) * period_ms * MS + start_s * NS).astype(np.int64)


@pytest.mark.parametrize("name", builtin_profile_names())
def test_values_change_only_on_the_sensor_update_grid(name):
    prof = load_profile(name).model_copy(update={"floor_fraction": 0.0, "read_error_rate": 0.0, "noise_w": 0.5})
    t = grid(20, period_ms=5)
    r = render_trace(prof, [LoadEdge(5 * NS, 1.0), LoadEdge(12 * NS, 0.0)], t, seed=7)
    model = SensorModel(Timeline(prof, int(t[0]), seed=7))
    changes = t[1:][np.diff(r["power_instant_w"]) != 0]
    k, t_upd = model.last_update(changes)
    # every change is seen by the first read at or after an update instant
    assert np.all(changes - t_upd < 5 * MS)
    intervals = np.diff(changes) / MS
    assert np.median(intervals) == pytest.approx(prof.sensor_update_period_ms, rel=0.05)


@pytest.mark.parametrize("name", builtin_profile_names())
def test_instant_and_average_fields_are_exact_boxcar_means(name):
    prof = quiet(name)
    edge = 10 * NS + 3 * MS
    t = grid(30, period_ms=1)
    r = render_trace(prof, [LoadEdge(edge, 1.0)], t, seed=1)
    model = SensorModel(Timeline(prof, int(t[0]), seed=1))
    idle, load = prof.idle_power_w, min(prof.max_power_w, prof.power_limit_w)
    for field, window_ms in (("power_instant_w", prof.instant_window_ms), ("power_w", prof.average_window_ms)):
        _, t_upd = model.last_update(t)
        frac = np.clip((t_upd - edge) / (window_ms * MS), 0, 1)
        expected = idle + (load - idle) * frac
        assert np.allclose(r[field], expected, atol=2e-3), field


def test_rise_time_of_averaged_field_follows_its_window():
    prof = quiet("rtx4080-laptop")  # 1 s average window, 100 ms updates
    edge = 10 * NS
    t = grid(20, period_ms=1)
    r = render_trace(prof, [LoadEdge(edge, 1.0)], t, seed=2)
    p = r["power_w"]
    lo, hi = p[0], p[-1]
    t10 = t[np.argmax(p >= lo + 0.1 * (hi - lo))]
    t90 = t[np.argmax(p >= lo + 0.9 * (hi - lo))]
    rise_ms = (t90 - t10) / MS
    # a boxcar of W rises 10->90 % in 0.8 W, seen through updates every U
    assert 0.8 * 1000 - 100 <= rise_ms <= 0.8 * 1000 + 100


def test_floor_fraction_only_at_idle():
    prof = load_profile("rtx4080-laptop").model_copy(update={"read_error_rate": 0.0})
    t = grid(600, period_ms=100)
    r = render_trace(prof, [LoadEdge(300 * NS, 1.0)], t, seed=11)
    idle = t < 299 * NS
    assert r["floor"][idle].mean() == pytest.approx(prof.floor_fraction, abs=0.03)
    assert not r["floor"][t > 302 * NS].any()
    assert np.all(r["power_w"][r["floor"]] == prof.floor_power_w)


def test_read_error_rate_comes_out_as_configured():
    prof = load_profile("h100-sxm").model_copy(update={"read_error_rate": 0.05})
    r = render_trace(prof, [], grid(200, period_ms=10), seed=5)
    assert 1 - r["read_ok"].mean() == pytest.approx(0.05, abs=0.006)


def test_thermal_rc_matches_the_analytic_solution():
    prof = quiet("h100-sxm")
    t = grid(900, period_ms=1000)
    r = render_trace(prof, [LoadEdge(0, 1.0)], t, seed=0, t_start_ns=0)
    tau = prof.thermal_resistance_c_per_w * prof.thermal_capacitance_j_per_c
    t_inf = prof.ambient_c + prof.power_limit_w * prof.thermal_resistance_c_per_w
    expected = t_inf + (prof.idle_temp_c - t_inf) * np.exp(-(t / NS) / tau)
    assert np.allclose(r["true_temp_c"], expected, atol=1e-9)
    assert np.all(np.abs(r["temp_c"] - expected) <= 0.5 + 1e-9)  # reported in whole degrees


def test_power_cap_sets_its_bit_and_caps_true_power():
    prof = quiet("rtx4080-laptop")  # demand 165 W at full load, limit 150 W
    r = render_trace(prof, [LoadEdge(NS, 1.0)], grid(5, period_ms=100), seed=0)
    busy = slice(20, None)
    assert np.allclose(r["true_power_w"][busy], 150.0)
    assert np.all(r["clocks_event_reasons"][busy] & 0x4)
    assert np.all(r["clocks_event_reasons"][:5] & 0x1)  # idle bit before the load


def test_thermal_throttling_holds_the_slowdown_temperature():
    prof = quiet("rtx4090", slowdown_temp_c=60.0, shutdown_temp_c=95.0, thermal_capacitance_j_per_c=200.0)
    t = grid(300, period_ms=500)
    r = render_trace(prof, [LoadEdge(0, 1.0)], t, seed=0, t_start_ns=0)
    hot = t > 200 * NS
    assert np.allclose(r["true_temp_c"][hot], 60.0)
    p_hold = (60.0 - prof.ambient_c) / prof.thermal_resistance_c_per_w
    assert np.allclose(r["true_power_w"][hot], p_hold)
    assert np.all(r["clocks_event_reasons"][hot] & 0x20)
    assert np.all(r["sm_clock_mhz"][hot] < prof.sm_clock_max_mhz)
    assert not np.any(r["clocks_event_reasons"][t < 5 * NS] & 0x20)


def test_energy_counter_integrates_true_power_on_its_own_period():
    prof = quiet("a100-sxm")
    edges = [LoadEdge(2 * NS, 0.7), LoadEdge(9 * NS, 0.2), LoadEdge(15 * NS, 0.0)]
    t = grid(20, period_ms=10)
    r = render_trace(prof, edges, t, seed=0, t_start_ns=0)
    tl = Timeline(prof, 0)
    for e in edges:
        tl.add_edge(e)
    refresh = (t // (prof.energy_counter_update_ms * MS)) * int(prof.energy_counter_update_ms * MS)
    assert np.allclose(r["energy_j"], tl.energy_at(refresh), atol=1e-3)
    assert np.all(np.diff(r["energy_j"]) >= 0)
    # the exact integral of the piecewise-constant power
    expected = 55 * 2 + prof.demand_w(0.7) * 7 + prof.demand_w(0.2) * 6 + 55 * 5
    assert tl.energy_at(np.array([20 * NS]))[0] == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(3))
def test_scalar_live_read_equals_vectorized_render(seed):
    rng = np.random.default_rng(seed)
    prof = load_profile(str(rng.choice(builtin_profile_names()))).model_copy(
        update={"read_error_rate": 0.05, "thermal_capacitance_j_per_c": 30.0})
    tl = Timeline(prof, 0, seed=seed)
    for t_edge in np.sort(rng.uniform(0, 60, 12)):
        tl.add_edge(LoadEdge(int(t_edge * NS), float(rng.choice([0.0, 0.3, 1.0]))))
    model = SensorModel(tl)
    t = np.sort(rng.integers(0, 70 * NS, 400))
    vec = model.read(t)
    for j, tt in enumerate(t):
        one = model.read_one(int(tt))
        for key in ("power_w", "power_instant_w", "energy_j", "temp_c", "sm_clock_mhz", "util_gpu", "vram_used_mib",
                    "clocks_event_reasons", "pstate", "read_ok", "floor"):
            assert float(one[key]) == pytest.approx(float(vec[key][j]), abs=1e-3), (key, int(tt))


def test_one_device_seen_from_two_processes_agrees(tmp_path):
    """The workload side writes load markers; the sensor side reads them from the file."""
    path = tmp_path / "markers.jsonl"
    prof = load_profile("h100-sxm")
    workload = SimulatedDevice(prof, host_id="h", t_start_ns=0, marker_writer=MarkerWriter(path))
    tail = MarkerTail(path)
    sensor = SimulatedDevice(prof, host_id="h", t_start_ns=0,
                             load_source=lambda: load_edges_from_markers(tail.read_new(), workload.uuid))
    workload.set_load(1.0, vram_mib=2048, t_ns=5 * NS)
    workload.set_load(0.0, t_ns=9 * NS)
    for t in (4 * NS, 6 * NS, 8 * NS + 7 * MS, 12 * NS):
        a, b = workload.read_sample(t), sensor.read_sample(t)
        assert a == b
    assert sensor.read_sample(6 * NS).vram_used_mib == prof.vram_base_mib + 2048
    assert workload.simulated and "simulated" in workload.info.name
