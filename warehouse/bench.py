"""`fleetphysics bench ingest` and `fleetphysics bench views`.

``bench ingest`` times :func:`warehouse.ingest.ingest_tables` on a synthetic trace into a
file-backed warehouse in a temp dir (validation, the transaction, commit and close all
counted; the median of a few repeats) and, in the same run, two baselines: DuckDB's own
INSERT of the same columns into a table of the same types and compression (the floor for
any DuckDB-backed ingest on this machine) and ``executemany`` on a sample of the same rows (the row-by-row way). With
``--unchecked`` it also times the same ingest into a power_trace without its CHECKs, so the
constraints' cost is measured rather than guessed.
``bench views`` builds a warehouse of many runs and times ``SELECT * FROM v_fleet_latest``.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from agents.cli_args import positive_int
from agents.host import host_platform

from .columns import WAREHOUSE_TRACE_COLUMNS
from .connection import WRITER_CONFIG, connect_writer
from .ingest import ROW_GROUP_ROWS, ingest_tables
from .progress import Report, no_report, progress_bars

T0_WALL_NS = 1_700_000_000_000_000_000


def synthetic_trace(rows: int, seed: int = 0, t0_ns: int = 1_000_000_000, device_uuid: str = "GPU-bench") -> pa.Table:
    """A poller trace shaped like a real one: 10 ms grid with jitter, power updating every
    100 ms, slow temperature, steady clocks (numpy, no Python loop over rows)."""
    rng = np.random.default_rng(seed)
    late_ms = np.round(rng.exponential(0.2, rows), 3)
    t = t0_ns + np.arange(rows, dtype=np.int64) * 10_000_000 + (late_ms * 1e6).astype(np.int64)
    steps = np.repeat(np.round(rng.uniform(50, 400, rows // 10 + 1), 2), 10)[:rows]
    dt_s = np.diff(t, prepend=t[0] - 10_000_000) / 1e9
    uuid = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array([device_uuid]))
    return pa.table({
        "t_ns": t, "wall_ns": t + T0_WALL_NS, "device_uuid": uuid,
        "power_w": steps, "power_instant_w": np.round(steps * 1.01, 2),
        "energy_j": np.round(np.cumsum(steps * 0.01), 3),
        "temp_c": np.round(40 + 30 * (1 - np.exp(-np.arange(rows) / 1e6)), 0),
        "sm_clock_mhz": np.full(rows, 1800.0), "mem_clock_mhz": np.full(rows, 9501.0),
        "util_gpu": np.repeat(np.round(rng.uniform(0, 100, rows // 10 + 1)), 10)[:rows],
        "util_mem": np.full(rows, 20.0), "vram_used_mib": np.full(rows, 1024.0),
        "clocks_event_reasons": np.zeros(rows, dtype=np.int64),
        "pstate": pa.array(np.zeros(rows, dtype=np.int32), pa.int32()),
        "read_ok": np.ones(rows, dtype=bool), "dt_s": dt_s, "lateness_ms": late_ms,
    })


def _markers() -> pa.Table:
    return pa.table({"t_ns": pa.array([1_000_000_000], pa.int64()), "wall_ns": pa.array([None], pa.int64()),
                     "device_uuid": pa.array([None], pa.string()), "name": ["phase_start"],
                     "attrs_json": ['{"phase": "bench"}']})


def _metadata(run_id: str, device_uid: str, host: str, started_ns: int) -> tuple[dict, dict]:
    meta = {"schema_version": 1, "run_id": run_id, "host": host, "device_uid": device_uid,
            "fingerprint": f"fp-{device_uid}", "simulated": True, "run_state": "completed",
            "end_reason": "completed", "started_wall_ns": started_ns, "ended_wall_ns": started_ns + 10**12}
    fp = {"device_uid": device_uid, "fingerprint": f"fp-{device_uid}", "comparability_key": "bench",
          "simulated": True, "fields": {"gpu_name": "Bench GPU", "vram_total_mib": 81920}}
    return meta, fp


def _experiments(rng: np.random.Generator) -> dict[str, dict]:
    idle = float(rng.normal(60, 2))
    return {
        "baseline": {"experiment": "baseline", "schema_version": 1,
                     "figures": {"idle_robust_w": idle, "idle_sem_w": 0.05, "floor_fraction": 0.9, "fake_idle": False},
                     "quality": {"overall": "good"}},
        "instrument_response": {"experiment": "instrument_response", "schema_version": 1, "figures": {"fields": {
            "power_w": {"update_period_ms": 100, "rise_ms": float(rng.normal(900, 20))},
            "power_instant_w": {"update_period_ms": 100, "rise_ms": float(rng.normal(250, 10))}}}},
        "vram_cliff": {"experiment": "vram_cliff", "schema_version": 1,
                       "figures": {"vram_total_mib": 81920, "cliff_mib": float(rng.normal(79000, 100))}},
        "joule_curve": {"experiment": "joule_curve", "schema_version": 1, "figures": {"points": [
            {"phase": "decode", "batch_size": b, "j_per_token": 2.0 / b} for b in (1, 8, 64)]}},
        "heat_soak": {"experiment": "heat_soak", "schema_version": 1,
                      "figures": {"tau_s": float(rng.normal(120, 5)), "t_inf_c": float(rng.normal(78, 1)),
                                  "equilibrium": True, "series": {"t_s": [0.0], "temp_c": [40.0]}}},
    }


# One CHECK clause of DuckDB's stored CREATE TABLE: "CHECK((x BETWEEN 0 AND 5000))".
_CHECK_CLAUSE = re.compile(r",\s*CHECK\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)")


def bare_trace_ddl(con) -> str:
    """power_trace's CREATE TABLE as DuckDB keeps it (column order and types, NOT NULL and
    each column's compression) without its CHECK clauses."""
    sql = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'power_trace'").fetchall()[0][0]
    return _CHECK_CLAUSE.sub("", sql)


