"""The VRAM cliff on simulated devices: the allocator torture and the batch x context search."""

from __future__ import annotations

import json
import resource

import pytest
import torch

from agents.device import Capabilities, Device, DeviceInfo, Sample
from agents.markers import MarkerWriter, read_markers
from agents.profiles import load_profile
from agents.simulated import SimulatedDevice
from experiments.context import ArtifactWriter, RunContext
from experiments.memory import ActivationModel, MiB, SimulatedMemory
from experiments.vram_cliff import NAME, VramCliffConfig, run
from experiments.vram_cliff.runner import search_max_context, torture
from experiments import workload
from experiments.sim_accelerator import ALLOCATOR_GRANULARITY_MB


def make_ctx(tmp_path, profile="rtx4080-laptop", **kw) -> RunContext:
    markers = MarkerWriter(tmp_path / "markers.jsonl")
    dev = SimulatedDevice(load_profile(profile), host_id="t", t_start_ns=0, marker_writer=markers)
    return RunContext(device=dev, markers=markers, artifacts=ArtifactWriter(tmp_path), run_id="r1", **kw)


def fast_config(**kw) -> VramCliffConfig:
    base = dict(batch_sizes=[1, 8], context_start=512, context_step=256, probe_hold_s=0.0)
    return VramCliffConfig(**{**base, **kw})


def analytic_limit(profile_name: str, n_positions: int, batch: int, config: VramCliffConfig) -> int:
    """The memory model's cliff, computed apart from the search: weights, then fresh segments."""
    profile = load_profile(profile_name)
    mem = SimulatedMemory(profile.vram_total_mib, profile.vram_base_mib, ALLOCATOR_GRANULARITY_MB)
    act = ActivationModel.from_dims(workload.shape_dims(config.model, n_positions), config.dtype)
    for _, n in act.weight_tensors():
        mem.allocate(n)
    return act.max_context(batch, mem.capacity_bytes - mem.reserved_bytes, segment_bytes=mem.segment_bytes)


@pytest.mark.parametrize("profile", ["rtx4080-laptop", "h100-sxm"])
def test_cliff_within_one_step_of_the_memory_model(tmp_path, profile):
    cfg = fast_config()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run(make_ctx(tmp_path, profile), cfg)
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert rss_growth_mib < 512  # the memory model answers; nothing of GB size is allocated on the host
    n_positions = result["figures"]["n_positions"]
    rows = result["figures"]["cliff"]
    assert [r["batch_size"] for r in rows] == [1, 8]
    for row in rows:
        limit = analytic_limit(profile, n_positions, row["batch_size"], cfg)
        assert row["cause"] == "memory"
        assert row["search_step"] == 256
        assert row["max_context"] < n_positions  # memory, not the position table, stopped it
        assert abs(row["max_context"] - limit) <= cfg.context_step, (row, limit)
        assert row["model_max_context"] == limit
        assert row["first_failing_context"] - row["max_context"] <= cfg.context_step
        # The raw-bytes model agrees too: allocator rounding costs a few tokens at most.
        act = ActivationModel.from_dims(workload.shape_dims("124m", n_positions))
        capacity = (load_profile(profile).vram_total_mib - load_profile(profile).vram_base_mib) * MiB
        raw = act.max_context(row["batch_size"], int(capacity) - act.weight_bytes())
        assert 0 <= raw - limit < 64
    # The cliff sits near the board's VRAM: the largest passing probe used most of it.
    vram_total = load_profile(profile).vram_total_mib
    assert rows[0]["nvml_used_mib"] > 0.85 * vram_total
    assert "within_one_step_of_model" not in result["checks"]  # true by construction here: a test, not a check
    assert result["checks"]["cliff_found"] and result["checks"]["cliff_is_memory"]
    # Headline figures (the smallest batch size's cliff), as the fleet table reads them.
    figs = result["figures"]
    assert figs["max_context_batch1"] == figs["max_context"] == rows[0]["max_context"]
    assert figs["limiting_cause"] == "memory" and figs["vram_total_mib"] == vram_total
    assert figs["cliff_mib"] == rows[0]["nvml_used_mib"] and 0.85 < figs["cliff_fraction"] <= 1
    assert figs["max_alloc_mib"] == figs["fragmentation"]["largest_allocatable_mib"]


