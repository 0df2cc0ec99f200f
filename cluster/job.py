"""The fleet job driver: `python -m cluster.job` (what `ray job submit` runs) and
`fleetphysics run`.

One HostAgent per Ray node with GPUs or simulated devices (or, with no GPU anywhere on the
embedded default, three simulated hosts on the local node). The driver is the single
warehouse writer: each host's artifacts come back through the object store as Arrow tables
and are ingested as soon as that host finishes. A host that dies or goes silent past its
deadline is marked lost; its flushed trace parts are ingested when the driver can reach
them, the others finish, and the run ends ``partial``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from agents.cli_args import positive_float
from agents.errors import ConfigError, FleetPhysicsError
from cluster.faults import FleetStatus, HostStatus, decide
from experiments.contracts.catalog import headline

DEFAULT_SIM_FLEET = ("rtx4080-laptop", "rtx4090", "h100-sxm")
STARTUP_TIMEOUT_S = 120.0
POLL_S = 1.0


@dataclass
class FleetOptions:
    """What `fleetphysics run` was asked for."""

    address: str | None = None
    profile: str = "smoke"
    simulate_profiles: tuple[str, ...] = ()
    warehouse: str = "fleet.duckdb"
    out: str = "runs"
    experiments: tuple[str, ...] | None = None
    deadline_s: float | None = None  # per host; default: from the profile
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    max_lost_fraction: float = 0.5
    show_progress: bool = True
    run_id: str | None = None
    period_ms: float | None = None
    configs: dict = field(default_factory=dict)  # experiment -> config dict overriding the profile preset
    model: str | None = None  # --model for the VRAM cliff and the Joule curve of every host
    dtype: str | None = None  # --dtype


def _planned_deadline_s(profile: str) -> float:
    return {"smoke": 600.0, "quick": 1200.0, "full": 5400.0}[profile]


def resolve_address(address: str | None) -> str:
    """The Ray address the job uses: ``local`` (a fresh embedded Ray) or a cluster's.

    No ``--address`` means the cluster of the Ray job this runs in (``ray job submit`` sets
    RAY_ADDRESS), else the embedded local Ray: never whatever cluster a stale
    ``/tmp/ray/ray_current_cluster`` names.
    """
    if address in (None, ""):
        return "auto" if os.environ.get("RAY_ADDRESS") else "local"
    return address


def _absolute(path: str, what: str, in_ray_job: bool) -> str:
    """``path`` made absolute; inside a Ray job a relative one is refused (it would land in
    Ray's temporary working directory, and name another file on the user's machine)."""
    expanded = os.path.expanduser(path)
    if in_ray_job and not os.path.isabs(expanded):
        raise ConfigError(f"--{what} {path}: a relative path inside a Ray job lands in Ray's temporary working "
                          "directory; give an absolute path on shared storage, or use `fleetphysics submit`, "
                          "which passes one")
    return str(Path(expanded).resolve())


def _plan_hosts(opts: FleetOptions) -> list[dict]:
    """One entry per host: its key (node identity), node, and the agent's simulate list.

    Every alive node gets an agent that checks itself; the simulated fleet of
    ``--simulate-boards`` is several hosts on the driver's node, told apart by slot.
    """
    import ray

    from cluster.placement import alive_nodes

    if opts.simulate_profiles:
        here = ray.get_runtime_context().get_node_id()
        from agents.units import board_name

        return [{"key": f"{here}#{i + 1}", "node_id": here, "hostname": None, "host": f"sim-{i + 1}-{board_name(p)}",
                 "simulate": [p]} for i, p in enumerate(opts.simulate_profiles)]
    return [{"key": n["node_id"], "node_id": n["node_id"], "hostname": n.get("hostname"), "host": None,
             "simulate": None} for n in alive_nodes()]


def _now_wall_ns() -> int:
    return time.time_ns()


def run_fleet(opts: FleetOptions) -> dict:
    """Place the agents, run the suite on every host, ingest as hosts finish; the JSON summary."""
    import ray

    from agents.env_check import installed_versions
    from cluster.host_labels import host_labels
    from cluster.placement import connect, place_agent
    from experiments.presets import check_profile
    from experiments.run_metadata import mint_run_id
    from experiments.suite import parse_experiments

    check_profile(opts.profile)
    experiments = opts.experiments or parse_experiments(None)
    if opts.model is not None or opts.dtype is not None:
        from experiments.suite import model_config_dicts

        # Resolved here first, so bad input stops the run before any agent starts; every host
        # reads the same name or path again (a path must exist on the hosts too).
        opts = replace(opts, configs=model_config_dicts(opts.configs, experiments, opts.profile, opts.model, opts.dtype))
    for i, p in enumerate(opts.simulate_profiles):
        from agents.units import unit_profile

        unit_profile(p, f"sim-{i + 1}", 0)  # bad input fails here, before Ray starts
    address = resolve_address(opts.address)
    in_ray_job = address != "local" and (address == "auto" or bool(os.environ.get("RAY_ADDRESS")))
    opts = replace(opts, address=address, warehouse=_absolute(opts.warehouse, "warehouse", in_ray_job),
                   out=_absolute(opts.out, "out", in_ray_job))
    connect(address)
    cpu_start_s = time.process_time()
    if not opts.simulate_profiles and address == "local" and not _local_has_devices():
        # Only the embedded default stands in a simulated fleet; a cluster is measured as it is.
        opts = replace(opts, simulate_profiles=DEFAULT_SIM_FLEET)
    run_id = opts.run_id or mint_run_id()
    plan = _plan_hosts(opts)
    driver_versions = installed_versions()
    # Every agent starts at once (a worker process each, seconds of imports): placing and
    # checking them one by one made a 16-host fleet start 16 times slower than one host.
    placed = []
    for i, h in enumerate(plan):
        kwargs = dict(run_id=run_id, out_root=opts.out, profile=opts.profile, experiments=experiments,
                      host=h["host"], simulate=h["simulate"], seed=i, configs=opts.configs, period_ms=opts.period_ms)
        agent = place_agent(h["node_id"], **kwargs)
        placed.append((h, agent, agent.check.remote(driver_versions)))
    try:
        checked = _check_agents(placed, opts.startup_timeout_s)
        labels = host_labels({h["key"]: (info.get("name") or h.get("hostname") or h["node_id"][:8], h["node_id"])
                              for h, _, info in checked})
        ready = [(h, agent, info) for h, agent, info in checked if info["state"] == "ready"]
        assigned = [agent.assign.remote(labels[h["key"]]) for h, agent, _ in ready]
        ray.get(assigned, timeout=opts.startup_timeout_s)
    except BaseException:  # Ctrl-C while starting, or an agent that died between its check and its label
        for _, agent, _ in placed:
            ray.kill(agent)
        raise
    others = {}
    for h, agent, info in checked:
        if info["state"] != "ready":
            ray.kill(agent)
            others[labels[h["key"]]] = _host_record(h, info, info["state"], info["reason"])
    agents = {labels[h["key"]]: (agent, info, h) for h, agent, info in ready}
    if not agents:
        failed = {k: v for k, v in others.items() if v["state"] == "failed"}
        if failed:
            label, rec = next(iter(failed.items()))
            raise ConfigError(f"no node can run the suite ({len(failed)} failed its check); {label}: {rec['reason']}")
        raise ConfigError("no node has an NVIDIA GPU or simulated devices: set FLEETPHYSICS_SIMULATE=<board> "
                          "on the nodes (ray start ... with that env), or pass --simulate-boards a,b,c")
    summary = _drive(opts, run_id, agents, others)
    summary["driver"] = _driver_cost(cpu_start_s, summary)
    return summary


def _driver_cost(cpu_start_s: float, summary: dict) -> dict:
    """What the run cost the driver process (all its threads, Ray's included): CPU seconds
    since it connected, seconds spent in ingest, its memory now and at its peak."""
    import resource

    import psutil

    return {"cpu_s": round(time.process_time() - cpu_start_s, 3),
            "ingest_s": round(sum(d.get("ingest_s") or 0.0 for d in summary["devices"]), 3),
            "rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "hosts": sum(h["state"] != "skipped" for h in summary["hosts"].values())}


def _host_record(h: dict, info: dict, state: str, reason: str | None) -> dict:
    """A host's entry in the summary's ``hosts`` (and the warehouse's run_hosts)."""
    return {"node_id": h["node_id"], "hostname": info.get("hostname") or h.get("hostname"), "state": state,
            "reason": reason, "first_seen_wall_ns": info.get("seen_wall_ns"),
            "last_seen_wall_ns": info.get("seen_wall_ns")}


def _check_agents(placed: list, timeout_s: float) -> list[tuple[dict, object, dict]]:
    """Every agent's self-check; an agent that does not start or answer is a failed host
    with its cause, never an exception that sinks the run."""
    import ray

    from agents.env_check import FIX

    deadline = time.monotonic() + timeout_s
    out = []
    for h, agent, ref in placed:
        try:
            info = dict(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())), seen_wall_ns=_now_wall_ns())
        except ray.exceptions.GetTimeoutError:
            info = {"state": "failed", "reason": f"agent on node {h['node_id'][:8]} did not start within "
                                                 f"{timeout_s:g} s"}
        except ray.exceptions.RayError as exc:
            cause = _cause(exc)
            fix = ("; the node cannot import the project: submit it with `ray job submit --working-dir .` "
                   f"(or `fleetphysics submit`), or {FIX}") if "Error: No module named" in cause else ""
            info = {"state": "failed", "reason": f"agent on node {h['node_id'][:8]} failed to start: {cause}{fix}"}
        out.append((h, agent, info))
    return out


