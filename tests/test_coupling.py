"""Alignment on the shared clock, lagged rank correlation, the circular-shift test and the
verdict: a positive control with a known lag and a negative control of independent AR(1)s."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from experiments.analysis.coupling import (
    align_steps,
    analyze_training_coupling,
    bootstrap_test,
    grad_spikes,
    lagged_spearman,
)

S = 1_000_000_000
MS = 1_000_000
LIMIT_W, SLOWDOWN_C = 400.0, 90.0
REPORT_KEYS = {"steps", "aligned_fraction", "collapse_rate", "verdict", "p_value", "best_lag", "correlation",
               "figures", "quality"}


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    x = np.empty(n)
    x[0] = rng.normal() / np.sqrt(1 - phi * phi)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + rng.normal()
    return x


def make_run(grad_norm, power_per_step_w, step_s=0.5, tick_s=0.1, t0_ns=100 * S, seed=0, gap_ms=1):
    """Steps back to back from t0_ns and a trace on a tick grid whose power is the step's power.

    Temperature follows the power through a first-order RC (tau 20 s) and reads in whole
    degrees; util reads 80 %.
    """
    rng = np.random.default_rng(seed + 1000)
    n = len(grad_norm)
    step_ns = int(step_s * S)
    starts = t0_ns + np.arange(n, dtype=np.int64) * step_ns
    steps = [{"step": i, "loss": 5.0 - 0.001 * i, "grad_norm": float(grad_norm[i]), "lr": 1e-3,
              "t_start_ns": int(starts[i]), "t_end_ns": int(starts[i] + step_ns - gap_ms * MS),
              "energy_j": float(power_per_step_w[i] * step_s)} for i in range(n)]
    grid = np.arange(t0_ns - 5 * S, starts[-1] + step_ns + S, int(tick_s * S), dtype=np.int64)
    idx = np.clip((grid - t0_ns) // step_ns, -1, n)
    p_step = np.asarray(power_per_step_w, dtype=float)
    power = np.where((idx >= 0) & (idx < n), p_step[np.clip(idx, 0, n - 1)], 60.0)
    power = power + rng.normal(0, 0.5, grid.size)
    temp = np.empty(grid.size)
    t_c = 30.0 + 60.0 * 0.1
    for i, p in enumerate(power):
        t_c += tick_s * ((30.0 + p * 0.1) - t_c) / 20.0
        temp[i] = t_c
    trace = pd.DataFrame({"t_ns": grid, "power_w": power, "power_instant_w": power, "temp_c": np.round(temp),
                          "util_gpu": 80.0, "read_ok": True})
    return trace, steps


# -- alignment ------------------------------------------------------------------------------
def test_clock_offset_unaligned_without_the_offset_and_aligned_with_it():
    rng = np.random.default_rng(0)
    g = np.exp(0.1 * ar1(40, 0.5, rng))
    trace, steps = make_run(g, 200 + 10 * g)
    wall = 1_700_000_000 * S  # the same steps stamped on the wall clock (the studies' mistake)
    shifted = [{**s, "t_start_ns": s["t_start_ns"] + wall, "t_end_ns": s["t_end_ns"] + wall} for s in steps]
    out = analyze_training_coupling(trace, shifted, LIMIT_W, SLOWDOWN_C)
    assert out["aligned_fraction"] == 0.0
    assert out["verdict"] == "insufficient data"
    assert "clock" in out["verdict_reason"]
    assert all(np.isnan(r["power_w"]) if r["power_w"] is not None else True for r in out["per_step"])
    assert out["quality"]["steps_outside_trace"] == 40
    fixed = align_steps(trace, shifted, clock_offset_ns=-wall)
    assert fixed["aligned"].all()
    assert fixed["power_w"].to_numpy() == pytest.approx(200 + 10 * g, abs=1.5)  # 5 reads of 0.5 W noise


def test_small_clock_offset_moves_samples_between_steps():
    g = np.linspace(1, 2, 20)
    power = np.where(np.arange(20) % 2 == 0, 100.0, 300.0)
    trace, steps = make_run(g, power, step_s=1.0)
    right = align_steps(trace, steps)["power_w"].to_numpy()
    assert right == pytest.approx(power, abs=1.0)
    # Steps stamped half a step late: each then straddles two steps' power, never a clean copy.
    late = [{**s, "t_start_ns": s["t_start_ns"] + S // 2, "t_end_ns": s["t_end_ns"] + S // 2} for s in steps]
    assert align_steps(trace, late)["power_w"].to_numpy()[:-1] == pytest.approx(200.0, abs=15.0)
    assert align_steps(trace, late, clock_offset_ns=-S // 2)["power_w"].to_numpy() == pytest.approx(power, abs=1.0)


def test_steps_shorter_than_a_tick_are_unaligned_not_matched_to_a_neighbour():
    tick_ns = 100 * MS
    trace = pd.DataFrame({"t_ns": np.arange(0, 10 * S, tick_ns, dtype=np.int64), "power_w": 150.0,
                          "util_gpu": 80.0, "temp_c": 60.0, "read_ok": True})
    trace.loc[trace.index % 7 == 3, "read_ok"] = False  # failed reads do not align a step
    trace.loc[trace.index % 7 == 3, "power_w"] = np.nan
    starts = np.arange(1 * S, 9 * S, 37 * MS, dtype=np.int64)
    steps = [{"step": i, "grad_norm": 1.0, "t_start_ns": int(t), "t_end_ns": int(t + 30 * MS)}
             for i, t in enumerate(starts)]
    per = align_steps(trace, steps)
    good_t = trace.loc[trace.read_ok, "t_ns"].to_numpy()
    expected = np.array([np.any((good_t >= s["t_start_ns"]) & (good_t <= s["t_end_ns"])) for s in steps])
    assert per["aligned"].to_numpy().tolist() == expected.tolist()
    assert 0.1 < expected.mean() < 0.5
    assert per.loc[~per.aligned, "power_w"].isna().all()
    assert per.loc[per.aligned, "n_samples"].eq(1).all()
    out = analyze_training_coupling(trace, steps, LIMIT_W, SLOWDOWN_C)
    assert out["aligned_fraction"] == pytest.approx(expected.mean(), abs=1e-4)
    assert out["quality"]["steps_shorter_than_tick"] == len(steps)


# -- correlation pieces ---------------------------------------------------------------------
def test_lagged_spearman_sign_convention():
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    y = np.roll(x, 3)  # y[i] = x[i - 3]: y follows x by 3 steps
    rho = lagged_spearman(x, y, max_lag=5)
    assert rho[3] == pytest.approx(1.0)
    assert max(abs(v) for k, v in rho.items() if k != 3) < 0.3
    assert lagged_spearman(x, np.exp(y))[3] == pytest.approx(1.0)  # rank-based: monotone transforms


def test_spikes_are_median_plus_k_mad():
    rng = np.random.default_rng(4)
    g = 1.0 + 0.05 * rng.normal(size=300)
    g[[50, 120, 250]] += 2.0
    s = grad_spikes(g, k=6.0)
    assert s["steps"] == [50, 120, 250]
    assert grad_spikes(g, k=6.0, detrend_window_steps=0)["steps"] == [50, 120, 250]


def test_block_bootstrap_keeps_blocks_and_finds_a_copy():
    from experiments.analysis.coupling import block_bootstrap_indices, block_length

    idx = block_bootstrap_indices(100, 12, 50, seed=1)
    assert idx.shape == (50, 100)
    assert np.all((np.diff(idx[:, :12], axis=1) % 100) == 1)  # consecutive steps inside a block
    rng = np.random.default_rng(5)
    smooth = ar1(300, 0.95, rng)
    assert block_length([smooth], 300, 5) > block_length([rng.normal(size=300)], 300, 5) == 11
    x = rng.normal(size=120)
    out = bootstrap_test(x, {"y": np.roll(x, 1)}, max_lag=5, n_boot=199)
    assert out["p_value"] == pytest.approx(1 / 200) and out["targets"]["y"]["best_lag"] == 1


# -- controls -------------------------------------------------------------------------------
def test_positive_control_power_follows_grad_norm_with_a_known_lag():
    rng = np.random.default_rng(11)
    n, lag = 300, 2
    g = np.exp(0.3 * ar1(n, 0.6, rng))
    g[rng.choice(n, 6, replace=False)] *= 4.0  # spikes
    g_lagged = np.concatenate((np.full(lag, np.median(g)), g[:-lag]))
    power = 250.0 + 20.0 * np.log(g_lagged) + rng.normal(0, 2.0, n)
    trace, steps = make_run(g, power)
    out = analyze_training_coupling(trace, steps, LIMIT_W, SLOWDOWN_C)
    assert REPORT_KEYS <= set(out)
    json.dumps(out, allow_nan=False)
    assert out["aligned_fraction"] == 1.0
    assert out["verdict"] == "coupled", out["verdict_reason"]
    assert out["p_value"] < 0.01
    assert out["target"] == "power"
    assert out["best_lag"] == lag
    assert out["correlation"] > 0.5
    assert out["figures"]["spikes"]["n_spikes"] >= 5
    assert out["figures"]["targets"]["collapse"]["tested"] is False


def test_negative_control_independent_ar1_series_are_not_coupled():
    n_seeds, coupled, verdicts = 40, 0, set()
    for seed in range(n_seeds):
        rng = np.random.default_rng(100 + seed)
        g = np.exp(0.3 * ar1(150, 0.8, rng))
        power = 250.0 + 15.0 * ar1(150, 0.8, rng)
        trace, steps = make_run(g, power, seed=seed)
        out = analyze_training_coupling(trace, steps, LIMIT_W, SLOWDOWN_C, seed=seed, n_boot=199)
        verdicts.add(out["verdict"])
        coupled += out["verdict"] == "coupled"
    assert verdicts <= {"coupled", "not coupled"}
    assert coupled <= 0.05 * n_seeds  # not coupled in at least 95 % of seeds


# -- verdicts -------------------------------------------------------------------------------
def test_insufficient_data_too_few_steps_and_no_collapses():
    rng = np.random.default_rng(7)
    g = np.exp(0.3 * ar1(20, 0.5, rng))
    trace, steps = make_run(g, 250 + 10 * g)
    out = analyze_training_coupling(trace, steps, LIMIT_W, SLOWDOWN_C)
    assert out["verdict"] == "insufficient data"
    assert "20 of 20 steps" in out["verdict_reason"] and out["p_value"] is None
    g = np.exp(0.3 * ar1(80, 0.5, rng))
    trace, steps = make_run(g, 250 + 10 * g)
    out = analyze_training_coupling(trace, steps, LIMIT_W, SLOWDOWN_C, n_boot=50)
    assert out["verdict"] == "insufficient data" and "raise n_boot" in out["verdict_reason"]
    g = np.exp(0.3 * ar1(130, 0.5, rng))
    trace, steps = make_run(g, 250 + 10 * g)
    out = analyze_training_coupling(trace, steps, LIMIT_W, SLOWDOWN_C, require_collapses=True)
    assert out["verdict"] == "insufficient data" and "no RLE collapse" in out["verdict_reason"]
    assert out["n_collapses"] == 0 and out["collapse_rate"] in (0.0, None)


# -- the vectorised bootstrap ---------------------------------------------------------------
@pytest.mark.parametrize("n, nan_frac", [(400, 0.0), (150, 0.15), (40, 0.5), (9, 0.0)])
def test_lag_matrix_equals_the_direct_per_lag_form(n, nan_frac):
    """The matrix-product form gives the per-lag masked Pearson's r on every draw and lag,
    NaN where the direct form has too few pairs (lags past the series included)."""
    from experiments.analysis.coupling import _lag_matrix, block_bootstrap_indices, lag_matrix_reference, rank_transform

    rng = np.random.default_rng(n)
    x = np.where(rng.random(n) < nan_frac, np.nan, rng.normal(size=n))
    y = np.where(rng.random(n) < nan_frac, np.nan, ar1(n, 0.7, rng))
    rx, ry = rank_transform(x), rank_transform(y)
    RY = np.vstack([ry[None, :], ry[block_bootstrap_indices(n, max(3, n // 10), 300, seed=2)]])
    fast, ref = _lag_matrix(rx, RY, 5, 10), lag_matrix_reference(rx, RY, 5, 10)
    assert np.array_equal(np.isnan(fast), np.isnan(ref))
    np.testing.assert_allclose(fast[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=0, atol=1e-12)


def test_bootstrap_p_values_are_the_direct_implementations_for_the_same_seed(monkeypatch):
    """Same seed, same draws: the fast bootstrap's p-values, lags and z equal those of the
    per-lag implementation it replaced, on a coupled and an uncoupled input."""
    from experiments.analysis import coupling

    rng = np.random.default_rng(3)
    x = ar1(300, 0.6, rng)
    targets = {"power": np.roll(x, 2) + rng.normal(0, 1.5, 300), "temp_slope": ar1(300, 0.8, rng)}
    targets["power"][rng.choice(300, 20, replace=False)] = np.nan
    fast = [bootstrap_test(x, targets, n_boot=499, seed=s) for s in (0, 1)]
    monkeypatch.setattr(coupling, "_lag_matrix", coupling.lag_matrix_reference)
    ref = [bootstrap_test(x, targets, n_boot=499, seed=s) for s in (0, 1)]
    for f, r in zip(fast, ref):
        assert f["p_value"] == r["p_value"] and f["best_target"] == r["best_target"] == "power"
        for name in targets:
            assert f["targets"][name]["p_value"] == r["targets"][name]["p_value"]
            assert f["targets"][name]["best_lag"] == r["targets"][name]["best_lag"]
            assert f["targets"][name]["z"] == pytest.approx(r["targets"][name]["z"], abs=1e-9)
    assert fast[0]["targets"]["temp_slope"]["p_value"] != fast[1]["targets"]["temp_slope"]["p_value"]  # seeds differ


def test_bootstrap_null_is_calibrated_and_finds_a_known_coupling():
    """Independent AR(1) series (phi 0.8, the autocorrelation a shuffle gets wrong) reject at
    the nominal rate (binomial 3.5 sd over 300 runs); a lag-2 coupling rejects nearly always."""
    p_null, p_coupled = [], []
    for r in range(300):
        rng = np.random.default_rng(1000 + r)
        x = ar1(200, 0.8, rng)
        p_null.append(bootstrap_test(x, {"a": ar1(200, 0.8, rng), "b": ar1(200, 0.8, rng)},
                                     n_boot=199, seed=r)["p_value"])
        if r < 60:
            y = np.roll(x, 2) + ar1(200, 0.8, rng)
            p_coupled.append(bootstrap_test(x, {"a": y}, n_boot=199, seed=r)["p_value"])
    p_null = np.array(p_null)
    for alpha in (0.05, 0.2):
        sd = np.sqrt(alpha * (1 - alpha) / p_null.size)
        assert abs(np.mean(p_null <= alpha) - alpha) < 3.5 * sd, (alpha, np.mean(p_null <= alpha))
    assert np.mean(np.array(p_coupled) <= 0.01) >= 0.95
