"""The simulated accelerator: the runners' work on a simulated board.

The calls are :class:`experiments.accelerator.Accelerator`'s; what differs is what a call
does. A pass takes the time the board's compute model says (a real sleep on the host
clock) and declares the load it draws as ``load`` markers, which drive the board's physics
in every process (the poller's and the simulated NVML library the runner reads). Memory
calls go to the caching-allocator model (:class:`experiments.memory.SimulatedMemory`) sized
to the board; a pass allocates the tensors the activation model says are alive at its peak
and raises ``torch.OutOfMemoryError`` (the type CUDA raises) when they do not fit.

Compute model (per board: ``compute_tflops``, ``mem_bandwidth_gbs``, ``kernel_launch_us``,
``compute_level``, ``memory_level`` in the profile), for a causal LM of any supported family
(:mod:`experiments.model_shapes`) of N parameters and L layers with weights of W bytes:

* a forward's fixed time ``a = L * KERNELS_PER_LAYER * launch + W / bandwidth`` (launches
  and one read of the weights), drawing ``memory_level``;
* prefill of B x T tokens: ``t = a + tokens * 2N / flops``, the token part drawing
  ``compute_level``;
* decode of n steps for B sequences of context C: ``t = n a + tokens (2N / flops +
  kv(C + (n + 1) / 2) / bandwidth)`` with kv(c) the KV-cache bytes one token reads at
  context c (the family's KV heads and head width: GQA reads less; compute at
  ``compute_level``, the KV reads at ``memory_level``);
* the energy above idle is each part's time times its level times ``P_top - P_idle``
  (``P_top`` = min(max power, power limit)), so per pass ``E_net = e_fixed + e_token *
  tokens`` exactly: :meth:`ComputeModel.truth` gives both, and the declared level of a pass
  is its mean power's.

Launched work runs back to back: a launch within ``QUEUE_GAP_NS`` of the previous one's
end continues it with no idle in between (a GPU's queue does not drain between passes
launched from a loop); ``synchronize`` ends the busy stretch at the work's exact end.
"""

from __future__ import annotations

import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

from agents.errors import OutOfDeviceMemory
from agents.profiles import Profile
from experiments import model_shapes
from experiments.accelerator import Accelerator, sleep_until_ns
from experiments.context import RunContext
from experiments.memory import DTYPE_BYTES, ActivationModel, MiB, SimulatedMemory

KERNELS_PER_LAYER = 10  # layer norms, QKV, attention, projections, MLP, residual adds
QUEUE_GAP_NS = 5_000_000
ALLOCATOR_GRANULARITY_MB = 2.0  # the CUDA caching allocator rounds large segments to 2 MiB


@dataclass(frozen=True)
class ComputeModel:
    """Time and energy of passes of one model on one board (see the module doc)."""

    profile: Profile
    act: ActivationModel

    @property
    def top_w(self) -> float:
        """Power above idle at load level 1, after the power limit."""
        p = self.profile
        return min(p.max_power_w, p.power_limit_w) - p.idle_power_w

    @property
    def fixed_s(self) -> float:
        """Fixed time of one forward (launches + one read of the weights)."""
        p = self.profile
        launches = self.act.n_layer * KERNELS_PER_LAYER * p.kernel_launch_us * 1e-6
        return launches + self.act.weight_bytes() / (p.mem_bandwidth_gbs * 1e9)

    @property
    def flop_s_per_token(self) -> float:
        """Compute time per token of a forward (2 N flops)."""
        return 2.0 * self.act.n_params() / (self.profile.compute_tflops * 1e12)

    def kv_read_s_per_token(self, context: int, steps: int) -> float:
        """Mean KV-cache read time of one decoded token over ``steps`` steps from ``context``."""
        per_position = self.act.kv_cache_bytes_per_token()  # 0 without a cache
        return per_position * (context + (steps + 1) / 2) / (self.profile.mem_bandwidth_gbs * 1e9)

    def prefill(self, batch: int, seq_len: int) -> tuple[float, float]:
        """(seconds, joules above idle) of one prefill pass."""
        p, tokens = self.profile, batch * seq_len
        t_fix, t_tok = self.fixed_s, tokens * self.flop_s_per_token
        return t_fix + t_tok, self.top_w * (p.memory_level * t_fix + p.compute_level * t_tok)

    def decode(self, batch: int, context: int, steps: int) -> tuple[float, float]:
        """(seconds, joules above idle) of ``steps`` decode steps for ``batch`` sequences."""
        p, tokens = self.profile, batch * steps
        t_fix = steps * self.fixed_s
        t_cmp = tokens * self.flop_s_per_token
        t_kv = tokens * self.kv_read_s_per_token(context, steps)
        return t_fix + t_cmp + t_kv, self.top_w * (p.memory_level * (t_fix + t_kv) + p.compute_level * t_cmp)

    def truth(self, input_tokens: int, output_tokens: int) -> dict:
        """Per pass ``E_net = e_fixed_j + e_token_j * tokens``, per phase, for prompts of
        ``input_tokens`` and ``output_tokens`` decode steps (both exact in this model)."""
        p = self.profile
        pre_fixed = self.top_w * p.memory_level * self.fixed_s
        pre_token = self.top_w * p.compute_level * self.flop_s_per_token
        dec_fixed = self.top_w * p.memory_level * output_tokens * self.fixed_s
        dec_token = self.top_w * (p.compute_level * self.flop_s_per_token
                                  + p.memory_level * self.kv_read_s_per_token(input_tokens, output_tokens))
        return {"prefill": {"e_fixed_j": pre_fixed, "e_token_j": pre_token},
                "decode": {"e_fixed_j": dec_fixed, "e_token_j": dec_token}}



