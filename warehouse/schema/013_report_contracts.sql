-- 013_report_contracts: experiment_results accepts report schema version 2, the typed
-- contracts of experiments/contracts/ (every figure present, null when absent; a failed
-- experiment's figures null). Rows of version 1 stay as they were stored; ingest upgrades a
-- version-1 artifact to 2 (experiments.contracts.report.upgrade_report_v1) before storing it.
-- DuckDB cannot change a CHECK in place: the table is rebuilt with the same columns.

CREATE TABLE experiment_results_012 (
    run_id          VARCHAR NOT NULL,
    device_uid      VARCHAR NOT NULL,
    experiment      VARCHAR NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version IN (1, 2)),
    quality         VARCHAR,
    payload_json    VARCHAR NOT NULL,
    PRIMARY KEY (run_id, device_uid, experiment)
);

INSERT INTO experiment_results_012
SELECT run_id, device_uid, experiment, schema_version, quality, payload_json FROM experiment_results;

DROP TABLE experiment_results;
ALTER TABLE experiment_results_012 RENAME TO experiment_results;
