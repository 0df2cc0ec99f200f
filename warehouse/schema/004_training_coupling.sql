-- 004_training_coupling: the training-coupling experiment as typed tables and a compare view.
-- Filled by warehouse/training.py from training_coupling.json (its steps and figures) and the
-- device's trace: the per-step figures and the RLE series are the report's analysis
-- (experiments/analysis/coupling.py, rle.py) repeated over the trace at ingest; the verdict
-- and its statistics are the report's own. Keyed by (run_id, device_uid) like the other
-- per-experiment tables and replaced with the run x device on re-ingest.

-- One row per training step. The analysed columns (aligned .. collapse) are null when the run
-- x device has no trace; rle and collapse also when RLE's limits are unknown (see
-- training_coupling.rle_power_limit_w). A step is aligned when a good trace read falls inside it.
CREATE TABLE training_steps (
    run_id              VARCHAR NOT NULL,
    device_uid          VARCHAR NOT NULL,
    step                BIGINT NOT NULL CHECK (step >= 0),
    t_start_ns          BIGINT NOT NULL,       -- host monotonic clock, the trace's
    t_end_ns            BIGINT NOT NULL,
    loss                DOUBLE,
    grad_norm           DOUBLE CHECK (grad_norm IS NULL OR grad_norm >= 0),  -- before clipping
    lr                  DOUBLE CHECK (lr IS NULL OR lr >= 0),
    lr_spike            BOOLEAN,               -- the step lies in a scheduled learning-rate spike
    load_level          DOUBLE CHECK (load_level IS NULL OR load_level BETWEEN 0 AND 1),  -- declared (simulated only)
    energy_j            DOUBLE CHECK (energy_j IS NULL OR energy_j >= 0),  -- device counter at the step's ends
    energy_trace_j      DOUBLE CHECK (energy_trace_j IS NULL OR energy_trace_j >= 0),  -- mean power x duration
    aligned             BOOLEAN,
    n_samples           BIGINT CHECK (n_samples IS NULL OR n_samples >= 0),  -- good reads inside the step
    power_w             DOUBLE CHECK (power_w IS NULL OR power_w BETWEEN 0 AND 5000),  -- mean of those reads
    temp_c              DOUBLE CHECK (temp_c IS NULL OR temp_c BETWEEN -40 AND 150),
    temp_slope_c_per_s  DOUBLE,                -- least squares over max(step, 5 s) centred on the step
    rle                 DOUBLE CHECK (rle IS NULL OR rle >= 0),  -- mean RLE of the 1 s bins the step overlaps
    collapse            BOOLEAN,               -- an RLE collapse flag in one of those bins
    spike               BOOLEAN,               -- grad_norm above its rolling median + k MAD
    PRIMARY KEY (run_id, device_uid, step),
    CHECK (t_end_ns >= t_start_ns)
);

