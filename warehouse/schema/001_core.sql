-- 001_core: the first warehouse schema (version 1).
-- Units are in the column names. Keys are strings except power_trace's trace_key (see there).
-- No FOREIGN KEY clauses: DuckDB cannot update or delete a referenced row, and ingest replaces
-- a run x device as a whole; warehouse/ingest.py keeps the references whole in one transaction.

CREATE TABLE schema_version (
    version     INTEGER PRIMARY KEY,
    name        VARCHAR NOT NULL,
    applied_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE hosts (
    host                VARCHAR PRIMARY KEY,
    cpu_model           VARCHAR,
    cpu_cores           INTEGER CHECK (cpu_cores IS NULL OR cpu_cores > 0),
    ram_gb              DOUBLE CHECK (ram_gb IS NULL OR ram_gb > 0),
    os_kernel           VARCHAR,
    first_seen_wall_ns  BIGINT,
    last_seen_wall_ns   BIGINT
);

CREATE TABLE devices (
    device_uid          VARCHAR PRIMARY KEY,   -- physical identity
    host                VARCHAR NOT NULL,
    gpu_name            VARCHAR,
    vram_total_mb       DOUBLE CHECK (vram_total_mb IS NULL OR vram_total_mb > 0),
    simulated           BOOLEAN NOT NULL,
    first_seen_wall_ns  BIGINT,
    last_seen_wall_ns   BIGINT
);

CREATE TABLE fingerprints (
    fingerprint          VARCHAR PRIMARY KEY,  -- identity plus the configuration that changes the physics
    device_uid           VARCHAR NOT NULL,
    comparability_key    VARCHAR,
    simulated            BOOLEAN NOT NULL,
    gpu_name             VARCHAR,
    vram_total_mb        DOUBLE CHECK (vram_total_mb IS NULL OR vram_total_mb > 0),
    vbios                VARCHAR,
    driver_version       VARCHAR,
    cuda_driver_version  VARCHAR,
    power_limit_w        DOUBLE CHECK (power_limit_w IS NULL OR power_limit_w > 0),
    ecc_mode             VARCHAR,
    mig_mode             VARCHAR,
    cpu_model            VARCHAR,
    cpu_cores            INTEGER CHECK (cpu_cores IS NULL OR cpu_cores > 0),
    ram_gb               DOUBLE CHECK (ram_gb IS NULL OR ram_gb > 0),
    os_kernel            VARCHAR,
    torch_version        VARCHAR,
    profile_sha256       VARCHAR,
    fields_json          VARCHAR NOT NULL      -- every field of fingerprint.json, nothing lost
);

CREATE TABLE runs (
    run_id                 VARCHAR PRIMARY KEY,
    started_wall_ns        BIGINT,             -- earliest device start seen for the run
    ended_wall_ns          BIGINT,             -- latest device end seen for the run
    git_hash               VARCHAR,
    git_dirty              BOOLEAN,
    config_json            VARCHAR,
    library_versions_json  VARCHAR,
    schema_version         INTEGER NOT NULL CHECK (schema_version = 1),
    ingested_at            TIMESTAMP NOT NULL,
    CHECK (ended_wall_ns IS NULL OR started_wall_ns IS NULL OR ended_wall_ns >= started_wall_ns)
);

CREATE TABLE run_devices (
    run_id           VARCHAR NOT NULL,
    device_uid       VARCHAR NOT NULL,
    trace_key        INTEGER NOT NULL UNIQUE,  -- power_trace rows of this run x device
    host             VARCHAR NOT NULL,
    fingerprint      VARCHAR NOT NULL,
    device_uuid      VARCHAR,                  -- the trace's device_uuid (one per device dir)
    simulated        BOOLEAN NOT NULL,
    run_state        VARCHAR NOT NULL CHECK (run_state IN ('completed', 'aborted', 'timeout', 'partial', 'lost')),
    end_reason       VARCHAR NOT NULL CHECK (end_reason IN ('equilibrium', 'thermal_trip', 'timeout', 'poller_degraded', 'error', 'interrupted', 'completed', 'lost')),
    started_wall_ns  BIGINT,
    ended_wall_ns    BIGINT,
    trace_rows       BIGINT NOT NULL CHECK (trace_rows >= 0),
    t_first_ns       BIGINT,
    t_last_ns        BIGINT,
    checks_json      VARCHAR,
    metadata_json    VARCHAR NOT NULL,         -- run_metadata.json as ingested
    ingested_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, device_uid),
    CHECK (ended_wall_ns IS NULL OR started_wall_ns IS NULL OR ended_wall_ns >= started_wall_ns),
    CHECK (t_last_ns IS NULL OR t_first_ns IS NULL OR t_last_ns >= t_first_ns)
);

