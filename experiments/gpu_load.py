"""Real load: dense matmuls for a given time (square-wave and soak phases), the torch
accelerator's ``busy`` (a simulated board's accelerator keeps it busy by its compute model)."""

from __future__ import annotations

import time


def make_load_fn(torch_device: str, size: int = 8192):
    """A function ``load(seconds)`` that keeps ``torch_device`` busy (fp16 on CUDA; on the CPU
    float32 matmuls of at most 256 x 256, one thread's worth of work)."""
    import torch

    on_cuda = torch_device.startswith("cuda")
    size = size if on_cuda else min(size, 256)
    dtype = torch.float16 if on_cuda else torch.float32
    a = torch.randn(size, size, device=torch_device, dtype=dtype)
    b = torch.randn(size, size, device=torch_device, dtype=dtype)

    def load(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(4):
                torch.matmul(a, b)
            if on_cuda:
                torch.cuda.synchronize(torch_device)

    return load
