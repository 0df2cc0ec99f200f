"""The one exception tree of fleetphysics.

This module is a leaf: it imports nothing of ours, so every package (warehouse and
dashboard included) may import it without pulling in device code.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``:
2 for bad input (a config, a file, a flag), 1 for a run that failed.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), to quote a
    library's error inside our one-line messages."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


class FleetPhysicsError(Exception):
    """Base of every error fleetphysics raises on purpose."""

    exit_code = 1


class ConfigError(FleetPhysicsError):
    """Bad input: a profile, a flag, a file. The message names the file, field and fix."""

    exit_code = 2


class DeviceError(FleetPhysicsError):
    """A device could not be opened or read."""


class DeviceNotSupported(DeviceError):
    """The device (or the feature asked for) is not supported on this host."""


class DeviceNotFound(DeviceError):
    """No device matches the spec (index out of range, unknown UUID, no NVML)."""

    exit_code = 2


class SensorReadError(DeviceError):
    """One read of one sensor failed; the poller records it as read_ok = false."""


class OutOfDeviceMemory(DeviceError):
    """Allocation beyond the device's memory (simulated or real CUDA OOM)."""


class PollerError(FleetPhysicsError):
    """The poller process failed to start, stalled, or died."""


class WarehouseError(FleetPhysicsError):
    """A warehouse operation failed; the warehouse is left exactly as it was."""


class ValidationError(WarehouseError):
    """Input rejected before writing; the message names file, column and fix."""

    exit_code = 2


class ReadOnlyViolation(WarehouseError):
    """A read-only surface was asked to write or to touch files."""

    exit_code = 2


class ExperimentError(FleetPhysicsError):
    """An experiment could not run to the end."""


class ThermalTrip(ExperimentError):
    """The run context's thermal guard tripped inside a unit of work (a measured pass or
    step): the unit stops, the load comes off until the board has cooled to the guard's
    resume point, and the runner records the trip and reruns the unit
    (:meth:`experiments.context.RunContext.guarded`)."""

    def __init__(self, temp_c: float, trip_c: float, resume_c: float, t_ns: int) -> None:
        super().__init__(f"thermal guard tripped: {temp_c:.0f} C >= {trip_c:.0f} C (resumes at {resume_c:.0f} C)")
        self.temp_c, self.trip_c, self.resume_c, self.t_ns = temp_c, trip_c, resume_c, t_ns
