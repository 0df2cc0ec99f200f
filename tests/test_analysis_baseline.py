"""Idle baseline against the simulator's ground truth (and TR122's outlier defect)."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from agents.physics import MS, NS, LoadEdge, render_trace
from agents.profiles import builtin_profile_names, load_profile
from experiments.analysis.baseline import analyze, analyze_baseline
from analysis_helpers import assert_plain


def frame(r: dict, t: np.ndarray, uuid: str = "SIM-0") -> pd.DataFrame:
    """A trace DataFrame (trace-schema columns) from a physics render."""
    df = pd.DataFrame({k: v for k, v in r.items() if not k.startswith("true_") and k != "floor"})
    df.insert(0, "t_ns", np.asarray(t, dtype=np.int64))
    df["device_uuid"] = uuid
    return df


def grid(seconds: float, period_ms: float = 10.0, start_s: float = 0.0) -> np.ndarray:
    return (np.arange(0, seconds * 1000 / period_ms) * period_ms * MS + start_s * NS).astype(np.int64)


@pytest.mark.parametrize("name", builtin_profile_names())
def test_true_idle_is_recovered_and_not_fake(name):
    prof = load_profile(name)
    t = grid(120)
    res = analyze_baseline(frame(render_trace(prof, [], t, seed=3), t))
    assert_plain(res)
    assert res["quality"] == "good" and res["fake_idle"] is False, res["fake_idle_reasons"]
    # the robust mean is the true idle power, within its own (autocorrelation-aware) error
    assert abs(res["mean_robust_w"] - prof.idle_power_w) <= max(4 * res["sem_eff_w"], 0.02)
    assert res["floor_fraction"] == pytest.approx(prof.floor_fraction, abs=0.03)
    assert res["n_eff"] < res["n"] / 5  # a 10 ms poller over 100 ms updates: strongly correlated
    assert res["idle_temp_c"] == pytest.approx(round(prof.idle_temp_c), abs=0.5)


def test_floor_readings_bias_the_plain_mean_not_the_robust_one():
    prof = load_profile("rtx4080-laptop")  # 15 % of idle updates read 1.2 W
    t = grid(300)
    res = analyze_baseline(frame(render_trace(prof, [], t, seed=8), t))
    assert res["floor_w"] == pytest.approx(prof.floor_power_w)
    expected_all = prof.idle_power_w - res["floor_fraction"] * (prof.idle_power_w - prof.floor_power_w)
    assert res["mean_all_w"] == pytest.approx(expected_all, abs=0.1)
    assert res["mean_robust_w"] == pytest.approx(prof.idle_power_w, abs=0.02)
    assert res["min_w"] == pytest.approx(1.2)


def test_outlier_rule_fires_where_mean_plus_two_sigma_cannot():
    """TR122's defect: floor readings inflate sigma so mean + 2 sigma never fires."""
    rng = np.random.default_rng(0)
    n = 6000
    p = 24.1 + rng.normal(0, 0.05, n)
    p[rng.random(n) < 0.15] = 1.2  # floor readings
    bursts = rng.random(n) < 0.03
    p[bursts] = 36.0  # a small background job
    df = pd.DataFrame({"t_ns": np.arange(n, dtype=np.int64) * 10 * MS, "power_w": p, "read_ok": True,
                       "util_gpu": 0.0})
    tr122_threshold = p.mean() + 2 * p.std()
    assert not np.any(p > tr122_threshold)  # the old rule is blind here
    res = analyze_baseline(df)
    assert res["outlier_fraction"] == pytest.approx(bursts.mean(), abs=0.005)
    assert res["fake_idle"] and any("MAD" in r for r in res["fake_idle_reasons"])


def test_load_in_the_window_makes_a_fake_idle():
    prof = load_profile("h100-sxm")
    t = grid(60)
    r = render_trace(prof, [LoadEdge(20 * NS, 0.5), LoadEdge(45 * NS, 0.0)], t, seed=1)
    res = analyze_baseline(frame(r, t))
    reasons = " ".join(res["fake_idle_reasons"])
    assert res["fake_idle"] and "util p95" in reasons and "pstate" in reasons and "SM clock" in reasons