def test_small_position_limit_is_architecture(tmp_path):
    result = run(make_ctx(tmp_path), fast_config(batch_sizes=[1], n_positions=1024))
    (row,) = result["figures"]["cliff"]
    assert row["cause"] == "architecture"
    assert row["max_context"] == 1024 and row["first_failing_context"] is None
    assert not any(p["oom"] for p in result["probes"])
    assert result["figures"]["n_positions"] == 1024
    assert result["figures"]["limiting_cause"] == "architecture" and result["figures"]["cliff_mib"] is None


def test_probes_record_peak_reserved_and_nvml(tmp_path):
    ctx = make_ctx(tmp_path)
    result = run(ctx, fast_config(batch_sizes=[2]))
    probes = result["probes"]
    assert probes and any(p["oom"] for p in probes) and any(p["ok"] for p in probes)
    base_mib = load_profile("rtx4080-laptop").vram_base_mib
    for p in probes:
        assert p["peak_allocated_mib"] > 0 and p["reserved_mib"] >= p["peak_allocated_mib"] - 1e-9
        assert p["nvml_used_mib"] == pytest.approx(base_mib + p["reserved_mib"])
        assert p["t_end_ns"] >= p["t_start_ns"]
    ok = [p for p in probes if p["ok"]]
    assert max(p["context"] for p in ok) == result["figures"]["cliff"][0]["max_context"]
    # The probes' VRAM is declared to the simulated device: the trace sees it.
    markers = read_markers(tmp_path / "markers.jsonl")
    (t_search,) = [m["t_ns"] for m in markers if m["name"] == "phase_start" and m["attrs"]["phase"] == f"{NAME}.search"]
    (t_done,) = [m["t_ns"] for m in markers if m["name"] == "phase_end" and m["attrs"]["phase"] == f"{NAME}.search"]
    declared = [m["attrs"]["vram_mib"] for m in markers
                if m["name"] == "load" and t_search <= m["t_ns"] <= t_done and m["attrs"].get("vram_mib") is not None]
    assert max(declared) == pytest.approx(max(p["reserved_mib"] for p in probes))
    assert max(declared) + base_mib <= load_profile("rtx4080-laptop").vram_total_mib
    # The torture test drove the VRAM to the board's capacity before the search.
    torture_peak = max(m["attrs"].get("vram_mib") or 0 for m in markers if m["name"] == "load" and m["t_ns"] < t_search)
    assert torture_peak + base_mib == pytest.approx(load_profile("rtx4080-laptop").vram_total_mib, abs=64)
    names = [m["attrs"].get("phase") for m in markers if m["name"] == "phase_start"]
    assert names[:2] == [NAME, f"{NAME}.torture"] and f"{NAME}.search" in names
    json.dumps(result)  # JSON-safe


