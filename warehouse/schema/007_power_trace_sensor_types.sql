-- 007_power_trace_sensor_types: the sensor columns of power_trace stored at the resolution
-- the sensors report, in integer types, instead of DOUBLE.
--
-- NVML reports power in whole milliwatts, temperature, clocks and utilisation in whole
-- units; nvidia-smi prints the same values (power to 0.01 W); the simulated devices round
-- to the same resolution. A DOUBLE holds each in 8 bytes that DuckDB compares, copies and
-- run-length encodes on every ingest; the integer types below hold them exactly in 1 to 4:
--  * power_w, power_instant_w, power_avg_1s_w: DECIMAL(8, 3), watts to the milliwatt (int32).
--  * temp_c: DECIMAL(5, 2), degrees to 0.01 C (int32; imported packs may carry decimals).
--  * sm_clock_mhz, mem_clock_mhz: INTEGER MHz.
--  * util_gpu, util_mem: UTINYINT percent.
-- A value finer than that is rounded to it on ingest (half away from zero): it is below what
-- the instrument resolves. energy_j, vram_used_mb (NVML's bytes over 1e6), dt_s and
-- lateness_ms keep DOUBLE: they are exact only there.
-- `fleetphysics bench ingest --rows 10000000`, three alternating pairs of invocations on one
-- 2-core VM: 4.73-5.01 M rows/s before, 5.18-5.31 M after, 5-7 % less CPU; 12 % smaller file.
-- v_power_trace and v_power_trace_values (below) cast them back to DOUBLE, so every reader
-- of the views sees the types it saw.
-- The rows are copied in their stored order; on a large warehouse this migration takes as
-- long as reading and writing the trace once.

CREATE TABLE power_trace_007 (
    trace_key             INTEGER NOT NULL USING COMPRESSION rle,
    t_ns                  BIGINT NOT NULL USING COMPRESSION bitpacking,  -- host monotonic clock (wall clock for imported nvidia-smi logs)
    wall_ns               BIGINT USING COMPRESSION bitpacking,
    power_w               DECIMAL(8, 3) USING COMPRESSION rle CHECK (power_w BETWEEN 0 AND 5000),
    power_instant_w       DECIMAL(8, 3) USING COMPRESSION rle CHECK (power_instant_w BETWEEN 0 AND 5000),
    energy_j              DOUBLE CHECK (energy_j >= 0),
    temp_c                DECIMAL(5, 2) USING COMPRESSION rle CHECK (temp_c BETWEEN -40 AND 150),
    sm_clock_mhz          INTEGER USING COMPRESSION rle CHECK (sm_clock_mhz >= 0),
    mem_clock_mhz         INTEGER USING COMPRESSION rle CHECK (mem_clock_mhz >= 0),
    util_gpu              UTINYINT USING COMPRESSION rle CHECK (util_gpu <= 100),
    util_mem              UTINYINT USING COMPRESSION rle CHECK (util_mem <= 100),
    vram_used_mb          DOUBLE USING COMPRESSION rle CHECK (vram_used_mb >= 0),
    clocks_event_reasons  BIGINT USING COMPRESSION rle,
    pstate                INTEGER USING COMPRESSION rle CHECK (pstate BETWEEN 0 AND 32),
    read_ok               BOOLEAN NOT NULL USING COMPRESSION rle,
    dt_s                  DOUBLE USING COMPRESSION alp CHECK (dt_s >= 0),
    lateness_ms           DOUBLE USING COMPRESSION alp,
    power_avg_1s_w        DECIMAL(8, 3) USING COMPRESSION rle CHECK (power_avg_1s_w BETWEEN 0 AND 5000)  -- nvidia-smi's 1 s average (002)
);

INSERT INTO power_trace_007
SELECT trace_key, t_ns, wall_ns, power_w, power_instant_w, energy_j, temp_c, sm_clock_mhz, mem_clock_mhz,
       util_gpu, util_mem, vram_used_mb, clocks_event_reasons, pstate, read_ok, dt_s, lateness_ms, power_avg_1s_w
FROM power_trace;

DROP TABLE power_trace;
ALTER TABLE power_trace_007 RENAME TO power_trace;

-- power_trace with the trace contract's types (agents/trace_schema.py: the sensor columns
-- as DOUBLE), keyed by trace_key: what the dashboard and export read, one run x device at a
-- time (a filter on trace_key and t_ns still reaches the scan and skips row groups).
CREATE OR REPLACE VIEW v_power_trace_values AS
SELECT
    trace_key, t_ns, wall_ns,
    power_w::DOUBLE AS power_w, power_instant_w::DOUBLE AS power_instant_w, energy_j,
    temp_c::DOUBLE AS temp_c, sm_clock_mhz::DOUBLE AS sm_clock_mhz, mem_clock_mhz::DOUBLE AS mem_clock_mhz,
    util_gpu::DOUBLE AS util_gpu, util_mem::DOUBLE AS util_mem, vram_used_mb, clocks_event_reasons,
    pstate, read_ok, dt_s, lateness_ms, power_avg_1s_w::DOUBLE AS power_avg_1s_w
FROM power_trace;

CREATE OR REPLACE VIEW v_power_trace AS
SELECT
    rd.run_id, rd.device_uid, pt.t_ns, pt.wall_ns, rd.device_uuid,
    pt.power_w, pt.power_instant_w, pt.energy_j, pt.temp_c, pt.sm_clock_mhz, pt.mem_clock_mhz,
    pt.util_gpu, pt.util_mem, pt.vram_used_mb, pt.clocks_event_reasons, pt.pstate, pt.read_ok,
    pt.dt_s, pt.lateness_ms, pt.power_avg_1s_w, rd.host, rd.clock, rd.source
FROM v_power_trace_values pt
JOIN run_devices rd USING (trace_key);
