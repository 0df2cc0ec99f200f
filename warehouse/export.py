"""Export one run x device from the warehouse back to a TR122 pack.

The pack (power_trace.csv, generation_events.jsonl, baseline.json, run_metadata.json) is
written into a temporary sibling folder and renamed into place, so ``--out`` either
holds a whole pack or nothing. Reads go through the read-only connection.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.csv as pacsv

from agents.errors import ValidationError

from .connection import READER_LOCK_TIMEOUT_S, connect_readonly
from .query import fetch_arrow
from .importers.tr122 import BASELINE_FILE, EVENTS_FILE, METADATA_FILE, TR122_TRACE_COLUMNS, TRACE_FILE

_EVENT_COLUMNS = {  # TR122 field -> SQL over the events table
    "event_id": "event_id", "phase": "phase", "t_start_ns": "t_start_ns", "t_end_ns": "t_end_ns",
    "input_tokens": "input_tokens", "output_tokens": "output_tokens", "batch_size": "batch_size",
    "tokens_per_second": "tokens_per_second",
    "energy_joules": "coalesce(energy_integrated_j, energy_counter_j)",
    "operational_joules": "energy_net_j", "energy_quality": "energy_quality", "gap_fraction": "gap_fraction",
}
_BASELINE_COLUMNS = ("field", "idle_robust_w", "idle_sem_w", "idle_mean_w", "idle_median_w", "idle_std_w",
                     "floor_w", "floor_fraction", "fake_idle", "n_samples", "window_s", "quality")


def _records(con, sql: str, params: list) -> list[dict]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _pick_device(con, run_id: str, device_uid: str | None) -> dict:
    rows = _records(con, """
        SELECT rd.*, f.gpu_name, f.comparability_key, f.fields_json
        FROM run_devices rd LEFT JOIN fingerprints f ON f.fingerprint = rd.fingerprint
        WHERE rd.run_id = ? ORDER BY rd.device_uid""", [run_id])
    if not rows:
        raise ValidationError(f"export: run {run_id!r} is not in the warehouse; list runs with "
                              "`fleetphysics sql \"SELECT run_id, device_uid FROM run_devices\"`")
    if device_uid is None:
        if len(rows) > 1:
            names = ", ".join(r["device_uid"] for r in rows[:5])
            raise ValidationError(f"export: run {run_id} has {len(rows)} devices ({names}); a TR122 pack holds one: "
                                  "pass --device DEVICE_UID")
        return rows[0]
    for row in rows:
        if row["device_uid"] == device_uid:
            return row
    raise ValidationError(f"export: run {run_id} has no device {device_uid!r}; pass one of "
                          f"{', '.join(r['device_uid'] for r in rows[:5])}")


def export_tr122(warehouse, run_id: str, out_dir, device_uid: str | None = None,
                 lock_timeout_s: float = READER_LOCK_TIMEOUT_S) -> dict:
    """Write run ``run_id`` (one device) as a TR122 pack into ``out_dir``; return what was written.

    ``out_dir`` must not exist or be an empty folder. Returns ``{"run_id", "device_uid",
    "out", "files", "rows"}``.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValidationError(f"{out}: already exists and is not an empty folder; pass a new --out folder")
    con = connect_readonly(warehouse, timeout_s=lock_timeout_s)
    try:
        device = _pick_device(con, run_id, device_uid)
        key = device["trace_key"]
        trace = fetch_arrow(
            con, f"SELECT {', '.join(TR122_TRACE_COLUMNS)} FROM v_power_trace_values WHERE trace_key = ? ORDER BY t_ns", [key]
        )
        events = _records(con, f"""
            SELECT {', '.join(f'{sql} AS {name}' for name, sql in _EVENT_COLUMNS.items())}
            FROM events WHERE run_id = ? AND device_uid = ? ORDER BY t_start_ns, event_id""",
            [run_id, device["device_uid"]])
        baselines = _records(con, f"""
            SELECT {', '.join(_BASELINE_COLUMNS)} FROM baselines WHERE run_id = ? AND device_uid = ?
            ORDER BY (field = 'power_w') DESC, field LIMIT 1""", [run_id, device["device_uid"]])
    finally:
        con.close()

    baseline = baselines[0] if baselines else {name: None for name in _BASELINE_COLUMNS}
    baseline["idle_w"] = baseline.get("idle_robust_w")
    fields = json.loads(device["fields_json"]) if device.get("fields_json") else {}
    metadata = {
        "schema_version": 1, "run_id": run_id, "host": device["host"], "device_uid": device["device_uid"],
        "device_uuid": device["device_uuid"], "gpu_name": device["gpu_name"],
        "fingerprint": device["fingerprint"], "comparability_key": device["comparability_key"],
        "fingerprint_fields": fields, "simulated": device["simulated"], "run_state": device["run_state"],
        "end_reason": device["end_reason"], "started_wall_ns": device["started_wall_ns"],
        "ended_wall_ns": device["ended_wall_ns"], "clock": device["clock"], "source": device["source"],
        "trace_rows": trace.num_rows, "exported_by": "fleetphysics warehouse export",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with open(staging / TRACE_FILE, "wb") as f:
            f.write((",".join(trace.column_names) + "\n").encode())  # pyarrow would quote the names
            pacsv.write_csv(trace, f, pacsv.WriteOptions(include_header=False))
        with open(staging / EVENTS_FILE, "w", encoding="utf-8") as f:
            for event in events:
                f.write(json.dumps(event, sort_keys=False, default=str) + "\n")
        (staging / BASELINE_FILE).write_text(json.dumps(baseline, indent=2, default=str) + "\n", "utf-8")
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str) + "\n", "utf-8")
        for path in staging.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = [TRACE_FILE, EVENTS_FILE, BASELINE_FILE, METADATA_FILE]
    return {"run_id": run_id, "device_uid": device["device_uid"], "out": str(out), "files": files,
            "rows": trace.num_rows}
