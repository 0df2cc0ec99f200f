"""Column contracts the warehouse validates against.

The warehouse imports nothing of ours but :mod:`agents.errors`, so the poller's trace and
marker columns (``agents/trace_schema.py``) are mirrored here; ``tests`` check that the two
lists agree. Units are in the names.
"""

from __future__ import annotations

import pyarrow as pa

# The poller's rows, as agents.trace_schema.TRACE_SCHEMA declares them.
TRACE_FIELDS: dict[str, pa.DataType] = {
    "t_ns": pa.int64(),
    "wall_ns": pa.int64(),
    "device_uuid": pa.string(),
    "power_w": pa.float64(),
    "power_instant_w": pa.float64(),
    "energy_j": pa.float64(),
    "temp_c": pa.float64(),
    "sm_clock_mhz": pa.float64(),
    "mem_clock_mhz": pa.float64(),
    "util_gpu": pa.float64(),
    "util_mem": pa.float64(),
    "vram_used_mib": pa.float64(),
    "clocks_event_reasons": pa.int64(),
    "pstate": pa.int32(),
    "read_ok": pa.bool_(),
    "dt_s": pa.float64(),
    "lateness_ms": pa.float64(),
}

# Columns the warehouse stores beyond the poller's: nvidia-smi's 1 s average when an
# import also has power.draw.average (which then goes to power_w). Optional in any trace.
TRACE_EXTRA_FIELDS: dict[str, pa.DataType] = {
    "power_avg_1s_w": pa.float64(),
}

# The warehouse's power_trace table: device_uuid is constant per device and lives in
# run_devices; run_id and device_uid are folded into the integer trace_key (see schema).
WAREHOUSE_TRACE_COLUMNS: list[str] = [
    name for name in list(TRACE_FIELDS) + list(TRACE_EXTRA_FIELDS) if name != "device_uuid"
]

# Power fields (watts) and the fields that make a row a failed read when null.
POWER_FIELDS = ("power_w", "power_instant_w", "power_avg_1s_w")

MARKER_FIELDS: dict[str, pa.DataType] = {
    "t_ns": pa.int64(),
    "wall_ns": pa.int64(),
    "device_uuid": pa.string(),
    "name": pa.string(),
    "attrs_json": pa.string(),
}
MARKER_REQUIRED = ("t_ns", "name")

EVENT_FIELDS: dict[str, pa.DataType] = {
    "event_id": pa.string(),
    "experiment": pa.string(),
    "phase": pa.string(),
    "batch_size": pa.int64(),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "t_start_ns": pa.int64(),
    "t_end_ns": pa.int64(),
    "energy_counter_j": pa.float64(),
    "energy_integrated_j": pa.float64(),
    "energy_net_j": pa.float64(),
    "energy_quality": pa.string(),
    "gap_fraction": pa.float64(),
    "tokens_per_second": pa.float64(),
}
EVENT_REQUIRED = ("event_id", "t_start_ns", "t_end_ns")

# Wall-clock times (UTC epoch ns) a recording can carry: 2000-01-01 to 2100-01-01. A time
# outside is a wrong unit, a wrong year or a clock that was never set.
WALL_NS_RANGE = (946_684_800 * 10**9, 4_102_444_800 * 10**9)
WALL_NS_HINT = "wall-clock times are UTC epoch nanoseconds between 2000 and 2100"

# Plausible physical ranges, checked before writing (and again by CHECK constraints).
# (low, high, unit, hint when out of range)
TRACE_RANGES: dict[str, tuple[float, float, str, str]] = {
    "power_w": (0.0, 5000.0, "W", "power is watts >= 0 (null for a failed read); values above 5,000 look like milliwatts"),
    "power_instant_w": (0.0, 5000.0, "W", "power is watts >= 0 (null for a failed read); values above 5,000 look like milliwatts"),
    "power_avg_1s_w": (0.0, 5000.0, "W", "power is watts >= 0 (null for a failed read); values above 5,000 look like milliwatts"),
    "energy_j": (0.0, float("inf"), "J", "the energy counter is joules >= 0"),
    "temp_c": (-40.0, 150.0, "degC", "temperature is degrees Celsius; values near 300 look like kelvin"),
    "sm_clock_mhz": (0.0, 100000.0, "MHz", "clocks are MHz >= 0"),
    "mem_clock_mhz": (0.0, 100000.0, "MHz", "clocks are MHz >= 0"),
    "util_gpu": (0.0, 100.0, "%", "utilisation is percent 0..100"),
    "util_mem": (0.0, 100.0, "%", "utilisation is percent 0..100"),
    "vram_used_mib": (0.0, 1.0e8, "MiB", "VRAM is mebibytes >= 0"),
    "pstate": (0.0, 32.0, "", "pstate is the NVML P-state number 0..15 (32 = unknown)"),
    "dt_s": (0.0, float("inf"), "s", "dt_s is seconds since the previous row and must be >= 0"),
    "wall_ns": (*WALL_NS_RANGE, "ns", WALL_NS_HINT),
}

# A powered GPU draws well above this; an imported trace whose readings all stay below it
# was recorded in another unit than its header says (W values under [mW], kW under [W]).
MIN_PEAK_POWER_W = 1.0

RUN_STATES = ("completed", "aborted", "timeout", "partial", "lost")
END_REASONS = (
    "equilibrium",
    "thermal_trip",
    "timeout",
    "poller_degraded",
    "error",
    "interrupted",
    "completed",
    "lost",
)
ENERGY_QUALITIES = ("NO_DATA", "GAPPY", "GOOD", "BILLABLE")
SCHEDULING_QUALITIES = ("strict", "degraded")
CLOCKS = ("monotonic", "wall")
SOURCES = ("artifact", "arrow", "tr122", "nvidia-smi")

# Clocks-event (throttle) masks, as agents.trace_schema declares them.
THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
THERMAL_MASK = 0x20 | 0x40

SUPPORTED_SCHEMA_VERSION = 1  # of run_metadata.json and <experiment>.json


_NULL_CHUNK_ROWS = 65_536


def null_column(rows: int, dtype: pa.DataType) -> pa.ChunkedArray:
    """An all-null column of ``rows`` rows that costs one small chunk of memory.

    ``pa.nulls(rows, dtype)`` allocates and zero-fills the whole data buffer (a 10 M-row
    float64 column is 80 MB and ~0.2 s of page faults); here one null chunk is repeated.
    """
    chunk = pa.nulls(min(rows, _NULL_CHUNK_ROWS), dtype)
    full, rest = divmod(rows, _NULL_CHUNK_ROWS) if rows > _NULL_CHUNK_ROWS else (0, rows)
    chunks = [chunk] * full + ([chunk.slice(0, rest)] if rest or not full else [])
    return pa.chunked_array(chunks, type=dtype)
