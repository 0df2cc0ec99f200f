"""Progress bars go to stderr, and only when stderr is a terminal: stdout keeps the JSON."""

from __future__ import annotations

import json

import warehouse_fixtures as fx
from warehouse import progress
from warehouse.cli import _ingest


def test_bars_draw_each_phase_with_its_count_on_stderr(capsys):
    with progress.progress_bars(enabled=True) as report:
        report("validating", 0, 1200)
        report("validating", 1200, 1200)
        report("writing", 7, 1200)
    out, err = capsys.readouterr()
    assert out == ""
    assert "validating" in err and "1,200/1,200" in err and "writing" in err and "7/1,200" in err


def test_no_terminal_no_bar(capsys):
    with progress.progress_bars() as report:  # under pytest stderr is not a terminal
        report("validating", 1, 2)
    assert report is progress.no_report and capsys.readouterr() == ("", "")


def test_ingest_command_prints_only_its_json_when_piped(tmp_path, capsys):
    root = tmp_path / "out"
    fx.write_device_dir(root, "run-0001", "host-a", "dev-0")
    args = type("Args", (), {"warehouse": str(tmp_path / "w.duckdb"), "dirs": [str(root)], "lock_timeout_s": 5.0})
    assert _ingest(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"run_id": "run-0001", "devices": ["dev-0"], "rows": 2000} and err == ""
