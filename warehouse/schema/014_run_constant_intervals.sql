-- 014_run_constant_intervals: the 95 % intervals travel into the per run x device view and the
-- peer comparisons (until now only v_figure_intervals carried them).
-- Every timing and fitted figure of v_run_constants gains, beside its existing column
-- <name>_<unit>, the columns the reports write: <name>_se_<unit> (where the figure has a
-- standard error), <name>_ci_low_<unit>, <name>_ci_high_<unit> and <name>_resolved (false when
-- the data cannot bound it; NULL when the run has no such experiment). Figures without a unit in their
-- name (J/token, VRAM contexts) take no unit suffix: j_per_token_batch1_ci_low. Sources:
--  * sensor response (update period, rise, delay, window per power field), tau, T_inf: the
--    report's own interval, read from experiment_results as v_figure_intervals (migration 008)
--    reads it, but with one parse per document (v_figure_intervals' ~20 parses of a report
--    took seconds over a thousand runs, on every page of the dashboard).
--  * idle: robust mean +- 1.96 SEM_eff, resolved when both are known (as v_figure_intervals).
--  * time to equilibrium: predicted, the report's equilibrium_predicted interval; measured on
--    the data, the window step it was found at: [time - step_s, time] (the margin rule held
--    at this window end and not at the one before), resolved when the report gives step_s.
--  * J/token (v_joule_points, one row per phase x batch size): mean +- Student's t (n_events - 1
--    degrees of freedom) x SEM over the events, resolved when the interval excludes 0.
--  * VRAM max context (v_vram_cliff_points, per batch size): the search's bracket, from the
--    largest context that fit to the smallest that failed, less one (the model's own limit:
--    the context itself); resolved when the search ended (cause known). A bracket, not a
--    statistical interval: the probes are exact.
-- Existing columns keep their names, order and values; the new ones follow them. The compare
-- views gain the device's interval and <figure>_overlaps_peer_median: whether the interval
-- contains the peer median (NULL without an interval or with no other peer).

-- Energy per token with its interval, per phase x batch size.
CREATE OR REPLACE VIEW v_joule_points AS
WITH t975(dof, t) AS (VALUES  -- Student's t 0.975 quantile, scipy.stats.t.ppf(0.975, dof)
    (1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706), (6, 2.4469), (7, 2.3646), (8, 2.3060),
    (9, 2.2622), (10, 2.2281), (11, 2.2010), (12, 2.1788), (13, 2.1604), (14, 2.1448), (15, 2.1314),
    (16, 2.1199), (17, 2.1098), (18, 2.1009), (19, 2.0930), (20, 2.0860), (21, 2.0796), (22, 2.0739),
    (23, 2.0687), (24, 2.0639), (25, 2.0595), (26, 2.0555), (27, 2.0518), (28, 2.0484), (29, 2.0452),
    (30, 2.0423)
),
q AS (
    SELECT c.*,
           CASE WHEN c.n_events BETWEEN 2 AND 31 THEN t975.t
                WHEN c.n_events > 31 THEN  -- Cornish-Fisher expansion in 1/dof: under 2e-6 off here
                    1.959963984540054 + 2.3722712 / (c.n_events - 1) + 2.8224986 / (c.n_events - 1) ^ 2
                    + 2.5558497 / (c.n_events - 1) ^ 3 END AS t_quantile
    FROM joule_curve c LEFT JOIN t975 ON t975.dof = c.n_events - 1
)
SELECT * EXCLUDE (t_quantile),
       j_per_token - t_quantile * j_per_token_sem AS j_per_token_ci_low,
       j_per_token + t_quantile * j_per_token_sem AS j_per_token_ci_high,
       coalesce(j_per_token - t_quantile * j_per_token_sem > 0, FALSE) AS j_per_token_resolved
FROM q;

