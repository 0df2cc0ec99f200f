"""Facts about the host a run or a benchmark ran on.

This module is a leaf like agents.errors: it imports nothing of ours, so the warehouse's
benchmarks can stamp their figures with the machine without pulling in device code.
"""

from __future__ import annotations

import os
import platform


def host_platform() -> dict:
    """Host facts that change the physics of a run (part of the fingerprint)."""
    import psutil

    cpu_model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "cpu_cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "os_kernel": platform.release(),
    }
