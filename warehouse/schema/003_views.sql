-- 003_views: the views the dashboard and `fleetphysics sql` read.
-- A later migration that changes a view re-creates it with CREATE OR REPLACE VIEW.
-- Peer groups for the *_compare views: devices sharing a comparability_key (else the same
-- gpu_name) and the same simulated flag; a simulated device is never compared with a real one.

-- Every poller field with its run_id, device_uid and device_uuid joined back.
CREATE OR REPLACE VIEW v_power_trace AS
SELECT
    rd.run_id, rd.device_uid, pt.t_ns, pt.wall_ns, rd.device_uuid,
    pt.power_w, pt.power_instant_w, pt.energy_j, pt.temp_c, pt.sm_clock_mhz, pt.mem_clock_mhz,
    pt.util_gpu, pt.util_mem, pt.vram_used_mb, pt.clocks_event_reasons, pt.pstate, pt.read_ok,
    pt.dt_s, pt.lateness_ms, pt.power_avg_1s_w, rd.host, rd.clock, rd.source
FROM power_trace pt
JOIN run_devices rd USING (trace_key);

-- strict: completed with strict scheduling and continuity; degraded: partial, timed out or a
-- degraded poller; failed: aborted or lost; unknown: no poller statistics.
CREATE OR REPLACE VIEW v_run_quality AS
SELECT
    rd.run_id, rd.device_uid, rd.run_state, rd.end_reason,
    ps.scheduling_quality, ps.continuity_quality,
    CASE
        WHEN rd.run_state IN ('aborted', 'lost') THEN 'failed'
        WHEN rd.run_state IN ('partial', 'timeout')
             OR ps.scheduling_quality = 'degraded'
             OR ps.continuity_quality = 'degraded' THEN 'degraded'
        WHEN ps.run_id IS NULL THEN 'unknown'
        ELSE 'strict'
    END AS run_quality
FROM run_devices rd
LEFT JOIN poller_stats ps USING (run_id, device_uid);

