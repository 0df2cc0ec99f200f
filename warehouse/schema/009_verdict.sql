-- 009_verdict: the fleet verdict of every run x device, as the driver judged it when the run
-- ended (warehouse/verdict.py holds the rules; `fleetphysics verdict` judges live). A later
-- run can change an earlier run's peers: the stored verdict is the one given at the time.
CREATE TABLE fleet_verdicts (
    run_id         VARCHAR NOT NULL,
    device_uid     VARCHAR NOT NULL,
    host           VARCHAR,
    gpu_name       VARCHAR,
    simulated      BOOLEAN NOT NULL,
    verdict        VARCHAR NOT NULL CHECK (verdict IN ('ready', 'caution', 'not_ready')),
    reasons_json   VARCHAR NOT NULL,           -- list of plain-words reasons
    outliers_json  VARCHAR NOT NULL,           -- list of {figure, value, peer_median, robust_z, n_peers}
    n_peers        INTEGER CHECK (n_peers IS NULL OR n_peers >= 0),
    judged_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, device_uid)
);

CREATE OR REPLACE VIEW v_fleet_verdict AS
SELECT
    v.run_id, v.device_uid, v.host, v.gpu_name, v.simulated, v.verdict,
    CAST(v.reasons_json AS JSON) AS reasons, CAST(v.outliers_json AS JSON) AS outliers,
    json_array_length(CAST(v.reasons_json AS JSON)) AS n_reasons, v.n_peers, v.judged_at,
    r.started_wall_ns
FROM fleet_verdicts v
LEFT JOIN runs r USING (run_id);
