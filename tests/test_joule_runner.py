"""The joule curve runner: the same loop on a simulated board and on a torch device (warmup
really run, matched events, passes repeated until min_event_s, per-pass energy law)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from agents.device import Capabilities, Device, DeviceInfo, Sample
from agents.markers import MarkerWriter, markers_table, read_markers
from agents.physics import render_trace
from agents.profiles import builtin_profile_names, load_profile
from agents.simulated import SimulatedDevice, load_edges_from_markers
from experiments import workload
from experiments.context import ArtifactWriter, RunContext
from experiments.joule_curve import NAME, JouleCurveConfig, run
from experiments.sim_accelerator import SimAccelerator

BATCHES = [1, 2, 4]


def make_ctx(tmp_path, profile="rtx4080-laptop", **kw) -> RunContext:
    markers = MarkerWriter(tmp_path / "markers.jsonl")
    dev = SimulatedDevice(load_profile(profile), host_id="t", t_start_ns=0, marker_writer=markers)
    return RunContext(device=dev, markers=markers, artifacts=ArtifactWriter(tmp_path), run_id="r1", **kw)


def fast_config(**kw) -> JouleCurveConfig:
    base = dict(shape="tiny", batch_sizes=BATCHES, repetitions=2, warmup_repetitions=2, input_tokens=8,
                output_tokens=3, min_event_s=0.06, idle_s=0.0)
    return JouleCurveConfig(**{**base, **kw})


@pytest.fixture
def counted(monkeypatch):
    """Counts every prefill/decode call the runner makes, on either accelerator."""
    calls = {"prefill": 0, "decode": 0}
    for owner in (workload, SimAccelerator):
        for name in ("prefill", "decode"):
            real = getattr(owner, name)

            def counting(*a, _real=real, _name=name, **k):
                calls[_name] += 1
                return _real(*a, **k)

            monkeypatch.setattr(owner, name, counting)
    return calls


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """One run shared by the marker tests."""
    tmp = tmp_path_factory.mktemp("joule")
    cfg = fast_config()
    result = run(make_ctx(tmp), cfg)
    return result, read_markers(tmp / "markers.jsonl"), cfg


def test_warmup_is_really_run(tmp_path, counted):
    cfg = fast_config(repetitions=1, warmup_repetitions=2)
    result = run(make_ctx(tmp_path), cfg)
    passes = {ph: sum(e["passes"] for e in result["events"] if e["phase"] == ph) for ph in ("prefill", "decode")}
    assert counted["prefill"] == len(BATCHES) * cfg.warmup_repetitions + passes["prefill"]
    assert counted["decode"] == len(BATCHES) * cfg.warmup_repetitions + passes["decode"]
    assert result["quality"]["warmup_passes"] == len(BATCHES) * 2
    assert result["checks"]["warmup_ran"]
    # Each batch size's warmup phase comes before its first measured event.
    markers = read_markers(tmp_path / "markers.jsonl")
    for batch in BATCHES:
        warm = [m["t_ns"] for m in markers if m["name"] == "phase_start"
                and m["attrs"]["phase"] == f"{NAME}.warmup" and m["attrs"]["batch_size"] == batch]
        first = min(m["t_ns"] for m in markers if m["name"] == "event_start" and m["attrs"]["batch_size"] == batch)
        assert len(warm) == 1 and warm[0] < first


def test_simulated_board_repeats_passes_until_min_event_s(tmp_path):
    cfg = fast_config(repetitions=1, warmup_repetitions=1, min_event_s=0.2)
    result = run(make_ctx(tmp_path), cfg)
    assert result["figures"]["model"]["ran"] == "on the simulated board's compute model"
    for ev in result["events"]:
        assert ev["passes"] > 1 and ev["duration_s"] >= cfg.min_event_s  # repeated, never padded with idle
        per_pass = ev["batch_size"] * (cfg.input_tokens if ev["phase"] == "prefill" else cfg.output_tokens)
        assert ev["input_tokens"] + ev["output_tokens"] == ev["passes"] * per_pass
        assert ev["compute_s"] >= 0.8 * ev["duration_s"]  # the board was busy, not waiting
    truth = result["figures"]["truth"]
    assert set(truth) == {"prefill", "decode"} and all(v["e_token_j"] > 0 and v["e_fixed_j"] > 0
                                                       for v in truth.values())


@pytest.mark.slow  # a fresh interpreter runs a whole Joule curve: ~5 s
def test_simulated_board_imports_neither_torch_nor_transformers(tmp_path):
    """A simulated board needs the model's shape, never transformers, and torch only for an
    out-of-memory error (~6 CPU-s of imports per simulated host avoided)."""
    code = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from agents.markers import MarkerWriter
from agents.profiles import load_profile
from agents.simulated import SimulatedDevice
from experiments.context import ArtifactWriter, RunContext
from experiments.joule_curve import JouleCurveConfig, run
tmp = Path({str(tmp_path)!r})
markers = MarkerWriter(tmp / "markers.jsonl")
dev = SimulatedDevice(load_profile("rtx4090"), host_id="t", t_start_ns=0, marker_writer=markers)
ctx = RunContext(device=dev, markers=markers, artifacts=ArtifactWriter(tmp), run_id="r1")
run(ctx, JouleCurveConfig(batch_sizes=[1], repetitions=1, warmup_repetitions=1, input_tokens=8, output_tokens=3,
                          min_event_s=0.05))
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_no_warmup_when_configured_none(tmp_path, counted):
    result = run(make_ctx(tmp_path), fast_config(batch_sizes=[1], repetitions=1, warmup_repetitions=0))
    assert counted["prefill"] == result["events"][0]["passes"] and result["quality"]["warmup_passes"] == 0


def test_events_are_matched_and_batch_sizes_increase(sim_run):
    result, markers, cfg = sim_run
    starts = {m["attrs"]["event_id"]: m for m in markers if m["name"] == "event_start"}
    ends = {m["attrs"]["event_id"]: m for m in markers if m["name"] == "event_end"}
    assert set(starts) == set(ends) and len(starts) == len(BATCHES) * cfg.repetitions * 2
    for eid, s in starts.items():
        e = ends[eid]
        assert s["t_ns"] < e["t_ns"]
        for m in (s, e):
            assert set(m["attrs"]) >= {"event_id", "phase", "batch_size", "input_tokens", "output_tokens",
                                       "energy_counter_j"}
            assert m["attrs"]["phase"] in ("prefill", "decode")
            assert m["attrs"]["energy_counter_j"] is not None
        assert e["attrs"]["energy_counter_j"] >= s["attrs"]["energy_counter_j"]
        assert e["attrs"]["passes"] >= 1
    ordered = sorted(starts.values(), key=lambda m: m["t_ns"])
    batches = [m["attrs"]["batch_size"] for m in ordered]
    assert batches == sorted(batches) and sorted(set(batches)) == BATCHES
    # Events do not overlap: each ends before the next starts.
    spans = sorted((s["t_ns"], ends[eid]["t_ns"]) for eid, s in starts.items())
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert result["checks"]["events_matched"] and result["checks"]["batch_sizes_increasing"]


def test_the_board_is_busy_inside_events_and_idle_after(sim_run):
    """The accelerator declares the load its passes draw: busy from the first pass to the
    synchronisation that ends the event, idle by the event's end marker."""
    result, markers, cfg = sim_run
    loads = sorted((m["t_ns"], m["attrs"]["level"]) for m in markers if m["name"] == "load")
    for ev in result["events"]:
        inside = [lv for t, lv in loads if ev["t_start_ns"] <= t < ev["t_end_ns"]]
        assert inside and inside[0] > 0  # the first pass starts the load inside the window
        at_end = [lv for t, lv in loads if t <= ev["t_end_ns"]][-1]
        assert at_end == 0.0  # synchronised: the work ended before the window closed
    # Per pass the compute model's power rises with the batch (more of a pass is token work).
    for phase in ("prefill", "decode"):
        levels = []
        for b in BATCHES:
            ev = next(e for e in result["events"] if e["phase"] == phase and e["batch_size"] == b)
            levels.append(max(lv for t, lv in loads if ev["t_start_ns"] <= t < ev["t_end_ns"]))
        assert levels == sorted(levels)


