"""The warehouse's `fleetphysics` subcommands: ingest, import, sql, export, analyze, compact.

Each takes ``--warehouse PATH`` (default: $FLEETPHYSICS_WAREHOUSE, else ./fleet.duckdb)
and ``--json``. Handlers return an exit code and raise agents.errors exceptions, which
cluster/cli.py prints as one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time

import pandas as pd

from agents.cli_args import positive_float, positive_int
from agents.errors import ConfigError, ValidationError

from .connection import READER_LOCK_TIMEOUT_S, WRITER_LOCK_TIMEOUT_S, connect_readonly, default_warehouse
from .query import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, Watchdog, fetch_arrow, query
from .result_text import csv_chunks, json_chunks, table_chunks

ANALYSES = ("instrument_response", "baseline", "heat_soak")


def _common(parser: argparse.ArgumentParser, lock_timeout_s: float) -> None:
    parser.add_argument("--warehouse", default=default_warehouse(), metavar="PATH",
                        help="warehouse file (default: $FLEETPHYSICS_WAREHOUSE, else ./fleet.duckdb)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--lock-timeout-s", type=positive_float, default=lock_timeout_s, metavar="S",
                        help=f"wait this long for another process's lock on the file (default {lock_timeout_s:g})")


def _replace_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replace", action="store_true",
                        help="replace a run x device already stored from another kind of source (an export "
                             "imported back, say); without it such an import is refused")


def _print_json(value, pretty: bool = False) -> None:
    print(json.dumps(value, indent=2 if pretty else None, default=str))


# ---------------------------------------------------------------- ingest and import


def _ingest(args) -> int:
    from .artifacts import ingest_paths
    from .ingest import summarize
    from .progress import progress_bars

    with progress_bars() as report:
        results = ingest_paths(args.warehouse, args.dirs, lock_timeout_s=args.lock_timeout_s, progress=report,
                               replace=args.replace)
    runs = summarize(results)
    _print_json(runs[0] if len(runs) == 1 else runs)
    return 0


def _import_tr122(args) -> int:
    from .ingest import summarize
    from .importers.tr122 import import_tr122

    _print_json(summarize([import_tr122(args.warehouse, args.dir, lock_timeout_s=args.lock_timeout_s,
                                        replace=args.replace)])[0])
    return 0


def _import_nvidia_smi(args) -> int:
    from .ingest import summarize
    from .importers.nvidia_smi import import_nvidia_smi

    result = import_nvidia_smi(args.warehouse, args.file, edges_path=args.edges, tz=args.tz,
                               gpu_name=args.gpu_name, host=args.host, lock_timeout_s=args.lock_timeout_s,
                               replace=args.replace)
    _print_json(summarize([result])[0])
    return 0


# ---------------------------------------------------------------- sql and export


def _sql(args) -> int:
    if args.json and args.csv:
        raise ConfigError("sql: pass one of --json and --csv")
    # The time limit covers the whole command: waiting for the file, the query, fetching and
    # formatting; the row and byte limits bound what is fetched and formatted.
    deadline = time.monotonic() + args.timeout_s
    df = query(args.warehouse, args.query, max_rows=args.max_rows, timeout_s=args.timeout_s,
               lock_timeout_s=min(args.lock_timeout_s, args.timeout_s), max_bytes=args.max_bytes,
               deadline=deadline)
    check = Watchdog(None, deadline, timeout_s=args.timeout_s).check
    chunks = json_chunks if args.json else csv_chunks if args.csv else table_chunks
    for text in chunks(df, check):
        sys.stdout.write(text)
    if df.attrs.get("truncated"):
        print(f"fleetphysics: showing the first {args.max_rows:,} rows; pass --max-rows to see more", file=sys.stderr)
    return 0


def _export(args) -> int:
    from .export import export_tr122

    result = export_tr122(args.warehouse, args.run_id, args.out, device_uid=args.device,
                          lock_timeout_s=args.lock_timeout_s)
    if args.json:
        _print_json(result)
    else:
        print(f"exported run {result['run_id']} device {result['device_uid']} ({result['rows']:,} rows) to {result['out']}")
        for path in result["cleaned"]:
            print(f"removed {path}, left by an export that was killed", file=sys.stderr)
    return 0


def _compact(args) -> int:
    from .compact import compact
    from .progress import progress_bars

    with progress_bars() as report:
        result = compact(args.warehouse, lock_timeout_s=args.lock_timeout_s, progress=report)
    if args.json:
        _print_json(result)
    else:
        print(f"compacted {result['warehouse']}: {result['bytes_before'] / 1e6:,.1f} MB -> "
              f"{result['bytes_after'] / 1e6:,.1f} MB, on-disk format {result['storage_version_before']} -> "
              f"{result['storage_version_after']}, {result['rows']:,} rows in {result['tables']} tables")
    return 0


# ---------------------------------------------------------------- analyze


def load_run_frames(warehouse, run_id: str, device_uid: str | None = None,
                    lock_timeout_s: float = READER_LOCK_TIMEOUT_S) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(device_uid, trace DataFrame, markers DataFrame) for each device of a run, read-only.

    The trace has the poller's columns (agents.trace_schema.TRACE_SCHEMA order, device_uuid
    joined back) plus power_avg_1s_w; the markers have MARKER_SCHEMA's columns.
    """
    from .columns import MARKER_FIELDS, TRACE_EXTRA_FIELDS, TRACE_FIELDS

    con = connect_readonly(warehouse, timeout_s=lock_timeout_s)
    try:
        devices = [r[0] for r in con.execute(
            "SELECT device_uid FROM run_devices WHERE run_id = ? ORDER BY device_uid", [run_id]).fetchall()]
        if not devices:
            raise ValidationError(f"analyze: run {run_id!r} is not in the warehouse; list runs with "
                                  "`fleetphysics sql \"SELECT run_id, device_uid FROM run_devices\"`")
        if device_uid is not None:
            if device_uid not in devices:
                raise ValidationError(f"analyze: run {run_id} has no device {device_uid!r}; pass one of {', '.join(devices[:5])}")
            devices = [device_uid]
        trace_columns = ", ".join(list(TRACE_FIELDS) + list(TRACE_EXTRA_FIELDS))
        marker_columns = ", ".join(MARKER_FIELDS)
        frames = []
        for device in devices:
            trace = fetch_arrow(con, f"SELECT {trace_columns} FROM v_power_trace WHERE run_id = ? AND device_uid = ? "
                                     "ORDER BY t_ns", [run_id, device]).to_pandas()
            markers = fetch_arrow(con, f"SELECT {marker_columns} FROM markers WHERE run_id = ? AND device_uid = ? "
                                       "ORDER BY seq", [run_id, device]).to_pandas()
            frames.append((device, trace, markers))
        return frames
    finally:
        con.close()


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
    from .results import store_experiment

    module = _analysis_module(args.experiment)
    results = []
    for device, trace, markers in load_run_frames(args.warehouse, args.run, args.device, args.lock_timeout_s):
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
    _print_json(results[0] if len(results) == 1 else results, pretty=not args.json)
    return 0


