-- 010_run_state: run-level state, so "which runs were partial, and which host was lost and
-- why" is a SQL query.
--  * runs.run_state: what happened to the run as a whole, as the fleet driver decided it:
--    completed (every host done), partial (some host lost or failed, the others done),
--    aborted (interrupted, or too many hosts lost), failed (no host finished). NULL for a
--    run ingested from artifact dirs or imported, which no driver summed up. DuckDB cannot
--    add a column with a CHECK: warehouse/run_state.py validates it before writing.
--  * run_hosts: one row per run x host (the host label: run_devices.host and the artifact
--    dir), with its Ray node id and hostname, its state and why.

ALTER TABLE runs ADD COLUMN run_state VARCHAR;

CREATE TABLE run_hosts (
    run_id              VARCHAR NOT NULL,
    host                VARCHAR NOT NULL,   -- the label: hostname, or hostname-<node id digits> when shared
    node_id             VARCHAR,            -- the Ray node (hex); the identity the label stands for
    hostname            VARCHAR,
    state               VARCHAR NOT NULL CHECK (state IN ('done', 'lost', 'failed', 'skipped')),
    reason              VARCHAR,            -- why lost, failed or skipped; NULL when done
    first_seen_wall_ns  BIGINT,             -- the host's agent answered its check
    last_seen_wall_ns   BIGINT,             -- its last answer (status, or the run's result)
    PRIMARY KEY (run_id, host),
    CHECK (last_seen_wall_ns IS NULL OR first_seen_wall_ns IS NULL OR last_seen_wall_ns >= first_seen_wall_ns),
    CHECK (state = 'done' OR reason IS NOT NULL)
);

-- One row per run x host: the run's state beside the host's, with what of the host is stored.
CREATE OR REPLACE VIEW v_run_hosts AS
SELECT
    rh.run_id, r.run_state, rh.host, rh.node_id, rh.hostname, rh.state, rh.reason,
    make_timestamp(rh.first_seen_wall_ns // 1000) AS first_seen,
    make_timestamp(rh.last_seen_wall_ns // 1000) AS last_seen,
    count(rd.device_uid) AS devices_stored,
    coalesce(sum(rd.trace_rows), 0) AS trace_rows_stored
FROM run_hosts rh
LEFT JOIN runs r USING (run_id)
LEFT JOIN run_devices rd ON rd.run_id = rh.run_id AND rd.host = rh.host
GROUP BY ALL;
