"""The warehouse's on-disk format and `fleetphysics compact`: new files open in DuckDB 1.x
clients, and a rewrite keeps every row, reclaims free space and never half-replaces the file."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

import warehouse_fixtures as fx
from agents.errors import WarehouseError
from warehouse import cli
from warehouse import compact as compact_module
from warehouse.compact import TEMP_SUFFIX, compact
from warehouse.connection import connect_readonly, connect_writer
from warehouse.ingest import ingest_tables

PINNED = "v1.0.0+"  # the storage tag DuckDB gives files written for v1.0.0 to v1.1.x readers
REPO = Path(__file__).resolve().parents[1]

# Compacts, and once the copy is written (before it is checked and swapped in) signals and
# waits to be killed.
KILLED_CHILD = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{repo!r}]
    from warehouse import compact as compact_module

    path, sentinel = sys.argv[1:3]
    real_copy = compact_module._copy

    def copy_then_wait(*args):
        real_copy(*args)
        open(sentinel, "w").write("copied")
        time.sleep(120)

    compact_module._copy = copy_then_wait
    compact_module.compact(path)
""")


def _ingest(path, run_id: str, rows: int, seed: int = 0) -> None:
    trace = fx.make_trace(rows, seed=seed)
    ingest_tables(path, fx.run_metadata(run_id), fx.fingerprint(), trace, fx.make_markers(trace),
                  fx.make_events(), fx.experiments())


def _storage(path) -> str | None:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tags = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = current_database()").fetchall()[0][0]
        return dict(tags).get("storage_version")
    finally:
        con.close()


def _newest_format_file(path) -> None:
    """A warehouse file created as DuckDB 2.0 creates one by default (its newest format)."""
    duckdb.connect(str(path), config={"storage_compatibility_version": "latest"}).close()
    if _storage(path) == PINNED:
        pytest.skip("this DuckDB's newest format is the pinned one")


def _snapshot(path) -> dict:
    """Everything a reader sees: each table's and view's rows, a checksum of the trace, the
    tables' DDL and every column (views' SQL text is not compared: DuckDB re-serializes an
    EXCLUDE list in any order)."""
    with connect_readonly(path) as con:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1").fetchall()]
        return {
            "counts": {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0] for t in tables},
            "trace": con.execute("SELECT sum(t_ns), bit_xor(hash(power_w)), count(dt_s), bit_xor(hash(energy_j)) "
                                 "FROM power_trace").fetchall(),
            "fleet": con.execute("SELECT * FROM v_fleet_latest ORDER BY ALL").fetchall(),
            "ddl": con.execute("SELECT table_name, sql FROM duckdb_tables() ORDER BY 1").fetchall(),
            "columns": con.execute("SELECT table_name, column_index, column_name, data_type FROM duckdb_columns() "
                                   "ORDER BY 1, 2").fetchall(),
            "views": {v: con.execute(f'SELECT count(*) FROM "{v}"').fetchall()[0][0] for (v,) in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()},
            "schema_version": con.execute("SELECT version, name FROM schema_version ORDER BY 1").fetchall(),
        }


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _temp_files(path) -> list:
    """What a compact of ``path`` writes beside it (the copy and its WAL)."""
    return list(path.parent.glob(path.name + TEMP_SUFFIX + "*"))


def _refused_leaving_it_as_it_was(path, match: str) -> None:
    digest = _sha256(path)
    with pytest.raises(WarehouseError, match=match):
        compact(path)
    assert _sha256(path) == digest
    assert not _temp_files(path)


def test_a_new_warehouse_is_written_in_a_format_duckdb_1x_clients_open(tmp_path):
    connect_writer(tmp_path / "w.duckdb").close()
    assert _storage(tmp_path / "w.duckdb") == PINNED


def test_compact_rewrites_a_newest_format_file_and_keeps_every_row(tmp_path):
    path = tmp_path / "w.duckdb"
    _newest_format_file(path)
    _ingest(path, "run-a", 3_000)
    _ingest(path, "run-b", 2_000, seed=1)
    before = _snapshot(path)
    assert _storage(path) != PINNED

    result = compact(path)

    assert _storage(path) == PINNED
    assert result["storage_version_before"] != PINNED and result["storage_version_after"] == PINNED
    assert _snapshot(path) == before
    assert result["rows"] == sum(before["counts"].values()) and result["tables"] == len(before["counts"])
    assert not (tmp_path / ("w.duckdb" + TEMP_SUFFIX)).exists()