def bench_machine() -> dict:
    """What a rows/s figure depends on besides the code: the CPU, how many cores, and DuckDB."""
    host = host_platform()
    return {"cpu_model": host["cpu_model"], "cpu_cores": host["cpu_cores"], "duckdb": duckdb.__version__}


def _duckdb_floor_s(path: Path, stored: pa.Table, ddl: str) -> float:
    """Seconds DuckDB alone takes to store the trace's warehouse columns (``stored``) in a
    fresh file, in a table made by ``ddl`` (:func:`bare_trace_ddl`: the same types and
    compression as power_trace, no CHECKs): one INSERT from the Arrow table, no validation,
    no other table. No ingest that keeps the trace in DuckDB can beat it on this machine."""
    table = pa.Table.from_batches(stored.to_batches(max_chunksize=ROW_GROUP_ROWS), schema=stored.schema)
    start = time.perf_counter()
    con = duckdb.connect(str(path), config=dict(WRITER_CONFIG))
    try:
        con.execute(ddl)
        con.register("trace", table)
        con.execute(f"INSERT INTO power_trace (trace_key, {', '.join(stored.column_names)}) SELECT 1, * FROM trace")
    finally:
        con.close()
    return time.perf_counter() - start


def _drop_trace_constraints(path: Path) -> None:
    """Rebuild the (empty) power_trace of a fresh warehouse with the same columns, types and
    compression and no CHECKs."""
    con = connect_writer(path)
    try:
        ddl = bare_trace_ddl(con)
        con.execute("DROP TABLE power_trace")
        con.execute(ddl)
    finally:
        con.close()


