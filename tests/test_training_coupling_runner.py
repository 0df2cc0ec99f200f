"""The training_coupling experiment end to end on a simulated device (smoke profile): runner,
a trace rendered from the recorded load markers, the coupling analysis and the figure."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from agents.markers import MarkerWriter, markers_table, read_markers
from agents.physics import LoadEdge, render_trace
from agents.profiles import load_profile
from agents.simulated import SimulatedDevice, load_edges_from_markers
from experiments.analysis import tables
from experiments.analysis.coupling import analyze_training_coupling
from experiments.analysis.rle import rle_series
from experiments.context import ArtifactWriter, RunContext
from experiments.training_coupling import NAME, TrainingCouplingConfig, run
from experiments.training_coupling.runner import read_counter_j, sim_level_for
from tiers import marks_users

S = 1_000_000_000
PROFILE = "rtx4080-laptop"
REPORT_KEYS = {"steps", "aligned_fraction", "collapse_rate", "verdict", "p_value", "best_lag", "correlation"}


def test_profiles_and_schema():
    smoke = TrainingCouplingConfig.for_profile("smoke")
    assert smoke.model == "tiny" and smoke.steps >= 40
    for profile in ("quick", "full"):
        cfg = TrainingCouplingConfig.for_profile(profile)
        assert cfg.steps > smoke.steps and cfg.lr_spike_steps
    with pytest.raises(ValidationError):
        TrainingCouplingConfig(stepz=3)
    with pytest.raises(ValidationError):
        TrainingCouplingConfig(batch_size=0)


def test_learning_rate_schedule_and_spikes():
    cfg = TrainingCouplingConfig(lr=1e-3, warmup_steps=4, lr_spike_steps=[10], lr_spike_factor=20.0,
                                 lr_spike_length=2)
    assert cfg.lr_at(0) == pytest.approx(2.5e-4)
    assert cfg.lr_at(5) == pytest.approx(1e-3)
    assert cfg.lr_at(10) == cfg.lr_at(11) == pytest.approx(2e-2)
    assert cfg.lr_at(12) == pytest.approx(1e-3)
    assert [cfg.in_spike(i) for i in (9, 10, 11, 12)] == [False, True, True, False]


def test_sim_level_is_constant_unless_the_test_knob_is_on():
    cfg = TrainingCouplingConfig(sim_level=0.6)
    assert sim_level_for(cfg, []) == sim_level_for(cfg, [1.0, 5.0]) == 0.6
    knob = TrainingCouplingConfig(sim_level=0.6, sim_power_follows_grad_norm=0.2)
    assert sim_level_for(knob, []) == 0.6
    assert sim_level_for(knob, [1.0, 1.0, 1.5]) == pytest.approx(0.7)  # 0.6 + 0.2 * (1.5 / 1.0 - 1)
    assert sim_level_for(knob, [1.0, 1.0, 50.0]) == 1.0
    assert sim_level_for(knob, [1.0, 1.0, None]) == 0.6


def test_counter_read_is_retried_after_a_failed_read():
    class Caps:
        energy_j = True

    class Ctx:
        device = type("D", (), {"capabilities": Caps()})()

        def __init__(self, values):
            self.values = list(values)

        def energy_counter_j(self):
            return self.values.pop(0)

    assert read_counter_j(Ctx([None, 12.5])) == 12.5
    assert read_counter_j(Ctx([None, None, None, 1.0])) is None
    Caps.energy_j = False
    assert read_counter_j(Ctx([None, 3.0])) is None  # no counter: one read, no retries


@pytest.fixture(scope="module")
@marks_users("realtime")  # the runner paces its steps on the clock (sim_min_step_s): seconds, and load-sensitive
def smoke_run(tmp_path_factory):
    """One smoke run with the positive-control knob on, and a trace rendered from its markers."""
    tmp = tmp_path_factory.mktemp("tc")
    prof = load_profile(PROFILE)
    dev = SimulatedDevice(prof, host_id="t", t_start_ns=0, marker_writer=MarkerWriter(tmp / "markers.jsonl"))
    ctx = RunContext(device=dev, markers=MarkerWriter(tmp / "markers.jsonl"), artifacts=ArtifactWriter(tmp),
                     run_id="r1")
    cfg = TrainingCouplingConfig.for_profile("smoke").model_copy(update={"sim_power_follows_grad_norm": 0.5})
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # not the runner's one thread (conftest sets one for every test)
    try:
        result = run(ctx, cfg)
        assert torch.get_num_threads() == 2  # the runner's one-thread setting is restored
    finally:
        torch.set_num_threads(threads)
    markers = read_markers(tmp / "markers.jsonl")
    edges = load_edges_from_markers(markers, dev.uuid)
    grid = np.arange(result["t_start_ns"] - 2 * S, result["t_end_ns"] + S // 2, 20_000_000, dtype=np.int64)
    r = render_trace(prof, edges, grid, seed=0, t_start_ns=0)
    trace = pd.DataFrame({k: v for k, v in r.items() if not k.startswith("true_") and k != "floor"})
    trace["t_ns"] = grid
    trace["device_uuid"] = dev.uuid
    return {"tmp": tmp, "prof": prof, "dev": dev, "cfg": cfg, "result": result, "markers": markers, "edges": edges,
            "grid": grid, "trace": trace, "truth": r}


def test_runner_records_steps_on_the_monotonic_clock(smoke_run):
    res, cfg = smoke_run["result"], smoke_run["cfg"]
    json.dumps(res, allow_nan=False)
    assert res["experiment"] == NAME and res["schema_version"] == 1
    assert res["end_reason"] == "completed" and res["simulated"] is True
    steps = res["steps"]
    assert len(steps) == cfg.steps
    assert {"step", "loss", "grad_norm", "lr", "t_start_ns", "t_end_ns", "energy_j"} <= set(steps[0])
    assert res["t_start_ns"] <= steps[0]["t_start_ns"] and steps[-1]["t_end_ns"] <= res["t_end_ns"]
    for a, b in zip(steps, steps[1:]):
        assert a["t_start_ns"] < a["t_end_ns"] <= b["t_start_ns"]
    assert all(s["grad_norm"] > 0 and np.isfinite(s["loss"]) for s in steps)
    assert min(s["t_end_ns"] - s["t_start_ns"] for s in steps) >= cfg.sim_min_step_s * S * 0.99
    assert steps[-1]["loss"] < steps[0]["loss"]  # it does train
    assert [s["lr_spike"] for s in steps].count(True) == len(cfg.lr_spike_steps) * cfg.lr_spike_length

    # Event markers bracket each step with the same times; the counter reads are in them.
    mk = pd.DataFrame(markers_table(smoke_run["markers"]).to_pandas())
    ev = tables.event_windows(mk)
    assert len(ev) == len(steps) and set(ev["phase"]) == {"train_step"}
    assert ev["t_start_ns"].tolist() == [s["t_start_ns"] for s in steps]
    assert ev["t_end_ns"].tolist() == [s["t_end_ns"] for s in steps]
    # Per-step energy from the counter adds up to the true energy of the steps (the counter
    # refreshes every 100 ms, so allow two refreshes of full power).
    total = sum(s["energy_j"] for s in steps)
    truth = smoke_run["dev"].truth(np.array([steps[0]["t_start_ns"], steps[-1]["t_end_ns"]]))["energy_j"]
    assert total == pytest.approx(truth[1] - truth[0], abs=2 * 0.1 * 150.0 + 0.02 * total)


def test_analysis_end_to_end_detects_the_positive_control(smoke_run):
    prof, res = smoke_run["prof"], smoke_run["result"]
    out = analyze_training_coupling(smoke_run["trace"], res["steps"], prof.power_limit_w, prof.slowdown_temp_c)
    json.dumps(out, allow_nan=False)
    assert REPORT_KEYS <= set(out) and REPORT_KEYS <= set(out["figures"])
    assert out["steps"] == len(res["steps"])
    assert out["aligned_fraction"] >= 0.99
    assert out["verdict"] == "coupled", out["verdict_reason"]
    assert out["p_value"] <= 0.01
    assert out["target"] == "power" and out["correlation"] > 0.3
    # The level follows the previous step's grad norm; the simulated sensor's 100 ms update and
    # window add about one more step of 80 ms.
    assert out["best_lag"] in (1, 2, 3)
    assert out["figures"]["targets"]["collapse"]["tested"] is False  # a 10 s run is inside RLE's warm-up
    assert out["per_step"][5]["energy_j"] is not None


def test_analysis_end_to_end_negative_control_constant_load(smoke_run):
    """The same steps against a board whose load did not follow the grad norm."""
    prof, res, cfg = smoke_run["prof"], smoke_run["result"], smoke_run["cfg"]
    flat = [LoadEdge(e.t_ns, cfg.sim_level if e.level > 0 else 0.0) for e in smoke_run["edges"]]
    r = render_trace(prof, flat, smoke_run["grid"], seed=0, t_start_ns=0)
    trace = pd.DataFrame({k: v for k, v in r.items() if not k.startswith("true_") and k != "floor"})
    trace["t_ns"] = smoke_run["grid"]
    out = analyze_training_coupling(trace, res["steps"], prof.power_limit_w, prof.slowdown_temp_c)
    assert out["verdict"] == "not coupled", out["verdict_reason"]


def test_figure(smoke_run, tmp_path):
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed: the training-coupling figure is optional")
    from experiments.training_coupling.plot import plot_training_coupling

    prof, res = smoke_run["prof"], smoke_run["result"]
    trace = smoke_run["trace"]
    series = rle_series(trace, prof.power_limit_w, prof.slowdown_temp_c)
    out = analyze_training_coupling(trace, res["steps"], prof.power_limit_w, prof.slowdown_temp_c)
    path = tmp_path / "training_coupling.png"
    fig = plot_training_coupling(res["steps"], series, out, path=path, simulated=True, trace=trace)
    assert len(fig.axes) == 4
    assert path.stat().st_size > 10_000
