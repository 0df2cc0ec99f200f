"""The read-only query surface: `fleetphysics sql`, the dashboard, `analyze`.

Every query opens the file read-only with file access, extensions and the temporary
directory off, a memory limit and a thread count (warehouse/connection.py), passes the
statement check (warehouse/sql_guard.py: one SELECT, or an EXPLAIN of one), returns at most
``max_rows`` rows and ``max_bytes`` bytes, and is interrupted after ``timeout_s`` or as soon
as ``cancelled()`` says so. A write or a file access is refused with
:class:`agents.errors.ReadOnlyViolation`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Callable

import duckdb
import pandas as pd
import pyarrow as pa

from agents.errors import ReadOnlyViolation, ValidationError, WarehouseError

from .connection import ENV_READ_MEMORY_LIMIT, READER_LOCK_TIMEOUT_S, connect_readonly
from .sql_guard import check_statement

DEFAULT_MAX_ROWS = 10_000
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BYTES = 64 * 2**20  # Arrow bytes of a result
_WATCH_PERIOD_S = 0.1  # how often the watchdog asks cancelled()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refusal(exc: BaseException) -> ReadOnlyViolation | None:
    """A ReadOnlyViolation for DuckDB's refusals of writes and file access, else None."""
    text = str(exc)
    if isinstance(exc, duckdb.PermissionException) or "disabled by configuration" in text:
        return ReadOnlyViolation(
            f"sql: file and network access is disabled on the read-only surface ({_first_line(exc)}); "
            "query the warehouse's tables and views only"
        )
    if "read-only mode" in text or "configuration has been locked" in text:
        return ReadOnlyViolation(
            f"sql: the warehouse is open read-only ({_first_line(exc)}); only SELECT is allowed here: "
            "write through `fleetphysics ingest` or `fleetphysics import`"
        )
    return None


class Watchdog:
    """Interrupts a connection's query at a deadline, or when ``cancelled()`` turns true.

    One thread per query that wakes every 0.1 s; ``reason`` is None, "time" or "cancelled".
    The deadline covers whatever runs while the watchdog is open: execution, fetching and,
    through :meth:`check`, the Python work between batches.
    """

    def __init__(self, con, deadline: float, cancelled: Callable[[], bool] | None = None,
                 timeout_s: float | None = None) -> None:
        self.con, self.deadline, self.cancelled, self.timeout_s = con, deadline, cancelled, timeout_s
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fleetphysics-query-watchdog", daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= self.deadline:
                self.reason = "time"
            elif self.cancelled is not None and self.cancelled():
                self.reason = "cancelled"
            if self.reason:
                self.con.interrupt()
                return
            self._stop.wait(min(_WATCH_PERIOD_S, self.deadline - now))

    def __enter__(self) -> "Watchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        """Raise the limit's error when the watchdog has fired (or the deadline passed)."""
        if self.reason is None and time.monotonic() >= self.deadline:
            self.reason = "time"
        if self.reason:
            raise self.error()

    def error(self) -> WarehouseError:
        """The one-line error of the limit that fired."""
        if self.reason == "cancelled":
            return WarehouseError("sql: the query was cancelled before it finished (its session ended "
                                  "or it was stopped); run it again")
        limit = f" of {self.timeout_s:g} s" if self.timeout_s else ""
        return WarehouseError(f"sql: the query ran past its time limit{limit} (execution, fetching and "
                              "formatting) and was stopped; narrow it (WHERE, LIMIT) or raise the time limit (--timeout-s)")


def check_limits(max_rows: int, timeout_s: float, max_bytes: int) -> None:
    """ValidationError unless every limit is a finite number above zero (0, -1, nan and inf
    would switch a limit off)."""
    for name, value in (("--max-rows", max_rows), ("--timeout-s", timeout_s), ("--max-bytes", max_bytes)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValidationError(f"sql: {name} is {value!r}; pass a finite number above zero")


def _memory_error(exc: BaseException) -> WarehouseError:
    return WarehouseError(
        f"sql: the query needs more memory than a reader may use ({_first_line(exc)}); narrow it "
        f"(WHERE, LIMIT, fewer columns) or raise ${ENV_READ_MEMORY_LIMIT} (e.g. 4GB)")


def _is_memory_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.OutOfMemoryException) or "Out of Memory Error" in str(exc)


def fetch_arrow(con, sql: str, params=None) -> pa.Table:
    """The whole result of a trusted (internal) query as an Arrow table; a result past the
    reader's memory limit is one line naming the setting that raises it."""
    try:
        relation = con.sql(sql, params=params or None)
        return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    except (duckdb.Error, OSError) as exc:
        if _is_memory_error(exc):
            raise _memory_error(exc) from exc
        raise


