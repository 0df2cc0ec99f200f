"""Progress bars go to stderr, and only when stderr is a terminal: stdout keeps the JSON."""

from __future__ import annotations

import json
import threading
import time

import pytest

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
    args = type("Args", (), {"warehouse": str(tmp_path / "w.duckdb"), "dirs": [str(root)], "lock_timeout_s": 5.0,
                                   "replace": False})
    assert _ingest(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"run_id": "run-0001", "devices": ["dev-0"], "rows": 2000} and err == ""


@pytest.mark.realtime  # counts the ticks of a 1.3 s wait
def test_a_wait_of_known_length_is_reported_in_seconds_as_it_passes():
    heard = []
    with progress.ticking(lambda *r: heard.append(r), "poller process", 1.0, every_s=0.05):
        time.sleep(1.3)
    assert heard[0] == ("poller process", 0, 1) and heard[-1] == ("poller process", 1, 1)
    done = [d for _, d, _ in heard]
    assert done == sorted(done) and done.count(0) > 5  # ticked while the wait ran, never backwards
    assert all(t.name != "progress-poller process" for t in threading.enumerate())  # the ticker is gone


def test_a_wait_nobody_watches_starts_no_thread():
    before = threading.active_count()
    with progress.ticking(progress.no_report, "poller process", 1.0):
        assert threading.active_count() == before
