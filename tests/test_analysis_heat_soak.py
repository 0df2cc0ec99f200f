"""Heat soak against the thermal RC model: tau = R*C, equilibrium by the margin rule on the
exact temperature curve, throttling, and the runner's online detector and guard."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from agents.physics import NS, LoadEdge, Timeline, render_trace
from agents.profiles import builtin_profile_names, load_profile
from experiments.analysis.heat_soak import (
    DRIFT_SPAN_WINDOWS,
    EquilibriumDetector,
    ThermalGuard,
    analyze,
    analyze_heat_soak,
    clock_drop_heuristic,
    margin_rule,
    quantisation_se_c_per_min,
    still_moving,
    window_ends,
    window_slopes,
)
from analysis_helpers import assert_plain, frame


def soak_trace(prof, seconds: float, poll_s: float = 0.1, seed: int = 0):
    """Full load from t = 0, read every ``poll_s`` (temperatures in whole degrees)."""
    t = (np.arange(int(seconds / poll_s)) * poll_s * NS).astype(np.int64)
    return frame(render_trace(prof, [LoadEdge(0, 1.0)], t, seed=seed, t_start_ns=0), t)


def true_equilibrium_s(prof, window_s: float, step_s: float, se_c_per_min: float = 0.0) -> float:
    """The rule (margin and drift) applied to the exact (continuous) temperature curve, its
    slopes carrying ``se_c_per_min`` (the error the readings give them; the drift span's, as
    the quantisation floor, that over its length)."""
    t = np.arange(0, 40 * prof.tau_s + 2 * window_s, 0.1)
    tl = Timeline(prof, 0)
    tl.add_edge(LoadEdge(0, 1.0))
    temp = tl.state((t * NS).astype(np.int64))["temp_c"]
    ends = window_ends(0.0, float(t[-1]), window_s, step_s)
    slopes = window_slopes(t, temp, ends, window_s)
    drift = window_slopes(t, temp, ends, DRIFT_SPAN_WINDOWS * window_s)
    moving = still_moving(drift, np.full(drift.size, se_c_per_min / DRIFT_SPAN_WINDOWS), window_s)
    k = margin_rule(slopes, np.full(slopes.size, se_c_per_min), moving=moving)
    return float(ends[k])


def random_profile(seed: int):
    rng = np.random.default_rng(seed)
    tau, r = float(rng.uniform(30, 300)), float(rng.uniform(0.05, 0.4))
    ambient, idle = float(rng.uniform(20, 40)), float(rng.uniform(15, 90))
    pmax = float(rng.uniform(idle + 80, 700))
    r = min(r, (140 - ambient) / pmax)
    t_inf = ambient + pmax * r
    return load_profile("h100-sxm").model_copy(update={
        "thermal_resistance_c_per_w": r, "thermal_capacitance_j_per_c": tau / r, "ambient_c": ambient,
        "idle_power_w": idle, "max_power_w": pmax, "power_limit_w": pmax,
        "slowdown_temp_c": t_inf + 10, "shutdown_temp_c": t_inf + 20,
    }), float(rng.choice([0.1, 0.5, 1.0]))


CASES = [(name, None) for name in builtin_profile_names()] + [("random", s) for s in (7, 21, 33, 48, 59, 64)]


@pytest.mark.parametrize("name,seed", CASES)
@pytest.mark.parametrize("step_s", [None, 15.0])
def test_tau_and_equilibrium_match_the_physics(name, seed, step_s):
    prof, poll = (load_profile(name), 0.1) if seed is None else random_profile(seed)
    window = 300.0  # TR122's 5-minute window (whole-degree readings)
    step = window if step_s is None else step_s
    truth = true_equilibrium_s(prof, window, step, quantisation_se_c_per_min(window))
    res = analyze_heat_soak(soak_trace(prof, max(10 * prof.tau_s, truth + 2 * window), poll), window_s=window,
                            step_s=step_s)
    assert_plain(res)
    assert res["tau_s"] == pytest.approx(prof.tau_s, rel=0.15)
    t_inf = prof.ambient_c + min(prof.max_power_w, prof.power_limit_w) * prof.thermal_resistance_c_per_w
    assert res["t_inf_c"] == pytest.approx(t_inf, abs=0.5)
    assert res["equilibrium"] and res["equilibrium_kind"] == "measured"
    # the bound uses each window's own error, at least the floor the truth was given: never earlier
    assert -step - 1e-6 <= res["equilibrium_measured_s"] - truth <= step + 0.1 * truth
    assert res["slope_upper_c_per_min"] < 0.4 and res["quality"] == "good" and res["tau_resolved"]
    assert res["tau_ci_low_s"] < prof.tau_s < res["tau_ci_high_s"] or res["tau_s"] == pytest.approx(prof.tau_s, rel=0.05)

    # cut early: not reached on the data, the fit predicts it
    cut = analyze_heat_soak(soak_trace(prof, 0.6 * truth, poll), window_s=window, step_s=step_s)
    assert not cut["equilibrium"] and cut["equilibrium_kind"] == "predicted"
    # under two windows the data cannot assess equilibrium; the prediction is still shown
    status = "not assessable" if 0.6 * truth < 2 * window else "predicted"
    assert cut["equilibrium_status"] == status
    assert cut["equilibrium_predicted_ci_low_s"] <= cut["equilibrium_predicted_s"] <= cut["equilibrium_predicted_ci_high_s"]
    assert cut["time_to_equilibrium_s"] == pytest.approx(truth, rel=0.15)
    assert cut["tau_s"] == pytest.approx(prof.tau_s, rel=0.15)


@pytest.mark.parametrize("name", builtin_profile_names())
def test_continuous_noisy_readings_use_the_plain_slopes(name):
    prof = load_profile(name)
    truth = true_equilibrium_s(prof, 300.0, 300.0)
    df = soak_trace(prof, max(10 * prof.tau_s, truth + 600))
    tl = Timeline(prof, 0)
    tl.add_edge(LoadEdge(0, 1.0))
    df["temp_c"] = tl.state(df.t_ns.to_numpy())["temp_c"] + np.random.default_rng(1).normal(0, 0.3, len(df))
    res = analyze_heat_soak(df)  # TR122's 5-minute windows by default
    assert res["window_s"] == 300.0
    assert not res["quantised"] and res["tau_s"] == pytest.approx(prof.tau_s, rel=0.05)
    assert 0 <= res["equilibrium_measured_s"] - truth <= 300.0


def test_online_detector_fires_when_the_offline_analysis_says():
    prof = load_profile("rtx4090")
    df = soak_trace(prof, 1500, poll_s=0.5)
    offline = analyze_heat_soak(df)
    det = EquilibriumDetector()  # TR122's 5-minute windows, as offline
    fired_at = None
    for t, temp in zip(df.t_ns, df.temp_c):
        if det.update(int(t), float(temp)):
            fired_at = (t - df.t_ns.iloc[0]) / NS
            break
    assert det.reached and det.reached_at_s == offline["equilibrium_measured_s"]
    # known at the first read past it, and never before two windows have passed
    assert fired_at == pytest.approx(max(det.reached_at_s, 600.0), abs=0.5 + 1e-9)
    assert det.update(int(df.t_ns.iloc[-1]), None) is True  # stays reached


def test_margin_rule():
    assert margin_rule([2.0, 0.39]) == 1
    assert margin_rule([2.0, 0.45, 0.45]) == 2
    assert margin_rule([0.45, 2.0, 0.45]) is None
    assert margin_rule([np.nan, -0.3]) == 1  # cooling counts by magnitude; NaN never does


def test_thermal_throttling_is_decoded_and_the_heuristic_sees_the_clock_drop():
    prof = load_profile("rtx4090").model_copy(update={"slowdown_temp_c": 60.0, "shutdown_temp_c": 95.0,
                                                      "thermal_capacitance_j_per_c": 300.0})
    res = analyze_heat_soak(soak_trace(prof, 400, poll_s=0.5))
    assert_plain(res)
    assert res["thermal_throttled"] and res["throttled"]
    assert "sw_thermal_slowdown" in res["throttle_bits"] and res["throttle_s"] > 100
    assert res["throttle_heuristic"]["fired"]  # the simulated SM clock drops with the held power
    assert res["t_end_c"] == pytest.approx(60.0, abs=0.5)


def test_clock_drop_heuristic_on_crafted_samples():
    n = 1000
    t = np.arange(n, dtype=np.int64) * NS
    clock = np.full(n, 1980.0)
    clock[600:] = 1600.0  # a 19 % drop under load
    busy = pd.DataFrame({"t_ns": t, "util_gpu": 100.0, "sm_clock_mhz": clock})
    h = clock_drop_heuristic(busy)
    assert h["fired"] and h["fraction"] == pytest.approx(0.4) and h["first_s"] == 600.0
    idle = pd.DataFrame({"t_ns": t, "util_gpu": 0.0, "sm_clock_mhz": np.where(np.arange(n) % 2, 210.0, 1980.0)})
    assert not clock_drop_heuristic(idle)["fired"]
    steady = busy.assign(sm_clock_mhz=1980.0)
    assert not clock_drop_heuristic(steady)["fired"]


def test_idle_trace_has_no_throttling_and_flat_soak_has_no_fit():
    prof = load_profile("a100-sxm")
    t = (np.arange(1300) * 0.5 * NS).astype(np.int64)  # 650 s: two 5-minute windows
    res = analyze_heat_soak(frame(render_trace(prof, [], t, seed=1), t))
    assert not res["throttled"] and not res["throttle_heuristic"]["fired"]
    assert res["throttle_bits"] == {"gpu_idle": 1.0}
    # flat from the start: equilibrium on the data, but no fit, so tau is insufficient and unresolved
    assert res["quality"] == "insufficient" and res["equilibrium"] and res["equilibrium_status"] == "equilibrium"
    assert res["tau_s"] is None and res["tau_resolved"] is False and "no exponential fit" in res["quality_reason"]


def test_analyze_takes_the_heat_soak_phase():
    prof = load_profile("h100-sxm")
    t = (np.arange(2000) * 0.5 * NS).astype(np.int64)
    r = render_trace(prof, [LoadEdge(100 * NS, 1.0)], t, seed=2, t_start_ns=0)
    df = frame(r, t)
    markers = pd.DataFrame({"t_ns": [100 * NS, 100 * NS], "wall_ns": 0, "device_uuid": None,
                            "name": ["load", "phase_start"],
                            "attrs_json": ['{"level": 1.0}', '{"phase": "heat_soak"}']})
    res = analyze(df, markers)
    assert res["source"] == "heat_soak phase" and res["tau_s"] == pytest.approx(prof.tau_s, rel=0.15)
    res2 = analyze(df, markers[markers.name == "load"])
    assert res2["source"] == "from the first load edge" and res2["tau_s"] == pytest.approx(res["tau_s"], rel=0.02)


def test_thermal_guard_trips_and_resumes_with_hysteresis():
    g = ThermalGuard(slowdown_temp_c=90.0, margin_c=5.0)
    assert g.trip_c == 85.0 and g.resume_c == 80.0
    temps = [70, 84, 85, 83, 81, 80, 79, 86]
    states = [g.update(i * NS, x) for i, x in enumerate(temps)]
    assert states == [False, False, True, True, True, False, False, True] and g.trips == 2
    assert ThermalGuard(None).trip_c == 83.0
    low = ThermalGuard(slowdown_temp_c=82.0, margin_c=5.0)  # trip 77 C: resume below it
    assert low.trip_c == 77.0 and low.resume_c == 74.0
    assert g.update(0, None) is True  # a failed read changes nothing


def test_short_quantised_soak_without_a_fit_is_not_equilibrium():
    """5 s of whole-degree readings that never change prove nothing about the slope."""
    import numpy as np
    import pandas as pd

    from experiments.analysis.heat_soak import EquilibriumDetector, analyze_heat_soak

    t = np.arange(0, 5.2, 0.02)
    trace = pd.DataFrame({"t_ns": (t * 1e9).astype("int64"), "temp_c": 37.0, "read_ok": True, "power_w": 690.0})
    out = analyze_heat_soak(trace, window_s=5.0)
    assert out["equilibrium"] is False
    det = EquilibriumDetector(window_s=5.0)
    assert not any(det.update(int(x * 1e9), 37.0) for x in t)


def test_long_flat_quantised_reading_needs_5_minute_windows():
    """A whole-degree reading constant for 11 minutes: at equilibrium on 5-minute windows; on
    60 s windows its slope cannot be bounded under the margin (1 C / (60 s sqrt 12) * 1.96 =
    0.57 C/min), so the rule never fires."""
    t = np.arange(0, 660, 0.1)
    trace = pd.DataFrame({"t_ns": (t * 1e9).astype("int64"), "temp_c": 72.0, "read_ok": True, "power_w": 700.0})
    out = analyze_heat_soak(trace)
    assert out["equilibrium"] is True and out["equilibrium_measured_s"] >= 300
    short = analyze_heat_soak(trace, window_s=60.0)
    assert short["equilibrium"] is False and short["equilibrium_status"] == "not reached"
    bounds = [w["slope_upper_c_per_min"] for w in short["windows"] if w["slope_upper_c_per_min"] is not None]
    assert bounds and min(bounds) > 0.5


def _warm_up(prof, t_from_s: float, seconds: float, poll_s: float = 0.1):
    """Whole-degree readings of a soak whose load came on at 0, recorded from ``t_from_s``,
    with the physics' exact temperature beside them."""
    t = ((t_from_s + np.arange(int(seconds / poll_s)) * poll_s) * NS).astype(np.int64)
    df = frame(render_trace(prof, [LoadEdge(0, 1.0)], t, seed=3, t_start_ns=0), t)
    tl = Timeline(prof, 0)
    tl.add_edge(LoadEdge(0, 1.0))
    return df, tl.state(t)["temp_c"]


