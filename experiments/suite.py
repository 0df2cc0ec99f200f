"""The TR122 suite on one device: poller first, experiments in order, analysis last.

Flow: mint the run_id; start the poller (once, before any experiment); run each
experiment's workload, which declares load and marks phases and events; stop the poller;
then analyse the complete trace with pure functions and write the artifact dir:

    <out>/<run_id>/<host>/<device_uid>/
        power_trace.parquet  markers.parquet  events.parquet  <experiment>.json ...
        poller_stats.json  fingerprint.json  run_metadata.json  tr122/
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from agents.errors import ConfigError, FleetPhysicsError
from agents.factory import DeviceSpec, open_device, parse_device_specs
from agents.fingerprint import fingerprint_device
from agents.poller import PollerConfig, PollerProcess
from experiments import registry
from experiments.context import ArtifactWriter, RunContext
from experiments.presets import check_profile, pick
from experiments.run_metadata import checked, mint_run_id, new_metadata

# The default suite as registered when this module was imported; the functions below ask the
# registry each time they run.
EXPERIMENTS = registry.names(default_only=True)


@dataclass
class SuiteOptions:
    """What `fleetphysics suite` was asked for."""

    device: str
    profile: str = "smoke"
    experiments: tuple[str, ...] = field(default_factory=lambda: registry.names(default_only=True))
    out: str = "runs"
    period_ms: float | None = None
    seed: int = 0
    host: str | None = None
    progress: Callable[[str, float], None] | None = None
    run_id: str | None = None
    configs: dict = field(default_factory=dict)  # experiment -> config model (overrides presets)
    model: str | None = None  # --model: a built-in name or a local config path (None: each config's own)
    dtype: str | None = None  # --dtype (None: each config's own)


def parse_experiments(text: str | None) -> tuple[str, ...]:
    """`--experiments a,b` in suite order (none: the registry's default suite); unknown names are bad input."""
    return registry.parse(text)


def experiment_config(name: str, profile: str):
    """The preset config model of one experiment."""
    return registry.get(name).preset(profile)


def with_model(configs: dict, model: str | None, dtype: str | None) -> dict:
    """``configs`` (experiment -> config model) with ``--model`` / ``--dtype`` set on the experiments that use a model.

    The model is resolved here, so an unknown name or a malformed config is one line and
    exit 2 before any poller starts.
    """
    update = {k: v for k, v in (("model", model), ("dtype", dtype)) if v is not None}
    if not update:
        return configs
    if model is not None:
        from experiments.model_shapes import resolve

        resolve(model)
    uses_model = registry.model_names()
    return {n: type(c).model_validate({**c.model_dump(), **update}) if n in uses_model else c
            for n, c in configs.items()}


def model_config_dicts(configs: dict, experiments, profile: str, model: str | None, dtype: str | None) -> dict:
    """The fleet's experiment -> config dict with ``--model`` / ``--dtype`` applied (what every host receives)."""
    out = dict(configs)
    for name in registry.model_names():
        if name in experiments and (model is not None or dtype is not None):
            base = experiment_config(name, profile)
            if name in configs:
                base = type(base).model_validate(configs[name])
            out[name] = with_model({name: base}, model, dtype)[name].model_dump()
    return out


def _load_source(spec: DeviceSpec, marker_path: str):
    """The marker file's load edges for a simulated board (None on hardware, which needs none)."""
    from agents.factory import device_uid_of
    from agents.sim_nvml import marker_load_source

    uid = device_uid_of(spec)
    return marker_load_source(marker_path, uid) if uid is not None else None


def _safe_host() -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname()) or "host"


