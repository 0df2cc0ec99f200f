-- 006_power_trace_compression: power_trace rebuilt with the same columns, types, order and
-- CHECKs, and one storage method named per column instead of DuckDB's trial of every method.
--
-- On each checkpoint DuckDB analyses every column of every row group with each compression
-- method that fits its type, then compresses with the one that wins. For the trace the
-- winner follows from the physics, so the trials only cost time (about 10 % of an ingest):
--  * The sensor fields (power, temperature, clocks, utilisation, VRAM, throttle reasons,
--    P-state, read_ok) are sampled faster than the sensors update (instrument_response
--    measures how much faster), so a trace is runs of equal values: RLE. DuckDB picked RLE
--    (or Constant) for every one of them on simulated runs and on the real nvidia-smi logs.
--  * t_ns and wall_ns climb on a grid: bit-packing (delta frame of reference).
--  * dt_s and lateness_ms are timing jitter, decimal fractions with no runs: ALP.
--  * trace_key is one value per run x device, stored together: RLE.
-- energy_j keeps DuckDB's choice: a counter read every sample is ALP, one that updates with
-- the power sensor is RLE, and both occur. Columns whose row group holds one value are stored
-- as Constant whatever the method named here.
-- The rows are copied in their stored order; on a large warehouse this migration takes as
-- long as reading and writing the trace once.

CREATE TABLE power_trace_006 (
    trace_key             INTEGER NOT NULL USING COMPRESSION rle,
    t_ns                  BIGINT NOT NULL USING COMPRESSION bitpacking,  -- host monotonic clock (wall clock for imported nvidia-smi logs)
    wall_ns               BIGINT USING COMPRESSION bitpacking,
    power_w               DOUBLE USING COMPRESSION rle CHECK (power_w BETWEEN 0 AND 5000),
    power_instant_w       DOUBLE USING COMPRESSION rle CHECK (power_instant_w BETWEEN 0 AND 5000),
    energy_j              DOUBLE CHECK (energy_j >= 0),
    temp_c                DOUBLE USING COMPRESSION rle CHECK (temp_c BETWEEN -40 AND 150),
    sm_clock_mhz          DOUBLE USING COMPRESSION rle CHECK (sm_clock_mhz >= 0),
    mem_clock_mhz         DOUBLE USING COMPRESSION rle CHECK (mem_clock_mhz >= 0),
    util_gpu              DOUBLE USING COMPRESSION rle CHECK (util_gpu BETWEEN 0 AND 100),
    util_mem              DOUBLE USING COMPRESSION rle CHECK (util_mem BETWEEN 0 AND 100),
    vram_used_mb          DOUBLE USING COMPRESSION rle CHECK (vram_used_mb >= 0),
    clocks_event_reasons  BIGINT USING COMPRESSION rle,
    pstate                INTEGER USING COMPRESSION rle CHECK (pstate BETWEEN 0 AND 32),
    read_ok               BOOLEAN NOT NULL USING COMPRESSION rle,
    dt_s                  DOUBLE USING COMPRESSION alp CHECK (dt_s >= 0),
    lateness_ms           DOUBLE USING COMPRESSION alp,
    power_avg_1s_w        DOUBLE USING COMPRESSION rle CHECK (power_avg_1s_w BETWEEN 0 AND 5000)  -- nvidia-smi's 1 s average (002)
);

INSERT INTO power_trace_006
SELECT trace_key, t_ns, wall_ns, power_w, power_instant_w, energy_j, temp_c, sm_clock_mhz, mem_clock_mhz,
       util_gpu, util_mem, vram_used_mb, clocks_event_reasons, pstate, read_ok, dt_s, lateness_ms, power_avg_1s_w
FROM power_trace;

DROP TABLE power_trace;
ALTER TABLE power_trace_006 RENAME TO power_trace;
