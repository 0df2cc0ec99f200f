"""The warehouse's `fleetphysics` subcommands: ingest, import, sql, export, compact.

Each takes ``--warehouse PATH`` (default: $FLEETPHYSICS_WAREHOUSE, else ./fleet.duckdb)
and ``--json``. Handlers return an exit code and raise agents.errors exceptions, which
cluster/cli.py prints as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import pandas as pd

from agents.cli_args import DeprecatedAlias, add_deprecated_alias, positive_float, positive_int
from agents.errors import ConfigError, ValidationError

from .connection import READER_LOCK_TIMEOUT_S, WRITER_LOCK_TIMEOUT_S, connect_readonly, default_warehouse
from .query import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, Watchdog, fetch_arrow, query
from .result_text import csv_chunks, json_chunks, table_chunks

def _common(parser: argparse.ArgumentParser, lock_timeout_s: float) -> None:
    parser.add_argument("--warehouse", default=default_warehouse(), metavar="PATH",
                        help="warehouse file (default: $FLEETPHYSICS_WAREHOUSE, else ./fleet.duckdb)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--lock-timeout-s", type=positive_float, default=lock_timeout_s, metavar="S",
                        help=f"wait this long for another process's lock on the file (default {lock_timeout_s:g})")


def common_arguments(parser: argparse.ArgumentParser, lock_timeout_s: float) -> None:
    """--warehouse, --json and --lock-timeout-s, as every warehouse command takes them."""
    _common(parser, lock_timeout_s)


def _replace_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replace", action="store_true",
                        help="replace a run x device already stored from another kind of source (an export "
                             "imported back, say); without it such an import is refused")


def run_argument(parser: argparse.ArgumentParser, help_text: str, required_positional_alias: bool = False) -> None:
    """--run RUN_ID (required); ``required_positional_alias`` also takes the old positional
    RUN_ID with a deprecation note (export took one)."""
    if not required_positional_alias:
        parser.add_argument("--run", required=True, metavar="RUN_ID", help=help_text)
        return
    parser.add_argument("--run", metavar="RUN_ID", help=f"{help_text} (required)")
    parser.add_argument("run_positional", nargs="?", metavar="RUN_ID", action=DeprecatedAlias, new_flag="--run RUN_ID",
                        default=None, help=argparse.SUPPRESS)


def _given_run(args, command: str) -> str:
    """The run id of --run, or of the old positional; one line when neither or both disagree."""
    old = getattr(args, "run_positional", None)
    if args.run is not None and old is not None and old != args.run:
        raise ConfigError(f"{command}: --run {args.run!r} and the positional {old!r} disagree; pass --run RUN_ID only")
    run = args.run if args.run is not None else old
    if run is None:
        raise ConfigError(f"{command}: pass --run RUN_ID; list runs with `fleetphysics sql \"SELECT run_id FROM runs\"`")
    return run


def device_uid_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--device-uid DEVICE_UID (an identity in the warehouse, never a device spec); the old
    --device is accepted with a deprecation note."""
    new = parser.add_argument("--device-uid", metavar="DEVICE_UID", help=f"{help_text} (formerly --device)")
    add_deprecated_alias(parser, "--device", new)


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

    result = export_tr122(args.warehouse, _given_run(args, "export"), args.out, device_uid=args.device_uid,
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


# ---------------------------------------------------------------- a run's frames (for analyze)


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
                raise ValidationError(f"analyze: run {run_id} has no device {device_uid!r}; pass --device-uid with one of {', '.join(devices[:5])}")
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



# ---------------------------------------------------------------- registration


def register(subparsers) -> None:
    """Add ingest, import (tr122, nvidia-smi), sql, export and compact to the CLI."""
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
    run_argument(p, "the run to export", required_positional_alias=True)
    p.add_argument("--format", choices=("tr122",), default="tr122", help="pack format (tr122)")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty folder to write the pack into")
    device_uid_argument(p, "the device, when the run has several")
    _common(p, READER_LOCK_TIMEOUT_S)
    p.set_defaults(func=_export)

    p = subparsers.add_parser("compact", help="rewrite the warehouse into a fresh file: reclaims free space, "
                                              "and older DuckDB clients can open it")
    _common(p, WRITER_LOCK_TIMEOUT_S)
    p.set_defaults(func=_compact)
