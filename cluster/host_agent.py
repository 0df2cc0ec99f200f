"""Per-host actors as plain classes; cluster/ wraps them with ``ray.remote`` at placement.

``HostAgent`` owns one host's devices (NVML GPUs, or the simulated boards its node's
FLEETPHYSICS_SIMULATE names), its poller (started once per run, before any experiment)
and the suite's phases, in lockstep across the host's devices. ``DeviceWorker`` runs one
GPU's workloads in its own process (num_gpus=1) on the same node. Both live in cluster/,
the orchestration layer, which may import every package; agents/ stays host-side sensing.
The experiment code is imported inside the methods that use it.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path


class DeviceWorker:
    """One GPU's workload process: runs experiment phases for the host agent."""

    def __init__(self, spec: dict, marker_path: str, out_dir: str, run_id: str) -> None:
        from agents.factory import DeviceSpec
        from experiments.suite import DeviceRunner

        self.runner = DeviceRunner(DeviceSpec(**spec), marker_path, out_dir, run_id)

    def describe(self) -> dict:
        """Device identity and fingerprint."""
        return self.runner.describe()

    def run_phase(self, name: str, config_json: dict) -> dict:
        """Run one experiment phase on this worker's GPU."""
        return self.runner.run_phase(name, config_json)

    def request_stop(self, reason: str = "interrupted") -> None:
        """Stop the running phase at its next check."""
        self.runner.request_stop(reason)

    def close(self) -> None:
        """Idle and release the device."""
        self.runner.close()


