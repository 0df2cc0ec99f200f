"""`fleetphysics bench fleet`: N simulated hosts on a local multi-node Ray cluster against
one host, measured in the same run. The ratio says what the fleet costs over a single host;
the driver's cost per host (CPU seconds, ingest seconds, memory) says how far one driver
goes: ``--hosts 16,32,64`` runs each size in turn and fits the driver's cost against N.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

from agents.cli_args import positive_int_list
from agents.errors import FleetPhysicsError
from agents.profiles import builtin_profile_names
from warehouse.progress import Report, no_report, progress_bars

# --light: what a host costs the driver when it measures little (a 2 s baseline at 100 ms).
LIGHT = {"experiments": ("baseline",), "configs": {"baseline": {"duration_s": 2.0, "settle_s": 0.5}},
         "period_ms": 100.0}


def register(bench_sub) -> None:
    """Add `bench fleet`."""
    p = bench_sub.add_parser("fleet", help="N simulated hosts on a local multi-node cluster vs one host")
    p.add_argument("--hosts", type=positive_int_list, default=[16], help="fleet size, or sizes run in turn: 16,32,64")
    from cluster.suite_commands import add_preset_argument

    add_preset_argument(p)
    p.add_argument("--experiments", default=None, help="subset of the suite (default: all)")
    p.add_argument("--light", action="store_true", help="a 2 s baseline per host at 100 ms: the driver's cost per host")
    p.add_argument("--json", action="store_true", help="print one JSON object (else a Python dict)")
    p.set_defaults(func=cmd_bench_fleet)


def _timed_run(tmp: str, tag: str, preset: str, experiments, light: bool, hosts: int = 1) -> tuple[float, dict]:
    from cluster.job import STARTUP_TIMEOUT_S, FleetOptions, run_fleet

    extra = {"configs": LIGHT["configs"], "period_ms": LIGHT["period_ms"]} if light else {}
    # Every agent imports the suite's packages at once: on a small machine 64 of them take
    # minutes, which is the machine's limit, not the fleet's (at 64 hosts on 2 cores the
    # default 120 s failed every host).
    extra["startup_timeout_s"] = max(STARTUP_TIMEOUT_S, 10.0 * hosts)
    start = time.monotonic()
    summary = run_fleet(FleetOptions(address="auto", profile=preset, experiments=experiments, show_progress=False,
                                     warehouse=os.path.join(tmp, f"{tag}.duckdb"), out=os.path.join(tmp, tag),
                                     **extra))
    return time.monotonic() - start, summary


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def _size_doc(n: int, wall_s: float, single_s: float, summary: dict) -> dict:
    """One fleet size: wall time, ratio, and the driver's cost in all and per host."""
    drv = summary["driver"]
    each = [d["ingest_s"] for d in summary["devices"] if d.get("ingest_s") is not None]
    hosts = max(drv["hosts"], 1)
    return {"hosts": n, "devices_stored": len(summary["devices"]), "wall_s": round(wall_s, 2),
            "ratio": round(wall_s / single_s, 3),
            "run_state": summary["run_state"], "driver_cpu_s": drv["cpu_s"], "driver_ingest_s": drv["ingest_s"],
            "driver_rss_mib": drv["rss_mib"], "driver_peak_rss_mib": drv["peak_rss_mib"],
            "cpu_s_per_host": round(drv["cpu_s"] / hosts, 4), "ingest_s_per_host": round(drv["ingest_s"] / hosts, 4),
            "ingest_s_each": {"median": _round(_quantile(each, 0.5)), "p10": _round(_quantile(each, 0.1)),
                              "p90": _round(_quantile(each, 0.9))}}


def _round(value, digits: int = 4):
    return None if value is None else round(value, digits)