def _local_has_devices() -> bool:
    import os

    from agents.nvml import nvml_available

    return bool(os.environ.get("FLEETPHYSICS_SIMULATE")) or nvml_available()


def _cause(exc: Exception) -> str:
    text = str(exc)
    for line in text.splitlines():
        if "Error:" in line or "error:" in line:
            return line.strip()[:300]
    return text.strip().splitlines()[-1][:300] if text.strip() else type(exc).__name__


def _drive(opts: FleetOptions, run_id: str, agents: dict, others: dict | None = None) -> dict:
    """Wait for hosts with timeouts, ingest each as it finishes, decide on faults.

    ``agents`` maps each ready host's label to (actor, its check, its plan entry);
    ``others`` the hosts that were skipped or failed their check to their record.
    """
    import ray

    from cluster.progress import FleetProgress

    others = others or {}
    deadline = opts.deadline_s or _planned_deadline_s(opts.profile)
    now = time.monotonic()
    refs = {agent.run.remote(): host for host, (agent, _, _) in agents.items()}
    status = FleetStatus(tuple(HostStatus(h, "running", started_s=now, deadline_s=now + deadline) for h in agents)
                         + tuple(HostStatus(h, "failed", reason=r["reason"]) for h, r in others.items()
                                 if r["state"] == "failed"),
                         now, max_lost_fraction=opts.max_lost_fraction)
    records = {host: _host_record(h, info, "running", None) for host, (_, info, h) in agents.items()}
    heartbeat = _Heartbeat({host: agent for host, (agent, _, _) in agents.items()}, records)
    devices: list[dict] = []
    progress = FleetProgress({host: (agent, info) for host, (agent, info, _) in agents.items()},
                             enabled=opts.show_progress)
    interrupted = False
    with progress:
        while refs:
            try:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
            except KeyboardInterrupt:
                interrupted = True
                for agent, _, _ in agents.values():
                    agent.stop.remote("interrupted")
                status = replace(status, interrupted=True)
                done = []
            for ref in done:
                host = refs.pop(ref)
                host_status, rows = finish_host(opts, run_id, host, lambda r=ref: ray.get(r))
                if host_status.state in ("done", "failed"):  # it answered
                    records[host]["last_seen_wall_ns"] = _now_wall_ns()
                elif host_status.state == "lost":  # Ray's words name an actor: say which machine went
                    rec = records[host]
                    host_status = replace(host_status, reason=f"node {rec['node_id'][:8]} ({rec['hostname']}) "
                                                              f"stopped answering: {host_status.reason}")
                status = status.with_host(host_status)
                devices.extend(rows)
            heartbeat.beat(running={h for h in refs.values()})
            progress.refresh(status)
            status = replace(status, now_s=time.monotonic())
            decision = decide(status)
            for host in decision.overdue:
                ref = next(r for r, h in refs.items() if h == host)
                refs.pop(ref)
                ray.kill(agents[host][0])
                status = status.with_host(HostStatus(host, "lost", reason="silent past its deadline"))
                devices.extend(_salvage(opts, run_id, host, "lost", "silent past its deadline"))
            if decision.action == "abort" and refs:
                for ref, host in list(refs.items()):
                    agents[host][0].stop.remote("interrupted")
                if interrupted:
                    continue  # let the agents stop gracefully and return what they have
                for ref, host in list(refs.items()):
                    refs.pop(ref)
                    ray.kill(agents[host][0])
                    status = status.with_host(HostStatus(host, "lost", reason=decision.reason))
                    devices.extend(_salvage(opts, run_id, host, "aborted", decision.reason))
    final = decide(replace(status, now_s=time.monotonic()))
    run_state = final.run_state or "partial"
    if interrupted:
        run_state = "aborted"
    elif not status.count("done"):
        run_state = "failed"  # no host finished: nothing of this run is complete
    for h in status.hosts:
        if h.host in records:
            records[h.host].update(state=h.state, reason=h.reason)
    hosts = records | others
    summary = {"run_id": run_id, "run_state": run_state, "warehouse": str(opts.warehouse), "out": str(opts.out),
               "devices": devices, "hosts": hosts}
    _record_run_state(opts, summary)
    return summary


