"""Statistics helpers: autocorrelation-aware errors, robust scale, slopes, JSON-safe rounding."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from experiments.analysis import stats


def ar1(n: int, rho: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1 - rho * rho)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + e[i]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_lag1_and_n_eff_follow_an_ar1_series(rho):
    x = ar1(20_000, rho, seed=1)
    est = stats.lag1_autocorr(x)
    assert est == pytest.approx(rho, abs=0.03)
    assert stats.n_eff(20_000, est) == pytest.approx(20_000 * (1 - rho) / (1 + rho), rel=0.15)


def test_n_eff_is_clipped_to_one_and_n():
    assert stats.n_eff(100, 0.999999) >= 1.0
    assert stats.n_eff(100, 1.0) == 1.0
    assert stats.n_eff(100, -0.9) == 100.0
    assert stats.n_eff(0, 0.0) == 0.0


def test_sem_eff_covers_the_true_mean_of_correlated_series():
    # 200 AR(1) series with rho 0.9: the plain SEM would cover far less than 95 %.
    hits = plain_hits = 0
    for seed in range(200):
        x = ar1(400, 0.9, seed) + 10.0
        s = stats.sem_eff(x)
        hits += abs(s["mean"] - 10.0) <= 2 * s["sem"]
        plain_hits += abs(s["mean"] - 10.0) <= 2 * x.std(ddof=1) / math.sqrt(x.size)
    assert hits >= 170
    assert plain_hits < 120


def test_robust_helpers_ignore_nan_and_floors():
    x = np.array([24.0, 24.1, 23.9, 24.0, 1.2, np.nan, 24.05])
    assert stats.median(x) == pytest.approx(24.0)
    # deviations 0, 0.1, 0.1, 0, 22.8, 0.05: the floor reading moves the MAD only a little
    assert stats.mad(x) == pytest.approx(0.075, abs=1e-9)
    assert stats.mad(x, scaled=True) == pytest.approx(0.075 * stats.MAD_TO_SIGMA)
    assert math.isnan(stats.median([np.nan]))


def test_ls_slope_recovers_slope_and_a_sane_error():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 10, 500)
    slopes, ses = [], []
    for _ in range(200):
        y = 2.5 * x + 1 + rng.normal(0, 1.0, x.size)
        f = stats.ls_slope(x, y, autocorr=False)
        slopes.append(f["slope"])
        ses.append(f["slope_se"])
    assert np.mean(slopes) == pytest.approx(2.5, abs=0.01)
    assert np.std(slopes) == pytest.approx(np.mean(ses), rel=0.2)
    assert math.isnan(stats.ls_slope([1.0], [2.0])["slope"])


def test_linear_fit_standard_errors_match_scatter():
    rng = np.random.default_rng(4)
    x = rng.uniform(10, 500, 60)
    a_s, b_s, a_se, b_se = [], [], [], []
    for _ in range(300):
        f = stats.linear_fit(x, 5.0 + 0.2 * x + rng.normal(0, 2.0, x.size))
        a_s.append(f["a"]), b_s.append(f["b"]), a_se.append(f["a_se"]), b_se.append(f["b_se"])
    assert np.mean(a_s) == pytest.approx(5.0, abs=0.2)
    assert np.mean(b_s) == pytest.approx(0.2, abs=0.002)
    assert np.std(a_s) == pytest.approx(np.mean(a_se), rel=0.2)
    assert np.std(b_s) == pytest.approx(np.mean(b_se), rel=0.2)


def test_rounding_is_json_safe_and_follows_the_uncertainty():
    assert stats.rnd(np.float64(1.23456), 2) == 1.23 and type(stats.rnd(np.float64(1.2), 1)) is float
    assert type(stats.rnd(np.int64(3))) is int and type(stats.rnd(np.bool_(True))) is bool
    assert stats.rnd(float("nan")) is None and stats.rnd(float("inf")) is None and stats.rnd(None) is None
    assert stats.rnd_sig(24.10341, 0.031) == 24.103
    assert stats.rnd_sig(1234.5678, 12.0) == 1235.0
    assert stats.rnd_sig(0.012345) == 0.01235  # four significant digits without a sigma
    json.dumps([stats.rnd_sig(1.0, 0.1), stats.rnd(np.float32(2.5))], allow_nan=False)
