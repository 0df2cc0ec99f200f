"""`fleetphysics analyze`: run an analysis of experiments/analysis on a run's trace and markers
from the warehouse, and store its figures (the tables a suite run fills).

A command of cluster/, which may import every package: the warehouse reads the run and
stores the report, the analysis is experiments' (the warehouse imports no experiment code).
"""

from __future__ import annotations

import dataclasses
import importlib
import json

from agents.errors import ConfigError

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


def analysis_report(experiment: str, figures: dict) -> dict:
    """An analysis result as an experiment report (the shape a suite run's ingest stores)."""
    quality = {k: figures[k] for k in ("quality", "quality_reason", "equilibrium", "equilibrium_status")
               if k in figures}
    return {"experiment": experiment, "schema_version": 1, "figures": figures, "quality": quality,
            "checks": {}, "source": "analyze"}


def _analyze(args) -> int:
    from warehouse.cli import load_run_frames
    from warehouse.results import store_experiment

    module = _analysis_module(args.experiment)
    results = []
    for device, trace, markers in load_run_frames(args.warehouse, args.run, args.device_uid, args.lock_timeout_s):
        results.append({"run_id": args.run, "device_uid": device, "experiment": args.experiment,
                        "result": _plain(module.analyze(trace, markers)), "stored": False})
    if not args.no_store:  # after every device is computed: a failure stores nothing half-way
        for res in results:
            store_experiment(args.warehouse, res["run_id"], res["device_uid"],
                             analysis_report(args.experiment, res["result"]), lock_timeout_s=args.lock_timeout_s)
            res["stored"] = True
    print(json.dumps(results[0] if len(results) == 1 else results, indent=None if args.json else 2, default=str))
    return 0
