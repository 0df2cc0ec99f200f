"""The 95 % intervals travel into v_run_constants and the compare views (migration
run_constant_intervals): on a warehouse written by the schema before it, and equal to the
report's own intervals for a real recording imported and analysed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import duckdb
import pytest

import warehouse_fixtures as fx
from experiments.analysis.stats import with_interval
from test_imports_first_class import RTX_3090, _import, needs_realdata, run
from warehouse import migrations
from warehouse.connection import connect_writer
from warehouse.ingest import prepare_bundle, write_bundle
from warehouse.query import query

MIGRATION = "run_constant_intervals"
FIELDS = ("power_w", "power_instant_w", "power_avg_1s_w")
TIMINGS = ("update_period", "rise", "delay", "window")


def _version() -> int:
    return next(m.version for m in migrations.available_migrations() if m.name == MIGRATION)


def _docs() -> dict:
    """The fixture experiments with the interval keys the analyses write (with_interval)."""
    docs = copy.deepcopy(fx.experiments())
    ir = docs["instrument_response"]["figures"]
    ir["power_w"] |= with_interval("rise", "ms", 900, 20) | with_interval("window", "ms", 1000, 30)
    ir["power_instant_w"] |= with_interval("window", "ms", 100, 60, resolved=False)  # reaches 0
    heat = docs["heat_soak"]["figures"]
    heat |= with_interval("tau", "s", 120.0, 5.0) | with_interval("t_inf", "c", 78.0, 0.5)
    heat |= with_interval("equilibrium_predicted", "s", 480.0, 40.0) | {"time_to_equilibrium_s": 480.0}
    points = docs["joule_curve"]["figures"]["points"]
    points[0] |= {"j_per_token_sem": 0.1, "n_events": 3}   # t(0.975, 2) = 4.3027
    points[1] |= {"j_per_token_sem": 0.01, "n_events": 40}  # t(0.975, 39) = 2.0227
    return docs


def _write(con, run_id: str, device_uid: str, docs: dict, idle_w: float = 60.0) -> None:
    trace = fx.make_trace(500, device_uuid=f"GPU-{device_uid}")
    bundle = prepare_bundle(fx.run_metadata(run_id, "host-a", device_uid), fx.fingerprint(device_uid),
                            [("trace", trace)], fx.make_markers(trace), None, docs, fx.poller_stats(),
                            source="artifact")
    write_bundle(con, bundle)


def test_migration_adds_intervals_to_a_warehouse_written_by_the_schema_before_it(tmp_path):
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    migrations.migrate(con, label=str(path), target=_version() - 1)
    _write(con, "run-1", "dev-0", _docs())
    slow = _docs()
    slow["joule_curve"]["figures"]["points"][0] |= {"j_per_token": 5.0}
    _write(con, "run-1", "dev-1", slow)  # a peer of dev-0 (same comparability key)
    before = con.execute("SELECT * FROM v_run_constants ORDER BY device_uid").df()
    con.close()

    con = connect_writer(path)  # applies the migration
    try:
        assert migrations.current_version(con) == migrations.latest_version()
        after = con.execute("SELECT * FROM v_run_constants ORDER BY device_uid").df()
        compare = {name: con.execute(f"SELECT * FROM {name} ORDER BY device_uid").df() for name in
                   ("v_baseline_compare", "v_equilibrium_compare", "v_vram_cliff_compare", "v_joule_compare")}
        latest = con.execute("SELECT * FROM v_fleet_latest ORDER BY device_uid").df()
    finally:
        con.close()
    # every existing column keeps its name, place and values
    assert list(after.columns[:len(before.columns)]) == list(before.columns)
    assert after[before.columns].equals(before)
    assert list(latest.columns) == list(after.columns)
    for f in FIELDS:
        for t in TIMINGS:
            for suffix in ("se_ms", "ci_low_ms", "ci_high_ms", "resolved"):
                assert f"{f}_{t}_{suffix}" in after.columns
    r = after.iloc[0]
    assert (r.power_w_rise_ci_low_ms, r.power_w_rise_ci_high_ms) == pytest.approx((900 - 1.96 * 20, 900 + 1.96 * 20),
                                                                                 abs=1)
    assert r.power_w_rise_resolved and r.power_w_window_resolved
    assert not r.power_instant_w_window_resolved and r.power_instant_w_window_ci_low_ms < 0
    assert pd_isna(r.power_avg_1s_w_rise_resolved) and pd_isna(r.power_avg_1s_w_rise_ci_low_ms)  # no such field
    assert (r.idle_robust_ci_low_w, r.idle_robust_ci_high_w) == pytest.approx((60 - 1.96 * 0.05, 60 + 1.96 * 0.05))
    assert r.idle_robust_resolved
    assert (r.tau_ci_low_s, r.tau_ci_high_s, r.tau_resolved) == (110.2, 129.8, True)
    assert (r.t_inf_ci_low_c, r.t_inf_ci_high_c, r.t_inf_resolved) == (77.02, 78.98, True)
    # predicted: the report's equilibrium_predicted interval
    assert (r.time_to_equilibrium_ci_low_s, r.time_to_equilibrium_ci_high_s) == (402.0, 558.0)
    assert r.time_to_equilibrium_resolved
    # J/token: Student's t with n_events - 1 degrees of freedom
    assert (r.j_per_token_batch1_ci_low, r.j_per_token_batch1_ci_high) == pytest.approx((2 - 0.43027, 2 + 0.43027))
    assert (r.j_per_token_max_batch_ci_low, r.j_per_token_max_batch_ci_high) == pytest.approx(
        (0.4 - 0.020227, 0.4 + 0.020227), abs=1e-6)
    assert r.j_per_token_batch1_resolved and r.j_per_token_max_batch_resolved
    # VRAM: the search's bracket (batch 8 has no first failing context: not bounded)
    assert (r.vram_max_context_batch1_ci_low, r.vram_max_context_batch1_ci_high) == (30000, 30511)
    assert r.vram_max_context_batch1_resolved and not r.vram_max_context_max_batch_resolved
    # peers: the median of 2.0 and 5.0 J/token (3.5) is in neither interval; the equal idles agree
    j = compare["v_joule_compare"]
    assert list(j["j_per_token_batch1_overlaps_peer_median"]) == [False, False]
    assert list(j["j_per_token_max_batch_overlaps_peer_median"]) == [True, True]
    assert list(compare["v_baseline_compare"]["idle_overlaps_peer_median"]) == [True, True]
    eq = compare["v_equilibrium_compare"]
    assert list(eq["tau_overlaps_peer_median"]) == [True, True] and "t_inf_ci_low_c" in eq
    assert "vram_max_context_batch1_ci_high" in compare["v_vram_cliff_compare"]


def test_a_measured_equilibrium_is_bracketed_by_its_window_step_and_one_event_is_unresolved(tmp_path):
    docs = _docs()
    docs["heat_soak"]["figures"] |= {"equilibrium": True, "equilibrium_kind": "measured",
                                     "time_to_equilibrium_s": 600.0, "step_s": 60.0}
    docs["joule_curve"]["figures"]["points"][0] |= {"j_per_token_sem": None, "n_events": 1}
    path = tmp_path / "w.duckdb"
    con = connect_writer(path)
    try:
        _write(con, "run-1", "dev-0", docs)
        r = con.execute("SELECT * FROM v_run_constants").df().iloc[0]
        alone = con.execute("SELECT * FROM v_joule_compare").df().iloc[0]
    finally:
        con.close()
    assert (r.time_to_equilibrium_ci_low_s, r.time_to_equilibrium_ci_high_s) == (540.0, 600.0)
    assert r.time_to_equilibrium_resolved
    assert pd_isna(r.j_per_token_batch1_ci_low) and not r.j_per_token_batch1_resolved
    assert pd_isna(alone.j_per_token_max_batch_overlaps_peer_median)  # no other peer to compare with


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


@needs_realdata
def test_view_intervals_equal_the_reports_own_for_a_real_recording(tmp_path, capsys):
    wh = str(tmp_path / "w.duckdb")
    imported = _import(wh, capsys, "--gpu-name", "RTX 3090")
    run_id, device = imported["run_id"], imported["devices"][0]
    for experiment in ("baseline", "instrument_response", "heat_soak"):
        code, _, err = run(["analyze", "--run", run_id, "--experiment", experiment, "--warehouse", wh, "--json"],
                           capsys)
        assert code == 0, err
    row = query(wh, "SELECT * FROM v_fleet_latest WHERE device_uid = ?", [device]).iloc[0]
    reports = {r.experiment: json.loads(r.payload_json)["figures"]
               for r in query(wh, "SELECT experiment, payload_json FROM experiment_results").itertuples()}
    checked = 0
    for field, doc in reports["instrument_response"].items():  # one figure set per power field
        for t in TIMINGS:
            for key in (f"{t}_se_ms", f"{t}_ci_low_ms", f"{t}_ci_high_ms", f"{t}_resolved"):
                if doc.get(key) is None:
                    assert pd_isna(row[f"{field}_{key}"])
                else:
                    assert row[f"{field}_{key}"] == doc[key], (field, key)
                    checked += 1
    assert checked >= 3 * 4 * 3  # every field present, each timing with its interval
    heat = reports["heat_soak"]
    for key in ("tau_se_s", "tau_ci_low_s", "tau_ci_high_s", "tau_resolved", "t_inf_ci_low_c", "t_inf_ci_high_c",
                "t_inf_resolved"):
        assert row[key] == heat[key], key
    assert not row["tau_resolved"]  # 16 s of a board at rest bounds no tau: unresolved, not 0
    idle = reports["baseline"]  # the suite's field, power_w
    assert row["idle_field"] == idle["field"]
    assert row["idle_robust_ci_low_w"] == pytest.approx(idle["mean_robust_w"] - 1.959964 * idle["sem_eff_w"])
    assert row["idle_robust_ci_low_w"] < 127.1 < row["idle_robust_ci_high_w"] + 1.0
    # the same numbers v_figure_intervals gives
    iv = query(wh, "SELECT * FROM v_figure_intervals WHERE device_uid = ? AND figure = 'window'", [device])
    for r in iv.itertuples():
        assert (row[f"{r.field}_window_ci_low_ms"], row[f"{r.field}_window_ci_high_ms"]) == (r.ci_low, r.ci_high)


# ---------------------------------------------------------------- the dashboard


@pytest.fixture(scope="module")
def analysed_3090(tmp_path_factory) -> tuple[str, str]:
    """A warehouse holding the real RTX 3090 recording, imported and analysed (baseline,
    sensor response, heat soak): (warehouse path, device_uid)."""
    if not (RTX_3090 / "gpudata.csv").is_file():
        pytest.skip(f"real recordings not found at {fx.REALDATA}")
    import argparse
    import contextlib
    import io

    from cluster import analyze_commands
    from warehouse import cli

    wh = str(tmp_path_factory.mktemp("analysed") / "w.duckdb")

    def call(argv: list[str]) -> dict:
        parser = argparse.ArgumentParser(prog="fleetphysics")
        sub = parser.add_subparsers(dest="command")
        cli.register(sub)
        analyze_commands.register(sub)
        args = parser.parse_args(argv)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert args.func(args) == 0
        return json.loads(out.getvalue())

    imported = call(["import", "nvidia-smi", str(RTX_3090 / "gpudata.csv"), "--edges", str(RTX_3090 / "timestamps.csv"),
                     "--tz", "+01:00", "--gpu-name", "RTX 3090", "--warehouse", wh, "--json"])
    for experiment in ("baseline", "instrument_response", "heat_soak"):
        call(["analyze", "--run", imported["run_id"], "--experiment", experiment, "--warehouse", wh, "--json"])
    return wh, imported["devices"][0]


def test_dashboard_data_functions_return_the_views_intervals(analysed_3090):
    from dashboard import data

    wh, device = analysed_3090
    view = query(wh, "SELECT * FROM v_fleet_latest WHERE device_uid = ?", [device]).iloc[0]
    with data.reading(wh):
        f = data.Filters()
        fleet = data.fleet(f).iloc[0]
        figures, _ = data.sensor_response(f)
        summary, _ = data.heat_soak(f)
        drift = data.drift(f, device).iloc[0]
    for column in ("idle_robust_ci_low_w", "idle_robust_ci_high_w", "power_instant_w_rise_ci_low_ms",
                   "power_avg_1s_w_window_ci_high_ms", "tau_ci_low_s", "t_inf_ci_high_c"):
        assert fleet[column] == view[column], column
    for field in FIELDS:
        row = figures[figures["field"] == field].iloc[0]
        for t in TIMINGS:
            assert row[f"{t}_ci_low_ms"] == view[f"{field}_{t}_ci_low_ms"], (field, t)
            assert row[f"{t}_ci_high_ms"] == view[f"{field}_{t}_ci_high_ms"], (field, t)
            assert row[f"{t}_resolved"] == view[f"{field}_{t}_resolved"], (field, t)
    heat = summary.iloc[0]
    assert heat["tau_resolved"] == view["tau_resolved"] == False  # noqa: E712 - numpy bool
    assert (heat["tau_ci_low_s"], heat["tau_ci_high_s"]) == (view["tau_ci_low_s"], view["tau_ci_high_s"])
    assert drift["idle_robust_ci_low_w"] == view["idle_robust_ci_low_w"]


def test_an_unresolved_figure_reads_unresolved_never_zero_or_blank(analysed_3090, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from dashboard import charts

    assert charts.interval_text(0.17, -1.4, 1.8, False, ".2g", "s") == "unresolved: 0.17 [-1.4, 1.8] s"
    assert charts.interval_text(None, None, None, False) == "unresolved"
    assert charts.interval_text(None, None, None, None) == "n/a"
    assert charts.interval_text(120.0, 110.2, 129.8, True, ".0f", "s") == "120 [110, 130] s"
    # a non-zero figure keeps two significant digits where the column's format would print 0
    assert charts.interval_text(0.17, -0.82, 1.16, False, ".0f", "s") == "unresolved: 0.17 [-0.82, 1.16] s"
    wh, _ = analysed_3090
    monkeypatch.setenv("FLEETPHYSICS_WAREHOUSE", wh)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=60).run()
    at = at.switch_page("app_pages/heat_soak.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    tau = table["tau (s) [95 %]"].iloc[0]
    assert tau.startswith("unresolved: ") and not tau.startswith("unresolved: 0 ")  # 16 s bound no tau
    bars = json.loads(at.get("plotly_chart")[1].proto.spec)["data"][0]
    assert bars["text"][0].startswith("unresolved") and " 0 " not in bars["text"][0]
    at = at.switch_page("app_pages/fleet.py").run()
    assert not at.exception
    overview = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][1]  # time to equilibrium
    assert overview["text"] == ["unresolved"] and overview["x"] == [0.0]  # its text is drawn, not a blank
    cell = at.dataframe[0].value["equilibrium (time · temperature)"].iloc[0]
    assert "unresolved" in cell and not cell.startswith("0 ")


def test_error_bars_follow_the_interval_and_draw_nothing_without_one():
    from dashboard import charts

    bars = charts.error_bars([2.0, 0.2, 5.0], [1.5, None, -1.0], [3.0, None, 6.0], log=True)
    assert bars["array"] == pytest.approx([1.0, 0.0, 1.0])
    # no interval: no arm (not one reaching the axis); a low end at or under 0 on a log axis stops short of it
    assert bars["arrayminus"] == pytest.approx([0.5, 0.0, 5.0 - 5e-3])


def test_fleet_health_strips_whisker_each_device_by_its_se_and_keep_an_unbounded_one_off_the_axis():
    import pandas as pd

    from dashboard.verdict_charts import figure_strips

    rows = pd.DataFrame({"device_uid": ["a", "b"], "gpu_name": ["g", "g"], "simulated": [True, True],
                         "tau_s": [100.0, 240.0], "tau_se_s": [5.0, 600.0]})
    fig = figure_strips(rows, [], {"a": "host-a · g", "b": "host-b · g"})
    whiskers = {t.name: t.error_x.array[0] for t in fig.data if t.error_x and t.error_x.array}
    assert whiskers == pytest.approx({"host-a · g": 1.96 * 5.0, "host-b · g": 1.96 * 600.0}, rel=1e-3)
    low, high = fig.layout.xaxis.range
    assert low < 100 - 1.96 * 5 and 240 < high < 400  # b's interval reaches 0: it runs off the strip
