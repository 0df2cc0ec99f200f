"""VRAM cliff runner: allocator torture, then the batch x context search up to the real OOM.

(a) Torture: prime the cache with large blocks, free them, refill it with variable sizes
(2 to 64 MiB) that carve the cached segments, free every other block so that holes are
left between live blocks, and read fragmentation = inactive_split_bytes / reserved_bytes
right there, before any ``empty_cache`` (TR122 divided a block count by bytes and read it
after ``empty_cache``: always 0; that value is reported beside, for contrast). Then the
largest block still allocatable (bisection of real attempts), and blocks of the largest
size until the allocator says OOM.

(b) Search: for each batch size, double the context until a probe fails or the position
limit is reached, then bisect to ``context_step``. Each probe records peak allocated,
reserved and NVML used. The limiting cause is ``memory`` when a probe ran out of memory
and ``architecture`` when the position limit itself fitted.

A probe is a prefill on the context's accelerator, read through its allocator
(``ctx.accelerator.memory``), up to the out-of-memory error the pass raises: on a GPU a
real prefill and PyTorch's caching allocator; on a simulated board the same calls, whose
prefill allocates the tensors :class:`ActivationModel` says are alive at the pass's peak in
the board's caching-allocator model and raises the same ``torch.OutOfMemoryError`` (nothing
large is allocated on the host). The VRAM in use is declared with ``ctx.set_load(level,
vram_mib=...)`` so the trace shows it (it drives a simulated board's NVML "used").
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from agents.errors import ExperimentError, OutOfDeviceMemory
from experiments import model_shapes
from experiments.context import RunContext
from experiments.memory import (
    ActivationModel,
    DeviceMemory,
    MiB,
    probe_largest_allocatable_bytes,
    translate_cuda_oom,
)
from experiments.vram_cliff.config import VramCliffConfig

NAME = "vram_cliff"
SCHEMA_VERSION = 1
TORTURE_LOAD_LEVEL = 0.1  # allocating is cheap work; the trace still shows the VRAM climbing
_MAX_TORTURE_BLOCKS = 200_000


def run(ctx: RunContext, config: VramCliffConfig) -> dict:
    """Run the torture test and the cliff search on ``ctx``'s device; returns the report dict."""
    memory = open_memory(ctx, config)
    probes: list[dict] = []
    cliff: list[dict] = []
    stopped = False
    with ctx.phase(NAME):
        ctx.progress(NAME, 0.0)
        with ctx.phase(f"{NAME}.torture"):
            frag = torture(memory, config, ctx)
        ctx.progress(NAME, 0.2)
        shape, act = model_memory(config, memory)
        try:
            prober = _Prober(ctx, config, memory, act)
        except OutOfDeviceMemory as exc:
            raise ExperimentError(
                f"{NAME}: the weights of {config.model} ({act.weight_bytes() / MiB:.0f} MiB in {config.dtype}) do not "
                f"fit in {memory.capacity_bytes / MiB:.0f} MiB of device memory; choose a smaller model or dtype ({exc})"
            ) from None
        try:
            with ctx.phase(f"{NAME}.search"):
                for i, batch in enumerate(config.batch_sizes):
                    if ctx.should_stop():
                        stopped = True
                        break
                    before = len(probes)

                    def probe(context: int, batch=batch) -> bool:
                        rec = prober.probe(batch, context)
                        probes.append(rec)
                        return rec["ok"]

                    found = search_max_context(probe, act.n_positions, config.context_start, config.context_step,
                                               ctx.should_stop)
                    stopped = stopped or found["stopped"]
                    cliff.append(_cliff_row(batch, found, probes[before:], prober, config))
                    ctx.progress(NAME, 0.2 + 0.8 * (i + 1) / len(config.batch_sizes))
                    if stopped:
                        break
        finally:
            prober.close()
    return _report(ctx, config, memory, shape, act, prober, frag, cliff, probes, stopped)


# -- memory back ends -------------------------------------------------------------------------


def open_memory(ctx: RunContext, config: VramCliffConfig) -> DeviceMemory:
    """The allocator of the context's accelerator (PyTorch's on a GPU, the model's on a simulated board)."""
    return ctx.accelerator.memory


