"""Fingerprint: stable identity, physics-changing fields, comparability key."""

from __future__ import annotations

import hashlib
import json

from agents.fingerprint import FINGERPRINT_FIELDS, fingerprint_device, fingerprint_from_fields
from agents.profiles import load_profile
from agents.simulated import SimulatedDevice

HOST = {"cpu_model": "Test CPU", "cpu_cores": 2, "ram_gb": 24.0, "os_kernel": "6.1"}


def _fields(**over):
    base = {k: None for k in FINGERPRINT_FIELDS}
    base.update(gpu_name="NVIDIA H100 80GB HBM3", vram_total_mib=81559, driver_version="550.54", power_limit_w=700.0,
                simulated=False, **HOST)
    base.update(over)
    return base


def test_new_driver_same_uid_new_fingerprint():
    a = fingerprint_from_fields("GPU-1", _fields())
    b = fingerprint_from_fields("GPU-1", _fields(driver_version="560.1"))
    assert a.device_uid == b.device_uid and a.fingerprint != b.fingerprint
    assert a.comparability_key == b.comparability_key  # same board class and configuration


def test_power_cap_changes_the_comparability_key():
    a = fingerprint_from_fields("GPU-1", _fields())
    b = fingerprint_from_fields("GPU-1", _fields(power_limit_w=500.0))
    assert a.comparability_key != b.comparability_key


def test_fingerprint_is_sha256_of_sorted_key_json_of_documented_fields():
    fields = _fields()
    fp = fingerprint_from_fields("GPU-1", fields)
    expected = hashlib.sha256(json.dumps({"version": 1, **fields}, sort_keys=True).encode()).hexdigest()
    assert fp.fingerprint == expected
    assert set(fp.fields) == set(FINGERPRINT_FIELDS)
    assert fp.from_dict(fp.to_dict()) == fp


def test_simulated_devices_fingerprint_their_profile():
    prof = load_profile("h100-sxm")
    a = fingerprint_device(SimulatedDevice(prof, host_id="x", t_start_ns=0), HOST)
    b = fingerprint_device(SimulatedDevice(prof, host_id="y", t_start_ns=0), HOST)
    c = fingerprint_device(SimulatedDevice(prof.model_copy(update={"idle_power_w": 80.0}), host_id="x", t_start_ns=0), HOST)
    assert a.simulated and a.fields["simulated"] is True
    assert a.fields["profile_sha256"] == prof.content_sha256()
    assert a.device_uid != b.device_uid and a.fingerprint == b.fingerprint  # two hosts, same physics
    assert a.device_uid == c.device_uid and a.fingerprint != c.fingerprint  # same slot, new physics