def test_quality_tiers():
    prof = load_profile("a100-sxm")
    t = grid(60)
    df = frame(render_trace(prof, [], t, seed=2), t)
    assert analyze_baseline(df)["quality"] == "good"
    holes = df.copy()
    holes.loc[(holes.t_ns > 10 * NS) & (holes.t_ns < 20 * NS), "read_ok"] = False
    assert analyze_baseline(holes)["quality"] == "gappy"
    dropped = df[(df.t_ns < 30 * NS) | (df.t_ns > 36 * NS)]
    gappy = analyze_baseline(dropped)
    assert gappy["quality"] == "gappy" and gappy["max_gap_ms"] >= 6000
    none = analyze_baseline(df, t_start_ns=100 * NS)
    assert none["quality"] == "no_data" and none["n"] == 0
    assert_plain(none)


def test_analyze_uses_the_baseline_phase_markers():
    prof = load_profile("rtx4090")
    t = grid(60)
    r = render_trace(prof, [LoadEdge(30 * NS, 1.0)], t, seed=4)
    markers = pd.DataFrame({
        "t_ns": [2 * NS, 25 * NS], "wall_ns": [0, 0], "device_uuid": ["SIM-0", "SIM-0"],
        "name": ["phase_start", "phase_end"], "attrs_json": ['{"phase": "baseline"}'] * 2,
    })
    res = analyze(frame(r, t), markers)
    assert_plain(res)
    assert res["source"] == "baseline phase"
    pw = res["fields"]["power_w"]
    assert pw["fake_idle"] is False and pw["mean_robust_w"] == pytest.approx(prof.idle_power_w, abs=0.1)
    assert "power_instant_w" in res["fields"]
    # without markers: the idle stretch before the load edge, with its bounds; never the load
    auto = analyze(frame(r, t), None)
    assert auto["source"] == "idle stretch" and auto["idle_t_end_ns"] < 30 * NS
    assert auto["idle_window_s"] > 25 and "utilisation" in auto["idle_reason"]
    pw = auto["fields"]["power_w"]
    assert pw["fake_idle"] is False and pw["mean_robust_w"] == pytest.approx(prof.idle_power_w, abs=0.1)


def test_a_trace_loaded_from_the_start_has_no_idle_baseline():
    """A load-contaminated recording: no idle stretch, so no_data, not a mean over the load."""
    prof = load_profile("h100-sxm")
    t = grid(20)
    r = render_trace(prof, [LoadEdge(0, 1.0)], t, seed=5)
    res = analyze(frame(r, t), None)
    assert res["quality"] == "no_data" and res["fields"] == {} and res["source"] == "no idle stretch"
    assert "before the first load edge" in res["idle_reason"]


def test_idle_stretch_from_the_power_step_alone():
    prof = load_profile("a100-sxm")
    t = grid(30)
    df = frame(render_trace(prof, [LoadEdge(12 * NS, 1.0)], t, seed=6), t).drop(columns=["util_gpu"])
    res = analyze(df, None)
    assert res["source"] == "idle stretch" and "power step" in res["idle_reason"]
    assert 10 <= res["idle_window_s"] <= 12.5
    assert res["fields"]["power_w"]["mean_robust_w"] == pytest.approx(prof.idle_power_w, abs=0.2)


@pytest.mark.parametrize("folder,idle_w", [("transient_response_3090_TR", 127.0), ("transient_response_4090_TR", 52.0)])
def test_real_recordings_idle_is_found_automatically(folder, idle_w):
    """The SC'24 step recordings: idle about 127 W (3090) and 52 W (4090) before the step,
    found with no markers and no load edges given; every power field present is analysed."""
    from realdata_loader import load_recording

    trace, _ = load_recording(folder)
    res = analyze(trace, None)
    assert res["source"] == "idle stretch" and res["quality"] == "good"
    assert res["idle_window_s"] >= 1.0 and res["idle_t_end_ns"] < trace.t_ns.iloc[0] + 1.5 * NS  # the step is at 1.24 s
    for field, fig in res["fields"].items():
        assert fig["mean_robust_w"] == pytest.approx(idle_w, abs=1.5), field
        assert fig["fake_idle"] is False
