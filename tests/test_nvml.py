"""NVML backend with pynvml patched (autospec): capabilities, errors, UUID mapping."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pynvml as real
import pytest

import agents.nvml as nv
from agents.errors import DeviceNotFound
from agents.factory import parse_device_specs

UUIDS = ["GPU-aaaa1111-0000", "GPU-bbbb2222-0000", "GPU-cccc3333-0000"]


def _field_values(ret=real.NVML_SUCCESS, mw=71000):
    arr = (real.c_nvmlFieldValue_t * 1)()
    arr[0].nvmlReturn = ret
    arr[0].valueType = real.NVML_VALUE_TYPE_UNSIGNED_INT
    arr[0].value.uiVal = mw
    return arr


def _not_supported(*_):
    raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)


@pytest.fixture
def fake(monkeypatch):
    """An autospec of pynvml with real error classes and constants, and three H100s."""
    f = mock.create_autospec(real, instance=False)
    for name in dir(real):
        obj = getattr(real, name)
        if (isinstance(obj, type) and issubclass(obj, Exception)) or isinstance(obj, int) or name.startswith("c_nvml"):
            setattr(f, name, obj)
    handles = {f"h{i}": u for i, u in enumerate(UUIDS)}
    f.nvmlDeviceGetCount.return_value = len(UUIDS)
    f.nvmlDeviceGetHandleByIndex.side_effect = lambda i: f"h{i}"
    f.nvmlDeviceGetHandleByUUID.side_effect = lambda u: {v: k for k, v in handles.items()}[u]
    f.nvmlDeviceGetUUID.side_effect = lambda h: handles[h]
    f.nvmlDeviceGetName.return_value = "NVIDIA H100 80GB HBM3"
    f.nvmlDeviceGetPowerUsage.return_value = 70123
    f.nvmlDeviceGetFieldValues.side_effect = lambda h, ids: _field_values()
    f.nvmlDeviceGetTotalEnergyConsumption.side_effect = _not_supported
    f.nvmlDeviceGetTemperature.return_value = 35
    f.nvmlDeviceGetClockInfo.side_effect = lambda h, kind: 1980 if kind == real.NVML_CLOCK_SM else 2619
    f.nvmlDeviceGetUtilizationRates.return_value = SimpleNamespace(gpu=3, memory=1)
    f.nvmlDeviceGetMemoryInfo.return_value = SimpleNamespace(used=600 * 2**20, total=81_559 * 2**20)
    f.nvmlDeviceGetCurrentClocksEventReasons.return_value = 1
    f.nvmlDeviceGetPerformanceState.return_value = 0
    f.nvmlDeviceGetPowerManagementLimit.return_value = 700_000
    f.nvmlDeviceGetPowerManagementDefaultLimit.return_value = 700_000
    f.nvmlDeviceGetTemperatureThreshold.side_effect = lambda h, kind: 90 if kind == real.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN else 95
    f.nvmlDeviceGetVbiosVersion.return_value = "96.00.89.00.01"
    f.nvmlDeviceGetEccMode.return_value = (1, 1)
    f.nvmlDeviceGetMigMode.return_value = (0, 0)
    f.nvmlSystemGetDriverVersion.return_value = "550.54.15"
    f.nvmlSystemGetCudaDriverVersion.return_value = 12040
    monkeypatch.setattr(nv, "pynvml", f)
    monkeypatch.setattr(nv, "_init_count", 0)
    return f


def test_capabilities_and_one_pass_read(fake):
    dev = nv.NvmlDevice(index=1)
    caps = dev.capabilities
    assert caps.power_w and caps.power_instant_w and not caps.energy_j
    s = dev.read_sample()
    assert s.power_w == pytest.approx(70.123) and s.power_instant_w == pytest.approx(71.0)
    assert s.energy_j is None and "energy_j" not in s.failed and s.read_ok  # unsupported is not a failure
    assert (s.temp_c, s.sm_clock_mhz, s.mem_clock_mhz, s.util_gpu, s.pstate) == (35, 1980, 2619, 3, 0)
    assert s.vram_used_mib == pytest.approx(600.0)  # NVML's bytes become MiB at the boundary
    info = dev.info
    assert info.vram_total_mib == 81_559
    assert info.uuid == UUIDS[1] and not info.simulated
    assert (info.power_limit_w, info.slowdown_temp_c, info.shutdown_temp_c) == (700, 90, 95)
    assert info.extra["driver_version"] == "550.54.15" and info.extra["cuda_driver_version"] == "12.4"
    fake.nvmlDeviceGetTotalEnergyConsumption.reset_mock()
    dev.read_sample()
    fake.nvmlDeviceGetTotalEnergyConsumption.assert_not_called()  # detected once, never read again
    dev.close()


def test_failed_power_read_is_a_failed_row_not_a_crash(fake):
    dev = nv.NvmlDevice(index=0)
    fake.nvmlDeviceGetPowerUsage.side_effect = real.NVMLError(real.NVML_ERROR_UNKNOWN)
    s = dev.read_sample()
    assert not s.read_ok and s.power_w is None and "power_w" in s.failed
    assert s.temp_c == 35  # the other fields of the tick are still read


def test_instant_field_not_supported_is_a_capability(fake):
    fake.nvmlDeviceGetFieldValues.side_effect = lambda h, ids: _field_values(ret=real.NVML_ERROR_NOT_SUPPORTED)
    dev = nv.NvmlDevice(index=0)
    assert not dev.capabilities.power_instant_w
    assert dev.read_sample().power_instant_w is None


def test_missing_library_is_translated_once(fake):
    fake.nvmlInit.side_effect = real.NVMLError(real.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(DeviceNotFound, match="NVML library not found"):
        nv.NvmlDevice(index=0)
    assert not nv.nvml_available()


def test_all_without_gpu_or_simulation_says_what_to_do(fake, monkeypatch):
    fake.nvmlInit.side_effect = real.NVMLError(real.NVML_ERROR_LIBRARY_NOT_FOUND)
    monkeypatch.delenv("FLEETPHYSICS_SIMULATE", raising=False)
    with pytest.raises(DeviceNotFound, match="FLEETPHYSICS_SIMULATE"):
        parse_device_specs("all", host="h")
    auto = parse_device_specs("auto", host="h")  # auto falls back to the simulated profiles
    assert auto and all(s.kind == "sim" for s in auto)
    monkeypatch.setenv("FLEETPHYSICS_SIMULATE", "h100-sxm,a100-sxm")
    assert [s.target for s in parse_device_specs("all", host="h")] == ["h100-sxm", "a100-sxm"]


def test_all_lists_gpus_by_uuid(fake, monkeypatch):
    monkeypatch.delenv("FLEETPHYSICS_SIMULATE", raising=False)
    specs = parse_device_specs("nvml:all", host="h")
    assert [s.target for s in specs] == UUIDS


@pytest.mark.parametrize(
    "visible,cuda_index,expected",
    [
        ("2,0", 0, UUIDS[2]),
        ("2,0", 1, UUIDS[0]),
        ("GPU-bbbb", 0, UUIDS[1]),
        (None, 2, UUIDS[2]),
    ],
)
def test_cuda_index_maps_to_nvml_through_uuid(fake, monkeypatch, visible, cuda_index, expected):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    uuid = nv.cuda_index_to_uuid(cuda_index)
    assert uuid == expected
    assert nv.NvmlDevice(uuid=uuid).info.uuid == expected  # the trace is labelled by UUID


def test_invisible_cuda_index_is_a_clear_error(fake, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(DeviceNotFound, match="not visible"):
        nv.cuda_index_to_uuid(1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-zzzz")
    with pytest.raises(DeviceNotFound, match="matches 0"):
        nv.cuda_index_to_uuid(0)


def test_init_is_reference_counted(fake):
    a, b = nv.NvmlDevice(index=0), nv.NvmlDevice(index=1)
    assert fake.nvmlInit.call_count == 1
    a.close()
    fake.nvmlShutdown.assert_not_called()
    b.close()
    fake.nvmlShutdown.assert_called_once()


def test_unknown_index_names_the_spec(fake):
    with pytest.raises(DeviceNotFound, match=r"nvml:7: no such GPU \(this host has 3\)"):
        nv.NvmlDevice(index=7)


# -- the same backend on the simulated NVML library ------------------------------------------------

from agents.factory import DeviceSpec, open_device  # noqa: E402
from agents.physics import LoadEdge, render_trace  # noqa: E402
from agents.profiles import load_profile  # noqa: E402
from agents.sim_nvml import simulated_nvml  # noqa: E402
from agents.errors import SensorReadError  # noqa: E402


class _Clock:
    def __init__(self, t_ns: int = 0) -> None:
        self.t_ns = t_ns

    def __call__(self) -> int:
        return self.t_ns


def _sim(profile="h100-sxm", clock=None, edges=(), **update):
    prof = load_profile(profile).model_copy(update=update) if update else load_profile(profile)
    pending = list(edges)

    def source():
        out, pending[:] = list(pending), []
        return out

    lib = simulated_nvml(prof, "SIM-test-0", seed=3, t_start_ns=0, load_source=source, clock=clock or _Clock())
    return nv.NvmlDevice(uuid="SIM-test-0", lib=lib), lib, prof


def test_sim_board_is_the_nvml_backend_with_its_profile_facts():
    dev, lib, prof = _sim()
    assert isinstance(dev, nv.NvmlDevice) and dev.backend == "nvml" and dev.simulated
    info = dev.info
    assert info.vram_total_mib == prof.vram_total_mib and info.power_limit_w == prof.power_limit_w
    assert (info.slowdown_temp_c, info.shutdown_temp_c) == (prof.slowdown_temp_c, prof.shutdown_temp_c)
    assert info.extra["profile_sha256"] == prof.content_sha256() and info.extra["mig_mode"] is None
    caps = dev.capabilities
    assert caps.power_instant_w and caps.energy_j and caps.clocks_event_reasons and caps.pstate
    spec_dev = open_device(DeviceSpec("sim", "h100-sxm", 0, "h", 0))
    assert isinstance(spec_dev, nv.NvmlDevice) and spec_dev.sim_profile.name == "h100-sxm"
    dev.close(), spec_dev.close()
    assert lib.init_count == 0  # every nvmlInit matched by an nvmlShutdown


def test_sim_reads_equal_the_physics_model_through_nvml_units():
    clock = _Clock()
    edges = [LoadEdge(2_000_000_000, 0.8, 4096.0), LoadEdge(5_000_000_000, 0.0, 0.0)]
    dev, _, prof = _sim(clock=clock, edges=edges, read_error_rate=0.0)
    grid = [int(t) for t in range(1_000_000_000, 7_000_000_000, 37_000_000)]
    truth = render_trace(prof, edges, grid, seed=3, t_start_ns=0)
    for i, t in enumerate(grid):
        clock.t_ns = t
        s = dev.read_sample(t)
        assert s.read_ok and not s.failed
        assert s.power_w == pytest.approx(truth["power_w"][i], abs=1e-3)  # whole milliwatts
        assert s.power_instant_w == pytest.approx(truth["power_instant_w"][i], abs=1e-3)
        assert s.energy_j == pytest.approx(truth["energy_j"][i], abs=1e-3)
        assert s.temp_c == truth["temp_c"][i] and s.sm_clock_mhz == truth["sm_clock_mhz"][i]
        assert s.vram_used_mib == pytest.approx(truth["vram_used_mib"][i], abs=1e-5)  # MiB in, MiB out
        assert s.clocks_event_reasons == truth["clocks_event_reasons"][i] and s.pstate == truth["pstate"][i]


def test_sim_read_errors_are_nvml_errors_at_the_profile_rate():
    clock = _Clock()
    dev, _, _ = _sim(clock=clock, read_error_rate=0.05)
    n, failed = 4000, 0
    for k in range(n):
        clock.t_ns = 1_000_000_000 + k * 1_000_000
        s = dev.read_sample()
        failed += not s.read_ok
        assert s.read_ok == (s.power_w is not None)
    assert 0.035 < failed / n < 0.065  # 5 % +- 7 sigma of a binomial(4000, 0.05)
    with pytest.raises(SensorReadError, match="Unknown Error"):
        for k in range(200):  # the error type is NVML's own, translated by the backend
            clock.t_ns = k * 1_000_000
            nv.nvml_call(dev._lib.nvmlDeviceGetPowerUsage, dev._handle)


def test_sim_board_without_counter_or_instant_field_says_not_supported():
    dev, lib, _ = _sim(has_energy_counter=False, has_instant_field=False)
    assert not dev.capabilities.energy_j and not dev.capabilities.power_instant_w
    with pytest.raises(real.NVMLError_NotSupported):
        lib.nvmlDeviceGetTotalEnergyConsumption(dev._handle)
    s = dev.read_sample()
    assert s.energy_j is None and s.power_instant_w is None and s.read_ok  # unsupported is not a failure


def test_sim_gpu_lost_on_request_is_a_failed_row_then_an_error_at_open():
    dev, lib, _ = _sim(read_error_rate=0.0)
    assert dev.read_sample().read_ok
    lib.lose_gpu(0)
    s = dev.read_sample()
    assert not s.read_ok and {"power_w", "temp_c", "energy_j"} <= set(s.failed)
    with pytest.raises(real.NVMLError_GpuIsLost):
        lib.nvmlDeviceGetPowerUsage(dev._handle)
    with pytest.raises(SensorReadError, match="GPU is lost"):
        nv.NvmlDevice(uuid="SIM-test-0", lib=lib)
