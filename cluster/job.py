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
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from agents.cli_args import positive_float
from agents.errors import ConfigError, FleetPhysicsError
from cluster.faults import FleetStatus, HostStatus, decide

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


def _plan_hosts(opts: FleetOptions) -> list[dict]:
    """(node, agent kwargs) for every host: one agent per node that has devices, or the
    simulated fleet on the local node."""
    import ray

    from cluster.placement import alive_nodes

    nodes = alive_nodes()
    if opts.simulate_profiles:
        here = ray.get_runtime_context().get_node_id()
        from agents.units import board_name

        return [{"node_id": here, "host": f"sim-{i + 1}-{board_name(p)}", "simulate": [p]}
                for i, p in enumerate(opts.simulate_profiles)]
    shared = {a for a in (n["address"] for n in nodes) if sum(m["address"] == a for m in nodes) > 1}
    # Several nodes on one machine (ray.cluster_utils, or ray start twice) share a hostname:
    # name their hosts by node id so their artifact dirs never collide.
    return [{"node_id": n["node_id"], "host": f"node-{n['node_id'][:8]}" if n["address"] in shared else None,
             "simulate": None} for n in nodes]


def run_fleet(opts: FleetOptions) -> dict:
    """Place the agents, run the suite on every host, ingest as hosts finish; the JSON summary."""
    import ray

    from cluster.placement import PlacementError, connect, place_agent
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
    connect(opts.address)
    if not opts.simulate_profiles and opts.address in (None, "", "local") and not _local_has_devices():
        opts = replace(opts, simulate_profiles=DEFAULT_SIM_FLEET)
    run_id = opts.run_id or mint_run_id()
    out_root = str(Path(opts.out).resolve())
    plan = _plan_hosts(opts)
    # Every agent starts at once (a worker process each, seconds of imports): placing and
    # pinging them one by one made a 16-host fleet start 16 times slower than one host.
    placed = []
    for i, h in enumerate(plan):
        kwargs = dict(run_id=run_id, out_root=out_root, profile=opts.profile, experiments=experiments,
                      host=h["host"], simulate=h["simulate"], seed=i, configs=opts.configs, period_ms=opts.period_ms)
        agent = place_agent(h["node_id"], **kwargs)
        placed.append((h, agent, agent.ping.remote()))
    agents = {}
    startup_deadline = time.monotonic() + opts.startup_timeout_s
    try:
        for h, agent, ping in placed:
            try:
                info = ray.get(ping, timeout=max(0.0, startup_deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError:
                raise PlacementError(
                    f"agent on node {h['node_id'][:8]} did not start within {opts.startup_timeout_s:g} s") from None
            except ray.exceptions.RayActorError as exc:
                cause = _cause(exc)
                if "NVIDIA GPU" in cause or "NVML library not found" in cause or "NVIDIA driver" in cause:
                    ray.kill(agent)
                    continue  # a node with nothing to measure (e.g. a CPU-only head node)
                raise PlacementError(f"agent on node {h['node_id'][:8]} failed to start: {cause}") from None
            agents[info["host"]] = (agent, info)
    except BaseException:
        for _, agent, _ in placed:
            ray.kill(agent)
        raise
    if not agents:
        raise ConfigError("no node has an NVIDIA GPU or simulated devices: set FLEETPHYSICS_SIMULATE=<profile> "
                          "on the nodes (ray start ... with that env), or pass --simulate-profiles a,b,c")
    return _drive(opts, run_id, agents)


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


def _drive(opts: FleetOptions, run_id: str, agents: dict) -> dict:
    """Wait for hosts with timeouts, ingest each as it finishes, decide on faults."""
    import ray

    from cluster.progress import FleetProgress

    deadline = opts.deadline_s or _planned_deadline_s(opts.profile)
    now = time.monotonic()
    refs = {agent.run.remote(): host for host, (agent, _) in agents.items()}
    status = FleetStatus(tuple(HostStatus(h, "running", started_s=now, deadline_s=now + deadline) for h in agents),
                         now, max_lost_fraction=opts.max_lost_fraction)
    devices: list[dict] = []
    progress = FleetProgress(agents, enabled=opts.show_progress)
    interrupted = False
    with progress:
        while refs:
            try:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
            except KeyboardInterrupt:
                interrupted = True
                for agent, _ in agents.values():
                    agent.stop.remote("interrupted")
                status = replace(status, interrupted=True)
                done = []
            for ref in done:
                host = refs.pop(ref)
                host_status, rows = finish_host(opts, run_id, host, lambda r=ref: ray.get(r))
                status = status.with_host(host_status)
                devices.extend(rows)
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
    return {"run_id": run_id, "run_state": run_state, "warehouse": str(opts.warehouse), "devices": devices,
            "hosts": {h.host: {"state": h.state, "reason": h.reason} for h in status.hosts}}


def _headline(experiments: dict) -> dict:
    """The figures the comparison table shows, with their quality flags."""
    def fig(name):
        return (experiments.get(name) or {}).get("figures", {}) or {}

    b, ir, v, j, h = fig("baseline"), fig("instrument_response"), fig("vram_cliff"), fig("joule_curve"), fig("heat_soak")
    inst = ir.get("power_instant_w") or {}
    avg = ir.get("power_w") or {}
    return {
        "idle_w": b.get("mean_robust_w"), "idle_sem_w": b.get("sem_eff_w"), "fake_idle": b.get("fake_idle"),
        "update_period_ms": inst.get("update_period_ms") or avg.get("update_period_ms"),
        "rise_ms": inst.get("rise_ms") or avg.get("rise_ms"),
        "vram_cliff": v.get("max_context_batch1") or v.get("max_context"),
        "j_per_token": j.get("j_per_token_batch1") or j.get("j_per_token"),
        "tau_s": h.get("tau_s"), "t_inf_c": h.get("t_inf_c"), "equilibrium": h.get("equilibrium"),
    }


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
        try:
            ingest_tables(opts.warehouse, meta, d["fingerprint"], d["trace"], d["markers"], d.get("events"),
                          d["experiments"], d.get("poller_stats"))
        except FleetPhysicsError as exc:  # one device's bad artifacts never cost the others theirs
            rows.append({**row, "error": str(exc), "note": "not in the warehouse"})
            continue
        rows.append({**row, **_headline(d["experiments"])})
    return rows


def _salvage(opts: FleetOptions, run_id: str, host: str, run_state: str, reason: str) -> list[dict]:
    """A lost or failed host: ingest what it flushed, when the driver can reach its artifact dir."""
    import json as _json

    from agents.host_agent import collect_device_artifacts
    from warehouse.ingest import ingest_tables

    host_dir = Path(opts.out).resolve() / run_id / host
    rows = []
    if not host_dir.is_dir():
        return [{"host": host, "device_uid": None, "run_state": run_state, "end_reason": "lost", "error": reason,
                 "note": "artifact dir not reachable from the driver"}]
    for meta_path in sorted(host_dir.glob("*/run_metadata.json")):
        d = collect_device_artifacts(str(meta_path.parent))
        meta = dict(d.get("run_metadata") or _json.loads(meta_path.read_text()))
        meta.update(run_state=run_state, end_reason="lost" if run_state == "lost" else "error")
        meta.setdefault("checks", {})["lost_reason"] = reason
        row = _device_row(host, meta) | {"rows": 0 if d["trace"] is None else d["trace"].num_rows}
        if d["trace"] is not None and d.get("fingerprint"):
            try:
                ingest_tables(opts.warehouse, meta, d["fingerprint"], d["trace"], d["markers"], None, {}, None)
            except FleetPhysicsError as exc:  # a torn part must not stop the other hosts' ingest
                row.update(rows=0, error=str(exc), note="not in the warehouse")
        rows.append(row)
    return rows


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of the job (shared by `python -m cluster.job` and `fleetphysics run`)."""
    from warehouse.connection import default_warehouse

    p = parser or argparse.ArgumentParser(prog="python -m cluster.job", description=__doc__.splitlines()[0])
    p.add_argument("--address", default=None, help="Ray address, or 'local' (default: the embedded local Ray)")
    p.add_argument("--profile", default="smoke", help="smoke | quick | full")
    p.add_argument("--simulate-profiles", default="", help="comma-separated profiles: one simulated host each")
    p.add_argument("--experiments", default=None, help="comma-separated subset of the suite")
    p.add_argument("--warehouse", default=default_warehouse())
    p.add_argument("--out", default="runs", help="artifact root on each host")
    p.add_argument("--deadline-s", type=positive_float, default=None, help="a host silent past this is lost")
    from cluster.suite_commands import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print the JSON summary")
    p.add_argument("--gate", action="store_true",
                   help="exit 3 when the fleet verdict finds a device not ready (after storing everything)")
    return p


def options_from_args(args) -> FleetOptions:
    """FleetOptions from parsed arguments."""
    from experiments.suite import parse_experiments

    sims = tuple(p.strip() for p in (args.simulate_profiles or "").split(",") if p.strip())
    return FleetOptions(address=args.address, profile=args.profile, simulate_profiles=sims, warehouse=args.warehouse,
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
    args = build_parser().parse_args(argv)
    try:
        return cmd_run(args)
    except FleetPhysicsError as exc:
        print(f"fleetphysics: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
