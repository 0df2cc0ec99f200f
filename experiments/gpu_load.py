"""Real load for real GPUs: dense matmuls for a given time (square-wave and soak phases).

On a simulated device nothing runs here: the declared load level is the workload.
"""

from __future__ import annotations

import time


def make_load_fn(torch_device: str, size: int = 8192):
    """A function ``load(seconds)`` that keeps ``torch_device`` busy, or None on the CPU."""
    if not torch_device.startswith("cuda"):
        return None
    import torch

    a = torch.randn(size, size, device=torch_device, dtype=torch.float16)
    b = torch.randn(size, size, device=torch_device, dtype=torch.float16)

    def load(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(4):
                torch.matmul(a, b)
            torch.cuda.synchronize(torch_device)

    return load
