"""The training_coupling tables: training_steps, rle_series, training_coupling and
v_training_coupling_compare, loaded at ingest from the report and the tables the analysis
wrote beside it (experiments.contracts.tables), never recomputed."""

from __future__ import annotations

import copy

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from agents.errors import ValidationError
from experiments.analysis.coupling import analyze_training_coupling
from experiments.analysis.rle import rle_series
from experiments.contracts.tables import RLE_SERIES, TRAINING_STEPS, empty
from experiments.training_coupling.config import CouplingAnalysisSettings
from training_fixtures import training_report, training_run
from warehouse import migrations
from warehouse.connection import connect_writer
from warehouse.ingest import PER_DEVICE_TABLES, ingest_tables
from warehouse.training import TABLES
from warehouse_fixtures import T0_WALL_NS, fingerprint, run_metadata, table_fingerprint

ANALYSED = ["aligned", "n_samples", "power_w", "temp_c", "temp_slope_c_per_s", "energy_trace_j", "rle", "collapse"]


@pytest.fixture(scope="module")
def run():
    return training_run()


def _ingest(path, run, doc=None, trace=None, run_id="run-0001", device_uid="dev-0", started=T0_WALL_NS,
            tables=None, **meta):
    meta = run_metadata(run_id, device_uid=device_uid, started_wall_ns=started, ended_wall_ns=started + 60 * 10**9,
                        **meta)
    return ingest_tables(path, meta, fingerprint(device_uid), run.trace if trace is None else trace, run.markers,
                         None, {"training_coupling": doc if doc is not None else run.report},
                         tables=run.tables if tables is None else tables)


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


def test_the_analysis_writes_its_tables_in_their_contract_shape(run):
    assert set(run.tables) == {TRAINING_STEPS.name, RLE_SERIES.name}
    assert run.tables[TRAINING_STEPS.name].schema.equals(TRAINING_STEPS.schema)
    assert run.tables[RLE_SERIES.name].schema.equals(RLE_SERIES.schema)
    assert run.tables[TRAINING_STEPS.name].num_rows == len(run.steps) and run.tables[RLE_SERIES.name].num_rows > 0
    assert empty(RLE_SERIES).schema.equals(RLE_SERIES.schema) and empty(RLE_SERIES).num_rows == 0


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
    """The stored per-step figures are analyze_training_coupling's (with the same settings)."""
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
    tables = dict(run.tables, training_coupling_steps=run.tables["training_coupling_steps"].slice(0, 70))
    _ingest(path, run, tables=tables)
    counts = _frame(path, "SELECT (SELECT count(*) FROM training_steps) AS steps, "
                          "(SELECT count(*) FROM training_coupling) AS summary")
    assert counts.iloc[0].tolist() == [70, 1]


def test_non_default_settings_reach_the_warehouse_as_the_report_computed_them(tmp_path):
    """Analysed with settings other than the defaults, the stored rows are the report's figures
    (ingest recomputing with the defaults made spikes, power and RLE disagree with it)."""
    settings = CouplingAnalysisSettings(spike_k=2.0, detrend_window_steps=7, power_field="power_w",
                                        temp_slope_window_s=2.0, n_boot=199, alpha=0.05)
    run = training_run(settings=settings)
    figures = run.report["figures"]
    assert figures["analysis_settings"] == settings.model_dump()
    path = tmp_path / "w.duckdb"
    _ingest(path, run)
    steps = _frame(path, "SELECT * FROM training_steps ORDER BY step")
    row = _frame(path, "SELECT * FROM training_coupling").iloc[0]
    assert steps.loc[steps["spike"], "step"].tolist() == figures["spikes"]["steps"]
    assert row["n_spikes"] == figures["spikes"]["n_spikes"] == steps["spike"].sum()
    default = analyze_training_coupling(run.trace.to_pandas(), run.steps, run.power_limit_w, run.slowdown_temp_c)
    assert figures["spikes"]["n_spikes"] > default["figures"]["spikes"]["n_spikes"]  # the settings mattered
    assert row["power_field"] == "power_w" == figures["quality"]["power_field"]
    assert row["alpha"] == 0.05
    ref = pd.DataFrame(analyze_training_coupling(run.trace.to_pandas(), run.steps, run.power_limit_w,
                                                 run.slowdown_temp_c, **settings.model_dump())["per_step"])
    merged = steps.merge(ref, on="step", suffixes=("", "_ref"))
    for column in ("power_w", "temp_slope_c_per_s"):
        a, b = merged[column].astype(float).to_numpy(), merged[f"{column}_ref"].astype(float).to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)) and a[~np.isnan(a)] == pytest.approx(b[~np.isnan(b)],
                                                                                            rel=1e-5, abs=1e-6)
    for key in ("verdict", "p_value", "n_aligned"):
        assert row[key] == figures[key], key
    series = _frame(path, "SELECT * FROM rle_series ORDER BY t_ns")
    assert series["rle"].median() == pytest.approx(figures["rle"]["rle_median"], abs=1e-4)
    assert row["n_collapses"] == series["collapse_start"].sum()
    for name in ("power_p05_w", "power_p95_w", "temp_p05_c", "util_p95_pct"):
        assert row[name] == pytest.approx(figures["signature"][name]), name


