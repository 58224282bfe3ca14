-- The table `deduped` when a recompute runs on a Ballista cluster (batch.engine = "ballista"):
-- the rule batch/src/recompute/dedup.rs applies in process, as SQL a cluster can split by
-- event_id — each event_id once, its first copy in Kafka order (kafka_partition, kafka_offset) —
-- with the columns rollup.sql reads.
--
-- Placeholder, filled by strata-batch: {range} = dedup.sql with its range filled in.
SELECT series_id, value, timestamp_ms
FROM (
    SELECT series_id, value, timestamp_ms,
           row_number() OVER (
               PARTITION BY event_id ORDER BY kafka_partition, kafka_offset
           ) AS copy
    FROM (
{range}
    ) r
) ranked
WHERE copy = 1
