"""The run context every experiment runner receives.

A runner never talks to the poller or the filesystem directly: it declares load and marks
phases and events through the context, and writes its report through the artifact writer.
Marker conventions (names and attrs) are the contract with the analyses:

* ``phase_start`` / ``phase_end``: attrs ``phase`` (experiment name or sub-phase).
* ``load``: per device, attrs ``level`` (0..1) and optional ``vram_mib`` (what drives a
  simulated device; recorded for real devices too).
* ``event_start`` / ``event_end``: attrs ``event_id``, ``phase`` (prefill|decode|...),
  ``batch_size``, ``input_tokens``, ``output_tokens``, ``energy_counter_j`` (the device's
  counter read at that boundary, when it has one).
* ``thermal_pause`` / ``thermal_resume``: the context's thermal guard (TR122's trip with
  hysteresis: trip at the slowdown threshold minus a margin, else 83 C; resume at 80 C)
  took the load off while the board cooled, during any experiment that waits through
  :meth:`RunContext.sleep`; attrs ``temp_c``, ``trip_c``, ``resume_c``.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agents.device import Device
from agents.markers import LOAD, MarkerWriter

PHASE_START, PHASE_END = "phase_start", "phase_end"
EVENT_START, EVENT_END = "event_start", "event_end"


class ArtifactWriter:
    """Writes one device's artifacts (JSON reports) with write-then-rename."""

    def __init__(self, device_dir: str | os.PathLike) -> None:
        self.dir = Path(device_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, data: dict) -> Path:
        """Write ``<name>.json`` atomically; returns its path."""
        path = self.dir / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default))
        os.replace(tmp, path)
        return path


def _json_default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


@dataclass
class RunContext:
    """What a runner may use: the device, the marker API, the artifact writer, progress."""

    device: Device
    markers: MarkerWriter
    artifacts: ArtifactWriter
    run_id: str
    # The torch device of the device's work: "cuda:N", "cpu" (a small model on the host), or
    # None to find the GPU by its UUID when the torch accelerator opens (a simulated board's
    # accelerator runs host-side models on the CPU).
    torch_device: str | None = "cpu"
    progress: Callable[[str, float], None] = field(default=lambda phase, fraction: None)
    should_stop: Callable[[], bool] = field(default=lambda: False)  # Ctrl-C or thermal trip
    guard: object | None = None  # a heat_soak.ThermalGuard: checked while the runner sleeps
    guard_period_s: float = 0.1
    _level: float = 0.0
    _vram_mib: float | None = None

    @property
    def simulated(self) -> bool:
        """True when the device is simulated (for labels only: runners never branch on it)."""
        return self.device.simulated

    @property
    def accelerator(self):
        """The accelerator the runners launch work on (opened once per context, so its
        allocator state lives as long as the device's)."""
        acc = self.__dict__.get("_accelerator")
        if acc is None:
            from experiments.accelerator import open_accelerator

            acc = self.__dict__["_accelerator"] = open_accelerator(self)
        return acc

    def mark(self, name: str, **attrs) -> int:
        """A marker for this device on the host clock; returns its t_ns."""
        return self.markers.mark(name, device_uuid=self.device.uuid, **attrs)

    def set_load(self, level: float, vram_mib: float | None = None, t_ns: int | None = None) -> int:
        """Declare the load level from now (or ``t_ns``): a ``load`` marker, which drives a
        simulated board's physics (through the marker file, or in-process for a device with
        ``set_load``) and documents the load on a real one. The thermal guard restores it
        after a pause."""
        self._level, self._vram_mib = level, vram_mib
        return self._declare(level, vram_mib, t_ns)

    def _declare(self, level: float, vram_mib: float | None = None, t_ns: int | None = None) -> int:
        set_load = getattr(self.device, "set_load", None)
        if set_load is not None:
            t = set_load(level, vram_mib=vram_mib, t_ns=t_ns)
        else:
            attrs = {"level": level} if vram_mib is None else {"level": level, "vram_mib": vram_mib}
            t = self.markers.mark(LOAD, device_uuid=self.device.uuid, t_ns=t_ns, **attrs)
        self.__dict__["_load_state"] = (t, float(level))
        return t

    @property
    def load_state(self) -> tuple[int, float] | None:
        """(t_ns, level) of the last load declared through this context, None before any."""
        return self.__dict__.get("_load_state")

    @contextmanager
    def phase(self, name: str, **attrs):
        """Mark the start and end of a phase (also on error)."""
        self.mark(PHASE_START, phase=name, **attrs)
        try:
            yield
        finally:
            self.mark(PHASE_END, phase=name, **attrs)

    def energy_counter_j(self, tries: int = 3) -> float | None:
        """The device's energy counter now (J); a failed read is retried 1 ms later.

        None when the device has no counter or every try failed (the event's energy then
        comes from the trace alone).
        """
        if not self.device.capabilities.energy_j:
            return None
        for attempt in range(tries):
            value = self.device.read_sample(time.monotonic_ns()).energy_j
            if value is not None:
                return value
            if attempt + 1 < tries:
                time.sleep(0.001)
        return None

    def sleep(self, seconds: float, phase: str | None = None) -> bool:
        """Sleep in small steps, reporting progress; returns False if asked to stop.

        With a thermal guard, the temperature is read every ``guard_period_s``: a trip takes
        the load off until the board has cooled to the resume point, then restores it; the
        pause does not count toward ``seconds``.
        """
        end = time.monotonic() + seconds
        step = min(0.2, self.guard_period_s) if self.guard is not None else 0.2
        while (left := end - time.monotonic()) > 0:
            if self.should_stop():
                return False
            time.sleep(min(step, left))
            if self.guard is not None:
                paused = self._thermal_pause()
                if paused is None:
                    return False
                end += paused
            if phase:
                self.progress(phase, 1.0 - max(0.0, end - time.monotonic()) / seconds if seconds else 1.0)
        return not self.should_stop()

    def _temp_c(self) -> float | None:
        try:
            return self.device.read_sample(time.monotonic_ns()).temp_c
        except Exception:  # noqa: BLE001 - a failed read is no reading: the guard keeps its state
            return None

    def _thermal_pause(self) -> float | None:
        """Seconds spent paused by the guard (0 when it did not trip); None if asked to stop."""
        if not self.guard.update(time.monotonic_ns(), self._temp_c()):
            return 0.0
        start = time.monotonic()
        temp = self._temp_c()
        self.mark("thermal_pause", temp_c=temp, trip_c=self.guard.trip_c, resume_c=self.guard.resume_c)
        self._declare(0.0)
        while self.guard.update(time.monotonic_ns(), temp):
            if self.should_stop():
                return None
            time.sleep(self.guard_period_s)
            temp = self._temp_c()
        self.mark("thermal_resume", temp_c=temp, trip_c=self.guard.trip_c, resume_c=self.guard.resume_c)
        self._declare(self._level, self._vram_mib)
        return time.monotonic() - start
