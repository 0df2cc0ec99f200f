"""Where the runners' work runs: one interface, a torch back end and a simulated one.

Runners launch work through an :class:`Accelerator` and never ask whether the device is
simulated. :class:`TorchAccelerator` runs the real thing (GPT-2 passes, matmul load,
training steps) on a torch device and reads PyTorch's caching allocator;
:class:`experiments.sim_accelerator.SimAccelerator` makes the same calls take the time and
draw the power the board's compute model says and answers memory calls from the
caching-allocator model, raising the same ``torch.OutOfMemoryError``.

API (both back ends):

* ``memory``: a :class:`experiments.memory.DeviceMemory` (allocate/free/stats/empty_cache);
* ``build_model(shape_or_path, n_positions, dtype, attn_implementation)``, ``model_dims(model)``,
  ``synthetic_batch(batch, seq_len, vocab, seed)``, ``prefill(model, ids)``,
  ``decode(model, past, n_tokens, next_ids)``, ``rewind(past, n)``: the GPT-2 passes of
  :mod:`experiments.workload` (results carry ``input_tokens`` / ``output_tokens``; freeing a
  result, ``del``, frees its device memory);
* ``synchronize()``: wait for launched work (the event brackets);
* ``busy(level, seconds)``: keep the device busy (square waves, heat soak), ``idle()``;
* ``step(flops, intensity)``: a context manager around one training step of a model that
  runs on ``torch_device``.
"""

from __future__ import annotations

import abc
import time
from contextlib import contextmanager

from experiments.context import RunContext
from experiments.memory import DeviceMemory


class Accelerator(abc.ABC):
    """The device the runners' work runs on."""

    torch_device: str = "cpu"

    @property
    @abc.abstractmethod
    def memory(self) -> DeviceMemory:
        """The device's allocator."""

    @abc.abstractmethod
    def build_model(self, shape_or_path, n_positions=None, dtype="float32", attn_implementation="eager"):
        """A GPT-2 family model on the device (weights resident before any measurement)."""

    @abc.abstractmethod
    def model_dims(self, model) -> dict:
        """n_layer, n_embd, n_head, vocab_size, n_positions of a built model."""

    @abc.abstractmethod
    def synthetic_batch(self, batch_size: int, seq_len: int, vocab: int, seed: int):
        """Token ids [batch, seq_len] for a pass."""

    @abc.abstractmethod
    def prefill(self, model, ids):
        """One prefill pass; the result has past, next_ids and input_tokens."""

    @abc.abstractmethod
    def decode(self, model, past, n_tokens: int, next_ids=None):
        """``n_tokens`` greedy decode steps from ``past``; the result has output_tokens."""

    @abc.abstractmethod
    def rewind(self, past, n_tokens: int) -> None:
        """Drop the last ``n_tokens`` positions of a cache (decode again from there)."""

    @abc.abstractmethod
    def energy_truth(self, model, input_tokens: int, output_tokens: int) -> dict | None:
        """Per-pass ``{phase: {e_fixed_j, e_token_j}}`` when the board's energy law is known
        (a simulated board's compute model), else None."""

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Wait until every launched piece of work has finished."""

    @abc.abstractmethod
    def busy(self, level: float, seconds: float) -> int:
        """Keep the device busy for ``seconds`` (``level`` 0..1 documents, or on a simulated
        board sets, how hard); returns the host time the load began."""

    @abc.abstractmethod
    def idle(self) -> int:
        """Stop loading the device; returns the host time."""

    @abc.abstractmethod
    def step(self, flops: float, n_layer: int, intensity: float = 1.0, min_s: float = 0.0):
        """Context manager around one training step of ``flops`` floating-point operations of
        an ``n_layer`` model running on ``torch_device``. ``intensity`` and ``min_s`` are the
        simulated board's load model (its level, and the least time a step keeps it busy);
        a real board draws what the step makes it draw."""


class TorchAccelerator(Accelerator):
    """Real work on a torch device (``cuda:N``, or ``cpu`` for a small model)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.torch_device = ctx.torch_device or cuda_device_of(ctx.device)
        self._memory = None
        self._load = None

    @property
    def memory(self) -> DeviceMemory:
        if self._memory is None:
            from experiments.memory import CudaMemory

            self._memory = CudaMemory(self.torch_device)  # raises on a CPU device: no allocator to read
        return self._memory

    def build_model(self, shape_or_path, n_positions=None, dtype="float32", attn_implementation="eager"):
        from experiments import workload

        return workload.build_model(shape_or_path, n_positions=n_positions, device=self.torch_device, dtype=dtype,
                                    attn_implementation=attn_implementation)

    def model_dims(self, model) -> dict:
        from experiments import workload

        return workload.model_dims(model)

    def synthetic_batch(self, batch_size, seq_len, vocab, seed):
        from experiments import workload

        return workload.synthetic_batch(batch_size, seq_len, vocab, seed)

    def prefill(self, model, ids):
        from experiments import workload

        return workload.prefill(model, ids)

    def decode(self, model, past, n_tokens, next_ids=None):
        from experiments import workload

        return workload.decode(model, past, n_tokens, next_ids)

    def rewind(self, past, n_tokens):
        from experiments import workload

        workload.rewind(past, n_tokens)

    def synchronize(self) -> None:
        from experiments import workload

        workload.synchronize(self.torch_device)

    def energy_truth(self, model, input_tokens: int, output_tokens: int) -> None:
        """Hardware has no known truth: None."""
        return None

    def busy(self, level: float, seconds: float) -> int:
        t = self.ctx.set_load(level)  # a marker: the board draws what the matmuls make it draw
        if self._load is None:
            from experiments.gpu_load import make_load_fn

            self._load = make_load_fn(self.torch_device)
        self._load(seconds)
        return t

    def idle(self) -> int:
        return self.ctx.set_load(0.0)

    @contextmanager
    def step(self, flops: float, n_layer: int, intensity: float = 1.0, min_s: float = 0.0):
        yield
        self.synchronize()


def cuda_device_of(device) -> str:
    """``cuda:N`` of an NVML device, found by its UUID (CUDA_VISIBLE_DEVICES cannot mislabel it)."""
    import torch

    from agents.errors import ConfigError
    from agents.nvml import torch_device_uuid

    for i in range(torch.cuda.device_count()):
        if torch_device_uuid(i) == device.uuid:
            return f"cuda:{i}"
    raise ConfigError(f"GPU {device.uuid} is not visible to CUDA (check CUDA_VISIBLE_DEVICES)")


def open_accelerator(ctx: RunContext) -> Accelerator:
    """The accelerator beneath ``ctx``'s device: the board's compute model when the device is
    a simulated board (its NVML library carries a profile), torch on ``ctx.torch_device`` else."""
    profile = ctx.device.sim_profile
    if profile is None:
        return TorchAccelerator(ctx)
    from experiments.sim_accelerator import SimAccelerator

    return SimAccelerator(ctx, profile)


def sleep_until_ns(t_ns: int) -> None:
    """Sleep until the host monotonic clock reaches ``t_ns``."""
    while (left := t_ns - time.monotonic_ns()) > 0:
        time.sleep(left / 1e9)