# ---------------------------------------------------------------- registration


def register(subparsers) -> None:
    """Add ingest, import (tr122, nvidia-smi), sql, export, analyze and compact to the CLI."""
    p = subparsers.add_parser("ingest", help="ingest artifact dirs (device, run or root dirs) into the warehouse")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="device dir, run dir or a root holding run dirs")
    _replace_flag(p)
    _common(p, WRITER_LOCK_TIMEOUT_S)
    p.set_defaults(func=_ingest)

    imp = subparsers.add_parser("import", help="import recordings made outside fleetphysics")
    sub = imp.add_subparsers(dest="import_format", metavar="FORMAT", parser_class=type(imp))
    q = sub.add_parser("tr122", help="a TR122 artifact pack (power_trace.csv, generation_events.jsonl, ...)")
    q.add_argument("dir", metavar="DIR", help="the pack's folder")
    _replace_flag(q)
    _common(q, WRITER_LOCK_TIMEOUT_S)
    q.set_defaults(func=_import_tr122)
    q = sub.add_parser("nvidia-smi", help="an nvidia-smi --query-gpu --format=csv log")
    q.add_argument("file", metavar="FILE", help="the CSV log")
    q.add_argument("--edges", metavar="FILE", help="load edges: header line, one epoch timestamp per line, on/off alternating")
    q.add_argument("--tz", default="+00:00", metavar="+HH:MM", help="UTC offset of the log's local timestamps (default +00:00)")
    q.add_argument("--gpu-name", metavar="NAME", help="the GPU's name (default: the log's name column, else 'gpu')")
    q.add_argument("--host", default="imported", metavar="NAME", help="host name to record (default 'imported')")
    _replace_flag(q)
    _common(q, WRITER_LOCK_TIMEOUT_S)
    q.set_defaults(func=_import_nvidia_smi)
    imp.set_defaults(func=lambda args: (imp.print_help(), 2)[1])

    p = subparsers.add_parser("sql", help="run one read-only SELECT on the warehouse")
    p.add_argument("query", metavar="SQL", help='e.g. "SELECT * FROM v_fleet_latest"')
    p.add_argument("--csv", action="store_true", help="print CSV")
    p.add_argument("--max-rows", type=positive_int, default=DEFAULT_MAX_ROWS, metavar="N",
                   help=f"return at most N rows (default {DEFAULT_MAX_ROWS:,})")
    p.add_argument("--max-bytes", type=positive_int, default=DEFAULT_MAX_BYTES, metavar="B",
                   help=f"stop when the result passes B bytes (default {DEFAULT_MAX_BYTES:,})")
    p.add_argument("--timeout-s", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"stop the whole command (query, fetching, printing) after S seconds "
                        f"(default {DEFAULT_TIMEOUT_S:g})")
    _common(p, READER_LOCK_TIMEOUT_S)
    p.set_defaults(func=_sql)

    p = subparsers.add_parser("export", help="export one run x device as a TR122 pack")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--format", choices=("tr122",), default="tr122", help="pack format (tr122)")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty folder to write the pack into")
    p.add_argument("--device", metavar="DEVICE_UID", help="the device, when the run has several")
    _common(p, READER_LOCK_TIMEOUT_S)
    p.set_defaults(func=_export)

    p = subparsers.add_parser("analyze", help="run an analysis on a run's trace and markers from the warehouse "
                                              "and store its figures (the tables a suite run fills)")
    p.add_argument("--run", required=True, metavar="RUN_ID")
    p.add_argument("--device", metavar="DEVICE_UID", help="one device of the run (default: every device)")
    p.add_argument("--experiment", choices=ANALYSES, default="instrument_response",
                   help="analysis to run (default instrument_response)")
    p.add_argument("--no-store", action="store_true", help="print the figures only; leave the warehouse as it is")
    _common(p, WRITER_LOCK_TIMEOUT_S)
    p.set_defaults(func=_analyze)

    p = subparsers.add_parser("compact", help="rewrite the warehouse into a fresh file: reclaims free space, "
                                              "and older DuckDB clients can open it")
    _common(p, WRITER_LOCK_TIMEOUT_S)
    p.set_defaults(func=_compact)
