-- The table `labels` when a recompute runs on a Ballista cluster (batch.engine = "ballista"): one
-- row per series_id, as batch/src/recompute/mod.rs keeps in process (any row serves: a series'
-- labels are the same in every row, its id is a hash of them).
--
-- Placeholder, filled by strata-batch: {range} = labels.sql with its range filled in.
SELECT series_id,
       first_value(metric_name) AS metric_name,
       first_value(source) AS source,
       first_value(tags) AS tags
FROM (
{range}
) r
GROUP BY series_id
