"""Malformed inputs: each gives one clear line naming the file and column, and leaves the
warehouse exactly as it was (table counts and checksums compared before and after)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import warehouse_fixtures as fx
from agents.errors import ConfigError, ValidationError
from warehouse.importers.nvidia_smi import import_nvidia_smi
from warehouse.importers.tr122 import import_tr122
from warehouse.artifacts import ingest_paths

FIXTURES = Path(__file__).parent / "fixtures" / "warehouse"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A warehouse with one good run in it: what every rejected input must leave alone."""
    root = tmp_path_factory.mktemp("base")
    fx.write_device_dir(root / "good", "run-good", "host-a", "dev-0")
    wh = root / "w.duckdb"
    ingest_paths(wh, [root / "good"])
    return wh


@pytest.fixture
def device(tmp_path):
    """A fresh, valid device dir to break."""
    return fx.write_device_dir(tmp_path / "bad", "run-bad", "host-a", "dev-0")


def _part(device: Path, index: int = 0) -> Path:
    return device / "power_trace" / f"part-{index:05d}.parquet"


def _rewrite_part(device: Path, change, index: int = 0) -> None:
    path = _part(device, index)
    pq.write_table(change(pq.read_table(path)), path)


def _set(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _json(path: Path, **changes) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def _expect(base, action, needles, error=ValidationError):
    before = fx.table_fingerprint(base)
    with pytest.raises(error) as info:
        action()
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert info.value.exit_code == 2
    assert fx.table_fingerprint(base) == before
    return message


# ---------------------------------------------------------------- artifact dirs

def _row_at(device, index, row, name, value):
    def change(t):
        values = t.column(name).to_pylist()
        values[row] = value
        return _set(t, name, pa.array(values, t.schema.field(name).type))
    _rewrite_part(device, change, index)


ARTIFACT_CASES = {
    "missing column": (lambda d: _rewrite_part(d, lambda t: t.drop_columns(["temp_c"])),
                       ["part-00000.parquet", "column temp_c is missing"]),
    "wrong type": (lambda d: _rewrite_part(d, lambda t: _set(t, "power_w", pc.cast(t.column("power_w"), pa.string()))),
                   ["part-00000.parquet", "column power_w has type string, expected double"]),
    "NaN time": (lambda d: _rewrite_part(d, lambda t: _set(t, "t_ns", pa.array(
                     np.where(np.arange(t.num_rows) == 7, np.nan, t.column("t_ns").to_numpy().astype(float))))),
                 ["part-00000.parquet", "column t_ns has NaN at row 7"]),
    "null time": (lambda d: _row_at(d, 0, 3, "t_ns", None), ["part-00000.parquet", "column t_ns is null at row 3"]),
    "non-monotonic t_ns across parts": (lambda d: _rewrite_part(d, lambda t: _set(t, "t_ns", pc.subtract(
                                            t.column("t_ns"), 10**9)), index=1),
                                        ["part-00001.parquet", "column t_ns is not monotonic at row 0"]),
    "non-monotonic t_ns inside a part": (lambda d: _row_at(d, 0, 12, "t_ns", 1),
                                         ["part-00000.parquet", "column t_ns is not monotonic at row 12"]),
    "negative dt": (lambda d: _row_at(d, 1, 4, "dt_s", -0.01), ["part-00001.parquet", "column dt_s is -0.01 s at row 4"]),
    "negative power": (lambda d: _row_at(d, 0, 2, "power_w", -5.0), ["part-00000.parquet", "column power_w is -5 W at row 2"]),
    "power in milliwatts": (lambda d: _rewrite_part(d, lambda t: _set(t, "power_w", pc.multiply(t.column("power_w"), 1000.0))),
                            ["part-00000.parquet", "column power_w", "milliwatts"]),
    "temperature in kelvin": (lambda d: _row_at(d, 0, 0, "temp_c", 313.15),
                              ["part-00000.parquet", "column temp_c", "kelvin"]),
    "null read_ok": (lambda d: _row_at(d, 0, 9, "read_ok", None), ["part-00000.parquet", "column read_ok is null at row 9"]),
    "two devices in one trace": (lambda d: _row_at(d, 1, 0, "device_uuid", "GPU-other"),
                                 ["part-00001.parquet", "column device_uuid holds 2 devices"]),
    "truncated parquet": (lambda d: _part(d).write_bytes(_part(d).read_bytes()[:300]),
                          ["part-00000.parquet", "not a readable Parquet file"]),
    "empty parquet file": (lambda d: _part(d).write_bytes(b""), ["part-00000.parquet", "file is empty"]),
    "unknown run_metadata schema version": (lambda d: _json(d / "run_metadata.json", schema_version=2),
                                            ["run_metadata.json", "field schema_version is 2"]),
    "path traversal run_id": (lambda d: _json(d / "run_metadata.json", run_id="../../etc"),
                              ["run_metadata.json", "field run_id", "not a safe name"]),
    "path separator in host": (lambda d: _json(d / "run_metadata.json", host="a/b"),
                               ["run_metadata.json", "field host", "not a safe name"]),
    "unknown run_state": (lambda d: _json(d / "run_metadata.json", run_state="finished"),
                          ["run_metadata.json", "field run_state is 'finished'", "completed, aborted"]),
    "run_metadata not JSON": (lambda d: (d / "run_metadata.json").write_text("{not json"),
                              ["run_metadata.json", "not valid JSON"]),
    "device_uid not its folder": (lambda d: (_json(d / "run_metadata.json", device_uid="dev-7"),
                                             _json(d / "fingerprint.json", device_uid="dev-7")),
                                  ["run_metadata.json", "field device_uid is 'dev-7' but its folder is 'dev-0'"]),
    "fingerprint mismatch": (lambda d: _json(d / "fingerprint.json", fingerprint="fp-other"),
                             ["fingerprint.json", "field fingerprint"]),
    "unknown experiment schema version": (lambda d: _json(d / "heat_soak.json", schema_version=7),
                                          ["heat_soak.json", "field schema_version is 7"]),
    "experiment named after another file": (lambda d: _json(d / "heat_soak.json", experiment="baseline"),
                                            ["heat_soak.json", "field experiment"]),
    "event ends before it starts": (lambda d: pq.write_table(_set(fx.make_events(), "t_end_ns", pa.array(
                                        [0, 0, 0, 0], pa.int64())), d / "events.parquet"),
                                    ["events.parquet", "column t_end_ns is before t_start_ns at row 0"]),
    "unknown energy quality": (lambda d: pq.write_table(_set(fx.make_events(), "energy_quality", pa.array(
                                   ["GOOD", "GREAT", "GOOD", "GOOD"])), d / "events.parquet"),
                               ["events.parquet", "column energy_quality is 'GREAT' at row 1"]),
    "duplicate event_id": (lambda d: pq.write_table(_set(fx.make_events(), "event_id", pa.array(
                               ["a", "b", "a", "c"])), d / "events.parquet"),
                           ["events.parquet", "column event_id repeats 'a'"]),
    "marker attrs not JSON": (lambda d: pq.write_table(_set(pq.read_table(d / "markers.parquet"), "attrs_json", pa.array(
                                  ['{"a": 1}', "{level: 1}", None])), d / "markers.parquet"),
                              ["markers.parquet", "column attrs_json is not valid JSON at row 1"]),
    "no trace for a completed run": (lambda d: shutil.rmtree(d / "power_trace"),
                                                      ["power_trace", "no trace"]),
}


@pytest.mark.parametrize("case", sorted(ARTIFACT_CASES))
def test_a_malformed_artifact_is_refused_and_changes_nothing(case, base, device):
    breaker, needles = ARTIFACT_CASES[case]
    breaker(device)
    _expect(base, lambda: ingest_paths(base, [device.parents[2]]), needles)


def test_one_bad_device_dir_stops_the_whole_ingest(base, tmp_path):
    root = tmp_path / "many"
    fx.write_device_dir(root, "run-x", "host-a", "dev-0")
    bad = fx.write_device_dir(root, "run-y", "host-a", "dev-1")
    _json(bad / "run_metadata.json", end_reason="gremlins")
    _expect(base, lambda: ingest_paths(base, [root]), ["run-y", "run_metadata.json", "field end_reason"])


def test_a_folder_without_artifacts_is_refused(base, tmp_path):
    _expect(base, lambda: ingest_paths(base, [tmp_path]), [str(tmp_path), "no device dir found"])


# ---------------------------------------------------------------- nvidia-smi logs

HEADER = "timestamp, utilization.gpu [%], pstate, temperature.gpu, power.draw [W]"


def _smi(tmp_path, text: str, name: str = "smi.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


SMI_CASES = {
    "same quantity in two units": ("timestamp, power.draw [W], power.draw [mW]\n2023/07/08 19:27:36.359, 100, 100000\n",
                                   {}, ["smi.csv", "column power.draw appears twice in the header ([W] and [mW])"]),
    "unknown unit": ("timestamp, power.draw [hp]\n2023/07/08 19:27:36.359, 0.2\n",
                     {}, ["smi.csv", "column power.draw [hp] has unknown unit 'hp'", "W, mW, kW"]),
    "unknown memory unit": ("timestamp, power.draw [W], memory.used [blocks]\n2023/07/08 19:27:36.359, 1, 2\n",
                            {}, ["smi.csv", "column memory.used [blocks] has unknown unit 'blocks'"]),
    "text in a power cell": (HEADER + "\n2023/07/08 19:27:36.359, 0, P0, 54, 126.97\n2023/07/08 19:27:36.366, 0, P0, 54, lots\n",
                             {}, ["smi.csv", "column power.draw [W] has 'lots' at line 3"]),
    "bad timestamp": (HEADER + "\n2023-07-08T19:27:36, 0, P0, 54, 126.97\n",
                      {}, ["smi.csv", "column timestamp has '2023-07-08T19:27:36' at line 2"]),
    "empty file": ("", {}, ["smi.csv", "file is empty"]),
    "no power column": ("timestamp, temperature.gpu\n2023/07/08 19:27:36.359, 54\n",
                        {}, ["smi.csv", "column power.draw is missing"]),
    "timestamps going back": (HEADER + "\n2023/07/08 19:27:36.359, 0, P0, 54, 126.97\n2023/07/08 19:27:35.000, 0, P0, 54, 126.97\n",
                              {}, ["smi.csv", "column t_ns is not monotonic at row 1"]),
    "a line cut in the middle": (HEADER + "\n2023/07/08 19:27:36.359, 0, P0\n2023/07/08 19:27:36.366, 0, P0, 54, 126.97\n",
                                 {}, ["smi.csv", "line 2 has a different number of fields"]),
    "bad --tz": (HEADER + "\n2023/07/08 19:27:36.359, 0, P0, 54, 126.97\n", {"tz": "UTC+1"}, ["--tz", "'UTC+1'", "+HH:MM"]),
    "unsafe --host": (HEADER + "\n2023/07/08 19:27:36.359, 0, P0, 54, 126.97\n", {"host": "../x"}, ["--host", "field host"]),
}


@pytest.mark.parametrize("case", sorted(SMI_CASES))
def test_a_malformed_nvidia_smi_log_is_refused(case, base, tmp_path):
    text, kwargs, needles = SMI_CASES[case]
    path = _smi(tmp_path, text)
    error = ConfigError if "tz" in kwargs else ValidationError
    _expect(base, lambda: import_nvidia_smi(base, path, **kwargs), needles, error)


EDGE_CASES = {
    "text in the edge file": ("timestamp\n1688840857595627\nload on\n", ["edges.csv", "column timestamp has 'load on' at line 3"]),
    "no edges": ("timestamp\n", ["edges.csv", "no timestamps"]),
    "mixed units": ("timestamp\n1688840857595627\n1688840863\n", ["edges.csv", "mixes units"]),
    "edges going back": ("timestamp\n1688840863524417\n1688840857595627\n", ["edges.csv", "goes back in time at line 3"]),
    "edges outside the trace (wrong --tz)": ("timestamp\n1688844457595627\n", ["edges.csv", "after the trace ends", "--tz"]),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_a_malformed_edge_file_is_refused(case, base, tmp_path):
    text, needles = EDGE_CASES[case]
    edges = _smi(tmp_path, text, "edges.csv")
    _expect(base, lambda: import_nvidia_smi(base, FIXTURES / "smi_mixed_units.csv", edges, tz="+01:00"), needles)


# ---------------------------------------------------------------- TR122 packs

TR122_CASES = {
    "missing t_ns": ("power_w,temp_c\n100,40\n", ["power_trace.csv", "column t_ns is missing"]),
    "missing power_w": ("t_ns,temp_c\n1,40\n", ["power_trace.csv", "column power_w is missing"]),
    "fractional t_ns": ("t_ns,power_w\n1.5,100\n", ["power_trace.csv", "column t_ns has '1.5' at line 2"]),
    "text in power_w": ("t_ns,power_w\n1,abc\n", ["power_trace.csv", "column power_w has 'abc' at line 2"]),
    "t_ns going back": ("t_ns,power_w\n5,100\n3,100\n", ["power_trace.csv", "column t_ns is not monotonic at row 1"]),
    "bad read_ok": ("t_ns,power_w,read_ok\n1,100,maybe\n", ["power_trace.csv", "column read_ok has 'maybe'"]),
}


@pytest.mark.parametrize("case", sorted(TR122_CASES))
def test_a_malformed_tr122_pack_is_refused(case, base, tmp_path):
    text, needles = TR122_CASES[case]
    (tmp_path / "power_trace.csv").write_text(text)
    _expect(base, lambda: import_tr122(base, tmp_path), needles)


def test_a_tr122_event_with_a_wrong_type_is_refused(base, tmp_path):
    (tmp_path / "power_trace.csv").write_text("t_ns,power_w\n1,100\n2,101\n")
    (tmp_path / "generation_events.jsonl").write_text(
        '{"event_id": "e1", "t_start_ns": 1, "t_end_ns": 2, "batch_size": "eight"}\n')
    _expect(base, lambda: import_tr122(base, tmp_path), ["generation_events.jsonl", "field batch_size is 'eight' at line 1"])