def test_event_records(sim_run):
    result, markers, cfg = sim_run
    keys = {"event_id", "phase", "batch_size", "input_tokens", "output_tokens", "t_start_ns", "t_end_ns", "passes",
            "energy_counter_start_j", "energy_counter_end_j", "tokens_per_second"}
    for ev in result["events"]:
        assert keys <= set(ev)
        assert ev["duration_s"] >= cfg.min_event_s * 0.999
        assert ev["energy_counter_end_j"] >= ev["energy_counter_start_j"]  # 60 ms: maybe no counter refresh
        if ev["phase"] == "prefill":
            assert ev["input_tokens"] == ev["passes"] * ev["batch_size"] * cfg.input_tokens
            assert ev["output_tokens"] == 0
            assert ev["tokens_per_second"] == pytest.approx(ev["input_tokens"] / ev["duration_s"])
        else:
            assert ev["output_tokens"] == ev["passes"] * ev["batch_size"] * cfg.output_tokens
            assert ev["input_tokens"] == 0
    assert result["experiment"] == NAME and result["schema_version"] == 1
    assert {r["batch_size"] for r in result["figures"]["throughput"]} == set(BATCHES)
    assert result["checks"]["min_event_duration_met"] and result["checks"]["energy_counter_read"]
    json.dumps(result)  # JSON-safe