class SpyMemory(SimulatedMemory):
    """Records the order of stats reads and explicit empty_cache calls."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.log: list[tuple[str, float]] = []

    def stats(self):
        st = super().stats()
        self.log.append(("stats", st.fragmentation))
        return st

    def empty_cache(self):
        self.log.append(("empty_cache", 0.0))
        super().empty_cache()


def test_fragmentation_is_positive_and_read_before_empty_cache():
    mem = SpyMemory(12282, 350)
    frag = torture(mem, fast_config())
    assert frag["fragmentation"] > 0.05
    assert frag["inactive_split_mib"] > 0 and frag["holes"] > 0
    first_empty = next(i for i, (name, _) in enumerate(mem.log) if name == "empty_cache")
    reads_before = [value for name, value in mem.log[:first_empty] if name == "stats"]
    assert frag["fragmentation"] in reads_before  # the reported value was read before any empty_cache
    assert frag["read_order"].index("read_stats") < frag["read_order"].index("empty_cache")
    # TR122's method (block count over bytes, after empty_cache) reads 0 on the same pattern.
    assert frag["tr122_method_value"] == pytest.approx(0.0, abs=1e-6)
    assert frag["pressure_blocks_until_oom"] > 0 and mem.stats().num_ooms >= 1
    assert 0 < frag["largest_free_block_mib"] <= 64
    assert frag["largest_allocatable_mib"] >= frag["largest_free_block_mib"]
    assert mem.allocated_bytes == 0 and mem.reserved_bytes == 0  # everything given back at the end


def test_torture_on_the_runner_result(tmp_path):
    result = run(make_ctx(tmp_path, "h100-sxm"), fast_config(batch_sizes=[1]))
    frag = result["figures"]["fragmentation"]
    assert frag["fragmentation"] > 0
    assert result["checks"]["fragmentation_positive"]
    # Self-tests of torture() (true by construction, so tests rather than the run's checks):
    order = frag["read_order"]
    assert order.index("read_stats") < order.index("empty_cache")  # fragmentation read with the holes present
    assert frag["tr122_method_value"] < 1e-6  # TR122's count-over-bytes after empty_cache reads ~0
    assert not {"fragmentation_read_before_empty_cache", "tr122_method_reads_zero"} & set(result["checks"])


def test_search_max_context_unit():
    limit = 1000

    def probe(t):
        return t <= limit

    found = search_max_context(probe, n_positions=1 << 16, start=64, step=16)
    assert found["cause"] == "memory" and limit - 16 < found["max_context"] <= limit
    assert found["first_failing_context"] - found["max_context"] <= 16
    arch = search_max_context(probe, n_positions=700, start=64, step=16)
    assert arch["cause"] == "architecture" and arch["max_context"] == 700
    tiny = search_max_context(lambda t: t <= 5, n_positions=4096, start=64, step=1)
    assert tiny["max_context"] == 5
    none = search_max_context(lambda t: False, n_positions=4096, start=64, step=1)
    assert none["max_context"] == 0 and none["cause"] == "memory"
    stopped = search_max_context(probe, n_positions=4096, start=64, step=1, should_stop=lambda: True)
    assert stopped["cause"] is None and stopped["stopped"] and stopped["probes"] == 0


def test_should_stop_ends_the_search_early(tmp_path):
    calls = {"n": 0}

    def stop_after_some():
        calls["n"] += 1
        return calls["n"] > 4

    result = run(make_ctx(tmp_path, should_stop=stop_after_some), fast_config(batch_sizes=[1, 2, 4]))
    assert result["quality"]["stopped_early"]
    assert len(result["figures"]["cliff"]) < 3 or result["figures"]["cliff"][-1]["cause"] is None
    assert not result["checks"]["cliff_found"]


def test_presets_and_validation():
    for profile in ("smoke", "quick", "full"):
        cfg = VramCliffConfig.for_profile(profile)
        assert cfg.batch_sizes == sorted(cfg.batch_sizes)
    assert VramCliffConfig.for_profile("full").context_step < VramCliffConfig.for_profile("smoke").context_step
    with pytest.raises(ValueError):
        VramCliffConfig(batch_sizes=[4, 2])
    with pytest.raises(ValueError):
        VramCliffConfig(bogus=1)
    with pytest.raises(ValueError):
        VramCliffConfig(torture_min_block_mib=80, torture_max_block_mib=64)


class FakeGpu(Device):
    """A non-simulated device whose NVML 'used' is read from a fake CUDA allocator."""

    def __init__(self, memory):
        self.memory = memory
        self._info = DeviceInfo(uuid="GPU-fake", name="fake", index=0, simulated=False, vram_total_mib=256,
                                power_limit_w=None, default_power_limit_w=None, slowdown_temp_c=None,
                                shutdown_temp_c=None)

    @property
    def info(self):
        return self._info

    @property
    def capabilities(self):
        return Capabilities()

    def read_sample(self, t_ns=None):
        return Sample(power_w=50.0, vram_used_mib=100 + self.memory.reserved_bytes / MiB)


class FakeCudaMemory(SimulatedMemory):
    """Stands in for CudaMemory: the runner must use it only through the DeviceMemory interface."""

    simulated = False


def test_real_device_path_runs_real_prefills_and_translates_oom(tmp_path, monkeypatch):
    """The CUDA code path, on the CPU: real tiny prefills; CUDA OOM above a token budget."""
    from experiments.vram_cliff import runner as vc_runner

    memory = FakeCudaMemory(total_mib=256, base_mib=0)
    monkeypatch.setattr(vc_runner, "open_memory", lambda ctx, config: memory)
    budget_tokens = 700
    real_prefill, calls = workload.prefill, []

    def prefill(model, ids):
        calls.append(tuple(ids.shape))
        if ids.numel() > budget_tokens:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return real_prefill(model, ids)

    monkeypatch.setattr(workload, "prefill", prefill)
    markers = MarkerWriter(tmp_path / "markers.jsonl")
    ctx = RunContext(device=FakeGpu(memory), markers=markers, artifacts=ArtifactWriter(tmp_path), run_id="r1")
    cfg = fast_config(shape="tiny", batch_sizes=[1, 2], context_start=64, context_step=16, n_positions=4096)
    result = run(ctx, cfg)
    rows = {r["batch_size"]: r for r in result["figures"]["cliff"]}
    assert calls and all(b in (1, 2) for b, _ in calls)  # every probe was a real prefill
    for batch, row in rows.items():
        assert row["cause"] == "memory"
        assert budget_tokens // batch - 16 < row["max_context"] <= budget_tokens // batch
    assert result["quality"]["probe_source"] == "real-prefill" and not result["quality"]["simulated"]
    oom = [p for p in result["probes"] if p["oom"]]
    assert oom and all("CUDA out of memory" in p["error"] for p in oom)
    assert all(p["nvml_used_mib"] is not None for p in result["probes"])
    # On a real device set_load only records markers (level and VRAM), it drives nothing.
    loads = [m for m in read_markers(tmp_path / "markers.jsonl") if m["name"] == "load"]
    assert loads and all(m["device_uuid"] == "GPU-fake" for m in loads)


@pytest.mark.slow  # an 8B-class cliff search or a whole simulated run: tens of seconds
@pytest.mark.parametrize("name, kv_per_token", [("llama-3.1-8b", 131072), ("qwen2.5-7b", 57344),
                                                ("mistral-7b", 131072)])
def test_8b_class_bf16_cliff_on_an_h100(tmp_path, name, kv_per_token):
    from experiments import model_shapes

    cfg = fast_config(model=name, dtype="bfloat16", batch_sizes=[1, 4])
    result = run(make_ctx(tmp_path, "h100-sxm"), cfg)
    figs = result["figures"]
    model = figs["model"]
    act = ActivationModel.from_shape(model_shapes.resolve(name), "bfloat16")
    assert model["kv_cache_bytes_per_token"] == kv_per_token
    assert model["weight_bytes"] == act.weight_bytes() and model["family"] == model_shapes.resolve(name).family
    # The allocator hands out whole blocks when the rest is too small to split: a little above.
    assert act.weight_bytes() / MiB <= figs["weights_mib"] < 1.005 * act.weight_bytes() / MiB
    profile = load_profile("h100-sxm")
    for row in figs["cliff"]:
        assert row["cause"] == "memory" and abs(row["max_context"] - row["model_max_context"]) <= cfg.context_step
    # The measured cliff (NVML used at the largest fitting prefill) sits just under the H100's
    # 80 GB, beside the memory model's prediction for it.
    assert 0.9 * profile.vram_total_mib < figs["cliff_mib"] <= profile.vram_total_mib
    assert figs["predicted_cliff_mib"] == pytest.approx(figs["cliff_mib"], rel=0.02)
    assert figs["predicted_max_context"] == figs["cliff"][0]["model_max_context"]
    assert "within_one_step_of_model" not in result["checks"]  # checked per row above (i24: a test, not a check)


@pytest.mark.slow  # an 8B-class cliff search or a whole simulated run: tens of seconds
def test_gqa_and_bf16_move_the_cliff(tmp_path):
    """MHA holds 4x the KV cache of GQA; float32 doubles every byte: both cliffs come earlier."""
    import json as _json

    from experiments import model_shapes

    fields = dict(model_shapes.BUILTIN_CONFIGS["llama-3.1-8b"], num_key_value_heads=32)
    (tmp_path / "mha.json").write_text(_json.dumps(fields))
    base = dict(batch_sizes=[1], attn_implementation="sdpa", context_start=4096, context_step=512)
    gqa = run(make_ctx(tmp_path / "a", "h100-sxm"), fast_config(model="llama-3.1-8b", dtype="bfloat16", **base))
    mha = run(make_ctx(tmp_path / "b", "h100-sxm"), fast_config(model=str(tmp_path / "mha.json"), dtype="bfloat16",
                                                                 **base))
    assert mha["figures"]["model"]["kv_cache_bytes_per_token"] == 4 * 131072
    assert mha["figures"]["max_context"] < gqa["figures"]["max_context"]
    assert mha["figures"]["model"]["builtin"] is False


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2.5-7b"])
def test_real_device_path_runs_a_family_model_from_a_local_config(tmp_path, monkeypatch, name):
    """The CUDA code path with a tiny Llama/Qwen2 from a config.json: real prefills, the cache of the family."""
    import json as _json

    from experiments import model_shapes
    from experiments.vram_cliff import runner as vc_runner

    shape = model_shapes.resolve(name).tiny()
    (tmp_path / "config.json").write_text(_json.dumps(dict(shape.config)))
    memory = FakeCudaMemory(total_mib=256, base_mib=0)
    monkeypatch.setattr(vc_runner, "open_memory", lambda ctx, config: memory)
    built = []
    real_build = workload.build_model

    def build_model(*a, **kw):
        built.append(real_build(*a, **kw))
        return built[-1]

    monkeypatch.setattr(workload, "build_model", build_model)
    real_prefill, caches = workload.prefill, []

    def prefill(model, ids):
        if ids.numel() > 300:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
        out = real_prefill(model, ids)
        caches.append(sum(t.numel() * t.element_size() for layer in out.past.layers
                          for t in (layer.keys, layer.values)))
        return out

    monkeypatch.setattr(workload, "prefill", prefill)
    markers = MarkerWriter(tmp_path / "markers.jsonl")
    ctx = RunContext(device=FakeGpu(memory), markers=markers, artifacts=ArtifactWriter(tmp_path), run_id="r1")
    cfg = fast_config(model=str(tmp_path), batch_sizes=[1, 2], context_start=32, context_step=16, n_positions=4096)
    result = run(ctx, cfg)
    assert type(built[0]).__name__.lower().startswith(shape.family)
    act = ActivationModel.from_shape(shape, "float32")
    ok = [p for p in result["probes"] if p["ok"]]
    assert caches == [act.kv_cache_bytes(p["batch_size"], p["context"]) for p in ok]
    assert result["figures"]["model"]["kv_cache_bytes_per_token"] == act.kv_cache_bytes_per_token()
    assert [r["cause"] for r in result["figures"]["cliff"]] == ["memory", "memory"]
