"""Import a TR122 artifact pack (power_trace.csv, generation_events.jsonl, baseline.json,
run_metadata.json; TR122 section 3) as one run x device.

Strict on what the physics needs: ``power_trace.csv`` must have ``t_ns`` (integer ns,
non-decreasing) and ``power_w`` (watts). Lenient on the rest: the optional columns
(temp_c, sm_clock_mhz, mem_clock_mhz, util_gpu, util_mem, vram_used_mib, read_ok, dt_s)
are null when absent, read_ok defaults to "power_w was read", dt_s to the t_ns step,
and generation_events.jsonl, baseline.json and run_metadata.json may be missing.
Event fields map as energy_joules -> energy_integrated_j, operational_joules ->
energy_net_j (baseline subtracted); power_samples is kept with the event. baseline.json
becomes the ``baseline`` experiment: TR122's own keys (section 3.3: idle_watts_mean_robust,
idle_watts_mean, idle_watts_std, floor_fraction, idle_temp_c, fake_idle_flag,
idle_gpu_util_p95, idle_watts_min, idle_watts_max) as well as this project's; without a
baseline.json, run_metadata.json's ``baseline`` block stands in. run_metadata.json's
section 3.4 keys are read too: run_state, end_reason, ``git.hash``, and ``poller`` (kept
with the run's metadata). Only regular files in the pack's folder are read (a symbolic link is refused), and an
error quotes at most a few characters of a cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agents.errors import ValidationError

from ..columns import END_REASONS, EVENT_FIELDS, RUN_STATES, TRACE_EXTRA_FIELDS, TRACE_FIELDS
from ..connection import WRITER_LOCK_TIMEOUT_S
from ..file_checks import inside_file
from ..validate import fail, load_json, parse_json, quote, safe_name
from .common import ImportedRun, file_sha256, parse_numbers, read_text_csv, slug, write_imported

TRACE_FILE = "power_trace.csv"
EVENTS_FILE = "generation_events.jsonl"
BASELINE_FILE = "baseline.json"
METADATA_FILE = "run_metadata.json"
TR122_TRACE_COLUMNS = ("t_ns", "power_w", "temp_c", "sm_clock_mhz", "mem_clock_mhz", "util_gpu", "util_mem",
                       "vram_used_mib", "read_ok", "dt_s")
EVENT_EXTRA = {"power_samples": pa.int64()}  # TR122 event fields kept beside EVENT_FIELDS (extra_json)
EVENT_MAP = {  # TR122 field -> events column
    "event_id": "event_id", "phase": "phase", "t_start_ns": "t_start_ns", "t_end_ns": "t_end_ns",
    "input_tokens": "input_tokens", "output_tokens": "output_tokens", "batch_size": "batch_size",
    "tokens_per_second": "tokens_per_second", "energy_joules": "energy_integrated_j",
    "operational_joules": "energy_net_j", "energy_quality": "energy_quality", "gap_fraction": "gap_fraction",
    "experiment": "experiment", "energy_counter_j": "energy_counter_j", "power_samples": "power_samples",
}
BASELINE_KEYS = {  # baseline figure -> keys a TR122 baseline.json may use, first found wins
    "idle_robust_w": ("idle_watts_mean_robust", "idle_robust_w", "robust_idle_w", "idle_w", "idle_power_w",
                      "baseline_w", "power_w"),
    "idle_sem_w": ("idle_sem_w", "sem_w"),
    "idle_mean_w": ("idle_watts_mean", "idle_mean_w", "mean_w"),
    "idle_median_w": ("idle_median_w", "median_w"),
    "idle_std_w": ("idle_watts_std", "idle_std_w", "std_w"),
    "floor_w": ("floor_w",),
    "floor_fraction": ("floor_fraction",),
    "fake_idle": ("fake_idle_flag", "fake_idle"),
    "idle_temp_c": ("idle_temp_c",),
    "util_p95": ("idle_gpu_util_p95", "util_p95"),
    "min_w": ("idle_watts_min", "min_w"),
    "max_w": ("idle_watts_max", "max_w"),
    "n_samples": ("n_samples", "samples", "n"),
    "window_s": ("window_s", "duration_s"),
    "field": ("field",),
}
INT64_MAX = 2**63 - 1
_TRUE = {"true", "1", "True", "TRUE", "t", "yes"}
_FALSE = {"false", "0", "False", "FALSE", "f", "no"}


def _json_file(path: Path, required: bool = False):
    if inside_file(path.parent, path.name) is None:
        if required:
            raise ValidationError(f"{path}: file is missing; a TR122 pack has {path.name}")
        return None
    text = path.read_text("utf-8", errors="replace")
    if not text.strip():
        raise ValidationError(f"{path}: file is empty; write a JSON object or delete the file")
    doc = load_json(text, str(path), "re-export the pack")
    if not isinstance(doc, dict):
        raise ValidationError(f"{path}: document is a {type(doc).__name__}, not a JSON object; re-export the pack")
    return doc


def _trace(path: Path) -> tuple[pa.Table, list[str]]:
    label = str(path)
    header, table, _ = read_text_csv(path, label)
    index = {name: i for i, name in enumerate(header)}
    for required in ("t_ns", "power_w"):
        if required not in index:
            raise ValidationError(f"{label}: column {required} is missing; a TR122 power_trace.csv has "
                                  f"{', '.join(TR122_TRACE_COLUMNS)}")
    rows = table.num_rows
    if rows == 0:
        raise ValidationError(f"{label}: no rows after the header; the pack's trace is empty")
    t_text = table.column(f"c{index['t_ns']}")
    bad = pc.invert(pc.match_substring_regex(t_text, r"^-?\d{1,19}$"))
    row = pc.index(bad, pa.scalar(True)).as_py()
    if row >= 0:
        raise ValidationError(f"{label}: column t_ns has {quote(t_text[row].as_py())} at line {row + 2}; "
                              "t_ns is integer nanoseconds (at most 19 digits) in every row: fix or delete that line")
    try:
        t_ns = t_text.cast(pa.int64())
    except pa.ArrowInvalid as exc:  # 19 digits beyond 2**63
        raise ValidationError(f"{label}: column t_ns has a value beyond 64-bit nanoseconds; "
                              "t_ns is integer nanoseconds: fix that line") from exc
    columns: dict[str, pa.ChunkedArray] = {"t_ns": t_ns}
    failed_power = None
    for name in TR122_TRACE_COLUMNS[1:]:
        if name not in index or name == "read_ok":
            continue
        numbers, failed = parse_numbers(label, name, table.column(f"c{index[name]}"))
        columns[name] = numbers
        if name == "power_w":
            failed_power = failed
    if "read_ok" in index:
        text = table.column(f"c{index['read_ok']}")
        known = pc.is_in(text, value_set=pa.array(sorted(_TRUE | _FALSE)))
        row = pc.index(pc.invert(known), pa.scalar(True)).as_py()
        if row >= 0:
            raise ValidationError(f"{label}: column read_ok has {quote(text[row].as_py())} at line {row + 2}; "
                                  "write true or false")
        columns["read_ok"] = pc.is_in(text, value_set=pa.array(sorted(_TRUE)))
    else:
        columns["read_ok"] = pc.invert(failed_power)
    if "dt_s" not in columns:
        t = columns["t_ns"].to_numpy()
        dt = np.empty(rows)
        dt[0] = np.nan
        dt[1:] = np.diff(t) / 1e9
        columns["dt_s"] = pa.chunked_array([pa.array(dt, mask=np.isnan(dt))])
    out = {}
    for name, dtype in (TRACE_FIELDS | TRACE_EXTRA_FIELDS).items():
        out[name] = columns[name].cast(dtype) if name in columns else pa.chunked_array([pa.nulls(rows, dtype)])
    ignored = [h for h in header if h not in TR122_TRACE_COLUMNS]
    return pa.table(out), ignored


def _events(path: Path) -> pa.Table | None:
    if inside_file(path.parent, path.name) is None:
        return None
    kinds = EVENT_FIELDS | EVENT_EXTRA
    records = {column: [] for column in kinds}
    for number, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        doc, problem, detail = parse_json(line)
        if problem:
            raise ValidationError(f"{path}: line {number} {problem}" + (f" ({detail})" if detail else "")
                                  + "; repair or delete that line")
        if not isinstance(doc, dict):
            raise ValidationError(f"{path}: line {number} is a {type(doc).__name__}, not a JSON object; one event per line")
        doc = {EVENT_MAP[k]: v for k, v in doc.items() if k in EVENT_MAP}
        doc.setdefault("event_id", f"event-{number}")
        for column, dtype in kinds.items():
            value = doc.get(column)
            if value is not None:
                expected = int if pa.types.is_integer(dtype) else float if pa.types.is_floating(dtype) else str
                ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
                if not ok or isinstance(value, bool):
                    raise ValidationError(f"{path}: field {column} is {quote(value)} at line {number}; "
                                          f"expected {expected.__name__}: fix that event")
                if expected is int and not -INT64_MAX <= value <= INT64_MAX:
                    raise fail(str(path), f"field {column}", f"is {quote(value)} at line {number}, beyond 64 bits",
                               "fix that event")
            records[column].append(float(value) if value is not None and pa.types.is_floating(dtype) else value)
    if not records["event_id"]:
        return None
    return pa.table({column: pa.array(values, kinds[column]) for column, values in records.items()})


def _baseline_experiment(doc: dict | None) -> dict[str, dict]:
    if doc is None:
        return {}
    figures = {}
    for figure, keys in BASELINE_KEYS.items():
        for key in keys:
            if key in doc:
                figures[figure] = doc[key]
                break
    quality = doc.get("quality")
    quality = quality.lower() if isinstance(quality, str) else quality
    return {"baseline": {"experiment": "baseline", "schema_version": 1, "figures": figures | {"quality": quality}
                         if quality is not None else figures, "quality": quality, "source": "tr122", "raw": doc}}


def read_tr122(pack_dir) -> ImportedRun:
    """Parse and check a TR122 pack into an :class:`ImportedRun` (nothing written)."""
    d = Path(pack_dir)
    if not d.is_dir():
        raise ValidationError(f"{d}: not a folder; pass the folder holding {TRACE_FILE}")
    trace_path = d / TRACE_FILE
    if inside_file(d, TRACE_FILE) is None:
        raise ValidationError(f"{trace_path}: file is missing; a TR122 pack has {TRACE_FILE}")
    trace, ignored = _trace(trace_path)
    events = _events(d / EVENTS_FILE)
    meta_path = d / METADATA_FILE
    given = _json_file(meta_path) or {}
    digest = file_sha256(trace_path)
    gpu = given.get("gpu_name") or given.get("gpu") or given.get("device_name") or "gpu"
    label = str(meta_path)
    run_id = safe_name(given["run_id"], label, "run_id") if "run_id" in given else f"tr122-{digest[:16]}"
    host = safe_name(given["host"], label, "host") if "host" in given else safe_name(
        given.get("hostname", "imported"), label, "hostname")
    device_uid = (safe_name(given["device_uid"], label, "device_uid") if "device_uid" in given
                  else f"{slug(str(gpu))}-{digest[:12]}")
    t = trace.column("t_ns").to_numpy()
    clock = "wall" if int(t.min()) > 10**17 else "monotonic"
    started = given.get("started_wall_ns", int(t.min()) if clock == "wall" else None)
    ended = given.get("ended_wall_ns", int(t.max()) if clock == "wall" else None)
    fingerprint = given.get("fingerprint") or f"tr122-{slug(str(gpu))}-{digest[:12]}"
    simulated = given.get("simulated", False)
    meta = {
        "schema_version": 1, "run_id": run_id, "host": host, "device_uid": device_uid,
        "fingerprint": fingerprint, "simulated": simulated,
        "run_state": given.get("run_state") if given.get("run_state") in RUN_STATES else "completed",
        "end_reason": given.get("end_reason") if given.get("end_reason") in END_REASONS else "completed",
        "started_wall_ns": started, "ended_wall_ns": ended, "clock": given.get("clock", clock),
        "git_hash": given.get("git_hash") or (given["git"].get("hash") if isinstance(given.get("git"), dict) else None),
        "config": {"importer": "tr122", "ignored_columns": ignored, "pack_metadata": given},
    }
    fields = given.get("fingerprint_fields") if isinstance(given.get("fingerprint_fields"), dict) else {}
    fields = {"gpu_name": str(gpu) if gpu != "gpu" else None} | fields
    fp = {"device_uid": device_uid, "fingerprint": fingerprint,
          "comparability_key": given.get("comparability_key") or slug(str(gpu)),
          "simulated": simulated, "fields": fields}
    labels = {"run_metadata": label, "fingerprint": label, "events": str(d / EVENTS_FILE),
              "experiment:baseline": str(d / BASELINE_FILE)}
    baseline = _json_file(d / BASELINE_FILE)
    if baseline is None and isinstance(given.get("baseline"), dict):
        baseline, labels["experiment:baseline"] = given["baseline"], f"{label} (baseline)"
    return ImportedRun(str(trace_path), meta, fp, trace, None, events, _baseline_experiment(baseline), labels)


def import_tr122(warehouse, pack_dir, lock_timeout_s: float = WRITER_LOCK_TIMEOUT_S, replace: bool = False) -> dict:
    """Import a TR122 pack as one run x device; returns the ingest result.

    The run keeps the pack's run_id and device_uid when its run_metadata.json has them,
    else both come from the trace file's SHA-256. A pack exported from this warehouse
    names a run stored from artifacts: importing it is refused unless ``replace`` (the
    pack lacks the run's markers and most results).
    """
    return write_imported(warehouse, read_tr122(pack_dir), "tr122", lock_timeout_s, replace)