def per_host_fit(sizes: list[dict], key: str) -> dict:
    """``key`` against the number of hosts, y = a + b N: ``b`` is the marginal cost of a host,
    with its 95 % interval (t quantile; needs three sizes or more)."""
    from scipy.stats import t as student_t

    from experiments.analysis.stats import linear_fit

    fit = linear_fit([s["hosts"] for s in sizes], [s[key] for s in sizes])
    half = None
    if fit["n"] > 2 and math.isfinite(fit["b_se"]):
        half = float(student_t.ppf(0.975, fit["n"] - 2) * fit["b_se"])
    return {"per_host": _round(fit["b"]), "ci95": None if half is None else [_round(fit["b"] - half), _round(fit["b"] + half)],
            "fixed": _round(fit["a"]), "r2": _round(fit["r2"]), "sizes": fit["n"]}


def run_bench(hosts: int | list[int], preset: str, experiments, progress: Report = no_report,
              light: bool = False) -> dict:
    """Time one host, then each fleet size in ``hosts`` (ascending), on one local multi-node
    cluster. ``progress`` hears of the hosts started and the runs (the fleet's live table
    stays off: it polls every agent, which would be timed too)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray.cluster_utils import Cluster

    sizes = sorted({hosts} if isinstance(hosts, int) else set(hosts))
    if light:
        experiments = LIGHT["experiments"]
    boards = builtin_profile_names()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    started = 0
    try:
        def add(i):
            cluster.add_node(num_cpus=1, num_gpus=1, env_vars={
                "FLEETPHYSICS_SIMULATE": boards[i % len(boards)], "FLEETPHYSICS_HOST_ID": f"bench-host-{i:02d}"})
            progress("hosts started", i + 1, sizes[-1])

        runs = len(sizes) + 1
        progress("runs (1, then each size)", 0, runs)
        add(0)
        started = 1
        ray.init(address=cluster.address, log_to_driver=False)
        docs = []
        with tempfile.TemporaryDirectory(prefix="fleetphysics-bench-fleet-") as tmp:
            single_s, single = _timed_run(tmp, "single", preset, experiments, light)
            progress("runs (1, then each size)", 1, runs)
            docs.append(_size_doc(1, single_s, single_s, single))
            for k, n in enumerate(sizes):
                for i in range(started, n):
                    add(i)
                started = max(started, n)
                cluster.wait_for_nodes()
                try:
                    fleet_s, fleet = _timed_run(tmp, f"fleet-{n}", preset, experiments, light, hosts=n)
                except FleetPhysicsError as exc:  # the sizes measured so far still count
                    docs.append({"hosts": n, "error": str(exc)})
                    break
                finally:
                    progress("runs (1, then each size)", k + 2, runs)
                docs.append(_size_doc(n, fleet_s, single_s, fleet))
        # A run whose hosts failed (pollers that could not start on an overloaded machine) did
        # not do a fleet's work: its driver cost is no point on the per-host line.
        measured = [d for d in docs if d.get("run_state") == "completed"] or docs[:1]
        last = measured[-1]
        doc = {"hosts": last["devices_stored"], "wall_s": last["wall_s"], "single_host_wall_s": round(single_s, 2),
               "ratio": last["ratio"], "run_state": last["run_state"], "single_run_state": single["run_state"],
               "light": light, "sizes": docs}
        if len(measured) >= 3:
            doc["driver_fit"] = {k: per_host_fit(measured, k) for k in ("driver_cpu_s", "driver_ingest_s", "driver_rss_mib")}
        return doc
    finally:
        ray.shutdown()
        cluster.shutdown()


def cmd_bench_fleet(args) -> int:
    """Print the benchmark."""
    from experiments.presets import check_preset
    from experiments.suite import parse_experiments

    check_preset(args.preset)
    sizes = list(args.hosts)
    with progress_bars() as report:
        doc = run_bench(sizes, args.preset, parse_experiments(args.experiments) if args.experiments else None,
                        progress=report, light=args.light)
    print(json.dumps(doc, indent=2) if args.json else doc)
    return 0
