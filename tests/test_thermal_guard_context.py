"""The run context's thermal guard: TR122's trip with hysteresis during every experiment, in
its waits (ctx.sleep) and between the passes and steps of its load. The load comes off at
the trip point and back at the resume point, with markers; the pause does not shorten the
experiment's own wait; a unit of work the trip interrupted runs again."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from agents.errors import ThermalTrip
from agents.markers import MarkerWriter, read_markers
from agents.profiles import load_profile
from agents.simulated import SimulatedDevice
from experiments.analysis.heat_soak import ThermalGuard
from experiments.context import MAX_TRIPS_PER_UNIT, ArtifactWriter, RunContext


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


def test_a_trip_inside_a_unit_of_work_stops_it_cools_and_runs_it_again():
    """guarded(): the unit checks the guard between its passes; a trip raises ThermalTrip out
    of it, the load comes off until the resume point, and the unit runs again from the start;
    a unit that trips MAX_TRIPS_PER_UNIT times ends the experiment with the trip."""
    device = ScriptedDevice([70, 86, 84, 79, 70])
    marks = Marks()
    ctx = RunContext(device=device, markers=marks, artifacts=None, run_id="r",
                     guard=ThermalGuard(slowdown_temp_c=90.0), guard_period_s=0.0)
    ctx.set_load(1.0)
    runs = []

    def unit():
        runs.append("start")
        for _ in range(2):  # two passes, the guard checked after each
            ctx.thermal_check()
        return "done"

    assert ctx.guarded(unit, "event-1") == "done"
    assert runs == ["start", "start"]  # tripped at 86 C in the first run, run again once cooled
    assert [n for n, _ in marks.rows] == ["thermal_pause", "thermal_resume"]
    (trip,) = ctx.thermal_trips
    assert trip["during"] == "event-1" and trip["rerun"] and trip["temp_c"] == 86 and trip["resumed_temp_c"] <= 80
    assert device.loads == [1.0, 0.0, 1.0]

    always_hot = ScriptedDevice([86, 79] * 10)  # trips in every run
    ctx = RunContext(device=always_hot, markers=Marks(), artifacts=None, run_id="r",
                     guard=ThermalGuard(slowdown_temp_c=90.0), guard_period_s=0.0)
    with pytest.raises(ThermalTrip):
        ctx.guarded(lambda: ctx.thermal_check(), "event-2")
    assert len(ctx.thermal_trips) == MAX_TRIPS_PER_UNIT and not ctx.thermal_trips[-1]["rerun"]


# A board forced hot: 43 C ambient, tau 0.75 s and a 60 C slowdown (the guard trips at 55 C,
# resumes at 52 C). Idle it settles at 50 C; a sustained load takes it past the trip within
# half a second, and from the resume point back to the trip takes about three 60 ms events.
HOT = {"ambient_c": 43.0, "thermal_capacitance_j_per_c": 2.5, "slowdown_temp_c": 60.0}


def hot_ctx(tmp_path):
    prof = load_profile("rtx4080-laptop").model_copy(update=HOT)
    markers = MarkerWriter(tmp_path / "markers.jsonl")
    dev = SimulatedDevice(prof, host_id="t", t_start_ns=0, marker_writer=markers)
    ctx = RunContext(device=dev, markers=markers, artifacts=ArtifactWriter(tmp_path), run_id="r1",
                     guard=ThermalGuard(slowdown_temp_c=prof.slowdown_temp_c), guard_period_s=0.01)
    return ctx, tmp_path / "markers.jsonl"


def _pauses(path):
    rows = read_markers(path)
    pauses = [m["t_ns"] for m in rows if m["name"] == "thermal_pause"]
    resumes = [m["t_ns"] for m in rows if m["name"] == "thermal_resume"]
    assert len(pauses) == len(resumes) and all(p < r for p, r in zip(pauses, resumes))
    return rows, list(zip(pauses, resumes))


def _outside(windows, pauses):
    return all(not (t0 < p < t1 or t0 < r < t1) for t0, t1 in windows for p, r in pauses)


@pytest.mark.realtime  # the board cools on the wall clock between trips
def test_a_hot_board_pauses_a_training_run_between_steps_and_it_finishes(tmp_path):
    from experiments.training_coupling import TrainingCouplingConfig
    from experiments.training_coupling import run as train

    ctx, path = hot_ctx(tmp_path)
    cfg = TrainingCouplingConfig.for_profile("smoke").model_copy(update={"steps": 10, "sim_level": 1.0})
    res = train(ctx, cfg)
    assert res["end_reason"] == "completed" and len(res["steps"]) == 10
    trips = res["thermal_trips"]
    assert trips and all(t["during"].startswith("step-") and not t["rerun"] for t in trips)
    assert all(t["temp_c"] >= t["trip_c"] and t["resumed_temp_c"] <= t["resume_c"] for t in trips)
    _, pauses = _pauses(path)
    assert len(pauses) == len(trips)
    assert _outside([(s["t_start_ns"], s["t_end_ns"]) for s in res["steps"]], pauses)  # no step spans a pause


@pytest.mark.realtime  # the board cools on the wall clock between trips
def test_a_hot_board_aborts_a_joule_event_cools_and_reruns_it(tmp_path):
    from experiments.analysis import tables
    from experiments.joule_curve import JouleCurveConfig
    from experiments.joule_curve import run as joule

    ctx, path = hot_ctx(tmp_path)
    cfg = JouleCurveConfig(shape="tiny", batch_sizes=[1, 2, 4], repetitions=4, warmup_repetitions=1, input_tokens=8,
                           output_tokens=3, min_event_s=0.06)
    res = joule(ctx, cfg)
    q = res["quality"]
    assert q["thermal_stop"] is None and len(res["events"]) == 2 * 3 * 4  # every event finished
    ids = [e["event_id"] for e in res["events"]]
    assert len(set(ids)) == len(ids)
    trips = res["thermal_trips"]
    in_events = [t for t in trips if t["rerun"]]
    assert in_events, trips  # at least one trip hit a measured event
    assert all(t["resumed_temp_c"] <= t["resume_c"] for t in trips)
    rows, pauses = _pauses(path)
    aborted = [m["attrs"]["event_id"] for m in rows if m["name"] == "event_end" and m["attrs"].get("aborted")]
    assert sorted(aborted) == sorted(t["during"] for t in in_events)
    assert all(a in ids for a in aborted)  # each aborted event ran again to the end
    # the analysis sees only the completed events, none of which spans a pause
    import pandas as pd

    from agents.markers import markers_table

    windows = tables.event_windows(pd.DataFrame(markers_table(rows).to_pandas()))
    assert sorted(windows["event_id"]) == sorted(ids)
    assert _outside(zip(windows["t_start_ns"], windows["t_end_ns"]), pauses)


@pytest.mark.realtime  # three trips, each cooled on the wall clock
def test_a_board_that_cannot_hold_the_load_ends_the_square_wave_on_its_third_trip(tmp_path):
    """instrument_response's load segments read the guard between short busy stretches. The hot
    board at full load re-trips within a fraction of a second of every resume, so a 1 s
    segment never completes: three cooled trips, then the square wave ends with the trip
    recorded (thermal_stop), the load off and the board at or under the resume point."""
    from experiments.instrument_response import InstrumentResponseConfig
    from experiments.instrument_response.runner import run as square_wave

    ctx, path = hot_ctx(tmp_path)
    res = square_wave(ctx, InstrumentResponseConfig(idle_s=0.2, load_s=1.0, repeats=2, level=1.0))
    assert res["thermal_stop"] and "thermal guard tripped" in res["thermal_stop"] and res["edges"] == []
    trips = ctx.thermal_trips
    assert [t["rerun"] for t in trips] == [True] * (MAX_TRIPS_PER_UNIT - 1) + [False]
    assert all(t["during"] == "instrument_response.load" and t["resumed_temp_c"] <= t["resume_c"] for t in trips)
    _pauses(path)
    assert ctx.load_state[1] == 0.0