class _Stop:
    """Ctrl-C / abort flag shared with a device's runners."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self) -> bool:
        return self.reason is not None


class DeviceRunner:
    """Runs experiment phases on one device: in the host's process, or inside a
    DeviceWorker actor (a plain class; cluster/ wraps it with ray.remote)."""

    def __init__(self, spec: DeviceSpec, marker_path: str, out_dir: str, run_id: str,
                 progress: Callable[[str, float], None] | None = None) -> None:
        from agents.markers import MarkerWriter

        self.spec = spec
        self.markers = MarkerWriter(marker_path)
        self.device = open_device(spec, load_source=_load_source(spec, marker_path))
        self.stop = _Stop()
        self.device_dir = Path(out_dir) / self.device.uuid
        from experiments.analysis.heat_soak import ThermalGuard

        # TR122's thermal guard watches every experiment, in its waits (ctx.sleep) and between
        # the passes and steps of its load (the heat soak keeps its own, which ends the soak).
        guard = ThermalGuard(slowdown_temp_c=self.device.info.slowdown_temp_c)
        self.ctx = RunContext(device=self.device, markers=self.markers, artifacts=ArtifactWriter(self.device_dir),
                              run_id=run_id, torch_device=None,
                              progress=progress or (lambda p, f: None), should_stop=self.stop, guard=guard)
        self.phase = "starting"

    def describe(self) -> dict:
        """uuid, simulated flag and fingerprint of the device."""
        fp = fingerprint_device(self.device)
        return {"uuid": self.device.uuid, "simulated": self.device.simulated, "fingerprint": fp.to_dict()}

    def run_phase(self, name: str, config_json: dict) -> dict:
        """Run one experiment; failures come back as data (``{"error": ...}``)."""
        self.phase = name
        config = registry.get(name).config_class.model_validate(config_json)
        try:
            return _run_one(name, self.ctx, config)
        except FleetPhysicsError as exc:
            return {"experiment": name, "error": str(exc)}
        finally:
            self.phase = f"{name} done"

    def request_stop(self, reason: str = "interrupted") -> None:
        """Ask the running phase to stop at its next check."""
        self.stop.reason = reason

    def close(self) -> None:
        """Idle the device and release it."""
        self.ctx.set_load(0.0)
        self.device.close()
        self.markers.close()


def _device_state(results: dict, poller_alive: bool) -> tuple[str, str]:
    """run_state and end_reason of one device from its experiments' results (pure).

    An experiment that ended on a thermal trip or an interruption aborts the device; one that
    ran to its time limit without reaching its goal leaves the device ``timeout``.
    """
    run_state, end_reason = "completed", "completed"
    for res in results.values():
        if "error" in res:
            run_state, end_reason = "partial", "error"
        ended = res.get("end_reason")
        if ended in ("thermal_trip", "interrupted"):
            return "aborted", ended
        if ended in ("equilibrium", "timeout") and run_state == "completed":
            run_state, end_reason = ("completed" if ended == "equilibrium" else "timeout"), ended
    if not poller_alive:
        return "aborted", "poller_degraded"
    return run_state, end_reason


@dataclass
class HostRun:
    """One host's run: one poller for all its devices, phases in lockstep (a per-host
    barrier: an idle baseline is idle for the whole chassis), analysis at the end."""

    specs: list[DeviceSpec]
    opts: SuiteOptions
    runner_factory: Callable | None = None  # spec -> runner with run_phase/describe/close (default in-process)

    def request_stop(self, reason: str = "interrupted") -> None:
        """Ask every device's running phase to stop at its next check."""
        self._stop_reason = reason
        for r in getattr(self, "runners", []):
            r.request_stop(reason)

    def run(self) -> list[dict]:
        """Run every phase on every device; returns one summary per device."""
        from concurrent.futures import ThreadPoolExecutor

        opts = self.opts
        check_profile(opts.profile)
        configs = {n: opts.configs.get(n) or experiment_config(n, opts.profile) for n in opts.experiments}
        configs = with_model(configs, opts.model, opts.dtype)
        run_id = opts.run_id or mint_run_id()
        host = opts.host or _safe_host()
        host_dir = Path(opts.out) / run_id / host
        period_ms = opts.period_ms or pick(opts.profile, 20.0, 20.0, 50.0)
        for name, cfg in configs.items():
            if "check_period_s" in type(cfg).model_fields and name not in opts.configs:
                # a runner that watches the device checks on the poller's grid: a thermal trip
                # ends the heat soak within one tick
                configs[name] = cfg.model_copy(update={"check_period_s": period_ms / 1000})
        poller = PollerProcess(self.specs, PollerConfig(out_dir=str(host_dir), period_ms=period_ms))
        poller.start()
        self.poller = poller
        runners, metas, results = [], [], []
        interrupted = False
        try:
            factory = self.runner_factory or (lambda spec: DeviceRunner(spec, str(poller.marker_path), str(host_dir),
                                                                       run_id, opts.progress))
            runners = [factory(spec) for spec in self.specs]
            self.runners = runners
            for spec, runner in zip(self.specs, runners):
                d = runner.describe()
                writer = ArtifactWriter(host_dir / d["uuid"])
                meta = new_metadata(run_id, host, d["uuid"], d["fingerprint"]["fingerprint"], d["simulated"],
                                    {"profile": opts.profile, "device": spec.label, "period_ms": period_ms,
                                     "experiments": list(opts.experiments),
                                     "configs": {n: c.model_dump() for n, c in configs.items()}})
                writer.write_json("run_metadata", meta)
                writer.write_json("fingerprint", d["fingerprint"])
                metas.append((writer, meta))
                results.append({})
            with ThreadPoolExecutor(max_workers=max(1, len(runners))) as pool:
                for name in opts.experiments:
                    if not poller.alive or getattr(self, "_stop_reason", None):
                        interrupted = interrupted or bool(getattr(self, "_stop_reason", None))
                        break
                    live = [i for i, r in enumerate(results) if _device_state(r, True)[0] != "aborted"]
                    futures = {i: pool.submit(runners[i].run_phase, name, configs[name].model_dump()) for i in live}
                    for i, fut in futures.items():  # the barrier: every device ends the phase
                        results[i][name] = fut.result()
        except KeyboardInterrupt:
            interrupted = True
            for r in runners:
                r.request_stop("interrupted")
        finally:
            alive = poller.alive
            try:
                for r in runners:
                    r.close()
                stats = poller.stop()
            finally:
                poller.close()
        summaries = []
        for (writer, meta), res in zip(metas, results):
            state = ("aborted", "interrupted") if interrupted else _device_state(res, alive)
            summaries.append(_finish(writer.dir, writer, meta, stats, res, configs, *state))
        return summaries