def test_smoke_events_last_ten_sensor_periods_of_every_builtin_board():
    smoke = JouleCurveConfig.for_profile("smoke")
    for name in builtin_profile_names():
        p = load_profile(name)
        assert smoke.min_event_s >= 10 * max(p.sensor_update_period_ms, p.energy_counter_update_ms) / 1000


@pytest.mark.slow  # an 8B-class cliff search or a whole simulated run: tens of seconds
@pytest.mark.parametrize("board", builtin_profile_names())
def test_per_pass_fit_recovers_the_boards_energy_law(tmp_path, board):
    """The smoke preset on every built-in board: events of several passes, the trace the
    board's sensors give for the recorded load markers, the product's analysis; the per-pass
    fit finds each phase's E_token within 5 % of the compute model's truth."""
    from experiments import reports

    cfg = JouleCurveConfig.for_profile("smoke")
    ctx = make_ctx(tmp_path, board)
    result = run(ctx, cfg)
    markers = read_markers(tmp_path / "markers.jsonl")
    uuid = ctx.device.uuid
    t0 = min(m["t_ns"] for m in markers) - 3_000_000_000
    t1 = max(m["t_ns"] for m in markers) + 1_000_000_000
    grid = np.arange(t0, t1, 20_000_000, dtype=np.int64)
    tr = render_trace(load_profile(board), load_edges_from_markers(markers, uuid), grid, seed=0, t_start_ns=0)
    import pandas as pd

    trace = pd.DataFrame({k: tr[k] for k in ("power_w", "power_instant_w", "energy_j", "temp_c", "read_ok")})
    trace["t_ns"] = grid
    for k in ("power_w", "power_instant_w", "energy_j"):
        trace.loc[~trace["read_ok"], k] = np.nan
    reps, _ = reports.analyse_all({NAME: result}, {NAME: cfg}, trace,
                                  markers_table(markers, device_uuid=uuid).to_pandas(), {"simulated": True})
    figures = reps[NAME]["figures"]
    assert all(e["passes"] > 1 for e in result["events"])
    truth = figures["truth"]
    for fit in figures["fits"]:
        assert fit["quality"] == "good"
        assert fit["params"]["e_token_j"] == pytest.approx(truth[fit["phase"]]["e_token_j"], rel=0.05), fit


def test_idle_window_is_marked_before_the_warmup_with_the_board_quiet(tmp_path):
    """The idle window comes after the model is built and before any pass: phase markers
    bracket it, no load is declared inside it, and the result records the same interval."""
    result = run(make_ctx(tmp_path), fast_config(idle_s=0.3, batch_sizes=[1], repetitions=1))
    markers = read_markers(tmp_path / "markers.jsonl")
    win = result["idle_window"]
    phase = [m["t_ns"] for m in markers if m["attrs"].get("phase") == "joule_curve.idle"]
    assert len(phase) == 2 and phase[0] <= win["t_start_ns"] < win["t_end_ns"] <= phase[1]
    assert win["seconds"] >= 0.3
    busy = [m for m in markers if m["name"] == "load" and m["attrs"]["level"] > 0]
    assert busy and min(m["t_ns"] for m in busy) > phase[1]  # the warmup's work starts after it
    assert min(m["t_ns"] for m in markers if m["name"] == "event_start") > phase[1]


