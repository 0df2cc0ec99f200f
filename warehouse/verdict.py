"""Fleet verdict: which devices to trust, which are off and why (pure functions).

Input: one row per run x device with the figures of :data:`FIGURE_COLUMNS` (a DataFrame,
as :func:`warehouse.verdict_data.load_figures` reads it from the warehouse, or any table a
test renders). Output: per device of the judged run a verdict ``ready | caution | not_ready``
with plain reasons, from three sources, each written down in the README ("Fleet verdict"):

* the device's own rules (:func:`device_rules`): fake idle, throttling, equilibrium, sensor
  speed against the events, energy counter, read errors, poller quality, lost/failed host;
* its peers (:func:`peer_outliers`): a robust z of every figure of :data:`FIGURES` against
  the other devices of its comparability group (median, MAD * 1.4826, the MAD floored by
  the figures' own uncertainty and resolution), with at least :data:`MIN_PEERS` peers;
* its own history (:func:`history_drift`): the same robust z against its earlier runs.

No I/O here: the warehouse, the CLI, the driver's ``--gate`` and the dashboard all call
:func:`judge` on a table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

READY, CAUTION, NOT_READY = "ready", "caution", "not_ready"
LEVELS = (READY, CAUTION, NOT_READY)

MIN_PEERS = 4  # other devices of the same comparability group needed for a peer comparison
MIN_HISTORY = 1  # earlier runs of the same device needed for a drift check
MAD_SCALE = 1.4826  # MAD of a normal sample * this = its standard deviation
Z_OUTLIER = 5.0  # |robust z| at or above this: an outlier (caution)
Z_SEVERE = 10.0  # |robust z| at or above this: not_ready
Z_DRIFT = 5.0  # |z| against the device's own history at or above this: drift (caution)
READ_ERROR_CAUTION = 0.01  # failed reads above this fraction of the trace: caution
READ_ERROR_NOT_READY = 0.05  # ... above this: not_ready
DROPPED_CAUTION = 0.01  # poller ticks dropped above this fraction: caution
EVENT_SENSOR_RATIO = 4.0  # an event shorter than this many sensor updates (or windows) is too short

# Throttle bits (nvmlClocksEventReason*): which level each one earns when seen.
THROTTLE_BITS = {
    0x4: ("sw_power_cap", CAUTION),
    0x8: ("hw_slowdown", NOT_READY),
    0x20: ("sw_thermal_slowdown", CAUTION),
    0x40: ("hw_thermal_slowdown", NOT_READY),
    0x80: ("hw_power_brake_slowdown", NOT_READY),
}


@dataclass(frozen=True)
class Figure:
    """A figure compared with peers and history.

    ``se``: the column holding the figure's own standard error (or None); ``abs_floor`` and
    ``rel_floor``: the smallest spread believed (resolution of the figure: whole degrees,
    probing steps, the poller grid), absolute and relative to the peers' median.
    """

    column: str
    words: str
    unit: str
    se: str | None = None
    abs_floor: float = 0.0
    rel_floor: float = 0.01
    digits: int = 1


FIGURES = (
    Figure("idle_power_w", "idles", "W", "idle_power_se_w", abs_floor=0.5, rel_floor=0.01),
    Figure("floor_fraction", "reads the idle floor", "", "floor_fraction_se", abs_floor=0.02, rel_floor=0.0,
           digits=2),
    Figure("idle_temp_c", "idles", "°C", None, abs_floor=1.0, rel_floor=0.0),
    Figure("load_power_w", "draws under full load", "W", None, abs_floor=2.0, rel_floor=0.01, digits=0),
    # Units of one board differ in their cooling by a few percent: the thermal figures'
    # floors are that spread, not the fit's (much smaller) standard error.
    Figure("tau_s", "has a thermal time constant", "s", "tau_se_s", abs_floor=1.0, rel_floor=0.05, digits=0),
    Figure("t_inf_c", "settles under load at", "°C", "t_inf_se_c", abs_floor=1.0, rel_floor=0.0),
    Figure("thermal_resistance_c_per_w", "has a thermal resistance", "°C/W", "thermal_resistance_se_c_per_w",
           abs_floor=0.0, rel_floor=0.03, digits=4),
    Figure("update_period_ms", "updates its power sensor every", "ms", "update_period_se_ms", abs_floor=2.0,
           rel_floor=0.02, digits=0),
    Figure("rise_ms", "has a sensor rise time", "ms", "rise_se_ms", abs_floor=5.0, rel_floor=0.05, digits=0),
    Figure("window_ms", "has a sensor window", "ms", "window_se_ms", abs_floor=5.0, rel_floor=0.05, digits=0),
    Figure("j_per_token", "spends per token", "J", "j_per_token_se", abs_floor=0.0, rel_floor=0.02, digits=3),
    Figure("vram_cliff_tokens", "fits a context of", "tokens", None, abs_floor=256.0, rel_floor=0.01, digits=0),
)
FIGURE_BY_COLUMN = {f.column: f for f in FIGURES}

# Every column :func:`judge` reads (missing ones count as unknown, never as a fault).
FIGURE_COLUMNS = (
    "run_id", "device_uid", "host", "gpu_name", "simulated", "peer_group", "started_wall_ns",
    "run_state", "end_reason", "lost_reason", "run_quality", "scheduling_quality", "continuity_quality",
    "fake_idle", "fake_idle_reasons", "idle_quality", "read_error_fraction", "dropped_fraction",
    "lateness_p99_ms", "throttle", "equilibrium", "equilibrium_kind", "time_to_equilibrium_s",
    "has_energy_counter", "event_median_ms", "sensor_update_period_ms", "sensor_window_ms",
) + tuple(f.column for f in FIGURES) + tuple(f.se for f in FIGURES if f.se)


# ------------------------------------------------------------------ small helpers

def _num(value) -> float | None:
    """A finite float, else None (NaN, None, pd.NA and strings are unknown)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _get(row, key):
    value = row.get(key) if hasattr(row, "get") else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _fmt(value: float, digits: int) -> str:
    if digits <= 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def worst(levels) -> str:
    """The worst of verdict levels (ready when none)."""
    rank = {lvl: i for i, lvl in enumerate(LEVELS)}
    return max(levels, key=lambda lvl: rank[lvl], default=READY)