def test_whole_degree_warm_up_still_rising_is_not_at_equilibrium():
    """A slow board (tau 20 min) recorded for 9 minutes in whole degrees while still rising
    0.7 C per 5 minutes: the readings hardly change, and 60 s windows (the old preset) called
    it equilibrium; TR122's 5-minute windows need two of them, so it is not assessable."""
    slow = load_profile("a100-sxm").model_copy(update={"thermal_resistance_c_per_w": 0.1,
                                                       "thermal_capacitance_j_per_c": 12000.0})
    df, truth = _warm_up(slow, 2600.0, 540.0)
    last5 = truth[-1] - truth[-3000]
    assert 0.6 < last5 < 0.8 and np.all(df.temp_c == np.round(df.temp_c))  # the premise
    res = analyze_heat_soak(df)
    assert res["quantised"] and res["window_s"] == 300.0
    assert res["equilibrium"] is False and res["equilibrium_status"] == "not assessable"
    assert res["equilibrium_kind"] is None and res["quality"] == "insufficient"


SLOW = {"thermal_resistance_c_per_w": 0.1, "thermal_capacitance_j_per_c": 12000.0}  # tau 20 min


def test_long_whole_degree_warm_up_still_rising_is_not_at_equilibrium():
    """30 minutes of whole-degree readings of a slow board, the last 5 minutes still rising
    0.7 C: TR122's margin alone fires (its windows' upper bounds fall under 0.4 C/min), the
    drift test does not let it: over the last two windows the slope's interval excludes 0 and
    moves the temperature more than half a degree per window. Not at equilibrium, and not for
    want of data (assessable); the online detector agrees."""
    df, truth = _warm_up(load_profile("a100-sxm").model_copy(update=SLOW), 1340.0, 1800.0, poll_s=0.5)
    assert 0.6 < truth[-1] - truth[-600] < 0.8 and np.all(df.temp_c == np.round(df.temp_c))  # the premise
    res = analyze_heat_soak(df)
    assert res["quantised"] and res["equilibrium_assessable"] and res["duration_s"] >= 1799
    assert res["equilibrium"] is False and res["equilibrium_status"] in ("predicted", "not reached")
    windows = res["windows"]
    uppers = [w["slope_upper_c_per_min"] for w in windows]
    assert margin_rule(uppers) is not None  # TR122's margin alone would call it equilibrium
    assert all(w["still_moving"] for w in windows)
    last = windows[-1]
    assert last["drift_c_per_min"] - 1.96 * last["drift_se_c_per_min"] > 0 and last["drift_c_per_min"] * 5 >= 0.5
    if res["equilibrium_predicted_s"] is not None:  # the fit's prediction lies ahead, not behind
        assert res["equilibrium_predicted_s"] > res["duration_s"]
    det = EquilibriumDetector()
    assert not any(det.update(int(t), float(x)) for t, x in zip(df.t_ns, df.temp_c))
    assert det.moving and all(det.moving)


