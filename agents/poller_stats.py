"""Poller statistics: a pure function of the rows' times, lateness and read flags.

Quality rules (TR122's, made explicit):
* ``scheduling_quality`` is ``strict`` when no tick was dropped and p99 lateness is at
  most 10 % of the period; else ``degraded``.
* ``continuity_quality`` is ``strict`` when the largest gap between rows of a device is at
  most 1.5 periods and at most 1 % of reads failed; else ``degraded``.
A gap is an interval between consecutive rows longer than 1.5 periods.
"""

from __future__ import annotations

import numpy as np

GAP_FACTOR = 1.5


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def poller_stats(
    period_ms: float,
    t_ns_by_device: dict[str, np.ndarray],
    lateness_ms: np.ndarray,
    read_ok_by_device: dict[str, np.ndarray],
    dropped_ticks: int,
    ticks: int,
    seconds: float,
) -> dict:
    """Statistics over one poller run (all devices of a host)."""
    period_ms = float(period_ms)
    dts = [np.diff(np.asarray(t, dtype=np.int64)) / 1e6 for t in t_ns_by_device.values() if len(t) > 1]
    dt = np.concatenate(dts) if dts else np.array([])
    late = np.asarray(lateness_ms, dtype=np.float64)
    n_devices = max(1, len(t_ns_by_device))
    samples = int(sum(len(t) for t in t_ns_by_device.values()))
    read_errors = int(sum(int((~np.asarray(ok, dtype=bool)).sum()) for ok in read_ok_by_device.values()))
    max_gap = float(dt.max()) if len(dt) else None
    gap_count = int((dt > GAP_FACTOR * period_ms).sum()) if len(dt) else 0
    edges = np.array([0, 0.5, 0.9, 0.99, 1.01, 1.1, 1.5, 2.0, 5.0, np.inf]) * period_ms
    hist, _ = np.histogram(dt, bins=edges) if len(dt) else (np.zeros(len(edges) - 1, dtype=int), None)
    p99_late = _pct(late, 99)
    scheduling = "strict" if dropped_ticks == 0 and (p99_late is None or p99_late <= 0.1 * period_ms) else "degraded"
    error_fraction = read_errors / samples if samples else 1.0
    continuity = (
        "strict"
        if samples and (max_gap is None or max_gap <= GAP_FACTOR * period_ms) and error_fraction <= 0.01
        else "degraded"
    )
    return {
        "period_ms": period_ms,
        "seconds": round(float(seconds), 3),
        "devices": len(t_ns_by_device),
        "ticks": int(ticks),
        "samples": samples,
        "expected_samples": int((ticks + dropped_ticks) * n_devices),
        "dropped_ticks": int(dropped_ticks),
        "read_errors": read_errors,
        "dt_ms": {"median": _round(_pct(dt, 50)), "p95": _round(_pct(dt, 95)), "p99": _round(_pct(dt, 99))},
        "lateness_ms": {"p50": _round(_pct(late, 50)), "p99": _round(p99_late), "max": _round(late.max() if len(late) else None)},
        "dt_histogram": {
            "edges_ms": [None if np.isinf(e) else round(float(e), 4) for e in edges],
            "counts": [int(c) for c in hist],
        },
        "max_gap_ms": _round(max_gap),
        "gap_count": gap_count,
        "scheduling_quality": scheduling,
        "continuity_quality": continuity,
    }