def robust_z(value: float, others: list[float], floor: float = 0.0, own_se: float = 0.0) -> tuple[float, float, float]:
    """(z, median, sigma) of ``value`` against ``others``.

    ``sigma`` is MAD * 1.4826 of the others, raised to ``floor`` (the spread the figure's
    own uncertainty and resolution allow); the value's own standard error widens it in
    quadrature. A spread of zero with a zero floor gives z = 0 when equal, else inf.
    """
    s = pd.Series(others, dtype=float)
    med = float(s.median())
    mad = float((s - med).abs().median()) * MAD_SCALE
    sigma = max(mad, floor)
    scale = math.hypot(sigma, own_se or 0.0)
    diff = value - med
    if scale == 0:
        return (0.0 if diff == 0 else math.copysign(math.inf, diff)), med, sigma
    return diff / scale, med, sigma


def _floor(fig: Figure, rows: list, median: float) -> float:
    """The spread floor of a figure: its resolution, and the median of the rows' own SE."""
    floor = max(fig.abs_floor, fig.rel_floor * abs(median))
    if fig.se:
        ses = [x for x in (_num(_get(r, fig.se)) for r in rows) if x is not None]
        if ses:
            floor = max(floor, float(pd.Series(ses).median()))
    return floor


# ------------------------------------------------------------------ the device's own rules

def _throttle_items(value) -> list[dict]:
    if value is None:
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    return [dict(v) for v in value]


