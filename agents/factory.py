"""The single factory: device specs (``sim:NAME``, ``sim:FILE.yaml``, ``nvml:0``,
``nvml:GPU-uuid``, ``nvml:all``, ``all``) to :class:`DeviceSpec` and to open devices.

Specs are small frozen dataclasses, so they cross process boundaries (the poller opens
its own devices from them: NVML handles and timelines cannot be pickled).
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass

from agents.device import Device
from agents.errors import ConfigError, DeviceNotFound

SIMULATE_ENV = "FLEETPHYSICS_SIMULATE"
HOST_ID_ENV = "FLEETPHYSICS_HOST_ID"


@dataclass(frozen=True)
class DeviceSpec:
    """What to open: ``kind`` sim|nvml, ``target`` profile or NVML index/UUID, slot ``index``."""

    kind: str
    target: str
    index: int = 0
    host_id: str = "local"
    seed: int = 0

    @property
    def label(self) -> str:
        """The spec as the user would write it."""
        return f"{self.kind}:{self.target}"


def host_id() -> str:
    """A short stable id of this host (env FLEETPHYSICS_HOST_ID overrides)."""
    if os.environ.get(HOST_ID_ENV):
        return os.environ[HOST_ID_ENV]
    name = socket.gethostname()
    try:
        with open("/etc/machine-id") as fh:
            name += fh.read().strip()
    except OSError:
        pass
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def parse_device_specs(text: str, host: str | None = None, seed: int = 0) -> list[DeviceSpec]:
    """Parse a comma-separated device spec list. Unknown forms raise ConfigError (exit 2).

    ``sim:BOARD?field=value&...`` is one unit of BOARD with its own constants (agents/units.py)."""
    from agents.units import unit_profile

    host = host or host_id()
    specs: list[DeviceSpec] = []
    for raw in [p.strip() for p in str(text).split(",") if p.strip()]:
        kind, _, target = raw.partition(":")
        if raw == "auto":
            specs.extend(_auto_devices(host, seed, start=len(specs)))
        elif raw == "all" or raw == "nvml:all":
            specs.extend(_all_devices(host, seed, nvml_only=raw == "nvml:all", start=len(specs)))
        elif kind == "sim" and target:
            unit_profile(target, host, len(specs))  # validate now: a bad profile is bad input, one line
            specs.append(DeviceSpec("sim", target, len(specs), host, seed + len(specs)))
        elif kind == "nvml" and target:
            if not (target.isdigit() or target.startswith("GPU-") or target.startswith("MIG-")):
                raise ConfigError(f"device spec {raw!r}: after 'nvml:' give an index (nvml:0), a UUID or 'all'")
            specs.append(DeviceSpec("nvml", target, len(specs), host, seed))
        else:
            raise ConfigError(
                f"unknown device spec {raw!r}: use sim:BOARD (e.g. sim:h100-sxm), sim:FILE.yaml, nvml:INDEX, nvml:UUID, nvml:all, all or auto"
            )
    if not specs:
        raise ConfigError("no device given: use --device sim:BOARD (e.g. sim:h100-sxm), nvml:0 or all")
    return specs


def simulated_specs_from_env(host: str, seed: int = 0, start: int = 0) -> list[DeviceSpec]:
    """Simulated devices named by FLEETPHYSICS_SIMULATE=<board>[?overrides][,<board>...]."""
    from agents.units import unit_profile

    names = [n.strip() for n in os.environ.get(SIMULATE_ENV, "").split(",") if n.strip()]
    for i, n in enumerate(names):
        unit_profile(n, host, start + i)
    return [DeviceSpec("sim", n, start + i, host, seed + start + i) for i, n in enumerate(names)]


def _all_devices(host: str, seed: int, nvml_only: bool, start: int) -> list[DeviceSpec]:
    if not nvml_only:
        sim = simulated_specs_from_env(host, seed, start)
        if sim:
            return sim  # a node that says it simulates presents those devices, not its GPUs
    from agents import nvml

    try:
        uuids = nvml.device_uuids()
    except DeviceNotFound as exc:
        raise DeviceNotFound(
            f"{exc}. 'all' found no NVIDIA GPU: set {SIMULATE_ENV}=h100-sxm (or pass --device sim:h100-sxm)"
        ) from None
    if not uuids:
        raise DeviceNotFound(f"no NVIDIA GPU on this host: pass --device sim:BOARD or set {SIMULATE_ENV}=BOARD")
    return [DeviceSpec("nvml", u, start + i, host, seed) for i, u in enumerate(uuids)]


def _auto_devices(host: str, seed: int, start: int) -> list[DeviceSpec]:
    """'auto': this host's GPUs (or FLEETPHYSICS_SIMULATE); with neither, every built-in profile."""
    from agents.profiles import builtin_profile_names

    try:
        return _all_devices(host, seed, nvml_only=False, start=start)
    except DeviceNotFound:
        names = builtin_profile_names()
        return [DeviceSpec("sim", n, start + i, host, seed + start + i) for i, n in enumerate(names)]


def device_uid_of(spec: DeviceSpec) -> str | None:
    """The device_uid a simulated spec opens as (None for NVML: its UUID comes from the GPU).

    A unit with overrides (``sim:h100-sxm?idle_power_w=95``) keeps its board's uid form."""
    if spec.kind != "sim":
        return None
    from agents.profiles import load_profile
    from agents.simulated import simulated_uuid
    from agents.units import board_name

    return simulated_uuid(load_profile(board_name(spec.target)), spec.host_id, spec.index)


def open_device(spec: DeviceSpec, load_source=None, clock=None) -> Device:
    """Open the device a spec names.

    ``sim:<board>`` is the NVML backend on a simulated NVML library (agents/sim_nvml.py):
    the same code reads a real and a simulated GPU. The library's board runs this unit's own
    constants (agents/units.py: the board's spread, the spec's overrides) and reports its
    board's identity. ``load_source`` feeds the simulated board the workload's ``load`` edges
    (the poller's router, or :func:`agents.sim_nvml.marker_load_source`); ``clock`` replaces
    the monotonic clock of its reads (tests).
    """
    if spec.kind == "sim":
        import time

        from agents.nvml import NvmlDevice
        from agents.sim_nvml import simulated_nvml
        from agents.units import unit_profile

        unit, board = unit_profile(spec.target, spec.host_id, spec.index)  # this unit's own constants
        # idled since boot (t_start_ns = 0): every process opening the board agrees on its past
        lib = simulated_nvml(unit, device_uid_of(spec), seed=spec.seed, t_start_ns=0, load_source=load_source,
                             clock=clock or time.monotonic_ns, presented_as=board)
        return NvmlDevice(index=0, lib=lib)
    if spec.kind == "nvml":
        from agents.nvml import NvmlDevice

        if spec.target.isdigit():
            return NvmlDevice(index=int(spec.target))
        return NvmlDevice(uuid=spec.target)
    raise ConfigError(f"unknown device kind {spec.kind!r} in spec {spec.label!r}")
