"""The contracts between experiments and the warehouse, on real reports.

Every report here comes from the product's report path over a trace the physics model
rendered (``contract_runs``), is written by the suite's artifact writer and ingested by
``fleetphysics ingest``: a renamed figure key is one line naming it, exit 2, and the
warehouse file stays byte-identical; an intact report round-trips into its typed rows.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import contract_runs as cr
from agents.errors import ValidationError
from cluster.cli import main
from experiments.contracts import REPORT_MODELS, read_report, report_json
from warehouse.query import query

ROOT = Path(__file__).resolve().parents[1]

# experiment -> the path of one figure the warehouse reads (nested ones included)
RENAMED = {
    "baseline": ("figures", "mean_robust_w"),
    "instrument_response": ("figures", "power_w", "rise_ms"),
    "vram_cliff": ("figures", "cliff", 0, "max_context"),
    "joule_curve": ("figures", "points", 0, "j_per_token"),
    "heat_soak": ("figures", "tau_s"),
    "training_coupling": ("figures", "p_value"),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _renamed(doc: dict, path: tuple) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1] + "_renamed"] = node.pop(path[-1])
    return doc


def _path_text(path: tuple) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else ("." if out else "") + key
    return out


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A warehouse holding the real run (every report), and the artifact root it came from."""
    root = tmp_path_factory.mktemp("contract_run")
    cr.write_device_dir(root / "out")
    wh = root / "w.duckdb"
    assert main(["ingest", str(root / "out"), "--warehouse", str(wh)]) == 0
    return wh, root / "out"


def test_every_suite_experiment_has_a_report_model():
    from experiments.suite import EXPERIMENTS

    docs, _, _ = cr.reports()
    assert set(REPORT_MODELS) == set(EXPERIMENTS) | {"training_coupling"} == set(docs) == set(RENAMED)


OURS_AND_PYDANTIC = {"agents", "cluster", "dashboard", "experiments", "warehouse", "pydantic", "pyarrow"}