def bench_ingest(rows: int = 10_000_000, sample_rows: int = 100_000, repeats: int = 3,
                 unchecked: bool = False, progress: Report = no_report) -> dict:
    """Rows/s of ingest_tables into a file warehouse (median of ``repeats``), against two
    baselines measured in the same run: DuckDB's own INSERT of the same columns, stored the
    same way (the floor, taken between the repeats so both see the same machine) and executemany on a
    sample (the row-by-row way). ``unchecked`` adds, in each repeat, the same ingest into a
    power_trace without its CHECKs (``unchecked_rows_per_s``, ``checks_s``). ``cpu_s`` is the
    median ingest's CPU seconds, every thread counted (over ``seconds`` it is the cores kept
    busy), and ``machine`` names the CPU, its cores and the DuckDB version, so figures from
    different machines are not mistaken for a change in the code. ``progress`` hears of each
    repeat and of the executemany sample, in tenths."""
    tmp = Path(tempfile.mkdtemp(prefix="fleetphysics-bench-"))
    try:
        trace = synthetic_trace(rows)
        stored = trace.select([c for c in WAREHOUSE_TRACE_COLUMNS if c in trace.column_names])
        meta, fp = _metadata("bench-run", "bench-dev", "bench-host", T0_WALL_NS)
        times, cpu, floors, bare = [], [], [], []
        progress("ingest repeats", 0, max(1, repeats))
        for i in range(max(1, repeats)):
            path = tmp / f"bench-{i}.duckdb"
            with connect_writer(path) as con:  # create and migrate first: time the ingest itself
                ddl = bare_trace_ddl(con)
            start, start_cpu = time.perf_counter(), time.process_time()  # every thread, DuckDB's included
            ingest_tables(path, meta, fp, trace, _markers())
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            floors.append(_duckdb_floor_s(tmp / f"floor-{i}.duckdb", stored, ddl))
            if unchecked:
                bare_path = tmp / f"unchecked-{i}.duckdb"
                _drop_trace_constraints(bare_path)
                start = time.perf_counter()
                ingest_tables(bare_path, meta, fp, trace, _markers())
                bare.append(time.perf_counter() - start)
            for leftover in tmp.glob("*.duckdb*"):
                leftover.unlink()
            progress("ingest repeats", i + 1, max(1, repeats))

        sample = stored.slice(0, min(sample_rows, rows))
        sample_path = tmp / "executemany.duckdb"
        values = [(1, *row) for row in zip(*(sample.column(c).to_pylist() for c in sample.column_names))]
        step = max(1, -(-len(values) // 10))  # at most ten executemany calls in one transaction, for the bar
        con = connect_writer(sample_path)
        try:
            columns = ", ".join(sample.column_names)
            marks = ", ".join("?" for _ in range(len(sample.column_names) + 1))
            progress("executemany sample", 0, len(values))
            start = time.perf_counter()
            con.execute("BEGIN TRANSACTION")
            for first in range(0, len(values), step):
                con.executemany(f"INSERT INTO power_trace (trace_key, {columns}) VALUES ({marks})",
                                values[first:first + step])
                progress("executemany sample", min(first + step, len(values)), len(values))
            con.execute("COMMIT")
            many_seconds = time.perf_counter() - start
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds, floor_s = statistics.median(times), statistics.median(floors)
    rows_per_s = rows / seconds
    many_per_s = len(values) / many_seconds
    result = {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows_per_s),
              "executemany_rows_per_s": round(many_per_s), "ratio": round(rows_per_s / many_per_s, 1),
              "repeats": len(times), "seconds_each": [round(t, 3) for t in times],
              "duckdb_floor_rows_per_s": round(rows / floor_s), "of_floor": round(floor_s / seconds, 3),
              "cpu_s": round(statistics.median(cpu), 3), "machine": bench_machine()}
    if bare:
        bare_s = statistics.median(bare)
        result |= {"unchecked_rows_per_s": round(rows / bare_s), "checks_s": round(seconds - bare_s, 3)}
    return result


def bench_views(rows: int = 100_000_000, runs: int = 1000, devices: int = 100, repeats: int = 3,
                progress: Report = no_report) -> dict:
    """Build ``rows`` trace rows over ``runs`` runs (``devices`` devices) and time v_fleet_latest;
    ``progress`` hears of each run written."""
    tmp = Path(tempfile.mkdtemp(prefix="fleetphysics-bench-"))
    try:
        path = tmp / "views.duckdb"
        per_run = max(1, rows // runs)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        con = connect_writer(path)
        try:
            progress("building runs", 0, runs)
            for i in range(runs):
                device = f"dev-{i % devices:04d}"
                meta, fp = _metadata(f"run-{i:05d}", device, f"host-{(i % devices) // 8:03d}", T0_WALL_NS + i * 10**12)
                ingest_tables(con, meta, fp, synthetic_trace(per_run, seed=i), _markers(),
                              experiments=_experiments(rng))
                progress("building runs", i + 1, runs)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        build_s = time.perf_counter() - start
        from .query import query

        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            df = query(path, "SELECT * FROM v_fleet_latest", max_rows=1_000_000)
            best = min(best, time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": per_run * runs, "runs": runs, "latest_rows": len(df), "build_s": round(build_s, 2),
            "query_s": round(best, 4), "machine": bench_machine()}


def _watched(bench, *args) -> dict:
    """Run a benchmark with progress bars on stderr (when it is a terminal)."""
    with progress_bars() as report:
        return bench(*args, progress=report)


def _print(result: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result))
    else:
        print("  ".join(f"{k}={v}" for k, v in result.items()))
    return 0


def register(bench_subparsers) -> None:
    """Add `bench ingest` and `bench views` to the shared `bench` parser."""
    p = bench_subparsers.add_parser("ingest", help="trace rows/s into a file warehouse vs executemany")
    p.add_argument("--rows", type=positive_int, default=10_000_000, help="trace rows to ingest (default 10,000,000)")
    p.add_argument("--sample-rows", type=positive_int, default=100_000, help="rows for the executemany baseline (default 100,000)")
    p.add_argument("--repeats", type=positive_int, default=3, help="ingests to take the median of (default 3)")
    p.add_argument("--unchecked", action="store_true",
                   help="also time the same ingest into a power_trace without its CHECKs (their cost)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=lambda a: _print(_watched(bench_ingest, a.rows, a.sample_rows, a.repeats, a.unchecked), a.json))

    p = bench_subparsers.add_parser("views", help="time SELECT * FROM v_fleet_latest over a large warehouse")
    p.add_argument("--rows", type=positive_int, default=100_000_000, help="trace rows in all (default 100,000,000)")
    p.add_argument("--runs", type=positive_int, default=1000, help="runs to spread them over (default 1,000)")
    p.add_argument("--devices", type=positive_int, default=100, help="distinct devices (default 100)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=lambda a: _print(_watched(bench_views, a.rows, a.runs, a.devices), a.json))
