"""NVIDIA GPUs through NVML (nvidia-ml-py).

NVML errors are translated here, once, into our exception types. Features a device does
not support are detected at open and recorded in :class:`Capabilities`; they never crash a
run. Devices are keyed by UUID; a CUDA index (what torch calls ``cuda:N``) is mapped to
NVML through the UUID, so ``CUDA_VISIBLE_DEVICES`` cannot mislabel a trace.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from agents.device import Capabilities, Device, DeviceInfo, Sample
from agents.errors import DeviceError, DeviceNotFound, DeviceNotSupported, SensorReadError

try:  # the module imports without the library; nvmlInit is what needs the driver
    import pynvml
except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
    pynvml = None

_init_lock = threading.Lock()
MiB = 1 << 20  # NVML reports bytes; fleetphysics reports MiB (converted here, once)
# nvmlValueType_t -> member of the c_nvmlValue_t union that holds the value.
_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
_init_count = 0


def _translate(exc: Exception, what: str) -> DeviceError:
    """Map an NVMLError to our exception tree (the only place that looks at NVML codes)."""
    if pynvml is not None:
        if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
            return DeviceNotFound(
                "NVML library not found (no NVIDIA driver on this host); use --device sim:NAME for a simulated GPU"
            )
        if isinstance(exc, pynvml.NVMLError_NotSupported):
            return DeviceNotSupported(f"{what} is not supported on this device")
        if isinstance(exc, pynvml.NVMLError_DriverNotLoaded):
            return DeviceNotFound("the NVIDIA driver is not loaded; load it or use --device sim:NAME")
        if isinstance(exc, (pynvml.NVMLError_InvalidArgument, pynvml.NVMLError_NotFound)):
            return DeviceNotFound(f"{what}: no such NVIDIA device")
    return SensorReadError(f"{what} failed: {exc}")


def nvml_call(fn: Callable[..., Any], *args: Any, what: str | None = None) -> Any:
    """Call an NVML function, translating its errors."""
    try:
        return fn(*args)
    except Exception as exc:  # NVMLError and ctypes errors alike
        if pynvml is not None and isinstance(exc, pynvml.NVMLError):
            raise _translate(exc, what or getattr(fn, "__name__", "NVML call")) from None
        raise


def nvml_init() -> None:
    """Initialise NVML (reference-counted across devices of this process)."""
    global _init_count
    if pynvml is None:
        raise DeviceNotFound("nvidia-ml-py is not installed; `pip install nvidia-ml-py` or use --device sim:NAME")
    with _init_lock:
        if _init_count == 0:
            nvml_call(pynvml.nvmlInit, what="nvmlInit")
        _init_count += 1


def nvml_shutdown() -> None:
    """Release one reference taken by :func:`nvml_init`."""
    global _init_count
    with _init_lock:
        if _init_count > 0:
            _init_count -= 1
            if _init_count == 0:
                try:
                    pynvml.nvmlShutdown()
                except Exception:  # noqa: BLE001 - shutting down, nothing to report
                    pass


def nvml_available() -> bool:
    """True when NVML initialises and sees at least one GPU."""
    try:
        nvml_init()
    except DeviceError:
        return False
    try:
        return nvml_call(pynvml.nvmlDeviceGetCount) > 0
    except DeviceError:
        return False
    finally:
        nvml_shutdown()


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def device_uuids() -> list[str]:
    """UUIDs of all NVML devices, in NVML (PCI bus) order."""
    nvml_init()
    try:
        count = nvml_call(pynvml.nvmlDeviceGetCount)
        return [_str(nvml_call(pynvml.nvmlDeviceGetUUID, nvml_call(pynvml.nvmlDeviceGetHandleByIndex, i))) for i in range(count)]
    finally:
        nvml_shutdown()


def cuda_index_to_uuid(cuda_index: int, visible: str | None = None) -> str:
    """The NVML UUID of CUDA device ``cuda_index`` under CUDA_VISIBLE_DEVICES.

    Entries of CUDA_VISIBLE_DEVICES are NVML ordinals or (prefixes of) UUIDs. We assume
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` semantics for ordinals (NVML's order); when torch
    can report the device UUID itself, prefer :func:`torch_device_uuid`.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    uuids = device_uuids()
    if visible is None or visible.strip() == "":
        entries = [str(i) for i in range(len(uuids))] if visible is None else []
    else:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
    if not 0 <= cuda_index < len(entries):
        raise DeviceNotFound(
            f"CUDA device {cuda_index} is not visible (CUDA_VISIBLE_DEVICES={visible!r}, {len(uuids)} NVML devices)"
        )
    entry = entries[cuda_index]
    if entry.isdigit():
        idx = int(entry)
        if idx >= len(uuids):
            raise DeviceNotFound(f"CUDA_VISIBLE_DEVICES names GPU {idx} but NVML sees {len(uuids)} devices")
        return uuids[idx]
    matches = [u for u in uuids if u.startswith(entry) or u.removeprefix("GPU-").startswith(entry.removeprefix("GPU-"))]
    if len(matches) != 1:
        raise DeviceNotFound(f"CUDA_VISIBLE_DEVICES entry {entry!r} matches {len(matches)} NVML devices; give a full UUID")
    return matches[0]


def torch_device_uuid(cuda_index: int) -> str | None:
    """UUID of torch's cuda:N from the CUDA runtime itself, or None when unavailable."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
        return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
    except Exception:  # noqa: BLE001 - older torch without .uuid
        return None


class NvmlDevice(Device):
    """One NVIDIA GPU, opened by UUID (or NVML index, resolved to its UUID at open).

    ``lib`` is the NVML library: the ``pynvml`` module by default, or a library with the
    same API (``agents.sim_nvml.SimNvml`` for ``sim:<board>``); the code below is the same
    for both.
    """

    def __init__(self, uuid: str | None = None, index: int | None = None, lib: Any = None) -> None:
        self._lib = lib
        self._global_session = lib is None  # the pynvml module: reference-counted by nvml_init
        if lib is None:
            nvml_init()
            self._lib = pynvml
        else:
            nvml_call(lib.nvmlInit, what="nvmlInit")
        self._closed = False
        try:
            if uuid is not None:
                self._handle = nvml_call(self._lib.nvmlDeviceGetHandleByUUID, uuid, what=f"GPU {uuid}")
            else:
                count = nvml_call(self._lib.nvmlDeviceGetCount)
                if index is None or not 0 <= index < count:
                    raise DeviceNotFound(f"nvml:{index}: no such GPU (this host has {count}); see `fleetphysics devices`")
                self._handle = nvml_call(self._lib.nvmlDeviceGetHandleByIndex, index, what=f"nvml:{index}")
            self._caps = self._detect_capabilities()
            self._info = self._read_info(index)
        except Exception:
            self.close()
            raise

    # -- open-time detection -------------------------------------------------------------
    def _supported(self, fn: Callable[..., Any], *args: Any) -> bool:
        try:
            nvml_call(fn, self._handle, *args)
            return True
        except DeviceNotSupported:
            return False
        except DeviceError:
            return True  # supported, but this one read failed; the poller records failures

    def _instant_supported(self) -> bool:
        try:
            values = nvml_call(self._lib.nvmlDeviceGetFieldValues, self._handle, [self._lib.NVML_FI_DEV_POWER_INSTANT])
        except DeviceNotSupported:
            return False
        except DeviceError:
            return True  # supported, but this one read failed (as in _supported)
        return int(values[0].nvmlReturn) != self._lib.NVML_ERROR_NOT_SUPPORTED

    def _detect_capabilities(self) -> Capabilities:
        p = self._lib
        return Capabilities(
            power_w=self._supported(p.nvmlDeviceGetPowerUsage),
            power_instant_w=self._instant_supported(),
            energy_j=self._supported(p.nvmlDeviceGetTotalEnergyConsumption),
            temp_c=self._supported(p.nvmlDeviceGetTemperature, p.NVML_TEMPERATURE_GPU),
            sm_clock_mhz=self._supported(p.nvmlDeviceGetClockInfo, p.NVML_CLOCK_SM),
            mem_clock_mhz=self._supported(p.nvmlDeviceGetClockInfo, p.NVML_CLOCK_MEM),
            util_gpu=self._supported(p.nvmlDeviceGetUtilizationRates),
            util_mem=self._supported(p.nvmlDeviceGetUtilizationRates),
            vram_used_mib=self._supported(p.nvmlDeviceGetMemoryInfo),
            clocks_event_reasons=self._supported(self._reasons_fn()),
            pstate=self._supported(p.nvmlDeviceGetPerformanceState),
            power_limit=self._supported(p.nvmlDeviceGetPowerManagementLimit),
            temp_thresholds=self._supported(p.nvmlDeviceGetTemperatureThreshold, p.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
        )

    def _reasons_fn(self) -> Callable[..., Any]:
        lib = self._lib
        return getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None) or lib.nvmlDeviceGetCurrentClocksThrottleReasons

    def _optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return nvml_call(fn, self._handle, *args)
        except DeviceError:
            return None

    def _read_info(self, index: int | None) -> DeviceInfo:
        p = self._lib
        mem = self._optional(p.nvmlDeviceGetMemoryInfo)
        limit_mw = self._optional(p.nvmlDeviceGetPowerManagementLimit)
        default_mw = self._optional(p.nvmlDeviceGetPowerManagementDefaultLimit)
        slowdown = self._optional(p.nvmlDeviceGetTemperatureThreshold, p.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
        shutdown = self._optional(p.nvmlDeviceGetTemperatureThreshold, p.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)
        ecc = self._optional(p.nvmlDeviceGetEccMode)
        mig = self._optional(p.nvmlDeviceGetMigMode)
        cuda = None
        try:
            cuda = nvml_call(p.nvmlSystemGetCudaDriverVersion)
        except DeviceError:
            pass
        extra = {
            "vbios": _str(self._optional(p.nvmlDeviceGetVbiosVersion) or ""),
            "driver_version": _str(_safe(p.nvmlSystemGetDriverVersion) or ""),
            "cuda_driver_version": f"{cuda // 1000}.{(cuda % 1000) // 10}" if isinstance(cuda, int) else None,
            "ecc_mode": list(ecc) if isinstance(ecc, (list, tuple)) else ecc,
            "mig_mode": list(mig) if isinstance(mig, (list, tuple)) else mig,
            "capabilities": self._caps.to_dict(),
            **self._board_facts(),
        }
        return DeviceInfo(
            uuid=_str(nvml_call(p.nvmlDeviceGetUUID, self._handle)),
            name=_str(nvml_call(p.nvmlDeviceGetName, self._handle)),
            index=-1 if index is None else index,
            simulated=bool(getattr(p, "simulated", False)),
            vram_total_mib=(mem.total / MiB) if mem is not None else 0.0,
            power_limit_w=limit_mw / 1000 if limit_mw is not None else None,
            default_power_limit_w=default_mw / 1000 if default_mw is not None else None,
            slowdown_temp_c=float(slowdown) if slowdown is not None else None,
            shutdown_temp_c=float(shutdown) if shutdown is not None else None,
            extra=extra,
        )

    def _board_facts(self) -> dict:
        """What a simulated library says about its board (profile, hash, seed); {} on hardware."""
        facts = getattr(self._lib, "board_facts", None)
        return facts(self._handle) if facts is not None else {}

    @property
    def sim_profile(self):
        """The board profile when the library is simulated, else None."""
        profile = getattr(self._lib, "board_profile", None)
        return profile(self._handle) if profile is not None else None

    @property
    def backend(self) -> str:
        return "nvml"

    @property
    def info(self) -> DeviceInfo:
        return self._info

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    # -- per-tick read ----------------------------------------------------------------
    def read_sample(self, t_ns: int | None = None) -> Sample:
        p, caps, h = self._lib, self._caps, self._handle
        s = Sample()
        failed: list[str] = []

        def read(name: str, fn: Callable[..., Any], *args: Any) -> Any:
            if not getattr(caps, name):
                return None
            try:
                return nvml_call(fn, h, *args)
            except DeviceError:
                failed.append(name)
                return None

        mw = read("power_w", p.nvmlDeviceGetPowerUsage)
        s.power_w = mw / 1000 if mw is not None else None
        if caps.power_instant_w:
            s.power_instant_w = self._read_instant(failed)
        mj = read("energy_j", p.nvmlDeviceGetTotalEnergyConsumption)
        s.energy_j = mj / 1000 if mj is not None else None
        temp = read("temp_c", p.nvmlDeviceGetTemperature, p.NVML_TEMPERATURE_GPU)
        s.temp_c = float(temp) if temp is not None else None
        sm = read("sm_clock_mhz", p.nvmlDeviceGetClockInfo, p.NVML_CLOCK_SM)
        s.sm_clock_mhz = float(sm) if sm is not None else None
        mem_clk = read("mem_clock_mhz", p.nvmlDeviceGetClockInfo, p.NVML_CLOCK_MEM)
        s.mem_clock_mhz = float(mem_clk) if mem_clk is not None else None
        util = read("util_gpu", p.nvmlDeviceGetUtilizationRates)
        if util is not None:
            s.util_gpu, s.util_mem = float(util.gpu), float(util.memory)
        elif "util_gpu" in failed:
            failed.append("util_mem")
        mem = read("vram_used_mib", p.nvmlDeviceGetMemoryInfo)
        s.vram_used_mib = mem.used / MiB if mem is not None else None
        reasons = read("clocks_event_reasons", self._reasons_fn())
        s.clocks_event_reasons = int(reasons) if reasons is not None else None
        pstate = read("pstate", p.nvmlDeviceGetPerformanceState)
        s.pstate = int(pstate) if pstate is not None else None
        s.failed = tuple(failed)
        return s

    def _read_instant(self, failed: list[str]) -> float | None:
        p = self._lib
        try:
            values = nvml_call(p.nvmlDeviceGetFieldValues, self._handle, [p.NVML_FI_DEV_POWER_INSTANT])
        except DeviceError:
            failed.append("power_instant_w")
            return None
        v = values[0]
        if int(v.nvmlReturn) != p.NVML_SUCCESS:
            failed.append("power_instant_w")
            return None
        member = _VALUE_MEMBERS.get(int(v.valueType), "uiVal")
        return float(getattr(v.value, member)) / 1000  # milliwatts

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            if self._global_session:
                nvml_shutdown()
            else:
                try:
                    self._lib.nvmlShutdown()
                except Exception:  # noqa: BLE001 - shutting down, nothing to report
                    pass


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return nvml_call(fn)
    except DeviceError:
        return None