def test_contract_modules_import_only_pydantic_pyarrow_the_standard_library_and_leaves():
    # pyarrow: the artifact tables' schemas (tables.py) are Arrow schemas
    leaves = {"agents.errors"}
    wrong = []
    for path in sorted((ROOT / "experiments" / "contracts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top in {"agents", "cluster", "dashboard", "experiments", "warehouse"} and name not in leaves:
                    wrong.append(f"{path.name} imports {name}")
                elif top not in OURS_AND_PYDANTIC and top not in sys.stdlib_module_names:
                    wrong.append(f"{path.name} imports {name}")
    assert not wrong, wrong


@pytest.mark.parametrize("experiment", sorted(RENAMED))
def test_a_renamed_figure_key_is_one_line_exit_2_and_the_warehouse_is_untouched(stored, tmp_path, capsys,
                                                                                 experiment):
    wh_stored, _ = stored
    wh = tmp_path / "w.duckdb"
    shutil.copyfile(wh_stored, wh)
    before = _sha256(wh)
    docs, _, _ = cr.reports()
    path = RENAMED[experiment]
    bad = dict(docs) | {experiment: _renamed(docs[experiment], path)}
    device_dir = cr.write_device_dir(tmp_path / "out", bad)
    capsys.readouterr()
    code = main(["ingest", str(tmp_path / "out"), "--warehouse", str(wh)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(device_dir / f"{experiment}.json") in err and f"field {_path_text(path)} is missing" in err, err
    assert path[-1] + "_renamed" in err, err
    assert _sha256(wh) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out", "w.duckdb"]


def test_the_console_entry_point_exits_2_on_a_renamed_key(tmp_path):
    docs, _, _ = cr.reports()
    cr.write_device_dir(tmp_path / "out", dict(docs) | {"heat_soak": _renamed(docs["heat_soak"], ("figures", "tau_s"))})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "ingest", str(tmp_path / "out"), "--warehouse",
                           str(tmp_path / "w.duckdb")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "field figures.tau_s is missing" in proc.stderr, proc.stderr
    assert not (tmp_path / "w.duckdb").exists()


@pytest.mark.parametrize("experiment", sorted(RENAMED))
def test_every_figure_key_renamed_is_named(experiment):
    """Each top-level figure of the real report, renamed, is refused naming it."""
    docs, _, _ = cr.reports()
    doc = docs[experiment]
    for key in doc["figures"]:
        with pytest.raises(ValidationError, match=rf"field figures\.{key} is missing"):
            read_report(f"{experiment}.json", _renamed(doc, ("figures", key)))


def test_a_mistyped_figure_is_named_with_its_value():
    docs, _, _ = cr.reports()
    doc = copy.deepcopy(docs["baseline"])
    doc["figures"]["n"] = "479"
    with pytest.raises(ValidationError, match=r"baseline.json: field figures.n is '479': input should be a valid integer"):
        read_report("baseline.json", doc)


# ---------------------------------------------------------------- round trip


def _rows(wh: Path, sql: str) -> list[dict]:
    return query(wh, sql).to_dict("records")


def test_the_stored_payload_is_the_report(stored):
    wh, _ = stored
    docs, _, _ = cr.reports()
    for row in _rows(wh, "SELECT experiment, schema_version, payload_json FROM experiment_results"):
        assert row["schema_version"] == 2
        assert json.loads(row["payload_json"]) == json.loads(json.dumps(docs[row["experiment"]])), row["experiment"]


def test_baseline_round_trip(stored):
    figures = cr.reports()[0]["baseline"]["figures"]
    row, = _rows(stored[0], "SELECT * FROM baselines")
    assert row["field"] == figures["field"] == "power_w"
    assert row["idle_robust_w"] == figures["mean_robust_w"] and row["idle_sem_w"] == figures["sem_eff_w"]
    assert row["n_samples"] == figures["n"] and row["quality"] == figures["quality"] == "good"
    assert row["fake_idle"] == figures["fake_idle"]


def test_sensor_response_round_trip(stored):
    figures = cr.reports()[0]["instrument_response"]["figures"]
    rows = {r["field"]: r for r in _rows(stored[0], "SELECT * FROM instrument_response")}
    reported = {k: v for k, v in figures.items() if v is not None}
    assert set(rows) == set(reported) == {"power_w", "power_instant_w"}
    for field, f in reported.items():
        assert rows[field]["rise_ms"] == f["rise_ms"] and rows[field]["update_period_ms"] == f["update_period_ms"]
        assert rows[field]["n_steps"] == f["n_steps"] and rows[field]["quality"] == f["quality"]


def test_vram_cliff_round_trip(stored):
    doc = cr.reports()[0]["vram_cliff"]
    points = {r["batch_size"]: r for r in _rows(stored[0], "SELECT * FROM vram_cliff_points")}
    assert sorted(points) == [p["batch_size"] for p in doc["figures"]["cliff"]] == [1, 4]
    for p in doc["figures"]["cliff"]:
        assert points[p["batch_size"]]["max_context"] == p["max_context"]
        assert points[p["batch_size"]]["n_probes"] == p["probes"]
    summary, = _rows(stored[0], "SELECT * FROM vram_cliff")
    assert summary["capacity_mib"] == doc["figures"]["capacity_mib"]
    assert summary["fragmentation"] == doc["figures"]["fragmentation"]["fragmentation"]
    assert summary["quality"] == ("good" if all(v for k, v in doc["checks"].items() if k != "error") else "checks_failed")
    assert len(_rows(stored[0], "SELECT * FROM vram_cliff_probes")) == len(doc["probes"]) > 0


def test_joule_curve_round_trip(stored):
    figures = cr.reports()[0]["joule_curve"]["figures"]
    rows = {(r["phase"], r["batch_size"]): r for r in _rows(stored[0], "SELECT * FROM joule_curve")}
    assert set(rows) == {(p["phase"], p["batch_size"]) for p in figures["points"]} and rows
    for p in figures["points"]:
        assert rows[(p["phase"], p["batch_size"])]["j_per_token"] == p["j_per_token"]
        assert rows[(p["phase"], p["batch_size"])]["energy_quality"] == p["energy_quality"]
    fits = {r["phase"]: r for r in _rows(stored[0], "SELECT * FROM joule_fit")}
    for f in figures["fits"]:
        assert json.loads(fits[f["phase"]]["params_json"]) == f["params"] and fits[f["phase"]]["quality"] == f["quality"]


def test_heat_soak_round_trip(stored):
    figures = cr.reports()[0]["heat_soak"]["figures"]
    row, = _rows(stored[0], "SELECT * FROM heat_soak")
    assert row["tau_s"] == figures["tau_s"] and row["t_inf_c"] == figures["t_inf_c"]
    assert row["equilibrium"] == figures["equilibrium"] and row["quality"] == figures["quality"]
    series = _rows(stored[0], "SELECT * FROM heat_soak_series ORDER BY t_s")
    assert [r["t_s"] for r in series] == sorted(set(figures["series"]["t_s"]))


def test_training_coupling_round_trip(stored):
    doc = cr.reports()[0]["training_coupling"]
    row, = _rows(stored[0], "SELECT * FROM training_coupling")
    assert row["verdict"] == doc["figures"]["verdict"] and row["p_value"] == doc["figures"]["p_value"]
    assert row["best_lag"] == doc["figures"]["best_lag"]
    assert len(_rows(stored[0], "SELECT step FROM training_steps")) == len(doc["steps"]) > 0


def test_the_fleet_tables_headline_reads_the_contracts():
    from cluster.job import _headline

    docs, _, _ = cr.reports()
    row = _headline(docs)
    assert row["idle_w"] == docs["baseline"]["figures"]["mean_robust_w"]
    assert row["rise_ms"] == docs["instrument_response"]["figures"]["power_instant_w"]["rise_ms"]
    assert row["vram_cliff"] == docs["vram_cliff"]["figures"]["cliff"][0]["max_context"]
    assert row["j_per_token"] == docs["joule_curve"]["figures"]["j_per_token"]
    assert row["tau_s"] == docs["heat_soak"]["figures"]["tau_s"]
    with pytest.raises(ValidationError, match="field figures.tau_s is missing"):
        _headline({"heat_soak": _renamed(docs["heat_soak"], ("figures", "tau_s"))})


# ---------------------------------------------------------------- versions


def _as_version_1(doc: dict) -> dict:
    """What this project wrote before the contracts: null figures left out (of the figures and
    of a field's figures, as the analyses' no-data branches did), version 1."""
    def drop_nulls(value: dict) -> dict:
        return {k: v for k, v in value.items() if v is not None}

    out = {k: v for k, v in doc.items() if v is not None}
    out["figures"] = drop_nulls(doc["figures"])
    if doc["experiment"] == "instrument_response":
        out["figures"] = {field: drop_nulls(figures) for field, figures in out["figures"].items()}
    out["checks"] = {k: v for k, v in doc["checks"].items() if k != "error"}
    out["schema_version"] = 1
    return out


@pytest.mark.parametrize("experiment", sorted(RENAMED))
def test_a_version_1_report_is_upgraded_to_the_same_document(experiment):
    doc = cr.reports()[0][experiment]
    old = _as_version_1(doc)
    assert report_json(read_report("old.json", old)) == json.loads(json.dumps(doc))
    unversioned = {k: v for k, v in old.items() if k != "schema_version"}
    assert report_json(read_report("old.json", unversioned)) == json.loads(json.dumps(doc))
    # the upgrade fills what version 1 left out, never a renamed key
    with pytest.raises(ValidationError, match="_renamed is not a field"):
        read_report("old.json", _renamed(old, RENAMED[experiment]))


def test_a_failed_version_1_report_and_an_unknown_version():
    failed = {"experiment": "heat_soak", "schema_version": 1, "simulated": True, "figures": {}, "quality": {},
              "checks": {"error": "poller stopped"}}
    report = read_report("heat_soak.json", failed)
    assert report.figures is None and report.checks.error == "poller stopped"
    with pytest.raises(ValidationError, match="field schema_version is 3"):
        read_report("heat_soak.json", failed | {"schema_version": 3})
    # version 2 is read as written: a missing figure is an error, not a null
    current = report_json(report)
    del current["checks"]["error"]
    with pytest.raises(ValidationError, match="field checks.error is missing"):
        read_report("heat_soak.json", current)


# ---------------------------------------------------------------- the writer's side


def test_a_failed_experiment_and_a_report_that_breaks_its_contract(monkeypatch):
    """A failed experiment is a report with null figures and its error; an analysis whose
    output its contract refuses fails that report alone, naming the field (a bug, never
    written as a half-typed document), and the reports after it still come."""
    import pandas as pd

    from cluster.bench_analysis import bench_configs, synth_device
    from experiments import reports
    from experiments.analysis import heat_soak

    dev = synth_device(cr.BOARD, 120.0, 20.0, seed=5)
    empty = pd.DataFrame({"t_ns": pd.Series(dtype="int64"), "name": pd.Series(dtype="str")})
    results = dict(dev["results"]) | {"baseline": {"error": "the poller stopped"}}
    real = heat_soak.analyze_heat_soak
    monkeypatch.setattr(heat_soak, "analyze_heat_soak", lambda *a, **k: real(*a, **k) | {"tau_minutes": 1.0})
    out, _ = reports.analyse_all(results, bench_configs(), dev["trace"], empty, dev["info"])
    assert out["baseline"]["figures"] is None and out["baseline"]["checks"]["error"] == "the poller stopped"
    soak = out["heat_soak"]
    assert soak["figures"] is None and "field figures.tau_minutes is not a field" in soak["checks"]["error"]
    assert out["joule_curve"]["figures"]["points"] and out["training_coupling"]["figures"]["verdict"]
    for name, doc in out.items():
        assert report_json(read_report(f"{name}.json", doc)) == doc


def test_a_tr122_baseline_is_upgraded_by_its_named_function():
    from experiments.contracts.tr122 import baseline_report_from_tr122

    raw = {"idle_watts_mean_robust": 24.1, "fake_idle_flag": False, "quality": "GOOD"}
    report = baseline_report_from_tr122("pack/baseline.json", {"idle_robust_w": 24.1, "fake_idle": False}, "good",
                                        raw, simulated=False)
    f = report.figures
    assert (f.field, f.mean_robust_w, f.fake_idle, f.quality) == ("power_w", 24.1, False, "good")
    assert f.n is None and f.fake_idle_reasons is None and report.source == "tr122" and report.raw == raw
    with pytest.raises(ValidationError, match=r"^pack/baseline.json: field figures.quality is 'excellent'"):
        baseline_report_from_tr122("pack/baseline.json", {}, "excellent", raw, simulated=False)
    with pytest.raises(ValidationError, match=r"field figures.fake_idle is 1: input should be a valid boolean"):
        baseline_report_from_tr122("pack/baseline.json", {"fake_idle": 1}, "good", raw, simulated=False)


def _mb_names(value):
    """What version 1 called the memory figures: ``*_mb`` for the same MiB values."""
    if isinstance(value, list):
        return [_mb_names(v) for v in value]
    if isinstance(value, dict):
        return {(k[:-4] + "_mb" if k.endswith("_mib") else k): _mb_names(v) for k, v in value.items()}
    return value


def test_a_version_1_vram_cliff_report_with_mb_names_is_read_under_the_mib_names():
    doc = cr.reports()[0]["vram_cliff"]
    old = _mb_names(_as_version_1(doc))
    assert "capacity_mb" in old["figures"] and "capacity_mib" not in old["figures"]
    assert report_json(read_report("old.json", old)) == json.loads(json.dumps(doc))
    current = copy.deepcopy(doc)
    current["figures"]["capacity_mb"] = current["figures"].pop("capacity_mib")  # a version-2 report is never renamed
    with pytest.raises(ValidationError, match="capacity_m"):
        read_report("new.json", current)
