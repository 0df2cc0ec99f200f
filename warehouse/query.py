"""The read-only query surface: `fleetphysics sql`, the dashboard, `analyze`.

Every query opens the file read-only with file access and extensions off (so no
read_csv, read_parquet, COPY, ATTACH or INSTALL), accepts one SELECT (or EXPLAIN)
statement, returns at most ``max_rows`` rows and is interrupted after ``timeout_s``.
A write or a file access is refused with :class:`agents.errors.ReadOnlyViolation`.
"""

from __future__ import annotations

import os
import threading

import duckdb
import pandas as pd
import pyarrow as pa

from agents.errors import ReadOnlyViolation, ValidationError, WarehouseError

from .connection import READER_LOCK_TIMEOUT_S, connect_readonly

DEFAULT_MAX_ROWS = 10_000
DEFAULT_TIMEOUT_S = 30.0
_ALLOWED = {"SELECT", "EXPLAIN"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _statement_kind(con, sql: str) -> str:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ValidationError(f"sql: cannot parse the query ({_first_line(exc)}); fix the SQL") from exc
    if len(statements) != 1:
        raise ReadOnlyViolation(
            f"sql: {len(statements)} statements given; the read-only surface runs exactly one SELECT"
        )
    return statements[0].type.name


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


def fetch_arrow(con, sql: str, params=None) -> pa.Table:
    """The whole result of a trusted (internal) query as an Arrow table."""
    relation = con.sql(sql, params=params or None)
    return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()


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
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[pa.Table, bool]:
    """Run one SELECT on a read-only connection; return (at most max_rows rows, truncated).

    The statement type is checked before it runs; DuckDB's read-only mode and disabled file
    access refuse anything that gets past that check. A timer thread interrupts the query
    after ``timeout_s``.
    """
    if max_rows < 0:
        raise ValidationError(f"sql: --max-rows is {max_rows}; pass a number >= 0")
    kind = _statement_kind(con, sql)
    if kind not in _ALLOWED:
        raise ReadOnlyViolation(
            f"sql: {kind} statements are refused; the read-only surface runs SELECT only: "
            "write through `fleetphysics ingest` or `fleetphysics import`"
        )
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(timeout_s, interrupt)
    timer.daemon = True
    timer.start()
    try:
        batch_rows = min(max(max_rows, 1) + 1, 100_000)
        relation = con.sql(sql, params=params or None)
        reader = relation.to_arrow_reader(batch_rows)
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > max_rows:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.Error as exc:
        if fired.is_set() or isinstance(exc, duckdb.InterruptException):
            raise WarehouseError(
                f"sql: the query ran past its {timeout_s:g} s time limit and was stopped; "
                "narrow it (WHERE, LIMIT) or raise --timeout-s"
            ) from exc
        refusal = _refusal(exc)
        if refusal is not None:
            raise refusal from exc
        raise ValidationError(f"sql: {_first_line(exc)}; check table and column names (SHOW TABLES, DESCRIBE v_fleet_latest)") from exc
    finally:
        timer.cancel()
    truncated = table.num_rows > max_rows
    return table.slice(0, max_rows), truncated


def query(path: str | os.PathLike, sql: str, params=None, max_rows: int = DEFAULT_MAX_ROWS,
          timeout_s: float = DEFAULT_TIMEOUT_S, lock_timeout_s: float = READER_LOCK_TIMEOUT_S) -> pd.DataFrame:
    """Run one read-only SELECT on the warehouse at ``path`` and return a DataFrame.

    Opens the file for this query only (retrying while a writer holds it). At most
    ``max_rows`` rows come back; ``df.attrs["truncated"]`` says whether more were there.
    Raises ReadOnlyViolation for writes and file access, WarehouseError for a missing
    file, a held lock or a query past ``timeout_s``, ValidationError for bad SQL.
    """
    con = connect_readonly(path, timeout_s=lock_timeout_s)
    try:
        table, truncated = run_readonly(con, sql, params, max_rows=max_rows, timeout_s=timeout_s)
    finally:
        con.close()
    df = to_frame(table)
    df.attrs["truncated"] = truncated
    df.attrs["max_rows"] = max_rows
    return df
