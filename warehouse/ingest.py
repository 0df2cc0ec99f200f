"""Ingest one run x device into the warehouse: validate everything, then one transaction.

Two entry points share one path:

* :func:`ingest_tables` takes Arrow tables and dicts in memory (the Ray driver's way);
* :func:`warehouse.artifacts.ingest_paths` reads artifact dirs
  (``<out>/<run_id>/<host>/<device_uid>/``).

Both validate every input first (``validate.py``), then replace the run x device in one
transaction: delete whatever an earlier ingest of the same (run_id, device_uid) wrote and
insert the new rows. Ingesting the same run again therefore replaces it, never duplicates
it, and an error at any point rolls back and leaves the warehouse exactly as it was.
Only the same kind of input replaces a run without being asked (:func:`check_replace`):
a TR122 pack exported from a run holds its trace, events and baseline but not its markers
or other results, so importing it over that run is refused unless ``replace=True``.
Traces go from Arrow into DuckDB without a Python loop over rows.
"""

from __future__ import annotations

import datetime as _dt
from contextlib import contextmanager
import json
import os
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from agents.errors import ValidationError, WarehouseError

from . import figures as _figures
from . import training as _training
from .columns import MARKER_FIELDS, SOURCES, THERMAL_MASK, THROTTLE_MASK
from .connection import WRITER_LOCK_TIMEOUT_S, connect_writer
from .validate import (
    TraceData,
    check_choice,
    check_experiment,
    check_fingerprint,
    check_poller_stats,
    check_imported_power,
    check_run_metadata,
    clean_json,
    finite_or_none,
    normalize_events,
    normalize_markers,
    normalize_trace,
)

ROW_GROUP_ROWS = 122_880  # DuckDB's row-group size

# Sources whose rows are a recording made outside fleetphysics (checked for power units).
IMPORTED_SOURCES = ("tr122", "nvidia-smi")
# Sources that replace each other without --replace: fleetphysics's own artifacts (a dir on
# disk or the same tables in memory) hold a run whole; an import only replaces the same kind.
SOURCE_KINDS = {"artifact": "fleetphysics artifacts", "arrow": "fleetphysics artifacts",
                "tr122": "a TR122 pack", "nvidia-smi": "an nvidia-smi log"}

# Tables holding rows of one run x device, keyed by (run_id, device_uid).
PER_DEVICE_TABLES = (
    "markers",
    "events",
    "poller_stats",
    "experiment_results",
    "baselines",
    "instrument_response",
    "vram_cliff",
    "vram_cliff_points",
    "vram_cliff_probes",
    "joule_curve",
    "joule_fit",
    "heat_soak",
    "heat_soak_series",
    "throttle_events",
    "training_steps",
    "rle_series",
    "training_coupling",
    "run_devices",
)


@dataclass
class DeviceBundle:
    """Everything one run x device writes, validated and in the warehouse's shapes."""

    label: str  # where it came from, for messages
    meta: dict
    fingerprint: dict
    trace: TraceData
    markers: pa.Table
    events: pa.Table | None
    experiments: dict[str, dict]
    poller_stats: dict | None
    source: str
    typed: dict[str, list[dict]] = field(default_factory=dict)
    typed_arrow: dict[str, pa.Table] = field(default_factory=dict)  # typed tables built as Arrow
    throttle: pa.Table | None = None
    series: pa.Table | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.meta["run_id"], self.meta["device_uid"]


# ---------------------------------------------------------------- preparing


