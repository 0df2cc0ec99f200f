"""One simulated device's artifact dir with a real report of every experiment, in seconds.

The trace is rendered by the physics model (``cluster.bench_analysis.synth_device``: an idle
baseline, a square wave, a soak, inference events and training steps on one timeline); the
VRAM cliff is the real runner on a simulated board's allocator model. Every report comes
from the product's report path (``experiments.reports.analyse_all``) and is written by the
suite's artifact writer, so what ingest reads is what a suite run leaves: only the waiting
is skipped.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

S = 1_000_000_000
WALL0_NS = 1_790_000_000 * S
BOARD = "rtx4080-laptop"
RUN_ID = "run-contract"
HOST = "host-c"


@functools.lru_cache(maxsize=1)
def reports() -> tuple[dict[str, dict], pd.DataFrame, str]:
    """(report of each experiment, the rendered trace, the device's uuid), computed once."""
    from agents.markers import MarkerWriter
    from agents.profiles import load_profile
    from agents.simulated import SimulatedDevice
    from cluster.bench_analysis import bench_configs, synth_device
    from experiments import reports as product_reports
    from experiments.context import ArtifactWriter, RunContext
    from experiments.vram_cliff import VramCliffConfig, run as vram_run

    dev = synth_device(BOARD, 200.0, 20.0, seed=3)
    no_markers = pd.DataFrame({"t_ns": pd.Series(dtype="int64"), "name": pd.Series(dtype="str")})
    results = dict(dev["results"])
    with tempfile.TemporaryDirectory() as tmp:
        markers = MarkerWriter(Path(tmp) / "markers.jsonl")
        device = SimulatedDevice(load_profile(BOARD), host_id="c", t_start_ns=0, marker_writer=markers)
        ctx = RunContext(device=device, markers=markers, artifacts=ArtifactWriter(Path(tmp)), run_id=RUN_ID)
        results["vram_cliff"] = vram_run(ctx, VramCliffConfig(batch_sizes=[1, 4], context_start=2048,
                                                              context_step=2048, probe_hold_s=0.0))
    docs, tables = product_reports.analyse_all(results, bench_configs(), dev["trace"], no_markers, dev["info"])
    _TABLES.update(tables)
    return docs, dev["trace"], str(dev["trace"]["device_uuid"].iloc[0])


_TABLES: dict[str, pa.Table] = {}  # the tables the reports came with (experiments.contracts.tables), by artifact name


def _trace_table(trace: pd.DataFrame, device_uuid: str) -> pa.Table:
    from training_fixtures import trace_table

    t_ns = trace["t_ns"].to_numpy(dtype=np.int64)
    columns = {name: trace[name].to_numpy() for name in trace.columns if name not in ("t_ns", "device_uuid")}
    return trace_table(columns, t_ns, device_uuid, wall_offset_ns=WALL0_NS)


def write_device_dir(root: Path, docs: dict[str, dict] | None = None) -> Path:
    """``root/<run>/<host>/<device_uid>/`` holding the trace, run metadata, fingerprint and
    ``docs`` (default: every real report) as the suite writes them; returns the dir."""
    from agents.fingerprint import fingerprint_from_fields
    from agents.profiles import load_profile
    from agents.trace_schema import MARKER_SCHEMA
    from experiments.context import ArtifactWriter
    from experiments.run_metadata import new_metadata

    real, trace, uuid = reports()
    docs = real if docs is None else docs
    board = load_profile(BOARD)
    device_uid = uuid
    d = root / RUN_ID / HOST / device_uid
    d.mkdir(parents=True)
    writer = ArtifactWriter(d)
    fields = {"gpu_name": board.name, "vram_total_mib": board.vram_total_mib, "power_limit_w": board.power_limit_w,
              "simulated": True, "profile_sha256": board.content_sha256()}
    fp = fingerprint_from_fields(device_uid, fields).to_dict()
    meta = new_metadata(RUN_ID, HOST, device_uid, fp["fingerprint"], True, {"preset": "quick"})
    t_ns = trace["t_ns"].to_numpy(dtype=np.int64)
    meta.update(run_state="completed", end_reason="completed", started_wall_ns=WALL0_NS + int(t_ns[0]),
                ended_wall_ns=WALL0_NS + int(t_ns[-1]))
    writer.write_json("run_metadata", meta)
    writer.write_json("fingerprint", fp)
    pq.write_table(_trace_table(trace, uuid), d / "power_trace.parquet")
    pq.write_table(MARKER_SCHEMA.empty_table(), d / "markers.parquet")
    for name, doc in docs.items():
        writer.write_json(name, doc)
    for name, table in _TABLES.items():  # as the suite writes them beside the reports
        pq.write_table(table, d / f"{name}.parquet")
    return d
