"""The verdict's input table, read from the warehouse (one row per run x device).

:func:`load_figures` returns the columns :data:`warehouse.verdict.FIGURE_COLUMNS` names,
from ``v_run_constants`` and the typed tables: no analysis is recomputed. Derived here:

* ``thermal_resistance_c_per_w`` = (T_inf - idle temperature) / (load power - idle power),
  its SE = T_inf's SE / (load power - idle power) (the whole-degree idle temperature is
  the median of thousands of readings);
* ``floor_fraction_se``: binomial, over the sensor updates of the idle window;
* ``read_error_fraction`` = poller read errors / samples; ``dropped_fraction`` = dropped
  ticks / expected samples;
* the power field compared and used against the events: ``power_instant_w`` where the
  device has it, else ``power_w``;
* for the judged run only (they scan the trace): ``has_energy_counter`` (any non-null
  ``energy_j``) and ``event_median_ms`` (median event length).
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from experiments.contracts.catalog import spellings

from .query import fetch_arrow, to_frame


def _stored_as(name: str) -> str:
    """SQL list of the names experiment ``name`` is stored under (the catalog's spellings,
    lower-case identifiers that need no escaping)."""
    return ", ".join(f"'{s}'" for s in spellings(name))


_FIGURES_SQL = f"""
WITH
base AS (
    SELECT run_id, device_uid,
           max(TRY_CAST(json_extract(payload_json, '$.figures.idle_temp_c') AS DOUBLE)) AS idle_temp_c,
           max(json_extract(payload_json, '$.figures.fake_idle_reasons')::VARCHAR) AS fake_idle_reasons
    FROM experiment_results WHERE experiment IN ({_stored_as("baseline")})
    GROUP BY run_id, device_uid
),
win AS (
    SELECT run_id, device_uid, max(window_s) AS idle_window_s FROM baselines GROUP BY run_id, device_uid
),
soak AS (
    SELECT e.run_id, e.device_uid,
           max(TRY_CAST(json_extract(e.payload_json, '$.figures.tau_se_s') AS DOUBLE)) AS tau_se_s,
           max(TRY_CAST(json_extract(e.payload_json, '$.figures.t_inf_se_c') AS DOUBLE)) AS t_inf_se_c,
           max(h.power_mean_w) AS load_power_w
    FROM experiment_results e
    LEFT JOIN heat_soak h USING (run_id, device_uid)
    WHERE e.experiment IN ({_stored_as("heat_soak")})
    GROUP BY e.run_id, e.device_uid
),
thr AS (
    SELECT run_id, device_uid,
           to_json(list({{'reasons': reasons, 'duration_s': duration_s}} ORDER BY seq))::VARCHAR AS throttle
    FROM throttle_events GROUP BY run_id, device_uid
),
irx AS (
    -- the response figures' uncertainty: the spread of the steps, at least the timing
    -- resolution as a uniform error (rise: half a poll interval, and one update period, since
    -- where an edge falls between two updates moves the rise by up to one; window: half an
    -- update period)
    SELECT run_id, device_uid,
        CASE WHEN json_extract(payload_json, '$.figures.power_instant_w.update_period_ms') IS NOT NULL
             THEN 'power_instant_w' ELSE 'power_w' END AS f,
        json_extract(payload_json, '$.figures') AS figs
    FROM experiment_results WHERE experiment IN ({_stored_as("instrument_response")})
),
ir_se AS (
    SELECT run_id, device_uid,
        TRY_CAST(json_extract(figs, '$.' || f || '.update_period_se_ms') AS DOUBLE) AS update_period_se_ms,
        greatest(TRY_CAST(json_extract(figs, '$.' || f || '.rise_sem_ms') AS DOUBLE),
                 TRY_CAST(json_extract(figs, '$.' || f || '.timing_resolution_ms') AS DOUBLE) / sqrt(3),
                 TRY_CAST(json_extract(figs, '$.' || f || '.update_period_ms') AS DOUBLE) / sqrt(12)) AS rise_se_ms,
        greatest(TRY_CAST(json_extract(figs, '$.' || f || '.window_sem_ms') AS DOUBLE),
                 TRY_CAST(json_extract(figs, '$.' || f || '.update_period_ms') AS DOUBLE) / 2 / sqrt(3)) AS window_se_ms
    FROM irx
),
jse AS (
    SELECT c.run_id, c.device_uid, c.phase, max(c.j_per_token_sem) AS j_per_token_se
    FROM joule_curve c WHERE c.batch_size = 1 GROUP BY c.run_id, c.device_uid, c.phase
)
SELECT
    c.run_id, c.device_uid, c.host, c.gpu_name, c.simulated,
    coalesce(c.comparability_key, c.gpu_name) AS peer_group, c.started_wall_ns,
    c.run_state, c.end_reason,
    json_extract_string(rd.checks_json, '$.lost_reason') AS lost_reason,
    c.run_quality, c.scheduling_quality, c.continuity_quality,
    c.fake_idle, base.fake_idle_reasons, c.idle_quality,
    ps.read_errors / nullif(ps.samples, 0) AS read_error_fraction,
    ps.dropped_ticks / nullif(ps.expected_samples, 0) AS dropped_fraction,
    ps.lateness_p99_ms,
    thr.throttle, c.equilibrium, c.equilibrium_kind, c.time_to_equilibrium_s,
    c.idle_robust_w AS idle_power_w, c.idle_sem_w AS idle_power_se_w, c.floor_fraction,
    -- binomial SE over the sensor updates in the idle window (p at least 1/n: zero floor
    -- readings out of n updates still leave ~1/n unknown)
    sqrt(greatest(c.floor_fraction * (1 - c.floor_fraction), n_upd.n / (n_upd.n * n_upd.n)) / n_upd.n)
        AS floor_fraction_se,
    base.idle_temp_c,
    soak.load_power_w, c.tau_s, soak.tau_se_s, c.t_inf_c, soak.t_inf_se_c,
    (c.t_inf_c - base.idle_temp_c) / nullif(soak.load_power_w - c.idle_robust_w, 0) AS thermal_resistance_c_per_w,
    soak.t_inf_se_c / nullif(soak.load_power_w - c.idle_robust_w, 0) AS thermal_resistance_se_c_per_w,
    coalesce(c.power_instant_w_update_period_ms, c.power_w_update_period_ms) AS update_period_ms,
    coalesce(c.power_instant_w_rise_ms, c.power_w_rise_ms) AS rise_ms,
    coalesce(c.power_instant_w_window_ms, c.power_w_window_ms) AS window_ms,
    ir_se.update_period_se_ms, ir_se.rise_se_ms, ir_se.window_se_ms,
    coalesce(c.power_instant_w_update_period_ms, c.power_w_update_period_ms) AS sensor_update_period_ms,
    coalesce(c.power_instant_w_window_ms, c.power_w_window_ms) AS sensor_window_ms,
    c.j_per_token_batch1 AS j_per_token, jse.j_per_token_se,
    CAST(c.vram_max_context_batch1 AS DOUBLE) AS vram_cliff_tokens,
    rd.trace_key