class HostAgent:
    """One per Ray node with GPUs or simulated devices.

    The driver places one on every node, asks each to :meth:`check` itself (environment
    and devices), labels the hosts from all the answers (``cluster.host_labels``) and
    :meth:`assign` s each its label before :meth:`run`. Nothing here raises for a node
    that cannot run the suite: :meth:`check` says why, in one line with the fix.
    """

    def __init__(self, run_id: str, out_root: str, profile: str = "smoke", experiments: tuple[str, ...] | None = None,
                 host: str | None = None, simulate: list[str] | None = None, period_ms: float | None = None,
                 seed: int = 0, worker_factory=None, configs: dict | None = None) -> None:
        self.run_id = run_id
        self.out_root = out_root
        self.profile = profile
        self.experiments = tuple(experiments) if experiments else None
        # The host's name before labelling: the node's own FLEETPHYSICS_HOST_ID, else its
        # hostname; the driver names the simulated hosts it places side by side on one node.
        self.name = (host if simulate else os.environ.get("FLEETPHYSICS_HOST_ID")) or socket.gethostname()
        self.host = self.name
        self.simulate = list(simulate) if simulate else None
        self.seed = seed
        self.configs = configs or {}
        self.period_ms = period_ms
        self.worker_factory = worker_factory
        self.specs = []
        self._host_run = None
        self._started = None
        self._stop_reason = None

    def _device_specs(self, host: str) -> list:
        from agents.factory import DeviceSpec, parse_device_specs

        if self.simulate:
            return [DeviceSpec("sim", name, i, host, self.seed + i) for i, name in enumerate(self.simulate)]
        return parse_device_specs("all", host=host, seed=self.seed)

    def check(self, driver_versions: dict | None = None) -> dict:
        """Can this node run the suite? ``state`` is ready, skipped (nothing to measure) or
        failed (``reason`` names what is missing and the fix)."""
        from agents.env_check import FIX, GPU_PACKAGES, HOST_PACKAGES, environment_problems, installed_versions

        info = {"name": self.name, "hostname": socket.gethostname(), "pid": os.getpid(), "python": sys.executable,
                "devices": [], "simulated": None, "state": "ready", "reason": None}
        versions = installed_versions(HOST_PACKAGES)
        problems = environment_problems(versions, driver_versions or {})
        if problems:
            return info | {"state": "failed", "reason": f"{sys.executable} cannot run the suite: "
                                                           f"{'; '.join(problems)}; {FIX}"}
        from agents.errors import DeviceNotFound, FleetPhysicsError

        try:
            specs = self._device_specs(self.name)
        except DeviceNotFound as exc:
            return info | {"state": "skipped", "reason": f"nothing to measure: {exc}"}
        except FleetPhysicsError as exc:  # FLEETPHYSICS_SIMULATE names an unknown profile, say
            return info | {"state": "failed", "reason": str(exc)}
        if any(s.kind == "nvml" for s in specs):
            problems = environment_problems(installed_versions(GPU_PACKAGES), {}, GPU_PACKAGES)
            if problems:
                return info | {"state": "failed", "reason": f"{sys.executable} cannot drive its GPUs: "
                                                               f"{'; '.join(problems)}; {FIX}"}
        return info | {"devices": [s.label for s in specs], "simulated": all(s.kind == "sim" for s in specs)}

    def assign(self, host: str) -> list[str]:
        """Take the label the driver gave this host (unique in the run); its devices' labels."""
        self.host = host
        self.specs = self._device_specs(host)
        return [s.label for s in self.specs]

    def host_dir(self) -> str:
        """The host's artifact dir (where flushed parts are, even if the run dies)."""
        return str(Path(self.out_root) / self.run_id / self.host)

    def run(self) -> dict:
        """Run the suite on every device of the host; returns the artifacts as tables."""
        from experiments.suite import EXPERIMENTS, HostRun, SuiteOptions

        from experiments.suite import experiment_config

        names = self.experiments or EXPERIMENTS
        configs = {n: type(experiment_config(n, self.profile)).model_validate(c) for n, c in self.configs.items()
                   if n in names}
        opts = SuiteOptions(device="", profile=self.profile, experiments=names, out=self.out_root,
                            period_ms=self.period_ms, host=self.host, run_id=self.run_id, configs=configs)
        if not self.specs:  # run without the driver's labelling (tests, a lone agent)
            self.assign(self.host)
        factory = None
        if self.worker_factory is not None and any(s.kind == "nvml" for s in self.specs):
            factory = self._make_worker
        self._started = time.monotonic()
        self._host_run = HostRun(self.specs, opts, runner_factory=factory)
        summaries = self._host_run.run()
        return {"host": self.host, "devices": [collect_device_artifacts(s["artifact_dir"]) for s in summaries]}

    def _make_worker(self, spec):
        from dataclasses import asdict

        poller = self._host_run.poller
        return self.worker_factory(asdict(spec), str(poller.marker_path), self.host_dir(), self.run_id)

    def status(self) -> dict:
        """Latest sample per device and the current phase (for the live table)."""
        poller = getattr(self._host_run, "poller", None) if self._host_run else None
        latest = poller.latest() if poller is not None else {}
        return {"host": self.host, "elapsed_s": None if self._started is None else time.monotonic() - self._started,
                "latest": latest}

    def stop(self, reason: str = "interrupted") -> None:
        """Ask every device's running phase to stop (Ctrl-C on the driver)."""
        self._stop_reason = reason
        if self._host_run is not None:
            self._host_run.request_stop(reason)


def collect_device_artifacts(device_dir: str) -> dict:
    """A device's artifact dir as Arrow tables and dicts (what travels through the object store)."""
    import json

    import pyarrow.parquet as pq

    d = Path(device_dir)
    trace_file = d / "power_trace.parquet"
    parts = d / "power_trace"
    out = {"device_dir": str(d), "device_uid": d.name}
    if trace_file.exists():
        out["trace"] = pq.read_table(trace_file)
    elif parts.is_dir() and list(parts.glob("part-*.parquet")):
        out["trace"] = pq.read_table(parts)
    else:
        out["trace"] = None
    out["markers"] = pq.read_table(d / "markers.parquet") if (d / "markers.parquet").exists() else None
    out["events"] = pq.read_table(d / "events.parquet") if (d / "events.parquet").exists() else None
    from experiments.contracts.tables import TABLES

    out["tables"] = {t.name: pq.read_table(d / t.file_name) for t in TABLES.values() if (d / t.file_name).exists()}
    out["experiments"] = {}
    for p in d.glob("*.json"):
        data = json.loads(p.read_text())
        if p.stem in ("run_metadata", "fingerprint", "poller_stats", "summary"):
            out[p.stem] = data
        else:
            out["experiments"][p.stem] = data
    return out
