-- The mergeable quantile sketch of every bucket of one tier (DataFusion SQL): logarithmic
-- buckets with 1 % relative accuracy (see strata_shared::sketch), as (key, count) rows ordered
-- by (series_id, start_ms, key). strata-batch folds them into the list columns sketch_keys and
-- sketch_counts of the tier's rows, so that quantiles over windows of any width can be merged
-- from minute rows.
--
-- Placeholders, filled by strata-batch (integers and constants only):
--   {step_ms}  bucket width in ms
--   {ln_gamma} ln γ of the sketch (strata_shared::sketch::LN_GAMMA)
SELECT series_id, start_ms, key, count(*) AS n
FROM (
    SELECT series_id,
           timestamp_ms - (timestamp_ms % {step_ms}) AS start_ms,
           CASE WHEN value > 0 THEN 1000000 + CAST(ceil(ln(value) / {ln_gamma}) AS INT)
                WHEN value < 0 THEN -1000000 - CAST(ceil(ln(-value) / {ln_gamma}) AS INT)
                ELSE 0 END AS key
    FROM deduped
)
GROUP BY series_id, start_ms, key
ORDER BY series_id, start_ms, key