def test_without_a_trace_the_steps_keep_their_raw_columns(run, tmp_path):
    """A lost run's analysis over an empty trace: the runner's columns, nothing analysed."""
    from agents.profiles import load_profile

    empty_trace = run.trace.slice(0, 0)
    doc, tables = training_report(run.steps, empty_trace, load_profile("rtx4080-laptop"))
    path = tmp_path / "w.duckdb"
    _ingest(path, run, doc=doc, tables=tables, trace=empty_trace, run_state="lost", end_reason="lost")
    steps = _frame(path, "SELECT * FROM training_steps")
    assert len(steps) == len(run.steps)
    assert steps["grad_norm"].notna().all() and steps["loss"].notna().all()
    assert not steps["aligned"].any()
    assert steps[[c for c in ANALYSED if c != "aligned" and c != "n_samples"]].isna().all().all()
    assert steps["spike"].notna().all()  # spikes need grad_norm only
    row = _frame(path, "SELECT * FROM training_coupling").iloc[0]
    assert row["verdict"] == "insufficient data" and "trace is empty" in row["verdict_reason"]
    assert pd.isna(row["power_p05_w"])
    assert _frame(path, "SELECT count(*) AS n FROM rle_series")["n"][0] == 0


def test_a_run_that_failed_before_its_first_step(run, tmp_path):
    """No steps (the runner failed early): the summary keeps the error, the tables are empty."""
    from experiments.reports import analyse_all

    reports, tables = analyse_all({"training_coupling": {"error": "CUDA out of memory"}}, {}, run.trace.to_pandas(),
                                  None, {"power_limit_w": run.power_limit_w})
    assert {name: t.num_rows for name, t in tables.items()} == {TRAINING_STEPS.name: 0, RLE_SERIES.name: 0}
    path = tmp_path / "w.duckdb"
    _ingest(path, run, doc=reports["training_coupling"], tables=tables)
    row = _frame(path, "SELECT * FROM training_coupling").iloc[0]
    assert row["verdict"] is None and "CUDA out of memory" in row["verdict_reason"]
    assert _frame(path, "SELECT count(*) AS n FROM training_steps")["n"][0] == 0
    assert _frame(path, "SELECT count(*) AS n FROM rle_series")["n"][0] == 0


def test_a_device_without_a_power_limit_keeps_the_runners_columns(run, tmp_path):
    from experiments.reports import analyse_all

    result = {"steps": run.steps, "end_reason": "completed"}
    reports, tables = analyse_all({"training_coupling": result}, {}, run.trace.to_pandas(), None, {})
    path = tmp_path / "w.duckdb"
    _ingest(path, run, doc=reports["training_coupling"], tables=tables)
    steps = _frame(path, "SELECT * FROM training_steps ORDER BY step")
    assert steps["step"].tolist() == [s["step"] for s in run.steps]
    assert steps[ANALYSED].isna().all().all() and steps["grad_norm"].notna().all()
    row = _frame(path, "SELECT * FROM training_coupling").iloc[0]
    assert row["verdict"] == "insufficient data" and "power limit" in row["verdict_reason"]
    assert pd.isna(row["rle_power_limit_w"])


