"""Versioned schema: ``warehouse/schema/NNN_name.sql`` applied in order on open.

Each file is one migration; its number is the schema version it brings the warehouse to.
A migration runs in its own transaction together with its ``schema_version`` row, so a
warehouse is always at exactly one version. Files are never edited once released: a change
is a new file (``004_...sql``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import resources

from agents.errors import WarehouseError, first_line

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One schema file: the version it brings the warehouse to, its name and SQL."""

    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The migrations shipped with this package, in version order (1, 2, ... with no gap)."""
    found = []
    for entry in resources.files("warehouse").joinpath("schema").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise WarehouseError(
                f"warehouse/schema: migration {expected:03d} is missing (found {migration.version:03d}_"
                f"{migration.name}.sql); restore it: versions must run 1, 2, 3 without a gap"
            )
    return found


def latest_version() -> int:
    """The schema version this code writes and reads."""
    return available_migrations()[-1].version


def current_version(con) -> int:
    """The warehouse's schema version: 0 for an empty database."""
    has_table = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_name = 'schema_version'"
    ).fetchall()[0][0]
    if not has_table:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]


def check_version(con, label: str) -> int:
    """The current version, or a WarehouseError when the file is newer than this code."""
    version = current_version(con)
    latest = latest_version()
    if version > latest:
        raise WarehouseError(
            f"{label}: schema version {version} is newer than this fleetphysics knows "
            f"(up to {latest}); upgrade fleetphysics to read it"
        )
    return version


def migrate(con, label: str = "warehouse", target: int | None = None) -> list[int]:
    """Apply the pending migrations up to ``target`` (default: latest); return those applied."""
    version = check_version(con, label)
    pending = [m for m in available_migrations()
               if version < m.version and (target is None or m.version <= target)]
    if version and pending:
        # A rebuild (005 and 006 copy power_trace) takes as long as rewriting the trace once: say so.
        print(f"fleetphysics: upgrading {label} from schema version {version} to {pending[-1].version} "
              f"({', '.join(f'{m.version:03d}_{m.name}' for m in pending)}); a large trace takes a while",
              file=sys.stderr, flush=True)
    applied = []
    for migration in pending:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO schema_version (version, name) VALUES (?, ?)",
                [migration.version, migration.name],
            )
            con.execute("COMMIT")
        except Exception as exc:
            con.execute("ROLLBACK")
            raise WarehouseError(
                f"{label}: migration {migration.version:03d}_{migration.name}.sql failed "
                f"({first_line(exc)}); the warehouse stays at version {version}: report this bug"
            ) from exc
        applied.append(migration.version)
        version = migration.version
    return applied