def train_step_s(profile: Profile, flops: float, n_layer: int) -> float:
    """Seconds of one training step: forward, backward and optimizer launches plus the flops."""
    launches = 3 * n_layer * KERNELS_PER_LAYER * profile.kernel_launch_us * 1e-6
    return launches + flops / (profile.compute_tflops * 1e12)


def load_level(profile: Profile, seconds: float, joules: float) -> float:
    """The load level whose power above idle over ``seconds`` is ``joules``."""
    span = profile.max_power_w - profile.idle_power_w
    return min(1.0, joules / seconds / span) if seconds > 0 and span > 0 else 0.0


# -- what passes hand back (the shapes of experiments.workload's results) -------------------------


@dataclass
class SimModel:
    """A model on the simulated board: its shape, dimensions and resident weights."""

    shape: model_shapes.ModelShape
    dims: dict
    act: ActivationModel
    compute: ComputeModel
    weights: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SimBatch:
    """Token ids of a pass: only their shape matters to the board."""

    batch_size: int
    seq_len: int

    def numel(self) -> int:
        """Tokens in the batch."""
        return self.batch_size * self.seq_len


class SimCache:
    """A KV cache on the board: its allocations are freed when the cache is dropped."""

    def __init__(self, memory: SimulatedMemory, handles: list[int], batch: int, length: int) -> None:
        self.batch, self.length = batch, length
        self._handles = handles
        self._growth: list[tuple[int, int]] = []  # (handle, positions) per decode, newest last
        self._finalizer = weakref.finalize(self, _free_quietly, memory, self._handles, self._growth)

    def get_seq_length(self) -> int:
        """Positions held."""
        return self.length


def _free_quietly(memory: SimulatedMemory, handles: list[int], growth: list) -> None:
    for h in handles:
        memory.free(h)
    for h, _ in growth:
        memory.free(h)
    handles.clear()
    growth.clear()


@dataclass
class SimPrefill:
    """What a prefill returns: the cache, the next tokens (one per sequence), the tokens."""

    past: SimCache
    next_ids: int
    input_tokens: int


@dataclass
class SimDecode:
    """What a decode returns."""

    past: SimCache
    next_ids: int
    output_tokens: int
    steps: int


# -- the accelerator ----------------------------------------------------------------------------


