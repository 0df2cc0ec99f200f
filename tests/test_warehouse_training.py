"""The training_coupling tables: training_steps, rle_series, training_coupling and
v_training_coupling_compare, filled at ingest from the suite's report and the trace."""

from __future__ import annotations

import copy

import duckdb
import numpy as np
import pandas as pd
import pytest

from agents.errors import ValidationError

from experiments.analysis.coupling import analyze_training_coupling
from experiments.analysis.rle import rle_series
from experiments.reports import FALLBACK_SLOWDOWN_C
from training_fixtures import training_run
from warehouse import migrations
from warehouse.connection import connect_writer
from warehouse.ingest import PER_DEVICE_TABLES, ingest_tables
from warehouse.training import TABLES
from warehouse_fixtures import T0_WALL_NS, fingerprint, run_metadata, table_fingerprint

ANALYSED = ["aligned", "n_samples", "power_w", "temp_c", "temp_slope_c_per_s", "energy_trace_j", "rle", "collapse"]


@pytest.fixture(scope="module")
def run():
    return training_run()


def _ingest(path, run, doc=None, trace=None, run_id="run-0001", device_uid="dev-0", started=T0_WALL_NS, **meta):
    meta = run_metadata(run_id, device_uid=device_uid, started_wall_ns=started, ended_wall_ns=started + 60 * 10**9,
                        **meta)
    return ingest_tables(path, meta, fingerprint(device_uid), run.trace if trace is None else trace, run.markers,
                         None, {"training_coupling": doc if doc is not None else run.report})


def _frame(path, sql: str) -> pd.DataFrame:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


@pytest.fixture(scope="module")
def warehouse(run, tmp_path_factory):
    path = tmp_path_factory.mktemp("training") / "w.duckdb"
    _ingest(path, run)
    return path


def test_ingest_fills_one_row_per_step_and_the_reports_verdict(run, warehouse):
    steps = _frame(warehouse, "SELECT * FROM training_steps ORDER BY step")
    summary = _frame(warehouse, "SELECT * FROM training_coupling")
    figures = run.report["figures"]
    assert len(steps) == len(run.steps) == figures["steps"]
    assert steps["step"].tolist() == [s["step"] for s in run.steps]
    assert len(summary) == 1
    row = summary.iloc[0]
    for key in ("verdict", "verdict_reason", "p_value", "best_lag", "correlation", "target", "n_collapses"):
        assert row[key] == figures[key], key
    assert row["verdict"] == "coupled"  # the positive control: a verdict worth comparing
    assert bool(row["simulated"]) is True
    # The per-step rows agree with the report's summary of them.
    assert 0 < steps["aligned"].mean() < 1  # the fixture's poller stall leaves steps unaligned
    assert row["aligned_fraction"] == pytest.approx(steps["aligned"].mean(), abs=1e-4)
    assert row["n_aligned"] == steps["aligned"].sum()
    assert row["n_spikes"] == steps["spike"].sum() > 0
    assert steps.loc[~steps["aligned"], "power_w"].isna().all()
    assert steps.loc[steps["aligned"], ["power_w", "temp_c", "rle"]].notna().all().all()
    # Raw runner columns come through as recorded.
    assert steps["grad_norm"].tolist() == pytest.approx([s["grad_norm"] for s in run.steps])
    assert steps["energy_j"].tolist() == pytest.approx([s["energy_j"] for s in run.steps])
    assert steps["lr_spike"].sum() == sum(s["lr_spike"] for s in run.steps)