def _analysed(tmp_path, board: str, cfg: JouleCurveConfig, pre_s: float):
    """Run ``cfg`` on ``board``, render the trace its sensors give for the recorded load
    markers from ``pre_s`` before the run's first marker, and run the product's analysis
    (no baseline experiment). Returns (runner result, joule_curve report figures)."""
    import pandas as pd

    from experiments import reports

    ctx = make_ctx(tmp_path, board)
    result = run(ctx, cfg)
    markers = read_markers(tmp_path / "markers.jsonl")
    uuid = ctx.device.uuid
    t0 = min(m["t_ns"] for m in markers) - int(pre_s * 1e9)
    t1 = max(m["t_ns"] for m in markers) + 1_000_000_000
    grid = np.arange(t0, t1, 20_000_000, dtype=np.int64)
    tr = render_trace(load_profile(board), load_edges_from_markers(markers, uuid), grid, seed=0, t_start_ns=0)
    trace = pd.DataFrame({k: tr[k] for k in ("power_w", "power_instant_w", "energy_j", "temp_c", "read_ok")})
    trace["t_ns"] = grid
    for k in ("power_w", "power_instant_w", "energy_j"):
        trace.loc[~trace["read_ok"], k] = np.nan
    reps, _ = reports.analyse_all({NAME: result}, {NAME: cfg}, trace,
                                  markers_table(markers, device_uuid=uuid).to_pandas(), {"simulated": True})
    return result, reps[NAME]["figures"]


EIGHT_B = dict(model="llama-3.1-8b", dtype="bfloat16", batch_sizes=[1, 4], repetitions=2, warmup_repetitions=2,
               input_tokens=512, output_tokens=32, min_event_s=1.0, gap_s=0.5)


@pytest.mark.slow  # a simulated 8B run: about 20 s of real time
def test_8b_j_per_token_without_a_baseline_is_net_of_a_real_idle(tmp_path):
    """An 8B-class model with no baseline experiment and no idle before the run: its warmup
    fills the seconds before the first event, so only the runner's idle window (model
    built, board quiet) is idle. Every J/token point is within 5 % of the compute model's
    truth, (E_fixed + E_token x tokens/pass) / (tokens/pass), and the report names the
    idle source and its interval."""
    cfg = JouleCurveConfig(**EIGHT_B, idle_s=4.0)
    result, figures = _analysed(tmp_path, "h100-sxm", cfg, pre_s=0.0)
    idle = figures["idle"]
    window = result["idle_window"]
    assert idle["source"] == "runner idle window" and idle["quality"] == "good"
    assert window["t_start_ns"] <= idle["t_start_ns"] < idle["t_end_ns"] <= window["t_end_ns"]
    assert idle["power_w"] == pytest.approx(load_profile("h100-sxm").idle_power_w, abs=2.0)
    truth = figures["truth"]
    points = figures["points"]
    assert {(p["phase"], p["batch_size"]) for p in points} == {(ph, b) for ph in ("prefill", "decode") for b in (1, 4)}
    for p in points:
        per_pass = p["batch_size"] * (cfg.input_tokens if p["phase"] == "prefill" else cfg.output_tokens)
        law = truth[p["phase"]]
        want = law["e_fixed_j"] / per_pass + law["e_token_j"]
        assert p["j_per_token"] == pytest.approx(want, rel=0.05), p


@pytest.mark.slow  # a simulated 8B run: about 15 s of real time
def test_no_idle_stretch_leaves_net_figures_unresolved(tmp_path):
    """Without a baseline, an idle window or idle before the first load edge, there is no
    idle reference: the net figures are left out and the report says insufficient, naming
    why, instead of subtracting the warmup as idle."""
    cfg = JouleCurveConfig(**{**EIGHT_B, "batch_sizes": [1], "repetitions": 1}, idle_s=0.0)
    result, figures = _analysed(tmp_path, "h100-sxm", cfg, pre_s=0.0)
    assert result["idle_window"] is None and result["events"]
    assert figures["idle"]["source"] is None and figures["idle"]["power_w"] is None
    assert figures["quality"] == "insufficient" and "no idle reference" in figures["quality_reason"]
    assert figures["points"] == [] and figures.get("j_per_token") is None


