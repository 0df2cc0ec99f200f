"""Export one run x device from the warehouse back to a TR122 pack.

The pack (power_trace.csv, generation_events.jsonl, baseline.json, run_metadata.json) is
written into a staging sibling folder ``.<out>.export-<pid>.tmp`` and renamed into place,
so ``--out`` either holds a whole pack or nothing. A staging folder left by an export that
was killed (its process is gone) is removed by the next export into the same parent
folder. The pack's folder and files get the usual modes (0777 and 0666 less the umask).
Reads go through the read-only connection.

The files carry TR122's own keys (section 3), as the report writes them: events with
lower-case ``energy_quality`` and ``power_samples`` (rows of the trace with t_start_ns <=
t_ns <= t_end_ns), baseline.json with idle_watts_mean_robust, fake_idle_flag and the rest
(this project's keys beside them), run_metadata.json with run_state, end_reason, poller,
baseline and git.hash.
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
    "operational_joules": "energy_net_j", "energy_quality": "lower(energy_quality)", "gap_fraction": "gap_fraction",
    "power_samples": "(SELECT count(*) FROM power_trace p WHERE p.trace_key = ? "
                     "AND p.t_ns BETWEEN events.t_start_ns AND events.t_end_ns)",
}
# baseline.json: TR122's key -> the baseline figure it holds (section 3.3)
_TR122_BASELINE = {
    "idle_watts_mean": "idle_mean_w", "idle_watts_std": "idle_std_w", "idle_watts_mean_robust": "idle_robust_w",
    "floor_fraction": "floor_fraction", "idle_temp_c": "idle_temp_c", "fake_idle_flag": "fake_idle",
    "idle_gpu_util_p95": "util_p95", "idle_watts_min": "min_w", "idle_watts_max": "max_w",
}
# figures of the baseline experiment's JSON that the typed table does not hold (first key found)
_BASELINE_FIGURES = {"idle_temp_c": ("idle_temp_c",), "util_p95": ("util_p95", "idle_gpu_util_p95"),
                     "min_w": ("min_w", "idle_watts_min"), "max_w": ("max_w", "idle_watts_max")}
_STAGING = re.compile(r"\.(?P<name>.+)\.export-(?P<pid>\d+)\.tmp")
_PACK_FILES = {TRACE_FILE, EVENTS_FILE, BASELINE_FILE, METADATA_FILE}
_BASELINE_COLUMNS = ("field", "idle_robust_w", "idle_sem_w", "idle_mean_w", "idle_median_w", "idle_std_w",
                     "floor_w", "floor_fraction", "fake_idle", "n_samples", "window_s", "quality")


def _records(con, sql: str, params: list) -> list[dict]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _baseline_figures(payload_json: str | None, field: str | None) -> dict:
    """idle_temp_c, util_p95, min_w and max_w from the baseline experiment's JSON (the
    field's own figures when the report has one per field)."""
    try:
        doc = json.loads(payload_json) if payload_json else {}
    except ValueError:
        return {}
    figures = doc.get("figures") if isinstance(doc, dict) and isinstance(doc.get("figures"), dict) else {}
    per_field = figures.get("fields")
    if isinstance(per_field, dict) and isinstance(per_field.get(field or "power_w"), dict):
        figures = per_field[field or "power_w"]
    out = {}
    for name, keys in _BASELINE_FIGURES.items():
        out[name] = next((figures[k] for k in keys if isinstance(figures.get(k), (int, float))
                          and not isinstance(figures.get(k), bool)), None)
    return out


def _pack_metadata(metadata_json: str | None) -> dict:
    """The run_metadata.json of the pack this run was imported from ({} when none)."""
    try:
        doc = json.loads(metadata_json) if metadata_json else {}
    except ValueError:
        return {}
    pack = (doc.get("config") or {}).get("pack_metadata") if isinstance(doc, dict) else None
    return pack if isinstance(pack, dict) else {}


