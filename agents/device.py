"""The device interface: one GPU, read in one pass per poller tick.

Units are in the names. A field that could not be read is ``None`` in the sample and is
listed in ``Sample.failed``; a field the device does not support at all is ``False`` in
:class:`Capabilities` and is never read (it is ``None`` in every sample, not a failure).
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field, fields

# Fields of one tick, in trace order (see agents.trace_schema).
SAMPLE_FIELDS = (
    "power_w",
    "power_instant_w",
    "energy_j",
    "temp_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "util_gpu",
    "util_mem",
    "vram_used_mib",
    "clocks_event_reasons",
    "pstate",
)


@dataclass(frozen=True)
class Capabilities:
    """What a device can report; detected once at open, recorded with every run."""

    power_w: bool = True
    power_instant_w: bool = False
    energy_j: bool = False
    temp_c: bool = True
    sm_clock_mhz: bool = True
    mem_clock_mhz: bool = True
    util_gpu: bool = True
    util_mem: bool = True
    vram_used_mib: bool = True
    clocks_event_reasons: bool = False
    pstate: bool = False
    power_limit: bool = False
    temp_thresholds: bool = False

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Capabilities":
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: bool(v) for k, v in data.items() if k in names})


@dataclass
class Sample:
    """One read of every field a tick needs. ``read_ok`` is false when power failed."""

    power_w: float | None = None
    power_instant_w: float | None = None
    energy_j: float | None = None
    temp_c: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    util_gpu: float | None = None
    util_mem: float | None = None
    vram_used_mib: float | None = None
    clocks_event_reasons: int | None = None
    pstate: int | None = None
    failed: tuple[str, ...] = field(default_factory=tuple)

    @property
    def read_ok(self) -> bool:
        """A sample is good when its primary field, averaged power, was read."""
        return "power_w" not in self.failed and self.power_w is not None


@dataclass(frozen=True)
class DeviceInfo:
    """Static facts about a device, read once at open."""

    uuid: str
    name: str
    index: int
    simulated: bool
    vram_total_mib: float
    power_limit_w: float | None
    default_power_limit_w: float | None
    slowdown_temp_c: float | None
    shutdown_temp_c: float | None
    extra: dict = field(default_factory=dict)  # driver, vbios, profile hash, ...

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


class Device(abc.ABC):
    """One GPU. Backends: :mod:`agents.nvml` and :mod:`agents.simulated`."""

    @property
    @abc.abstractmethod
    def info(self) -> DeviceInfo:
        """Static facts (UUID, name, limits)."""

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this device can report."""

    @abc.abstractmethod
    def read_sample(self, t_ns: int | None = None) -> Sample:
        """Read every supported field in one pass.

        ``t_ns`` is the host monotonic time of the read; real devices ignore it (they are
        read now), simulated devices evaluate their physics at it.
        """

    @property
    def uuid(self) -> str:
        """Physical identity of the device (GPU UUID, or profile + host for simulated)."""
        return self.info.uuid

    @property
    def simulated(self) -> bool:
        """True for a simulated device: everything it produces is labelled so."""
        return self.info.simulated

    @property
    def backend(self) -> str:
        """The backend reading the device: ``nvml`` (real or simulated library) or ``physics``."""
        return "physics"

    @property
    def sim_profile(self):
        """The simulated board's profile (its compute and memory model), None on hardware."""
        return None

    def close(self) -> None:
        """Release handles (NVML shutdown is reference-counted by the backend)."""