def test_should_stop_between_events(tmp_path):
    n = {"calls": 0}

    def stop():
        n["calls"] += 1
        return n["calls"] > 2

    result = run(make_ctx(tmp_path, should_stop=stop), fast_config())
    assert result["quality"]["stopped_early"]
    assert 0 < len(result["events"]) < len(BATCHES) * 2 * 2
    markers = read_markers(tmp_path / "markers.jsonl")
    assert sum(m["name"] == "event_start" for m in markers) == sum(m["name"] == "event_end" for m in markers)


def test_presets_and_validation():
    smoke = JouleCurveConfig.for_profile("smoke")
    # The smoke preset's events fit its share of the 60 s suite.
    assert len(smoke.batch_sizes) * smoke.repetitions * 2 * smoke.min_event_s <= 8
    for profile in ("quick", "full"):
        cfg = JouleCurveConfig.for_profile(profile)
        assert cfg.warmup_repetitions >= 1 and cfg.batch_sizes == sorted(cfg.batch_sizes)
    with pytest.raises(ValueError):
        JouleCurveConfig(batch_sizes=[2, 2])
    with pytest.raises(ValueError):
        JouleCurveConfig(warmup=3)


class RealLikeDevice(Device):
    """A non-simulated device without an energy counter (the CUDA path's control flow, on the CPU)."""

    @property
    def info(self):
        return DeviceInfo(uuid="GPU-fake", name="fake", index=0, simulated=False, vram_total_mib=1024,
                          power_limit_w=None, default_power_limit_w=None, slowdown_temp_c=None, shutdown_temp_c=None)

    @property
    def capabilities(self):
        return Capabilities(energy_j=False)

    def read_sample(self, t_ns=None):
        return Sample(power_w=50.0)


@pytest.mark.realtime  # how many passes fill min_event_s depends on how fast the machine is right now
def test_real_device_repeats_passes_instead_of_idling(tmp_path, counted):
    markers = MarkerWriter(tmp_path / "markers.jsonl")
    ctx = RunContext(device=RealLikeDevice(), markers=markers, artifacts=ArtifactWriter(tmp_path), run_id="r1")
    cfg = fast_config(shape="tiny", dtype="float32", batch_sizes=[1, 2], repetitions=1, warmup_repetitions=1,
                      min_event_s=0.3)
    result = run(ctx, cfg)
    for ev in result["events"]:
        assert ev["duration_s"] >= cfg.min_event_s
        assert ev["compute_s"] >= 0.5 * ev["duration_s"]  # busy, not padded with idle (which would be ~0)
        per_pass = ev["batch_size"] * (cfg.input_tokens if ev["phase"] == "prefill" else cfg.output_tokens)
        assert ev["input_tokens"] + ev["output_tokens"] == ev["passes"] * per_pass
        assert ev["energy_counter_start_j"] is None
    prefill_passes = sum(e["passes"] for e in result["events"] if e["phase"] == "prefill")
    assert counted["prefill"] == 2 * cfg.warmup_repetitions + prefill_passes
    assert result["checks"]["energy_counter_read"] is None  # no counter on this device
    assert result["figures"]["truth"] is None  # hardware: no known energy law
    # A tiny pass takes milliseconds: reaching 0.3 s took repeated passes (decode rewinds its cache).
    assert all(e["passes"] >= 2 for e in result["events"] if e["phase"] == "prefill")
    assert any(e["passes"] >= 2 for e in result["events"] if e["phase"] == "decode")
    ends = [m for m in read_markers(tmp_path / "markers.jsonl") if m["name"] == "event_end"]
    assert [m["attrs"]["passes"] for m in ends] == [e["passes"] for e in result["events"]]


