"""`fleetphysics compact`: rewrite the warehouse into a fresh file, then swap it in.

Two things only a rewrite fixes. DuckDB reuses the blocks that migrations and replaced runs
free but never shrinks a file, so a warehouse that was migrated (005 and 006 rebuild
power_trace) or re-ingested keeps its largest size. And a file created in a newer on-disk
format than :data:`~warehouse.connection.STORAGE_COMPATIBILITY` (every file a DuckDB 2.0
writer created before fleetphysics pinned the format) cannot be opened by DuckDB 1.x clients.

The rewrite holds the writer lock from the first read to the swap, writes a temp file beside
the warehouse, checks every table's row count against the original and only then replaces
the original with ``os.replace``. An error, or a kill, at any point leaves the original file
as it was; a temp file left by a killed compact is removed by the next one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb

from agents.errors import WarehouseError, first_line

from .connection import STORAGE_COMPATIBILITY, WRITER_LOCK_TIMEOUT_S, connect_writer
from .progress import Report, no_report
from .sql_text import sql_identifier, sql_literal

TEMP_SUFFIX = ".compact-tmp"
_DEST = "fleetphysics_compact_dest"
# power_trace is copied in slices of whole run x device traces of about this many rows, so
# the bar moves during the one table that holds nearly all of the file.
SLICE_ROWS = 5_000_000


def _storage_version(con, database: str) -> str | None:
    rows = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = ?", [database]).fetchall()
    tags = rows[0][0] if rows else None
    return dict(tags).get("storage_version") if tags else None


def _row_counts(con, database: str) -> dict[str, int]:
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' ORDER BY table_name",
        [database]).fetchall()]
    return {t: con.execute(f"SELECT count(*) FROM {sql_identifier(database)}.main.{sql_identifier(t)}").fetchall()[0][0]
            for t in tables}


def _trace_slices(con, source: str) -> list[tuple[int, int, int]]:
    """(first, last, rows): trace_key ranges of about SLICE_ROWS rows each, in key order."""
    counts = con.execute(
        f"SELECT trace_key, count(*) FROM {sql_identifier(source)}.main.power_trace GROUP BY 1 ORDER BY 1").fetchall()
    slices, first, rows = [], None, 0
    for key, n in counts:
        first = key if first is None else first
        rows += n
        if rows >= SLICE_ROWS or key == counts[-1][0]:
            slices.append((first, key, rows))
            first, rows = None, 0
    return slices


def _copy(con, source: str, counts: dict[str, int], progress: Report) -> None:
    """Schema first (tables with their constraints and compression, views), then the rows."""
    total, done = sum(counts.values()), 0
    progress("compact", 0, total)
    con.execute(f"COPY FROM DATABASE {sql_identifier(source)} TO {_DEST} (SCHEMA)")
    for table, rows in counts.items():
        name = sql_identifier(table)
        insert = f"INSERT INTO {_DEST}.main.{name} SELECT * FROM {sql_identifier(source)}.main.{name}"
        if table == "power_trace":
            pieces = [(f"{insert} WHERE trace_key BETWEEN ? AND ?", [first, last], n)
                      for first, last, n in _trace_slices(con, source)]
        else:
            pieces = [(insert, [], rows)]
        for sql, params, n in pieces:
            con.execute(sql, params)
            done += n
            progress("compact", done, total)


def _remove(path: Path) -> None:
    for leftover in (path, Path(str(path) + ".wal")):
        leftover.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compact(path: str | os.PathLike, lock_timeout_s: float = WRITER_LOCK_TIMEOUT_S,
            progress: Report = no_report) -> dict:
    """Rewrite the warehouse at ``path`` into a fresh file in the pinned on-disk format and
    swap it in; returns sizes, formats and row counts before and after."""
    path = Path(path)
    if not path.is_file():
        raise WarehouseError(f"{path}: no warehouse file here; pass --warehouse PATH of an existing warehouse")
    temp = path.with_name(path.name + TEMP_SUFFIX)
    _remove(temp)  # left by a compact that was killed
    con = connect_writer(path, timeout_s=lock_timeout_s)  # migrates first: the copy is of the current schema
    try:
        con.execute("CHECKPOINT")
        source = con.execute("SELECT current_database()").fetchall()[0][0]
        bytes_before = path.stat().st_size
        free = shutil.disk_usage(path.parent).free
        if free < bytes_before:
            raise WarehouseError(
                f"{path}: compact needs room for a copy beside it ({bytes_before:,} bytes) but "
                f"{path.parent} has {free:,} free; free some space and retry")
        storage_before = _storage_version(con, source)
        counts = _row_counts(con, source)
        try:
            con.execute(f"ATTACH {sql_literal(temp)} AS {_DEST} (STORAGE_VERSION '{STORAGE_COMPATIBILITY}')")
            try:
                _copy(con, source, counts, progress)
                copied = _row_counts(con, _DEST)
                storage_after = _storage_version(con, _DEST)
            finally:
                con.execute(f"DETACH {_DEST}")
            if copied != counts:
                differ = sorted(t for t in counts.keys() | copied.keys() if counts.get(t) != copied.get(t))
                raise WarehouseError(
                    f"{path}: compact's copy does not match the warehouse (row counts of {', '.join(differ)}); "
                    "the warehouse is unchanged, report this with the file")
            _fsync(temp)
            # Swapped while this connection still holds the old file, so no other writer can
            # write into the old file after the copy; a writer waiting for the lock opens the new one.
            os.replace(temp, path)
            _fsync(path.parent)
        except duckdb.Error as exc:
            raise WarehouseError(f"{path}: compact failed ({first_line(exc)}); the warehouse is unchanged") from exc
    except BaseException:
        _remove(temp)
        raise
    finally:
        con.close()
    return {"warehouse": str(path), "bytes_before": bytes_before, "bytes_after": path.stat().st_size,
            "storage_version_before": storage_before, "storage_version_after": storage_after,
            "tables": len(counts), "rows": sum(counts.values())}
