"""Fuzz tier (pytest -m fuzz): random damage to the importers' and ingest's inputs.

Truncations, other encodings, binary noise, huge fields, extreme numbers and deep nesting
against the nvidia-smi importer, the TR122 importer and artifact ingest. Every outcome is
either a stored run (exit 0, the run is in the warehouse) or one line with exit 2 and an
unchanged warehouse: never a traceback, an "Exception ignored" message, or a hang.

Bounded for CI: derandomized (the same examples every run, no example database), a fixed
number of examples per target, and a per-example deadline.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import warehouse_fixtures as fx  # noqa: E402
from cluster.cli import main  # noqa: E402
from warehouse.ingest import ingest_tables  # noqa: E402
from warehouse.query import query  # noqa: E402

pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=80, deadline=timedelta(seconds=30), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large], print_blob=True)

EXTREME_NUMBERS = ["0", "-0", "-1", "1e308", "-1e308", "1e-320", "nan", "NaN", "inf", "-inf", "Infinity",
                   "9" * 40, "-" + "9" * 25, "1e30", "0x10", "1_000", "", "[N/A]", "[Unknown Error]", "  ",
                   "18446744073709551616", "9223372036854775808", "-9223372036854775809", "1.5", "\u0661\u0662"]
JSON_EXTREMES = [None, True, False, 0, -1, 2**63, 2**64, -(2**63) - 1, 10**40, 1e30, 1e308, -1e308, float("nan"),
                 float("inf"), "", "x" * 300, "run\n", "../../etc", "\x00", [], {}, [[[[[]]]]]]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """A warehouse holding one complete run, which no refused input may change."""
    wh = tmp_path_factory.mktemp("fuzz") / "w.duckdb"
    trace = fx.make_trace(500)
    ingest_tables(wh, fx.run_metadata("run-base"), fx.fingerprint(), trace, fx.make_markers(trace), fx.make_events(),
                  fx.experiments(), fx.poller_stats())
    return wh


def outcome(argv: list, warehouse: Path) -> None:
    """Run the CLI in process and hold it to the contract (see the module docstring)."""
    before = fx.table_fingerprint(warehouse)
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main([str(a) for a in argv] + ["--warehouse", str(warehouse)])
    finally:
        sys.unraisablehook = old_hook
    # hypothesis's own gc callback may fail while json parses a deep document near the
    # recursion limit (the parse's RecursionError is caught): that noise is the harness's.
    ours = [u for u in unraisable if not getattr(u.object, "__module__", "").startswith("hypothesis")]
    assert not ours, [str(u.exc_value) for u in ours]
    event(f"exit {code}")  # shown by --hypothesis-show-statistics: both outcomes must occur
    lines = err.getvalue().strip().splitlines()
    if code == 0:
        result = json.loads(out.getvalue())
        stored = query(warehouse, "SELECT count(*) AS n FROM run_devices WHERE run_id = ? AND device_uid = ?",
                       [result["run_id"], result["devices"][0]])
        assert stored["n"].iloc[0] == 1
        return
    assert code == 2 and len(lines) == 1 and lines[0].startswith("fleetphysics: "), (code, err.getvalue())
    assert fx.table_fingerprint(warehouse) == before


# ---------------------------------------------------------------- damage applied to any file


def damage():
    """A function bytes -> bytes: truncation, noise, another encoding, a huge field, CRLF."""
    truncate = st.floats(0, 1).map(lambda f: lambda b: b[: int(len(b) * f)])
    noise = st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=64)).map(
        lambda a: lambda b: b[: int(len(b) * a[0])] + a[1] + b[int(len(b) * a[0]):])
    encode = st.sampled_from(["utf-16", "utf-32", "latin-1", "utf-8-sig", "cp1252"]).map(
        lambda enc: lambda b: b.decode("utf-8", "replace").encode(enc, "replace"))
    huge = st.tuples(st.floats(0, 1), st.sampled_from([b"9", b"x", b",", b"[", b"\n"]),
                     st.sampled_from([70_000, 300_000])).map(
        lambda a: lambda b: b[: int(len(b) * a[0])] + a[1] * a[2] + b[int(len(b) * a[0]):])
    crlf = st.just(lambda b: b.replace(b"\n", b"\r\n"))
    nul = st.just(lambda b: b.replace(b",", b"\x00,", 3))
    return st.one_of(truncate, noise, encode, huge, crlf, nul)


# ---------------------------------------------------------------- nvidia-smi logs


SMI_COLUMNS = ["power.draw [W]", "power.draw.average [W]", "power.draw.instant [W]", "temperature.gpu",
               "utilization.gpu [%]", "memory.used [MiB]", "clocks.current.sm [MHz]", "pstate",
               "clocks_event_reasons.active", "total_energy_consumption [mJ]", "power.draw [mW]"]


def _smi_cell(column: str, i: int) -> str:
    if column == "power.draw [mW]":
        return str(100_000 + i)
    return {"pstate": "P0", "clocks_event_reasons.active": "0x0000000000000004"}.get(column, str(100 + i % 7))


@st.composite
def smi_logs(draw):
    power = draw(st.sampled_from([c for c in SMI_COLUMNS if c.startswith("power.draw")]))
    others = [c for c in SMI_COLUMNS if not c.startswith("power.draw")]
    columns = ["timestamp", power] + draw(st.lists(st.sampled_from(others), max_size=4, unique=True))
    rows = draw(st.integers(1, 40))
    lines = [", ".join(columns)]
    for i in range(rows):
        lines.append(", ".join(f"2023/07/08 19:27:{i // 10:02d}.{(i % 10) * 100:03d}" if c == "timestamp"
                               else _smi_cell(c, i) for c in columns))
    cells = draw(st.lists(st.tuples(st.integers(1, rows), st.integers(0, len(columns) - 1),
                                    st.sampled_from(EXTREME_NUMBERS + ["1600/01/01 00:00:00.000",
                                                                       "3000/01/01 00:00:00.000"])), max_size=3))
    for row, col, value in cells:
        parts = lines[row].split(", ")
        parts[col] = value
        lines[row] = ", ".join(parts)
    data = ("\n".join(lines) + "\n").encode()
    if draw(st.booleans()):
        data = draw(damage())(data)
    return data


@FUZZ
@given(data=smi_logs(), edges=st.one_of(st.none(), st.none(), st.lists(st.sampled_from(
    ["1688840856", "1688840857595", "1688840858.5", "1" * 40, "-5", "1e30", "9" * 19, "0", "abc"]), max_size=4)))
def test_fuzz_nvidia_smi_import(warehouse, tmp_path_factory, data, edges):
    d = tmp_path_factory.mktemp("smi")
    (d / "log.csv").write_bytes(data)
    argv = ["import", "nvidia-smi", d / "log.csv"]
    if edges is not None:
        (d / "edges.csv").write_text("timestamp\n" + "\n".join(edges) + "\n")
        argv += ["--edges", d / "edges.csv"]
    outcome(argv, warehouse)


# ---------------------------------------------------------------- TR122 packs


json_values = st.recursive(
    st.one_of(st.sampled_from(JSON_EXTREMES), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def tr122_packs(draw):
    rows = draw(st.integers(1, 30))
    columns = ["t_ns", "power_w"] + draw(st.lists(st.sampled_from(
        ["temp_c", "sm_clock_mhz", "util_gpu", "vram_used_mib", "read_ok", "dt_s"]), max_size=3, unique=True))
    lines = [",".join(columns)]
    for i in range(rows):
        values = {"t_ns": str(1_000_000 + i * 10_000_000), "power_w": str(50 + i), "read_ok": "true",
                  "dt_s": "0.01"}
        lines.append(",".join(values.get(c, "40") for c in columns))
    for row, col, value in draw(st.lists(st.tuples(st.integers(1, rows), st.integers(0, len(columns) - 1),
                                                   st.sampled_from(EXTREME_NUMBERS)), max_size=3)):
        parts = lines[row].split(",")
        parts[col] = value
        lines[row] = ",".join(parts)
    trace = ("\n".join(lines) + "\n").encode()
    if draw(st.booleans()):
        trace = draw(damage())(trace)
    files = {"power_trace.csv": trace}
    if draw(st.booleans()):
        meta = {"schema_version": 1, "run_id": "pack-run", "device_uid": "pack-dev", "host": "pack-host"}
        for key in draw(st.lists(st.sampled_from(["run_id", "device_uid", "host", "simulated", "started_wall_ns",
                                                  "ended_wall_ns", "clock", "fingerprint", "fingerprint_fields",
                                                  "gpu_name", "run_state", "comparability_key"]), max_size=3)):
            meta[key] = draw(json_values)
        text = json.dumps(meta)
        if draw(st.integers(0, 5)) == 0:
            text = text[:-1] + ', "deep": ' + nested(draw(st.sampled_from([70, 2_000, 200_000]))) + "}"
        files["run_metadata.json"] = text.encode()
    if draw(st.booleans()):
        event = {"event_id": "e1", "t_start_ns": 1_000_000, "t_end_ns": 2_000_000, "input_tokens": 32,
                 "energy_joules": 5.0}
        for key in draw(st.lists(st.sampled_from(list(event) + ["batch_size", "gap_fraction", "energy_quality",
                                                                 "tokens_per_second"]), max_size=2)):
            event[key] = draw(json_values)
        files["generation_events.jsonl"] = (json.dumps(event) + "\n").encode()
    if draw(st.booleans()):
        files["baseline.json"] = json.dumps({"idle_w": draw(json_values), "n": draw(json_values)}).encode()
    return files


@FUZZ
@given(files=tr122_packs())
def test_fuzz_tr122_import(warehouse, tmp_path_factory, files):
    pack = tmp_path_factory.mktemp("pack")
    for name, data in files.items():
        (pack / name).write_bytes(data)
    outcome(["import", "tr122", pack], warehouse)


# ---------------------------------------------------------------- artifact dirs


ARTIFACT_JSON = ["run_metadata.json", "fingerprint.json", "poller_stats.json", "heat_soak.json", "baseline.json",
                 "joule_curve.json", "vram_cliff.json", "instrument_response.json"]
TRACE_COLUMNS = ["t_ns", "wall_ns", "power_w", "energy_j", "temp_c", "dt_s", "lateness_ms", "pstate",
                 "clocks_event_reasons", "util_gpu", "read_ok"]
TRACE_EXTREMES = [float("nan"), float("inf"), float("-inf"), -1.0, 1e308, 0.0, None, 2**62, -(2**62)]


def _set_json_field(doc, pick: int, value):
    """Set ``value`` at one of ``doc``'s fields or list items, any depth (``pick`` chooses)."""
    slots, stack = [], [doc]
    while stack:
        node = stack.pop()
        keys = sorted(node) if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else ()
        for key in keys:
            slots.append((node, key))
            stack.append(node[key])
    if slots:
        node, key = slots[pick % len(slots)]
        node[key] = value
    return doc


