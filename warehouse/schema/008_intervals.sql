-- 008_intervals: every timing and fitted figure with its 95 % interval and resolved flag.
-- One row per run x device x figure (x power field for the sensor response), read from the
-- stored experiment JSON (experiment_results), where the analyses write
-- <name>_<unit>, <name>_se_<unit>, <name>_ci_low_<unit>, <name>_ci_high_<unit> and
-- <name>_resolved. The idle baseline carries its robust mean and SEM_eff: its interval is
-- mean +- 1.96 SEM_eff. A figure a result lacks is left out, never a row of nulls.
CREATE OR REPLACE VIEW v_figure_intervals AS
WITH
figs(experiment, figure, unit) AS (VALUES
    ('instrument_response', 'update_period', 'ms'), ('instrument_response', 'rise', 'ms'),
    ('instrument_response', 'delay', 'ms'), ('instrument_response', 'window', 'ms'),
    ('heat_soak', 'tau', 's'), ('heat_soak', 't_inf', 'c'), ('heat_soak', 'equilibrium_predicted', 's'),
    ('heat_soak', 'slope', 'c_per_min')
),
per_field AS (  -- a suite run's report keys fields at the top, an analyze result under "fields"
    SELECT run_id, device_uid, experiment,
           coalesce(json_extract(payload_json, '$.figures.fields'), json_extract(payload_json, '$.figures')) AS f
    FROM experiment_results WHERE experiment IN ('instrument_response', 'baseline')
),
field_docs AS (
    SELECT run_id, device_uid, experiment, k AS field, json_extract(f, '$."' || k || '"') AS doc
    FROM (SELECT *, unnest(json_keys(f)) AS k FROM per_field)
    WHERE k IN ('power_w', 'power_instant_w', 'power_avg_1s_w')
),
docs AS (
    SELECT run_id, device_uid, experiment, field, doc FROM field_docs WHERE experiment = 'instrument_response'
    UNION ALL
    SELECT run_id, device_uid, experiment, NULL AS field, json_extract(payload_json, '$.figures') AS doc
    FROM experiment_results WHERE experiment = 'heat_soak'
),
timed AS (
    SELECT d.run_id, d.device_uid, d.experiment, d.field, g.figure, g.unit,
           TRY_CAST(json_extract_string(d.doc, '$.' || g.figure || '_' || g.unit) AS DOUBLE) AS value,
           TRY_CAST(json_extract_string(d.doc, '$.' || g.figure || '_se_' || g.unit) AS DOUBLE) AS se,
           TRY_CAST(json_extract_string(d.doc, '$.' || g.figure || '_ci_low_' || g.unit) AS DOUBLE) AS ci_low,
           TRY_CAST(json_extract_string(d.doc, '$.' || g.figure || '_ci_high_' || g.unit) AS DOUBLE) AS ci_high,
           TRY_CAST(json_extract_string(d.doc, '$.' || g.figure || '_resolved') AS BOOLEAN) AS resolved,
           json_extract_string(d.doc, '$.quality') AS quality
    FROM docs d JOIN figs g ON g.experiment = d.experiment
),
baseline_docs AS (  -- per field, or one flat field (a suite run's report names it in "field")
    SELECT run_id, device_uid, field, doc FROM field_docs WHERE experiment = 'baseline'
    UNION ALL
    SELECT run_id, device_uid, coalesce(json_extract_string(f, '$.field'), 'power_w') AS field, f AS doc
    FROM per_field WHERE experiment = 'baseline' AND json_extract(f, '$.mean_robust_w') IS NOT NULL
),
idle AS (
    SELECT run_id, device_uid, 'baseline' AS experiment, field, 'idle' AS figure, 'w' AS unit,
           TRY_CAST(json_extract_string(doc, '$.mean_robust_w') AS DOUBLE) AS value,
           TRY_CAST(json_extract_string(doc, '$.sem_eff_w') AS DOUBLE) AS se,
           json_extract_string(doc, '$.quality') AS quality
    FROM baseline_docs
)
SELECT run_id, device_uid, experiment, field, figure, unit, value, se, ci_low, ci_high, resolved, quality
FROM timed WHERE value IS NOT NULL OR ci_low IS NOT NULL
UNION ALL
SELECT run_id, device_uid, experiment, field, figure, unit, value, se,
       value - 1.959963984540054 * se AS ci_low, value + 1.959963984540054 * se AS ci_high,
       value IS NOT NULL AND se IS NOT NULL AS resolved, quality
FROM idle WHERE value IS NOT NULL;