def test_compact_gives_back_the_space_of_a_replaced_run(tmp_path):
    path = tmp_path / "w.duckdb"
    _ingest(path, "run-a", 400_000)
    _ingest(path, "run-a", 2_000, seed=1)  # re-ingest replaces the run: DuckDB keeps the file's size
    before = _snapshot(path)
    assert before["counts"]["power_trace"] == 2_000

    result = compact(path)

    assert result["bytes_after"] < result["bytes_before"] / 2
    assert result["bytes_after"] == path.stat().st_size
    assert _snapshot(path) == before


def test_a_copy_that_fails_leaves_the_warehouse_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "w.duckdb"
    _ingest(path, "run-a", 3_000)
    real_copy = compact_module._copy

    def copy_then_fail(con, source, counts, progress):
        real_copy(con, source, counts, progress)
        raise duckdb.IOException("could not write block: No space left on device")

    monkeypatch.setattr(compact_module, "_copy", copy_then_fail)
    _refused_leaving_it_as_it_was(path, "compact failed .*No space left.*the warehouse is unchanged")


def test_a_copy_with_different_row_counts_is_not_swapped_in(tmp_path, monkeypatch):
    path = tmp_path / "w.duckdb"
    _ingest(path, "run-a", 3_000)
    real_counts = compact_module._row_counts

    def one_row_short(con, database):
        counts = real_counts(con, database)
        if database == compact_module._DEST:
            counts["power_trace"] -= 1
        return counts

    monkeypatch.setattr(compact_module, "_row_counts", one_row_short)
    _refused_leaving_it_as_it_was(path, r"does not match the warehouse \(row counts of power_trace\)")


def test_compact_removes_what_a_killed_compact_left_behind(tmp_path):
    path = tmp_path / "w.duckdb"
    _ingest(path, "run-a", 3_000)
    before = _snapshot(path)
    (tmp_path / ("w.duckdb" + TEMP_SUFFIX)).write_bytes(b"half a file")
    (tmp_path / ("w.duckdb" + TEMP_SUFFIX + ".wal")).write_bytes(b"half a wal")

    compact(path)

    assert _snapshot(path) == before
    assert not _temp_files(path)


@pytest.mark.slow  # a compact run as a process and killed: ~3 s
def test_a_compact_killed_after_its_copy_leaves_the_warehouse_as_it_was(tmp_path):
    path = tmp_path / "w.duckdb"
    _ingest(path, "run-a", 200_000)
    before, digest = _snapshot(path), _sha256(path)
    sentinel, script = tmp_path / "copied", tmp_path / "child.py"
    script.write_text(KILLED_CHILD.format(repo=str(REPO)))
    child = subprocess.Popen([sys.executable, str(script), str(path), str(sentinel)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def the_copy_is_on_disk():
        assert (tmp_path / ("w.duckdb" + TEMP_SUFFIX)).stat().st_size > 0

    fx.kill_when_paused(child, sentinel, the_copy_is_on_disk)

    assert _sha256(path) == digest and _snapshot(path) == before
    compact(path)  # the next compact clears the half-done one and completes
    assert _snapshot(path) == before
    assert not _temp_files(path)


def test_compact_of_a_missing_warehouse_says_so_and_creates_nothing(tmp_path):
    with pytest.raises(WarehouseError, match=r"nope\.duckdb: no warehouse file here; pass --warehouse"):
        compact(tmp_path / "nope.duckdb")
    assert list(tmp_path.iterdir()) == []


def test_compact_command_prints_what_it_did(tmp_path, capsys):
    path = tmp_path / "w.duckdb"
    _ingest(path, "run-a", 3_000)
    parser = argparse.ArgumentParser(prog="fleetphysics")
    cli.register(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["compact", "--warehouse", str(path), "--json"])
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["warehouse"] == str(path) and result["storage_version_after"] == PINNED
    assert result["rows"] > 3_000 and result["bytes_after"] == path.stat().st_size

    args = parser.parse_args(["compact", "--warehouse", str(path)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith(f"compacted {path}: ")


def test_power_trace_copied_in_several_slices_keeps_every_row(tmp_path, monkeypatch):
    path = tmp_path / "w.duckdb"
    for i, rows in enumerate((3_000, 2_000, 2_500)):
        _ingest(path, f"run-{i}", rows, seed=i)
    before = _snapshot(path)
    monkeypatch.setattr(compact_module, "SLICE_ROWS", 2_000)
    heard = []

    compact(path, progress=lambda *r: heard.append(r))

    assert _snapshot(path) == before
    total = sum(before["counts"].values())
    assert heard[0] == ("compact", 0, total) and heard[-1] == ("compact", total, total)
    done = [d for _, d, _ in heard]
    assert done == sorted(done)
