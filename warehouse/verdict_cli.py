"""`fleetphysics verdict [--run RUN_ID] [--warehouse PATH] [--json]`."""

from __future__ import annotations

import json

from .connection import default_warehouse

MARK = {"ready": "ready", "caution": "CAUTION", "not_ready": "NOT READY"}


def format_verdict(verdict: dict) -> str:
    """Plain text: one block per device, suspects first."""
    lines = [f"run {verdict['run_id']}: " + ", ".join(
        f"{sum(d['verdict'] == k for d in verdict['devices'])} {k}" for k in ("not_ready", "caution", "ready"))]
    for d in verdict["devices"]:
        sim = " (simulated)" if d.get("simulated") else ""
        lines.append(f"{MARK[d['verdict']]:<9}  {d.get('host')}  {d.get('device_uid') or '-'}  {d.get('gpu_name') or ''}{sim}")
        lines += [f"           - {r}" for r in d["reasons"]]
    return "\n".join(lines)


def _verdict(args) -> int:
    from .verdict import exit_code, public
    from .verdict_store import judge_run

    verdict = judge_run(args.warehouse, args.run)
    if args.json:
        print(json.dumps(public(verdict), indent=2, allow_nan=False))
    else:
        print(format_verdict(verdict))
    return exit_code(verdict)


def register(subparsers) -> None:
    """Add `verdict`."""
    p = subparsers.add_parser("verdict", help="which devices are ready to measure on, which are off and why "
                                              "(exit 3 when any is not ready)")
    p.add_argument("--run", default=None, metavar="RUN_ID", help="the run to judge (default: the latest)")
    p.add_argument("--warehouse", default=default_warehouse(), metavar="PATH",
                   help="warehouse file (default: $FLEETPHYSICS_WAREHOUSE, else ./fleet.duckdb)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_verdict)