def device_rules(row) -> list[tuple[str, str]]:
    """(level, reason) of every own rule that fires for one run x device row."""
    out: list[tuple[str, str]] = []
    state = _get(row, "run_state")
    lost_reason = _get(row, "lost_reason")
    if state in ("lost", "aborted"):
        word = "lost" if state == "lost" else "failed"
        out.append((NOT_READY, f"host {word} during the run" + (f": {lost_reason}" if lost_reason else "")))
    elif state in ("partial", "timeout"):
        out.append((CAUTION, f"run ended {state} ({_get(row, 'end_reason') or 'no reason recorded'})"))

    if _get(row, "fake_idle") is True or _get(row, "fake_idle") == 1:
        why = _get(row, "fake_idle_reasons")
        if isinstance(why, str) and why.startswith("["):
            why = json.loads(why)
        why = "; ".join(why) if isinstance(why, (list, tuple)) and why else None
        out.append((NOT_READY, "fake idle: the idle baseline was not idle" + (f" ({why})" if why else "")))
    idle_quality = _get(row, "idle_quality")
    if idle_quality == "no_data":
        out.append((NOT_READY, "no idle baseline (no power readings in its window)"))
    elif idle_quality == "gappy":
        out.append((CAUTION, "idle baseline is gappy (read errors or gaps above 5 % of its window)"))

    by_bit: dict[int, float] = {}
    for item in _throttle_items(_get(row, "throttle")):
        bits, dur = int(item.get("reasons") or 0), float(item.get("duration_s") or 0.0)
        for bit in THROTTLE_BITS:
            if bits & bit:
                by_bit[bit] = by_bit.get(bit, 0.0) + dur
    for bit, seconds in sorted(by_bit.items()):
        name, level = THROTTLE_BITS[bit]
        out.append((level, f"throttling seen: {name} (0x{bit:x}) for {seconds:,.1f} s"))

    eq, kind = _get(row, "equilibrium"), _get(row, "equilibrium_kind")
    warm = _num(_get(row, "time_to_equilibrium_s"))
    tau = _num(_get(row, "tau_s"))
    if eq is False or eq == 0:
        if kind == "predicted" and warm is not None:
            tail = f" (tau {tau:,.0f} s)" if tau is not None else ""
            out.append((CAUTION, f"thermal equilibrium not reached in the run: the fit says warm up "
                                 f"{warm:,.0f} s before measuring{tail}"))
        else:
            out.append((CAUTION, "thermal equilibrium not reached and not assessable (no usable fit)"))

    counter = _get(row, "has_energy_counter")
    event_ms = _num(_get(row, "event_median_ms"))
    upd, win = _num(_get(row, "sensor_update_period_ms")), _num(_get(row, "sensor_window_ms"))
    slow = None
    if event_ms is not None and (upd is not None or win is not None):
        worst_ms = max(x for x in (upd, win) if x is not None)
        if event_ms < EVENT_SENSOR_RATIO * worst_ms:
            parts = [f"updates every {_fmt(upd, 0)} ms" if upd is not None else None,
                     f"averages over {_fmt(win, 0)} ms" if win is not None else None]
            slow = (f"power sensor too slow for the events: it {' and '.join(p for p in parts if p)}, the median "
                    f"event lasts {_fmt(event_ms, 0)} ms (needs {EVENT_SENSOR_RATIO:g}x the slower of the two)")
    if counter is False or counter == 0:
        if slow:
            out.append((NOT_READY, slow + ", and there is no energy counter to fall back on"))
        else:
            out.append((CAUTION, "no energy counter: energy is integrated from power readings"))
    elif slow:
        out.append((CAUTION, slow + " (energy comes from the energy counter)"))

    errors = _num(_get(row, "read_error_fraction"))
    if errors is not None and errors > READ_ERROR_CAUTION:
        level = NOT_READY if errors > READ_ERROR_NOT_READY else CAUTION
        limit = READ_ERROR_NOT_READY if level == NOT_READY else READ_ERROR_CAUTION
        out.append((level, f"read errors: {100 * errors:.1f} % of reads failed (above {100 * limit:g} %)"))

    dropped = _num(_get(row, "dropped_fraction"))
    if _get(row, "scheduling_quality") == "degraded":
        p99 = _num(_get(row, "lateness_p99_ms"))
        out.append((CAUTION, "poller scheduling degraded" + (f" (lateness p99 {p99:.1f} ms)" if p99 is not None else "")))
    if dropped is not None and dropped > DROPPED_CAUTION:
        out.append((CAUTION, f"poller dropped {100 * dropped:.1f} % of its ticks (above {100 * DROPPED_CAUTION:g} %)"))
    elif _get(row, "continuity_quality") == "degraded":
        out.append((CAUTION, "poller continuity degraded (gaps in the trace)"))
    return out


