"""Imported recordings are first-class: `analyze` stores the figures it computes (the typed
tables a suite run fills) unless told not to, so an imported GPU fills the Fleet, Baselines
and Sensor response pages; importing the same file twice is idempotent whatever the flags."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

import warehouse_fixtures as fx
from agents.errors import FleetPhysicsError
from cluster import analyze_commands
from warehouse import cli
from warehouse.query import query

RTX_3090 = fx.REALDATA / "transient_response_3090_TR"
needs_realdata = pytest.mark.skipif(not (RTX_3090 / "gpudata.csv").is_file(),
                                    reason=f"real recordings not found at {fx.REALDATA}")


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="fleetphysics")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    analyze_commands.register(sub)
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except FleetPhysicsError as exc:
        print(f"fleetphysics: {exc}", file=sys.stderr)
        code = exc.exit_code
    out, err = capsys.readouterr()
    return code, out, err


def _import(wh, capsys, *flags) -> dict:
    code, out, err = run(["import", "nvidia-smi", str(RTX_3090 / "gpudata.csv"), "--edges",
                          str(RTX_3090 / "timestamps.csv"), "--tz", "+01:00", *flags, "--warehouse", wh, "--json"],
                         capsys)
    assert code == 0, err
    return json.loads(out)


@needs_realdata
def test_reimport_whatever_the_flags_keeps_one_device(tmp_path, capsys):
    wh = str(tmp_path / "w.duckdb")
    first = _import(wh, capsys, "--gpu-name", "RTX 3090")
    again = _import(wh, capsys)  # no --gpu-name this time
    assert again["devices"] == first["devices"] and again["run_id"] == first["run_id"]
    counts = query(wh, "SELECT (SELECT count(*) FROM devices) AS devices, (SELECT count(*) FROM run_devices) AS runs, "
                       "(SELECT count(*) FROM fingerprints) AS fingerprints, (SELECT count(*) FROM power_trace) AS rows")
    assert counts.iloc[0].tolist() == [1, 1, 1, 2308]


@needs_realdata
def test_analyze_stores_an_imported_gpu_onto_every_page(tmp_path, capsys):
    wh = str(tmp_path / "w.duckdb")
    imported = _import(wh, capsys, "--gpu-name", "RTX 3090")
    run_id, device = imported["run_id"], imported["devices"][0]

    before = fx.table_fingerprint(wh)
    code, out, _ = run(["analyze", "--run", run_id, "--experiment", "baseline", "--no-store", "--warehouse", wh,
                        "--json"], capsys)
    assert code == 0 and json.loads(out)["stored"] is False and fx.table_fingerprint(wh) == before

    for experiment in ("baseline", "instrument_response", "heat_soak"):
        code, out, err = run(["analyze", "--run", run_id, "--experiment", experiment, "--warehouse", wh, "--json"],
                             capsys)
        assert code == 0 and json.loads(out)["stored"] is True, err
    stored = fx.table_fingerprint(wh)
    run(["analyze", "--run", run_id, "--experiment", "baseline", "--warehouse", wh, "--json"], capsys)
    assert fx.table_fingerprint(wh) == stored  # storing again replaces, never duplicates

    c = query(wh, "SELECT * FROM v_fleet_latest WHERE device_uid = ?", [device]).iloc[0]
    assert c["idle_robust_w"] == pytest.approx(127.1, abs=1.0) and c["idle_quality"] == "good"
    assert c["power_instant_w_update_period_ms"] == pytest.approx(100, rel=0.1)
    assert c["power_avg_1s_w_window_ms"] == pytest.approx(1000, rel=0.25)  # nvidia-smi's power.draw
    fields = set(query(wh, "SELECT field FROM instrument_response")["field"])
    assert fields == {"power_w", "power_instant_w", "power_avg_1s_w"}
    soak = query(wh, "SELECT quality FROM heat_soak").iloc[0]
    assert soak["quality"] == "insufficient"  # 16 s of a board at rest is no heat soak

    # every timing and fitted figure with its interval, through the read-only surface
    iv = query(wh, "SELECT * FROM v_figure_intervals WHERE device_uid = ?", [device])
    window = iv[(iv.figure == "window") & (iv.field == "power_instant_w")].iloc[0]
    assert window.resolved and window.ci_low < window.value < window.ci_high
    assert window.value == pytest.approx(100, rel=0.25)  # SC'24: about 100 ms
    tau = iv[iv.figure == "tau"].iloc[0]
    assert not tau.resolved and tau.ci_low < 0 < tau.ci_high and tau.quality == "insufficient"
    idle = iv[(iv.figure == "idle") & (iv.field == "power_w")].iloc[0]
    assert idle.ci_low < idle.value < idle.ci_high and idle.resolved

    from dashboard import data

    with data.reading(wh):
        f = data.Filters()
        assert device in set(data.fleet(f)["device_uid"])
        dist = data.baseline_distribution(f)
        assert dist["q50"].iloc[0] == pytest.approx(127.1, abs=1.0)  # the idle stretch, not the load
        figures, steps = data.sensor_response(f)
        assert set(figures["field"]) == fields and not steps.empty and steps["edges"].max() == 1
        inst = figures[figures["field"] == "power_instant_w"].iloc[0]
        assert inst["window_resolved"] and inst["window_ci_low_ms"] < inst["window_ms"] < inst["window_ci_high_ms"]
