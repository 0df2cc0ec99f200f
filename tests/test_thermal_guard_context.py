"""The run context's thermal guard: TR122's trip with hysteresis during any experiment that
waits through ctx.sleep. The load comes off at the trip point and back at the resume point,
with markers, and the pause does not shorten the experiment's own wait."""

from __future__ import annotations

import time
from types import SimpleNamespace

from experiments.analysis.heat_soak import ThermalGuard
from experiments.context import RunContext


class ScriptedDevice:
    """A device whose temperature follows a script, one reading per read_sample."""

    simulated = True
    uuid = "SIM-guard"

    def __init__(self, temps):
        self.temps = list(temps)
        self.loads = []

    def read_sample(self, t_ns):
        return SimpleNamespace(temp_c=self.temps.pop(0) if len(self.temps) > 1 else self.temps[0])

    def set_load(self, level, vram_mib=None, t_ns=None):  # the in-process hook RunContext calls
        self.loads.append(level)
        return time.monotonic_ns() if t_ns is None else t_ns


class Marks:
    def __init__(self):
        self.rows = []

    def mark(self, name, device_uuid=None, **attrs):
        self.rows.append((name, attrs))
        return time.monotonic_ns()


def test_a_trip_takes_the_load_off_until_the_board_cools():
    # warm, over the trip (85 C), cooling through 82 and 81 (still paused), resumed at 80
    device = ScriptedDevice([70, 72, 86, 86, 84, 82, 81, 80, 76, 75])
    marks = Marks()
    ctx = RunContext(device=device, markers=marks, artifacts=None, run_id="r",
                     guard=ThermalGuard(slowdown_temp_c=90.0), guard_period_s=0.01)
    ctx.set_load(1.0)
    t0 = time.monotonic()
    assert ctx.sleep(0.1) is True
    assert time.monotonic() - t0 >= 0.1  # the pause did not eat the experiment's own wait
    names = [n for n, _ in marks.rows]
    assert names == ["thermal_pause", "thermal_resume"]
    pause, resume = (a for _, a in marks.rows)
    assert pause["trip_c"] == 85.0 and pause["resume_c"] == 80.0 and resume["temp_c"] <= 80.0
    assert device.loads == [1.0, 0.0, 1.0]  # off at the trip, the declared level back on resume


def test_without_a_trip_nothing_changes_and_a_stop_ends_a_pause():
    device = ScriptedDevice([60.0])
    marks = Marks()
    ctx = RunContext(device=device, markers=marks, artifacts=None, run_id="r", guard=ThermalGuard(None),
                     guard_period_s=0.01)
    ctx.set_load(0.5)
    assert ctx.sleep(0.05) is True and marks.rows == [] and device.loads == [0.5]

    hot = ScriptedDevice([90.0])  # never cools
    stop = {"now": False}
    ctx = RunContext(device=hot, markers=Marks(), artifacts=None, run_id="r", guard=ThermalGuard(None),
                     guard_period_s=0.01, should_stop=lambda: stop["now"])
    ctx.set_load(1.0)
    import threading

    threading.Timer(0.1, lambda: stop.update(now=True)).start()
    assert ctx.sleep(5.0) is False  # asked to stop while paused