-- The poller's rows. The one big table: run_id and device_uid are folded into an integer
-- trace_key (run_devices.trace_key) and device_uuid, constant per device, lives in
-- run_devices: three strings repeated on every row cost ingest time and file space for
-- nothing. v_power_trace joins them back.
-- No primary key (an index over billions of rows costs more than it guards): ingest checks
-- that t_ns is monotonic per device before writing. Rows are stored in t_ns order.
CREATE TABLE power_trace (
    trace_key             INTEGER NOT NULL,
    t_ns                  BIGINT NOT NULL,     -- host monotonic clock (wall clock for imported nvidia-smi logs)
    wall_ns               BIGINT,
    power_w               DOUBLE CHECK (power_w IS NULL OR power_w BETWEEN 0 AND 5000),
    power_instant_w       DOUBLE CHECK (power_instant_w IS NULL OR power_instant_w BETWEEN 0 AND 5000),
    energy_j              DOUBLE CHECK (energy_j IS NULL OR energy_j >= 0),
    temp_c                DOUBLE CHECK (temp_c IS NULL OR temp_c BETWEEN -40 AND 150),
    sm_clock_mhz          DOUBLE CHECK (sm_clock_mhz IS NULL OR sm_clock_mhz >= 0),
    mem_clock_mhz         DOUBLE CHECK (mem_clock_mhz IS NULL OR mem_clock_mhz >= 0),
    util_gpu              DOUBLE CHECK (util_gpu IS NULL OR util_gpu BETWEEN 0 AND 100),
    util_mem              DOUBLE CHECK (util_mem IS NULL OR util_mem BETWEEN 0 AND 100),
    vram_used_mb          DOUBLE CHECK (vram_used_mb IS NULL OR vram_used_mb >= 0),
    clocks_event_reasons  BIGINT,
    pstate                INTEGER CHECK (pstate IS NULL OR pstate BETWEEN 0 AND 32),
    read_ok               BOOLEAN NOT NULL,
    dt_s                  DOUBLE CHECK (dt_s IS NULL OR dt_s >= 0),
    lateness_ms           DOUBLE
);

CREATE TABLE markers (
    run_id       VARCHAR NOT NULL,
    device_uid   VARCHAR NOT NULL,
    seq          INTEGER NOT NULL,             -- position in markers.parquet
    t_ns         BIGINT NOT NULL,
    wall_ns      BIGINT,
    device_uuid  VARCHAR,                      -- null: the marker is for the whole host
    name         VARCHAR NOT NULL,
    attrs_json   VARCHAR,
    PRIMARY KEY (run_id, device_uid, seq)
);

CREATE TABLE events (
    run_id               VARCHAR NOT NULL,
    device_uid           VARCHAR NOT NULL,
    event_id             VARCHAR NOT NULL,
    experiment           VARCHAR,
    phase                VARCHAR,
    batch_size           BIGINT CHECK (batch_size IS NULL OR batch_size > 0),
    input_tokens         BIGINT CHECK (input_tokens IS NULL OR input_tokens >= 0),
    output_tokens        BIGINT CHECK (output_tokens IS NULL OR output_tokens >= 0),
    t_start_ns           BIGINT NOT NULL,
    t_end_ns             BIGINT NOT NULL,
    energy_counter_j     DOUBLE CHECK (energy_counter_j IS NULL OR energy_counter_j >= 0),
    energy_integrated_j  DOUBLE CHECK (energy_integrated_j IS NULL OR energy_integrated_j >= 0),
    energy_net_j         DOUBLE,               -- baseline subtracted: may be slightly negative
    energy_quality       VARCHAR CHECK (energy_quality IS NULL OR energy_quality IN ('NO_DATA', 'GAPPY', 'GOOD', 'BILLABLE')),
    gap_fraction         DOUBLE CHECK (gap_fraction IS NULL OR gap_fraction BETWEEN 0 AND 1),
    tokens_per_second    DOUBLE CHECK (tokens_per_second IS NULL OR tokens_per_second >= 0),
    extra_json           VARCHAR,              -- any other columns of events.parquet, nothing lost
    PRIMARY KEY (run_id, device_uid, event_id),
    CHECK (t_end_ns >= t_start_ns)
);

