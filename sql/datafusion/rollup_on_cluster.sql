-- Both tiers of rollup.sql in ONE job, for a recompute on a Ballista cluster
-- (batch.engine = "ballista"). On the cluster `deduped` (dedup_on_cluster.sql: a window over
-- event_id, the costly part of the job: a shuffle of every event) is a view, which a query per
-- tier would read and deduplicate twice; here GROUPING SETS put each event into its minute and
-- its hour in one aggregation. The statistics are rollup.sql's, column for column (the embedded
-- engine runs rollup.sql per tier; batch/tests/integration/ballista.rs compares the two).
-- `step_ms` tells the tiers apart (60000: rollup_1m, 3600000: rollup_1h); strata-batch splits
-- the rows by it (batch/src/recompute/on_cluster.rs) and drops it.
-- No placeholders.
WITH stamped AS (
    SELECT
        series_id,
        value,
        timestamp_ms,
        timestamp_ms - (timestamp_ms % 60000) AS minute_ms,
        timestamp_ms - (timestamp_ms % 3600000) AS hour_ms
    FROM deduped
),
grouped AS (
    SELECT
        series_id,
        minute_ms,
        hour_ms,
        count(*) AS count,
        sum(value) AS sum,
        min(value) AS min,
        max(value) AS max,
        strata_quantiles(value) AS q,
        max(timestamp_ms) AS last_ms,
        last_value(value ORDER BY timestamp_ms, value) AS last
    FROM stamped
    GROUP BY GROUPING SETS ((series_id, minute_ms), (series_id, hour_ms))
)
SELECT
    CASE WHEN minute_ms IS NULL THEN 3600000 ELSE 60000 END AS step_ms,
    series_id, coalesce(minute_ms, hour_ms) AS start_ms, count, sum, min, max,
    q['p50'] AS p50, q['p90'] AS p90, q['p95'] AS p95, q['p99'] AS p99,
    q['sketch_keys'] AS sketch_keys, q['sketch_counts'] AS sketch_counts, last, last_ms,
    to_char(to_timestamp_millis(coalesce(minute_ms, hour_ms)), '%Y-%m-%d') AS event_date
FROM grouped