@st.composite
def artifact_damage(draw):
    kind = draw(st.sampled_from(["json field", "json bytes", "trace value", "parquet bytes", "deep json"]))
    if kind == "json field":
        return kind, draw(st.sampled_from(ARTIFACT_JSON)), (draw(st.integers(0, 10_000)), draw(json_values))
    if kind in ("json bytes", "parquet bytes"):
        name = draw(st.sampled_from(ARTIFACT_JSON)) if kind == "json bytes" else draw(st.sampled_from(
            ["power_trace/part-00000.parquet", "markers.parquet", "events.parquet"]))
        return kind, name, draw(damage())
    if kind == "deep json":
        return kind, draw(st.sampled_from(ARTIFACT_JSON)), draw(st.sampled_from([65, 900, 100_000]))
    return kind, draw(st.sampled_from(TRACE_COLUMNS)), (draw(st.integers(0, 249)), draw(st.sampled_from(TRACE_EXTREMES)))


@FUZZ
@given(changes=st.lists(artifact_damage(), min_size=1, max_size=2))
def test_fuzz_artifact_ingest(warehouse, tmp_path_factory, changes):
    root = tmp_path_factory.mktemp("art") / "out"
    device = fx.write_device_dir(root, "run-fuzz", "host-a", "dev-fuzz", rows=500)
    order = ["trace value", "json field", "deep json", "json bytes", "parquet bytes"]  # byte damage last
    for kind, name, arg in sorted(changes, key=lambda change: order.index(change[0])):
        path = device / name
        if kind == "json field":
            pick, value = arg
            doc = _set_json_field(json.loads(path.read_text()), pick, value)
            path.write_text(json.dumps(doc))
        elif kind in ("json bytes", "parquet bytes"):
            path.write_bytes(arg(path.read_bytes()))
        elif kind == "deep json":
            path.write_text('{"experiment": "%s", "schema_version": 1, "figures": %s}' % (path.stem, nested(arg)))
        else:
            row, value = arg
            part = device / "power_trace" / "part-00000.parquet"
            table = pq.read_table(part)
            index = table.schema.get_field_index(name)
            values = table.column(name).to_pylist()
            values[row] = value
            try:
                column = pa.array(values, table.schema.field(name).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
                # the value does not fit the column's type: the column becomes float64
                column = pa.array(np.array([np.nan if v is None else v for v in values], dtype=np.float64))
            pq.write_table(table.set_column(index, name, column), part)
    outcome(["ingest", root], warehouse)