# ------------------------------------------------------------------ peers and history

def _outlier_reason(fig: Figure, value: float, median: float, z: float, n: int, against: str) -> str:
    diff = value - median
    if fig.column == "floor_fraction":
        return (f"reads the idle floor {100 * value:.0f} % of the time against {100 * median:.0f} % "
                f"for {against} (z {z:+.1f})")
    direction = "above" if diff > 0 else "below"
    unit = f" {fig.unit}" if fig.unit else ""
    return (f"{fig.words} {_fmt(abs(diff), fig.digits)}{unit} {direction} {against} "
            f"({_fmt(value, fig.digits)}{unit} against a median of {_fmt(median, fig.digits)}{unit}, z {z:+.1f})")


def peer_outliers(row, peers: list) -> list[dict]:
    """Figures of ``row`` that stand out from its ``peers`` (other devices of its group).

    Each: {figure, value, peer_median, robust_z, n_peers, level, reason}; a figure is
    compared only when at least MIN_PEERS peers have it.
    """
    out = []
    for fig in FIGURES:
        value = _num(_get(row, fig.column))
        if value is None:
            continue
        have = [p for p in peers if _num(_get(p, fig.column)) is not None]
        if len(have) < MIN_PEERS:
            continue
        others = [_num(_get(p, fig.column)) for p in have]
        med = float(pd.Series(others).median())
        z, med, _ = robust_z(value, others, _floor(fig, have + [row], med), _num(_get(row, fig.se)) if fig.se else 0.0)
        if abs(z) >= Z_OUTLIER:
            level = NOT_READY if abs(z) >= Z_SEVERE else CAUTION
            zr = _finite_z(z)
            out.append({"figure": fig.column, "value": value, "peer_median": med, "robust_z": zr,
                        "n_peers": len(have), "level": level,
                        "reason": _outlier_reason(fig, value, med, zr, len(have), f"its {len(have)} peers")})
    return out


def _finite_z(z: float) -> float:
    return round(z, 1) if math.isfinite(z) else (999.0 if z > 0 else -999.0)


def history_drift(row, history: list) -> list[dict]:
    """Figures of ``row`` that moved beyond their uncertainty from the same device's
    earlier runs (``history``). Each: {figure, value, history_median, robust_z, n_runs,
    level, reason}."""
    out = []
    for fig in FIGURES:
        value = _num(_get(row, fig.column))
        if value is None:
            continue
        have = [h for h in history if _num(_get(h, fig.column)) is not None]
        if len(have) < MIN_HISTORY:
            continue
        earlier = [_num(_get(h, fig.column)) for h in have]
        med = float(pd.Series(earlier).median())
        floor = _floor(fig, have + [row], med)
        z, med, _ = robust_z(value, earlier, floor, _num(_get(row, fig.se)) if fig.se else 0.0)
        if abs(z) >= Z_DRIFT:
            zr = _finite_z(z)
            runs = f"its own {len(have)} earlier run" + ("s" if len(have) > 1 else "")
            out.append({"figure": fig.column, "value": value, "history_median": med, "robust_z": zr,
                        "n_runs": len(have), "level": CAUTION,
                        "reason": "drift: " + _outlier_reason(fig, value, med, zr, len(have), runs)})
    return out


# ------------------------------------------------------------------ the whole judgement

def _records(df: pd.DataFrame) -> list[dict]:
    cols = [c for c in df.columns]
    return [dict(zip(cols, vals)) for vals in df.itertuples(index=False, name=None)]


def _group_of(row) -> str:
    group = _get(row, "peer_group") or _get(row, "gpu_name") or "unknown"
    return f"{group}|{bool(_get(row, 'simulated'))}"