def test_long_flat_whole_degree_soak_is_at_equilibrium():
    """The same length of whole-degree readings that no longer move: equilibrium at the first
    window (known once two have passed), online as offline."""
    t = np.arange(0, 1800, 0.5)
    trace = pd.DataFrame({"t_ns": (t * 1e9).astype("int64"), "temp_c": 71.0, "read_ok": True, "power_w": 400.0})
    res = analyze_heat_soak(trace)
    assert res["equilibrium"] is True and res["equilibrium_measured_s"] == 300.0
    assert not any(w["still_moving"] for w in res["windows"])
    det = EquilibriumDetector()
    assert any(det.update(int(x * 1e9), 71.0) for x in t) and det.reached_at_s == 300.0


@pytest.mark.parametrize("name", builtin_profile_names())
def test_full_preset_soaks_of_the_simulated_boards_reach_equilibrium(name):
    """The full preset's 30-minute soak, whole degrees: the drift test does not stop any
    built-in board from reaching equilibrium on the data."""
    from experiments.heat_soak.config import HeatSoakConfig

    full = HeatSoakConfig.for_profile("full")
    res = analyze_heat_soak(soak_trace(load_profile(name), full.max_duration_s, poll_s=0.5), window_s=full.window_s)
    assert res["equilibrium"] is True and res["equilibrium_kind"] == "measured", res["windows"]


