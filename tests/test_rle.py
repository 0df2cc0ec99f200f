"""RLE against the definition computed by hand, and the collapse detector on crafted series."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pandas as pd
import pytest

from agents.physics import LoadEdge, render_trace
from agents.profiles import load_profile
from experiments.analysis.rle import (
    RLEParams,
    analyze_rle,
    bin_trace,
    collapse_events,
    collapse_rate,
    collapse_rates_per_device,
    detect_collapses,
    rle_components,
    rle_series,
    trailing_slope,
)

S = 1_000_000_000


def test_components_match_the_definition_by_hand():
    t = np.arange(8, dtype=float)
    util = np.array([0.5, 0.6, 0.7, 0.9, 0.9, 0.8, 0.95, 0.9])
    temp = 50.0 + 0.5 * t  # exactly 0.5 C/s
    power = np.array([100, 120, 140, 160, 170, 150, 180, 175], dtype=float)
    limit_w, t_limit = 200.0, 87.0
    c = rle_components(t, util, temp, power, limit_w, t_limit)

    def by_hand(i):
        window = list(util[max(0, i - 4): i + 1])
        stability = 1.0 / (1.0 + statistics.pstdev(window))
        a_load = power[i] / limit_w
        # One sample has no slope: T_sustain is its maximum, as in the source (< 2 samples).
        t_sustain = 600.0 if i == 0 else min(max((t_limit - temp[i]) / 0.5, 1.0), 600.0)
        return util[i] * stability / (a_load * (1.0 + 1.0 / t_sustain)), stability, a_load, t_sustain

    raw = [by_hand(i)[0] for i in range(8)]
    for i in range(1, 8):
        rle_raw, stability, a_load, t_sustain = by_hand(i)
        assert c["stability"][i] == pytest.approx(stability, rel=1e-12)
        assert c["a_load"][i] == pytest.approx(a_load, rel=1e-12)
        assert c["dtdt_c_per_s"][i] == pytest.approx(0.5, rel=1e-9)
        assert c["t_sustain_s"][i] == pytest.approx(t_sustain, rel=1e-9)
        assert c["rle_raw"][i] == pytest.approx(rle_raw, rel=1e-9)
        assert c["rle"][i] == pytest.approx(np.mean(raw[max(0, i - 4): i + 1]), rel=1e-9)
    # Index 6 spelled out: stdev of util[2:7], T_sustain (87 - 53) / 0.5 = 68 s.
    stab6 = 1 / (1 + statistics.pstdev([0.7, 0.9, 0.9, 0.8, 0.95]))
    assert c["rle_raw"][6] == pytest.approx(0.95 * stab6 / (0.9 * (1 + 1 / 68)), rel=1e-9)


def test_t_sustain_clips_and_floors_the_slope():
    t = np.arange(6, dtype=float)
    util = np.full(6, 0.9)
    power = np.full(6, 100.0)
    cooling = rle_components(t, util, 70 - 0.5 * t, power, 200.0, 87.0)
    assert np.all(cooling["t_sustain_s"][1:] == 600.0)  # dT/dt floored at 1e-3: (87-T)/1e-3 clipped
    over = rle_components(t, util, 90 + 0.5 * t, power, 200.0, 87.0)
    assert np.all(over["t_sustain_s"] == 1.0)


def test_util_must_be_a_fraction_and_limits_are_required():
    t = np.arange(3, dtype=float)
    with pytest.raises(ValueError, match="fraction"):
        rle_components(t, [50, 60, 70], [50, 50, 50], [100, 100, 100], 200.0, 87.0)
    with pytest.raises(ValueError, match="power_limit_w"):
        rle_components(t, [0.5] * 3, [50] * 3, [100] * 3, 0.0, 87.0)


def test_stability_uses_util_as_a_fraction():
    # A 5-point wobble in percent: the source's percent stdev would give ~0.17; a fraction gives ~0.95.
    t = np.arange(5, dtype=float)
    util = np.array([0.90, 0.85, 0.95, 0.90, 0.85])
    c = rle_components(t, util, np.full(5, 60.0), np.full(5, 100.0), 200.0, 87.0)
    assert c["stability"][-1] == pytest.approx(1 / (1 + statistics.pstdev(util)))
    assert c["stability"][-1] > 0.9


def test_least_squares_slope_on_whole_degree_readings():
    t = np.arange(0, 120, 1.0)
    temp = np.round(40 + 0.3 * t)
    slope = trailing_slope(t, temp, 10.0)
    assert np.all(np.abs(slope[10:] - 0.3) < 0.1)
    two_sample = np.diff(temp)
    assert set(np.unique(two_sample)) <= {0.0, 1.0}  # what the source's dT/dt would read


def _detector(n=200, rle=None, util=0.9, a_load=0.8, temp=80.0, dtdt=0.2, t_sustain=30.0, **kw):
    t = np.arange(n, dtype=float)
    full = lambda v: np.full(n, v, dtype=float) if np.isscalar(v) else np.asarray(v, dtype=float)  # noqa: E731
    return detect_collapses(t, full(rle), full(util), full(a_load), full(temp), full(dtdt), full(t_sustain), 87.0,
                            RLEParams(**kw))


def test_collapse_fires_after_exactly_seven_gated_samples():
    rle = np.where(np.arange(200) < 100, 1.0, 0.4)
    d = _detector(rle=rle)
    assert np.flatnonzero(d["collapse_start"]).tolist() == [106]  # drops at 100..106: the 7th fires
    assert d["below_count"][105] == 6 and d["below_count"][106] == 7
    assert not d["collapse"][:106].any() and d["collapse"][106:].all()


def test_six_gated_samples_do_not_fire():
    rle = np.ones(200)
    rle[100:106] = 0.4
    d = _detector(rle=rle)
    assert not d["collapse"].any()
    assert d["below_count"].max() == 6


def test_an_ungated_sample_resets_the_counter():
    rle = np.where(np.arange(200) < 100, 1.0, 0.4)
    dtdt = np.full(200, 0.2)
    dtdt[104] = 0.0  # not heating: the gate is off for one sample
    d = _detector(rle=rle, dtdt=dtdt)
    assert np.flatnonzero(d["collapse_start"]).tolist() == [111]


def test_no_collapse_during_warm_up():
    rle = np.ones(200)
    rle[20:50] = 0.4  # a deep drop entirely inside the 60 s warm-up
    d = _detector(rle=rle)
    assert not d["collapse"].any()
    assert np.all(d["peak"][:60] == 0.0) and np.all(d["below_count"][:60] == 0)
    # A drop that starts in the warm-up sets no peak: the peak starts at the low level.
    rle2 = np.where(np.arange(200) < 40, 1.0, 0.4)
    assert not _detector(rle=rle2)["collapse"].any()


def test_no_collapse_without_evidence():
    rle = np.where(np.arange(200) < 100, 1.0, 0.4)
    d = _detector(rle=rle, t_sustain=600.0, temp=60.0, a_load=0.8)
    assert d["below_count"].max() >= 7 and not d["collapse"].any()
    # Each piece of evidence alone is enough.
    assert _detector(rle=rle, t_sustain=59.0, temp=60.0)["collapse"].any()
    assert _detector(rle=rle, t_sustain=600.0, temp=82.5)["collapse"].any()
    assert _detector(rle=rle, t_sustain=600.0, temp=60.0, a_load=0.96)["collapse"].any()


def test_no_collapse_when_not_under_load_or_not_heating():
    rle = np.where(np.arange(200) < 100, 1.0, 0.4)
    assert not _detector(rle=rle, util=0.5, a_load=0.7)["collapse"].any()
    assert not _detector(rle=rle, dtdt=0.04)["collapse"].any()
    assert _detector(rle=rle, util=0.5, a_load=0.96)["collapse"].any()  # A_load alone opens the gate


def test_peak_decays_per_sample():
    rle = np.where(np.arange(200) < 100, 1.0, 0.1)
    d = _detector(rle=rle)
    assert d["peak"][99] == 1.0
    assert d["peak"][110] == pytest.approx(0.998 ** 11)


def _crafted_trace(period_s: float, seconds: float = 240.0, drop_at_s: float = 120.0, t0_ns: int = 5 * S):
    """util 95 % -> 50 % at drop_at_s while power stays at 96 % of the limit and the die keeps
    heating at 0.2 C/s (whole degrees): the 'util collapses, power pinned' signature."""
    t = np.arange(0.0, seconds, period_s)
    util_pct = np.where(t < drop_at_s, 95.0, 50.0)
    return pd.DataFrame({
        "t_ns": t0_ns + np.round(t * S).astype(np.int64),
        "power_w": np.full(t.size, 0.96 * 300.0),
        "util_gpu": util_pct,
        "temp_c": np.round(40.0 + 0.2 * t),
        "read_ok": np.ones(t.size, dtype=bool),
    })


def test_rle_series_on_a_trace_finds_the_collapse_at_any_poll_rate():
    starts = []
    for period in (0.1, 0.02, 1.0):
        series = rle_series(_crafted_trace(period), power_limit_w=300.0, slowdown_temp_c=90.0)
        assert series["util_frac"].max() <= 1.0
        ev = collapse_events(series)
        assert len(ev) == 1
        starts.append((ev[0]["t_start_ns"] - 5 * S) / S)
    # Same collapse time (seconds, not samples) whatever the poller's rate.
    assert max(starts) - min(starts) <= 1.0
    assert 120 + 7 <= starts[0] <= 120 + 14  # smoothing delay + 7 gated samples


def test_collapse_rate_is_per_gated_hour():
    series = rle_series(_crafted_trace(0.1), power_limit_w=300.0, slowdown_temp_c=90.0)
    rate = collapse_rate(series)
    assert rate["n_collapses"] == 1
    assert rate["gated_h"] == pytest.approx(float(series["gated"].sum()) / 3600.0, rel=1e-3)
    assert rate["collapse_rate_per_gated_h"] == pytest.approx(1 / rate["gated_h"], rel=1e-3)
    assert "gated time" in rate["basis"]


def test_analyze_rle_on_a_rendered_soak_is_json_safe_and_quiet():
    prof = load_profile("h100-sxm")
    grid = np.arange(0, 300 * S, 100_000_000, dtype=np.int64)
    r = render_trace(prof, [LoadEdge(10 * S, 0.9)], grid, seed=1)
    trace = pd.DataFrame({k: v for k, v in r.items() if not k.startswith("true_") and k != "floor"})
    trace["t_ns"] = grid
    out = analyze_rle(trace, prof.power_limit_w, prof.slowdown_temp_c)
    json.dumps(out, allow_nan=False)
    assert out["n_bins"] == 300
    assert out["rate"]["n_collapses"] == 0  # a steady soak far below slowdown does not collapse
    series = rle_series(trace, prof.power_limit_w, prof.slowdown_temp_c)
    loaded = series[series.t_ns > 20 * S]
    expected_a_load = (prof.idle_power_w + 0.9 * (prof.max_power_w - prof.idle_power_w)) / prof.power_limit_w
    assert loaded["a_load"].median() == pytest.approx(expected_a_load, rel=0.01)
    assert loaded["util_frac"].median() == pytest.approx(0.9)
    trace["device_uuid"] = "GPU-a"
    rates = collapse_rates_per_device(trace, {"GPU-a": {"power_limit_w": 700.0, "slowdown_temp_c": 90.0}})
    assert rates["GPU-a"]["n_collapses"] == 0


def test_bins_ignore_failed_power_reads():
    trace = pd.DataFrame({"t_ns": [0, S // 2, S, 3 * S // 2], "power_w": [100.0, 1.0, 200.0, 300.0],
                          "util_gpu": [50.0, 50.0, 80.0, 80.0], "temp_c": [40.0, 40.0, 41.0, 41.0],
                          "read_ok": [True, False, True, True]})
    b = bin_trace(trace, 1.0)
    assert b["power_w"].tolist() == [100.0, 250.0]
    assert b["util_frac"].tolist() == [0.5, 0.8]


@pytest.mark.parametrize("n", [1, 5, 21])
def test_trailing_mean_and_std_are_those_of_the_finite_values_in_each_window(n):
    """The vectorised trailing window equals np.mean / np.std over the finite values of the
    n values ending at each index, NaN where the window holds none."""
    from experiments.analysis.rle import _trailing

    rng = np.random.default_rng(n)
    v = rng.normal(size=300)
    v[rng.random(300) < 0.3] = np.nan
    v[100:100 + n + 3] = np.nan  # a window with no finite value
    for stat, fn in (("mean", np.mean), ("std", np.std)):
        want = np.full(v.size, np.nan)
        for i in range(v.size):
            w = v[max(0, i - n + 1): i + 1]
            if np.isfinite(w).any():
                want[i] = fn(w[np.isfinite(w)])
        got = _trailing(v, n, stat)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
