"""The simulated accelerator: the torch accelerator's calls, timed and powered by a board's compute model."""

from __future__ import annotations

import time

import pytest
import torch

from agents.factory import DeviceSpec, open_device
from agents.markers import MarkerWriter, read_markers
from agents.profiles import builtin_profile_names, load_profile
from agents.sim_nvml import marker_load_source
from experiments.context import ArtifactWriter, RunContext
from experiments.memory import MiB, translate_cuda_oom
from experiments.sim_accelerator import ComputeModel, SimAccelerator
from agents.errors import OutOfDeviceMemory


def nvml_ctx(tmp_path, board="h100-sxm") -> RunContext:
    """A context on the factory's device: the NVML backend on the simulated library."""
    spec = DeviceSpec("sim", board, 0, "t", 0)
    markers = MarkerWriter(tmp_path / "markers.jsonl")
    from agents.factory import device_uid_of

    dev = open_device(spec, load_source=marker_load_source(tmp_path / "markers.jsonl", device_uid_of(spec)))
    return RunContext(device=dev, markers=markers, artifacts=ArtifactWriter(tmp_path), run_id="r")


def test_the_factory_device_gets_the_boards_accelerator(tmp_path):
    ctx = nvml_ctx(tmp_path)
    acc = ctx.accelerator
    assert isinstance(acc, SimAccelerator) and acc is ctx.accelerator  # one per context: its allocator persists
    assert acc.memory.capacity_bytes == int((81559 - 540) * MiB)


def test_a_pass_past_capacity_raises_torchs_oom_and_frees_what_it_took(tmp_path):
    acc = nvml_ctx(tmp_path, "rtx4080-laptop").accelerator
    model = acc.build_model("124m", dtype="float32")
    weights = acc.memory.allocated_bytes
    ok = acc.prefill(model, acc.synthetic_batch(1, 256, 50257, 0))
    assert acc.memory.allocated_bytes > weights  # the KV cache stays while the result lives
    del ok
    assert acc.memory.allocated_bytes == weights  # dropping the result frees it, as a CUDA tensor's refcount does
    with pytest.raises(torch.OutOfMemoryError):
        acc.prefill(model, acc.synthetic_batch(64, 8192, 50257, 0))
    assert acc.memory.allocated_bytes == weights
    with pytest.raises(OutOfDeviceMemory), translate_cuda_oom():  # the runners' translation catches it
        acc.prefill(model, acc.synthetic_batch(64, 8192, 50257, 0))


def test_decode_grows_the_cache_and_rewind_gives_it_back(tmp_path):
    acc = nvml_ctx(tmp_path).accelerator
    model = acc.build_model("tiny")
    pre = acc.prefill(model, acc.synthetic_batch(2, 16, 1000, 0))
    before = acc.memory.allocated_bytes
    d = acc.decode(model, pre, 4)
    assert d.output_tokens == 8 and pre.past.get_seq_length() == 20 and acc.memory.allocated_bytes > before
    acc.rewind(pre.past, 4)
    assert pre.past.get_seq_length() == 16 and acc.memory.allocated_bytes == before


def test_passes_take_the_compute_models_time_and_run_back_to_back(tmp_path):
    ctx = nvml_ctx(tmp_path)
    acc = ctx.accelerator
    model = acc.build_model("124m", dtype="float16")
    ids = acc.synthetic_batch(16, 256, 50257, 0)
    seconds, joules = model.compute.prefill(16, 256)
    t0 = time.monotonic_ns()
    for _ in range(5):
        acc.prefill(model, ids)
    acc.synchronize()
    assert (time.monotonic_ns() - t0) / 1e9 >= 5 * seconds * 0.999
    loads = [m for m in read_markers(tmp_path / "markers.jsonl") if m["name"] == "load"]
    busy = [m for m in loads if m["attrs"]["level"] > 0]
    assert loads[-1]["attrs"]["level"] == 0.0
    # Busy exactly as long as the work: passes launched within the queue gap continue the
    # stretch, a host stall ends it at the work's end (never bills the stall).
    busy_s = sum((b["t_ns"] - a["t_ns"]) / 1e9 for a, b in zip(loads, loads[1:]) if a["attrs"]["level"] > 0)
    assert busy_s == pytest.approx(5 * seconds, abs=5e-6)
    unit = ctx.device.sim_profile  # the unit's own constants (its board's spread drawn for host "t")
    span = unit.max_power_w - unit.idle_power_w
    assert busy[0]["attrs"]["level"] == pytest.approx(joules / seconds / span)
    # the board's NVML sees the work: power above idle while busy, the counter advanced by it
    assert ctx.device.read_sample().vram_used_mib == pytest.approx(540 + acc.memory.reserved_bytes / MiB, abs=1)


def test_joules_per_token_differ_between_boards():
    from experiments.memory import ActivationModel
    from experiments.model_shapes import shape_dims

    act = ActivationModel.from_dims(shape_dims("124m"), "float16")
    e_token = {b: ComputeModel(load_profile(b), act).truth(256, 16)["prefill"]["e_token_j"]
               for b in builtin_profile_names()}
    assert len({round(v, 6) for v in e_token.values()}) == len(e_token)
    assert e_token["h100-sxm"] < e_token["rtx4090"]
