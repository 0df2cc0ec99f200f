"""`fleetphysics run` (the fleet job, embedded or on a cluster) and `fleetphysics submit`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Where a submitted job writes when its arguments do not say: absolute on the node that runs
# the job's driver (Ray runs the entrypoint through a shell there, which expands the ~).
SUBMIT_DEFAULTS = {"--warehouse": "~/fleetphysics/fleet.duckdb", "--out": "~/fleetphysics/runs"}
SUBMIT_EXCLUDES = [".venv", ".git", "runs", "*.duckdb", "*.duckdb.wal", "test-artifacts", "__pycache__", ".pytest_cache"]


def register(sub) -> None:
    """Add the fleet commands."""
    from cluster.job import build_parser

    p = sub.add_parser("run", help="characterize every GPU host of a Ray cluster (default: the embedded local one)")
    build_parser(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("submit", help="submit the fleet job to a Ray cluster with `ray job submit` semantics")
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://127.0.0.1:8265")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("job_args", nargs="*", help="arguments for `python -m cluster.job` (after --)")
    p.set_defaults(func=cmd_submit)


def _cmd_run(args) -> int:
    from cluster.job import cmd_run

    return cmd_run(args)


def submit_with_retry(client, entrypoint: str, runtime_env: dict, timeout_s: float = 90.0) -> str:
    """Submit, waiting for the head's job agent: right after `ray start` it answers
    'No available agent to submit job' for a while."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def job_arguments(job_args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The job's arguments with the absolute defaults added, and where its results go."""
    args = list(job_args)
    where = {}
    for flag, default in SUBMIT_DEFAULTS.items():
        given = next((a.split("=", 1)[1] for a in args if a.startswith(flag + "=")), None)
        if given is None and flag in args[:-1]:
            given = args[args.index(flag) + 1]
        if given is None:
            args += [flag, default]
        where[flag.lstrip("-")] = given or default
    return args, where


def cmd_submit(args) -> int:
    """Submit `python -m cluster.job ARGS` with the project as working_dir and follow the logs."""
    from agents.errors import ConfigError

    try:
        from ray.job_submission import JobStatus, JobSubmissionClient
    except ImportError:  # pragma: no cover - ray[default] is a dependency
        raise ConfigError("ray[default] is needed for submit: pip install 'ray[default]'") from None
    try:
        client = JobSubmissionClient(args.address)
    except Exception as exc:  # noqa: BLE001 - connection and auth errors from Ray
        text = str(exc)
        hint = ("set RAY_AUTH_TOKEN (or copy ~/.ray/auth_token from the head) with RAY_AUTH_MODE=token"
                if "auth" in text.lower() or "token" in text.lower() or "401" in text else "check the dashboard address")
        raise ConfigError(f"--address {args.address}: cannot reach the Ray job server; {hint}") from None
    job_args, where = job_arguments(args.job_args)
    entrypoint = " ".join(["python", "-m", "cluster.job", *job_args])
    job_id = submit_with_retry(client, entrypoint, {"working_dir": str(PROJECT_ROOT), "excludes": SUBMIT_EXCLUDES})
    print(json.dumps({"job_id": job_id, "entrypoint": entrypoint}), file=sys.stderr)
    if args.no_wait:
        print(job_id)
        return 0
    import asyncio

    async def follow():
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)

    asyncio.run(follow())
    status = client.get_job_status(job_id)
    _say_where(client, job_id, where)
    return 0 if status == JobStatus.SUCCEEDED else 1


def _say_where(client, job_id: str, where: dict) -> None:
    """One line: on which node the results are, and how to read them there."""
    try:
        node = client.get_job_info(job_id).driver_node_id or "?"
    except Exception:  # noqa: BLE001 - the line is a courtesy; the job's own log names the paths too
        node = "?"
    print(f"results: warehouse {where['warehouse']} and artifacts {where['out']} on the node that ran the job's "
          f"driver (node {node[:8]}; the job's log above prints them as absolute paths); read them there with "
          f"fleetphysics sql --warehouse {where['warehouse']} \"SELECT run_id, run_state FROM runs\"", file=sys.stderr)