class SimAccelerator(Accelerator):
    """The simulated board beneath the workloads (see the module doc)."""

    torch_device = "cpu"  # models that must really run (training) run small on the host

    def __init__(self, ctx: RunContext, profile: Profile) -> None:
        self.ctx, self.profile = ctx, profile
        self._memory = SimulatedMemory(profile.vram_total_mib, profile.vram_base_mib, ALLOCATOR_GRANULARITY_MB)
        self._free_at_ns = 0  # end of the launched work (host monotonic)

    @property
    def memory(self) -> SimulatedMemory:
        return self._memory

    # -- models ------------------------------------------------------------------------------
    def build_model(self, shape_or_path, n_positions=None, dtype="float32", attn_implementation="eager"):
        shape = _shape(shape_or_path, n_positions)
        act = ActivationModel.from_shape(shape, _dtype_name(dtype), attn_implementation=attn_implementation)
        model = SimModel(shape, _dims(shape), act, ComputeModel(self.profile, act))
        try:
            for _, nbytes in act.weight_tensors():
                model.weights.append(self._allocate(nbytes))
        except BaseException:
            self._memory.free_all(model.weights)
            raise
        weakref.finalize(model, _free_quietly, self._memory, model.weights, [])
        self._declare(self._current_level())
        return model

    def model_dims(self, model: SimModel) -> dict:
        return dict(model.dims)

    def synthetic_batch(self, batch_size, seq_len, vocab, seed) -> SimBatch:
        if batch_size < 1 or seq_len < 1 or vocab < 1:
            raise ValueError(f"batch_size, seq_len and vocab must be >= 1, got {batch_size}, {seq_len}, {vocab}")
        return SimBatch(int(batch_size), int(seq_len))

    def prefill(self, model: SimModel, ids: SimBatch) -> SimPrefill:
        b, t = ids.batch_size, ids.seq_len
        live = self._allocate_all([n for _, n in model.act.peak_tensors(b, t)])
        names = [name for name, _ in model.act.peak_tensors(b, t)]
        kv = [h for h, name in zip(live, names) if name.startswith("kv.")]
        self._memory.free_all(h for h, name in zip(live, names) if not name.startswith("kv."))
        self._launch(*model.compute.prefill(b, t))
        return SimPrefill(SimCache(self._memory, kv, b, t), b, b * t)

    def decode(self, model: SimModel, past, n_tokens: int, next_ids=None) -> SimDecode:
        if isinstance(past, SimPrefill):
            past = past.past
        if n_tokens < 1:
            raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
        grow = model.act.kv_cache_bytes(past.batch, n_tokens)
        if grow:
            (h,) = self._allocate_all([grow])
            past._growth.append((h, n_tokens))
        context = past.length
        past.length += n_tokens
        self._launch(*model.compute.decode(past.batch, context, n_tokens))
        return SimDecode(past, past.batch, past.batch * n_tokens, n_tokens)

    def rewind(self, past: SimCache, n_tokens: int) -> None:
        left = int(n_tokens)
        while left > 0 and past._growth:
            h, n = past._growth.pop()
            self._memory.free(h)
            left -= n
        past.length -= int(n_tokens)

    def energy_truth(self, model: SimModel, input_tokens: int, output_tokens: int) -> dict:
        """The compute model's per-pass energy law of ``model`` (the Joule curve's truth)."""
        return model.compute.truth(input_tokens, output_tokens)

    # -- time and load -------------------------------------------------------------------------
    def synchronize(self) -> None:
        sleep_until_ns(self._free_at_ns)
        if self._current_level() > 0:
            self._declare(0.0, t_ns=max(self._free_at_ns, self._last_edge_ns()))

    def busy(self, level: float, seconds: float) -> int:
        return self._launch_level(float(level), seconds)

    def idle(self) -> int:
        sleep_until_ns(self._free_at_ns)
        if self._current_level() > 0:
            return self._declare(0.0, t_ns=max(self._free_at_ns, self._last_edge_ns()))
        return self.ctx.set_load(0.0)

    @contextmanager
    def step(self, flops: float, n_layer: int, intensity: float = 1.0, min_s: float = 0.0):
        """One training step: the board is busy at ``intensity`` for the compute model's step
        time (at least ``min_s``, and at least what the host needs to run the small model)."""
        seconds = max(train_step_s(self.profile, flops, n_layer), float(min_s))
        t_enter = time.monotonic_ns()
        self._launch_level(float(intensity), 0.0)
        yield
        sleep_until_ns(t_enter + int(seconds * 1e9))
        self._free_at_ns = max(self._free_at_ns, time.monotonic_ns())

    # -- internals -------------------------------------------------------------------------------
    def _launch(self, seconds: float, joules: float) -> None:
        self._launch_level(load_level(self.profile, seconds, joules), seconds)

    def _launch_level(self, level: float, seconds: float) -> int:
        now = time.monotonic_ns()
        current = self._current_level()
        continues = current > 0 and now - self._free_at_ns <= QUEUE_GAP_NS
        if current > 0 and not continues:
            self._declare(0.0, t_ns=max(self._free_at_ns, self._last_edge_ns()))  # the queue drained
            current = 0.0
        start = max(self._free_at_ns, self._last_edge_ns()) if continues else now
        if level != current:
            self._declare(level, t_ns=start)
        self._free_at_ns = start + int(seconds * 1e9)
        sleep_until_ns(self._free_at_ns)
        return start

    def _current_level(self) -> float:
        state = self.ctx.load_state
        return state[1] if state is not None else 0.0

    def _last_edge_ns(self) -> int:
        state = self.ctx.load_state
        return state[0] if state is not None else 0

    def _declare(self, level: float, t_ns: int | None = None) -> int:
        return self.ctx.set_load(level, vram_mib=self._memory.reserved_bytes / MiB, t_ns=t_ns)

    def _allocate(self, nbytes: int) -> int:
        try:
            return self._memory.allocate(nbytes)
        except OutOfDeviceMemory as exc:
            raise _torch_oom(str(exc)) from None

    def _allocate_all(self, sizes: list[int]) -> list[int]:
        done: list[int] = []
        try:
            for n in sizes:
                done.append(self._allocate(n))
        except BaseException:
            self._memory.free_all(done)  # a failed pass's tensors are gone once its error is
            raise
        return done


def _torch_oom(message: str) -> BaseException:
    import torch

    return torch.OutOfMemoryError(message)


def _dtype_name(dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_BYTES:
        raise ValueError(f"dtype {dtype!r} is not supported: use one of {', '.join(DTYPE_BYTES)}")
    return name


def _shape(spec, n_positions: int | None) -> model_shapes.ModelShape:
    """The shape of a built-in name, a config.json, a model directory (its config: the board
    needs no weights) or a ModelShape; bad input is a ConfigError naming it."""
    return model_shapes.resolve(spec, n_positions)


def _dims(shape: model_shapes.ModelShape) -> dict:
    """GPT-2 style dimensions (what ``experiments.workload.model_dims`` gives for a real model)."""
    dims = {"n_layer": shape.n_layer, "n_embd": shape.hidden_size, "n_head": shape.n_head,
            "vocab_size": shape.vocab_size, "n_positions": shape.n_positions}
    if shape.family == "gpt2" and shape.config.get("n_inner"):
        dims["n_inner"] = shape.intermediate_size
    return dims