-- One row per run x device with its key constants and their quality flags.
CREATE OR REPLACE VIEW v_run_constants AS
WITH
base AS (
    SELECT * FROM baselines
    QUALIFY row_number() OVER (PARTITION BY run_id, device_uid ORDER BY (field = 'power_w') DESC, field) = 1
),
ir AS (
    SELECT
        run_id, device_uid,
        max(update_period_ms) FILTER (WHERE field = 'power_w')         AS power_w_update_period_ms,
        max(rise_ms)          FILTER (WHERE field = 'power_w')         AS power_w_rise_ms,
        max(delay_ms)         FILTER (WHERE field = 'power_w')         AS power_w_delay_ms,
        max(window_ms)        FILTER (WHERE field = 'power_w')         AS power_w_window_ms,
        max(quality)          FILTER (WHERE field = 'power_w')         AS power_w_response_quality,
        max(update_period_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_update_period_ms,
        max(rise_ms)          FILTER (WHERE field = 'power_instant_w') AS power_instant_w_rise_ms,
        max(delay_ms)         FILTER (WHERE field = 'power_instant_w') AS power_instant_w_delay_ms,
        max(window_ms)        FILTER (WHERE field = 'power_instant_w') AS power_instant_w_window_ms,
        max(quality)          FILTER (WHERE field = 'power_instant_w') AS power_instant_w_response_quality,
        max(update_period_ms) FILTER (WHERE field = 'power_avg_1s_w')  AS power_avg_1s_w_update_period_ms,
        max(rise_ms)          FILTER (WHERE field = 'power_avg_1s_w')  AS power_avg_1s_w_rise_ms,
        max(delay_ms)         FILTER (WHERE field = 'power_avg_1s_w')  AS power_avg_1s_w_delay_ms,
        max(window_ms)        FILTER (WHERE field = 'power_avg_1s_w')  AS power_avg_1s_w_window_ms,
        max(quality)          FILTER (WHERE field = 'power_avg_1s_w')  AS power_avg_1s_w_response_quality
    FROM instrument_response
    GROUP BY run_id, device_uid
),
joule_phase AS (
    -- decode is the phase energy per generated token is read from; else the first phase.
    SELECT DISTINCT run_id, device_uid, phase FROM joule_curve
    QUALIFY row_number() OVER (PARTITION BY run_id, device_uid ORDER BY (phase = 'decode') DESC, phase) = 1
),
joule AS (
    SELECT
        c.run_id, c.device_uid, c.phase AS joule_phase,
        max(c.j_per_token)    FILTER (WHERE c.batch_size = 1) AS j_per_token_batch1,
        max(c.energy_quality) FILTER (WHERE c.batch_size = 1) AS j_per_token_batch1_quality,
        max(c.batch_size)                                     AS max_batch_size,
        arg_max(c.j_per_token, c.batch_size)                  AS j_per_token_max_batch,
        arg_max(c.energy_quality, c.batch_size)               AS j_per_token_max_batch_quality
    FROM joule_curve c
    JOIN joule_phase p USING (run_id, device_uid, phase)
    GROUP BY c.run_id, c.device_uid, c.phase
),
vram AS (
    -- The cliff per batch size: the largest context that fit before the out-of-memory error.
    SELECT
        run_id, device_uid,
        max(max_context)       FILTER (WHERE batch_size = 1) AS vram_max_context_batch1,
        max(peak_allocated_mb) FILTER (WHERE batch_size = 1) AS vram_cliff_peak_mb_batch1,
        max(batch_size)                                      AS vram_max_batch_size,
        arg_max(max_context, batch_size)                     AS vram_max_context_max_batch,
        max(cause)             FILTER (WHERE batch_size = 1) AS vram_cliff_cause_batch1
    FROM vram_cliff_points
    WHERE max_context > 0
    GROUP BY run_id, device_uid
),
throttle AS (
    SELECT run_id, device_uid, count(*) AS throttle_events, sum(duration_s) AS throttle_s,
           bool_or(thermal) AS thermal_throttled
    FROM throttle_events
    GROUP BY run_id, device_uid
)
SELECT
    rd.run_id, rd.device_uid, rd.fingerprint, rd.host, f.gpu_name,
    coalesce(f.comparability_key, f.gpu_name) AS peer_group, f.comparability_key,
    rd.simulated, rd.source, rd.clock, rd.started_wall_ns, rd.ended_wall_ns,
    rd.run_state, rd.end_reason, q.run_quality, q.scheduling_quality, q.continuity_quality,
    base.field AS idle_field, base.idle_robust_w, base.idle_sem_w, base.floor_fraction,
    base.fake_idle, base.quality AS idle_quality,
    ir.* EXCLUDE (run_id, device_uid),
    vc.capacity_mb AS vram_capacity_mb, vc.fragmentation AS vram_fragmentation,
    vram.* EXCLUDE (run_id, device_uid), vc.quality AS vram_cliff_quality,
    joule.* EXCLUDE (run_id, device_uid),
    hs.tau_s, hs.t_inf_c, hs.equilibrium, hs.equilibrium_kind, hs.time_to_equilibrium_s,
    hs.quality AS heat_soak_quality,
    coalesce(hs.throttled, FALSE) OR coalesce(throttle.throttle_events, 0) > 0 AS throttled,
    coalesce(throttle.throttle_events, 0) AS throttle_events,
    coalesce(throttle.throttle_s, 0.0) AS throttle_s,
    coalesce(throttle.thermal_throttled, FALSE) AS thermal_throttled,
    rd.trace_rows
FROM run_devices rd
LEFT JOIN fingerprints f ON f.fingerprint = rd.fingerprint
LEFT JOIN v_run_quality q ON q.run_id = rd.run_id AND q.device_uid = rd.device_uid
LEFT JOIN base ON base.run_id = rd.run_id AND base.device_uid = rd.device_uid
LEFT JOIN ir ON ir.run_id = rd.run_id AND ir.device_uid = rd.device_uid
LEFT JOIN vram_cliff vc ON vc.run_id = rd.run_id AND vc.device_uid = rd.device_uid
LEFT JOIN vram ON vram.run_id = rd.run_id AND vram.device_uid = rd.device_uid
LEFT JOIN joule ON joule.run_id = rd.run_id AND joule.device_uid = rd.device_uid
LEFT JOIN heat_soak hs ON hs.run_id = rd.run_id AND hs.device_uid = rd.device_uid
LEFT JOIN throttle ON throttle.run_id = rd.run_id AND throttle.device_uid = rd.device_uid;

-- Per device and fingerprint, the latest run's key constants.
CREATE OR REPLACE VIEW v_fleet_latest AS
SELECT * FROM v_run_constants
QUALIFY row_number() OVER (
    PARTITION BY device_uid, fingerprint
    ORDER BY started_wall_ns DESC NULLS LAST, run_id DESC
) = 1;

CREATE OR REPLACE VIEW v_baseline_compare AS
SELECT
    peer_group, gpu_name, simulated, device_uid, fingerprint, host, run_id,
    idle_field, idle_robust_w, idle_sem_w, floor_fraction, fake_idle, idle_quality, run_quality,
    count(*) OVER peers AS peers,
    quantile_cont(idle_robust_w, 0.5) OVER peers AS peer_median_idle_w,
    idle_robust_w - quantile_cont(idle_robust_w, 0.5) OVER peers AS delta_w,
    (idle_robust_w - quantile_cont(idle_robust_w, 0.5) OVER peers)
        / nullif(quantile_cont(idle_robust_w, 0.5) OVER peers, 0) AS delta_fraction,
    (idle_robust_w - quantile_cont(idle_robust_w, 0.5) OVER peers) / nullif(idle_sem_w, 0) AS delta_sem
FROM v_fleet_latest
WHERE idle_robust_w IS NOT NULL
WINDOW peers AS (PARTITION BY peer_group, simulated);

CREATE OR REPLACE VIEW v_equilibrium_compare AS
SELECT
    peer_group, gpu_name, simulated, device_uid, fingerprint, host, run_id,
    tau_s, t_inf_c, equilibrium, equilibrium_kind, time_to_equilibrium_s, throttled,
    thermal_throttled, throttle_s, heat_soak_quality, run_quality,
    count(*) OVER peers AS peers,
    quantile_cont(t_inf_c, 0.5) OVER peers AS peer_median_t_inf_c,
    t_inf_c - quantile_cont(t_inf_c, 0.5) OVER peers AS delta_t_inf_c,
    quantile_cont(tau_s, 0.5) OVER peers AS peer_median_tau_s,
    tau_s / nullif(quantile_cont(tau_s, 0.5) OVER peers, 0) AS tau_ratio
FROM v_fleet_latest
WHERE t_inf_c IS NOT NULL OR tau_s IS NOT NULL
WINDOW peers AS (PARTITION BY peer_group, simulated);

CREATE OR REPLACE VIEW v_vram_cliff_compare AS
SELECT
    peer_group, gpu_name, simulated, device_uid, fingerprint, host, run_id,
    vram_capacity_mb, vram_fragmentation, vram_max_context_batch1, vram_cliff_peak_mb_batch1,
    vram_max_batch_size, vram_max_context_max_batch, vram_cliff_quality, run_quality,
    count(*) OVER peers AS peers,
    quantile_cont(vram_max_context_batch1, 0.5) OVER peers AS peer_median_max_context_batch1,
    vram_max_context_batch1 - quantile_cont(vram_max_context_batch1, 0.5) OVER peers AS delta_max_context_batch1,
    quantile_cont(vram_cliff_peak_mb_batch1, 0.5) OVER peers AS peer_median_cliff_peak_mb_batch1,
    vram_cliff_peak_mb_batch1 - quantile_cont(vram_cliff_peak_mb_batch1, 0.5) OVER peers AS delta_cliff_peak_mb_batch1
FROM v_fleet_latest
WHERE vram_max_context_batch1 IS NOT NULL OR vram_max_context_max_batch IS NOT NULL
WINDOW peers AS (PARTITION BY peer_group, simulated);

CREATE OR REPLACE VIEW v_joule_compare AS
SELECT
    peer_group, gpu_name, simulated, device_uid, fingerprint, host, run_id, joule_phase,
    j_per_token_batch1, j_per_token_batch1_quality, max_batch_size, j_per_token_max_batch,
    j_per_token_max_batch_quality, run_quality,
    count(*) OVER peers AS peers,
    quantile_cont(j_per_token_batch1, 0.5) OVER peers AS peer_median_j_per_token_batch1,
    j_per_token_batch1 / nullif(quantile_cont(j_per_token_batch1, 0.5) OVER peers, 0) AS batch1_ratio,
    quantile_cont(j_per_token_max_batch, 0.5) OVER peers AS peer_median_j_per_token_max_batch,
    j_per_token_max_batch / nullif(quantile_cont(j_per_token_max_batch, 0.5) OVER peers, 0) AS max_batch_ratio
FROM v_fleet_latest
WHERE j_per_token_batch1 IS NOT NULL OR j_per_token_max_batch IS NOT NULL
WINDOW peers AS (PARTITION BY peer_group, simulated);

-- One device_uid across its runs and fingerprints, oldest first, with the change since the
-- previous run of the same device.
CREATE OR REPLACE VIEW v_device_drift AS
SELECT
    device_uid, run_id, started_wall_ns, fingerprint, host, gpu_name, simulated, run_quality,
    row_number() OVER dev AS run_seq,
    fingerprint IS DISTINCT FROM lag(fingerprint) OVER dev AND lag(fingerprint) OVER dev IS NOT NULL
        AS fingerprint_changed,
    idle_robust_w, idle_robust_w - lag(idle_robust_w) OVER dev AS idle_delta_w, idle_quality,
    power_w_update_period_ms, power_w_rise_ms, power_w_rise_ms - lag(power_w_rise_ms) OVER dev AS power_w_rise_delta_ms,
    power_instant_w_update_period_ms, power_instant_w_rise_ms,
    vram_max_context_batch1,
    vram_max_context_batch1 - lag(vram_max_context_batch1) OVER dev AS vram_max_context_batch1_delta,
    vram_cliff_peak_mb_batch1,
    j_per_token_batch1, j_per_token_batch1 - lag(j_per_token_batch1) OVER dev AS j_per_token_batch1_delta,
    j_per_token_max_batch,
    tau_s, t_inf_c, t_inf_c - lag(t_inf_c) OVER dev AS t_inf_delta_c, equilibrium, throttled
FROM v_run_constants
WINDOW dev AS (PARTITION BY device_uid ORDER BY started_wall_ns NULLS LAST, run_id);
