"""The statement check of the read-only surface: which SQL texts may run at all.

Read-only mode and disabled file access (warehouse/connection.py) stop most writes inside
DuckDB, but not all: ``EXPLAIN ANALYZE`` runs the statement it wraps (a COPY into the
temporary directory, a CREATE TEMP), and DuckDB's parser reports
``WITH x AS (DELETE ... RETURNING *) SELECT ...`` as a SELECT. So the rule is stated on
the parsed statement and its tokens, not on its first word:

* exactly one statement, of type SELECT (DESCRIBE, SHOW, SUMMARIZE and FROM-first queries
  are SELECTs to DuckDB), or an EXPLAIN [ANALYZE] [(options)] that wraps exactly one SELECT;
* no keyword that modifies data or the database anywhere in it (a data-modifying CTE);
* none of the metadata functions that show file-system paths or settings
  (``duckdb_databases()``, ``duckdb_settings()``, ``current_setting()``, ...), nor
  ``query()`` / ``query_table()``, which would run a SQL text this check cannot see.
"""

from __future__ import annotations

import duckdb

from agents.errors import ReadOnlyViolation, ValidationError

# Keywords that write or change the database; none of them has a place in a read query.
WRITE_KEYWORDS = frozenset({
    "alter", "attach", "call", "checkpoint", "copy", "create", "delete", "detach", "drop", "export",
    "import", "insert", "install", "load", "merge", "pragma", "reset", "set", "truncate", "update",
    "use", "vacuum",
})

# Functions (and DuckDB's views of the same name) that show the paths of the database file,
# its temporary directory, extensions, secrets or the settings, or that run a SQL string.
HIDDEN_FUNCTIONS = frozenset({
    "current_setting", "duckdb_databases", "duckdb_extension_repositories", "duckdb_extensions",
    "duckdb_external_file_cache", "duckdb_external_resources", "duckdb_log_contexts", "duckdb_logs",
    "duckdb_logs_parsed", "duckdb_secrets", "duckdb_settings", "duckdb_temporary_files",
    "duckdb_variables", "getenv", "getvariable", "pragma_database_list", "query", "query_table",
    "which_secret",
})

_WRITE_HINT = "write through `fleetphysics ingest` or `fleetphysics import`"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tokens(sql: str) -> list[tuple[int, str, str]]:
    """(start, text, kind) of each token, comments left out; kind is DuckDB's token type name."""
    positions = duckdb.tokenize(sql)
    out = []
    for i, (start, kind) in enumerate(positions):
        end = positions[i + 1][0] if i + 1 < len(positions) else len(sql)
        if kind.name != "comment":
            out.append((start, sql[start:end].strip(), kind.name))
    return out


def _name(token: str) -> str:
    """An identifier as DuckDB resolves it: unquoted and lower case."""
    if len(token) >= 2 and token[0] == token[-1] == '"':
        token = token[1:-1].replace('""', '"')
    return token.lower()


def _extract(con, sql: str) -> list:
    try:
        return con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ValidationError(f"sql: cannot parse the query ({_first_line(exc)}); fix the SQL") from exc


def _explained(tokens: list[tuple[int, str, str]], sql: str) -> str:
    """The text of the statement an EXPLAIN wraps (after ANALYZE and an options list)."""
    texts = [text.lower() for _, text, _ in tokens]
    i = 1 if texts[:1] == ["explain"] else 0
    if texts[i:i + 1] == ["analyze"]:
        i += 1
    if i < len(texts) and texts[i].startswith("("):
        depth = 0
        while i < len(texts):
            depth += texts[i].count("(") - texts[i].count(")")
            i += 1
            if depth <= 0:
                break
    return sql[tokens[i][0]:] if i < len(tokens) else ""


def check_statement(con, sql: str) -> str:
    """Refuse anything but one read query; return its statement type (SELECT or EXPLAIN).

    Raises ValidationError for SQL that does not parse, ReadOnlyViolation for a write, a
    second statement, an EXPLAIN of anything but a SELECT, or a hidden metadata function.
    """
    statements = _extract(con, sql)
    if len(statements) != 1:
        raise ReadOnlyViolation(
            f"sql: {len(statements)} statements given; the read-only surface runs exactly one SELECT"
        )
    kind = statements[0].type.name
    tokens = _tokens(statements[0].query)
    if kind == "EXPLAIN":
        inner = _explained(tokens, statements[0].query)
        inner_kinds = [s.type.name for s in _extract(con, inner)] if inner else []
        if inner_kinds != ["SELECT"]:
            wrapped = inner_kinds[0] if len(inner_kinds) == 1 else f"{len(inner_kinds)} statements"
            raise ReadOnlyViolation(
                f"sql: EXPLAIN of {wrapped} is refused; EXPLAIN [ANALYZE] may only wrap one SELECT"
            )
    elif kind != "SELECT":
        raise ReadOnlyViolation(f"sql: {kind} statements are refused; the read-only surface runs SELECT only: "
                                f"{_WRITE_HINT}")
    for _, text, token_kind in tokens:
        if token_kind == "keyword" and text.lower() in WRITE_KEYWORDS:
            raise ReadOnlyViolation(
                f"sql: {text.upper()} inside a query is refused; the read-only surface runs SELECT only "
                f'(a column named {text.lower()} must be quoted: "{text.lower()}"); {_WRITE_HINT}'
            )
        if token_kind == "identifier" and _name(text) in HIDDEN_FUNCTIONS:
            raise ReadOnlyViolation(
                f"sql: {_name(text)} is not available on the read-only surface (it shows file paths, "
                "settings or runs a SQL string); query the warehouse's tables and views"
            )
    return kind