def run_suite(opts: SuiteOptions) -> dict:
    """Run the suite on one device; returns the JSON summary (also written to disk)."""
    specs = parse_device_specs(opts.device, host=opts.host, seed=opts.seed)
    if len(specs) != 1:
        raise ConfigError(f"--device {opts.device!r} names {len(specs)} devices; the suite runs on one "
                          "(`fleetphysics run` characterizes a whole host)")
    return HostRun(specs, opts).run()[0]


def _run_one(name: str, ctx: RunContext, config) -> dict:
    trips_before = len(ctx.thermal_trips)
    result = registry.get(name).runner(ctx, config)
    if isinstance(result, dict):  # the context guard's pauses during this experiment, in its report
        result.setdefault("thermal_trips", ctx.thermal_trips[trips_before:])
    return result


def compact_trace(device_dir: Path) -> Path:
    """Merge the poller's parts into one sorted power_trace.parquet (write, then rename),
    then remove the parts: a killed run keeps its parts, a finished one has one file."""
    parts_dir = device_dir / "power_trace"
    final = device_dir / "power_trace.parquet"
    parts = sorted(parts_dir.glob("part-*.parquet")) if parts_dir.is_dir() else []
    if not parts:
        return final
    table = pa.concat_tables([pq.read_table(p) for p in parts]).sort_by("t_ns")
    tmp = device_dir / ".power_trace.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, final)
    shutil.rmtree(parts_dir)
    return final


def write_table(device_dir: Path, name: str, table: pa.Table) -> Path:
    """``<device_dir>/<name>.parquet`` (write, then rename: a killed run never leaves half a file)."""
    tmp = device_dir / f".{name}.parquet.tmp"
    pq.write_table(table, tmp)
    final = device_dir / f"{name}.parquet"
    os.replace(tmp, final)
    return final


def _finish(device_dir: Path, writer: ArtifactWriter, meta: dict, stats: dict, results: dict, configs: dict,
            run_state: str, end_reason: str) -> dict:
    # pandas and the analyses load here, not at import: a fleet of hosts starting together
    # on a few cores pays ~0.6 CPU-s less each before its first experiment.
    import pandas as pd

    from experiments import reports

    trace_path = compact_trace(device_dir)
    trace = pq.read_table(trace_path).to_pandas() if trace_path.exists() else pd.DataFrame()
    markers = pq.read_table(device_dir / "markers.parquet").to_pandas()
    info = json.loads((device_dir.parent / "devices.json").read_text())[device_dir.name]["info"]
    experiments, tables = reports.analyse_all(results, configs, trace, markers, info)
    for name, table in tables.items():  # before the reports: a report is never without its tables
        write_table(device_dir, name, table)
    for name, report in experiments.items():
        writer.write_json(name, report)
    events = tables["events"].to_pandas() if "events" in tables else None
    meta.update(run_state=run_state, end_reason=end_reason, ended_wall_ns=time.time_ns(),
                checks={**meta["checks"], **{n: r.get("checks", {}) for n, r in experiments.items()}})
    meta = checked(meta)
    writer.write_json("run_metadata", meta)
    reports.write_tr122_pack(device_dir / "tr122", trace, events, experiments.get("baseline"), meta)
    summary = {
        "run_id": meta["run_id"],
        "fingerprint": meta["fingerprint"],
        "device_uid": meta["device_uid"],
        "simulated": meta["simulated"],
        "run_state": run_state,
        "end_reason": end_reason,
        "artifact_dir": str(device_dir),
        "poller": stats,
        "experiments": {n: {**(r.get("figures") or {}), "quality": r.get("quality", {})} for n, r in experiments.items()},
    }
    writer.write_json("summary", summary)
    return summary
