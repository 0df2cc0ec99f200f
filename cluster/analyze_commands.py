"""`fleetphysics analyze`: run an analysis of experiments/analysis on a run's trace and markers
from the warehouse, and store its figures (the tables a suite run fills).

A command of cluster/, which may import every package: the warehouse reads the run and
stores the report, the analysis is experiments' (the warehouse imports no experiment code).
"""

from __future__ import annotations

import dataclasses
import importlib
import json

from agents.errors import ConfigError, ValidationError
from experiments.contracts.catalog import EXPERIMENTS

ANALYSES = tuple(e.name for e in EXPERIMENTS if e.analyzable)  # computed from a stored trace by `analyze`


def register(subparsers) -> None:
    """Add analyze to the CLI."""
    from warehouse.cli import device_uid_argument, run_argument, common_arguments
    from warehouse.connection import WRITER_LOCK_TIMEOUT_S

    p = subparsers.add_parser("analyze", help="run an analysis on a run's trace and markers from the warehouse "
                                              "and store its figures (the tables a suite run fills)")
    run_argument(p, "the run to analyze")
    device_uid_argument(p, "one device of the run (default: every device)")
    p.add_argument("--experiment", choices=ANALYSES, default="instrument_response",
                   help="analysis to run (default instrument_response)")
    p.add_argument("--no-store", action="store_true", help="print the figures only; leave the warehouse as it is")
    common_arguments(p, WRITER_LOCK_TIMEOUT_S)
    p.set_defaults(func=_analyze)


def _analysis_module(name: str):
    module_name = f"experiments.analysis.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(f"analyze: {module_name} is not available yet ({exc}); "
                              "update fleetphysics to a version with experiments/analysis") from exc
        raise
    if not callable(getattr(module, "analyze", None)):
        raise ConfigError(f"analyze: {module_name} has no analyze(trace_df, markers_df) function; "
                          "update fleetphysics")
    return module


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return value.to_dict()
    return value


def analysis_report(experiment: str, result: dict, simulated: bool) -> dict:
    """An analysis result (``experiments.analysis.<name>.analyze``) as the experiment's
    report, built through its contract (experiments.contracts), the shape a suite run's
    ingest stores: the baseline of power_w (the suite's field), the response of every power
    field, the heat soak's figures. ``source`` says it came from ``analyze``."""
    from pydantic import ValidationError as ContractViolation

    from experiments.contracts import build_report, describe, report_json

    if experiment == "baseline":
        fields = result.get("fields") or {}
        figures = fields.get("power_w") or {"field": "power_w", "n_rows": 0, "n": 0, "fake_idle": None,
                                             "fake_idle_reasons": [], "quality": "no_data"}
    elif experiment == "instrument_response":
        figures = result.get("fields") or {}
    else:  # heat_soak: the figures themselves, and where the window came from
        figures = {k: v for k, v in result.items() if k != "source"}
    quality = {k: figures[k] for k in ("quality", "quality_reason", "equilibrium", "equilibrium_status")
               if k in figures}
    try:
        return report_json(build_report(experiment, figures, simulated=simulated, quality=quality, source="analyze"))
    except ContractViolation as exc:
        raise ValidationError(f"analyze {experiment}: the analysis's result breaks the report's contract: "
                              + describe(exc, "update fleetphysics (experiments/analysis and experiments/contracts "
                                              "disagree)")) from None


def _analyze(args) -> int:
    from warehouse.cli import load_run_frames
    from warehouse.query import query
    from warehouse.results import store_experiment

    module = _analysis_module(args.experiment)
    results = []
    for device, trace, markers in load_run_frames(args.warehouse, args.run, args.device_uid, args.lock_timeout_s):
        results.append({"run_id": args.run, "device_uid": device, "experiment": args.experiment,
                        "result": _plain(module.analyze(trace, markers)), "stored": False})
    if not args.no_store:  # after every device is computed: a failure stores nothing half-way
        simulated = query(args.warehouse, "SELECT device_uid, simulated FROM run_devices WHERE run_id = ?", [args.run])
        simulated = dict(zip(simulated["device_uid"], simulated["simulated"]))
        reports = [analysis_report(args.experiment, res["result"], bool(simulated.get(res["device_uid"])))
                   for res in results]
        for res, report in zip(results, reports):
            store_experiment(args.warehouse, res["run_id"], res["device_uid"], report,
                             lock_timeout_s=args.lock_timeout_s)
            res["stored"] = True
    print(json.dumps(results[0] if len(results) == 1 else results, indent=None if args.json else 2, default=str))
    return 0