def test_per_step_figures_are_the_reports_analysis(run, warehouse):
    """Ingest repeats analyze_training_coupling's per-step figures over the stored trace."""
    trace = run.trace.to_pandas()
    ref = pd.DataFrame(analyze_training_coupling(trace, run.steps, run.power_limit_w, run.slowdown_temp_c)["per_step"])
    got = _frame(warehouse, "SELECT * FROM training_steps ORDER BY step")
    merged = got.merge(ref, on="step", suffixes=("", "_ref"))
    assert len(merged) == len(got)
    assert (merged["aligned"] == merged["aligned_ref"]).all()
    assert (merged["spike"] == merged["spike_ref"]).all()
    assert (merged["n_samples"] == merged["n_samples_ref"]).all()
    for column in ("power_w", "temp_c", "temp_slope_c_per_s", "rle", "energy_trace_j"):
        a, b = merged[column].astype(float).to_numpy(), merged[f"{column}_ref"].astype(float).to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), column
        assert a[~np.isnan(a)] == pytest.approx(b[~np.isnan(b)], rel=1e-5, abs=1e-6), column
    collapse = merged["collapse"].astype("boolean")
    assert (collapse.fillna(False) == (merged["collapse_ref"].fillna(0) > 0)).all()


def test_rle_series_is_the_analysis_in_1_s_bins(run, warehouse):
    series = _frame(warehouse, "SELECT * FROM rle_series ORDER BY t_ns")
    ref = rle_series(run.trace.to_pandas(), run.power_limit_w, run.slowdown_temp_c)
    assert len(series) == len(ref) > 0
    assert series["t_ns"].tolist() == ref["t_ns"].tolist()
    assert np.diff(series["t_s"]).tolist() == pytest.approx([1.0] * (len(series) - 1))
    assert series["rle"].dropna().to_numpy() == pytest.approx(ref["rle"].dropna().to_numpy(), rel=1e-9)
    assert series["util_pct"].max() <= 100 and series["util_pct"].max() > 1  # percent, not a fraction
    summary = _frame(warehouse, "SELECT * FROM training_coupling").iloc[0]
    assert summary["n_collapses"] == series["collapse_start"].sum()
    assert (summary["rle_power_limit_w"], summary["rle_slowdown_temp_c"]) == (run.power_limit_w, run.slowdown_temp_c)


def test_signature_ranges_come_from_the_training_window(run, warehouse):
    row = _frame(warehouse, "SELECT * FROM training_coupling").iloc[0]
    trace = run.trace.to_pandas()
    t0, t1 = run.steps[0]["t_start_ns"], run.steps[-1]["t_end_ns"]
    during = trace[(trace["t_ns"] >= t0) & (trace["t_ns"] <= t1) & trace["read_ok"]]
    power = during[row["power_field"]]
    assert row["power_field"] == run.report["figures"]["quality"]["power_field"]
    assert power.min() <= row["power_p05_w"] < row["power_p95_w"] <= power.max()
    assert during["temp_c"].min() <= row["temp_p05_c"] <= row["temp_p95_c"] <= during["temp_c"].max()
    assert 0 <= row["util_p05_pct"] < row["util_p95_pct"] <= 100
    # The idle seconds before training are outside the window: its 5th percentile is above idle.
    idle = trace[trace["t_ns"] < t0][row["power_field"]].median()
    assert row["power_p05_w"] > idle


def test_ingesting_twice_replaces_never_duplicates(run, tmp_path):
    path = tmp_path / "w.duckdb"
    _ingest(path, run)
    first = table_fingerprint(path)
    _ingest(path, run)
    assert table_fingerprint(path) == first
    assert set(TABLES) <= set(PER_DEVICE_TABLES)
    # A changed result replaces the old rows of the run x device.
    doc = copy.deepcopy(run.report)
    doc["steps"] = doc["steps"][:70]
    _ingest(path, run, doc=doc)
    counts = _frame(path, "SELECT (SELECT count(*) FROM training_steps) AS steps, "
                          "(SELECT count(*) FROM training_coupling) AS summary")
    assert counts.iloc[0].tolist() == [70, 1]


