"""The fleet verdict's written rules on small synthetic tables (no warehouse, no device)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from warehouse import verdict as v


def _fleet(n: int = 8, seed: int = 0, run_id: str = "run-b", start: int = 2_000, **over) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append({
            "run_id": run_id, "device_uid": f"GPU-{i}", "host": f"host-{i:02d}", "gpu_name": "H100",
            "simulated": False, "peer_group": "key-h100", "started_wall_ns": start + i, "run_state": "completed",
            "end_reason": "completed", "fake_idle": False, "idle_quality": "good",
            "idle_power_w": 70 + rng.uniform(-2, 2), "idle_power_se_w": 0.1,
            "idle_temp_c": float(round(34 + rng.uniform(-1, 1))), "floor_fraction": 0.0,
            "tau_s": 150 * (1 + rng.uniform(-0.05, 0.05)), "tau_se_s": 3.0,
            "t_inf_c": 72 + rng.uniform(-1.5, 1.5), "t_inf_se_c": 0.3,
            "load_power_w": 700.0, "update_period_ms": 100.0, "rise_ms": 25.0, "window_ms": 25.0,
            "equilibrium": True, "has_energy_counter": True, "read_error_fraction": 0.0005,
        })
    for key, value in over.items():
        rows[0][key] = value
    return rows


def _judge(rows, run_id=None):
    return v.judge(pd.DataFrame(rows), run_id)


def _dev(result, uid="GPU-0"):
    return next(d for d in result["devices"] if d["device_uid"] == uid)


def test_a_clean_fleet_is_ready_and_exits_0():
    out = _judge(_fleet())
    assert {d["verdict"] for d in out["devices"]} == {"ready"}
    assert all(d["reasons"] == [] for d in out["devices"])
    assert v.exit_code(out) == 0


def test_a_leaky_board_is_named_with_its_figure_its_peers_and_z():
    out = _judge(_fleet(idle_power_w=92.0))
    d = _dev(out)
    assert d["verdict"] == "not_ready" and v.exit_code(out) == 3
    assert out["devices"][0]["device_uid"] == "GPU-0"  # the suspect comes first
    (o,) = d["outliers"]
    assert o["figure"] == "idle_power_w" and o["n_peers"] == 7 and o["robust_z"] > v.Z_SEVERE
    assert any(r.startswith("idles ") and " W above its 7 peers" in r for r in d["reasons"]), d["reasons"]


def test_the_mad_floor_keeps_identical_peers_from_flagging_noise():
    rows = _fleet()
    for r in rows:
        r["update_period_ms"] = 100.0
    rows[0]["update_period_ms"] = 101.0  # within the 2 ms resolution floor
    assert _dev(_judge(rows))["outliers"] == []
    rows[0]["update_period_ms"] = 5000.0
    assert [o["figure"] for o in _dev(_judge(rows))["outliers"]] == ["update_period_ms"]


def test_the_figures_own_uncertainty_floors_the_spread():
    rows = _fleet()
    for r in rows:
        r["tau_s"], r["tau_se_s"] = 150.0, 20.0  # MAD 0, but each tau is only known to +-20 s
    rows[0]["tau_s"] = 200.0
    assert _dev(_judge(rows))["outliers"] == []  # z = 50 / hypot(20, 20) = 1.8


def test_too_few_peers_means_no_comparison():
    rows = _fleet(n=v.MIN_PEERS, idle_power_w=150.0)  # MIN_PEERS - 1 peers
    assert _dev(_judge(rows))["outliers"] == []
    rows = _fleet(n=v.MIN_PEERS + 1, idle_power_w=150.0)
    assert _dev(_judge(rows))["outliers"][0]["n_peers"] == v.MIN_PEERS


def test_other_groups_and_simulated_devices_are_not_peers():
    rows = _fleet(idle_power_w=92.0)
    for r in rows[1:4]:
        r["peer_group"] = "key-h100-capped"
    for r in rows[4:]:
        r["simulated"] = True
    assert _dev(_judge(rows))["outliers"] == []


@pytest.mark.parametrize("over, level, words", [
    ({"fake_idle": True, "fake_idle_reasons": json.dumps(["util p95 40 % > 10 %"])}, "not_ready", "fake idle"),
    ({"throttle": [{"reasons": 0x20, "duration_s": 12.5}]}, "caution", "sw_thermal_slowdown (0x20) for 12.5 s"),
    ({"throttle": [{"reasons": 0x80, "duration_s": 3}, {"reasons": 0x84, "duration_s": 2}]}, "not_ready",
     "hw_power_brake_slowdown (0x80) for 5.0 s"),
    ({"equilibrium": False, "equilibrium_kind": "predicted", "time_to_equilibrium_s": 690.0}, "caution",
     "warm up 690 s"),
    ({"has_energy_counter": False}, "caution", "no energy counter"),
    ({"has_energy_counter": False, "event_median_ms": 150.0, "sensor_update_period_ms": 100.0,
      "sensor_window_ms": 1000.0}, "not_ready", "too slow for the events"),
    ({"event_median_ms": 150.0, "sensor_update_period_ms": 100.0}, "caution", "too slow for the events"),
    ({"read_error_fraction": 0.02}, "caution", "read errors: 2.0 %"),
    ({"read_error_fraction": 0.2}, "not_ready", "read errors: 20.0 %"),
    ({"scheduling_quality": "degraded", "lateness_p99_ms": 7.2}, "caution", "lateness p99 7.2 ms"),
    ({"dropped_fraction": 0.03}, "caution", "dropped 3.0 %"),
    ({"run_state": "lost", "lost_reason": "silent past its deadline"}, "not_ready",
     "host lost during the run: silent past its deadline"),
    ({"run_state": "aborted"}, "not_ready", "host failed"),
    ({"idle_quality": "no_data"}, "not_ready", "no idle baseline"),
])
def test_each_own_rule_gives_its_level_and_plain_reason(over, level, words):
    d = _dev(_judge(_fleet(**over)))
    assert d["verdict"] == level, d["reasons"]
    assert any(words in r for r in d["reasons"]), d["reasons"]
    others = [x for x in _judge(_fleet(**over))["devices"] if x["device_uid"] != "GPU-0"]
    assert all(x["verdict"] == "ready" for x in others)


def test_a_rule_short_of_its_threshold_stays_quiet():
    d = _dev(_judge(_fleet(read_error_fraction=0.009, dropped_fraction=0.009, event_median_ms=400.0,
                           sensor_update_period_ms=100.0, sensor_window_ms=25.0)))
    assert d["verdict"] == "ready", d["reasons"]


def test_history_flags_drift_beyond_the_uncertainty():
    old = _fleet(run_id="run-a", start=1_000)
    new = _fleet(run_id="run-b", start=2_000)
    new[0]["idle_power_w"] = old[0]["idle_power_w"] + 0.3  # within the 0.5 W floor
    assert _dev(_judge(old + new, "run-b"))["drift"] == []
    new[0]["t_inf_c"] = old[0]["t_inf_c"] + 6.0  # 6 °C against a 1 °C floor and 0.3 °C errors
    d = _dev(_judge(old + new, "run-b"))
    assert [x["figure"] for x in d["drift"]] == ["t_inf_c"]
    assert any(r.startswith("drift: settles under load at 6.0 °C above its own 1 earlier run") for r in d["reasons"])
    # the older run is judged without the later one as history
    assert _dev(_judge(old + new, "run-a"))["drift"] == []


def test_peers_absent_from_the_run_count_with_their_latest_row():
    old = _fleet(run_id="run-a", start=1_000)
    one = [dict(old[0], run_id="run-b", started_wall_ns=2_000, idle_power_w=92.0)]
    d = _dev(_judge(old + one, "run-b"))
    assert d["outliers"][0]["figure"] == "idle_power_w" and d["outliers"][0]["n_peers"] == 7


def test_public_json_has_the_documented_keys():
    out = v.public(_judge(_fleet(idle_power_w=92.0)))
    assert set(out) == {"run_id", "devices"}
    assert set(out["devices"][0]) == {"host", "device_uid", "gpu_name", "simulated", "verdict", "reasons", "outliers"}
    assert set(out["devices"][0]["outliers"][0]) == {"figure", "value", "peer_median", "robust_z", "n_peers"}
    json.dumps(out, allow_nan=False)
