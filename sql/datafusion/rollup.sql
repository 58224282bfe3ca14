-- Exact rollups of the archive for one tier, over one time range (DataFusion SQL).
--
-- Reads `deduped` (the range's events, each event_id once: dedup.sql). Each row's labels
-- (metric_name, source, tags, from labels.sql) are attached by the commit once the rows are in
-- their final order (batch/src/recompute/rows.rs), not joined here.
-- Placeholders, filled by strata-batch (integers only, never text from a user):
--   {step_ms}  bucket width in ms (60000 for rollup_1m, 3600000 for rollup_1h)
--
-- strata_quantiles(value) is strata-batch's aggregate (batch/src/recompute/quantiles.rs): per
-- bucket the exact p50/p90/p95/p99 — linear interpolation between the closest ranks of the
-- sorted values, as DuckDB's quantile_cont and NumPy's default: for n values and quantile q,
-- position p = q·(n−1), result v[⌊p⌋] + (v[⌈p⌉] − v[⌊p⌋])·(p − ⌊p⌋) — and the bucket's mergeable
-- sketch (sketch_keys, sketch_counts: logarithmic buckets with 1 % relative accuracy, see
-- strata_shared::sketch), so that quantiles over windows of any width can be merged from minute
-- rows. DataFusion 55's own percentile_cont interpolates off by up to ~1e-6 relative.
-- `last` is the bucket's newest value (at `last_ms`; of two at one time, the larger), what a
-- sample series (tag __kind__ = 'sample') shows — the same rule as the speed layer's.
-- Changing this file and recomputing a range rewrites that range's history.
WITH grouped AS (
    SELECT
        series_id,
        timestamp_ms - (timestamp_ms % {step_ms}) AS start_ms,
        count(*) AS count,
        sum(value) AS sum,
        min(value) AS min,
        max(value) AS max,
        strata_quantiles(value) AS q,
        max(timestamp_ms) AS last_ms,
        last_value(value ORDER BY timestamp_ms, value) AS last
    FROM deduped
    GROUP BY series_id, timestamp_ms - (timestamp_ms % {step_ms})
)
SELECT
    series_id, start_ms, count, sum, min, max,
    q['p50'] AS p50, q['p90'] AS p90, q['p95'] AS p95, q['p99'] AS p99,
    q['sketch_keys'] AS sketch_keys, q['sketch_counts'] AS sketch_counts, last, last_ms,
    to_char(to_timestamp_millis(start_ms), '%Y-%m-%d') AS event_date
FROM grouped
