-- 005_power_trace_checks: power_trace rebuilt with the same columns, in the same order, and
-- two changes to its CHECKs:
--  * Each CHECK is the bare physical range, without "x IS NULL OR". SQL already lets a NULL
--    pass a CHECK (only FALSE fails it), so the OR only cost time: DuckDB evaluated it on
--    every row of every ingest (about 7 % of the ingest's CPU at 10 M rows).
--  * power_avg_1s_w gets the 0..5000 W range that 002 could not give it (DuckDB cannot add
--    a column with a CHECK; ingest validated it alone until now).
-- The rows are copied in their stored (t_ns) order; on a large warehouse this migration
-- takes as long as reading and writing the trace once.

CREATE TABLE power_trace_005 (
    trace_key             INTEGER NOT NULL,
    t_ns                  BIGINT NOT NULL,     -- host monotonic clock (wall clock for imported nvidia-smi logs)
    wall_ns               BIGINT,
    power_w               DOUBLE CHECK (power_w BETWEEN 0 AND 5000),
    power_instant_w       DOUBLE CHECK (power_instant_w BETWEEN 0 AND 5000),
    energy_j              DOUBLE CHECK (energy_j >= 0),
    temp_c                DOUBLE CHECK (temp_c BETWEEN -40 AND 150),
    sm_clock_mhz          DOUBLE CHECK (sm_clock_mhz >= 0),
    mem_clock_mhz         DOUBLE CHECK (mem_clock_mhz >= 0),
    util_gpu              DOUBLE CHECK (util_gpu BETWEEN 0 AND 100),
    util_mem              DOUBLE CHECK (util_mem BETWEEN 0 AND 100),
    vram_used_mb          DOUBLE CHECK (vram_used_mb >= 0),
    clocks_event_reasons  BIGINT,
    pstate                INTEGER CHECK (pstate BETWEEN 0 AND 32),
    read_ok               BOOLEAN NOT NULL,
    dt_s                  DOUBLE CHECK (dt_s >= 0),
    lateness_ms           DOUBLE,
    power_avg_1s_w        DOUBLE CHECK (power_avg_1s_w BETWEEN 0 AND 5000)  -- nvidia-smi's 1 s average (002)
);

INSERT INTO power_trace_005
SELECT trace_key, t_ns, wall_ns, power_w, power_instant_w, energy_j, temp_c, sm_clock_mhz, mem_clock_mhz,
       util_gpu, util_mem, vram_used_mb, clocks_event_reasons, pstate, read_ok, dt_s, lateness_ms, power_avg_1s_w
FROM power_trace;

DROP TABLE power_trace;
ALTER TABLE power_trace_005 RENAME TO power_trace;
