"""A simulated NVML library: the pynvml calls the NVML backend makes, answered from the physics model.

``sim:<board>`` is the NVML backend (:class:`agents.nvml.NvmlDevice`) running unchanged on a
:class:`SimNvml` instead of the real ``pynvml`` module, the way DCGM tests its stack on
"fake GPUs" injected beneath NVML. Units are NVML's: power in mW, energy in mJ, memory in
bytes, temperatures in whole degrees, clocks in MHz.

Errors are pynvml's own classes (``pynvml.NVMLError(code)`` builds the subclass), so the
backend's translation is exercised as on hardware:

* every sensor read (power, instant field, energy, temperature, clocks, utilization,
  memory, throttle reasons, pstate) fails with ``NVML_ERROR_UNKNOWN`` with the profile's
  ``read_error_rate`` (a counter-based draw per function and millisecond, so the same
  time gives the same outcome; the power read uses the physics model's own error stream,
  so a live trace and :func:`agents.physics.render_trace` agree on which rows failed);
  open-time queries (name, limits, thresholds, versions) never fail;
* a board whose profile has no energy counter answers ``NVML_ERROR_NOT_SUPPORTED`` to
  ``nvmlDeviceGetTotalEnergyConsumption``, one without the instant field reports
  ``NOT_SUPPORTED`` in field 186's ``nvmlReturn``;
* :meth:`SimNvml.lose_gpu` makes every later call on that board raise
  ``NVML_ERROR_GPU_IS_LOST``.

Reads are "now" (``clock()``, the host monotonic clock unless a test passes its own), like
NVML's. The board's load timeline comes from ``load_source`` (the ``load`` markers of the
host's marker file), so the poller's process and the workload's process see one board.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Iterable

import pynvml

from agents.physics import MS, LoadEdge, SensorModel, Timeline, uniform_one
from agents.profiles import Profile

_STREAM_ERROR = 4  # agents.physics' read-error stream: the power read fails exactly where the model's read_ok is false
MiB = 1 << 20
SIM_DRIVER_VERSION = "sim-1.0"
SIM_CUDA_DRIVER_VERSION = 12040


@dataclass
class SimBoard:
    """One simulated GPU behind the library: its physics, identity and fault switches."""

    profile: Profile
    uuid: str
    seed: int
    timeline: Timeline
    sensors: SensorModel
    load_source: Callable[[], Iterable[LoadEdge]] | None = None
    presented_as: Profile | None = None
    lost: bool = False
    _cached: tuple = field(default=(None, None))

    @property
    def identity(self) -> Profile:
        """The profile the board reports as (name, limits, thresholds, VRAM, profile hash).

        A simulated unit runs its own constants (``profile``: the board's spread, a spec's
        overrides, agents/units.py) but presents as its board, as a faulty real unit does."""
        return self.presented_as if self.presented_as is not None else self.profile

    def pull_edges(self) -> None:
        """Append the load edges declared since the last call."""
        if self.load_source is not None:
            for edge in self.load_source():
                self.timeline.add_edge(edge)

    def reading(self, t_ns: int) -> dict:
        """The physics model's reading at t_ns, cached within one millisecond (one poller tick
        reads a dozen fields; NVML itself answers them from one driver snapshot)."""
        key = (t_ns // MS, len(self.timeline.t), self.timeline.t[-1])
        if self._cached[0] != key:
            self._cached = (key, self.sensors.read_one(t_ns))
        return self._cached[1]


def _copy_pynvml_constants(target) -> None:
    """NVML's constants, error classes and ctypes structures, from pynvml itself."""
    for name in dir(pynvml):
        obj = getattr(pynvml, name)
        if (isinstance(obj, type) and issubclass(obj, Exception)) or (isinstance(obj, int) and name.isupper()) \
                or name.startswith("c_nvml") or name.startswith("NVML_"):
            setattr(target, name, obj)


