-- Exact rollups of the archive for one tier, over one time range (DataFusion SQL).
--
-- Reads `deduped`: the range's events, each event_id once (dedup.sql).
-- Placeholders, filled by strata-batch (integers only, never text from a user):
--   {step_ms}  bucket width in ms (60000 for rollup_1m, 3600000 for rollup_1h)
--   {ln_gamma} ln γ of the quantile sketch (strata_shared::sketch::LN_GAMMA)
--
-- Quantiles are exact: linear interpolation between the closest ranks of the sorted values (as
-- DuckDB's quantile_cont and NumPy's default do), computed here from the sorted array rather than
-- with DataFusion 55's percentile_cont, whose interpolation is off by up to ~1e-6 relative.
-- Next to the exact quantiles each row stores a mergeable sketch (sketch_keys, sketch_counts:
-- logarithmic buckets, 1 % relative accuracy; see strata_shared::sketch) so that quantiles over
-- windows of any width can be merged from minute rows.
-- Changing this file and recomputing a range rewrites that range's history.
WITH deduped_in_buckets AS (
    SELECT *, timestamp_ms - (timestamp_ms % {step_ms}) AS start_ms FROM deduped
),
grouped AS (
    SELECT
        series_id,
        start_ms,
        first_value(metric_name) AS metric_name,
        first_value(source) AS source,
        first_value(tags) AS tags,
        count(*) AS count,
        sum(value) AS sum,
        min(value) AS min,
        max(value) AS max,
        array_agg(value ORDER BY value) AS v
    FROM deduped_in_buckets
    GROUP BY series_id, start_ms
),
bucketed AS (
    SELECT series_id, start_ms, key, count(*) AS n
    FROM (
        SELECT series_id, start_ms,
               CASE WHEN value > 0 THEN 1000000 + CAST(ceil(ln(value) / {ln_gamma}) AS INT)
                    WHEN value < 0 THEN -1000000 - CAST(ceil(ln(-value) / {ln_gamma}) AS INT)
                    ELSE 0 END AS key
        FROM deduped_in_buckets
    )
    GROUP BY series_id, start_ms, key
),
sketches AS (
    SELECT series_id, start_ms,
           array_agg(key ORDER BY key) AS sketch_keys,
           array_agg(n ORDER BY key) AS sketch_counts
    FROM bucketed
    GROUP BY series_id, start_ms
),
ranked AS (
    -- Rank position q·(n−1) of each quantile (0-based); v is 1-based.
    SELECT *,
           0.5 * (count - 1) AS r50, 0.9 * (count - 1) AS r90,
           0.95 * (count - 1) AS r95, 0.99 * (count - 1) AS r99
    FROM grouped
)
SELECT
    ranked.series_id, ranked.start_ms, metric_name, source, tags, count, sum, min, max,
    v[CAST(floor(r50) AS BIGINT) + 1] + (v[CAST(ceil(r50) AS BIGINT) + 1] - v[CAST(floor(r50) AS BIGINT) + 1]) * (r50 - floor(r50)) AS p50,
    v[CAST(floor(r90) AS BIGINT) + 1] + (v[CAST(ceil(r90) AS BIGINT) + 1] - v[CAST(floor(r90) AS BIGINT) + 1]) * (r90 - floor(r90)) AS p90,
    v[CAST(floor(r95) AS BIGINT) + 1] + (v[CAST(ceil(r95) AS BIGINT) + 1] - v[CAST(floor(r95) AS BIGINT) + 1]) * (r95 - floor(r95)) AS p95,
    v[CAST(floor(r99) AS BIGINT) + 1] + (v[CAST(ceil(r99) AS BIGINT) + 1] - v[CAST(floor(r99) AS BIGINT) + 1]) * (r99 - floor(r99)) AS p99,
    sketches.sketch_keys, sketches.sketch_counts,
    to_char(to_timestamp_millis(ranked.start_ms), '%Y-%m-%d') AS event_date
FROM ranked JOIN sketches
  ON ranked.series_id = sketches.series_id AND ranked.start_ms = sketches.start_ms
