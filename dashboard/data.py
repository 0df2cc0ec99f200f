"""The dashboard's data access: read-only, cached, always through the warehouse package.

Every page reads through :func:`frame`, which runs one SELECT with
:func:`warehouse.query.run_readonly` (statement check, row, size and time limits) on a
connection from :func:`warehouse.connection.connect_readonly` (file access and extensions
off, a memory limit). The file is held only while a query runs (:class:`Reader`), and a
query is cancelled when the session that asked for it ends. Results are cached with
``st.cache_data`` for :data:`TTL_S` seconds, keyed by the SQL, its parameters and the
warehouse file's size and mtime, so a new ingest shows up on the next rerun.

Heavy series are downsampled in SQL: traces in time buckets (min / mean / max), idle
distributions as quantiles, heat-soak series in bins of at most ~600 points per device.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import streamlit as st

from agents.errors import WarehouseError
from warehouse import migrations, writer_waiting
from warehouse.connection import READER_LOCK_TIMEOUT_S, WRITER_LOCK_TIMEOUT_S, connect_readonly, default_warehouse
from warehouse.query import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, run_readonly, to_frame
from warehouse.sql_text import sql_literal

TTL_S = 60
INTERNAL_MAX_ROWS = 500_000
INTERNAL_TIMEOUT_S = 30.0
# The longest query a viewer may ask for: half a writer's default lock wait, so an ingest
# that arrives while a query runs still gets the file when it ends.
MAX_USER_TIMEOUT_S = WRITER_LOCK_TIMEOUT_S / 2
INTERNAL_MAX_BYTES = 1 << 30  # the pages' own queries: bounded by their SQL, this is a backstop
TRACE_POINTS = 1_500  # buckets per trace chart
SERIES_POINTS = 600  # bins per heat-soak curve
MAX_STEP_EDGES = 5  # rising load edges averaged per device on the sensor page

# DuckDB shares one database instance per file within a process and the read-only
# connection locks that instance's configuration, so a second connect_readonly() in the
# same process joins the first one's instance. Streamlit serves every session from one
# process: a query takes a cursor on the file's shared connection, opened by the first query
# that needs it and closed when the last query in flight ends. So the file is held only while
# a query runs (each bounded by its time limit), never while a page is drawn or a session is
# idle, and an ingest gets it between queries.
_SHARED_LOCK = threading.Lock()
_SHARED: dict[str, list] = {}  # path -> [connection, queries in flight]
_LOCAL = threading.local()


# ---------------------------------------------------------------- the warehouse path


def resolve_warehouse(argv: list[str] | None = None) -> str:
    """The warehouse path: ``--warehouse`` after ``--`` on the streamlit command line,
    else $FLEETPHYSICS_WAREHOUSE, else ./fleet.duckdb."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--warehouse")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args.warehouse or default_warehouse()