# -- the model (where its shape and dtype enter) -----------------------------------------------


def model_memory(config: VramCliffConfig, memory: DeviceMemory) -> tuple[model_shapes.ModelShape, ActivationModel]:
    """The model's shape (position limit set) and its memory model, for ``config.model`` in ``config.dtype``."""
    shape = model_shapes.resolve(config.model)
    n_positions = config.n_positions or auto_n_positions(shape, config, memory)
    shape = shape.with_positions(n_positions)
    return shape, _activation_model(shape, config)


def _activation_model(shape: model_shapes.ModelShape, config: VramCliffConfig) -> ActivationModel:
    return ActivationModel.from_shape(shape, config.dtype, kv_cache=config.kv_cache,
                                      attn_implementation=config.attn_implementation)


def auto_n_positions(shape: model_shapes.ModelShape, config: VramCliffConfig, memory: DeviceMemory) -> int:
    """A position limit at least twice what memory allows the smallest batch (multiple of 1024).

    Above a RoPE model's ``max_position_embeddings`` it only lifts the search's limit (RoPE
    has no position table); a GPT-2 gets a larger position table.
    """
    act = _activation_model(shape, config)
    budget = memory.capacity_bytes - act.weight_bytes()
    limit = act.max_context(config.batch_sizes[0], budget, limit=1 << 24)
    return max(int(shape.n_positions), 1024 * math.ceil(2 * max(limit, 1) / 1024))


def _model_figures(config: VramCliffConfig, shape: model_shapes.ModelShape, act: ActivationModel) -> dict:
    return {
        "name": shape.name, "builtin": shape.builtin,
        "shape": shape.name if shape.builtin else None,  # the older key
        "model_path_given": not shape.builtin,
        **act.figures(),
        "dtype": config.dtype, "attn_implementation": config.attn_implementation, "kv_cache": config.kv_cache,
    }


# -- (a) torture ------------------------------------------------------------------------------


def torture(memory: DeviceMemory, config: VramCliffConfig, ctx: RunContext | None = None) -> dict:
    """The allocator torture pattern on ``memory``; returns fragmentation figures.

    Fragmentation is read once the holes exist and before any ``empty_cache`` call; the
    list ``read_order`` records what was done in which order.
    """
    rng = np.random.default_rng(config.seed)
    order: list[str] = []
    min_b, max_b = int(config.torture_min_block_mib * MiB), int(config.torture_max_block_mib * MiB)
    avail = memory.capacity_bytes - memory.stats().reserved_bytes
    target = int(config.torture_fill_fraction * avail)
    hold = config.probe_hold_s

    def declare(step: str) -> None:
        order.append(step)
        if ctx is not None:
            ctx.set_load(TORTURE_LOAD_LEVEL, vram_mib=memory.stats().reserved_bytes / MiB)
            ctx.sleep(hold)

    # 1. prime: the cache fills with large segments, then holds them free.
    primed = _fill(memory, lambda: max_b, target)
    declare("prime")
    memory.free_all(primed)
    # 2. carve: variable sizes split the cached segments.
    carved = _fill(memory, lambda: int(rng.integers(min_b, max_b + 1)), target)
    declare("carve")
    # 3. holes: free every other block; each hole lies between live blocks.
    holes, live = carved[0::2], carved[1::2]
    memory.free_all(holes)
    declare("holes")
    st = memory.stats()  # THE fragmentation read: holes present, no empty_cache yet
    order.append("read_stats")
    largest_allocatable = probe_largest_allocatable_bytes(
        memory, memory.capacity_bytes, int(config.torture_resolution_mib * MiB))
    order.append("probe_largest_allocatable")
    # 4. pressure: blocks of the largest size until OOM (the holes cannot serve them).
    pressure = _fill(memory, lambda: max_b, memory.capacity_bytes * 2)
    at_oom = memory.stats()
    order.append("read_stats_at_oom")
    declare("pressure")
    memory.free_all(pressure)
    memory.free_all(live)
    order.append("free_all")
    memory.empty_cache()
    order.append("empty_cache")
    # TR122's method, for contrast: a block count over bytes, after empty_cache.
    after = memory.stats()
    tr122 = after.inactive_split_blocks / after.reserved_bytes if after.reserved_bytes else 0.0
    if ctx is not None:
        ctx.set_load(0.0, vram_mib=after.reserved_bytes / MiB)
    return {
        "fragmentation": st.fragmentation,
        "inactive_split_mib": st.inactive_split_bytes / MiB,
        "inactive_split_blocks": st.inactive_split_blocks,
        "reserved_mib": st.reserved_bytes / MiB,
        "allocated_mib": st.allocated_bytes / MiB,
        "largest_free_block_mib": st.largest_free_block_bytes / MiB,
        "largest_allocatable_mib": largest_allocatable / MiB,
        "blocks_carved": len(carved),
        "holes": len(holes),
        "pressure_blocks_until_oom": len(pressure),
        "fragmentation_at_oom": at_oom.fragmentation,
        "reserved_at_oom_mib": at_oom.reserved_bytes / MiB,
        "allocated_at_oom_mib": at_oom.allocated_bytes / MiB,
        "capacity_mib": memory.capacity_bytes / MiB,
        "fill_target_mib": target / MiB,
        "tr122_method_value": tr122,
        "fragmentation_after_empty_cache": after.fragmentation,
        "read_order": order,
    }


