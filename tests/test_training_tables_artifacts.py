"""training_coupling's tables end to end: the suite (on a simulated board, real poller) writes
them beside the report with the settings its analysis used, `fleetphysics ingest` stores
them as written, an artifact dir without them is refused (exit 2, warehouse unchanged), and
`fleetphysics reanalyze` writes them for such a dir."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cluster.cli import main
from experiments.contracts.tables import RLE_SERIES, TRAINING_STEPS
from experiments.suite import SuiteOptions, run_suite
from experiments.training_coupling.config import CouplingAnalysisSettings, TrainingCouplingConfig

pytestmark = [pytest.mark.realtime, pytest.mark.slow]

SETTINGS = CouplingAnalysisSettings(spike_k=2.0, detrend_window_steps=9, power_field="power_w", n_boot=199,
                                    alpha=0.05)


@pytest.fixture(scope="module")
def device_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("suite")
    cfg = TrainingCouplingConfig.for_profile("smoke").model_copy(update={"steps": 60, "analysis": SETTINGS})
    summary = run_suite(SuiteOptions(device="sim:rtx4080-laptop", profile="smoke", experiments=("training_coupling",),
                                     out=str(out), host="ci", configs={"training_coupling": cfg}))
    return Path(summary["artifact_dir"])


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _frame(path: Path, sql: str) -> pd.DataFrame:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def test_the_suite_writes_the_tables_and_ingest_stores_them_as_the_report_says(device_dir, tmp_path, capsys):
    report = json.loads((device_dir / "training_coupling.json").read_text())
    figures = report["figures"]
    assert figures["analysis_settings"] == SETTINGS.model_dump()
    written = pq.read_table(device_dir / TRAINING_STEPS.file_name)
    assert written.schema.equals(TRAINING_STEPS.schema)
    assert pq.read_table(device_dir / RLE_SERIES.file_name).schema.equals(RLE_SERIES.schema)
    wh = tmp_path / "w.duckdb"
    code, _, err = _cli(["ingest", str(device_dir), "--warehouse", str(wh)], capsys)
    assert code == 0, err
    steps = _frame(wh, "SELECT * FROM training_steps ORDER BY step")
    row = _frame(wh, "SELECT * FROM training_coupling").iloc[0]
    assert len(steps) == written.num_rows == figures["steps"]
    assert steps.loc[steps["spike"], "step"].tolist() == figures["spikes"]["steps"]
    assert row["n_spikes"] == figures["spikes"]["n_spikes"] > 0  # k = 2 finds spikes in 60 smoke steps
    assert row["n_aligned"] == figures["n_aligned"] == steps["aligned"].sum()
    assert row["power_field"] == "power_w" and row["alpha"] == 0.05
    assert steps["power_w"].tolist() == pytest.approx(written.column("power_w").to_pylist(), nan_ok=True)
    assert row["power_p95_w"] == pytest.approx(figures["signature"]["power_p95_w"])


def test_a_dir_without_its_tables_is_refused_until_reanalyzed(device_dir, tmp_path, capsys):
    old = tmp_path / "old" / device_dir.name
    shutil.copytree(device_dir, old)
    (old / TRAINING_STEPS.file_name).unlink()
    (old / RLE_SERIES.file_name).unlink()
    doc = json.loads((old / "training_coupling.json").read_text())
    for key in ("analysis_settings", "signature"):  # a report as the suite wrote it before it wrote tables
        doc["figures"].pop(key)
    doc["schema_version"] = 1  # (before the contracts: version 1, upgraded on read)
    (old / "training_coupling.json").write_text(json.dumps(doc))
    wh = tmp_path / "w.duckdb"
    assert _cli(["ingest", str(device_dir), "--warehouse", str(wh)], capsys)[0] == 0
    before = wh.read_bytes()
    code, _, err = _cli(["ingest", str(old), "--warehouse", str(wh)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(old / TRAINING_STEPS.file_name) in err and "fleetphysics reanalyze" in err
    assert wh.read_bytes() == before

    code, out, err = _cli(["reanalyze", str(old.parent)], capsys)
    assert code == 0, err
    assert TRAINING_STEPS.file_name in out and RLE_SERIES.file_name in out
    upgraded = json.loads((old / "training_coupling.json").read_text())["figures"]
    assert upgraded["analysis_settings"] == CouplingAnalysisSettings().model_dump()  # the defaults it was made with
    assert upgraded["steps"] == 60 and upgraded["rle_power_limit_w"] == doc["figures"]["rle_power_limit_w"]
    code, _, err = _cli(["ingest", str(old), "--warehouse", str(wh)], capsys)
    assert code == 0, err
    steps = _frame(wh, "SELECT step, spike FROM training_steps ORDER BY step")
    assert steps.loc[steps["spike"], "step"].tolist() == upgraded["spikes"]["steps"]


def test_reanalyze_of_a_dir_without_a_training_report_is_an_error(device_dir, tmp_path, capsys):
    other = tmp_path / "run" / "host" / device_dir.name
    shutil.copytree(device_dir, other)
    (other / "training_coupling.json").unlink()
    code, _, err = _cli(["reanalyze", str(other)], capsys)
    assert code == 2 and "no device dir with a report of training_coupling" in err