def judge_device(row, peers: list, history: list) -> dict:
    """The verdict of one device: own rules, then peers, then history."""
    own = device_rules(row)
    outliers = peer_outliers(row, peers)
    drift = history_drift(row, history)
    levels = [lvl for lvl, _ in own] + [o["level"] for o in outliers] + [d["level"] for d in drift]
    reasons = [r for _, r in own] + [o["reason"] for o in outliers] + [d["reason"] for d in drift]
    return {
        "run_id": _get(row, "run_id"), "host": _get(row, "host"), "device_uid": _get(row, "device_uid"),
        "gpu_name": _get(row, "gpu_name"), "simulated": bool(_get(row, "simulated")),
        "peer_group": _get(row, "peer_group"), "verdict": worst(levels), "reasons": reasons,
        "outliers": [{k: o[k] for k in ("figure", "value", "peer_median", "robust_z", "n_peers")} for o in outliers],
        "drift": [{k: d[k] for k in ("figure", "value", "history_median", "robust_z", "n_runs")} for d in drift],
        "n_peers": len(peers),
    }


def latest_run(df: pd.DataFrame) -> str | None:
    """The run judged by default: the one that started last."""
    if df.empty:
        return None
    order = df.sort_values(["started_wall_ns", "run_id"], na_position="first")
    return str(order["run_id"].iloc[-1])


def judge(df: pd.DataFrame, run_id: str | None = None) -> dict:
    """Verdicts of every device of ``run_id`` (default: the latest run) against its peers
    and its history, from a table of run x device rows (:data:`FIGURE_COLUMNS`).

    Peers: every other device_uid of the same comparability group (and simulated flag):
    its row in the judged run, else its latest row that started no later than the run.
    History: the device's own rows that started before the judged run, same group.
    Returns {"run_id", "devices": [...]} with the suspects first (not_ready, caution,
    then by their largest |z|).
    """
    if run_id is None:
        run_id = latest_run(df)
    rows = _records(df)
    judged = [r for r in rows if r.get("run_id") == run_id]
    if not judged:
        return {"run_id": run_id, "devices": []}
    starts = [_num(_get(r, "started_wall_ns")) for r in judged]
    run_start = max((s for s in starts if s is not None), default=None)
    in_run = {r["device_uid"] for r in judged}
    pool: dict[str, dict] = {r["device_uid"]: r for r in judged}
    others = [r for r in rows if r["device_uid"] not in in_run]
    others.sort(key=lambda r: (_num(_get(r, "started_wall_ns")) or -math.inf, str(r.get("run_id"))))
    for r in others:
        s = _num(_get(r, "started_wall_ns"))
        if run_start is None or s is None or s <= run_start:
            pool[r["device_uid"]] = r  # later rows overwrite earlier ones: the latest stays
    devices = []
    for row in judged:
        group = _group_of(row)
        peers = [p for uid, p in pool.items() if uid != row["device_uid"] and _group_of(p) == group]
        own_start = _num(_get(row, "started_wall_ns"))
        history = [h for h in rows if h["device_uid"] == row["device_uid"] and h.get("run_id") != run_id
                   and _group_of(h) == group
                   and (own_start is None or (_num(_get(h, "started_wall_ns")) or math.inf) < own_start)]
        devices.append(judge_device(row, peers, history))
    rank = {NOT_READY: 0, CAUTION: 1, READY: 2}
    devices.sort(key=lambda d: (rank[d["verdict"]],
                                -max([abs(o["robust_z"]) for o in d["outliers"] + d["drift"]], default=0.0),
                                str(d["host"]), str(d["device_uid"])))
    return {"run_id": run_id, "devices": devices}


def exit_code(verdict: dict) -> int:
    """0 when no device is not_ready, 3 otherwise (`fleetphysics verdict`, `run --gate`)."""
    return 3 if any(d["verdict"] == NOT_READY for d in verdict["devices"]) else 0


def public(verdict: dict) -> dict:
    """The documented JSON: {run_id, devices: [{host, device_uid, gpu_name, simulated,
    verdict, reasons, outliers}]} (drift stays in the reasons)."""
    keys = ("host", "device_uid", "gpu_name", "simulated", "verdict", "reasons", "outliers")
    return {"run_id": verdict["run_id"], "devices": [{k: d[k] for k in keys} for d in verdict["devices"]]}
