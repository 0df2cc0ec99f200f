"""Artifact dirs on disk: find the device dirs under a path, read and validate them, ingest.

A device dir is ``<out>/<run_id>/<host>/<device_uid>/`` holding run_metadata.json,
fingerprint.json, the trace (``power_trace.parquet`` once the suite has compacted it, else
the poller's ``power_trace/part-*.parquet``), markers.parquet, and optionally events.parquet,
poller_stats.json and one ``<experiment>.json`` per experiment, with the tables that
experiment wrote (``<table>.parquet``, experiments.contracts.tables).

Only regular files inside the device dir are read: a symbolic link (to a file or to the
power_trace/ folder) is refused, so a link cannot bring a file from elsewhere into the
warehouse.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from agents.errors import ValidationError, first_line
from experiments.contracts.tables import tables_of

from .connection import WRITER_LOCK_TIMEOUT_S
from .file_checks import check_no_links, inside_dir, inside_file
from .ingest import DeviceBundle, check_replace, prepare_bundle, with_writer, write_bundle
from .progress import Report, no_report
from .validate import check_run_metadata, fail, load_json

_RESERVED_JSON = {"run_metadata.json", "fingerprint.json", "poller_stats.json"}


def find_device_dirs(path: str | os.PathLike) -> list[Path]:
    """Device dirs under ``path``: folders holding run_metadata.json and fingerprint.json.

    ``path`` may be a device dir, a run dir or a root of run dirs. Folders inside a device
    dir (its tr122/ export, say) are not device dirs.
    """
    root = Path(path)
    if not root.exists():
        raise ValidationError(f"{root}: no such file or folder; pass a device, run or root dir of artifacts")
    if not root.is_dir():
        raise ValidationError(f"{root}: not a folder; pass a device, run or root dir of artifacts")
    found = sorted(p.parent for p in root.rglob("run_metadata.json") if (p.parent / "fingerprint.json").is_file())
    devices: list[Path] = []
    for candidate in found:
        if not any(parent in candidate.parents for parent in devices):
            devices.append(candidate)
    if not devices:
        raise ValidationError(
            f"{root}: no device dir found (a folder with run_metadata.json and fingerprint.json); "
            "pass a device, run or root dir of artifacts"
        )
    return devices


def _read_json(path: Path, required: bool = True):
    if inside_file(path.parent, path.name) is None:
        if required:
            raise ValidationError(f"{path}: file is missing; every device dir has {path.name}: re-collect the artifacts")
        return None
    data = path.read_bytes()
    if not data.strip():
        raise ValidationError(f"{path}: file is empty (0 bytes of JSON); re-collect the artifacts")
    return load_json(data, str(path), "re-collect the artifacts or re-run the analysis")


def _read_parquet(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise ValidationError(f"{path}: file is empty (0 bytes); re-collect it from the host or delete it")
    try:
        names = pq.read_schema(path).names
        dictionary = [n for n in ("device_uuid",) if n in names]  # constant per file: keep it encoded
        return pq.read_table(path, memory_map=True, read_dictionary=dictionary)
    except (pa.ArrowException, OSError) as exc:
        raise ValidationError(
            f"{path}: not a readable Parquet file ({first_line(exc)}); it is truncated or not Parquet: re-collect it from the host"
        ) from exc


def read_device_dir(device_dir: str | os.PathLike) -> DeviceBundle:
    """Read and validate one artifact device dir (nothing is written)."""
    d = Path(device_dir)
    meta_doc = _read_json(d / "run_metadata.json")
    fp_doc = _read_json(d / "fingerprint.json")
    meta_label = str(d / "run_metadata.json")
    meta = check_run_metadata(meta_label, meta_doc)
    if meta["device_uid"] != d.name:
        raise fail(meta_label, "field device_uid", f"is {meta['device_uid']!r} but its folder is {d.name!r}",
                   "the device dir is <run_id>/<host>/<device_uid>: fix the file or rename the folder")
    single = inside_file(d, "power_trace.parquet")  # the suite compacts the parts into this file
    part_dir = d / "power_trace"
    parts = [single] if single else sorted(part_dir.glob("part-*.parquet")) if inside_dir(d, "power_trace") else []
    check_no_links(d, parts)
    if not parts and meta["run_state"] not in ("lost", "aborted"):
        raise ValidationError(
            f"{part_dir}: no trace (power_trace.parquet or power_trace/part-*.parquet) for a {meta['run_state']} run; "
            "re-collect the artifacts, or mark the run lost or aborted"
        )
    trace_parts = [(str(p), _read_parquet(p)) for p in parts]
    markers_path = d / "markers.parquet"
    markers = _read_parquet(markers_path) if inside_file(d, markers_path.name) else None
    events_path = d / "events.parquet"
    events = _read_parquet(events_path) if inside_file(d, events_path.name) else None
    experiments = {}
    labels = {"run_metadata": meta_label, "fingerprint": str(d / "fingerprint.json"),
              "markers": str(markers_path), "events": str(events_path),
              "poller_stats": str(d / "poller_stats.json"), "dir": str(d)}
    for path in sorted(d.glob("*.json")):
        if path.name in _RESERVED_JSON:
            continue
        doc = _read_json(path)
        if isinstance(doc, dict) and "experiment" not in doc and "figures" not in doc:
            continue  # not an experiment result (no "experiment" and no "figures")
        experiments[path.stem] = doc
        labels[f"experiment:{path.stem}"] = str(path)
    tables = {}
    for name in experiments:
        for contract in tables_of(name):
            path = d / contract.file_name
            labels[f"table:{contract.name}"] = str(path)
            if inside_file(d, contract.file_name):
                tables[contract.name] = _read_parquet(path)
    stats = _read_json(d / "poller_stats.json", required=False)
    # run_metadata's source: who wrote the dir; null or absent is fleetphysics's own suite
    source = (meta_doc.get("source") if isinstance(meta_doc, dict) else None) or "artifact"
    return prepare_bundle(meta_doc, fp_doc, trace_parts, markers, events, experiments, stats,
                          source=source, labels=labels, tables=tables)


KEEP_ROWS = 20_000_000  # keep validated bundles in memory up to this many trace rows


def ingest_paths(
    warehouse: str | os.PathLike, paths: list[str | os.PathLike], lock_timeout_s: float = WRITER_LOCK_TIMEOUT_S,
    progress: Report = no_report, replace: bool = False,
) -> list[dict]:
    """Ingest every device dir under ``paths``; returns one result dict per device.

    Every device dir is validated before anything is written, so a bad file anywhere
    leaves the warehouse unchanged. Each run x device is then written in its own
    transaction, opening the file only for that write. ``progress(phase, done, total)``
    hears of each device dir validated (``validating``), then of each written (``writing``).
    A run x device already stored from another kind of source (a TR122 or nvidia-smi
    import) is refused before anything is written, unless ``replace``.
    """
    device_dirs: list[Path] = []
    for path in paths:
        device_dirs.extend(find_device_dirs(path))
    kept: dict[Path, DeviceBundle] = {}
    rows = 0
    seen: dict[tuple[str, str], Path] = {}
    sources: dict[Path, str] = {}
    progress("validating", 0, len(device_dirs))
    for i, d in enumerate(device_dirs, 1):
        bundle = read_device_dir(d)
        if bundle.key in seen:
            raise ValidationError(
                f"{d}: run {bundle.key[0]} device {bundle.key[1]} is also in {seen[bundle.key]}; pass only one of them"
            )
        seen[bundle.key] = d
        sources[d] = bundle.source
        rows += bundle.trace.rows
        if rows <= KEEP_ROWS:
            kept[d] = bundle
        progress("validating", i, len(device_dirs))
    if not replace and Path(warehouse).is_file():  # refuse a clash before the first write
        def check(con):
            for key, d in seen.items():
                check_replace(con, str(d), *key, sources[d])
        with_writer(warehouse, lock_timeout_s, check)
    results = []
    progress("writing", 0, len(device_dirs))
    for d in device_dirs:
        bundle = kept.pop(d, None) or read_device_dir(d)
        results.append(with_writer(warehouse, lock_timeout_s, lambda con, b=bundle: write_bundle(con, b, replace)))
        progress("writing", len(results), len(device_dirs))
    return results
