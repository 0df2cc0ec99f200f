"""A query result as text (table, CSV or JSON), safe for the terminal and the spreadsheet,
written in chunks so the caller's time limit covers the formatting too.

Table cells and column names escape control characters (``agents.safe_text.terminal_safe``);
CSV text cells that a spreadsheet would run as a formula get a leading ``'``
(``spreadsheet_safe``). JSON escapes control characters by itself and is left as is.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import pandas as pd

from agents.safe_text import spreadsheet_safe, terminal_safe

CHUNK_ROWS = 2_000


def _no_check() -> None:
    return None


def _chunks(n: int) -> range:
    return range(0, max(n, 1), CHUNK_ROWS)


def _is_text(series: pd.Series) -> bool:
    return series.dtype == object or pd.api.types.is_string_dtype(series.dtype)


def csv_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and column names cannot start a spreadsheet formula."""
    out = df.copy()
    for name in out.columns:
        if _is_text(out[name]):
            out[name] = out[name].map(lambda v: spreadsheet_safe(v) if isinstance(v, str) else v)
    out.columns = [spreadsheet_safe(c) for c in out.columns]
    return out


def csv_chunks(df: pd.DataFrame, check: Callable[[], None] = _no_check) -> Iterator[str]:
    """``df`` as CSV (header first), formula-safe, ``check()`` called before each chunk."""
    safe = csv_safe_frame(df)
    for start in _chunks(len(safe)):
        check()
        yield safe.iloc[start:start + CHUNK_ROWS].to_csv(index=False, header=start == 0)


def json_chunks(df: pd.DataFrame, check: Callable[[], None] = _no_check) -> Iterator[str]:
    """``df`` as one JSON array of records, ``check()`` called before each chunk."""
    yield "["
    for start in _chunks(len(df)):
        check()
        part = df.iloc[start:start + CHUNK_ROWS].to_json(orient="records", date_format="iso")
        if part != "[]":
            yield ("," if start else "") + part[1:-1]
    yield "]\n"


def _cell(value) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return "NULL"
    if isinstance(value, float):
        return "NULL" if math.isnan(value) else f"{value:.10g}"
    return terminal_safe(str(value))


def table_chunks(df: pd.DataFrame, check: Callable[[], None] = _no_check) -> Iterator[str]:
    """``df`` as an aligned text table (numbers right, text left), control characters
    escaped, ``check()`` called before each chunk."""
    if not len(df.columns):
        yield "(no columns)\n"
        return
    names = [terminal_safe(str(c)) for c in df.columns]
    right = [pd.api.types.is_numeric_dtype(df[c].dtype) and not pd.api.types.is_bool_dtype(df[c].dtype)
             for c in df.columns]
    columns: list[list[str]] = [[] for _ in names]
    for start in _chunks(len(df)):
        check()
        part = df.iloc[start:start + CHUNK_ROWS]
        for i in range(len(names)):
            columns[i].extend(_cell(v) for v in part.iloc[:, i].tolist())
    widths = [max([len(n), *map(len, col)]) for n, col in zip(names, columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip() + "\n"

    yield line(names)
    for start in range(0, len(df), CHUNK_ROWS):
        check()
        yield "".join(line([col[j] for col in columns]) for j in range(start, min(start + CHUNK_ROWS, len(df))))