-- The VRAM cliff per batch size with the search's bracket.
CREATE OR REPLACE VIEW v_vram_cliff_points AS
WITH b AS (
    SELECT *,
           CASE WHEN max_context > 0 THEN max_context END AS max_context_ci_low,
           CASE WHEN max_context > 0 AND cause = 'memory' THEN first_failing_context - 1
                WHEN max_context > 0 AND cause IS NOT NULL AND first_failing_context IS NULL THEN max_context
           END AS max_context_ci_high
    FROM vram_cliff_points
)
SELECT *, CASE WHEN max_context > 0 THEN max_context_ci_high IS NOT NULL END AS max_context_resolved FROM b;

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
        max(peak_allocated_mib) FILTER (WHERE batch_size = 1) AS vram_cliff_peak_mib_batch1,
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
),
-- the intervals (see the header), read from the stored reports with one parse per document
-- (json_transform), the keys v_figure_intervals reads
ir_docs AS (
    SELECT run_id, device_uid, json_transform(payload_json, '{"figures": {' ||
               '"fields": {"power_w": "JSON", "power_instant_w": "JSON", "power_avg_1s_w": "JSON"}, ' ||
               '"power_w": "JSON", "power_instant_w": "JSON", "power_avg_1s_w": "JSON"}}').figures AS f
    FROM experiment_results WHERE experiment = 'instrument_response'
),
ir_fields AS (  -- an analyze result keys the power fields under "fields", a suite run's report at the top
    SELECT run_id, device_uid, 'power_w' AS field, coalesce(f.fields.power_w, f.power_w) AS doc FROM ir_docs
    UNION ALL
    SELECT run_id, device_uid, 'power_instant_w', coalesce(f.fields.power_instant_w, f.power_instant_w) FROM ir_docs
    UNION ALL
    SELECT run_id, device_uid, 'power_avg_1s_w', coalesce(f.fields.power_avg_1s_w, f.power_avg_1s_w) FROM ir_docs
),
ir_values AS (
    SELECT run_id, device_uid, field, json_transform(doc,
        '{"update_period_se_ms": "DOUBLE", "update_period_ci_low_ms": "DOUBLE", "update_period_ci_high_ms": "DOUBLE", "update_period_resolved": "BOOLEAN", ' ||
        '"rise_se_ms": "DOUBLE", "rise_ci_low_ms": "DOUBLE", "rise_ci_high_ms": "DOUBLE", "rise_resolved": "BOOLEAN", ' ||
        '"delay_se_ms": "DOUBLE", "delay_ci_low_ms": "DOUBLE", "delay_ci_high_ms": "DOUBLE", "delay_resolved": "BOOLEAN", ' ||
        '"window_se_ms": "DOUBLE", "window_ci_low_ms": "DOUBLE", "window_ci_high_ms": "DOUBLE", "window_resolved": "BOOLEAN"}') AS v
    FROM ir_fields WHERE doc IS NOT NULL
),
ir_ci AS (
    SELECT
        run_id, device_uid,
        max(v.update_period_se_ms) FILTER (WHERE field = 'power_w') AS power_w_update_period_se_ms,
        max(v.update_period_ci_low_ms) FILTER (WHERE field = 'power_w') AS power_w_update_period_ci_low_ms,
        max(v.update_period_ci_high_ms) FILTER (WHERE field = 'power_w') AS power_w_update_period_ci_high_ms,
        bool_or(v.update_period_resolved) FILTER (WHERE field = 'power_w') AS power_w_update_period_resolved,
        max(v.rise_se_ms) FILTER (WHERE field = 'power_w') AS power_w_rise_se_ms,
        max(v.rise_ci_low_ms) FILTER (WHERE field = 'power_w') AS power_w_rise_ci_low_ms,
        max(v.rise_ci_high_ms) FILTER (WHERE field = 'power_w') AS power_w_rise_ci_high_ms,
        bool_or(v.rise_resolved) FILTER (WHERE field = 'power_w') AS power_w_rise_resolved,
        max(v.delay_se_ms) FILTER (WHERE field = 'power_w') AS power_w_delay_se_ms,
        max(v.delay_ci_low_ms) FILTER (WHERE field = 'power_w') AS power_w_delay_ci_low_ms,
        max(v.delay_ci_high_ms) FILTER (WHERE field = 'power_w') AS power_w_delay_ci_high_ms,
        bool_or(v.delay_resolved) FILTER (WHERE field = 'power_w') AS power_w_delay_resolved,
        max(v.window_se_ms) FILTER (WHERE field = 'power_w') AS power_w_window_se_ms,
        max(v.window_ci_low_ms) FILTER (WHERE field = 'power_w') AS power_w_window_ci_low_ms,
        max(v.window_ci_high_ms) FILTER (WHERE field = 'power_w') AS power_w_window_ci_high_ms,
        bool_or(v.window_resolved) FILTER (WHERE field = 'power_w') AS power_w_window_resolved,
        max(v.update_period_se_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_update_period_se_ms,
        max(v.update_period_ci_low_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_update_period_ci_low_ms,
        max(v.update_period_ci_high_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_update_period_ci_high_ms,
        bool_or(v.update_period_resolved) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_update_period_resolved,
        max(v.rise_se_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_rise_se_ms,
        max(v.rise_ci_low_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_rise_ci_low_ms,
        max(v.rise_ci_high_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_rise_ci_high_ms,
        bool_or(v.rise_resolved) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_rise_resolved,
        max(v.delay_se_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_delay_se_ms,
        max(v.delay_ci_low_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_delay_ci_low_ms,
        max(v.delay_ci_high_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_delay_ci_high_ms,
        bool_or(v.delay_resolved) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_delay_resolved,
        max(v.window_se_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_window_se_ms,
        max(v.window_ci_low_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_window_ci_low_ms,
        max(v.window_ci_high_ms) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_window_ci_high_ms,
        bool_or(v.window_resolved) FILTER (WHERE field = 'power_instant_w') AS power_instant_w_window_resolved,
        max(v.update_period_se_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_update_period_se_ms,
        max(v.update_period_ci_low_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_update_period_ci_low_ms,
        max(v.update_period_ci_high_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_update_period_ci_high_ms,
        bool_or(v.update_period_resolved) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_update_period_resolved,
        max(v.rise_se_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_rise_se_ms,
        max(v.rise_ci_low_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_rise_ci_low_ms,
        max(v.rise_ci_high_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_rise_ci_high_ms,
        bool_or(v.rise_resolved) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_rise_resolved,
        max(v.delay_se_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_delay_se_ms,
        max(v.delay_ci_low_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_delay_ci_low_ms,
        max(v.delay_ci_high_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_delay_ci_high_ms,
        bool_or(v.delay_resolved) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_delay_resolved,
        max(v.window_se_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_window_se_ms,
        max(v.window_ci_low_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_window_ci_low_ms,
        max(v.window_ci_high_ms) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_window_ci_high_ms,
        bool_or(v.window_resolved) FILTER (WHERE field = 'power_avg_1s_w') AS power_avg_1s_w_window_resolved
    FROM ir_values
    GROUP BY run_id, device_uid
),
heat_ci AS (
    SELECT run_id, device_uid,
           json_transform(payload_json,
               '{"figures": {"tau_se_s": "DOUBLE", "tau_ci_low_s": "DOUBLE", "tau_ci_high_s": "DOUBLE", "tau_resolved": "BOOLEAN", ' ||
               '"t_inf_se_c": "DOUBLE", "t_inf_ci_low_c": "DOUBLE", "t_inf_ci_high_c": "DOUBLE", "t_inf_resolved": "BOOLEAN", ' ||
               '"equilibrium_predicted_se_s": "DOUBLE", "equilibrium_predicted_ci_low_s": "DOUBLE", "equilibrium_predicted_ci_high_s": "DOUBLE", "equilibrium_predicted_resolved": "BOOLEAN", ' ||
               '"step_s": "DOUBLE"}}').figures AS h
    FROM experiment_results WHERE experiment = 'heat_soak'
),
joule_ci AS (
    -- the rows v_run_constants' J/token columns come from: batch 1, and the largest batch
    -- with a value (arg_max skips a NULL value, so the interval follows the same row)
    SELECT
        c.run_id, c.device_uid,
        max(c.j_per_token_sem)      FILTER (WHERE c.batch_size = 1) AS j_per_token_batch1_se,
        max(c.j_per_token_ci_low)   FILTER (WHERE c.batch_size = 1) AS j_per_token_batch1_ci_low,
        max(c.j_per_token_ci_high)  FILTER (WHERE c.batch_size = 1) AS j_per_token_batch1_ci_high,
        bool_or(c.j_per_token_resolved) FILTER (WHERE c.batch_size = 1) AS j_per_token_batch1_resolved,
        arg_max({'se': c.j_per_token_sem, 'lo': c.j_per_token_ci_low, 'hi': c.j_per_token_ci_high,
                 'ok': c.j_per_token_resolved}, c.batch_size) FILTER (WHERE c.j_per_token IS NOT NULL) AS top
    FROM v_joule_points c
    JOIN joule_phase p USING (run_id, device_uid, phase)
    GROUP BY c.run_id, c.device_uid
),
vram_ci AS (
    SELECT
        run_id, device_uid,
        max(max_context_ci_low)  FILTER (WHERE batch_size = 1)       AS vram_max_context_batch1_ci_low,
        max(max_context_ci_high) FILTER (WHERE batch_size = 1)       AS vram_max_context_batch1_ci_high,
        bool_or(max_context_resolved) FILTER (WHERE batch_size = 1)  AS vram_max_context_batch1_resolved,
        arg_max({'lo': max_context_ci_low, 'hi': max_context_ci_high, 'ok': max_context_resolved}, batch_size) AS top
    FROM v_vram_cliff_points
    WHERE max_context > 0
    GROUP BY run_id, device_uid
),
constants AS (
    SELECT
        rd.run_id, rd.device_uid, rd.fingerprint, rd.host, f.gpu_name,
        coalesce(f.comparability_key, f.gpu_name) AS peer_group, f.comparability_key,
        rd.simulated, rd.source, rd.clock, rd.started_wall_ns, rd.ended_wall_ns,
        rd.run_state, rd.end_reason, q.run_quality, q.scheduling_quality, q.continuity_quality,
        base.field AS idle_field, base.idle_robust_w, base.idle_sem_w, base.floor_fraction,
        base.fake_idle, base.quality AS idle_quality,
        ir.* EXCLUDE (run_id, device_uid),
        vc.capacity_mib AS vram_capacity_mib, vc.fragmentation AS vram_fragmentation,
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
    LEFT JOIN throttle ON throttle.run_id = rd.run_id AND throttle.device_uid = rd.device_uid
)
SELECT
    c.*,
    c.idle_robust_w - 1.959963984540054 * c.idle_sem_w AS idle_robust_ci_low_w,
    c.idle_robust_w + 1.959963984540054 * c.idle_sem_w AS idle_robust_ci_high_w,
    CASE WHEN base.run_id IS NOT NULL THEN c.idle_robust_w IS NOT NULL AND c.idle_sem_w IS NOT NULL END
        AS idle_robust_resolved,
    ir_ci.* EXCLUDE (run_id, device_uid),
    heat_ci.h.tau_se_s, heat_ci.h.tau_ci_low_s, heat_ci.h.tau_ci_high_s, heat_ci.h.tau_resolved,
    heat_ci.h.t_inf_se_c, heat_ci.h.t_inf_ci_low_c, heat_ci.h.t_inf_ci_high_c, heat_ci.h.t_inf_resolved,
    CASE WHEN c.equilibrium_kind = 'predicted' THEN heat_ci.h.equilibrium_predicted_se_s END
        AS time_to_equilibrium_se_s,
    CASE WHEN c.equilibrium_kind = 'predicted' THEN heat_ci.h.equilibrium_predicted_ci_low_s
         WHEN c.time_to_equilibrium_s IS NOT NULL THEN greatest(c.time_to_equilibrium_s - heat_ci.h.step_s, 0)
    END AS time_to_equilibrium_ci_low_s,
    CASE WHEN c.equilibrium_kind = 'predicted' THEN heat_ci.h.equilibrium_predicted_ci_high_s
         WHEN heat_ci.h.step_s IS NOT NULL THEN c.time_to_equilibrium_s
    END AS time_to_equilibrium_ci_high_s,
    CASE WHEN c.equilibrium_kind = 'predicted' THEN coalesce(heat_ci.h.equilibrium_predicted_resolved, FALSE)
         WHEN c.time_to_equilibrium_s IS NOT NULL THEN heat_ci.h.step_s IS NOT NULL
         WHEN hs.run_id IS NOT NULL THEN FALSE
    END AS time_to_equilibrium_resolved,
    joule_ci.j_per_token_batch1_se, joule_ci.j_per_token_batch1_ci_low, joule_ci.j_per_token_batch1_ci_high,
    joule_ci.j_per_token_batch1_resolved,
    joule_ci.top.se AS j_per_token_max_batch_se, joule_ci.top.lo AS j_per_token_max_batch_ci_low,
    joule_ci.top.hi AS j_per_token_max_batch_ci_high, joule_ci.top.ok AS j_per_token_max_batch_resolved,
    vram_ci.vram_max_context_batch1_ci_low, vram_ci.vram_max_context_batch1_ci_high,
    vram_ci.vram_max_context_batch1_resolved,
    vram_ci.top.lo AS vram_max_context_max_batch_ci_low, vram_ci.top.hi AS vram_max_context_max_batch_ci_high,
    vram_ci.top.ok AS vram_max_context_max_batch_resolved
FROM constants c
LEFT JOIN base ON base.run_id = c.run_id AND base.device_uid = c.device_uid
LEFT JOIN heat_soak hs ON hs.run_id = c.run_id AND hs.device_uid = c.device_uid
LEFT JOIN ir_ci ON ir_ci.run_id = c.run_id AND ir_ci.device_uid = c.device_uid
LEFT JOIN heat_ci ON heat_ci.run_id = c.run_id AND heat_ci.device_uid = c.device_uid
LEFT JOIN joule_ci ON joule_ci.run_id = c.run_id AND joule_ci.device_uid = c.device_uid
LEFT JOIN vram_ci ON vram_ci.run_id = c.run_id AND vram_ci.device_uid = c.device_uid;

-- Re-created over the new v_run_constants (an older DuckDB client binds SELECT * once).
CREATE OR REPLACE VIEW v_fleet_latest AS
SELECT * FROM v_run_constants
QUALIFY row_number() OVER (
    PARTITION BY device_uid, fingerprint
    ORDER BY started_wall_ns DESC NULLS LAST, run_id DESC
) = 1;

-- The peer comparisons of 003_views.sql, each with the device's interval and whether it
-- contains the peer median (NULL when there is no interval or no other peer).
CREATE OR REPLACE VIEW v_baseline_compare AS
SELECT
    peer_group, gpu_name, simulated, device_uid, fingerprint, host, run_id,
    idle_field, idle_robust_w, idle_sem_w, floor_fraction, fake_idle, idle_quality, run_quality,
    count(*) OVER peers AS peers,
    quantile_cont(idle_robust_w, 0.5) OVER peers AS peer_median_idle_w,
    idle_robust_w - quantile_cont(idle_robust_w, 0.5) OVER peers AS delta_w,
    (idle_robust_w - quantile_cont(idle_robust_w, 0.5) OVER peers)
        / nullif(quantile_cont(idle_robust_w, 0.5) OVER peers, 0) AS delta_fraction,
    (idle_robust_w - quantile_cont(idle_robust_w, 0.5) OVER peers) / nullif(idle_sem_w, 0) AS delta_sem,
    idle_robust_ci_low_w, idle_robust_ci_high_w, idle_robust_resolved,
    CASE WHEN count(*) OVER peers > 1 THEN quantile_cont(idle_robust_w, 0.5) OVER peers
         BETWEEN idle_robust_ci_low_w AND idle_robust_ci_high_w END AS idle_overlaps_peer_median
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
    tau_s / nullif(quantile_cont(tau_s, 0.5) OVER peers, 0) AS tau_ratio,
    tau_ci_low_s, tau_ci_high_s, tau_resolved, t_inf_ci_low_c, t_inf_ci_high_c, t_inf_resolved,
    time_to_equilibrium_ci_low_s, time_to_equilibrium_ci_high_s, time_to_equilibrium_resolved,
    CASE WHEN count(*) OVER peers > 1 THEN quantile_cont(tau_s, 0.5) OVER peers
         BETWEEN tau_ci_low_s AND tau_ci_high_s END AS tau_overlaps_peer_median,
    CASE WHEN count(*) OVER peers > 1 THEN quantile_cont(t_inf_c, 0.5) OVER peers
         BETWEEN t_inf_ci_low_c AND t_inf_ci_high_c END AS t_inf_overlaps_peer_median
FROM v_fleet_latest
WHERE t_inf_c IS NOT NULL OR tau_s IS NOT NULL
WINDOW peers AS (PARTITION BY peer_group, simulated);

CREATE OR REPLACE VIEW v_vram_cliff_compare AS
SELECT
    peer_group, gpu_name, simulated, device_uid, fingerprint, host, run_id,
    vram_capacity_mib, vram_fragmentation, vram_max_context_batch1, vram_cliff_peak_mib_batch1,
    vram_max_batch_size, vram_max_context_max_batch, vram_cliff_quality, run_quality,
    count(*) OVER peers AS peers,
    quantile_cont(vram_max_context_batch1, 0.5) OVER peers AS peer_median_max_context_batch1,
    vram_max_context_batch1 - quantile_cont(vram_max_context_batch1, 0.5) OVER peers AS delta_max_context_batch1,
    quantile_cont(vram_cliff_peak_mib_batch1, 0.5) OVER peers AS peer_median_cliff_peak_mib_batch1,
    vram_cliff_peak_mib_batch1 - quantile_cont(vram_cliff_peak_mib_batch1, 0.5) OVER peers AS delta_cliff_peak_mib_batch1,
    vram_max_context_batch1_ci_low, vram_max_context_batch1_ci_high, vram_max_context_batch1_resolved,
    CASE WHEN count(*) OVER peers > 1 THEN quantile_cont(vram_max_context_batch1, 0.5) OVER peers
         BETWEEN vram_max_context_batch1_ci_low AND vram_max_context_batch1_ci_high END
        AS max_context_batch1_overlaps_peer_median
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
    j_per_token_max_batch / nullif(quantile_cont(j_per_token_max_batch, 0.5) OVER peers, 0) AS max_batch_ratio,
    j_per_token_batch1_ci_low, j_per_token_batch1_ci_high, j_per_token_batch1_resolved,
    j_per_token_max_batch_ci_low, j_per_token_max_batch_ci_high, j_per_token_max_batch_resolved,
    CASE WHEN count(*) OVER peers > 1 THEN quantile_cont(j_per_token_batch1, 0.5) OVER peers
         BETWEEN j_per_token_batch1_ci_low AND j_per_token_batch1_ci_high END
        AS j_per_token_batch1_overlaps_peer_median,
    CASE WHEN count(*) OVER peers > 1 THEN quantile_cont(j_per_token_max_batch, 0.5) OVER peers
         BETWEEN j_per_token_max_batch_ci_low AND j_per_token_max_batch_ci_high END
        AS j_per_token_max_batch_overlaps_peer_median
FROM v_fleet_latest
WHERE j_per_token_batch1 IS NOT NULL OR j_per_token_max_batch IS NOT NULL
WINDOW peers AS (PARTITION BY peer_group, simulated);