-- RLE and its collapse detector in 1 s bins of the whole trace (the analysis' own bins).
CREATE TABLE rle_series (
    run_id          VARCHAR NOT NULL,
    device_uid      VARCHAR NOT NULL,
    t_ns            BIGINT NOT NULL,           -- bin start, host monotonic clock
    t_s             DOUBLE NOT NULL,           -- seconds since the first row of the trace
    n_reads         BIGINT CHECK (n_reads IS NULL OR n_reads >= 0),
    util_pct        DOUBLE CHECK (util_pct IS NULL OR util_pct BETWEEN 0 AND 100),
    power_w         DOUBLE CHECK (power_w IS NULL OR power_w BETWEEN 0 AND 5000),
    temp_c          DOUBLE CHECK (temp_c IS NULL OR temp_c BETWEEN -40 AND 150),
    a_load          DOUBLE CHECK (a_load IS NULL OR a_load >= 0),  -- power / power limit
    dtdt_c_per_s    DOUBLE,
    t_sustain_s     DOUBLE CHECK (t_sustain_s IS NULL OR t_sustain_s >= 0),
    rle             DOUBLE CHECK (rle IS NULL OR rle >= 0),
    gated           BOOLEAN,                   -- under load and heating after warm-up
    collapse        BOOLEAN,                   -- the detector's collapse flag in this bin
    collapse_start  BOOLEAN,                   -- a collapse event starts in this bin
    PRIMARY KEY (run_id, device_uid, t_ns)
);

-- One row per run x device: the report's verdict and statistics, and the workload's
-- signature over the training window (first step start to last step end) of the trace.
CREATE TABLE training_coupling (
    run_id                          VARCHAR NOT NULL,
    device_uid                      VARCHAR NOT NULL,
    simulated                       BOOLEAN NOT NULL,
    verdict                         VARCHAR CHECK (verdict IS NULL OR verdict IN ('coupled', 'not coupled', 'insufficient data')),
    verdict_reason                  VARCHAR,
    p_value                         DOUBLE CHECK (p_value IS NULL OR p_value BETWEEN 0 AND 1),
    alpha                           DOUBLE CHECK (alpha IS NULL OR alpha BETWEEN 0 AND 1),
    best_lag                        INTEGER,   -- steps; > 0: the target follows grad_norm
    correlation                     DOUBLE CHECK (correlation IS NULL OR correlation BETWEEN -1 AND 1),  -- Spearman rho
    target                          VARCHAR,   -- power | temp_slope | collapse: the best-correlated target
    steps                           BIGINT CHECK (steps IS NULL OR steps >= 0),
    n_aligned                       BIGINT CHECK (n_aligned IS NULL OR n_aligned >= 0),
    aligned_fraction                DOUBLE CHECK (aligned_fraction IS NULL OR aligned_fraction BETWEEN 0 AND 1),
    n_spikes                        BIGINT CHECK (n_spikes IS NULL OR n_spikes >= 0),
    n_collapses                     BIGINT CHECK (n_collapses IS NULL OR n_collapses >= 0),
    collapse_rate_per_gated_h       DOUBLE CHECK (collapse_rate_per_gated_h IS NULL OR collapse_rate_per_gated_h >= 0),
    collapse_rate_per_under_load_h  DOUBLE CHECK (collapse_rate_per_under_load_h IS NULL OR collapse_rate_per_under_load_h >= 0),
    gated_h                         DOUBLE CHECK (gated_h IS NULL OR gated_h >= 0),
    rle_median                      DOUBLE CHECK (rle_median IS NULL OR rle_median >= 0),
    energy_per_step_median_j        DOUBLE CHECK (energy_per_step_median_j IS NULL OR energy_per_step_median_j >= 0),
    power_field                     VARCHAR,   -- the power field of the per-step figures and the ranges
    power_p05_w                     DOUBLE CHECK (power_p05_w IS NULL OR power_p05_w BETWEEN 0 AND 5000),
    power_p95_w                     DOUBLE CHECK (power_p95_w IS NULL OR power_p95_w BETWEEN 0 AND 5000),
    temp_p05_c                      DOUBLE CHECK (temp_p05_c IS NULL OR temp_p05_c BETWEEN -40 AND 150),
    temp_p95_c                      DOUBLE CHECK (temp_p95_c IS NULL OR temp_p95_c BETWEEN -40 AND 150),
    util_p05_pct                    DOUBLE CHECK (util_p05_pct IS NULL OR util_p05_pct BETWEEN 0 AND 100),
    util_p95_pct                    DOUBLE CHECK (util_p95_pct IS NULL OR util_p95_pct BETWEEN 0 AND 100),
    rle_power_limit_w               DOUBLE CHECK (rle_power_limit_w IS NULL OR rle_power_limit_w > 0),  -- null: RLE not repeated
    rle_slowdown_temp_c             DOUBLE CHECK (rle_slowdown_temp_c IS NULL OR rle_slowdown_temp_c BETWEEN -40 AND 200),
    quality                         VARCHAR,   -- ok | degraded | insufficient (the report's)
    PRIMARY KEY (run_id, device_uid),
    CHECK (power_p95_w IS NULL OR power_p05_w IS NULL OR power_p95_w >= power_p05_w),
    CHECK (temp_p95_c IS NULL OR temp_p05_c IS NULL OR temp_p95_c >= temp_p05_c),
    CHECK (util_p95_pct IS NULL OR util_p05_pct IS NULL OR util_p95_pct >= util_p05_pct)
);

-- Per device and fingerprint, its latest run with a training-coupling result (not its latest
-- run: the experiment is not in the default suite), against the median of its peers (same
-- comparability key, same simulated flag; see 003_views.sql).
CREATE OR REPLACE VIEW v_training_coupling_compare AS
WITH latest AS (
    SELECT
        rc.peer_group, rc.gpu_name, rc.simulated, tc.device_uid, rc.fingerprint, rc.host, tc.run_id,
        rc.started_wall_ns, tc.* EXCLUDE (run_id, device_uid, simulated), rc.run_quality
    FROM training_coupling tc
    JOIN v_run_constants rc ON rc.run_id = tc.run_id AND rc.device_uid = tc.device_uid
    QUALIFY row_number() OVER (
        PARTITION BY tc.device_uid, rc.fingerprint
        ORDER BY rc.started_wall_ns DESC NULLS LAST, tc.run_id DESC
    ) = 1
)
SELECT
    *,
    count(*) OVER peers AS peers,
    quantile_cont(power_p95_w, 0.5) OVER peers AS peer_median_power_p95_w,
    power_p95_w - quantile_cont(power_p95_w, 0.5) OVER peers AS delta_power_p95_w,
    quantile_cont(temp_p95_c, 0.5) OVER peers AS peer_median_temp_p95_c,
    temp_p95_c - quantile_cont(temp_p95_c, 0.5) OVER peers AS delta_temp_p95_c,
    quantile_cont(collapse_rate_per_gated_h, 0.5) OVER peers AS peer_median_collapse_rate_per_gated_h,
    count(*) FILTER (WHERE verdict = 'coupled') OVER peers AS peers_coupled
FROM latest
WINDOW peers AS (PARTITION BY peer_group, simulated);