def test_without_a_trace_the_steps_keep_their_raw_columns(run, tmp_path):
    path = tmp_path / "w.duckdb"
    _ingest(path, run, trace=run.trace.slice(0, 0), run_state="lost", end_reason="lost")
    steps = _frame(path, "SELECT * FROM training_steps")
    assert len(steps) == len(run.steps)
    assert steps["grad_norm"].notna().all() and steps["loss"].notna().all()
    assert steps[ANALYSED].isna().all().all()
    assert steps["spike"].notna().all()  # spikes need grad_norm only
    row = _frame(path, "SELECT * FROM training_coupling").iloc[0]
    assert row["verdict"] == run.report["figures"]["verdict"]
    assert pd.isna(row["power_p05_w"]) and pd.isna(row["rle_power_limit_w"])
    assert _frame(path, "SELECT count(*) AS n FROM rle_series")["n"][0] == 0


def test_a_run_that_failed_before_its_first_step(run, tmp_path):
    """No steps (the runner failed early): the summary keeps the error, the trace still has RLE."""
    doc = {"experiment": "training_coupling", "schema_version": 1, "simulated": True, "figures": {},
           "quality": {}, "checks": {"error": "CUDA out of memory"}, "steps": []}
    path = tmp_path / "w.duckdb"
    _ingest(path, run, doc=doc)
    row = _frame(path, "SELECT * FROM training_coupling").iloc[0]
    assert row["verdict"] is None and "CUDA out of memory" in row["verdict_reason"]
    assert _frame(path, "SELECT count(*) AS n FROM training_steps")["n"][0] == 0
    # No recorded limits and no assumed slowdown: RLE is not guessed.
    assert _frame(path, "SELECT count(*) AS n FROM rle_series")["n"][0] == 0
    doc["figures"] = {"rle_power_limit_w": run.power_limit_w, "rle_slowdown_temp_c": run.slowdown_temp_c,
                      "verdict": "insufficient data", "verdict_reason": "CUDA out of memory"}
    _ingest(path, run, doc=doc)
    assert _frame(path, "SELECT count(*) AS n FROM rle_series")["n"][0] > 0


@pytest.mark.parametrize("assumed", [False, True])
def test_a_report_without_its_rle_limits(run, tmp_path, assumed):
    """Older reports did not record RLE's limits: the fingerprint's power limit and the
    fallback slowdown are used only when the report says it assumed one, else RLE stays null."""
    doc = copy.deepcopy(run.report)
    doc["schema_version"] = 1  # an older report: a figure it lacks is upgraded to null
    for key in ("rle_power_limit_w", "rle_slowdown_temp_c"):
        doc["figures"].pop(key)
    doc["checks"]["slowdown_temp_c_assumed"] = assumed
    path = tmp_path / "w.duckdb"
    _ingest(path, run, doc=doc)
    steps = _frame(path, "SELECT * FROM training_steps")
    row = _frame(path, "SELECT * FROM training_coupling").iloc[0]
    series = _frame(path, "SELECT count(*) AS n FROM rle_series")["n"][0]
    assert steps["aligned"].notna().all() and steps["power_w"].notna().any()  # alignment needs no limits
    if assumed:
        assert row["rle_slowdown_temp_c"] == FALLBACK_SLOWDOWN_C
        assert row["rle_power_limit_w"] == fingerprint()["fields"]["power_limit_w"]
        assert series > 0 and steps["rle"].notna().any()
    else:
        assert pd.isna(row["rle_power_limit_w"]) and series == 0
        assert steps["rle"].isna().all() and steps["collapse"].isna().all()


def test_values_outside_physics_become_null_not_errors(run, tmp_path):
    doc = copy.deepcopy(run.report)
    doc["steps"][0]["energy_j"] = -5.0  # a counter that wrapped
    doc["steps"][1]["grad_norm"] = float("nan")
    doc["steps"][2]["lr_spike"] = "yes"
    doc["figures"]["p_value"] = 1.7
    path = tmp_path / "w.duckdb"
    bad = copy.deepcopy(doc)
    bad["figures"]["verdict"] = "maybe"  # a word outside the contract's is refused, naming the field
    with pytest.raises(ValidationError, match="field figures.verdict is 'maybe'"):
        _ingest(path, run, doc=bad)
    _ingest(path, run, doc=doc)
    steps = _frame(path, "SELECT * FROM training_steps ORDER BY step")
    assert pd.isna(steps["energy_j"][0]) and pd.isna(steps["grad_norm"][1]) and pd.isna(steps["lr_spike"][2])
    assert steps["energy_j"][1:].notna().all()
    row = _frame(path, "SELECT * FROM training_coupling").iloc[0]
    assert pd.isna(row["p_value"])
    raw = _frame(path, "SELECT payload_json FROM experiment_results")["payload_json"][0]
    assert '"p_value": 1.7' in raw  # the raw JSON keeps what the report said