class SimNvml:
    """The subset of the pynvml API that :mod:`agents.nvml` uses, answered by simulated boards."""

    simulated = True

    def __init__(self, boards: list[SimBoard], clock: Callable[[], int] = time.monotonic_ns) -> None:
        _copy_pynvml_constants(self)
        self.boards = list(boards)
        self.clock = clock
        self.init_count = 0

    # -- faults a test can ask for --------------------------------------------------------------
    def lose_gpu(self, index: int = 0) -> None:
        """From now on every call on board ``index`` raises NVML_ERROR_GPU_IS_LOST."""
        self.boards[index].lost = True

    # -- hooks the backend reads beside pynvml's API (simulation facts for the fingerprint) ------
    def board_facts(self, handle: SimBoard) -> dict:
        """Facts recorded in DeviceInfo.extra: profile name, profile hash, seed."""
        return {"profile": handle.identity.name, "profile_sha256": handle.identity.content_sha256(), "seed": handle.seed}

    def board_profile(self, handle: SimBoard) -> Profile:
        """The unit's own profile (the simulated accelerator's compute model needs it)."""
        return handle.profile

    # -- library ------------------------------------------------------------------------------------
    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self.init_count += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        if self.init_count <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        self.init_count -= 1

    def _check_init(self) -> None:
        if self.init_count <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        self._check_init()
        return SIM_DRIVER_VERSION

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        self._check_init()
        return SIM_CUDA_DRIVER_VERSION

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._check_init()
        return len(self.boards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimBoard:  # noqa: N802
        self._check_init()
        if not 0 <= int(index) < len(self.boards):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._alive(self.boards[int(index)])

    def nvmlDeviceGetHandleByUUID(self, uuid) -> SimBoard:  # noqa: N802
        self._check_init()
        uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        for board in self.boards:
            if board.uuid == uuid:
                return self._alive(board)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    # -- static facts (never injected with read errors) ------------------------------------------
    def nvmlDeviceGetUUID(self, h: SimBoard) -> str:  # noqa: N802
        return self._alive(h).uuid

    def nvmlDeviceGetName(self, h: SimBoard) -> str:  # noqa: N802
        return f"{self._alive(h).identity.name} (simulated)"

    def nvmlDeviceGetVbiosVersion(self, h: SimBoard) -> str:  # noqa: N802
        return f"SIM.{self._alive(h).identity.content_sha256()[:8]}"

    def nvmlDeviceGetPowerManagementLimit(self, h: SimBoard) -> int:  # noqa: N802
        return int(round(self._alive(h).identity.power_limit_w * 1000))

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: SimBoard) -> int:  # noqa: N802
        return int(round(self._alive(h).identity.power_limit_w * 1000))

    def nvmlDeviceGetTemperatureThreshold(self, h: SimBoard, kind: int) -> int:  # noqa: N802
        p = self._alive(h).identity
        if kind == pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN:
            return int(round(p.slowdown_temp_c))
        if kind == pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN:
            return int(round(p.shutdown_temp_c))
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetEccMode(self, h: SimBoard) -> tuple[int, int]:  # noqa: N802
        self._alive(h)
        return (0, 0)

    def nvmlDeviceGetMigMode(self, h: SimBoard) -> tuple[int, int]:  # noqa: N802
        self._alive(h)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)  # like a board without MIG

    # -- sensors (one draw of the profile's read_error_rate per function and millisecond) --------
    def nvmlDeviceGetPowerUsage(self, h: SimBoard) -> int:  # noqa: N802
        r = self._read(h, "power", stream=_STREAM_ERROR)
        return int(round(r["power_w"] * 1000))

    def nvmlDeviceGetFieldValues(self, h: SimBoard, field_ids: list[int]):  # noqa: N802
        board = self._alive(h)
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        t = self.clock()
        for i, fid in enumerate(field_ids):
            v = values[i]
            v.fieldId = int(fid)
            v.timestamp = t // 1000
            if int(fid) != pynvml.NVML_FI_DEV_POWER_INSTANT or not board.profile.has_instant_field:
                v.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            if self._fails(board, "instant", t, None):
                v.nvmlReturn = pynvml.NVML_ERROR_UNKNOWN
                continue
            v.nvmlReturn = pynvml.NVML_SUCCESS
            v.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            v.value.uiVal = int(round(board.reading(t)["power_instant_w"] * 1000))
        return values

    def nvmlDeviceGetTotalEnergyConsumption(self, h: SimBoard) -> int:  # noqa: N802
        if not self._alive(h).profile.has_energy_counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(round(self._read(h, "energy")["energy_j"] * 1000))

    def nvmlDeviceGetTemperature(self, h: SimBoard, sensor: int) -> int:  # noqa: N802
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(self._read(h, "temp")["temp_c"])

    def nvmlDeviceGetClockInfo(self, h: SimBoard, kind: int) -> int:  # noqa: N802
        if kind == pynvml.NVML_CLOCK_SM:
            return int(self._read(h, "sm_clock")["sm_clock_mhz"])
        if kind == pynvml.NVML_CLOCK_MEM:
            return int(self._read(h, "mem_clock")["mem_clock_mhz"])
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetUtilizationRates(self, h: SimBoard):  # noqa: N802
        r = self._read(h, "util")
        return SimpleNamespace(gpu=int(r["util_gpu"]), memory=int(r["util_mem"]))

    def nvmlDeviceGetMemoryInfo(self, h: SimBoard, version=None):  # noqa: N802
        r = self._read(h, "memory")
        total = int(round(h.identity.vram_total_mib * MiB))
        used = min(total, int(round(r["vram_used_mib"] * MiB)))
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: SimBoard) -> int:  # noqa: N802
        return int(self._read(h, "reasons")["clocks_event_reasons"])

    nvmlDeviceGetCurrentClocksThrottleReasons = nvmlDeviceGetCurrentClocksEventReasons  # noqa: N815 - older name

    def nvmlDeviceGetPerformanceState(self, h: SimBoard) -> int:  # noqa: N802
        return int(self._read(h, "pstate")["pstate"])

    # -- internals ----------------------------------------------------------------------------------
    def _alive(self, h: SimBoard) -> SimBoard:
        self._check_init()
        if not isinstance(h, SimBoard):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if h.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return h

    def _fails(self, board: SimBoard, what: str, t_ns: int, stream: int | None) -> bool:
        s = stream if stream is not None else 1000 + zlib.crc32(what.encode()) % 100_000
        return uniform_one(board.seed, s, t_ns // MS) < board.profile.read_error_rate

    def _read(self, h: SimBoard, what: str, stream: int | None = None) -> dict:
        board = self._alive(h)
        board.pull_edges()
        t = self.clock()
        if self._fails(board, what, t, stream):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        return board.reading(t)


def simulated_nvml(profile: Profile, uuid: str, seed: int = 0, t_start_ns: int = 0,
                   load_source: Callable[[], Iterable[LoadEdge]] | None = None,
                   clock: Callable[[], int] = time.monotonic_ns, presented_as: Profile | None = None) -> SimNvml:
    """A library with one simulated board (idle since ``t_start_ns``).

    ``profile`` is the unit's physics; ``presented_as`` the board it reports as (the per-unit
    spread hook, agents/units.py), the unit itself when None."""
    timeline = Timeline(profile, t_start_ns, seed=seed)
    board = SimBoard(profile, uuid, seed, timeline, SensorModel(timeline), load_source, presented_as)
    return SimNvml([board], clock=clock)


def marker_load_source(marker_path, device_uuid: str) -> Callable[[], list[LoadEdge]]:
    """A load source that tails the host's marker file for one device's ``load`` markers."""
    from agents.markers import LOAD, MarkerTail

    tail = MarkerTail(marker_path)

    def pull() -> list[LoadEdge]:
        edges = []
        for m in tail.read_new():
            if m.get("name") == LOAD and m.get("device_uuid") == device_uuid:
                attrs = m.get("attrs") or {}
                edges.append(LoadEdge(int(m["t_ns"]), float(attrs.get("level", 0.0)), attrs.get("vram_mib")))
        return edges

    return pull
