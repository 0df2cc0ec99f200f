"""Hardware fingerprint: a stable identity and a hash of what changes the physics.

``device_uid``: physical identity (the GPU UUID; for a simulated device, the profile name,
host id and slot). ``fingerprint``: sha256 over sorted-key JSON of :data:`FINGERPRINT_FIELDS`
(null where unknown), so the same GPU with a new driver keeps its device_uid and gets a
new fingerprint. ``comparability_key``: sha256 over :data:`COMPARABILITY_FIELDS` only (the
board class and its configuration, not the host), for grouping like with like.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from agents.device import Device

# Documented field list. Changing it changes every fingerprint: bump FINGERPRINT_VERSION.
FINGERPRINT_VERSION = 1
FINGERPRINT_FIELDS = (
    "gpu_name",  # NVML name or simulated profile name
    "vram_total_mib",
    "vbios",
    "driver_version",
    "cuda_driver_version",
    "power_limit_w",  # current (enforced) limit: a capped board is a different machine
    "ecc_mode",
    "mig_mode",
    "cpu_model",
    "cpu_cores",
    "ram_gb",
    "os_kernel",
    "torch_version",
    "simulated",
    "profile_sha256",  # simulated only: the physics of the profile
)
COMPARABILITY_FIELDS = ("gpu_name", "vram_total_mib", "power_limit_w", "mig_mode", "simulated", "profile_sha256")


@dataclass(frozen=True)
class Fingerprint:
    """Identity of one device in one configuration."""

    device_uid: str
    fingerprint: str
    comparability_key: str
    simulated: bool
    fields: dict
    version: int = FINGERPRINT_VERSION

    def to_dict(self) -> dict:
        """Plain dict for fingerprint.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Fingerprint":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in ("device_uid", "fingerprint", "comparability_key", "simulated", "fields")},
                   version=int(data.get("version", FINGERPRINT_VERSION)))


def _sha256_json(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def torch_version() -> str | None:
    """Installed torch version without importing torch (importing it costs seconds)."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def fingerprint_fields(device: Device, host: dict | None = None) -> dict:
    """The documented fields for one device (host facts are read when not given)."""
    if host is None:
        from agents.host import host_platform

        host = host_platform()
    info = device.info
    extra = info.extra or {}
    fields = {
        "gpu_name": extra.get("profile", info.name) if info.simulated else info.name,
        "vram_total_mib": round(float(info.vram_total_mib)),
        "vbios": extra.get("vbios"),
        "driver_version": extra.get("driver_version"),
        "cuda_driver_version": extra.get("cuda_driver_version"),
        "power_limit_w": info.power_limit_w,
        "ecc_mode": extra.get("ecc_mode"),
        "mig_mode": extra.get("mig_mode"),
        "cpu_model": host.get("cpu_model"),
        "cpu_cores": host.get("cpu_cores"),
        "ram_gb": host.get("ram_gb"),
        "os_kernel": host.get("os_kernel"),
        "torch_version": torch_version(),
        "simulated": bool(info.simulated),
        "profile_sha256": extra.get("profile_sha256"),
    }
    return {k: fields.get(k) for k in FINGERPRINT_FIELDS}


def fingerprint_from_fields(device_uid: str, fields: dict) -> Fingerprint:
    """Compute the fingerprint and comparability key from documented fields."""
    full = {k: fields.get(k) for k in FINGERPRINT_FIELDS}
    return Fingerprint(
        device_uid=device_uid,
        fingerprint=_sha256_json({"version": FINGERPRINT_VERSION, **full}),
        comparability_key=_sha256_json({k: full[k] for k in COMPARABILITY_FIELDS}),
        simulated=bool(full.get("simulated")),
        fields=full,
    )


def fingerprint_device(device: Device, host: dict | None = None) -> Fingerprint:
    """Fingerprint of an open device."""
    return fingerprint_from_fields(device.uuid, fingerprint_fields(device, host))