FROM v_run_constants c
JOIN run_devices rd ON rd.run_id = c.run_id AND rd.device_uid = c.device_uid
LEFT JOIN poller_stats ps ON ps.run_id = c.run_id AND ps.device_uid = c.device_uid
LEFT JOIN base ON base.run_id = c.run_id AND base.device_uid = c.device_uid
LEFT JOIN win ON win.run_id = c.run_id AND win.device_uid = c.device_uid
LEFT JOIN LATERAL (SELECT greatest(win.idle_window_s * 1000.0
                                   / coalesce(c.power_w_update_period_ms, c.power_instant_w_update_period_ms), 1.0)
                   AS n) n_upd ON TRUE
LEFT JOIN soak ON soak.run_id = c.run_id AND soak.device_uid = c.device_uid
LEFT JOIN thr ON thr.run_id = c.run_id AND thr.device_uid = c.device_uid
LEFT JOIN ir_se ON ir_se.run_id = c.run_id AND ir_se.device_uid = c.device_uid
LEFT JOIN jse ON jse.run_id = c.run_id AND jse.device_uid = c.device_uid AND jse.phase = c.joule_phase
"""

# The trace keys go in as literals so DuckDB skips the other runs' row groups by their zone
# maps instead of joining the whole trace table.
_TRACE_SQL = """
SELECT trace_key, count(energy_j) > 0 AS has_energy_counter
FROM power_trace WHERE trace_key IN ({keys})
GROUP BY trace_key
"""

_EVENTS_SQL = """
SELECT device_uid, median((t_end_ns - t_start_ns) / 1e6) AS event_median_ms
FROM events WHERE run_id = ? GROUP BY device_uid
"""


Fetch = Callable[[str, list | None], pd.DataFrame]


def connection_fetch(con) -> Fetch:
    """A fetch function over an open DuckDB connection (trusted internal SELECTs)."""
    return lambda sql, params: to_frame(fetch_arrow(con, sql, params))


def load_figures(source, run_id: str | None = None) -> tuple[pd.DataFrame, str | None]:
    """(every run x device row, the judged run id: ``run_id`` or the latest run).

    ``source``: an open connection, or a ``fetch(sql, params) -> DataFrame`` function (the
    dashboard passes its cached reader). The judged run's rows carry the trace facts
    (``has_energy_counter``, ``event_median_ms``); other rows leave them null.
    """
    from .verdict import latest_run

    fetch = source if callable(source) else connection_fetch(source)
    df = fetch(_FIGURES_SQL, None)
    if run_id is None:
        run_id = latest_run(df)
    df["has_energy_counter"] = pd.Series([None] * len(df), dtype=object)
    df["event_median_ms"] = float("nan")
    if run_id is not None and len(df):
        mine = df["run_id"] == run_id
        keys = ", ".join(str(int(k)) for k in df.loc[mine, "trace_key"])
        counter = fetch(_TRACE_SQL.format(keys=keys), None).set_index("trace_key")["has_energy_counter"]
        events = fetch(_EVENTS_SQL, [run_id]).set_index("device_uid")["event_median_ms"]
        df.loc[mine, "has_energy_counter"] = df.loc[mine, "trace_key"].map(lambda k: _bool(counter.get(k)))
        df.loc[mine, "event_median_ms"] = df.loc[mine, "device_uid"].map(events).astype(float)
    return df.drop(columns=["trace_key"]), run_id


def _bool(value):
    return None if value is None or pd.isna(value) else bool(value)


def run_ids(con) -> list[str]:
    """Every run id, latest first."""
    df = to_frame(fetch_arrow(con, "SELECT run_id FROM runs ORDER BY started_wall_ns DESC NULLS LAST, run_id DESC"))
    return list(df["run_id"])
