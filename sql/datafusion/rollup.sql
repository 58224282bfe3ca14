-- Exact rollups of the archive for one tier, over one time range (DataFusion SQL).
--
-- Reads `deduped` (the range's events, each event_id once: dedup.sql) and `labels` (labels.sql).
-- Placeholders, filled by strata-batch (integers only, never text from a user):
--   {step_ms}  bucket width in ms (60000 for rollup_1m, 3600000 for rollup_1h)
--
-- Quantiles are exact: linear interpolation between the closest ranks of the sorted values (as
-- DuckDB's quantile_cont and NumPy's default do): for n values and quantile q, position
-- p = q·(n−1), result v[⌊p⌋] + (v[⌈p⌉] − v[⌊p⌋])·(p − ⌊p⌋), with v ranked by a window function
-- (a sort, which scales to many buckets) rather than with DataFusion 55's percentile_cont, whose
-- interpolation is off by up to ~1e-6 relative. Rows come out ordered by (series_id, start_ms):
-- strata-batch adds each row's mergeable sketch from sketch.sql in the same order.
-- Changing this file and recomputing a range rewrites that range's history.
WITH ranked AS (
    SELECT series_id, start_ms, value,
           row_number() OVER (PARTITION BY series_id, start_ms ORDER BY value) - 1 AS r,
           count(*) OVER (PARTITION BY series_id, start_ms) AS n
    FROM (SELECT series_id, timestamp_ms - (timestamp_ms % {step_ms}) AS start_ms, value FROM deduped)
),
grouped AS (
    SELECT
        series_id,
        start_ms,
        count(*) AS count,
        sum(value) AS sum,
        min(value) AS min,
        max(value) AS max,
        max(CASE WHEN r = floor(0.5 * (n - 1)) THEN value END) AS lo50,
        max(CASE WHEN r = ceil(0.5 * (n - 1)) THEN value END) AS hi50,
        max(CASE WHEN r = floor(0.9 * (n - 1)) THEN value END) AS lo90,
        max(CASE WHEN r = ceil(0.9 * (n - 1)) THEN value END) AS hi90,
        max(CASE WHEN r = floor(0.95 * (n - 1)) THEN value END) AS lo95,
        max(CASE WHEN r = ceil(0.95 * (n - 1)) THEN value END) AS hi95,
        max(CASE WHEN r = floor(0.99 * (n - 1)) THEN value END) AS lo99,
        max(CASE WHEN r = ceil(0.99 * (n - 1)) THEN value END) AS hi99
    FROM ranked
    GROUP BY series_id, start_ms
)
SELECT
    g.series_id, g.start_ms, l.metric_name, l.source, l.tags, g.count, g.sum, g.min, g.max,
    lo50 + (hi50 - lo50) * (0.5 * (count - 1) - floor(0.5 * (count - 1))) AS p50,
    lo90 + (hi90 - lo90) * (0.9 * (count - 1) - floor(0.9 * (count - 1))) AS p90,
    lo95 + (hi95 - lo95) * (0.95 * (count - 1) - floor(0.95 * (count - 1))) AS p95,
    lo99 + (hi99 - lo99) * (0.99 * (count - 1) - floor(0.99 * (count - 1))) AS p99,
    to_char(to_timestamp_millis(g.start_ms), '%Y-%m-%d') AS event_date
FROM grouped g JOIN labels l ON g.series_id = l.series_id
ORDER BY g.series_id, g.start_ms
