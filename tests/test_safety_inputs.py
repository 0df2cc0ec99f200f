"""Inputs that used to lose data, be accepted wrongly, or end in a traceback (issue 22).

Every refusal here is one line on stderr, exit 2, and leaves the warehouse as it was.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import warehouse_fixtures as fx
from cluster.cli import main
from warehouse.artifacts import ingest_paths
from warehouse.export import export_tr122
from warehouse.validate import safe_name
from agents.errors import ValidationError
from tiers import fast_subset

REPO = Path(__file__).resolve().parents[1]
SMI_HEADER = "timestamp, power.draw [W], temperature.gpu"


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(argv, capsys, warehouse: Path | None, *needles: str) -> str:
    """Assert the command exits 2 with one line naming ``needles``; the warehouse unchanged."""
    before = fx.table_fingerprint(warehouse) if warehouse is not None and warehouse.is_file() else None
    code, out, err = cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    if before is not None:
        assert fx.table_fingerprint(warehouse) == before
    return lines[0]


@pytest.fixture
def stored(tmp_path):
    """A warehouse holding one full run (markers, events, experiments) and its artifact root."""
    out = tmp_path / "out"
    fx.write_device_dir(out, "run-keep", "host-a", "dev-0")
    wh = tmp_path / "w.duckdb"
    ingest_paths(wh, [out])
    return wh, out


def _smi(tmp_path: Path, rows: list[str], header: str = SMI_HEADER, name: str = "smi.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _smi_rows(n: int = 20, power: str = "100.5", year: int = 2023) -> list[str]:
    return [f"{year}/07/08 19:27:{i // 10:02d}.{(i % 10) * 100:03d}, {power}, 50" for i in range(n)]


def _pack(tmp_path: Path, trace: str, **meta) -> Path:
    pack = tmp_path / "pack"
    pack.mkdir(exist_ok=True)
    (pack / "power_trace.csv").write_text(trace)
    if meta:
        (pack / "run_metadata.json").write_text(json.dumps(meta))
    return pack


# ---------------------------------------------------------------- defect 1: re-import


def test_importing_an_exported_pack_into_its_warehouse_is_refused_not_replacing(stored, tmp_path, capsys):
    wh, _ = stored
    assert cli(["export", "--run", "run-keep", "--out", tmp_path / "pack", "--warehouse", wh], capsys)[0] == 0
    line = refused(["import", "tr122", tmp_path / "pack", "--warehouse", wh], capsys, wh,
                   "run run-keep device dev-0 is already in the warehouse", "--replace")
    assert "artifact" in line
    markers = fx.table_fingerprint(wh)["markers"][0]
    assert markers > 0
    code, out, _ = cli(["import", "tr122", tmp_path / "pack", "--warehouse", wh, "--replace"], capsys)
    assert code == 0 and json.loads(out)["run_id"] == "run-keep"
    assert fx.table_fingerprint(wh)["markers"][0] == 0  # asked for: the pack replaced the run


def test_a_reingest_of_the_same_kind_still_replaces(stored, capsys):
    wh, out = stored
    before = fx.table_fingerprint(wh)
    assert cli(["ingest", out, "--warehouse", wh], capsys)[0] == 0
    assert fx.table_fingerprint(wh) == before


def test_an_ingest_over_an_imported_run_is_refused_before_anything_is_written(tmp_path, capsys):
    wh = tmp_path / "w.duckdb"
    pack = _pack(tmp_path, "t_ns,power_w\n1000,50\n2000,51\n", schema_version=1, run_id="run-x", device_uid="dev-1",
                 host="host-a")
    assert cli(["import", "tr122", pack, "--warehouse", wh], capsys)[0] == 0
    out = tmp_path / "out"
    fx.write_device_dir(out, "run-a", "host-a", "dev-0")  # new: would be written first
    fx.write_device_dir(out, "run-x", "host-a", "dev-1")  # clashes with the import
    refused(["ingest", out, "--warehouse", wh], capsys, wh, "run run-x device dev-1 is already in the warehouse",
            "tr122", "--replace")
    assert fx.table_fingerprint(wh)["run_devices"][0] == 1


# ---------------------------------------------------------------- defect 2: not a DuckDB file


@pytest.mark.parametrize("content", [b"", b"t_ns,power_w\n1,2\n", b"PAR1\x00\x00\x00\x00junkPAR1", b"\x00" * 5000,
                                     b"SQLite format 3\x00" + b"\x00" * 100])
def test_a_warehouse_path_that_is_not_duckdb_is_refused_and_untouched(stored, tmp_path, capsys, content):
    _, out = stored
    target = tmp_path / "x.csv"
    target.write_bytes(content)
    refused(["ingest", out, "--warehouse", target], capsys, None, str(target), "not a DuckDB database")
    assert target.read_bytes() == content
    refused(["sql", "SELECT 1", "--warehouse", target], capsys, None, "not a DuckDB database")
    refused(["export", "--run", "run-keep", "--out", tmp_path / "p", "--warehouse", target], capsys, None,
            "not a DuckDB database")
    assert target.read_bytes() == content and not list(tmp_path.glob("x.csv.wal"))


def test_a_warehouse_path_that_is_a_folder_is_refused(stored, tmp_path, capsys):
    _, out = stored
    refused(["ingest", out, "--warehouse", tmp_path], capsys, None, "is a folder")


# ---------------------------------------------------------------- defect 6: symlinks


@pytest.mark.parametrize("name", ["heat_soak.json", "markers.parquet", "power_trace/part-00000.parquet",
                                  "run_metadata.json"])
def test_a_symlink_in_an_artifact_dir_is_not_followed(tmp_path, capsys, name):
    device = fx.write_device_dir(tmp_path / "out", "run-l", "host-a", "dev-0")
    outside = tmp_path / "secret"
    outside.write_bytes((device / name).read_bytes())
    (device / name).unlink()
    (device / name).symlink_to(outside)
    wh = tmp_path / "w.duckdb"
    refused(["ingest", tmp_path / "out", "--warehouse", wh], capsys, None, name.split("/")[-1], "symbolic link")
    assert not wh.exists()


def test_a_symlinked_trace_folder_is_not_followed(tmp_path, capsys):
    device = fx.write_device_dir(tmp_path / "out", "run-l", "host-a", "dev-0")
    (device / "power_trace").rename(tmp_path / "elsewhere")
    (device / "power_trace").symlink_to(tmp_path / "elsewhere")
    refused(["ingest", tmp_path / "out", "--warehouse", tmp_path / "w.duckdb"], capsys, None, "symbolic link")


def test_the_tr122_importer_refuses_links_and_never_echoes_file_content(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("t_ns,power_w\nTOPSECRET-PASSWORD,1\n")
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "power_trace.csv").symlink_to(secret)
    line = refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "symbolic link")
    assert "TOPSECRET" not in line
    (pack / "power_trace.csv").unlink()
    (pack / "power_trace.csv").write_text("t_ns,power_w\n1,2\n")
    (pack / "run_metadata.json").symlink_to(tmp_path / "secret.txt")
    line = refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "symbolic link")
    assert "TOPSECRET" not in line


def test_a_long_cell_is_shown_shortened(tmp_path, capsys):
    pack = _pack(tmp_path, "t_ns,power_w\n1," + "A" * 5000 + "\n")
    line = refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "column power_w")
    assert len(line) < 400


# ---------------------------------------------------------------- defect 7: bad data accepted


@pytest.mark.parametrize("year", [1600, 1700, 3000])
def test_nvidia_smi_timestamps_far_from_now_are_refused(tmp_path, capsys, year):
    path = _smi(tmp_path, _smi_rows(year=year))
    refused(["import", "nvidia-smi", path, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "smi.csv",
            "timestamp", str(year))


def test_nvidia_smi_power_that_never_reads_is_refused(tmp_path, capsys):
    path = _smi(tmp_path, _smi_rows(power="[N/A]"))
    refused(["import", "nvidia-smi", path, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "smi.csv",
            "column power_w", "no power reading")


def test_nvidia_smi_failed_power_cells_are_failed_reads(tmp_path, capsys):
    rows = _smi_rows()
    rows[3] = rows[3].replace("100.5", "[N/A]")
    wh = tmp_path / "w.duckdb"
    assert cli(["import", "nvidia-smi", _smi(tmp_path, rows), "--warehouse", wh], capsys)[0] == 0
    from warehouse.query import query
    ok = query(wh, "SELECT read_ok FROM v_power_trace ORDER BY t_ns")["read_ok"].tolist()
    assert ok == [True] * 3 + [False] + [True] * 16


def test_a_log_of_instant_power_only_imports_with_its_failed_cells_marked(tmp_path, capsys):
    rows = _smi_rows()
    rows[4] = rows[4].replace("100.5", "[N/A]")
    path = _smi(tmp_path, rows, header="timestamp, power.draw.instant [W], temperature.gpu")
    wh = tmp_path / "w.duckdb"
    assert cli(["import", "nvidia-smi", path, "--warehouse", wh], capsys)[0] == 0
    from warehouse.query import query
    trace = query(wh, "SELECT read_ok, power_w, power_instant_w FROM v_power_trace ORDER BY t_ns")
    assert trace["read_ok"].tolist() == [True] * 4 + [False] + [True] * 15 and trace["power_w"].isna().all()


def test_nan_power_with_read_ok_true_in_parquet_is_refused(tmp_path, capsys):
    device = fx.write_device_dir(tmp_path / "out", "run-n", "host-a", "dev-0")
    part = device / "power_trace" / "part-00000.parquet"
    table = pq.read_table(part)
    power = table.column("power_w").to_pylist()
    power[5] = float("nan")
    pq.write_table(table.set_column(table.schema.get_field_index("power_w"), "power_w", pa.array(power)), part)
    refused(["ingest", tmp_path / "out", "--warehouse", tmp_path / "w.duckdb"], capsys, None, "part-00000.parquet",
            "column read_ok", "row 5", "power_w")


@pytest.mark.parametrize("header,value", [("power.draw [mW]", "100.5"), ("power.draw [W]", "0.1005"),
                                          ("power.draw [kW]", "100.5")])
def test_power_a_thousand_times_off_is_refused(tmp_path, capsys, header, value):
    path = _smi(tmp_path, _smi_rows(power=value), header=f"timestamp, {header}, temperature.gpu")
    refused(["import", "nvidia-smi", path, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "smi.csv",
            "power_w")


def test_tr122_power_a_thousand_times_too_small_is_refused(tmp_path, capsys):
    pack = _pack(tmp_path, "t_ns,power_w\n1000,0.06\n2000,0.3\n")
    refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "power_trace.csv",
            "power_w", "unit")


@pytest.mark.parametrize("column", ["energy_j", "dt_s", "lateness_ms"])
def test_infinite_values_are_refused(tmp_path, capsys, column):
    device = fx.write_device_dir(tmp_path / "out", "run-i", "host-a", "dev-0")
    part = device / "power_trace" / "part-00001.parquet"
    table = pq.read_table(part)
    values = table.column(column).to_pylist()
    values[2] = float("inf")
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, pa.array(values)), part)
    refused(["ingest", tmp_path / "out", "--warehouse", tmp_path / "w.duckdb"], capsys, None, "part-00001.parquet",
            f"column {column}", "inf")


def test_tr122_infinite_dt_is_refused(tmp_path, capsys):
    pack = _pack(tmp_path, "t_ns,power_w,dt_s\n1000,50,0.1\n2000,51,inf\n")
    refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "column dt_s")


def test_a_trace_whose_timestamps_are_all_the_same_is_refused(tmp_path, capsys):
    path = _smi(tmp_path, ["2023/07/08 19:27:36.000, 100, 50"] * 20)
    refused(["import", "nvidia-smi", path, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "smi.csv",
            "column t_ns", "same")
    pack = _pack(tmp_path, "t_ns,power_w\n1000,50\n1000,51\n1000,52\n")
    refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "column t_ns", "same")


def test_negative_t_ns_in_a_tr122_pack_is_refused(tmp_path, capsys):
    pack = _pack(tmp_path, "t_ns,power_w\n-5000,50\n-4000,51\n")
    refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "power_trace.csv",
            "column t_ns", "-5,000")


def test_wall_times_in_metadata_out_of_range_are_refused(tmp_path, capsys):
    fx.write_device_dir(tmp_path / "out", "run-w", "host-a", "dev-0", meta_over={"started_wall_ns": -10**18})
    refused(["ingest", tmp_path / "out", "--warehouse", tmp_path / "w.duckdb"], capsys, None, "run_metadata.json",
            "field started_wall_ns")


def test_simulated_false_on_a_simulated_board_is_refused(tmp_path, capsys):
    device = fx.write_device_dir(tmp_path / "out", "run-s", "host-a", "SIM-h100-sxm-host-a-0")
    meta = json.loads((device / "run_metadata.json").read_text())
    fp = json.loads((device / "fingerprint.json").read_text())
    meta["simulated"] = False
    fp["simulated"] = False
    fp["fields"]["profile_sha256"] = "ab" * 32
    (device / "run_metadata.json").write_text(json.dumps(meta))
    (device / "fingerprint.json").write_text(json.dumps(fp))
    refused(["ingest", tmp_path / "out", "--warehouse", tmp_path / "w.duckdb"], capsys, None, "field simulated",
            "simulated board")


def test_a_tr122_pack_of_a_simulated_board_cannot_claim_real(stored, tmp_path, capsys):
    wh, _ = stored
    assert cli(["export", "--run", "run-keep", "--out", tmp_path / "pack", "--warehouse", wh], capsys)[0] == 0
    meta_path = tmp_path / "pack" / "run_metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["simulated"] = False
    meta["fingerprint_fields"]["simulated"] = True
    meta_path.write_text(json.dumps(meta))
    refused(["import", "tr122", tmp_path / "pack", "--warehouse", tmp_path / "other.duckdb"], capsys, None,
            "field simulated")


# ---------------------------------------------------------------- defect 8: tracebacks and hangs


def test_deeply_nested_json_is_one_line(tmp_path, capsys):
    device = fx.write_device_dir(tmp_path / "out", "run-d", "host-a", "dev-0")
    (device / "heat_soak.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(["ingest", tmp_path / "out", "--warehouse", tmp_path / "w.duckdb"], capsys, None, "heat_soak.json",
            "nested")
    doc = json.loads((device / "run_metadata.json").read_text())
    doc["config"] = json.loads("[" * 500 + "]" * 500)  # parses, but nests deeper than any real file
    (device / "heat_soak.json").write_text(json.dumps(fx.experiments()["heat_soak"]))
    (device / "run_metadata.json").write_text(json.dumps(doc))
    refused(["ingest", tmp_path / "out", "--warehouse", tmp_path / "w.duckdb"], capsys, None, "run_metadata.json",
            "nested")
    pack = _pack(tmp_path, "t_ns,power_w\n1,50\n2,51\n")
    (pack / "generation_events.jsonl").write_text("[" * 100_000 + "\n")
    refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "generation_events.jsonl")


def test_a_huge_one_line_csv_is_one_line_fast(tmp_path, capsys):
    path = tmp_path / "big.csv"
    with open(path, "wb") as f:
        f.write(b"timestamp, power.draw [W]," + b"x" * (20 * 2**20) + b"\n2023/07/08 19:27:36.000, 100, 1\n")
    refused(["import", "nvidia-smi", path, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "big.csv", "header")
    with open(path, "wb") as f:
        f.write(b"timestamp, power.draw [W]\n2023/07/08 19:27:36.000, " + b"9" * (20 * 2**20) + b"\n")
    refused(["import", "nvidia-smi", path, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "big.csv", "longer than")


def test_a_header_with_millions_of_columns_fails_fast(tmp_path, capsys):
    import time

    path = tmp_path / "wide.csv"
    path.write_bytes(b"timestamp," + b"a," * 3_000_000 + b"power.draw [W]\n")
    start = time.monotonic()
    refused(["import", "nvidia-smi", path, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "wide.csv", "header")
    assert time.monotonic() - start < 5
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "power_trace.csv").write_bytes(b"t_ns,power_w" + b",a" * 3_000_000 + b"\n")
    refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "power_trace.csv", "header")


def test_numbers_too_large_for_64_bits_are_one_line(tmp_path, capsys):
    edges = tmp_path / "edges.csv"
    edges.write_text("timestamp\n" + "1" * 40 + "\n")
    path = _smi(tmp_path, _smi_rows())
    refused(["import", "nvidia-smi", path, "--edges", edges, "--warehouse", tmp_path / "w.duckdb"], capsys, None,
            "edges.csv")
    pack = _pack(tmp_path, "t_ns,power_w\n" + "9" * 40 + ",50\n")
    refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "column t_ns")
    pack = _pack(tmp_path, "t_ns,power_w\n1000,50\n2000,51\n")
    for value in ("1e30", "1" + "0" * 30, "1e400"):
        (pack / "generation_events.jsonl").write_text(
            '{"event_id": "e", "t_start_ns": 1000, "t_end_ns": 2000, "input_tokens": %s, "energy_joules": 1}\n' % value)
        refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None,
                "generation_events.jsonl", "input_tokens")
    (pack / "generation_events.jsonl").write_text(
        '{"event_id": "e", "t_start_ns": 1000, "t_end_ns": 2000, "energy_joules": 1e400}\n')
    refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "energy_integrated_j")
    (pack / "generation_events.jsonl").unlink()
    (pack / "run_metadata.json").write_text(json.dumps({"started_wall_ns": 10**40}))
    refused(["import", "tr122", pack, "--warehouse", tmp_path / "w.duckdb"], capsys, None, "started_wall_ns")


@pytest.mark.parametrize("name,path,value", [
    ("baseline.json", ["figures", "n"], 10**40),
    ("vram_cliff.json", ["figures", "capacity_mib"], 2**70),
    ("poller_stats.json", ["samples"], 2**64),
    ("fingerprint.json", ["fields", "cpu_cores"], 2**40),  # fits 64 bits, not the INTEGER column
])
def test_integers_too_large_in_artifact_json_are_one_line(tmp_path, capsys, name, path, value):
    device = fx.write_device_dir(tmp_path / "out", "run-o", "host-a", "dev-0")
    doc = json.loads((device / name).read_text())
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (device / name).write_text(json.dumps(doc))
    needle = "does not fit its column" if value < 2**63 else f"field {'.'.join(map(str, path))}"
    refused(["ingest", tmp_path / "out", "--warehouse", tmp_path / "w.duckdb"], capsys, None, needle)


def test_export_onto_a_symlink_is_one_line(stored, tmp_path, capsys):
    wh, _ = stored
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    refused(["export", "--run", "run-keep", "--out", tmp_path / "link", "--warehouse", wh], capsys, None, "symbolic link")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    refused(["export", "--run", "run-keep", "--out", tmp_path / "dangling", "--warehouse", wh], capsys, None, "symbolic link")
    assert not (tmp_path / "nowhere").exists() and not any((tmp_path / "real").iterdir())


_GARBAGE = {"noise": bytes(range(256)) * 40 + b"\xff\xfe\x00\n\x00,\x80" * 100,
            "non-utf8-row": b"1,50\n\x80\x81,2,3\n3,50\n"}  # a bad row that is not UTF-8


# each case runs the command as a process (a second of CPU): the fast tier meets every target once
@pytest.mark.parametrize("target,garbage", fast_subset(
    [pytest.param(target, _GARBAGE[g], id=f"{g}-{target}")
     for g, target in [("noise", "smi"), ("non-utf8-row", "tr122"), ("noise", "artifact"),
                       ("non-utf8-row", "smi"), ("noise", "tr122"), ("non-utf8-row", "artifact")]], keep=3))
def test_binary_garbage_is_one_line_without_noise(tmp_path, target, garbage):
    if target == "smi":
        path = tmp_path / "g.csv"
        path.write_bytes(b"timestamp, power.draw [W]\n" + garbage)
        argv = ["import", "nvidia-smi", path]
    elif target == "tr122":
        (tmp_path / "pack").mkdir()
        (tmp_path / "pack" / "power_trace.csv").write_bytes(b"t_ns,power_w\n" + garbage)
        argv = ["import", "tr122", tmp_path / "pack"]
    else:
        device = fx.write_device_dir(tmp_path / "out", "run-g", "host-a", "dev-0")
        (device / "markers.parquet").write_bytes(b"PAR1" + garbage + b"PAR1")
        (device / "heat_soak.json").write_bytes(garbage)
        argv = ["ingest", tmp_path / "out"]
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", *map(str, argv), "--warehouse", tmp_path / "w.duckdb"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(REPO)})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("fleetphysics: "), proc.stderr
    assert "\ufffd" not in lines[0]  # no undecodable file content echoed


# ---------------------------------------------------------------- defect 9: names, staging, modes


@pytest.mark.parametrize("value", ["run-1\n", "run-1\n\n", "\nrun-1", "run-1\r"])
def test_a_safe_name_never_ends_in_a_newline(value):
    with pytest.raises(ValidationError, match="not a safe name"):
        safe_name(value, "x.json", "run_id")


def test_a_trailing_newline_in_a_run_id_is_refused_at_ingest(tmp_path, capsys):
    device = fx.write_device_dir(tmp_path / "out", "run-n", "host-a", "dev-0")
    doc = json.loads((device / "run_metadata.json").read_text())
    (device / "run_metadata.json").write_text(json.dumps(doc | {"run_id": "run-n\n"}))
    refused(["ingest", tmp_path / "out", "--warehouse", tmp_path / "w.duckdb"], capsys, None, "field run_id",
            "not a safe name")


def test_an_exported_pack_follows_the_umask(stored, tmp_path):
    wh, _ = stored
    old = os.umask(0o022)
    try:
        export_tr122(wh, "run-keep", tmp_path / "pack")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "pack").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "pack").iterdir()} == {0o644}


def test_a_staging_dir_left_by_a_killed_export_is_cleaned_by_the_next(stored, tmp_path):
    wh, _ = stored
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".pack.export-{dead.pid}.tmp"
    leftover.mkdir()
    (leftover / "power_trace.csv").write_bytes(b"t_ns,power_w\n" + b"1,2\n" * 1000)
    alive = tmp_path / f".other.export-{os.getpid()}.tmp"  # a live export's staging is left alone
    alive.mkdir()
    result = export_tr122(wh, "run-keep", tmp_path / "pack")
    assert not leftover.exists() and alive.exists()
    assert result["cleaned"] == [str(leftover)]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [alive.name]