def _fill(memory: DeviceMemory, size: Callable[[], int], target_bytes: int) -> list[int]:
    """Allocate sizes from ``size()`` until ``target_bytes`` are requested or an OOM."""
    handles, total = [], 0
    while total < target_bytes and len(handles) < _MAX_TORTURE_BLOCKS:
        n = size()
        try:
            handles.append(memory.allocate(n))
        except OutOfDeviceMemory:
            break
        total += n
    return handles


# -- (b) search -------------------------------------------------------------------------------


def search_max_context(
    probe: Callable[[int], bool],
    n_positions: int,
    start: int,
    step: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict:
    """The largest context ``probe`` accepts: doubling from ``start``, then bisection to ``step``.

    Returns max_context (the largest context that passed, 0 if none), first_failing_context
    (the smallest that failed, None if none), cause ("memory", "architecture" or None when
    stopped), search_step, probes and stopped.
    """
    ok_ctx, fail_ctx, n, stopped = 0, None, 0, False
    t = max(1, min(int(start), n_positions))
    while True:
        if should_stop():
            stopped = True
            break
        n += 1
        if probe(t):
            ok_ctx = t
            if t >= n_positions:
                break
            t = min(2 * t, n_positions)
        else:
            fail_ctx = t
            break
    while not stopped and fail_ctx is not None and fail_ctx - ok_ctx > step:
        if should_stop():
            stopped = True
            break
        mid = (ok_ctx + fail_ctx) // 2
        n += 1
        if probe(mid):
            ok_ctx = mid
        else:
            fail_ctx = mid
    if stopped:
        cause = None
    elif fail_ctx is None:
        cause = "architecture"
    else:
        cause = "memory"
    return {"max_context": ok_ctx, "first_failing_context": fail_ctx, "cause": cause, "search_step": int(step),
            "probes": n, "stopped": stopped}


class _Prober:
    """Probes that run a prefill on the accelerator and read its allocator and NVML."""

    def __init__(self, ctx: RunContext, config: VramCliffConfig, memory: DeviceMemory, act: ActivationModel):
        self.ctx, self.config, self.memory, self.act = ctx, config, memory, act
        self.acc = ctx.accelerator
        with translate_cuda_oom():
            self.model = self.acc.build_model(
                config.model, n_positions=act.n_positions, dtype=config.dtype,
                attn_implementation=config.attn_implementation)
        self.acc.synchronize()
        memory.empty_cache()
        memory.reset_peak()
        st = memory.stats()
        self.weights_allocated_bytes, self.weights_reserved_bytes = st.allocated_bytes, st.reserved_bytes
        ctx.set_load(0.0, vram_mib=st.reserved_bytes / MiB)

    def model_max_context(self, batch_size: int) -> int:
        """The activation model's prediction next to the weights; with the allocator's segment
        rule when the allocator states it (the model's allocator does), raw bytes otherwise."""
        budget = self.memory.capacity_bytes - self.weights_reserved_bytes
        return self.act.max_context(batch_size, budget, limit=self.act.n_positions,
                                    segment_bytes=getattr(self.memory, "segment_bytes", None))

    def probe(self, batch_size: int, context: int) -> dict:
        mem, ctx, acc = self.memory, self.ctx, self.acc
        ids = acc.synthetic_batch(batch_size, context, self.act.vocab_size, self.config.seed + batch_size)
        mem.reset_peak()
        t0 = ctx.mark("probe_start", phase=NAME, batch_size=batch_size, context=context)
        ctx.set_load(self.config.probe_load_level)
        result, error = None, None
        try:
            with translate_cuda_oom():
                result = acc.prefill(self.model, ids)
        except OutOfDeviceMemory as exc:
            error = str(exc)
        acc.synchronize()
        st = mem.stats()  # before empty_cache: the pass's tensors are still alive
        ctx.set_load(self.config.probe_load_level, vram_mib=st.reserved_bytes / MiB)
        ctx.sleep(self.config.probe_hold_s)
        nvml = _nvml_read(ctx)
        del result
        mem.empty_cache()
        mem.reset_peak()
        ctx.set_load(0.0, vram_mib=mem.stats().reserved_bytes / MiB)
        t1 = ctx.mark("probe_end", phase=NAME, batch_size=batch_size, context=context, ok=error is None)
        return _probe_record(batch_size, context, error, st, nvml, self.act, self.weights_allocated_bytes, t0, t1)

    def close(self) -> None:
        self.model = None
        self.memory.empty_cache()
        self.ctx.set_load(0.0, vram_mib=self.memory.stats().reserved_bytes / MiB)


def _nvml_read(ctx: RunContext) -> tuple[float | None, float | None]:
    """(VRAM used MiB, power W) as the device reports them now; None for a failed read."""
    try:
        sample = ctx.device.read_sample(time.monotonic_ns())
    except Exception:  # a failed sensor read leaves the fields empty, not the probe
        return None, None
    return sample.vram_used_mib, sample.power_w


def _probe_record(batch_size, context, error, st, nvml, act, weights_allocated_bytes, t0, t1) -> dict:
    nvml_used_mib, power_w = nvml
    return {
        "batch_size": int(batch_size),
        "context": int(context),
        "ok": error is None,
        "oom": error is not None,
        "error": error,
        "peak_allocated_mib": st.peak_allocated_bytes / MiB,
        "alloc_mib": st.peak_allocated_bytes / MiB,  # the warehouse's name for the probe's size
        "reserved_mib": st.reserved_bytes / MiB,
        "peak_reserved_mib": st.peak_reserved_bytes / MiB,
        "nvml_used_mib": nvml_used_mib,
        "power_w": power_w,
        "model_peak_mib": (act.peak_bytes(batch_size, context) + weights_allocated_bytes) / MiB,
        "peak_component": act.peak_component(batch_size, context),
        "t_start_ns": int(t0),
        "t_end_ns": int(t1),
        "elapsed_s": (t1 - t0) / 1e9,
    }


def _cliff_row(batch: int, found: dict, probes: list[dict], prober, config: VramCliffConfig) -> dict:
    model_max = prober.model_max_context(batch)
    at_max = [p for p in probes if p["ok"] and p["context"] == found["max_context"]]
    best = at_max[-1] if at_max else None
    return {
        "batch_size": int(batch),
        "max_context": int(found["max_context"]),
        "cause": found["cause"],
        "search_step": int(config.context_step),
        "first_failing_context": found["first_failing_context"],
        "model_max_context": int(model_max),
        "delta_tokens": int(found["max_context"]) - int(model_max),
        "probes": int(found["probes"]),
        "peak_component": prober.act.peak_component(batch, max(found["max_context"], 1)),
        "peak_allocated_mib": best["peak_allocated_mib"] if best else None,
        "reserved_mib": best["reserved_mib"] if best else None,
        "nvml_used_mib": best["nvml_used_mib"] if best else None,
    }


def _summary(cliff: list[dict], probes: list[dict], frag: dict, vram_total_mib: float) -> dict:
    """Headline figures: the smallest batch size's cliff.

    max_context: its largest fitting context; cliff_mib: NVML used at that probe (None when
    the position limit, not memory, stopped it); oom_mib: NVML used at its first OOM probe;
    max_alloc_mib: the largest single block the torture test could still allocate.
    """
    first = cliff[0] if cliff else None
    by_batch = {r["batch_size"]: r["max_context"] for r in cliff if r["cause"] is not None}
    cliff_mib = oom_mib = None
    if first is not None and first["cause"] == "memory":
        cliff_mib = first["nvml_used_mib"]
        ooms = [p for p in probes if p["batch_size"] == first["batch_size"] and p["oom"]]
        oom_mib = ooms[0]["nvml_used_mib"] if ooms else None
    return {
        "vram_total_mib": vram_total_mib,
        "predicted_max_context": first["model_max_context"] if first else None,
        "max_context": first["max_context"] if first and first["cause"] is not None else None,
        "max_context_batch1": by_batch.get(1),
        "limiting_cause": first["cause"] if first else None,
        "cliff_mib": cliff_mib,
        "cliff_fraction": cliff_mib / vram_total_mib if cliff_mib is not None and vram_total_mib else None,
        "oom_mib": oom_mib,
        "max_alloc_mib": frag["largest_allocatable_mib"],
    }


def _predicted_cliff_mib(memory, prober, act, cliff: list[dict], vram_total_mib: float) -> float | None:
    """NVML 'used' (MiB) the memory model predicts at the smallest batch's predicted max context.

    What the device holds beyond this process's reach (driver, context, other processes),
    plus the weights and the prefill's peak tensors: each in the fresh segment the allocator
    reserves for it when the allocator states its segment rule (the simulated board's does),
    raw bytes otherwise (CUDA's cache rounds less coarsely). The measured twin is ``cliff_mib``.
    """
    if not cliff or cliff[0]["model_max_context"] < 1:
        return None
    batch, context = cliff[0]["batch_size"], cliff[0]["model_max_context"]
    seg = getattr(memory, "segment_bytes", None)
    if seg is None:
        peak, weights = sum(n for _, n in act.peak_tensors(batch, context)), prober.weights_allocated_bytes
    else:
        peak, weights = sum(seg(n) for _, n in act.peak_tensors(batch, context)), prober.weights_reserved_bytes
    return (vram_total_mib * MiB - memory.capacity_bytes + weights + peak) / MiB


def _report(ctx, config, memory, shape, act, prober, frag, cliff, probes, stopped) -> dict:
    simulated = bool(ctx.simulated)
    vram_total_mib = float(ctx.device.info.vram_total_mib)
    resolved = [r for r in cliff if r["cause"] is not None]
    mem_rows = [r for r in resolved if r["cause"] == "memory"]
    return {
        "experiment": NAME,
        "schema_version": SCHEMA_VERSION,
        "figures": {
            **_summary(cliff, probes, frag, vram_total_mib),
            "cliff": cliff,
            "fragmentation": frag,
            "capacity_mib": memory.capacity_bytes / MiB,
            "weights_mib": prober.weights_allocated_bytes / MiB,
            "weights_reserved_mib": prober.weights_reserved_bytes / MiB,
            "n_positions": int(act.n_positions),
            "model": _model_figures(config, shape, act),
            "predicted_cliff_mib": _predicted_cliff_mib(memory, prober, act, cliff, vram_total_mib),
        },
        "quality": {
            "simulated": simulated,
            "memory_backend": "simulated-caching-allocator" if simulated else "cuda-caching-allocator",
            "probe_source": "compute-model prefill (activation model)" if simulated else "real-prefill",
            "probes": len(probes),
            "ooms": sum(1 for p in probes if p["oom"]),
            "stopped_early": bool(stopped),
            "batch_sizes_done": len(resolved),
            "nvml_reads_missing": sum(1 for p in probes if p["nvml_used_mib"] is None),
        },
        "checks": {
            # The read order, TR122's method reading ~0 and the simulated cliff matching the
            # activation model hold by construction: tests/test_vram_cliff.py checks them, and
            # quality rests on what a run can get wrong (delta_tokens stays in each cliff row).
            "fragmentation_positive": frag["fragmentation"] > 0,
            "cliff_found": bool(cliff) and len(resolved) == len(config.batch_sizes),
            "cliff_is_memory": bool(mem_rows),
        },
        "probes": probes,
    }
