-- 002_imports: what importing foreign recordings (nvidia-smi logs, TR122 packs) needs.
--  * run_devices.clock: which clock t_ns is on. 'monotonic' for the poller; 'wall' for an
--    nvidia-smi log, which has no monotonic clock (t_ns = wall_ns = UTC epoch ns).
--  * run_devices.source: how the run reached the warehouse (artifact | arrow | tr122 | nvidia-smi).
--  * power_trace.power_avg_1s_w: nvidia-smi's power.draw (a 1 s average) when the log also has
--    power.draw.average, which then goes to power_w.
-- DuckDB cannot add a column with a CHECK constraint, so ingest validates these values
-- (clock in CLOCKS, source in SOURCES, power_avg_1s_w in 0..5000 W) before writing.

ALTER TABLE run_devices ADD COLUMN clock VARCHAR NOT NULL DEFAULT 'monotonic';
ALTER TABLE run_devices ADD COLUMN source VARCHAR NOT NULL DEFAULT 'artifact';
ALTER TABLE power_trace ADD COLUMN power_avg_1s_w DOUBLE;