class _Heartbeat:
    """Last seen: every few seconds each running host is asked for its status without
    waiting; an answer moves its ``last_seen_wall_ns``, so a lost host says when it went quiet."""

    PERIOD_S = 5.0

    def __init__(self, agents: dict, records: dict) -> None:
        self.agents, self.records = agents, records
        self.pending: dict = {}
        self.last = 0.0

    def beat(self, running: set[str]) -> None:
        import ray

        if self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
            for ref in ready:
                host = self.pending.pop(ref)
                try:
                    ray.get(ref, timeout=0)
                except Exception:  # noqa: BLE001 - a host that cannot answer is simply not seen
                    continue
                self.records[host]["last_seen_wall_ns"] = _now_wall_ns()
        if time.monotonic() - self.last < self.PERIOD_S:
            return
        self.last = time.monotonic()
        asked = set(self.pending.values())
        for host in running - asked:
            self.pending[self.agents[host].status.remote()] = host


def _record_run_state(opts: FleetOptions, summary: dict) -> None:
    """The run's state and every host's, in the warehouse (one transaction)."""
    from warehouse.run_state import record_run_state

    try:
        record_run_state(opts.warehouse, summary["run_id"], summary["run_state"], summary["hosts"])
    except FleetPhysicsError as exc:  # the devices are stored; say why the run's state is not
        summary["run_state_error"] = str(exc)


