"""Traces that outgrow one DuckDB file: expose a folder of artifact runs as views.

A fleet's artifact dirs (``<root>/<run_id>/<host>/<device_uid>/power_trace/part-*.parquet``)
can stay on shared storage and be queried in place: :func:`attach_parquet_runs` creates
views that glob the Parquet files (hive partitioning off: the folder names are plain
names, not ``key=value``) and take run_id, host and device_uid from each file's path.
The warehouse file then keeps runs, devices, fingerprints and the typed results, and the
bulk of the trace stays in Parquet.

These views read files, so they need a connection with external access: open one with
:func:`warehouse.connection.connect_writer` (or plain ``duckdb.connect``) as an admin.
The read-only surface (`fleetphysics sql`, the dashboard) has file access disabled and
refuses them with ReadOnlyViolation.
"""

from __future__ import annotations

import os
from pathlib import Path

from agents.errors import ConfigError

from .sql_text import sql_literal
from .validate import safe_name

_PATH_PARTS = r"([^/\\]+)[/\\]([^/\\]+)[/\\]([^/\\]+)[/\\]"


def attach_parquet_runs(con, root: str | os.PathLike, prefix: str = "parquet", temporary: bool = True) -> list[str]:
    """Create views ``<prefix>_power_trace`` and ``<prefix>_markers`` over artifact dirs under ``root``.

    ``<prefix>_power_trace`` has run_id, host, device_uid and every trace column of
    ``root/**/power_trace/*.parquet``; ``<prefix>_markers`` the same for
    ``root/**/markers.parquet``. Views are TEMPORARY (this connection only) unless
    ``temporary`` is False, in which case the warehouse file keeps them with ``root``
    written into them. Returns the names of the views created.
    """
    base = Path(root)
    if not base.is_dir():
        raise ConfigError(f"{base}: not a folder; pass the root that holds <run_id>/<host>/<device_uid>/ artifact dirs")
    prefix = safe_name(prefix, "attach_parquet_runs", "prefix").replace(".", "_").replace("-", "_")
    kind = "TEMPORARY VIEW" if temporary else "VIEW"
    root_text = base.resolve().as_posix().rstrip("/")
    views = []
    sources = {
        "power_trace": (f"{root_text}/**/power_trace/*.parquet", _PATH_PARTS + r"power_trace[/\\][^/\\]+$"),
        "markers": (f"{root_text}/**/markers.parquet", _PATH_PARTS + r"markers\.parquet$"),
    }
    for name, (pattern, regex) in sources.items():
        if not any(base.glob(pattern[len(root_text) + 1:])):
            continue
        view = f"{prefix}_{name}"
        con.execute(f"""
            CREATE OR REPLACE {kind} {view} AS
            SELECT
                regexp_extract(filename, {sql_literal(regex)}, 1) AS run_id,
                regexp_extract(filename, {sql_literal(regex)}, 2) AS host,
                regexp_extract(filename, {sql_literal(regex)}, 3) AS device_uid,
                * EXCLUDE (filename)
            FROM read_parquet({sql_literal(pattern)}, hive_partitioning = false, union_by_name = true,
                              filename = true)
        """)
        views.append(view)
    if not views:
        raise ConfigError(f"{base}: no power_trace/*.parquet or markers.parquet below it; pass the artifact root")
    return views