def prepare_bundle(
    run_metadata: dict,
    fingerprint: dict,
    trace_parts: list[tuple[str, pa.Table]],
    markers: pa.Table | None,
    events: pa.Table | None,
    experiments: dict[str, dict] | None,
    poller_stats: dict | None,
    *,
    source: str,
    labels: dict[str, str] | None = None,
    require_all_trace_columns: bool = True,
) -> DeviceBundle:
    """Validate one run x device and return it ready to write (raises ValidationError).

    ``labels`` names the origin of each input in messages (keys: run_metadata,
    fingerprint, markers, events, poller_stats, and ``experiment:<name>``).
    """
    labels = labels or {}
    meta = check_run_metadata(labels.get("run_metadata", "run_metadata"), run_metadata)
    meta_label = labels.get("run_metadata", "run_metadata")
    check_choice(meta_label, "source", source, SOURCES)
    fp = check_fingerprint(labels.get("fingerprint", "fingerprint"), fingerprint, meta)
    trace = normalize_trace(trace_parts, require_all=require_all_trace_columns)
    if source in IMPORTED_SOURCES:
        check_imported_power(labels.get("dir", trace_parts[0][0] if trace_parts else meta_label), trace.table)
    if markers is None:
        markers = pa.table({name: pa.array([], dtype) for name, dtype in MARKER_FIELDS.items()})
    marker_table = normalize_markers(labels.get("markers", "markers"), markers)
    event_table = normalize_events(labels.get("events", "events"), events) if events is not None else None
    stats = check_poller_stats(labels.get("poller_stats", "poller_stats"), poller_stats)
    docs = {}
    for name, doc in (experiments or {}).items():
        label = labels.get(f"experiment:{name}", f"experiment {name}")
        docs[name] = check_experiment(label, doc, expected_name=name)
    bundle = DeviceBundle(labels.get("dir", meta_label), meta, fp, trace, marker_table, event_table, docs, stats, source)
    for name, doc in docs.items():
        for table, rows in _figures.typed_rows(name, doc).items():
            bundle.typed.setdefault(table, []).extend(rows)
    bundle.typed_arrow.update(_training.training_tables(docs, trace.table, meta["simulated"], fp["fields"]))
    bundle.throttle = throttle_stretches(trace.table)
    if any(_figures.EXPERIMENT_KINDS.get(n) == "heat_soak" for n in docs) and not bundle.typed.get("heat_soak_series"):
        bundle.series = downsample_series(trace.table)
    return bundle


def _any_bits(values: np.ndarray, mask: int, block: int = 1 << 18) -> bool:
    """Whether any value has a bit of ``mask``, in blocks through one small buffer
    (masking a 10 M-row column at once allocates and faults in 80 MB: ~0.25 s)."""
    buf = np.empty(min(len(values), block), dtype=values.dtype)
    for start in range(0, len(values), block):
        part = values[start:start + block]
        out = buf[:len(part)]
        np.bitwise_and(part, mask, out=out)
        if out.any():
            return True
    return False