def _poller(row: dict | None) -> dict | None:
    """TR122's poller block (section 3.4) from the poller_stats row."""
    if row is None:
        return None
    degraded = "degraded" in (row.get("scheduling_quality"), row.get("continuity_quality"))
    quality = None if row.get("scheduling_quality") is None and row.get("continuity_quality") is None \
        else ("degraded" if degraded else "strict")
    return {"median_dt_ms": row.get("dt_median_ms"), "p95_dt_ms": row.get("dt_p95_ms"),
            "max_gap_ms": row.get("max_gap_ms"), "gap_count": row.get("gap_count"),
            "dropped_ticks": row.get("dropped_ticks"), "read_errors": row.get("read_errors"), "quality": quality}


def _pick_device(con, run_id: str, device_uid: str | None) -> dict:
    rows = _records(con, """
        SELECT rd.*, f.gpu_name, f.comparability_key, f.fields_json, r.git_hash
        FROM run_devices rd LEFT JOIN fingerprints f ON f.fingerprint = rd.fingerprint
        LEFT JOIN runs r ON r.run_id = rd.run_id
        WHERE rd.run_id = ? ORDER BY rd.device_uid""", [run_id])
    if not rows:
        raise ValidationError(f"export: run {run_id!r} is not in the warehouse; list runs with "
                              "`fleetphysics sql \"SELECT run_id, device_uid FROM run_devices\"`")
    if device_uid is None:
        if len(rows) > 1:
            names = ", ".join(r["device_uid"] for r in rows[:5])
            raise ValidationError(f"export: run {run_id} has {len(rows)} devices ({names}); a TR122 pack holds one: "
                                  "pass --device-uid DEVICE_UID")
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
            [key, run_id, device["device_uid"]])
        baselines = _records(con, f"""
            SELECT {', '.join(_BASELINE_COLUMNS)} FROM baselines WHERE run_id = ? AND device_uid = ?
            ORDER BY (field = 'power_w') DESC, field LIMIT 1""", [run_id, device["device_uid"]])
        payloads = _records(con, "SELECT payload_json FROM experiment_results WHERE run_id = ? AND device_uid = ? "
                                 "AND experiment = 'baseline'", [run_id, device["device_uid"]])
        poller = _records(con, "SELECT dt_median_ms, dt_p95_ms, max_gap_ms, gap_count, dropped_ticks, read_errors, "
                               "scheduling_quality, continuity_quality FROM poller_stats WHERE run_id = ? "
                               "AND device_uid = ?", [run_id, device["device_uid"]])
    finally:
        con.close()

    baseline = baselines[0] if baselines else {name: None for name in _BASELINE_COLUMNS}
    baseline |= _baseline_figures(payloads[0]["payload_json"] if payloads else None, baseline.get("field"))
    baseline["idle_w"] = baseline.get("idle_robust_w")
    if isinstance(baseline.get("quality"), str):
        baseline["quality"] = baseline["quality"].lower()
    tr122_baseline = {key: baseline.get(figure) for key, figure in _TR122_BASELINE.items()}
    baseline = tr122_baseline | {k: v for k, v in baseline.items() if k not in _BASELINE_FIGURES}
    pack_meta = _pack_metadata(device.get("metadata_json"))
    fields = json.loads(device["fields_json"]) if device.get("fields_json") else {}
    metadata = {
        "schema_version": 1, "run_id": run_id, "host": device["host"], "device_uid": device["device_uid"],
        "device_uuid": device["device_uuid"], "gpu_name": device["gpu_name"],
        "fingerprint": device["fingerprint"], "comparability_key": device["comparability_key"],
        "fingerprint_fields": fields, "simulated": device["simulated"], "run_state": device["run_state"],
        "end_reason": device["end_reason"], "started_wall_ns": device["started_wall_ns"],
        "ended_wall_ns": device["ended_wall_ns"], "clock": device["clock"], "source": device["source"],
        "trace_rows": trace.num_rows, "exported_by": "fleetphysics warehouse export",
        "poller": pack_meta.get("poller") or _poller(poller[0] if poller else None),
        "baseline": tr122_baseline,
        "git": {"hash": device.get("git_hash") or (pack_meta.get("git") or {}).get("hash")},
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
