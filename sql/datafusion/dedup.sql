-- The archived events of one time range, with what removing duplicates needs (DataFusion SQL).
--
-- Placeholders, filled by strata-batch (integers only, never text from a user):
--   {from_ms}  first millisecond of the range (inclusive, a whole hour)
--   {to_ms}    end of the range (exclusive, a whole hour)
--
-- strata-batch keeps each event_id once — its first copy in Kafka order (kafka_partition,
-- kafka_offset) — by a hash of event_id over these rows (batch/src/recompute/dedup.rs), and
-- holds series_id, value and timestamp_ms of the kept rows in memory as the table `deduped`,
-- which every tier of rollup.sql reads. (Labels come from labels.sql.)
SELECT event_id, kafka_partition, kafka_offset, series_id, value, timestamp_ms
FROM events
WHERE timestamp_ms >= {from_ms} AND timestamp_ms < {to_ms}
  AND event_date >= to_char(to_timestamp_millis({from_ms}), '%Y-%m-%d')
  AND event_date <= to_char(to_timestamp_millis({to_ms} - 1), '%Y-%m-%d')
