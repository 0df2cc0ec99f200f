"""`fleetphysics bench fleet`: N simulated hosts on a local multi-node Ray cluster against
one host, measured in the same run. The ratio says what the fleet costs over a single host.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from agents.cli_args import positive_int
from agents.profiles import builtin_profile_names
from warehouse.progress import Report, no_report, progress_bars


def register(bench_sub) -> None:
    """Add `bench fleet`."""
    p = bench_sub.add_parser("fleet", help="N simulated hosts on a local multi-node cluster vs one host")
    p.add_argument("--hosts", type=positive_int, default=16)
    p.add_argument("--profile", default="smoke")
    p.add_argument("--experiments", default=None, help="subset of the suite (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_fleet)


def _timed_run(tmp: str, tag: str, profile: str, experiments) -> tuple[float, dict]:
    from cluster.job import FleetOptions, run_fleet

    start = time.monotonic()
    summary = run_fleet(FleetOptions(address="auto", profile=profile, experiments=experiments, show_progress=False,
                                     warehouse=os.path.join(tmp, f"{tag}.duckdb"), out=os.path.join(tmp, tag)))
    return time.monotonic() - start, summary


def run_bench(hosts: int, profile: str, experiments, progress: Report = no_report) -> dict:
    """Time one host, then ``hosts`` hosts, on one local multi-node cluster. ``progress``
    hears of the hosts started and the two runs (the fleet's live table stays off: it polls
    every agent, which would be timed too)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray.cluster_utils import Cluster

    profiles = builtin_profile_names()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        def add(i):
            cluster.add_node(num_cpus=1, num_gpus=1, env_vars={
                "FLEETPHYSICS_SIMULATE": profiles[i % len(profiles)], "FLEETPHYSICS_HOST_ID": f"bench-host-{i:02d}"})
            progress("hosts started", i + 1, hosts)

        progress("runs (1, then all)", 0, 2)
        add(0)
        ray.init(address=cluster.address, log_to_driver=False)
        with tempfile.TemporaryDirectory(prefix="fleetphysics-bench-fleet-") as tmp:
            single_s, single = _timed_run(tmp, "single", profile, experiments)
            progress("runs (1, then all)", 1, 2)
            for i in range(1, hosts):
                add(i)
            cluster.wait_for_nodes()
            fleet_s, fleet = _timed_run(tmp, "fleet", profile, experiments)
            progress("runs (1, then all)", 2, 2)
        return {"hosts": len(fleet["devices"]), "wall_s": round(fleet_s, 2), "single_host_wall_s": round(single_s, 2),
                "ratio": round(fleet_s / single_s, 3), "run_state": fleet["run_state"],
                "single_run_state": single["run_state"]}
    finally:
        ray.shutdown()
        cluster.shutdown()


def cmd_bench_fleet(args) -> int:
    """Print the benchmark."""
    from experiments.presets import check_profile
    from experiments.suite import parse_experiments

    check_profile(args.profile)
    with progress_bars() as report:
        doc = run_bench(args.hosts, args.profile, parse_experiments(args.experiments) if args.experiments else None,
                        progress=report)
    print(json.dumps(doc, indent=2) if args.json else doc)
    return 0