def test_a_continuous_sensors_tiny_significant_drift_does_not_block_equilibrium():
    """A continuous sensor (0.05 C noise) on a board drifting 0.05 C/min for ever: the drift is
    significant but moves a quarter degree per window, under half a degree: equilibrium. The
    same sensor drifting 0.2 C/min (1 C per window, inside TR122's margin) is still moving."""
    rng = np.random.default_rng(8)
    t = np.arange(0, 1800, 0.5)

    def soak(rate_c_per_min):
        temp = 70.0 + rate_c_per_min * t / 60.0 + rng.normal(0, 0.05, t.size)
        return analyze_heat_soak(pd.DataFrame({"t_ns": (t * 1e9).astype("int64"), "temp_c": temp, "read_ok": True,
                                               "power_w": 400.0}))

    tiny = soak(0.05)
    assert not tiny["quantised"] and tiny["equilibrium"] is True and tiny["equilibrium_measured_s"] == 300.0
    w = tiny["windows"][-1]
    assert w["drift_c_per_min"] - 1.96 * w["drift_se_c_per_min"] > 0 and not w["still_moving"]
    steady = soak(0.2)
    assert margin_rule([w["slope_upper_c_per_min"] for w in steady["windows"]]) is not None
    assert steady["equilibrium"] is False and all(w["still_moving"] for w in steady["windows"])