CREATE TABLE poller_stats (
    run_id              VARCHAR NOT NULL,
    device_uid          VARCHAR NOT NULL,
    period_ms           DOUBLE CHECK (period_ms IS NULL OR period_ms > 0),
    dt_median_ms        DOUBLE CHECK (dt_median_ms IS NULL OR dt_median_ms >= 0),
    dt_p95_ms           DOUBLE CHECK (dt_p95_ms IS NULL OR dt_p95_ms >= 0),
    dt_p99_ms           DOUBLE CHECK (dt_p99_ms IS NULL OR dt_p99_ms >= 0),
    lateness_p50_ms     DOUBLE,
    lateness_p99_ms     DOUBLE,
    lateness_max_ms     DOUBLE,
    dropped_ticks       BIGINT CHECK (dropped_ticks IS NULL OR dropped_ticks >= 0),
    read_errors         BIGINT CHECK (read_errors IS NULL OR read_errors >= 0),
    max_gap_ms          DOUBLE CHECK (max_gap_ms IS NULL OR max_gap_ms >= 0),
    gap_count           BIGINT CHECK (gap_count IS NULL OR gap_count >= 0),
    samples             BIGINT CHECK (samples IS NULL OR samples >= 0),
    expected_samples    BIGINT CHECK (expected_samples IS NULL OR expected_samples >= 0),
    scheduling_quality  VARCHAR CHECK (scheduling_quality IS NULL OR scheduling_quality IN ('strict', 'degraded')),
    continuity_quality  VARCHAR CHECK (continuity_quality IS NULL OR continuity_quality IN ('strict', 'degraded')),
    stats_json          VARCHAR NOT NULL,
    PRIMARY KEY (run_id, device_uid)
);

-- Raw experiment JSON, always, so nothing is lost; the typed tables below are filled from
-- its "figures" where present.
CREATE TABLE experiment_results (
    run_id          VARCHAR NOT NULL,
    device_uid      VARCHAR NOT NULL,
    experiment      VARCHAR NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version = 1),
    quality         VARCHAR,
    payload_json    VARCHAR NOT NULL,
    PRIMARY KEY (run_id, device_uid, experiment)
);

CREATE TABLE baselines (
    run_id          VARCHAR NOT NULL,
    device_uid      VARCHAR NOT NULL,
    field           VARCHAR NOT NULL,          -- power field the baseline was taken on
    idle_robust_w   DOUBLE CHECK (idle_robust_w IS NULL OR idle_robust_w >= 0),
    idle_sem_w      DOUBLE CHECK (idle_sem_w IS NULL OR idle_sem_w >= 0),
    idle_mean_w     DOUBLE CHECK (idle_mean_w IS NULL OR idle_mean_w >= 0),
    idle_median_w   DOUBLE CHECK (idle_median_w IS NULL OR idle_median_w >= 0),
    idle_std_w      DOUBLE CHECK (idle_std_w IS NULL OR idle_std_w >= 0),
    floor_w         DOUBLE CHECK (floor_w IS NULL OR floor_w >= 0),
    floor_fraction  DOUBLE CHECK (floor_fraction IS NULL OR floor_fraction BETWEEN 0 AND 1),
    fake_idle       BOOLEAN,
    n_samples       BIGINT CHECK (n_samples IS NULL OR n_samples >= 0),
    window_s        DOUBLE CHECK (window_s IS NULL OR window_s >= 0),
    quality         VARCHAR,
    PRIMARY KEY (run_id, device_uid, field)
);

