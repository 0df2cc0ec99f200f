"""Terminal tables that do not fit leave columns out by priority and fold, never cut a cell."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

import cluster.progress as progress
from cluster.device_commands import DEVICE_COLUMNS, describe_devices, devices_table
from cluster.term_table import Column, fit_table

GPU_UUID = "GPU-8f2c3d1e-5b6a-4c7d-9e8f-0a1b2c3d4e5f"


def _console(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)


def _render(console: Console, renderable) -> str:
    console.print(renderable)
    return console.file.getvalue()


def _header(text: str) -> list[str]:
    """The column names of the first table in ``text`` (the line between the top rules)."""
    line = next(ln for ln in text.splitlines() if ln.startswith("┃"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


def _cells_of(text: str, column: int) -> str:
    """A column's cells, folded lines joined back."""
    rows = [ln for ln in text.splitlines() if ln.startswith("│")]
    return "".join(ln.strip("│").split("│")[column].strip() for ln in rows)


COLUMNS = (Column("host"), Column("device"), Column("sim"), Column("idle W", 1, "right"), Column("notes", 3),
           Column("rise ms", 2, "right"), Column("state"))
ROWS = [("gpu-node-a17.cluster.example.org", GPU_UUID, "real", "61.2 ± 0.12", "x" * 30, "250", "completed"),
        ("sim-2-h100-sxm", "SIM-h100-sxm-e3a58039-1", "simulated", "-", "", "-", "partial")]


def test_a_wide_terminal_shows_every_column():
    text = _render(_console(200), fit_table(_console(200), "t", COLUMNS, ROWS))
    assert _header(text) == [c.name for c in COLUMNS]
    assert "…" not in text and "not shown" not in text and GPU_UUID in text


def test_a_narrow_terminal_leaves_columns_out_by_priority_and_names_them():
    console = _console(120)
    text = _render(console, fit_table(console, "t", COLUMNS, ROWS))
    kept = _header(text)
    assert kept == ["host", "device", "sim", "idle W", "state"]  # notes (3) went first, then rise ms (2)
    assert "…" not in text and GPU_UUID in text
    caption = " ".join(text.split())
    assert "not shown" in caption and "notes, rise ms" in caption and "120 columns" in caption
    assert max(len(ln) for ln in text.splitlines()) <= 120


def test_when_even_the_key_columns_are_too_wide_they_fold_and_keep_every_character():
    console = _console(60)
    text = _render(console, fit_table(console, "t", COLUMNS, ROWS))
    assert _header(text) == ["host", "device", "sim", "state"]
    assert "…" not in text and max(len(ln) for ln in text.splitlines()) <= 60
    devices = _cells_of(text, 1)
    assert GPU_UUID in devices and "SIM-h100-sxm-e3a58039-1" in devices
    assert "gpu-node-a17.cluster.example.org" in _cells_of(text, 0)


def test_rows_must_match_the_columns():
    with pytest.raises(ValueError):
        fit_table(_console(80), "t", COLUMNS, [("only", "two")])


@pytest.mark.parametrize("width", [80, 200])
def test_the_devices_table_keeps_identity_and_the_simulated_label(width):
    devices = describe_devices("sim:h100-sxm,sim:rtx4080-laptop")
    console = _console(width)
    text = _render(console, devices_table(console, devices))
    header = _header(text)
    assert header[:2] == ["device_uid", "name"]
    assert "…" not in text and max(len(ln) for ln in text.splitlines()) <= width
    for d in devices:
        assert d["info"]["uuid"] in _cells_of(text, 0)
    assert text.count("(simulated)") == len(devices)
    if width == 200:
        assert header == [c.name for c in DEVICE_COLUMNS]
    else:
        assert "fingerprint" not in header and "not shown" in text


def _summary():
    device = dict(idle_w=61.234, idle_sem_w=0.12, update_period_ms=100, rise_ms=250, vram_cliff=18432,
                  j_per_token=0.0123, tau_s=410, equilibrium=True, run_state="completed", end_reason="completed")
    return {"run_id": "run-20261205-130000-abcd", "run_state": "completed", "warehouse": "fleet.duckdb", "out": "runs",
            "devices": [dict(device, host="gpu-node-a17.cluster.example.org", device_uid=GPU_UUID, simulated=False),
                        dict(device, host="sim-2-h100-sxm", device_uid="SIM-h100-sxm-e3a58039-1", simulated=True)]}


@pytest.mark.parametrize("width", [80, 140, 200])
def test_the_fleet_comparison_keeps_host_device_sim_and_state(width, monkeypatch):
    console = _console(width)
    monkeypatch.setattr(progress, "report_console", lambda: console)
    progress.print_comparison(_summary())
    text = console.file.getvalue()
    header = _header(text)
    assert {"host", "device", "sim", "state"} <= set(header)
    assert "…" not in text and "simulated" in _cells_of(text, header.index("sim"))
    assert GPU_UUID in _cells_of(text, header.index("device"))
    table_lines = [ln for ln in text.splitlines() if re.match(r"^[┏┃┡│└]", ln)]
    assert max(len(ln) for ln in table_lines) <= width
    if width == 200:
        assert header == [c.name for c in progress.COMPARISON_COLUMNS]
    if width == 140:
        assert "idle W" in header and len(header) < len(progress.COMPARISON_COLUMNS)


def test_the_live_fleet_table_fits_too():
    live = progress.FleetProgress({"gpu-node-a17.cluster.example.org": (None, {"devices": [GPU_UUID]})}, enabled=False)
    live.console = _console(60)
    text = _render(live.console, live._table(None, {}))
    assert {"host", "state", "device"} <= set(_header(text)) and "…" not in text
    assert GPU_UUID in _cells_of(text, _header(text).index("device"))


def test_the_live_poll_table_keeps_device_and_power():
    from cluster.device_commands import _live_table

    console = _console(50)
    info = {GPU_UUID: {"info": {"simulated": False}}, "SIM-h100-sxm-e3a58039-1": {"info": {"simulated": True}}}
    rows = {GPU_UUID: {"power_w": 61.2, "temp_c": 40.0, "read_ok": True}}
    text = _render(console, _live_table(console, rows, info, 1.0, 10.0))
    header = _header(text)
    assert header[:2] == ["device", "power W"] and "SM MHz" not in header and "…" not in text
    devices = _cells_of(text, 0)
    assert GPU_UUID in devices and "SIM-h100-sxm-e3a58039-1 (sim)" in devices and "61.2" in _cells_of(text, 1)


@pytest.mark.parametrize("columns,width", [("80", 80), ("200", 200), (None, progress.PIPE_WIDTH)])
def test_the_report_in_a_pipe_is_wide_unless_columns_says(columns, width, monkeypatch):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert progress.report_console().width == width