def test_simulated_8b_model_runs_on_the_boards_compute_model(tmp_path, counted):
    """No torch model runs on a simulated board: llama-3.1-8b's shape goes through the board's
    compute and memory model; the report carries its memory figures and predicted VRAM."""
    from experiments import model_shapes
    from experiments.memory import ActivationModel, MiB

    cfg = fast_config(model="llama-3.1-8b", dtype="bfloat16", batch_sizes=[1, 4],
                      repetitions=1, warmup_repetitions=1, input_tokens=128, output_tokens=16)
    ctx = make_ctx(tmp_path, "h100-sxm")
    result = run(ctx, cfg)
    assert isinstance(ctx.accelerator, SimAccelerator) and counted["prefill"] >= 4 and counted["decode"] >= 4
    model = result["figures"]["model"]
    assert model["kv_cache_bytes_per_token"] == 131072 and model["n_params"] == 8_030_261_248
    assert model["weight_bytes"] == 8_030_261_248 * 2 and model["family"] == "llama" and model["builtin"]
    assert model["ran"] == "on the simulated board's compute model"
    act = ActivationModel.from_shape(model_shapes.resolve("llama-3.1-8b"), "bfloat16", attn_implementation="sdpa")
    predicted = {r["batch_size"]: r["vram_mib"] for r in model["predicted_vram_mib"]}
    for batch in (1, 4):
        # weights, the cache of 128 + 15 tokens and the largest transient: the logits of 128 prompt tokens
        assert predicted[batch] == (act.weight_bytes() + act.serve_peak_bytes(batch, 128, 16)) / MiB
        assert act.weight_bytes() / MiB < predicted[batch] < act.weight_bytes() / MiB + 1024 * batch
    # The board's allocator holds the 8B weights (16 GB in bf16) while the passes run: the
    # declared VRAM is the weights and the passes' segments, under the board's 80 GB.
    declared = [m["attrs"]["vram_mib"] for m in read_markers(tmp_path / "markers.jsonl")
                if m["name"] == "load" and m["attrs"]["level"] > 0]
    assert declared and min(declared) >= act.weight_bytes() / MiB
    assert max(declared) < load_profile("h100-sxm").vram_total_mib
    assert result["figures"]["truth"]["prefill"]["e_token_j"] > 0


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b"])
def test_every_family_runs_the_same_loop_on_a_simulated_board(tmp_path, counted, name):
    from experiments import model_shapes

    cfg = fast_config(model=name, dtype="bfloat16", batch_sizes=[1, 2], repetitions=1, warmup_repetitions=1)
    ctx = make_ctx(tmp_path, "h100-sxm")
    result = run(ctx, cfg)
    assert isinstance(ctx.accelerator, SimAccelerator)  # the board's compute model runs the passes
    assert counted["prefill"] >= 4 and counted["decode"] >= 4
    assert result["figures"]["model"]["family"] == model_shapes.resolve(name).family
    assert result["figures"]["model"]["dtype"] == "bfloat16"
    assert result["checks"]["events_matched"] and result["checks"]["warmup_ran"]


@pytest.mark.slow  # a small llama on the CPU: ~3 s
def test_real_device_runs_a_llama_from_a_local_config(tmp_path, counted):
    from experiments import model_shapes

    shape = model_shapes.resolve("llama-3.1-8b").tiny()
    (tmp_path / "config.json").write_text(json.dumps(dict(shape.config)))
    markers = MarkerWriter(tmp_path / "markers.jsonl")
    ctx = RunContext(device=RealLikeDevice(), markers=markers, artifacts=ArtifactWriter(tmp_path), run_id="r1")
    cfg = fast_config(model=str(tmp_path / "config.json"), dtype="float32", batch_sizes=[1, 2], repetitions=1,
                      warmup_repetitions=1, min_event_s=0.05)
    result = run(ctx, cfg)
    model = result["figures"]["model"]
    assert model["ran"] == "on the device" and model["family"] == "llama" and not model["builtin"]
    assert model["kv_cache_bytes_per_token"] == shape.kv_cache_bytes_per_token(4)
    assert counted["prefill"] >= 4 and len(result["events"]) == 4
    assert all(e["compute_s"] > 0 for e in result["events"])


def test_too_long_events_for_the_model_are_refused(tmp_path):
    from agents.errors import ExperimentError

    with pytest.raises(ExperimentError, match="position limit 1024 of gpt2"):
        run(make_ctx(tmp_path), fast_config(model="gpt2", input_tokens=1000, output_tokens=100))
