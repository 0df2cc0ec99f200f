"""The experiment registry and catalog: one place that lists every experiment.

The suite, the reports, the job driver, the CLI, the warehouse and the dashboard read it, so
an experiment added there (and only there) is run, reported and offered by all of them.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import duckdb
import pandas as pd
import pytest
from pydantic import BaseModel

from agents.errors import ConfigError
from experiments import registry, reports, suite
from experiments.contracts import REPORT_MODELS, catalog
from experiments.contracts.base import Contract
from experiments.contracts.report import Checks, Report
from experiments.presets import PROFILES
from warehouse.migrations import migrate

ROOT = Path(__file__).resolve().parents[1]


def _experiment_packages() -> set[str]:
    return {d.name for d in (ROOT / "experiments").iterdir()
            if d.is_dir() and (d / "config.py").is_file() and (d / "runner.py").is_file()}


def test_the_registry_covers_every_experiment_package_in_catalog_order():
    assert _experiment_packages() == set(registry.names())
    assert registry.names() == catalog.names()
    assert all(registry.get(n).entry is catalog.find(n) for n in registry.names())


@pytest.mark.parametrize("name", catalog.names())
def test_every_registered_experiment_resolves_to_its_code(name):
    reg = registry.get(name)
    for preset in PROFILES:
        assert isinstance(reg.preset(preset), reg.config_class)
    assert reg.config_class.__module__ == f"experiments.{name}.config"
    assert callable(reg.runner) and reg.runner.__module__ == f"experiments.{name}.runner"
    assert callable(reg.analysis)
    assert reg.report_model is None or isinstance(reg.report_model, type)


def test_every_catalog_table_exists_in_the_warehouse_schema():
    con = duckdb.connect()
    migrate(con, "test")
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    for e in catalog.EXPERIMENTS:
        missing = [t for t in e.tables + e.artifacts if t not in tables]
        assert not missing, f"{e.name}: {missing} not created by warehouse/schema"
        for t in e.tables + e.artifacts:  # each is keyed by run x device, as ingest replaces it
            cols = {r[0] for r in con.execute(f"DESCRIBE {t}").fetchall()}
            assert {"run_id", "device_uid"} <= cols, t


def test_names_and_aliases_are_unique_and_keep_every_stored_spelling():
    spellings = [s for e in catalog.EXPERIMENTS for s in e.spellings]
    assert len(spellings) == len(set(spellings))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", s) for s in spellings)
    # the names results were stored and imported under before the catalog existed
    before = {"baseline": "baseline", "idle_baseline": "baseline", "instrument_response": "instrument_response",
              "sensor_response": "instrument_response", "vram_cliff": "vram_cliff", "joule_curve": "joule_curve",
              "energy_per_token": "joule_curve", "heat_soak": "heat_soak", "thermal_equilibrium": "heat_soak"}
    assert {k: v for k, v in catalog.alias_map().items() if k in before} == before
    assert catalog.canonical("thermal_equilibrium") == "heat_soak" and catalog.canonical("nope") is None
    assert catalog.spellings("baseline") == ("baseline", "idle_baseline") and catalog.spellings("nope") == ()


def test_every_catalog_page_is_a_dashboard_page():
    from dashboard import ui

    for e in catalog.pages():
        assert (ROOT / "dashboard" / ui.PAGES_DIR / e.page.file).is_file(), e.page.file
        assert (e.page.file, e.page_title, e.page.icon, e.page.url_path) in ui.PAGES
    assert [p.page.position for p in catalog.pages()] == sorted({p.page.position for p in catalog.pages()})


def test_headline_takes_the_first_figure_present_and_none_when_absent():
    got = catalog.headline({
        "instrument_response": {"figures": {"power_instant_w": {"rise_ms": 0.0}, "power_w": {"update_period_ms": 100,
                                                                                               "rise_ms": 50}}},
        "vram_cliff": {"figures": {"max_context": 4096}},
        "baseline": {"figures": {"mean_robust_w": 31.5, "fake_idle": False}},
    })
    assert got["update_period_ms"] == 100  # the instant field has none: the averaged one's
    assert got["rise_ms"] == 0.0  # a measured 0 is a value, not a missing one
    assert got["vram_cliff"] == 4096 and got["idle_w"] == 31.5 and got["fake_idle"] is False
    assert got["tau_s"] is None and got["j_per_token"] is None
    assert set(got) == {c for e in catalog.EXPERIMENTS for c, _paths in e.headline}


def test_an_unknown_experiment_is_bad_input_naming_the_choices():
    with pytest.raises(ConfigError, match=r"--experiments: unknown experiment 'nope'; choose from baseline, "):
        suite.parse_experiments("baseline,nope")
    with pytest.raises(ConfigError, match="unknown experiment 'nope'"):
        registry.get("nope")
    assert suite.parse_experiments("heat_soak, baseline") == ("baseline", "heat_soak")  # suite order
    assert suite.parse_experiments(None) == registry.names(default_only=True)
    assert "training_coupling" not in suite.parse_experiments(None)


def test_an_experiment_that_ends_on_a_trip_aborts_the_device_whatever_its_name():
    assert suite._device_state({"a": {}, "b": {"end_reason": "thermal_trip"}}, True) == ("aborted", "thermal_trip")
    assert suite._device_state({"a": {"end_reason": "timeout"}}, True) == ("timeout", "timeout")
    assert suite._device_state({"a": {"error": "x"}, "b": {"end_reason": "equilibrium"}}, True) == ("partial", "error")


# ---------------------------------------------------------------- a new experiment, registered only


class DummyConfig(BaseModel):
    """The config of an experiment that exists only in this test."""

    seconds: float = 1.0

    @classmethod
    def for_profile(cls, profile: str) -> "DummyConfig":
        return cls(seconds={"smoke": 1.0, "quick": 2.0, "full": 3.0}[profile])


class DummyFigures(Contract):
    ran_for_s: float
    after: list[str]


class DummyReport(Report):
    experiment: Literal["dummy"]
    figures: DummyFigures | None
    checks: Checks


def dummy_run(ctx, config: DummyConfig) -> dict:
    return {"experiment": "dummy", "ran_for_s": config.seconds, "device": ctx}


def dummy_analyse(inputs: reports.AnalysisInputs) -> reports.Analysis:
    seen = sorted(inputs.reports)  # the reports analysed before it
    return reports.Analysis(reports.report("dummy", {"ran_for_s": inputs.result["ran_for_s"], "after": seen},
                                           inputs.simulated), {"dummy_rows": pd.DataFrame({"x": [1, 2]})})


def dummy_plot(inputs) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(inputs.trace.t_ns, inputs.trace.power_w)
    inputs.save(fig, f"dummy-{inputs.reports['dummy']['figures']['ran_for_s']}")


@pytest.fixture
def dummy(monkeypatch):
    entry = catalog.Experiment("dummy", "Dummy", tables=("dummy_rows",), headline=(("dummy_s", ("ran_for_s",)),))
    reg = registry.Registered(entry, f"{__name__}:DummyConfig", f"{__name__}:dummy_run", f"{__name__}:dummy_analyse",
                              f"{__name__}:dummy_plot")
    monkeypatch.setattr(catalog, "EXPERIMENTS", catalog.EXPERIMENTS + (entry,))
    monkeypatch.setitem(registry.REGISTRY, "dummy", reg)
    monkeypatch.setitem(REPORT_MODELS, "dummy", DummyReport)  # its contract
    return reg


def test_a_registered_experiment_joins_the_suite_and_its_reports(dummy):
    assert suite.parse_experiments(None)[-1] == "dummy"  # in the default suite, after the built-in ones
    assert suite.parse_experiments("dummy,baseline") == ("baseline", "dummy")
    assert suite.SuiteOptions(device="sim:rtx4090").experiments[-1] == "dummy"
    assert suite.experiment_config("dummy", "quick") == DummyConfig(seconds=2.0)
    ran = suite._run_one("dummy", SimpleNamespace(thermal_trips=[]), DummyConfig())
    assert ran["ran_for_s"] == 1.0 and ran["thermal_trips"] == []  # the suite adds the guard's pauses
    results = {"vram_cliff": {"figures": {"max_context": 8}}, "dummy": {"ran_for_s": 1.0}}
    out, tables = reports.analyse_all(results, {}, pd.DataFrame(), None, {"simulated": True})
    assert out["dummy"]["figures"] == {"ran_for_s": 1.0, "after": ["vram_cliff"]} and out["dummy"]["simulated"]
    assert list(tables["dummy_rows"].x) == [1, 2]
    assert registry.model_names() == ("vram_cliff", "joule_curve")  # it named no model
    assert catalog.headline({"dummy": out["dummy"]})["dummy_s"] == 1.0  # a column of the fleet table
    assert catalog.canonical("dummy") == "dummy"


def test_a_registered_experiment_is_offered_by_the_cli(dummy, capsys):
    from cluster.cli import main

    for command in ("suite", "run"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        help_text = " ".join(capsys.readouterr().out.split())
        assert "heat_soak, dummy (default: all of them)" in help_text, command


def test_a_registered_experiment_is_plotted(dummy, tmp_path):
    import json

    from experiments.plots import plot_device

    pd.DataFrame({"t_ns": [2, 1, 3], "power_w": [30.0, 31.0, 32.0], "read_ok": [True] * 3}).to_parquet(
        tmp_path / "power_trace.parquet")
    (tmp_path / "run_metadata.json").write_text(json.dumps({"simulated": True}))
    (tmp_path / "dummy.json").write_text(json.dumps(reports.report("dummy", {"ran_for_s": 2.0, "after": []}, True)))
    assert plot_device(tmp_path) == [tmp_path / "dummy-2.0.png"]  # the built-in ones find nothing of theirs
    assert (tmp_path / "dummy-2.0.png").stat().st_size > 0


def test_every_registered_experiment_has_its_report_contract():
    for name in registry.names():
        model = registry.get(name).report_model
        assert model.model_fields["experiment"].annotation == Literal[name]
