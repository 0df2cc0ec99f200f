"""The simulated caching allocator, the CUDA adapter (with a fake torch.cuda) and the activation model."""

from __future__ import annotations

import pytest
import torch

from agents.errors import DeviceError, OutOfDeviceMemory
from experiments import memory as memmod
from experiments.memory import (
    ActivationModel,
    CudaMemory,
    MiB,
    SimulatedMemory,
    probe_largest_allocatable_bytes,
    translate_cuda_oom,
)


def test_oom_at_capacity_is_out_of_device_memory():
    mem = SimulatedMemory(total_mib=100, base_mib=20)  # 80 MiB for this process
    assert mem.capacity_bytes == 80 * MiB
    a = mem.allocate(40 * MiB)
    mem.allocate(40 * MiB)
    assert mem.reserved_bytes == mem.capacity_bytes
    with pytest.raises(OutOfDeviceMemory, match="out of memory"):
        mem.allocate(1)
    assert mem.stats().num_ooms == 1
    assert issubclass(OutOfDeviceMemory, DeviceError)
    # Exactly the capacity fits on an empty device; one more byte does not.
    mem.free(a)
    fresh = SimulatedMemory(total_mib=100, base_mib=20)
    fresh.allocate(80 * MiB)
    with pytest.raises(OutOfDeviceMemory):
        fresh.allocate(11 * MiB)


def test_rounding_pools_and_segment_sizes():
    mem = SimulatedMemory(total_mib=1000, base_mib=0)
    assert mem.round_size(1) == 512 and mem.round_size(513) == 1024
    mem.allocate(2 * MiB)  # large pool, under 10 MiB: a 20 MiB segment
    assert mem.reserved_bytes == 20 * MiB
    mem.allocate(3 * MiB)  # carved from that segment's rest
    assert mem.reserved_bytes == 20 * MiB
    mem.allocate(100)  # small pool: its own 2 MiB segment
    assert mem.reserved_bytes == 22 * MiB
    mem.allocate(int(10.5 * MiB))  # fits the 15 MiB left in the 20 MiB segment (best fit)
    assert mem.reserved_bytes == 22 * MiB
    mem.allocate(int(16.5 * MiB))  # >= 10 MiB and no cached block: its own segment, rounded to 2 MiB
    assert mem.reserved_bytes == 22 * MiB + 18 * MiB
    assert mem.segment_bytes(int(10.5 * MiB)) == 12 * MiB


def test_holes_are_inactive_split_and_survive_empty_cache():
    mem = SimulatedMemory(total_mib=1000, base_mib=0)
    mem.free(mem.allocate(64 * MiB))  # the cache now holds one free 64 MiB segment
    assert mem.reserved_bytes == 64 * MiB and mem.inactive_split_bytes == 0
    handles = [mem.allocate(12 * MiB) for _ in range(4)]  # carve it: 48 used, 16 free at the tail
    assert mem.reserved_bytes == 64 * MiB
    mem.free(handles[0])
    mem.free(handles[2])  # two holes between live blocks
    st = mem.stats()
    assert st.allocated_bytes == 24 * MiB
    assert st.inactive_split_bytes == 12 * MiB + 12 * MiB + 16 * MiB
    assert st.inactive_split_blocks == 3
    assert st.fragmentation == pytest.approx(40 / 64)
    assert st.largest_free_block_bytes == 16 * MiB
    mem.empty_cache()  # a split segment cannot be given back
    assert mem.reserved_bytes == 64 * MiB
    with pytest.raises(KeyError):
        mem.free(handles[0])
    mem.free(handles[1])
    mem.free(handles[3])  # everything coalesces into one free block
    assert mem.stats().inactive_split_bytes == 0
    mem.empty_cache()
    assert mem.reserved_bytes == 0 and mem.stats().segments == 0


def test_retry_releases_cached_segments_before_oom():
    mem = SimulatedMemory(total_mib=100, base_mib=0)
    mem.free(mem.allocate(60 * MiB))
    mem.allocate(70 * MiB)  # 60 cached + 70 new > 100: the cache is released first
    assert mem.reserved_bytes == 70 * MiB
    assert mem.stats().num_alloc_retries == 1 and mem.stats().num_ooms == 0


def test_largest_allocatable_probe_matches_the_model():
    mem = SimulatedMemory(total_mib=4096, base_mib=96)
    live = [mem.allocate(30 * MiB) for _ in range(50)]
    for h in live[::2]:
        mem.free(h)
    expected = mem.largest_allocatable_bytes()
    found = probe_largest_allocatable_bytes(mem, mem.capacity_bytes, 2 * MiB)
    assert expected - 2 * MiB <= found <= expected
    assert mem.allocated_bytes == 25 * 30 * MiB  # probing leaves nothing allocated


def test_translate_cuda_oom():
    with pytest.raises(OutOfDeviceMemory, match="Tried to allocate"):
        with translate_cuda_oom():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text")
    with pytest.raises(OutOfDeviceMemory) as info:
        with translate_cuda_oom():
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate")
    # The CUDA error is not shown as the cause, and its traceback (the failed pass's frames) is dropped.
    assert info.value.__suppress_context__ and info.value.__context__.__traceback__ is None
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with translate_cuda_oom():
            raise RuntimeError("shape mismatch")