def throttle_stretches(trace: pa.Table) -> pa.Table | None:
    """Contiguous rows with a throttle bit set, as throttle_events rows (numpy, no row loop).

    A stretch ends at the first row after it without a throttle bit (or at the last row).
    """
    reasons = trace.column("clocks_event_reasons")
    if reasons.null_count == len(reasons):
        return None
    values = (reasons.fill_null(0) if reasons.null_count else reasons).to_numpy()
    if not _any_bits(values, THROTTLE_MASK):  # the common case: no throttle bit anywhere
        return None
    bits = np.bitwise_and(values, THROTTLE_MASK)
    on = bits != 0
    t = trace.column("t_ns").to_numpy()
    change = np.diff(on.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(change == 1)
    ends = np.flatnonzero(change == -1)  # first row after the stretch (may be len)
    end_t = t[np.minimum(ends, len(t) - 1)]
    # reduceat ORs from each start to the next; rows between stretches have bits 0.
    reasons_or = np.bitwise_or.reduceat(bits, starts)
    return pa.table({
        "seq": pa.array(np.arange(len(starts), dtype=np.int32)),
        "t_start_ns": pa.array(t[starts]),
        "t_end_ns": pa.array(end_t),
        "duration_s": pa.array((end_t - t[starts]) / 1e9),
        "reasons": pa.array(reasons_or),
        "thermal": pa.array((reasons_or & THERMAL_MASK) != 0),
        "samples": pa.array((ends - starts).astype(np.int64)),
    })


def downsample_series(trace: pa.Table, bin_s: float = 1.0) -> pa.Table | None:
    """Means of temp_c, power_w and sm_clock_mhz in ``bin_s`` bins since the first row."""
    if trace.num_rows == 0:
        return None
    t = trace.column("t_ns").to_numpy()
    bins = ((t - t[0]) // int(bin_s * 1e9)).astype(np.int64)
    out = {"t_s": pa.array(np.unique(bins) * bin_s)}
    index = np.searchsorted(np.unique(bins), bins)
    for name in ("temp_c", "power_w", "sm_clock_mhz"):
        values = trace.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        good = ~np.isnan(values)
        total = np.bincount(index, weights=np.where(good, values, 0.0))
        count = np.bincount(index, weights=good.astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
        out[name] = pa.array(mean, mask=count == 0)
    return pa.table(out)


# ---------------------------------------------------------------- writing


def _json(value) -> str | None:
    return None if value is None else json.dumps(clean_json(value), sort_keys=True, default=str)


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return _json(value)
    return str(value)


def _positive(value) -> float | None:
    number = finite_or_none(value)
    return number if number is not None and number > 0 else None


def _positive_int(value) -> int | None:
    number = _positive(value)
    return int(number) if number is not None and number == int(number) else None


def _insert_rows(con, table: str, rows: list[dict], run_id: str, device_uid: str) -> None:
    """Insert small row lists (figures, stats) by column name through Arrow."""
    if not rows:
        return
    data = pa.Table.from_pylist([{"run_id": run_id, "device_uid": device_uid} | r for r in rows])
    _insert_arrow(con, table, data)


def _insert_arrow(con, table: str, data: pa.Table, constants: dict | None = None) -> None:
    name = f"_ingest_{table}"
    con.register(name, data)
    try:
        columns = list(data.column_names)
        select = ", ".join(f'"{c}"' for c in columns)
        params = []
        if constants:
            columns += list(constants)
            select += ", " + ", ".join("?" for _ in constants)
            params = list(constants.values())
        con.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM {name}", params
        )
    finally:
        con.unregister(name)


def _trace_key(con, run_id: str, device_uid: str) -> int:
    rows = con.execute(
        "SELECT trace_key FROM run_devices WHERE run_id = ? AND device_uid = ?", [run_id, device_uid]
    ).fetchall()
    if rows:
        return rows[0][0]
    return con.execute("SELECT coalesce(max(trace_key), 0) + 1 FROM run_devices").fetchall()[0][0]


def _write(con, b: DeviceBundle) -> int:
    run_id, device_uid = b.key
    meta, fp, fields = b.meta, b.fingerprint, b.fingerprint["fields"]
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    key = _trace_key(con, run_id, device_uid)

    con.execute("DELETE FROM power_trace WHERE trace_key = ?", [key])
    for table in PER_DEVICE_TABLES:
        con.execute(f"DELETE FROM {table} WHERE run_id = ? AND device_uid = ?", [run_id, device_uid])

    seen_first = meta["started_wall_ns"]
    seen_last = meta["ended_wall_ns"] if meta["ended_wall_ns"] is not None else meta["started_wall_ns"]
    # Descriptive columns follow the most recent run seen (by wall clock), whatever the
    # order of ingests, so that ingesting the same runs again gives the same rows.
    newer = "coalesce(excluded.last_seen_wall_ns, -1) >= coalesce({t}.last_seen_wall_ns, -1)"
    con.execute(
        f"""INSERT INTO hosts VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (host) DO UPDATE SET
             cpu_model = CASE WHEN {newer.format(t='hosts')} THEN coalesce(excluded.cpu_model, hosts.cpu_model) ELSE hosts.cpu_model END,
             cpu_cores = CASE WHEN {newer.format(t='hosts')} THEN coalesce(excluded.cpu_cores, hosts.cpu_cores) ELSE hosts.cpu_cores END,
             ram_gb = CASE WHEN {newer.format(t='hosts')} THEN coalesce(excluded.ram_gb, hosts.ram_gb) ELSE hosts.ram_gb END,
             os_kernel = CASE WHEN {newer.format(t='hosts')} THEN coalesce(excluded.os_kernel, hosts.os_kernel) ELSE hosts.os_kernel END,
             first_seen_wall_ns = least(hosts.first_seen_wall_ns, excluded.first_seen_wall_ns),
             last_seen_wall_ns = greatest(hosts.last_seen_wall_ns, excluded.last_seen_wall_ns)""",
        [meta["host"], _text(fields.get("cpu_model")), _positive_int(fields.get("cpu_cores")),
         _positive(fields.get("ram_gb")), _text(fields.get("os_kernel")), seen_first, seen_last],
    )
    con.execute(
        f"""INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (device_uid) DO UPDATE SET
             host = CASE WHEN {newer.format(t='devices')} THEN excluded.host ELSE devices.host END,
             gpu_name = CASE WHEN {newer.format(t='devices')} THEN coalesce(excluded.gpu_name, devices.gpu_name) ELSE devices.gpu_name END,
             vram_total_mib = CASE WHEN {newer.format(t='devices')} THEN coalesce(excluded.vram_total_mib, devices.vram_total_mib) ELSE devices.vram_total_mib END,
             simulated = CASE WHEN {newer.format(t='devices')} THEN excluded.simulated ELSE devices.simulated END,
             first_seen_wall_ns = least(devices.first_seen_wall_ns, excluded.first_seen_wall_ns),
             last_seen_wall_ns = greatest(devices.last_seen_wall_ns, excluded.last_seen_wall_ns)""",
        [device_uid, meta["host"], _text(fields.get("gpu_name")), _positive(fields.get("vram_total_mib")),
         meta["simulated"], seen_first, seen_last],
    )
    fp_row = [
        fp["fingerprint"], device_uid, fp["comparability_key"], fp["simulated"],
        _text(fields.get("gpu_name")), _positive(fields.get("vram_total_mib")), _text(fields.get("vbios")),
        _text(fields.get("driver_version")), _text(fields.get("cuda_driver_version")),
        _positive(fields.get("power_limit_w")), _text(fields.get("ecc_mode")), _text(fields.get("mig_mode")),
        _text(fields.get("cpu_model")), _positive_int(fields.get("cpu_cores")), _positive(fields.get("ram_gb")),
        _text(fields.get("os_kernel")), _text(fields.get("torch_version")), _text(fields.get("profile_sha256")),
        _json(fields),
    ]
    con.execute(
        f"""INSERT INTO fingerprints VALUES ({', '.join('?' * len(fp_row))})
            ON CONFLICT (fingerprint) DO UPDATE SET
              device_uid = excluded.device_uid, comparability_key = excluded.comparability_key,
              simulated = excluded.simulated, gpu_name = excluded.gpu_name,
              vram_total_mib = excluded.vram_total_mib, vbios = excluded.vbios,
              driver_version = excluded.driver_version, cuda_driver_version = excluded.cuda_driver_version,
              power_limit_w = excluded.power_limit_w, ecc_mode = excluded.ecc_mode, mig_mode = excluded.mig_mode,
              cpu_model = excluded.cpu_model, cpu_cores = excluded.cpu_cores, ram_gb = excluded.ram_gb,
              os_kernel = excluded.os_kernel, torch_version = excluded.torch_version,
              profile_sha256 = excluded.profile_sha256, fields_json = excluded.fields_json""",
        fp_row,
    )
    con.execute(
        # Columns named: runs.run_state (migration 010) is the fleet driver's, written by warehouse/run_state.py.
        """INSERT INTO runs (run_id, started_wall_ns, ended_wall_ns, git_hash, git_dirty, config_json,
                             library_versions_json, schema_version, ingested_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)
           ON CONFLICT (run_id) DO UPDATE SET
             started_wall_ns = least(runs.started_wall_ns, excluded.started_wall_ns),
             ended_wall_ns = greatest(runs.ended_wall_ns, excluded.ended_wall_ns),
             git_hash = coalesce(excluded.git_hash, runs.git_hash),
             git_dirty = coalesce(excluded.git_dirty, runs.git_dirty),
             config_json = coalesce(excluded.config_json, runs.config_json),
             library_versions_json = coalesce(excluded.library_versions_json, runs.library_versions_json),
             ingested_at = excluded.ingested_at""",
        [run_id, meta["started_wall_ns"], meta["ended_wall_ns"], meta["git_hash"], meta["git_dirty"],
         _json(meta["config"]), _json(meta["library_versions"]), now],
    )
    con.execute(
        """INSERT INTO run_devices (run_id, device_uid, trace_key, host, fingerprint, device_uuid, simulated,
             run_state, end_reason, started_wall_ns, ended_wall_ns, trace_rows, t_first_ns, t_last_ns,
             checks_json, metadata_json, ingested_at, clock, source)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [run_id, device_uid, key, meta["host"], meta["fingerprint"], b.trace.device_uuid, meta["simulated"],
         meta["run_state"], meta["end_reason"], meta["started_wall_ns"], meta["ended_wall_ns"], b.trace.rows,
         b.trace.t_first_ns, b.trace.t_last_ns, _json(meta["checks"]), _json(meta["raw"]), now,
         meta["clock"], b.source],
    )
    if b.trace.rows:
        # Row-group-sized batches (zero-copy slices) let DuckDB scan and compress in parallel.
        # All-null columns (fields a backend lacks) are left to the column default: no scan.
        table = b.trace.table
        table = table.select([c for c in table.column_names if table.column(c).null_count < table.num_rows])
        batches = table.to_batches(max_chunksize=ROW_GROUP_ROWS)
        trace = pa.Table.from_batches(batches, schema=table.schema)
        _insert_arrow(con, "power_trace", trace, {"trace_key": key})
    ids = {"run_id": run_id, "device_uid": device_uid}
    if b.markers.num_rows:
        _insert_arrow(con, "markers", b.markers, ids)
    if b.events is not None and b.events.num_rows:
        _insert_arrow(con, "events", b.events, ids)
    if b.poller_stats is not None:
        _insert_rows(con, "poller_stats", [_stats_row(b.poller_stats)], run_id, device_uid)
    _insert_rows(con, "experiment_results", [
        {"experiment": name, "schema_version": 1, "quality": _figures.quality_of(doc.get("quality")),
         "payload_json": _json(doc)}
        for name, doc in b.experiments.items()
    ], run_id, device_uid)
    for table, rows in b.typed.items():
        _insert_rows(con, table, rows, run_id, device_uid)
    for table, data in b.typed_arrow.items():
        _insert_arrow(con, table, data, ids)
    if b.throttle is not None:
        _insert_arrow(con, "throttle_events", b.throttle, ids)
    if b.series is not None:
        _insert_arrow(con, "heat_soak_series", b.series, ids)
    return key


def _stats_row(stats: dict) -> dict:
    def sub(name: str, key: str):
        value = stats.get(name)
        return finite_or_none(value.get(key)) if isinstance(value, dict) else None

    def count(name: str):
        number = finite_or_none(stats.get(name))
        return int(number) if number is not None and number >= 0 else None

    def nonneg(value):
        return value if value is not None and value >= 0 else None

    return {
        "period_ms": _positive(stats.get("period_ms")),
        "dt_median_ms": nonneg(sub("dt_ms", "median")), "dt_p95_ms": nonneg(sub("dt_ms", "p95")),
        "dt_p99_ms": nonneg(sub("dt_ms", "p99")),
        "lateness_p50_ms": sub("lateness_ms", "p50"), "lateness_p99_ms": sub("lateness_ms", "p99"),
        "lateness_max_ms": sub("lateness_ms", "max"),
        "dropped_ticks": count("dropped_ticks"), "read_errors": count("read_errors"),
        "max_gap_ms": nonneg(finite_or_none(stats.get("max_gap_ms"))), "gap_count": count("gap_count"),
        "samples": count("samples"), "expected_samples": count("expected_samples"),
        "scheduling_quality": stats.get("scheduling_quality"),
        "continuity_quality": stats.get("continuity_quality"),
        "stats_json": _json(stats),
    }


def check_replace(con, label: str, run_id: str, device_uid: str, source: str) -> None:
    """Raise a ValidationError when run x device is already stored from another kind of source.

    A replacement by the same kind (an artifact dir ingested again, the same nvidia-smi log
    imported again) goes ahead; anything else would silently lose what the new input lacks.
    """
    rows = con.execute("SELECT source, ingested_at FROM run_devices WHERE run_id = ? AND device_uid = ?",
                       [run_id, device_uid]).fetchall()
    if not rows:
        return
    stored, at = rows[0]
    if SOURCE_KINDS.get(stored, stored) == SOURCE_KINDS.get(source, source):
        return
    when = f" on {at:%Y-%m-%d %H:%M} UTC" if at is not None else ""
    raise ValidationError(
        f"{label}: run {run_id} device {device_uid} is already in the warehouse (from {stored}{when}) and this "
        f"{source} input would replace it, losing what it lacks; import it into another warehouse, or pass "
        "--replace to replace the stored run"
    )


@contextmanager
def transaction(con):
    """BEGIN ... COMMIT around the block; on any error ROLLBACK (a failed rollback is
    ignored: the first error is the one to report) and re-raise."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise


def write_bundle(con, bundle: DeviceBundle, replace: bool = False) -> dict:
    """Replace one run x device in one transaction; roll back and raise on any error.

    Without ``replace``, a run x device stored from another kind of source is refused
    (:func:`check_replace`) and nothing is written.
    """
    try:
        with transaction(con):
            if not replace:
                check_replace(con, bundle.label, *bundle.key, bundle.source)
            _write(con, bundle)
    except BaseException as exc:
        if isinstance(exc, duckdb.ConstraintException):
            first = str(exc).splitlines()[0]
            raise ValidationError(
                f"{bundle.label}: the warehouse refused run {bundle.key[0]} device {bundle.key[1]} ({first}); "
                "the input breaks a physical constraint: fix it and ingest again"
            ) from exc
        if isinstance(exc, (duckdb.ConversionException, duckdb.OutOfRangeException, OverflowError)):
            # validated input whose value does not fit its column's type is still bad input
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValidationError(
                f"{bundle.label}: the warehouse refused run {bundle.key[0]} device {bundle.key[1]} ({first[:200]}); "
                "a value does not fit its column: fix it and ingest again"
            ) from exc
        if isinstance(exc, duckdb.Error):
            first = str(exc).splitlines()[0]
            raise WarehouseError(
                f"{bundle.label}: writing run {bundle.key[0]} device {bundle.key[1]} failed ({first}); "
                "nothing was written: check the disk and ingest again"
            ) from exc
        raise
    return {"run_id": bundle.key[0], "device_uid": bundle.key[1], "rows": bundle.trace.rows}


def with_writer(con_or_path, lock_timeout_s: float, action):
    """``action(con)`` on a given connection, or on the warehouse at a path opened just for it."""
    if isinstance(con_or_path, (str, os.PathLike)):
        con = connect_writer(con_or_path, timeout_s=lock_timeout_s)
        try:
            return action(con)
        finally:
            con.close()
    return action(con_or_path)


# ---------------------------------------------------------------- in-memory entry point


def _as_table(data) -> pa.Table | None:
    """An Arrow table from a table, a pandas DataFrame (index dropped) or None."""
    if data is None or isinstance(data, pa.Table):
        return data
    return pa.Table.from_pandas(data, preserve_index=False)


def ingest_tables(
    con_or_path,
    run_metadata: dict,
    fingerprint: dict,
    trace: pa.Table,
    markers: pa.Table | None,
    events: pa.Table | None = None,
    experiments: dict[str, dict] | None = None,
    poller_stats: dict | None = None,
    *,
    source: str = "arrow",
    lock_timeout_s: float = WRITER_LOCK_TIMEOUT_S,
    replace: bool = False,
) -> dict:
    """Ingest one run x device from memory; returns ``{"run_id", "device_uid", "rows"}``.

    ``con_or_path`` is a read-write DuckDB connection (kept open) or a warehouse path
    (opened for this ingest only, creating and migrating it if needed). ``trace`` and
    ``markers`` follow agents.trace_schema; ``events`` the events.parquet columns (Arrow
    tables, or pandas DataFrames, converted without their index);
    ``experiments`` maps experiment name to its JSON document. Validation runs first; a
    ValidationError leaves the warehouse untouched, and so does any error while writing.
    A run x device stored from another kind of source is replaced only with ``replace``.
    """
    bundle = prepare_bundle(
        run_metadata, fingerprint, [("power_trace (in memory)", _as_table(trace))], _as_table(markers),
        _as_table(events),
        experiments, poller_stats, source=source,
        labels={"run_metadata": "run_metadata (in memory)", "fingerprint": "fingerprint (in memory)",
                "markers": "markers (in memory)", "events": "events (in memory)",
                "poller_stats": "poller_stats (in memory)"}
        | {f"experiment:{n}": f"{n} (in memory)" for n in (experiments or {})},
    )
    return with_writer(con_or_path, lock_timeout_s, lambda con: write_bundle(con, bundle, replace))


def summarize(results: list[dict]) -> list[dict]:
    """Per-run summaries ``{"run_id", "devices", "rows"}`` of ingest results, in order."""
    runs: dict[str, dict] = {}
    for r in results:
        run = runs.setdefault(r["run_id"], {"run_id": r["run_id"], "devices": [], "rows": 0})
        run["devices"].append(r["device_uid"])
        run["rows"] += r["rows"]
    return list(runs.values())
