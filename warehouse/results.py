"""Store one experiment's result for a run x device already in the warehouse.

``fleetphysics analyze`` computes figures from a stored trace (an imported recording, say)
and keeps them the way a suite run's ingest does: the raw JSON in ``experiment_results``
and its typed rows (``warehouse.figures``) in the experiment's tables, replacing what that
experiment had stored for the run x device before, in one transaction. The trace and the
other experiments are left alone.
"""

from __future__ import annotations

import duckdb

from agents.errors import ValidationError

from . import figures as _figures
from .connection import WRITER_LOCK_TIMEOUT_S, writer
from .ingest import _insert_rows, result_row, transaction
from .validate import check_experiment


def store_experiment(warehouse, run_id: str, device_uid: str, doc: dict,
                     lock_timeout_s: float = WRITER_LOCK_TIMEOUT_S) -> dict:
    """Replace experiment ``doc["experiment"]`` of (run_id, device_uid) with ``doc``.

    Returns ``{"run_id", "device_uid", "experiment", "tables": {table: rows}}``. Raises
    ValidationError when the run x device is not in the warehouse or the document is not
    an experiment report; the warehouse is unchanged on any error.
    """
    label = f"analyze {run_id}/{device_uid}"
    report = check_experiment(label, doc)
    name = report.experiment
    rows = _figures.typed_rows(name, report)
    tables = _figures.TABLES.get(name, ())
    with writer(warehouse, timeout_s=lock_timeout_s) as con:
        found = con.execute("SELECT count(*) FROM run_devices WHERE run_id = ? AND device_uid = ?",
                            [run_id, device_uid]).fetchone()[0]
        if not found:
            raise ValidationError(f"{label}: run x device is not in the warehouse; import or ingest it first")
        try:
            with transaction(con):
                con.execute("DELETE FROM experiment_results WHERE run_id = ? AND device_uid = ? AND experiment = ?",
                            [run_id, device_uid, name])
                for table in tables:
                    con.execute(f"DELETE FROM {table} WHERE run_id = ? AND device_uid = ?", [run_id, device_uid])
                _insert_rows(con, "experiment_results", [result_row(name, report)], run_id, device_uid)
                for table, table_rows in rows.items():
                    _insert_rows(con, table, table_rows, run_id, device_uid)
        except duckdb.ConstraintException as exc:
            raise ValidationError(f"{label}: {str(exc).splitlines()[0]}; the figures break a table's "
                                  "constraint") from exc
    return {"run_id": run_id, "device_uid": device_uid, "experiment": name,
            "tables": {table: len(table_rows) for table, table_rows in rows.items()}}
