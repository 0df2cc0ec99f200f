"""The fleet verdict against a warehouse file: judge a run (read-only) and store it.

``judge_run`` reads the figures and applies :mod:`warehouse.verdict`, then the run's hosts
(``run_hosts``: a lost or failed host is not ready, even one that left nothing); ``store_verdict``
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
    """The verdict of ``run_id`` (default: the latest run) from the warehouse at ``path``,
    with every lost or failed host of the run's ``run_hosts`` as not ready."""
    with readonly(path) as con:
        known = run_ids(con)
        if run_id is not None and run_id not in known:
            raise ConfigError(f"--run {run_id}: no such run in {path}; list runs with "
                              "`fleetphysics sql \"SELECT run_id FROM runs\"`")
        df, judged = load_figures(con, run_id)
        if judged is None and known:  # runs whose hosts all left nothing: judge the latest
            judged = known[0]
        hosts = run_hosts(con, judged) if judged is not None else {}
    if judged is None:
        raise ConfigError(f"{path}: no runs to judge yet; run `fleetphysics run` or `fleetphysics ingest DIR` first")
    return with_missing_hosts(judge(df, judged), hosts)


def run_hosts(con, run_id: str) -> dict:
    """``{host: {state, reason}}`` of ``run_id`` from ``run_hosts`` (empty for a run no
    fleet driver summed up: ingested from artifact dirs or imported)."""
    rows = con.execute("SELECT host, state, reason FROM run_hosts WHERE run_id = ? ORDER BY host", [run_id]).fetchall()
    return {host: {"state": state, "reason": reason} for host, state, reason in rows}


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
    """Every host of the run that ended lost or failed is not ready (``hosts``: {host:
    {state, reason}}, from ``run_hosts`` or the run summary; done and skipped hosts change
    nothing): one entry with its reason when it left no device in the warehouse, else its
    stored devices become not_ready with the reason added. Applying it twice changes nothing."""
    devices = [dict(d) for d in verdict["devices"]]
    extra = []
    for host, h in sorted(hosts.items()):
        if h.get("state") not in ("lost", "failed"):
            continue
        word = "lost" if h["state"] == "lost" else "failed"
        mine = [d for d in devices if d.get("host") == host]
        if not mine:
            extra.append({"host": host, "device_uid": None, "gpu_name": None, "simulated": None, "verdict": "not_ready",
                          "reasons": [f"host {word} during the run, nothing of it in the warehouse"
                                      + (f": {h['reason']}" if h.get("reason") else "")],
                          "outliers": [], "drift": [], "n_peers": 0})
        for d in mine:
            if not any(r.startswith(f"host {word} during the run") for r in d["reasons"]):
                d["reasons"] = [f"host {word} during the run, its figures may be partial"
                                + (f": {h['reason']}" if h.get("reason") else "")] + list(d["reasons"])
            d["verdict"] = "not_ready"
    rank = {"not_ready": 0, "caution": 1, "ready": 2}
    devices.sort(key=lambda d: rank[d["verdict"]])  # stable: the judged order within a level stays
    return {**verdict, "devices": extra + devices}