CREATE TABLE instrument_response (
    run_id            VARCHAR NOT NULL,
    device_uid        VARCHAR NOT NULL,
    field             VARCHAR NOT NULL,        -- power_w, power_instant_w, power_avg_1s_w, ...
    update_period_ms  DOUBLE CHECK (update_period_ms IS NULL OR update_period_ms > 0),
    rise_ms           DOUBLE CHECK (rise_ms IS NULL OR rise_ms >= 0),
    delay_ms          DOUBLE,                  -- may be negative when the sensor leads the edge
    window_ms         DOUBLE CHECK (window_ms IS NULL OR window_ms >= 0),
    idle_w            DOUBLE CHECK (idle_w IS NULL OR idle_w >= 0),
    load_w            DOUBLE CHECK (load_w IS NULL OR load_w >= 0),
    n_steps           BIGINT CHECK (n_steps IS NULL OR n_steps >= 0),
    quality           VARCHAR,
    PRIMARY KEY (run_id, device_uid, field)
);

-- VRAM cliff: the largest context that fits per batch size, found by probing up to the
-- real out-of-memory error. Summary per run x device, one point per batch size, every probe.
CREATE TABLE vram_cliff (
    run_id                  VARCHAR NOT NULL,
    device_uid              VARCHAR NOT NULL,
    capacity_mb             DOUBLE CHECK (capacity_mb IS NULL OR capacity_mb > 0),
    weights_mb              DOUBLE CHECK (weights_mb IS NULL OR weights_mb >= 0),
    fragmentation           DOUBLE CHECK (fragmentation IS NULL OR fragmentation BETWEEN 0 AND 1),
    fragmentation_at_oom    DOUBLE CHECK (fragmentation_at_oom IS NULL OR fragmentation_at_oom BETWEEN 0 AND 1),
    largest_allocatable_mb  DOUBLE CHECK (largest_allocatable_mb IS NULL OR largest_allocatable_mb >= 0),
    quality                 VARCHAR,
    PRIMARY KEY (run_id, device_uid)
);

CREATE TABLE vram_cliff_points (
    run_id                 VARCHAR NOT NULL,
    device_uid             VARCHAR NOT NULL,
    batch_size             BIGINT NOT NULL CHECK (batch_size > 0),
    max_context            BIGINT CHECK (max_context IS NULL OR max_context >= 0),  -- tokens that fit
    first_failing_context  BIGINT CHECK (first_failing_context IS NULL OR first_failing_context >= 0),
    cause                  VARCHAR,           -- memory | model limit | ... (null: not resolved)
    model_max_context      BIGINT,
    delta_tokens           BIGINT,
    n_probes               BIGINT CHECK (n_probes IS NULL OR n_probes >= 0),
    peak_allocated_mb      DOUBLE CHECK (peak_allocated_mb IS NULL OR peak_allocated_mb >= 0),
    reserved_mb            DOUBLE CHECK (reserved_mb IS NULL OR reserved_mb >= 0),
    nvml_used_mb           DOUBLE CHECK (nvml_used_mb IS NULL OR nvml_used_mb >= 0),
    peak_component         VARCHAR,
    PRIMARY KEY (run_id, device_uid, batch_size)
);

CREATE TABLE vram_cliff_probes (
    run_id             VARCHAR NOT NULL,
    device_uid         VARCHAR NOT NULL,
    probe_idx          INTEGER NOT NULL,
    batch_size         BIGINT CHECK (batch_size IS NULL OR batch_size > 0),
    context            BIGINT CHECK (context IS NULL OR context >= 0),
    ok                 BOOLEAN,
    oom                BOOLEAN,
    peak_allocated_mb  DOUBLE CHECK (peak_allocated_mb IS NULL OR peak_allocated_mb >= 0),
    reserved_mb        DOUBLE CHECK (reserved_mb IS NULL OR reserved_mb >= 0),
    peak_reserved_mb   DOUBLE CHECK (peak_reserved_mb IS NULL OR peak_reserved_mb >= 0),
    nvml_used_mb       DOUBLE CHECK (nvml_used_mb IS NULL OR nvml_used_mb >= 0),
    model_peak_mb      DOUBLE CHECK (model_peak_mb IS NULL OR model_peak_mb >= 0),
    elapsed_s          DOUBLE CHECK (elapsed_s IS NULL OR elapsed_s >= 0),
    error              VARCHAR,
    PRIMARY KEY (run_id, device_uid, probe_idx)
);