def test_short_soak_is_insufficient_with_its_prediction_labelled():
    """12 s of a board with tau 120 s (the smoke preset): tau cannot be resolved, so the fit
    is insufficient, whatever its R2; the same board soaked for 10 tau is good."""
    prof = load_profile("rtx4090")
    short = analyze_heat_soak(soak_trace(prof, 12.0), window_s=2.0)
    assert short["quality"] == "insufficient" and not short["tau_resolved"]
    assert short["tau_ci_low_s"] < 0 < short["tau_ci_high_s"]  # the interval says why
    assert short["equilibrium"] is False
    assert short["equilibrium_status"] in ("predicted", "not reached")
    if short["equilibrium_predicted_s"] is not None:  # shown, as a prediction, with its interval
        assert short["equilibrium_kind"] == "predicted" and not short["equilibrium_predicted_resolved"]
        assert short["equilibrium_predicted_ci_low_s"] < short["equilibrium_predicted_ci_high_s"]
    full = analyze_heat_soak(soak_trace(prof, 10 * prof.tau_s))
    assert full["quality"] == "good" and full["tau_resolved"] and full["coverage_tau"] >= 1


def test_an_imprecise_fit_of_a_soak_shorter_than_tau_is_insufficient():
    """Noisy continuous readings over half a tau: tau's relative error is over 15 % and the soak
    did not cover one tau, so the fit is insufficient; over three tau it is good."""
    prof = load_profile("h100-sxm")
    rng = np.random.default_rng(5)

    def noisy(seconds):
        df = soak_trace(prof, seconds, poll_s=0.5)
        tl = Timeline(prof, 0)
        tl.add_edge(LoadEdge(0, 1.0))
        df["temp_c"] = tl.state(df.t_ns.to_numpy())["temp_c"] + rng.normal(0, 1.5, len(df))
        return analyze_heat_soak(df)

    half = noisy(0.5 * prof.tau_s)
    assert half["quality"] == "insufficient", (half["tau_rel_se"], half["t_inf_rel_se"])
    assert half["tau_rel_se"] >= 0.15 or half["t_inf_rel_se"] >= 0.15
    assert noisy(3 * prof.tau_s)["quality"] == "good"


def test_presets_use_tr122_windows_and_say_when_they_scale_them():
    from experiments.heat_soak.config import HeatSoakConfig

    full = HeatSoakConfig.for_profile("full")
    assert full.window_s == 300.0 and full.max_duration_s == 1800.0 and full.window_note is None
    quick = HeatSoakConfig.for_profile("quick")
    assert quick.window_s == pytest.approx(300.0 * quick.max_duration_s / 1800.0)
    assert "scaled" in quick.window_note and "300" in quick.window_note
    res = analyze_heat_soak(soak_trace(load_profile("rtx4090"), quick.max_duration_s), window_s=quick.window_s,
                            window_note=quick.window_note)
    assert res["window_note"] == quick.window_note
