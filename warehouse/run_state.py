"""Run-level state: ``runs.run_state`` and ``run_hosts``, written by the fleet driver.

The driver ingests each device as its host finishes (``warehouse.ingest``); when the run
ends it records how the run as a whole ended and every host's state, validated first and
written in one transaction: a run's state and its hosts are never half there.
"""

from __future__ import annotations

import datetime as _dt

from warehouse.connection import WRITER_LOCK_TIMEOUT_S
from warehouse.ingest import transaction, with_writer
from warehouse.validate import fail, safe_name

RUN_STATES = ("completed", "partial", "aborted", "failed")
HOST_STATES = ("done", "lost", "failed", "skipped")
_REASON_CHARS = 2000


def validate_run_state(run_id: str, run_state: str, hosts: dict[str, dict]) -> list[list]:
    """The run_hosts rows of ``hosts`` (label -> record), or ValidationError naming the field."""
    where = f"run {run_id} (fleet driver)"
    safe_name(run_id, where, "run_id")
    if run_state not in RUN_STATES:
        raise fail(where, "field run_state", f"is {run_state!r}", f"use one of {', '.join(RUN_STATES)}")
    rows = []
    for host, rec in hosts.items():
        safe_name(host, where, "host")
        label = f"{where} host {host}"
        state, reason = rec.get("state"), rec.get("reason")
        if state not in HOST_STATES:
            raise fail(label, "field state", f"is {state!r}", f"use one of {', '.join(HOST_STATES)}")
        if state != "done" and not reason:
            raise fail(label, "field reason", f"is empty for a {state} host", "say why it did not finish")
        first, last = rec.get("first_seen_wall_ns"), rec.get("last_seen_wall_ns")
        for name, value in (("first_seen_wall_ns", first), ("last_seen_wall_ns", last)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise fail(label, f"field {name}", f"is {value!r}", "give wall-clock nanoseconds (time.time_ns())")
        if first is not None and last is not None and last < first:
            raise fail(label, "field last_seen_wall_ns", f"({last}) is before first_seen_wall_ns ({first})",
                       "record the first answer before the last")
        rows.append([run_id, host, rec.get("node_id"), rec.get("hostname"), state,
                     None if reason is None else str(reason)[:_REASON_CHARS], first, last])
    return rows


def record_run_state(con_or_path, run_id: str, run_state: str, hosts: dict[str, dict], *,
                     lock_timeout_s: float = WRITER_LOCK_TIMEOUT_S) -> dict:
    """Set ``runs.run_state`` (adding the run when no device of it was stored) and replace
    its ``run_hosts``, in one transaction. Returns ``{"run_id", "run_state", "hosts"}``."""
    rows = validate_run_state(run_id, run_state, hosts)

    def write(con):
        now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
        with transaction(con):
            con.execute(
                """INSERT INTO runs (run_id, schema_version, ingested_at, run_state) VALUES (?, 1, ?, ?)
                   ON CONFLICT (run_id) DO UPDATE SET run_state = excluded.run_state""", [run_id, now, run_state])
            con.execute("DELETE FROM run_hosts WHERE run_id = ?", [run_id])
            if rows:
                con.executemany("INSERT INTO run_hosts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return {"run_id": run_id, "run_state": run_state, "hosts": len(rows)}

    return with_writer(con_or_path, lock_timeout_s, write)
