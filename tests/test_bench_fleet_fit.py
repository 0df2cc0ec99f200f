"""`bench fleet`'s per-host fit of the driver's cost (pure)."""

from __future__ import annotations

import pytest

from cluster.bench_fleet import per_host_fit


def test_a_flat_per_host_cost_is_the_slope_with_its_interval():
    sizes = [{"hosts": n, "driver_cpu_s": 3.0 + 0.25 * n + e} for n, e in ((1, 0.02), (16, -0.03), (32, 0.01), (64, 0.0))]
    fit = per_host_fit(sizes, "driver_cpu_s")
    assert fit["per_host"] == pytest.approx(0.25, abs=0.002) and fit["fixed"] == pytest.approx(3.0, abs=0.05)
    lo, hi = fit["ci95"]
    assert lo < 0.25 < hi and hi - lo < 0.01 and fit["sizes"] == 4


def test_two_sizes_give_no_interval():
    fit = per_host_fit([{"hosts": 1, "x": 1.0}, {"hosts": 16, "x": 4.0}], "x")
    assert fit["ci95"] is None and fit["per_host"] == pytest.approx(0.2)