-- Energy per token: one row per phase x batch size (the per-event figures are in events).
CREATE TABLE joule_curve (
    run_id           VARCHAR NOT NULL,
    device_uid       VARCHAR NOT NULL,
    phase            VARCHAR NOT NULL,
    batch_size       BIGINT NOT NULL CHECK (batch_size > 0),
    j_per_token      DOUBLE CHECK (j_per_token IS NULL OR j_per_token >= 0),
    j_per_token_sem  DOUBLE CHECK (j_per_token_sem IS NULL OR j_per_token_sem >= 0),
    tokens_per_s     DOUBLE CHECK (tokens_per_s IS NULL OR tokens_per_s >= 0),
    power_w          DOUBLE CHECK (power_w IS NULL OR power_w BETWEEN 0 AND 5000),
    n_events         BIGINT CHECK (n_events IS NULL OR n_events >= 0),
    energy_quality   VARCHAR,
    PRIMARY KEY (run_id, device_uid, phase, batch_size)
);

CREATE TABLE joule_fit (
    run_id       VARCHAR NOT NULL,
    device_uid   VARCHAR NOT NULL,
    phase        VARCHAR NOT NULL,
    model        VARCHAR,
    params_json  VARCHAR,
    r2           DOUBLE CHECK (r2 IS NULL OR r2 <= 1),
    quality      VARCHAR,
    PRIMARY KEY (run_id, device_uid, phase)
);

CREATE TABLE heat_soak (
    run_id                 VARCHAR NOT NULL,
    device_uid             VARCHAR NOT NULL,
    tau_s                  DOUBLE CHECK (tau_s IS NULL OR tau_s > 0),
    t_inf_c                DOUBLE CHECK (t_inf_c IS NULL OR t_inf_c BETWEEN -40 AND 200),
    t_start_c              DOUBLE CHECK (t_start_c IS NULL OR t_start_c BETWEEN -40 AND 150),
    t_end_c                DOUBLE CHECK (t_end_c IS NULL OR t_end_c BETWEEN -40 AND 150),
    equilibrium            BOOLEAN,            -- reached within the run (else predicted)
    equilibrium_kind       VARCHAR,            -- equilibrium | predicted
    time_to_equilibrium_s  DOUBLE CHECK (time_to_equilibrium_s IS NULL OR time_to_equilibrium_s >= 0),
    throttled              BOOLEAN,
    throttle_s             DOUBLE CHECK (throttle_s IS NULL OR throttle_s >= 0),
    power_mean_w           DOUBLE CHECK (power_mean_w IS NULL OR power_mean_w BETWEEN 0 AND 5000),
    fit_r2                 DOUBLE CHECK (fit_r2 IS NULL OR fit_r2 <= 1),
    duration_s             DOUBLE CHECK (duration_s IS NULL OR duration_s >= 0),
    quality                VARCHAR,
    PRIMARY KEY (run_id, device_uid)
);

-- Downsampled heat-soak series: from the experiment's figures, else 1 s means of the trace.
CREATE TABLE heat_soak_series (
    run_id        VARCHAR NOT NULL,
    device_uid    VARCHAR NOT NULL,
    t_s           DOUBLE NOT NULL,             -- seconds since the first row of the trace
    temp_c        DOUBLE CHECK (temp_c IS NULL OR temp_c BETWEEN -40 AND 150),
    power_w       DOUBLE CHECK (power_w IS NULL OR power_w BETWEEN 0 AND 5000),
    sm_clock_mhz  DOUBLE CHECK (sm_clock_mhz IS NULL OR sm_clock_mhz >= 0),
    PRIMARY KEY (run_id, device_uid, t_s)
);

-- Contiguous stretches of the trace with a throttle bit set in clocks_event_reasons.
CREATE TABLE throttle_events (
    run_id      VARCHAR NOT NULL,
    device_uid  VARCHAR NOT NULL,
    seq         INTEGER NOT NULL,
    t_start_ns  BIGINT NOT NULL,
    t_end_ns    BIGINT NOT NULL,
    duration_s  DOUBLE NOT NULL CHECK (duration_s >= 0),
    reasons     BIGINT NOT NULL,               -- OR of the throttle bits seen in the stretch
    thermal     BOOLEAN NOT NULL,
    samples     BIGINT NOT NULL CHECK (samples > 0),
    PRIMARY KEY (run_id, device_uid, seq),
    CHECK (t_end_ns >= t_start_ns)
);
