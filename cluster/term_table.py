"""Terminal tables that fit the terminal: columns are left out by priority, then what is
left folds long cells onto more lines; a cell is never cut to "…".

rich lays a table that is too wide out by shrinking every column and cutting each cell, so an
80-column terminal showed `GPU-8f2…` for every device. Here each column has a priority (0:
always shown, higher: left out sooner); the table keeps the columns whose natural width fits,
says which it left out in its caption, and folds the rest only when even the always-shown
columns are wider than the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Column:
    """A column: its header, its priority (0 is never left out; higher goes first) and
    how its cells align."""

    name: str
    priority: int = 0
    justify: str = "left"


def _table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], keep: list[int], caption: str | None):
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for i in keep:
        table.add_column(columns[i].name, justify=columns[i].justify, overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    return table


def _natural_width(console, table) -> int:
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(1_000_000), table).maximum


def fit_table(console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]],
              hint: str = "widen the terminal or pass --json"):
    """A rich Table of ``rows`` that fits ``console.width``: the lowest-priority columns (the
    rightmost first among equals) are left out until the rest fit, and the caption names them."""
    if any(len(row) != len(columns) for row in rows):
        raise ValueError("every row needs one cell per column")
    keep = list(range(len(columns)))
    droppable = sorted((i for i, c in enumerate(columns) if c.priority > 0),
                       key=lambda i: (columns[i].priority, i), reverse=True)
    left_out: list[int] = []
    while droppable and _natural_width(console, _table(title, columns, rows, keep, None)) > console.width:
        i = droppable.pop(0)
        keep.remove(i)
        left_out.append(i)
    caption = None
    if left_out:
        names = ", ".join(columns[i].name for i in sorted(left_out))
        caption = f"not shown, the terminal is {console.width} columns wide: {names} ({hint})"
    return _table(title, columns, rows, keep, caption)