@pytest.mark.parametrize("name", [TRAINING_STEPS.name, RLE_SERIES.name])
def test_a_missing_table_is_refused_and_says_how_to_write_it(run, tmp_path, name):
    path = tmp_path / "w.duckdb"
    _ingest(path, run, run_id="run-kept")
    before = path.read_bytes()
    tables = {k: v for k, v in run.tables.items() if k != name}
    with pytest.raises(ValidationError) as err:
        _ingest(path, run, tables=tables)
    message = str(err.value)
    assert "\n" not in message and f"{name}.parquet" in message and "missing" in message
    assert "fleetphysics reanalyze" in message
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", [TRAINING_STEPS.name, RLE_SERIES.name])
def test_a_renamed_or_mistyped_column_names_the_file_and_column(run, tmp_path, name):
    table = run.tables[name]
    column = table.schema.names[-1]
    renamed = table.rename_columns([c if c != column else column + "_x" for c in table.schema.names])
    for bad, words in ((renamed, f"column {column} is missing"),
                       (table.drop_columns([column]), f"column {column} is missing"),
                       (table.set_column(table.num_columns - 1, column, pa.array(["x"] * table.num_rows)),
                        f"column {column} is string")):
        with pytest.raises(ValidationError, match=f"{name}.parquet.*{words}"):
            _ingest(tmp_path / "w.duckdb", run, tables=dict(run.tables, **{name: bad}))
    extra = table.append_column("surprise", pa.array([1] * table.num_rows))
    with pytest.raises(ValidationError, match=f"{name}.parquet.*column surprise is not a column"):
        _ingest(tmp_path / "w.duckdb", run, tables=dict(run.tables, **{name: extra}))


def test_a_repeated_key_or_a_step_ending_before_it_starts_is_refused(run, tmp_path):
    steps = run.tables[TRAINING_STEPS.name]
    twice = pa.concat_tables([steps, steps.slice(0, 1)])
    with pytest.raises(ValidationError, match="column step repeats a value"):
        _ingest(tmp_path / "w.duckdb", run, tables=dict(run.tables, training_coupling_steps=twice))
    i = steps.schema.get_field_index("t_end_ns")
    backwards = steps.set_column(i, "t_end_ns", pa.array([0] * steps.num_rows, pa.int64()))
    with pytest.raises(ValidationError, match="column t_end_ns is before t_start_ns"):
        _ingest(tmp_path / "w.duckdb", run, tables=dict(run.tables, training_coupling_steps=backwards))


def test_values_outside_physics_become_null_not_errors(run, tmp_path):
    doc = copy.deepcopy(run.report)
    doc["figures"]["p_value"] = 1.7
    path = tmp_path / "w.duckdb"
    bad = copy.deepcopy(doc)
    bad["figures"]["verdict"] = "maybe"  # a word outside the contract's is refused, naming the field
    with pytest.raises(ValidationError, match="field figures.verdict is 'maybe'"):
        _ingest(path, run, doc=bad)
    steps = run.tables[TRAINING_STEPS.name].to_pandas()
    steps.loc[0, "energy_j"] = -5.0  # a counter that wrapped
    steps.loc[1, "power_w"] = 9000.0
    tables = dict(run.tables, training_coupling_steps=pa.Table.from_pandas(steps, schema=TRAINING_STEPS.schema,
                                                                           preserve_index=False))
    _ingest(path, run, doc=doc, tables=tables)
    got = _frame(path, "SELECT * FROM training_steps ORDER BY step")
    assert pd.isna(got["energy_j"][0]) and pd.isna(got["power_w"][1])
    assert got["energy_j"][1:].notna().all()
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
