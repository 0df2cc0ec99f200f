"""Export one run x device from the warehouse back to a TR122 pack.

The pack (power_trace.csv, generation_events.jsonl, baseline.json, run_metadata.json) is
written into a staging sibling folder ``.<out>.export-<pid>.tmp`` and renamed into place,
so ``--out`` either holds a whole pack or nothing. A staging folder left by an export that
was killed (its process is gone) is removed by the next export into the same parent
folder. The pack's folder and files get the usual modes (0777 and 0666 less the umask).
Reads go through the read-only connection.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pyarrow.csv as pacsv

from agents.errors import ValidationError, WarehouseError

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
_STAGING = re.compile(r"\.(?P<name>.+)\.export-(?P<pid>\d+)\.tmp")
_PACK_FILES = {TRACE_FILE, EVENTS_FILE, BASELINE_FILE, METADATA_FILE}
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def clean_stale_staging(parent: Path) -> list[str]:
    """Remove staging folders in ``parent`` left by exports whose process is gone; return them.

    Only folders named like a staging folder, holding nothing but pack files, are removed.
    """
    cleaned = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return cleaned
    for entry in entries:
        match = _STAGING.fullmatch(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir() or _alive(int(match.group("pid"))):
            continue
        try:
            if all(p.name in _PACK_FILES and p.is_file() and not p.is_symlink() for p in entry.iterdir()):
                shutil.rmtree(entry)
                cleaned.append(str(entry))
        except OSError:
            continue  # someone else's folder, or gone meanwhile: leave it
    return cleaned


def _check_out(out: Path) -> None:
    if out.is_symlink():
        raise ValidationError(f"{out}: is a symbolic link; pass a new folder path for --out, not a link")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValidationError(f"{out}: already exists and is not an empty folder; pass a new --out folder")


def export_tr122(warehouse, run_id: str, out_dir, device_uid: str | None = None,
                 lock_timeout_s: float = READER_LOCK_TIMEOUT_S) -> dict:
    """Write run ``run_id`` (one device) as a TR122 pack into ``out_dir``; return what was written.

    ``out_dir`` must not exist or be an empty folder (not a link). Returns ``{"run_id",
    "device_uid", "out", "files", "rows", "cleaned"}``, ``cleaned`` listing the staging
    folders of killed exports that were removed.
    """
    out = Path(out_dir)
    _check_out(out)
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
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidationError(f"{out.parent}: cannot create the folder ({exc.strerror}); pass an --out you may write") from exc
    cleaned = clean_stale_staging(out.parent)
    staging = out.parent / f".{out.name}.export-{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)  # this process's own, from an export that raised
    try:
        os.mkdir(staging)  # mode 0777 less the umask, as the pack's folder will have
    except OSError as exc:
        raise ValidationError(f"{out.parent}: cannot write the pack there ({exc.strerror}); pass an --out you may write") from exc
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
        _check_out(out)  # again: it may have changed while the pack was written
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise WarehouseError(f"{out}: writing the pack failed ({exc.strerror or exc}); nothing was left there: "
                             "check the disk and export again") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = [TRACE_FILE, EVENTS_FILE, BASELINE_FILE, METADATA_FILE]
    return {"run_id": run_id, "device_uid": device["device_uid"], "out": str(out), "files": files,
            "rows": trace.num_rows, "cleaned": cleaned}