class _FakeCuda:
    """The torch.cuda functions CudaMemory reads, with TR122's trap: a block count beside the bytes."""

    def __init__(self):
        self.calls: list[str] = []
        self.stats = {
            "allocated_bytes.all.current": 600 * MiB,
            "allocated_bytes.all.peak": 700 * MiB,
            "reserved_bytes.all.current": 1000 * MiB,
            "reserved_bytes.all.peak": 1100 * MiB,
            "inactive_split_bytes.all.current": 250 * MiB,
            "inactive_split.all.current": 7,  # a block count, not bytes
            "num_ooms": 1,
            "segment.all.current": 9,
        }

    def install(self, monkeypatch):
        c = torch.cuda
        monkeypatch.setattr(c, "mem_get_info", lambda device=None: (3000 * MiB, 8000 * MiB))
        monkeypatch.setattr(c, "memory_reserved", lambda device=None: 1000 * MiB)
        monkeypatch.setattr(c, "memory_stats", lambda device=None: (self.calls.append("stats"), dict(self.stats))[1])
        monkeypatch.setattr(c, "current_device", lambda: 0)
        monkeypatch.setattr(c, "memory_snapshot", lambda: [
            {"device": 0, "blocks": [{"size": 64 * MiB, "state": "active_allocated"},
                                     {"size": 40 * MiB, "state": "inactive"}]},
            {"device": 0, "blocks": [{"size": 90 * MiB, "state": "inactive"}]},
        ])
        monkeypatch.setattr(c, "empty_cache", lambda: self.calls.append("empty_cache"))
        monkeypatch.setattr(c, "reset_peak_memory_stats", lambda device=None: self.calls.append("reset_peak"))


def test_cuda_memory_reads_inactive_split_bytes(monkeypatch):
    fake = _FakeCuda()
    fake.install(monkeypatch)
    mem = CudaMemory("cuda:0")
    assert mem.capacity_bytes == 4000 * MiB and mem.total_bytes == 8000 * MiB
    st = mem.stats()
    assert st.inactive_split_bytes == 250 * MiB and st.inactive_split_blocks == 7
    assert st.fragmentation == pytest.approx(0.25)  # bytes over bytes, not 7 / bytes
    assert st.largest_free_block_bytes == 90 * MiB
    assert st.peak_allocated_bytes == 700 * MiB and st.num_ooms == 1
    assert fake.calls == ["stats"]  # reading never empties the cache
    mem.empty_cache()
    mem.reset_peak()
    assert fake.calls[-2:] == ["empty_cache", "reset_peak"]


def test_cuda_memory_allocate_translates_oom(monkeypatch):
    _FakeCuda().install(monkeypatch)
    mem = CudaMemory("cuda:0")

    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")

    monkeypatch.setattr(torch, "empty", boom)
    with pytest.raises(OutOfDeviceMemory):
        mem.allocate(64 * MiB)


GPT2_124M = {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}


def test_activation_model_sizes():
    act = ActivationModel.from_dims(GPT2_124M, "float32")
    assert act.n_params() == 124_439_808  # GPT-2 small with a 1024-position table
    assert sum(n for _, n in act.weight_tensors()) == act.weight_bytes()
    assert act.kv_cache_bytes(2, 100) == 2 * 12 * 2 * 100 * 768 * 4
    half = ActivationModel.from_dims(GPT2_124M, "float16")

    def ids_bytes(a):  # token and position ids are int64 whatever the dtype
        return sum(n for k, n in a.peak_tensors(4, 512) if k in ("input_ids", "position_ids"))

    assert (half.peak_bytes(4, 512) - ids_bytes(half)) * 2 == act.peak_bytes(4, 512) - ids_bytes(act)
    no_kv = ActivationModel.from_dims(GPT2_124M, "float32", kv_cache=False)
    assert act.peak_bytes(1, 1000) - no_kv.peak_bytes(1, 1000) == act.kv_cache_bytes(1, 1000)
    sdpa = ActivationModel.from_dims(GPT2_124M, "float32", attn_implementation="sdpa")
    assert sdpa.peak_bytes(1, 8000) < act.peak_bytes(1, 8000)
    # Eager attention: the T x T scores dominate at long context, the logits at short.
    assert act.peak_component(1, 8000) == "attention"
    assert act.peak_component(1, 64) == "lm_head"
    assert [act.peak_bytes(1, t) for t in (100, 200, 400)] == sorted(act.peak_bytes(1, t) for t in (100, 200, 400))


@pytest.mark.parametrize("segment", [False, True])
def test_max_context_is_exact(segment):
    act = ActivationModel.from_dims({**GPT2_124M, "n_positions": 1 << 20}, "float32")
    mem = SimulatedMemory(12282, 350)
    seg = mem.segment_bytes if segment else None
    budget = mem.capacity_bytes - act.weight_bytes()

    def need(t):
        return sum((seg or (lambda n: n))(n) for _, n in act.peak_tensors(2, t))

    t = act.max_context(2, budget, segment_bytes=seg)
    assert need(t) <= budget < need(t + 1)
    assert act.max_context(2, budget, limit=1000, segment_bytes=seg) == 1000
    assert act.max_context(2, 10, segment_bytes=seg) == 0
    assert abs(act.approx_max_context(2, budget) - t) < 0.2 * t


def test_module_has_no_torch_import_at_top():
    # The simulated path must stay light: torch is imported only by the CUDA adapter.
    assert not hasattr(memmod, "torch")
