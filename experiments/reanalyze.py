"""Run an experiment's analysis of an artifact dir again from what the dir holds, and write
its report and tables (the explicit upgrade of a dir from before experiments wrote tables).

Only analyses whose inputs all lie in the dir can run again: training_coupling (its report
keeps the runner's steps; the trace is the dir's). The settings are the ones the report
recorded, else the analysis' defaults: reports from before settings were recorded were
all computed with the defaults. RLE's limits are the ones the report recorded, else the
run's ``devices.json`` (what the suite read from the device).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from agents.errors import ConfigError

REANALYSABLE = ("training_coupling",)


def _trace(device_dir: Path):
    single = device_dir / "power_trace.parquet"
    parts = sorted((device_dir / "power_trace").glob("part-*.parquet"))
    if single.is_file():
        return pq.read_table(single).to_pandas()
    if parts:
        return pa.concat_tables([pq.read_table(p) for p in parts]).sort_by("t_ns").to_pandas()
    raise ConfigError(f"{device_dir}: no trace (power_trace.parquet or power_trace/part-*.parquet); "
                      "the analysis runs over the trace: re-collect the artifacts")


def _limits(device_dir: Path, doc: dict) -> dict:
    """The device info the analysis reads: power limit and slowdown temperature."""
    figures = doc.get("figures") or {}
    checks = doc.get("checks") or {}
    if figures.get("rle_power_limit_w"):
        assumed = checks.get("slowdown_temp_c_assumed") is True
        return {"power_limit_w": figures["rle_power_limit_w"],
                "slowdown_temp_c": None if assumed else figures.get("rle_slowdown_temp_c")}
    devices = device_dir.parent / "devices.json"
    if devices.is_file():
        info = (json.loads(devices.read_text()).get(device_dir.name) or {}).get("info") or {}
        return {k: info.get(k) for k in ("power_limit_w", "default_power_limit_w", "slowdown_temp_c")}
    return {}  # the analysis says it needs a power limit


def reanalyze_device_dir(device_dir: str | Path) -> list[Path]:
    """Run the analyses of :data:`REANALYSABLE` that have a report in ``device_dir`` again;
    write their reports and tables (write, then rename) and return the files written (none
    when the dir has no such report)."""
    from experiments.context import ArtifactWriter
    from experiments.reports import training_coupling
    from experiments.suite import write_table
    from experiments.training_coupling.config import CouplingAnalysisSettings

    d = Path(device_dir)
    written: list[Path] = []
    for name in REANALYSABLE:
        path = d / f"{name}.json"
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
            settings = CouplingAnalysisSettings.model_validate((doc.get("figures") or {}).get("analysis_settings") or {})
        except (ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a report this version can analyse again ({str(exc).splitlines()[0]}); "
                              "run the suite again") from exc
        checks = doc.get("checks") or {}
        report = None
        if checks.get("error") is not None or not isinstance(doc.get("steps"), list):
            from experiments.contracts.tables import empty, tables_of

            tables = {t.name: empty(t) for t in tables_of(name)}  # the runner failed: nothing to analyse
        else:
            res = {"steps": doc["steps"], "end_reason": checks.get("end_reason")}
            report, tables = training_coupling(res, _trace(d), _limits(d, doc), bool(doc.get("simulated")), settings)
        # the tables first, as the suite writes them: a report is never without its tables
        written += [write_table(d, table_name, table) for table_name, table in tables.items()]
        if report is not None:
            written.append(ArtifactWriter(d).write_json(name, report))
    return written
