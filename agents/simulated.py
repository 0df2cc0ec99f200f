"""A simulated GPU: the physics model of :mod:`agents.physics` behind the Device ABC.

The workload declares its load with :meth:`SimulatedDevice.set_load` (or a ``load``
marker); the sensor side integrates those edges. One simulated device can be seen from two
processes: the workload's process writes ``load`` markers, the poller's process reads them
through ``load_source`` and evaluates the same physics.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import numpy as np

from agents.device import Capabilities, Device, DeviceInfo, Sample
from agents.markers import LOAD, MarkerWriter
from agents.physics import LoadEdge, SensorModel, Timeline
from agents.profiles import Profile

LoadSource = Callable[[], Iterable[LoadEdge]]


def simulated_uuid(profile: Profile, host_id: str, index: int) -> str:
    """Stable device_uid of a simulated device: profile name, host id and slot."""
    return f"SIM-{profile.name}-{host_id}-{index}"


class SimulatedDevice(Device):
    """A physics-model GPU. Everything it reports is labelled simulated."""

    def __init__(
        self,
        profile: Profile,
        host_id: str = "local",
        index: int = 0,
        seed: int = 0,
        t_start_ns: int | None = None,
        load_source: LoadSource | None = None,
        marker_writer: MarkerWriter | None = None,
    ) -> None:
        self.profile = profile
        self._info = DeviceInfo(
            uuid=simulated_uuid(profile, host_id, index),
            name=f"{profile.name} (simulated)",
            index=index,
            simulated=True,
            vram_total_mib=profile.vram_total_mib,
            power_limit_w=profile.power_limit_w,
            default_power_limit_w=profile.power_limit_w,
            slowdown_temp_c=profile.slowdown_temp_c,
            shutdown_temp_c=profile.shutdown_temp_c,
            extra={"profile": profile.name, "profile_sha256": profile.content_sha256(), "seed": seed},
        )
        self._caps = Capabilities(
            power_instant_w=profile.has_instant_field,
            energy_j=profile.has_energy_counter,
            clocks_event_reasons=True,
            pstate=True,
            power_limit=True,
            temp_thresholds=True,
        )
        start = time.monotonic_ns() if t_start_ns is None else int(t_start_ns)
        self.timeline = Timeline(profile, start, seed=seed)
        self.sensors = SensorModel(self.timeline)
        self._load_source = load_source
        self._marker_writer = marker_writer

    @property
    def info(self) -> DeviceInfo:
        return self._info

    @property
    def sim_profile(self) -> Profile:
        return self.profile

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    # -- workload side ----------------------------------------------------------------
    def set_load(self, level: float, vram_mib: float | None = None, t_ns: int | None = None) -> int:
        """Declare the workload's load level (0..1) from now (or t_ns); returns the edge time."""
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"load level must be within 0..1, got {level}")
        t = time.monotonic_ns() if t_ns is None else int(t_ns)
        self.timeline.add_edge(LoadEdge(t, level, vram_mib))
        if self._marker_writer is not None:
            attrs = {"level": level} if vram_mib is None else {"level": level, "vram_mib": vram_mib}
            self._marker_writer.mark(LOAD, device_uuid=self.uuid, t_ns=t, **attrs)
        return t

    # -- sensor side ------------------------------------------------------------------
    def _pull_edges(self) -> None:
        if self._load_source is not None:
            for edge in self._load_source():
                self.timeline.add_edge(edge)

    def read_sample(self, t_ns: int | None = None) -> Sample:
        self._pull_edges()
        t = time.monotonic_ns() if t_ns is None else int(t_ns)
        r = self.sensors.read_one(t)
        caps = self._caps
        sample = Sample(
            power_w=r["power_w"],
            power_instant_w=r["power_instant_w"] if caps.power_instant_w else None,
            energy_j=r["energy_j"] if caps.energy_j else None,
            temp_c=r["temp_c"],
            sm_clock_mhz=r["sm_clock_mhz"],
            mem_clock_mhz=r["mem_clock_mhz"],
            util_gpu=r["util_gpu"],
            util_mem=r["util_mem"],
            vram_used_mib=r["vram_used_mib"],
            clocks_event_reasons=r["clocks_event_reasons"],
            pstate=r["pstate"],
        )
        if not r["read_ok"]:
            # A failed read: the power fields come back as errors, like an NVML call that
            # returned NVML_ERROR_UNKNOWN. The poller keeps the row with read_ok = false.
            sample.power_w = sample.power_instant_w = sample.energy_j = None
            sample.failed = ("power_w", "power_instant_w", "energy_j")
        return sample

    def truth(self, t_ns: np.ndarray) -> dict[str, np.ndarray]:
        """Exact physical state at t_ns (tests compare analyses against it)."""
        self._pull_edges()
        return self.timeline.state(np.asarray(t_ns, dtype=np.int64))


def load_edges_from_markers(markers: Iterable[dict], device_uuid: str) -> list[LoadEdge]:
    """The load edges of one device among markers (as written by :class:`MarkerWriter`)."""
    edges = []
    for m in markers:
        if m.get("name") == LOAD and m.get("device_uuid") == device_uuid:
            attrs = m.get("attrs") or {}
            edges.append(LoadEdge(int(m["t_ns"]), float(attrs.get("level", 0.0)), attrs.get("vram_mib")))
    return edges
