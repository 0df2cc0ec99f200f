"""The joule curve runner on a simulated device: warmup really run, matched events, load covering events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from agents.device import Capabilities, Device, DeviceInfo, Sample
from agents.markers import MarkerWriter, read_markers
from agents.profiles import load_profile
from agents.simulated import SimulatedDevice
from experiments import workload
from experiments.context import ArtifactWriter, RunContext
from experiments.joule_curve import NAME, JouleCurveConfig, run
from experiments.joule_curve.runner import effective_min_event_s

BATCHES = [1, 2, 4]


def make_ctx(tmp_path, profile="rtx4080-laptop", **kw) -> RunContext:
    markers = MarkerWriter(tmp_path / "markers.jsonl")
    dev = SimulatedDevice(load_profile(profile), host_id="t", t_start_ns=0, marker_writer=markers)
    return RunContext(device=dev, markers=markers, artifacts=ArtifactWriter(tmp_path), run_id="r1", **kw)


def fast_config(**kw) -> JouleCurveConfig:
    base = dict(batch_sizes=BATCHES, repetitions=2, warmup_repetitions=2, input_tokens=8, output_tokens=3,
                min_event_s=0.06, min_sensor_periods=0, cpu_stand_in=True)
    return JouleCurveConfig(**{**base, **kw})


@pytest.fixture
def counted(monkeypatch):
    """Counts every prefill/decode call the runner makes (through the workload module)."""
    calls = {"prefill": 0, "decode": 0}
    real_prefill, real_decode = workload.prefill, workload.decode

    def prefill(*a, **k):
        calls["prefill"] += 1
        return real_prefill(*a, **k)

    def decode(*a, **k):
        calls["decode"] += 1
        return real_decode(*a, **k)

    monkeypatch.setattr(workload, "prefill", prefill)
    monkeypatch.setattr(workload, "decode", decode)
    return calls


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """One run shared by the marker tests (the model is built once)."""
    tmp = tmp_path_factory.mktemp("joule")
    cfg = fast_config()
    result = run(make_ctx(tmp), cfg)
    return result, read_markers(tmp / "markers.jsonl"), cfg


def test_warmup_is_really_run(tmp_path, counted):
    cfg = fast_config(repetitions=1, warmup_repetitions=2)
    result = run(make_ctx(tmp_path), cfg)
    measured = [e for e in result["events"] if e["phase"] == "prefill"]
    assert all(e["passes"] == 1 for e in result["events"])  # simulated: one pass, padded by the load
    assert counted["prefill"] == len(BATCHES) * cfg.warmup_repetitions + len(measured)
    assert counted["decode"] == len(BATCHES) * cfg.warmup_repetitions + len(measured)
    assert result["quality"]["warmup_passes"] == len(BATCHES) * 2
    assert result["checks"]["warmup_ran"]
    # Each batch size's warmup phase comes before its first measured event.
    markers = read_markers(tmp_path / "markers.jsonl")
    for batch in BATCHES:
        warm = [m["t_ns"] for m in markers if m["name"] == "phase_start"
                and m["attrs"]["phase"] == f"{NAME}.warmup" and m["attrs"]["batch_size"] == batch]
        first = min(m["t_ns"] for m in markers if m["name"] == "event_start" and m["attrs"]["batch_size"] == batch)
        assert len(warm) == 1 and warm[0] < first


def test_simulated_default_runs_no_model_and_counts_tokens(tmp_path, counted):
    cfg = fast_config(cpu_stand_in=False, repetitions=1, warmup_repetitions=1)
    result = run(make_ctx(tmp_path), cfg)
    assert counted == {"prefill": 0, "decode": 0}
    assert result["figures"]["model"]["ran"] == "none (declared load)"
    for ev in result["events"]:
        assert ev["passes"] == 1 and ev["duration_s"] >= cfg.min_event_s
        per_pass = ev["batch_size"] * (cfg.input_tokens if ev["phase"] == "prefill" else cfg.output_tokens)
        assert ev["input_tokens"] + ev["output_tokens"] == per_pass
    assert result["checks"]["warmup_ran"] and result["quality"]["warmup_passes"] == len(BATCHES)


def test_simulated_default_imports_neither_torch_nor_transformers(tmp_path):
    """What keeps a fleet of simulated hosts cheap: ~6 CPU-s of imports per host avoided."""
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
                          min_event_s=0.05, min_sensor_periods=0))
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_no_warmup_when_configured_none(tmp_path, counted):
    result = run(make_ctx(tmp_path), fast_config(batch_sizes=[1], repetitions=1, warmup_repetitions=0))
    assert counted["prefill"] == 1 and result["quality"]["warmup_passes"] == 0


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
    ordered = sorted(starts.values(), key=lambda m: m["t_ns"])
    batches = [m["attrs"]["batch_size"] for m in ordered]
    assert batches == sorted(batches) and sorted(set(batches)) == BATCHES
    # Events do not overlap: each ends before the next starts.
    spans = sorted((s["t_ns"], ends[eid]["t_ns"]) for eid, s in starts.items())
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert result["checks"]["events_matched"] and result["checks"]["batch_sizes_increasing"]


def test_load_markers_cover_each_event(sim_run):
    result, markers, cfg = sim_run
    loads = sorted((m["t_ns"], m["attrs"]["level"]) for m in markers if m["name"] == "load")
    for ev in result["events"]:
        level = cfg.load_level(ev["phase"], ev["batch_size"])
        assert ev["load_level"] == level > 0
        before = [lv for t, lv in loads if t <= ev["t_start_ns"]]
        assert before and before[-1] == level  # the event's level is declared before it starts...
        assert not [t for t, _ in loads if ev["t_start_ns"] < t < ev["t_end_ns"]]  # ...held throughout...
        after = [lv for t, lv in loads if t >= ev["t_end_ns"]]
        assert after and after[0] == 0.0  # ...and dropped after it ends
    # The load model grows with batch size, prefill above decode.
    for phase in ("prefill", "decode"):
        levels = [cfg.load_level(phase, b) for b in BATCHES]
        assert levels == sorted(levels) and levels[0] < levels[-1]
    assert all(cfg.load_level("prefill", b) > cfg.load_level("decode", b) for b in BATCHES)


def test_event_records(sim_run):
    result, markers, cfg = sim_run
    keys = {"event_id", "phase", "batch_size", "input_tokens", "output_tokens", "t_start_ns", "t_end_ns",
            "energy_counter_start_j", "energy_counter_end_j", "tokens_per_second"}
    for ev in result["events"]:
        assert keys <= set(ev)
        assert ev["duration_s"] >= cfg.min_event_s * 0.999  # padded to the minimum duration
        assert ev["energy_counter_end_j"] >= ev["energy_counter_start_j"]  # 60 ms: maybe no counter refresh
        if ev["phase"] == "prefill":
            assert ev["input_tokens"] == ev["batch_size"] * cfg.input_tokens and ev["output_tokens"] == 0
            assert ev["tokens_per_second"] == pytest.approx(ev["input_tokens"] / ev["duration_s"])
        else:
            assert ev["output_tokens"] == ev["batch_size"] * cfg.output_tokens and ev["input_tokens"] == 0
    assert result["experiment"] == NAME and result["schema_version"] == 1
    assert {r["batch_size"] for r in result["figures"]["throughput"]} == set(BATCHES)
    assert result["checks"]["min_event_duration_met"] and result["checks"]["energy_counter_read"]
    json.dumps(result)  # JSON-safe


def test_min_event_duration_is_ten_sensor_periods_on_a_simulated_board(tmp_path):
    ctx = make_ctx(tmp_path)
    period_s = load_profile("rtx4080-laptop").sensor_update_period_ms / 1000
    assert effective_min_event_s(ctx, JouleCurveConfig(min_event_s=0.1)) == pytest.approx(10 * period_s)
    assert effective_min_event_s(ctx, JouleCurveConfig(min_event_s=3.0)) == 3.0
    assert JouleCurveConfig.for_profile("smoke").min_event_s >= 10 * period_s


def test_events_of_ten_sensor_periods_bill_the_declared_load(tmp_path):
    profile = load_profile("rtx4080-laptop")
    cfg = fast_config(batch_sizes=[2], repetitions=1, warmup_repetitions=0, min_event_s=0.0, min_sensor_periods=10)
    result = run(make_ctx(tmp_path), cfg)
    for ev in result["events"]:
        assert ev["duration_s"] >= 10 * profile.sensor_update_period_ms / 1000 * 0.999
        counter_j = ev["energy_counter_end_j"] - ev["energy_counter_start_j"]
        # The counter refreshes every 100 ms: over >= 1 s it bills the declared level's power within ~10 %.
        expected_j = min(profile.demand_w(ev["load_level"]), profile.power_limit_w) * ev["duration_s"]
        assert counter_j == pytest.approx(expected_j, rel=0.12)


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
        return DeviceInfo(uuid="GPU-fake", name="fake", index=0, simulated=False, vram_total_mb=1024,
                          power_limit_w=None, default_power_limit_w=None, slowdown_temp_c=None, shutdown_temp_c=None)

    @property
    def capabilities(self):
        return Capabilities(energy_j=False)

    def read_sample(self, t_ns=None):
        return Sample(power_w=50.0)


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
        assert ev["energy_counter_start_j"] is None and ev["load_level"] is None
    prefill_passes = sum(e["passes"] for e in result["events"] if e["phase"] == "prefill")
    assert counted["prefill"] == 2 * cfg.warmup_repetitions + prefill_passes
    assert result["checks"]["energy_counter_read"] is None  # no counter on this device
    # A tiny pass takes milliseconds: reaching 0.3 s took repeated passes (decode rewinds its cache).
    assert all(e["passes"] >= 2 for e in result["events"] if e["phase"] == "prefill")
    assert any(e["passes"] >= 2 for e in result["events"] if e["phase"] == "decode")
    ends = [m for m in read_markers(tmp_path / "markers.jsonl") if m["name"] == "event_end"]
    assert [m["attrs"]["passes"] for m in ends] == [e["passes"] for e in result["events"]]


def test_simulated_8b_model_declares_its_modelled_vram(tmp_path, counted):
    """No model runs on a simulated board: llama-3.1-8b's memory model sizes the declared VRAM."""
    from experiments import model_shapes
    from experiments.memory import ActivationModel, MiB

    cfg = fast_config(model="llama-3.1-8b", dtype="bfloat16", cpu_stand_in=False, batch_sizes=[1, 4],
                      repetitions=1, warmup_repetitions=1, input_tokens=128, output_tokens=16)
    result = run(make_ctx(tmp_path, "h100-sxm"), cfg)
    assert counted == {"prefill": 0, "decode": 0}
    model = result["figures"]["model"]
    assert model["kv_cache_bytes_per_token"] == 131072 and model["n_params"] == 8_030_261_248
    assert model["weight_bytes"] == 8_030_261_248 * 2 and model["family"] == "llama" and model["builtin"]
    act = ActivationModel.from_shape(model_shapes.resolve("llama-3.1-8b"), "bfloat16", attn_implementation="sdpa")
    predicted = {r["batch_size"]: r["vram_mb"] for r in model["predicted_vram_mb"]}
    for batch in (1, 4):
        # weights, the cache of 128 + 15 tokens and the largest transient: the logits of 128 prompt tokens
        assert predicted[batch] == (act.weight_bytes() + act.serve_peak_bytes(batch, 128, 16)) / MiB
        assert act.weight_bytes() / MiB < predicted[batch] < act.weight_bytes() / MiB + 1024 * batch
    declared = {m["attrs"].get("vram_mb") for m in read_markers(tmp_path / "markers.jsonl")
                if m["name"] == "load" and m["attrs"]["level"] > 0}
    assert declared == set(predicted.values())


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b"])
def test_cpu_stand_in_runs_the_tiny_model_of_the_same_family(tmp_path, counted, name):
    cfg = fast_config(model=name, dtype="bfloat16", batch_sizes=[1, 2], repetitions=1, warmup_repetitions=1)
    result = run(make_ctx(tmp_path), cfg)
    assert counted["prefill"] >= 4 and counted["decode"] >= 4  # real prefill and cached decode passes
    assert result["figures"]["model"]["ran"] == f"{name} (tiny) on the CPU (stand-in)"
    assert result["figures"]["model"]["dtype"] == "bfloat16"
    assert result["checks"]["events_matched"] and result["checks"]["warmup_ran"]


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