def to_frame(table: pa.Table) -> pd.DataFrame:
    """``table`` as a DataFrame, DECIMAL columns as float64.

    power_trace keeps its sensor columns as DECIMAL (migration 007); pandas would hold those
    as Python Decimal objects, which ``to_json`` writes as strings and plots cannot scale.
    """
    decimal = [i for i, f in enumerate(table.schema) if pa.types.is_decimal(f.type)]
    for i in decimal:
        table = table.set_column(i, table.field(i).name, table.column(i).cast(pa.float64()))
    return table.to_pandas()


def run_readonly(con, sql: str, params=None, max_rows: int = DEFAULT_MAX_ROWS,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_BYTES,
                 cancelled: Callable[[], bool] | None = None,
                 deadline: float | None = None) -> tuple[pa.Table, bool]:
    """Run one SELECT on a read-only connection; return (at most max_rows rows, truncated).

    The statement is checked before it runs (:func:`warehouse.sql_guard.check_statement`);
    DuckDB's read-only mode and disabled file access refuse anything that gets past it. A
    watchdog interrupts the query at ``deadline`` (time.monotonic(); default now +
    ``timeout_s``) or when ``cancelled()`` is true; a result over ``max_bytes`` stops with
    an error rather than being held in memory.
    """
    check_limits(max_rows, timeout_s, max_bytes)
    check_statement(con, sql)
    deadline = time.monotonic() + timeout_s if deadline is None else deadline
    with Watchdog(con, deadline, cancelled, timeout_s) as watchdog:
        try:
            relation = con.sql(sql, params=params or None)
            reader = relation.to_arrow_reader(min(max_rows + 1, 100_000))
            batches, rows, nbytes = [], 0, 0
            for batch in reader:
                watchdog.check()
                batches.append(batch)
                rows += batch.num_rows
                nbytes += batch.nbytes
                if nbytes > max_bytes:
                    raise WarehouseError(
                        f"sql: the result passed its size limit of {max_bytes:,} bytes after {rows:,} rows; "
                        "select fewer columns or rows, or raise the limit (--max-bytes)")
                if rows > max_rows:
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema)
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            # While batches are fetched, DuckDB's errors reach us through Arrow's reader as
            # OSError / ArrowException carrying DuckDB's text.
            if watchdog.reason or isinstance(exc, duckdb.InterruptException):
                raise watchdog.error() from exc
            if _is_memory_error(exc):
                raise _memory_error(exc) from exc
            refusal = _refusal(exc)
            if refusal is not None:
                raise refusal from exc
            raise ValidationError(f"sql: {_first_line(exc)}; check table and column names "
                                  "(SHOW TABLES, DESCRIBE v_fleet_latest)") from exc
        watchdog.check()
    truncated = table.num_rows > max_rows
    return table.slice(0, max_rows), truncated


def query(path: str | os.PathLike, sql: str, params=None, max_rows: int = DEFAULT_MAX_ROWS,
          timeout_s: float = DEFAULT_TIMEOUT_S, lock_timeout_s: float = READER_LOCK_TIMEOUT_S,
          max_bytes: int = DEFAULT_MAX_BYTES, cancelled: Callable[[], bool] | None = None,
          deadline: float | None = None) -> pd.DataFrame:
    """Run one read-only SELECT on the warehouse at ``path`` and return a DataFrame.

    Opens the file for this query only (retrying while a writer holds it, up to
    ``lock_timeout_s``). At most ``max_rows`` rows and ``max_bytes`` bytes come back;
    ``df.attrs["truncated"]`` says whether more rows were there. The time limit runs from
    ``deadline`` (default: when the file is open, plus ``timeout_s``) and covers the
    conversion to a DataFrame too. Raises ReadOnlyViolation for writes and file access,
    WarehouseError for a missing file, a held lock or a limit passed, ValidationError for
    bad SQL.
    """
    check_limits(max_rows, timeout_s, max_bytes)
    con = connect_readonly(path, timeout_s=lock_timeout_s)
    deadline = time.monotonic() + timeout_s if deadline is None else deadline
    try:
        table, truncated = run_readonly(con, sql, params, max_rows=max_rows, timeout_s=timeout_s,
                                        max_bytes=max_bytes, cancelled=cancelled, deadline=deadline)
    finally:
        con.close()
    df = to_frame(table)
    if time.monotonic() >= deadline:
        raise Watchdog(None, deadline, timeout_s=timeout_s).error()
    df.attrs["truncated"] = truncated
    df.attrs["max_rows"] = max_rows
    return df
