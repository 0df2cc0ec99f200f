"""Quoting for the few SQL texts that cannot take a bound parameter (ATTACH paths, view
bodies, constants inlined so that a scan can skip row groups)."""

from __future__ import annotations


def sql_literal(value) -> str:
    """``value`` as a single-quoted SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
