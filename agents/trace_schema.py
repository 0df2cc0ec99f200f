"""The columns of the poller's trace and of the marker stream: the contract between the
poller, the analyses, the artifact dir and the warehouse.

Units are in the names. ``t_ns`` is the host's ``time.monotonic_ns``; ``wall_ns`` is
``time.time_ns`` taken at the same tick, kept only to align hosts.
A failed read is a row with ``read_ok = false`` and nulls in the fields it could not read.
"""

from __future__ import annotations

import pyarrow as pa

TRACE_SCHEMA = pa.schema(
    [
        ("t_ns", pa.int64()),  # grid tick time actually read, host monotonic clock
        ("wall_ns", pa.int64()),  # wall clock at the same tick (for cross-host alignment)
        ("device_uuid", pa.string()),
        ("power_w", pa.float64()),  # averaged power (nvmlDeviceGetPowerUsage)
        ("power_instant_w", pa.float64()),  # NVML_FI_DEV_POWER_INSTANT, null if unsupported
        ("energy_j", pa.float64()),  # total energy counter since driver load, joules
        ("temp_c", pa.float64()),
        ("sm_clock_mhz", pa.float64()),
        ("mem_clock_mhz", pa.float64()),
        ("util_gpu", pa.float64()),  # percent 0..100
        ("util_mem", pa.float64()),  # percent 0..100
        ("vram_used_mib", pa.float64()),
        ("clocks_event_reasons", pa.int64()),  # NVML clocks-event (throttle) bitmask
        ("pstate", pa.int32()),
        ("read_ok", pa.bool_()),  # false when any primary field (power) failed
        ("dt_s", pa.float64()),  # seconds since the previous row of the same device
        ("lateness_ms", pa.float64()),  # how late the read started after its grid slot
    ]
)

TRACE_COLUMNS = [f.name for f in TRACE_SCHEMA]

MARKER_SCHEMA = pa.schema(
    [
        ("t_ns", pa.int64()),
        ("wall_ns", pa.int64()),
        ("device_uuid", pa.string()),  # null: the marker is for the whole host
        ("name", pa.string()),  # e.g. "phase_start", "load", "event_start"
        ("attrs_json", pa.string()),  # sorted-key JSON of the marker's attributes
    ]
)

MARKER_COLUMNS = [f.name for f in MARKER_SCHEMA]

# Clocks-event (throttle) reason bits, as in nvml.h (nvmlClocksEventReason*).
CLOCKS_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
THERMAL_MASK = 0x20 | 0x40


def decode_clocks_event_reasons(mask: int | None) -> list[str]:
    """Names of the bits set in a clocks-event reasons bitmask (unknown bits as hex)."""
    if mask is None:
        return []
    names = [name for bit, name in CLOCKS_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCKS_EVENT_REASONS)
    if unknown:
        names.append(hex(unknown))
    return names