def _headline(experiments: dict) -> dict:
    """The fleet table's figures (the catalog's headline paths) from one device's reports,
    each read through its contract first (the reports were validated when ingested): a
    renamed or mistyped figure is an error, never a blank column."""
    from experiments.contracts import read_report, report_json

    return headline({name: report_json(read_report(name, doc)) for name, doc in experiments.items()
                     if doc is not None})


def finish_host(opts: FleetOptions, run_id: str, host: str, get_result) -> tuple[HostStatus, list[dict]]:
    """A host whose run returned: its status and one row per device.

    ``get_result`` fetches the agent's answer (``ray.get`` of its run). What the host sent
    is ingested; when its run raised or its node died, what it flushed is ingested instead
    (``_salvage``). A device the driver cannot ingest is reported with its error and the
    host counts as failed; the other devices of the host are kept.
    """
    import ray

    try:
        result = get_result()
    except ray.exceptions.RayTaskError as exc:
        # The agent's run raised (a FleetPhysicsError such as a poller that would not stop
        # among them): its devices measured until then, and their flushed trace is kept.
        reason = _cause(exc)
        return HostStatus(host, "failed", reason=reason), _salvage(opts, run_id, host, "aborted", reason)
    except ray.exceptions.RayError as exc:  # its actor, worker or node died, or its answer went with the node
        reason = _cause(exc)
        return HostStatus(host, "lost", reason=reason), _salvage(opts, run_id, host, "lost", reason)
    rows = _ingest_host(opts, result, host)
    errors = [f"{r['device_uid']}: {r['error']}" for r in rows if r.get("error")]
    if errors:
        return HostStatus(host, "failed", reason="not ingested: " + "; ".join(errors)), rows
    return HostStatus(host, "done"), rows