def _stamp(path: str) -> tuple:
    """Size and mtime of the file and its WAL: part of every cache key."""
    out = []
    for p in (Path(path), Path(path + ".wal")):
        try:
            s = p.stat()
            out.append((s.st_size, s.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


# ---------------------------------------------------------------- connections


def _acquire(path: str):
    # A writer waiting for the file goes first: no new query joins the open instance, so it
    # closes when the queries in flight end (warehouse/writer_waiting.py).
    writer_waiting.yield_to_writers(path, READER_LOCK_TIMEOUT_S)
    with _SHARED_LOCK:
        entry = _SHARED.get(path)
        if entry is None:
            entry = _SHARED[path] = [connect_readonly(path), 0]
        entry[1] += 1
        return entry[0]


def _release(path: str) -> None:
    with _SHARED_LOCK:
        entry = _SHARED.get(path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _SHARED[path]
            entry[0].close()


def session_stopped() -> Callable[[], bool] | None:
    """A test of whether this script run's session has ended (or its run was stopped), for
    the query watchdog to cancel on; None outside a Streamlit script run.

    Streamlit asks a run to stop when its session disconnects or shuts down; it sees the
    request only at its next ``st`` call, which a query inside DuckDB never makes, so the
    watchdog reads the same request (Streamlit's ScriptRequests state) every 0.1 s.
    """
    try:
        from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
    except ImportError:  # a Streamlit without these internals: queries stop at their time limit
        return None
    requests = getattr(get_script_run_ctx(suppress_warning=True), "script_requests", None)
    if requests is None:
        return None
    return lambda: getattr(requests, "_state", None) == ScriptRequestType.STOP


class Reader:
    """Read access to one warehouse for one script run (one request): each query holds the
    file only while it runs."""

    def __init__(self, path: str) -> None:
        self.path = str(path)

    @contextmanager
    def cursor(self) -> Iterator:
        """A cursor on the file's shared read-only connection, for one query."""
        con = _acquire(self.path)
        try:
            with _SHARED_LOCK:  # the connection object itself is not thread-safe; its cursors are
                cursor = con.cursor()
            try:
                yield cursor
            finally:
                cursor.close()  # also discards a result cut at max_rows (left unfinished)
        finally:
            _release(self.path)

    def fetch(self, sql: str, params: dict | None, max_rows: int, timeout_s: float,
              max_bytes: int = INTERNAL_MAX_BYTES) -> pd.DataFrame:
        """Run one SELECT; ``df.attrs['truncated']`` says whether rows were cut at max_rows.
        The query is cancelled when the session that asked for it ends."""
        with self.cursor() as cursor:
            table, truncated = run_readonly(cursor, sql, params or None, max_rows=max_rows, timeout_s=timeout_s,
                                            max_bytes=max_bytes, cancelled=session_stopped())
        df = to_frame(table)
        df.attrs["truncated"] = truncated
        return df

    def close(self) -> None:
        """Nothing to release between queries (kept for callers that close a Reader)."""


@contextmanager
def reading(path: str) -> Iterator[Reader]:
    """Make a Reader the current one of this thread (one script run) and close it after."""
    reader = Reader(path)
    previous = getattr(_LOCAL, "reader", None)
    _LOCAL.reader = reader
    try:
        yield reader
    finally:
        _LOCAL.reader = previous
        reader.close()


def current_path() -> str:
    """The warehouse path of the current run (resolve_warehouse() outside a run)."""
    reader = getattr(_LOCAL, "reader", None)
    return reader.path if reader is not None else resolve_warehouse()


@st.cache_data(ttl=TTL_S, max_entries=1024, show_spinner=False)
def _cached_frame(path: str, stamp: tuple, sql: str, params: dict | None, max_rows: int,
                  timeout_s: float, max_bytes: int) -> pd.DataFrame:
    return Reader(path).fetch(sql, params, max_rows, timeout_s, max_bytes)


def frame(sql: str, params: dict | None = None, max_rows: int = INTERNAL_MAX_ROWS,
          timeout_s: float = INTERNAL_TIMEOUT_S, max_bytes: int = INTERNAL_MAX_BYTES) -> pd.DataFrame:
    """The cached result of one read-only SELECT on the current warehouse."""
    path = current_path()
    return _cached_frame(path, _stamp(path), sql, params or None, max_rows, timeout_s, max_bytes)


def user_query(sql: str, max_rows: int = DEFAULT_MAX_ROWS, timeout_s: float = DEFAULT_TIMEOUT_S,
               max_bytes: int = DEFAULT_MAX_BYTES) -> pd.DataFrame:
    """A query typed on the SQL page: the warehouse's read-only guard, row, size and time limits.

    Raises ReadOnlyViolation, ValidationError or WarehouseError with one line to show.
    """
    return frame(sql, None, max_rows=max_rows, timeout_s=timeout_s, max_bytes=max_bytes)


def public_text(text: str, path: str | None = None) -> str:
    """``text`` with the warehouse's absolute path shortened to its file name: a viewer of
    the dashboard sees which file, never where it lives on the server."""
    full = str(Path(path or current_path()).resolve())
    text = str(text).replace(full, Path(full).name).replace(str(path or current_path()), Path(full).name)
    return text.replace(str(Path(full).parent) + "/", "")


# ---------------------------------------------------------------- status


@dataclass(frozen=True)
class Status:
    """What the warehouse file holds: kind is missing | empty | error | ok."""

    kind: str
    path: str
    message: str = ""
    runs: int = 0
    devices: int = 0
    trace_rows: int = 0


def _read_status(reader: Reader) -> Status:
    with reader.cursor() as cur:
        version = migrations.current_version(cur)
        if version == 0:
            return Status("empty", reader.path, "the file has no fleetphysics tables yet")
        if version < migrations.latest_version():
            return Status("error", reader.path, f"{reader.path}: the warehouse is at schema version {version}, older "
                          f"than this dashboard reads ({migrations.latest_version()}); ingest once "
                          "(`fleetphysics ingest DIR`) to migrate it")
        runs, devices, rows = cur.execute(
            "SELECT count(DISTINCT run_id), count(DISTINCT device_uid), coalesce(sum(trace_rows), 0) FROM run_devices"
        ).fetchall()[0]
    if not devices:
        return Status("empty", reader.path, "the warehouse has no runs yet")
    return Status("ok", reader.path, runs=int(runs), devices=int(devices), trace_rows=int(rows))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _cached_status(path: str, stamp: tuple) -> Status:
    return _read_status(Reader(path))


def warehouse_status(path: str) -> Status:
    """missing / empty / error / ok for the warehouse at ``path``; never raises for the
    expected failures (a missing file, a held lock, a file that is not a warehouse)."""
    if not Path(path).is_file():
        return Status("missing", path, "no warehouse file here yet")
    try:
        return _cached_status(path, _stamp(path))
    except WarehouseError as exc:
        return Status("error", path, str(exc))


# ---------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """The sidebar's filters (all kept in the URL). Empty means no restriction."""

    runs: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()
    date_from: dt.date | None = None
    date_to: dt.date | None = None

    def where(self, include_runs: bool = True, prefix: str = "") -> tuple[str, dict]:
        """A WHERE clause on v_run_constants' columns (``prefix``: a table alias and dot)
        and its named parameters."""
        clauses, params = [], {}
        lists = (("runs", "run_id", self.runs if include_runs else ()), ("gpus", "gpu_name", self.gpus),
                 ("hosts", "host", self.hosts), ("fps", "fingerprint", self.fingerprints))
        for name, column, values in lists:
            if values:
                clauses.append(f"list_contains(${name}::VARCHAR[], {prefix}{column})")
                params[name] = list(values)
        if self.date_from is not None:
            clauses.append(f"{prefix}started_wall_ns >= $t_from")
            params["t_from"] = _epoch_ns(self.date_from)
        if self.date_to is not None:
            clauses.append(f"{prefix}started_wall_ns < $t_to")
            params["t_to"] = _epoch_ns(self.date_to + dt.timedelta(days=1))
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return bool(self.runs or self.gpus or self.hosts or self.fingerprints or self.date_from or self.date_to)


def _epoch_ns(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()) * 10**9


def current_filters() -> Filters:
    """The filters the sidebar put in session state (none outside the app)."""
    try:
        value = st.session_state.get("_filters")
    except Exception:  # noqa: BLE001 - no script run context (bench, plain Python)
        value = None
    return value if isinstance(value, Filters) else Filters()


_LATEST = ("QUALIFY row_number() OVER (PARTITION BY device_uid, fingerprint "
           "ORDER BY started_wall_ns DESC NULLS LAST, run_id DESC) = 1")


def _selection(f: Filters, latest: bool = True, include_runs: bool = True) -> tuple[str, dict]:
    """``sel``: the filtered run x device rows of v_run_constants; with ``latest``, the
    latest run per device and fingerprint among them (v_fleet_latest, within the filter)."""
    where, params = f.where(include_runs)
    return f"sel AS (SELECT * FROM v_run_constants {where} {_LATEST if latest else ''})", params


def filter_options() -> pd.DataFrame:
    """Every run x device with the columns the filters choose from."""
    return frame("SELECT run_id, device_uid, host, gpu_name, fingerprint, simulated, started_wall_ns "
                 "FROM v_run_constants ORDER BY started_wall_ns DESC NULLS LAST, run_id DESC")


def device_labels() -> list[str]:
    """The label of every (device, fingerprint) in the warehouse, as the pages label them
    when nothing is filtered (the key of each device's color)."""
    rows = filter_options().drop_duplicates(["device_uid", "fingerprint"])
    return list(add_labels(rows)["label"])


# ---------------------------------------------------------------- labels


def add_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``label``: host · GPU, made unique with the device and fingerprint where needed,
    with "(simulated)" for simulated devices. Every (device_uid, fingerprint) gets one label
    and no two get the same one."""
    df = df.copy()
    if df.empty:
        df["label"] = pd.Series(dtype=str)
        return df
    gpu = df["gpu_name"].fillna("unknown GPU").astype(str) if "gpu_name" in df else pd.Series("GPU", index=df.index)
    base = df["host"].fillna("?").astype(str) + " · " + gpu
    per_base = df.assign(_b=base).groupby("_b")["device_uid"].transform("nunique")
    base = base.where(per_base <= 1, base + " #" + df["device_uid"].astype(str).str[-6:])
    if "fingerprint" in df:
        fp = df["fingerprint"].astype(str)
        fps = df.groupby("device_uid")["fingerprint"].transform("nunique")
        base = base.where(fps <= 1, base + " fp " + fp.str[:8])
    sim = df["simulated"].fillna(False).astype(bool) if "simulated" in df else pd.Series(False, index=df.index)
    label = base.where(~sim, base + " (simulated)")
    keys = list(zip(df["device_uid"], df["fingerprint"] if "fingerprint" in df else [None] * len(df)))
    # Fingerprints that share their first characters (or device ids that share their tail):
    # number the later ones so no two keys share a label.
    owner: dict[str, tuple] = {}
    unique = []
    for key, text in zip(keys, label):
        candidate, n = text, 1
        while owner.get(candidate, key) != key:
            n += 1
            candidate = f"{text} [{n}]"
        owner[candidate] = key
        unique.append(candidate)
    df["label"] = unique
    return df


def attach_labels(df: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """Copy ``label`` (and simulated) from a labelled selection onto rows keyed by
    run_id and device_uid."""
    keys = labelled[["run_id", "device_uid", "label", "simulated"]].drop_duplicates(["run_id", "device_uid"])
    out = df.drop(columns=[c for c in ("label", "simulated") if c in df.columns]).merge(keys, on=["run_id", "device_uid"], how="inner")
    return out


# ---------------------------------------------------------------- page queries


def fleet(f: Filters) -> pd.DataFrame:
    """One row per device and fingerprint (its latest run within the filters) with every
    key constant and quality flag, the heat-soak end temperatures and peer deltas."""
    cte, params = _selection(f)
    sql = f"""
    WITH {cte}
    SELECT sel.*,
           hs.t_start_c AS heat_t_start_c, hs.t_end_c AS heat_t_end_c, hs.duration_s AS heat_duration_s,
           hs.fit_r2 AS heat_fit_r2, hs.power_mean_w AS heat_power_mean_w,
           b.peers AS idle_peers, b.peer_median_idle_w, b.delta_w AS idle_delta_w, b.delta_sem AS idle_delta_sem
    FROM sel
    LEFT JOIN heat_soak hs ON hs.run_id = sel.run_id AND hs.device_uid = sel.device_uid
    LEFT JOIN v_baseline_compare b
           ON b.run_id = sel.run_id AND b.device_uid = sel.device_uid AND b.fingerprint = sel.fingerprint
    ORDER BY sel.simulated, sel.gpu_name, sel.host, sel.device_uid
    """
    return add_labels(frame(sql, params))


def _union(parts: list[str]) -> str:
    return "\nUNION ALL\n".join(parts)


def baseline_distribution(f: Filters) -> pd.DataFrame:
    """Quantiles (box statistics) of the idle samples in each device's baseline window,
    on the field the baseline was taken on, floor readings left out; one row per run x device."""
    cte, params = _selection(f)
    windows = frame(f"""
    WITH {cte},
    win AS (
        SELECT m.run_id, m.device_uid,
               min(m.t_ns) FILTER (WHERE m.name = 'window_start') AS t0,
               min(m.t_ns) FILTER (WHERE m.name = 'window_end') AS t1,
               min(m.t_ns) FILTER (WHERE m.name = 'phase_start') AS p0,
               max(m.t_ns) FILTER (WHERE m.name = 'phase_end') AS p1
        FROM markers m JOIN sel ON sel.run_id = m.run_id AND sel.device_uid = m.device_uid
        WHERE m.name IN ('window_start', 'window_end', 'phase_start', 'phase_end')
          AND json_extract_string(m.attrs_json, '$.phase') = 'baseline'
        GROUP BY m.run_id, m.device_uid
    ),
    -- without baseline markers (an imported recording): the idle stretch the analysis found
    found AS (
        SELECT er.run_id, er.device_uid,
               TRY_CAST(json_extract_string(er.payload_json, '$.figures.idle_t_start_ns') AS BIGINT) AS t0,
               TRY_CAST(json_extract_string(er.payload_json, '$.figures.idle_t_end_ns') AS BIGINT) AS t1
        FROM experiment_results er JOIN sel ON sel.run_id = er.run_id AND sel.device_uid = er.device_uid
        WHERE er.experiment = 'baseline'
    )
    SELECT sel.run_id, sel.device_uid, rd.trace_key, coalesce(sel.idle_field, 'power_w') AS field,
           coalesce(win.t0, win.p0, found.t0) AS t0, coalesce(win.t1, win.p1, found.t1) AS t1, b.floor_w
    FROM sel LEFT JOIN win ON win.run_id = sel.run_id AND win.device_uid = sel.device_uid
    LEFT JOIN found ON found.run_id = sel.run_id AND found.device_uid = sel.device_uid
    JOIN run_devices rd ON rd.run_id = sel.run_id AND rd.device_uid = sel.device_uid
    LEFT JOIN baselines b
           ON b.run_id = sel.run_id AND b.device_uid = sel.device_uid AND b.field = coalesce(sel.idle_field, 'power_w')
    WHERE coalesce(win.t0, win.p0, found.t0) IS NOT NULL AND coalesce(win.t1, win.p1, found.t1) IS NOT NULL
    """, params)
    if windows.empty:
        return pd.DataFrame(columns=["run_id", "device_uid", "field", "n", "q05", "q25", "q50", "q75", "q95",
                                     "mean", "lo", "hi"])
    parts = []
    for w in windows.itertuples():
        column = w.field if w.field in ("power_w", "power_instant_w", "power_avg_1s_w") else "power_w"
        # Literal integers from the warehouse itself: constants let the scan skip row groups.
        # Floor readings (the sensor's idle floor value, counted in floor_fraction) are left
        # out of the quantiles, as the robust mean leaves them out.
        floor = f"AND {column} > {float(w.floor_w) + 1e-6!r}" if pd.notna(w.floor_w) else ""
        parts.append(f"""
        SELECT {sql_literal(w.run_id)} AS run_id, {sql_literal(w.device_uid)} AS device_uid, '{column}' AS field,
               count({column}) AS n, quantile_cont({column}, 0.05) AS q05, quantile_cont({column}, 0.25) AS q25,
               quantile_cont({column}, 0.5) AS q50, quantile_cont({column}, 0.75) AS q75,
               quantile_cont({column}, 0.95) AS q95, avg({column}) AS mean, min({column}) AS lo, max({column}) AS hi
        FROM v_power_trace_values
        WHERE trace_key = {int(w.trace_key)} AND t_ns BETWEEN {int(w.t0)} AND {int(w.t1)} {floor}""")
    return frame(_union(parts))


def heat_soak(f: Filters) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per device, binned series) of the heat-soak experiment."""
    cte, params = _selection(f)
    summary = frame(f"""
    WITH {cte}
    SELECT sel.run_id, sel.device_uid, sel.fingerprint, sel.host, sel.gpu_name, sel.simulated,
           hs.tau_s, hs.t_inf_c, hs.t_start_c, hs.t_end_c, hs.equilibrium, hs.equilibrium_kind,
           hs.time_to_equilibrium_s, hs.throttled, hs.throttle_s, hs.power_mean_w, hs.fit_r2, hs.duration_s,
           hs.quality, sel.run_quality, sel.thermal_throttled
    FROM sel JOIN heat_soak hs ON hs.run_id = sel.run_id AND hs.device_uid = sel.device_uid
    ORDER BY sel.simulated, sel.gpu_name, sel.host
    """, params)
    series = frame(f"""
    WITH {cte},
    s AS (
        SELECT x.*, greatest((max(x.t_s) OVER dev - min(x.t_s) OVER dev) / {SERIES_POINTS}, 1e-9) AS bin
        FROM heat_soak_series x JOIN sel ON sel.run_id = x.run_id AND sel.device_uid = x.device_uid
        WINDOW dev AS (PARTITION BY x.run_id, x.device_uid)
    )
    SELECT run_id, device_uid, min(t_s) AS t_s, avg(temp_c) AS temp_c, avg(power_w) AS power_w,
           avg(sm_clock_mhz) AS sm_clock_mhz
    FROM s
    GROUP BY run_id, device_uid, floor(t_s / bin)
    ORDER BY run_id, device_uid, t_s
    """, params)
    return summary, series


def vram_cliff(f: Filters) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per device from v_vram_cliff_compare's columns, points per batch size)."""
    cte, params = _selection(f)
    summary = frame(f"""
    WITH {cte}
    SELECT sel.run_id, sel.device_uid, sel.fingerprint, sel.host, sel.gpu_name, sel.simulated,
           sel.vram_capacity_mib, sel.vram_fragmentation, sel.vram_max_context_batch1, sel.vram_cliff_peak_mib_batch1,
           sel.vram_max_batch_size, sel.vram_max_context_max_batch, sel.vram_cliff_cause_batch1,
           sel.vram_cliff_quality, sel.run_quality,
           c.peers, c.peer_median_max_context_batch1, c.delta_max_context_batch1
    FROM sel
    LEFT JOIN v_vram_cliff_compare c
           ON c.run_id = sel.run_id AND c.device_uid = sel.device_uid AND c.fingerprint = sel.fingerprint
    WHERE sel.vram_max_context_batch1 IS NOT NULL OR sel.vram_max_context_max_batch IS NOT NULL
       OR sel.vram_capacity_mib IS NOT NULL
    ORDER BY sel.simulated, sel.gpu_name, sel.host
    """, params)
    points = frame(f"""
    WITH {cte}
    SELECT p.run_id, p.device_uid, p.batch_size, p.max_context, p.first_failing_context, p.cause,
           p.model_max_context, p.n_probes, p.peak_allocated_mib, p.reserved_mib, p.nvml_used_mib, p.peak_component
    FROM vram_cliff_points p JOIN sel ON sel.run_id = p.run_id AND sel.device_uid = p.device_uid
    ORDER BY p.run_id, p.device_uid, p.batch_size
    """, params)
    return summary, points


def joule(f: Filters) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points per phase x batch size with quality, fits per phase)."""
    cte, params = _selection(f)
    points = frame(f"""
    WITH {cte}
    SELECT c.run_id, c.device_uid, c.phase, c.batch_size, c.j_per_token, c.j_per_token_sem, c.tokens_per_s,
           c.power_w, c.n_events, c.energy_quality, sel.run_quality
    FROM joule_curve c JOIN sel ON sel.run_id = c.run_id AND sel.device_uid = c.device_uid
    ORDER BY c.run_id, c.device_uid, c.phase, c.batch_size
    """, params)
    fits = frame(f"""
    WITH {cte}
    SELECT j.run_id, j.device_uid, j.phase, j.model, j.params_json, j.r2, j.quality
    FROM joule_fit j JOIN sel ON sel.run_id = j.run_id AND sel.device_uid = j.device_uid
    ORDER BY j.run_id, j.device_uid, j.phase
    """, params)
    return points, fits


def training_coupling(f: Filters) -> pd.DataFrame:
    """One row per device and fingerprint: its latest run with a training-coupling result
    within the filters (the experiment is not in every run), with its workload signature,
    verdict and the peer medians of v_training_coupling_compare; labelled."""
    cte, params = _selection(f, latest=False)
    return add_labels(frame(f"""
    WITH {cte}
    SELECT sel.run_id, sel.device_uid, sel.fingerprint, sel.host, sel.gpu_name, sel.simulated, sel.started_wall_ns,
           sel.run_quality, tc.* EXCLUDE (run_id, device_uid, simulated),
           c.peers, c.peer_median_power_p95_w, c.peer_median_temp_p95_c, c.peer_median_collapse_rate_per_gated_h
    FROM sel
    JOIN training_coupling tc ON tc.run_id = sel.run_id AND tc.device_uid = sel.device_uid
    LEFT JOIN v_training_coupling_compare c
           ON c.run_id = sel.run_id AND c.device_uid = sel.device_uid AND c.fingerprint = sel.fingerprint
    QUALIFY row_number() OVER (PARTITION BY sel.device_uid, sel.fingerprint
                               ORDER BY sel.started_wall_ns DESC NULLS LAST, sel.run_id DESC) = 1
    ORDER BY sel.simulated, sel.gpu_name, sel.host, sel.device_uid
    """, params))


def training_steps(run_id: str, device_uid: str) -> pd.DataFrame:
    """Every training step of one run x device, in step order."""
    return frame("""
    SELECT step, t_start_ns, t_end_ns, loss, grad_norm, lr, lr_spike, energy_j, aligned, n_samples, power_w, temp_c,
           temp_slope_c_per_s, rle, collapse, spike
    FROM training_steps WHERE run_id = $run AND device_uid = $dev ORDER BY step
    """, {"run": run_id, "dev": device_uid})


def rle_timeline(run_id: str, device_uid: str) -> pd.DataFrame:
    """One run x device's RLE series in at most SERIES_POINTS bins, each with its means and
    whether a collapse started in it (so no collapse is lost to the binning)."""
    return frame(f"""
    WITH s AS (
        SELECT *, greatest((max(t_s) OVER () - min(t_s) OVER ()) / {SERIES_POINTS}, 1.0) AS bin
        FROM rle_series WHERE run_id = $run AND device_uid = $dev
    )
    SELECT min(t_s) AS t_s, min(t_ns) AS t_ns, avg(rle) AS rle, avg(power_w) AS power_w, avg(temp_c) AS temp_c,
           avg(util_pct) AS util_pct, bool_or(collapse) AS collapse,
           count(*) FILTER (WHERE collapse_start) AS collapses
    FROM s GROUP BY floor(t_s / bin) ORDER BY t_s
    """, {"run": run_id, "dev": device_uid})


def sensor_response(f: Filters) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(instrument_response figures per field, step responses averaged over up to
    MAX_STEP_EDGES rising load edges of the instrument_response phase, in time buckets
    relative to the edge)."""
    cte, params = _selection(f)
    figures = frame(f"""
    WITH {cte}
    SELECT ir.run_id, ir.device_uid, ir.field, ir.update_period_ms, ir.rise_ms, ir.delay_ms, ir.window_ms,
           ir.idle_w, ir.load_w, ir.n_steps, ir.quality,
           rise.ci_low AS rise_ci_low_ms, rise.ci_high AS rise_ci_high_ms,
           win.ci_low AS window_ci_low_ms, win.ci_high AS window_ci_high_ms, win.resolved AS window_resolved
    FROM instrument_response ir JOIN sel ON sel.run_id = ir.run_id AND sel.device_uid = ir.device_uid
    LEFT JOIN v_figure_intervals rise ON rise.run_id = ir.run_id AND rise.device_uid = ir.device_uid
          AND rise.field = ir.field AND rise.figure = 'rise'
    LEFT JOIN v_figure_intervals win ON win.run_id = ir.run_id AND win.device_uid = ir.device_uid
          AND win.field = ir.field AND win.figure = 'window'
    ORDER BY ir.run_id, ir.device_uid, ir.field
    """, params)
    edges = frame(f"""
    WITH {cte},
    ph AS (
        SELECT m.run_id, m.device_uid,
               min(m.t_ns) FILTER (WHERE m.name = 'phase_start') AS p0,
               max(m.t_ns) FILTER (WHERE m.name = 'phase_end') AS p1
        FROM markers m JOIN sel ON sel.run_id = m.run_id AND sel.device_uid = m.device_uid
        WHERE m.name IN ('phase_start', 'phase_end')
          AND json_extract_string(m.attrs_json, '$.phase') = 'instrument_response'
        GROUP BY m.run_id, m.device_uid
    ),
    analysed AS (  -- an imported recording analysed by `fleetphysics analyze`: no phase, all its loads
        SELECT er.run_id, er.device_uid FROM experiment_results er
        JOIN sel ON sel.run_id = er.run_id AND sel.device_uid = er.device_uid
        WHERE er.experiment = 'instrument_response'
    ),
    loads AS (
        SELECT m.run_id, m.device_uid, m.t_ns,
               TRY_CAST(json_extract_string(m.attrs_json, '$.level') AS DOUBLE) AS level, ph.p1
        FROM markers m JOIN ph ON ph.run_id = m.run_id AND ph.device_uid = m.device_uid
        WHERE m.name = 'load' AND m.t_ns >= ph.p0 AND (ph.p1 IS NULL OR m.t_ns <= ph.p1)
        UNION ALL
        SELECT m.run_id, m.device_uid, m.t_ns,
               TRY_CAST(json_extract_string(m.attrs_json, '$.level') AS DOUBLE) AS level, NULL AS p1
        FROM markers m JOIN analysed a ON a.run_id = m.run_id AND a.device_uid = m.device_uid
        ANTI JOIN ph ON ph.run_id = m.run_id AND ph.device_uid = m.device_uid
        WHERE m.name = 'load'
    ),
    steps AS (
        SELECT *, lag(level) OVER w AS prev_level, lag(t_ns) OVER w AS prev_t_ns, lead(t_ns) OVER w AS next_t_ns
        FROM loads WINDOW w AS (PARTITION BY run_id, device_uid ORDER BY t_ns)
    )
    SELECT s.run_id, s.device_uid, rd.trace_key, s.t_ns AS edge_ns, s.prev_t_ns, coalesce(s.next_t_ns, s.p1) AS next_ns,
           coalesce(ps.period_ms, 10.0) AS period_ms
    FROM steps s
    JOIN run_devices rd ON rd.run_id = s.run_id AND rd.device_uid = s.device_uid
    LEFT JOIN poller_stats ps ON ps.run_id = s.run_id AND ps.device_uid = s.device_uid
    WHERE s.level >= 0.5 AND coalesce(s.prev_level, 0) < 0.5
    QUALIFY row_number() OVER (PARTITION BY s.run_id, s.device_uid ORDER BY s.t_ns) <= {MAX_STEP_EDGES}
    """, params)
    if edges.empty:
        return figures, pd.DataFrame(columns=["run_id", "device_uid", "rel_ms", "power_w", "power_instant_w",
                                              "power_avg_1s_w", "edges", "on_ms"])
    parts = []
    for e in edges.itertuples():
        pre = 1_000_000_000 if pd.isna(e.prev_t_ns) else min(1_000_000_000, int(e.edge_ns - e.prev_t_ns))
        post = 3_000_000_000 if pd.isna(e.next_ns) else min(3_000_000_000, int(e.next_ns - e.edge_ns))
        bucket_ns = int(max(10.0, float(e.period_ms)) * 1e6)
        edge = int(e.edge_ns)
        parts.append(f"""
        SELECT {sql_literal(e.run_id)} AS run_id, {sql_literal(e.device_uid)} AS device_uid, {edge} AS edge_ns,
               CAST({post / 1e6} AS DOUBLE) AS on_ms,
               CAST(round((t_ns - {edge}) / {bucket_ns}) * {bucket_ns / 1e6} AS DOUBLE) AS rel_ms,
               avg(power_w) AS power_w, avg(power_instant_w) AS power_instant_w, avg(power_avg_1s_w) AS power_avg_1s_w
        FROM v_power_trace_values
        WHERE trace_key = {int(e.trace_key)} AND t_ns BETWEEN {edge - pre} AND {edge + post}
        GROUP BY rel_ms""")
    raw = frame(f"""
    SELECT run_id, device_uid, rel_ms, avg(power_w) AS power_w, avg(power_instant_w) AS power_instant_w,
           avg(power_avg_1s_w) AS power_avg_1s_w, count(DISTINCT edge_ns) AS edges, min(on_ms) AS on_ms
    FROM ({_union(parts)}) GROUP BY run_id, device_uid, rel_ms ORDER BY run_id, device_uid, rel_ms
    """)
    return figures, raw


def normalize_steps(raw: pd.DataFrame) -> pd.DataFrame:
    """Long table (run_id, device_uid, field, rel_ms, watts, response) with each field's
    response scaled to 0 before the edge and 1 on the plateau (last quarter of the on time);
    a field whose step is lost in its noise (< 5 standard deviations of the idle readings)
    is left out."""
    columns = ["run_id", "device_uid", "field", "rel_ms", "watts", "response"]
    if raw.empty:
        return pd.DataFrame(columns=columns)
    fields = [f for f in ("power_w", "power_instant_w", "power_avg_1s_w") if f in raw]
    long = raw.melt(id_vars=["run_id", "device_uid", "rel_ms", "on_ms"], value_vars=fields, var_name="field",
                    value_name="watts").dropna(subset=["watts"])
    keys = ["run_id", "device_uid", "field"]
    on_ms = long.groupby(keys)["on_ms"].transform("min")
    before = long["watts"].where(long["rel_ms"] < 0)
    on_plateau = (long["rel_ms"] >= 0.75 * on_ms) & (long["rel_ms"] <= on_ms)
    grouped = long.assign(_before=before, _plateau=long["watts"].where(on_plateau)).groupby(keys)
    idle = grouped["_before"].transform("mean")
    noise = grouped["_before"].transform("std").fillna(0.0)
    span = grouped["_plateau"].transform("mean") - idle
    points = grouped["watts"].transform("count")
    # No visible step (the field did not follow the load): scaling noise by a tiny span
    # would draw nonsense.
    keep = (points >= 3) & span.abs().gt(np.maximum(1e-6, 5 * noise)) & span.notna()
    out = long.assign(response=(long["watts"] - idle) / span)[keep]
    return out[columns].reset_index(drop=True)


def drift_devices(f: Filters) -> pd.DataFrame:
    """Devices within the filters (runs filter ignored) with how many runs each has."""
    where, params = f.where(include_runs=False)
    return add_labels(frame(f"""
    SELECT device_uid, any_value(host ORDER BY started_wall_ns DESC) AS host,
           any_value(gpu_name ORDER BY started_wall_ns DESC) AS gpu_name, bool_or(simulated) AS simulated,
           count(*) AS runs, count(DISTINCT fingerprint) AS fingerprints
    FROM v_run_constants {where}
    GROUP BY device_uid ORDER BY runs DESC, device_uid
    """, params))


def drift(f: Filters, device_uid: str) -> pd.DataFrame:
    """v_device_drift for one device (date, GPU, host and fingerprint filters applied),
    oldest first, with the SEM and equilibrium columns the view leaves out."""
    where, params = f.where(include_runs=False, prefix="d.")
    params = dict(params, device=device_uid)
    cond = where.replace("WHERE ", "AND ", 1) if where else ""
    return frame(f"""
    SELECT d.*, rc.idle_sem_w, rc.time_to_equilibrium_s, rc.equilibrium_kind, rc.heat_soak_quality,
           rc.vram_cliff_quality, rc.j_per_token_batch1_quality
    FROM v_device_drift d
    JOIN v_run_constants rc ON rc.run_id = d.run_id AND rc.device_uid = d.device_uid
    WHERE d.device_uid = $device {cond}
    ORDER BY d.run_seq
    """, params)


def runs(f: Filters) -> pd.DataFrame:
    """Run x device rows within the filters, newest first, for the run explorer."""
    cte, params = _selection(f, latest=False)
    return add_labels(frame(f"""
    WITH {cte}
    SELECT sel.run_id, sel.device_uid, sel.fingerprint, sel.host, sel.gpu_name, sel.simulated, sel.started_wall_ns,
           sel.run_state, sel.end_reason, sel.run_quality, rd.trace_key, rd.t_first_ns, rd.t_last_ns, rd.trace_rows,
           rd.clock, rd.source
    FROM sel JOIN run_devices rd ON rd.run_id = sel.run_id AND rd.device_uid = sel.device_uid
    ORDER BY sel.started_wall_ns DESC NULLS LAST, sel.run_id DESC, sel.host, sel.device_uid
    """, params))


def trace_buckets(trace_key: int, t0_ns: int, t1_ns: int, points: int = TRACE_POINTS) -> tuple[pd.DataFrame, int]:
    """The trace between t0 and t1 in about ``points`` time buckets (min, mean, max);
    returns (frame, bucket width in ns). A bucket of one sample is the sample itself."""
    span = max(1, int(t1_ns) - int(t0_ns))
    bucket = max(1, math.ceil(span / max(1, points)))
    df = frame(f"""
    SELECT ({int(t0_ns)} + ((t_ns - {int(t0_ns)}) // {bucket}) * {bucket}) AS t_ns,
           avg(power_w) AS power_w, min(power_w) AS power_w_min, max(power_w) AS power_w_max,
           avg(power_instant_w) AS power_instant_w, min(power_instant_w) AS power_instant_w_min,
           max(power_instant_w) AS power_instant_w_max, avg(power_avg_1s_w) AS power_avg_1s_w,
           avg(temp_c) AS temp_c, avg(sm_clock_mhz) AS sm_clock_mhz, avg(util_gpu) AS util_gpu,
           max(vram_used_mib) AS vram_used_mib, count(*) AS samples,
           count(*) FILTER (WHERE NOT read_ok) AS failed_reads
    FROM v_power_trace_values
    WHERE trace_key = {int(trace_key)} AND t_ns BETWEEN {int(t0_ns)} AND {int(t1_ns)}
    GROUP BY 1 ORDER BY 1
    """)
    return df, bucket


def run_spans(run_id: str, device_uid: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(phase spans, event spans, throttle spans) of one run x device, in t_ns."""
    params = {"run": run_id, "dev": device_uid}
    phases = frame("""
    WITH m AS (
        SELECT seq, t_ns, name, json_extract_string(attrs_json, '$.phase') AS phase
        FROM markers WHERE run_id = $run AND device_uid = $dev AND name IN ('phase_start', 'phase_end')
    ),
    s AS (SELECT *, row_number() OVER (PARTITION BY phase, name ORDER BY seq) AS k FROM m)
    SELECT a.phase, a.t_ns AS t_start_ns, b.t_ns AS t_end_ns
    FROM s a LEFT JOIN s b ON b.phase = a.phase AND b.k = a.k AND b.name = 'phase_end'
    WHERE a.name = 'phase_start' AND a.phase IS NOT NULL AND position('.' IN a.phase) = 0
    ORDER BY a.t_ns
    """, params)
    events = frame("""
    SELECT event_id, experiment, phase, batch_size, t_start_ns, t_end_ns, energy_net_j, energy_quality,
           tokens_per_second
    FROM events WHERE run_id = $run AND device_uid = $dev ORDER BY t_start_ns
    """, params)
    throttle = frame("""
    SELECT seq, t_start_ns, t_end_ns, duration_s, reasons, thermal
    FROM throttle_events WHERE run_id = $run AND device_uid = $dev ORDER BY seq
    """, params)
    return phases, events, throttle


VIEWS_HELP = (
    ("v_fleet_latest", "latest run per device and fingerprint: every key constant and its quality"),
    ("v_run_constants", "the same for every run x device"),
    ("v_baseline_compare", "idle baseline against the peer median (delta in W, fraction and SEMs)"),
    ("v_equilibrium_compare", "tau and T_inf against the peer median"),
    ("v_vram_cliff_compare", "max context at batch 1 against the peer median"),
    ("v_joule_compare", "J/token at batch 1 and the largest batch against the peer median"),
    ("v_training_coupling_compare", "training coupling: verdict, p-value, workload signature against the peer median"),
    ("v_device_drift", "one device across runs and fingerprints, with changes since the previous run"),
    ("v_power_trace", "every poller row with run_id and device_uid (large: filter and LIMIT)"),
    ("v_run_quality", "run quality per run x device"),
)
