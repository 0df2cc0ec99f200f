"""The fleet verdict against a warehouse file: judge a run (read-only) and store it.

``judge_run`` reads the figures and applies :mod:`warehouse.verdict`; ``store_verdict``
replaces the run's rows of ``fleet_verdicts`` in one transaction (the driver calls it when
a run ends, so ``v_fleet_verdict`` keeps the verdict given at the time).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from agents.errors import ConfigError

from .connection import connect_writer, readonly
from .verdict import judge
from .verdict_data import load_figures, run_ids


def judge_run(path: str | os.PathLike, run_id: str | None = None) -> dict:
    """The verdict of ``run_id`` (default: the latest run) from the warehouse at ``path``."""
    with readonly(path) as con:
        if run_id is not None and run_id not in run_ids(con):
            raise ConfigError(f"--run {run_id}: no such run in {path}; list runs with "
                              "`fleetphysics sql \"SELECT run_id FROM runs\"`")
        df, judged = load_figures(con, run_id)
    if judged is None:
        raise ConfigError(f"{path}: no runs to judge yet; run `fleetphysics run` or `fleetphysics ingest DIR` first")
    return judge(df, judged)


def store_verdict(path: str | os.PathLike, verdict: dict) -> int:
    """Replace the stored verdict of ``verdict['run_id']``; returns the rows written."""
    rows = [d for d in verdict["devices"] if d.get("device_uid")]
    if verdict.get("run_id") is None:
        return 0
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    con = connect_writer(path)
    try:
        con.execute("BEGIN")
        con.execute("DELETE FROM fleet_verdicts WHERE run_id = ?", [verdict["run_id"]])
        for d in rows:
            con.execute("INSERT INTO fleet_verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [verdict["run_id"], d["device_uid"], d.get("host"), d.get("gpu_name"), bool(d.get("simulated")),
                         d["verdict"], json.dumps(d["reasons"]), json.dumps(d["outliers"]), d.get("n_peers"), now])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return len(rows)


def with_missing_hosts(verdict: dict, hosts: dict) -> dict:
    """Add a not_ready entry for every host of a fleet run that ended lost or failed
    without a device in the warehouse (``hosts``: the run summary's {host: {state, reason}})."""
    seen = {d.get("host") for d in verdict["devices"]}
    extra = []
    for host, h in sorted(hosts.items()):
        if h.get("state") in ("lost", "failed") and host not in seen:
            word = "lost" if h["state"] == "lost" else "failed"
            extra.append({"host": host, "device_uid": None, "gpu_name": None, "simulated": None, "verdict": "not_ready",
                          "reasons": [f"host {word} during the run, nothing of it in the warehouse"
                                      + (f": {h['reason']}" if h.get("reason") else "")],
                          "outliers": [], "drift": [], "n_peers": 0})
    return {**verdict, "devices": extra + verdict["devices"]}