def _device_row(host: str, meta: dict) -> dict:
    """A device's row of the run summary, from its run_metadata."""
    return {"host": host, "device_uid": meta["device_uid"], "fingerprint": meta.get("fingerprint"),
            "simulated": meta.get("simulated"), "run_state": meta["run_state"], "end_reason": meta["end_reason"]}


def _ingest_host(opts: FleetOptions, result: dict, host: str) -> list[dict]:
    from warehouse.ingest import ingest_tables

    rows = []
    for d in result["devices"]:
        meta = d["run_metadata"]
        row = _device_row(host, meta)
        start = time.perf_counter()
        try:
            ingest_tables(opts.warehouse, meta, d["fingerprint"], d["trace"], d["markers"], d.get("events"),
                          d["experiments"], d.get("poller_stats"), tables=d.get("tables"))
        except FleetPhysicsError as exc:  # one device's bad artifacts never cost the others theirs
            rows.append({**row, "error": str(exc), "note": "not in the warehouse"})
            continue
        rows.append({**row, **headline(d["experiments"]), "ingest_s": round(time.perf_counter() - start, 4)})
    return rows


def _salvage(opts: FleetOptions, run_id: str, host: str, run_state: str, reason: str) -> list[dict]:
    """A lost or failed host: ingest what it flushed, when the driver can reach its artifact dir."""
    from cluster.host_agent import collect_device_artifacts
    from experiments.contracts import RunMetadata, dump, parse
    from warehouse.ingest import ingest_tables

    host_dir = Path(opts.out).resolve() / run_id / host
    rows = []
    if not host_dir.is_dir():
        return [{"host": host, "device_uid": None, "run_state": run_state, "end_reason": "lost", "error": reason,
                 "note": "artifact dir not reachable from the driver"}]
    for meta_path in sorted(host_dir.glob("*/run_metadata.json")):
        d = collect_device_artifacts(str(meta_path.parent))
        try:  # read through its contract: a torn or foreign file is this device's error, not the run's
            meta = dump(parse(RunMetadata, str(meta_path), d.get("run_metadata"), "the host left it unreadable"))
        except FleetPhysicsError as exc:
            rows.append({"host": host, "device_uid": meta_path.parent.name, "run_state": run_state,
                         "end_reason": "lost" if run_state == "lost" else "error", "error": str(exc),
                         "note": "not in the warehouse"})
            continue
        meta.update(run_state=run_state, end_reason="lost" if run_state == "lost" else "error")
        meta["checks"] = {**(meta["checks"] or {}), "lost_reason": reason}
        row = _device_row(host, meta) | {"rows": 0 if d["trace"] is None else d["trace"].num_rows}
        if d["trace"] is not None and d.get("fingerprint"):
            start = time.perf_counter()
            try:
                ingest_tables(opts.warehouse, meta, d["fingerprint"], d["trace"], d["markers"], None, {}, None)
                row["ingest_s"] = round(time.perf_counter() - start, 4)
            except FleetPhysicsError as exc:  # a torn part must not stop the other hosts' ingest
                row.update(rows=0, error=str(exc), note="not in the warehouse")
        rows.append(row)
    return rows


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of the job (shared by `python -m cluster.job` and `fleetphysics run`)."""
    from warehouse.connection import default_warehouse

    p = parser or argparse.ArgumentParser(prog="python -m cluster.job", description=__doc__.splitlines()[0])
    from agents.cli_args import add_deprecated_alias
    from cluster.suite_commands import add_model_arguments, add_preset_argument
    from experiments.registry import help_text

    p.add_argument("--address", default=None, help="Ray address, or 'local' (default: the embedded local Ray)")
    add_preset_argument(p)
    boards = p.add_argument("--simulate-boards", default="", metavar="BOARD,BOARD",
                            help="comma-separated simulated boards (e.g. rtx4090,h100-sxm): one simulated host each, "
                                 "on this node (formerly --simulate-profiles)")
    add_deprecated_alias(p, "--simulate-profiles", boards)
    p.add_argument("--experiments", default=None, help=help_text())
    p.add_argument("--warehouse", default=default_warehouse(), metavar="PATH",
                   help="warehouse file the driver writes (default: $FLEETPHYSICS_WAREHOUSE, else ./fleet.duckdb)")
    p.add_argument("--out", default="runs", help="artifact root on each host")
    p.add_argument("--deadline-s", type=positive_float, default=None,
                   help="a host silent past this many seconds is lost (default: by preset, 600/1200/5400)")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print the JSON summary")
    p.add_argument("--gate", action="store_true",
                   help="exit 3 when the fleet verdict finds a device not ready (after storing everything)")
    return p


def options_from_args(args) -> FleetOptions:
    """FleetOptions from parsed arguments."""
    from experiments.suite import parse_experiments

    sims = tuple(p.strip() for p in (args.simulate_boards or "").split(",") if p.strip())
    return FleetOptions(address=args.address, profile=args.preset, simulate_profiles=sims, warehouse=args.warehouse,
                        out=args.out, experiments=parse_experiments(args.experiments) if args.experiments else None,
                        deadline_s=args.deadline_s, show_progress=not args.json, model=args.model, dtype=args.dtype)


def fleet_verdict(summary: dict) -> dict:
    """Judge the run just stored (lost or failed hosts with nothing stored count as not
    ready), store the verdict in the warehouse and return it."""
    from warehouse.verdict_store import judge_run, store_verdict, with_missing_hosts

    verdict = with_missing_hosts(judge_run(summary["warehouse"], summary["run_id"]), summary.get("hosts") or {})
    store_verdict(summary["warehouse"], verdict)
    return verdict


def cmd_run(args) -> int:
    """Run the fleet job, judge and store its verdict, print the comparison table (or JSON).
    With ``--gate``: exit 3 when a device (or a lost host) is not ready."""
    from warehouse.verdict import exit_code, public

    summary = run_fleet(options_from_args(args))
    verdict = fleet_verdict(summary) if any(d.get("device_uid") for d in summary["devices"]) else None
    if verdict is not None:
        summary["verdict"] = public(verdict)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        from cluster.progress import print_comparison
        from warehouse.verdict_cli import format_verdict

        print_comparison(summary)
        if verdict is not None:
            print(format_verdict(verdict))
    if getattr(args, "gate", False) and verdict is not None and exit_code(verdict) == 3:
        return 3
    return 0 if summary["run_state"] == "completed" else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m cluster.job ...`"""
    from agents.env_check import DRIVER_PACKAGES, FIX, environment_problems, installed_versions

    # Before anything imports them: a head whose Ray runs another Python would otherwise
    # print a traceback ("No module named 'duckdb'") instead of the fix.
    problems = environment_problems(installed_versions(DRIVER_PACKAGES), {}, DRIVER_PACKAGES)
    if problems:
        print(f"fleetphysics: {sys.executable} cannot run the job's driver: {'; '.join(problems)}; {FIX}",
              file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return cmd_run(args)
    except FleetPhysicsError as exc:
        print(f"fleetphysics: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