def test_compare_view_takes_each_devices_latest_run_with_a_result(run, tmp_path):
    path = tmp_path / "w.duckdb"
    _ingest(path, run, run_id="run-a", started=T0_WALL_NS)
    _ingest(path, run, run_id="run-b", started=T0_WALL_NS + 10**12)
    # A newer run of the same device without the experiment does not hide it.
    ingest_tables(path, run_metadata("run-c", started_wall_ns=T0_WALL_NS + 2 * 10**12,
                                     ended_wall_ns=T0_WALL_NS + 2 * 10**12 + 10**9),
                  fingerprint(), run.trace, run.markers)
    _ingest(path, run, run_id="run-a", device_uid="dev-1")
    view = _frame(path, "SELECT * FROM v_training_coupling_compare ORDER BY device_uid")
    assert view[["device_uid", "run_id"]].values.tolist() == [["dev-0", "run-b"], ["dev-1", "run-a"]]
    assert (view["peers"] == 2).all() and (view["peers_coupled"] == 2).all()
    assert view["delta_power_p95_w"].tolist() == pytest.approx([0.0, 0.0])
    assert view["verdict"].tolist() == ["coupled", "coupled"]


def test_a_version_3_warehouse_migrates_and_takes_training_results(run, tmp_path):
    path = tmp_path / "v3.duckdb"
    con = duckdb.connect(str(path))
    migrations.migrate(con, label=str(path), target=3)
    assert migrations.current_version(con) == 3
    con.close()
    _ingest(path, run)  # opening for the write applies 004 first
    con = connect_writer(path)
    try:
        assert migrations.current_version(con) == migrations.latest_version() >= 4
        names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert set(TABLES) | {"v_training_coupling_compare"} <= names
        assert con.execute("SELECT count(*) FROM training_steps").fetchone()[0] == len(run.steps)
        assert con.execute("SELECT count(*) FROM v_training_coupling_compare").fetchone()[0] == 1
    finally:
        con.close()


def test_constraints_hold_the_physics(tmp_path):
    con = connect_writer(tmp_path / "w.duckdb")
    try:
        for bad in ("INSERT INTO training_steps (run_id, device_uid, step, t_start_ns, t_end_ns) VALUES ('r', 'd', 0, 5, 4)",
                    "INSERT INTO training_steps (run_id, device_uid, step, t_start_ns, t_end_ns, energy_j) "
                    "VALUES ('r', 'd', 0, 1, 2, -1.0)",
                    "INSERT INTO training_coupling (run_id, device_uid, simulated, verdict) VALUES ('r', 'd', true, 'maybe')",
                    "INSERT INTO training_coupling (run_id, device_uid, simulated, power_p05_w, power_p95_w) "
                    "VALUES ('r', 'd', true, 200, 100)",
                    "INSERT INTO rle_series (run_id, device_uid, t_ns, t_s, util_pct) VALUES ('r', 'd', 1, 0, 101)"):
            with pytest.raises(duckdb.ConstraintException):
                con.execute(bad)
        con.execute("INSERT INTO training_steps (run_id, device_uid, step, t_start_ns, t_end_ns) VALUES ('r', 'd', 0, 1, 2)")
        with pytest.raises(duckdb.ConstraintException):  # one row per run x device x step
            con.execute("INSERT INTO training_steps (run_id, device_uid, step, t_start_ns, t_end_ns) VALUES ('r', 'd', 0, 3, 4)")
    finally:
        con.close()
