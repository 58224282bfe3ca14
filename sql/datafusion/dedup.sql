-- The archived events of one time range, each event_id once (DataFusion SQL).
--
-- Placeholders, filled by strata-batch (integers only, never text from a user):
--   {from_ms}  first millisecond of the range (inclusive, a whole hour)
--   {to_ms}    end of the range (exclusive, a whole hour)
--
-- Duplicates (producer retries, the same event imported twice) are removed by event_id, keeping
-- the first copy in Kafka order (a hash aggregation by event_id, cheaper than ranking every
-- copy with a window function). Only what the rollups compute from is kept (labels come from
-- labels.sql), so the result stays small: it is held in memory as the table `deduped`, and every
-- tier of rollup.sql and sketch.sql reads it.
SELECT first_value(series_id ORDER BY kafka_partition, kafka_offset) AS series_id,
       first_value(value ORDER BY kafka_partition, kafka_offset) AS value,
       first_value(timestamp_ms ORDER BY kafka_partition, kafka_offset) AS timestamp_ms
FROM events
WHERE timestamp_ms >= {from_ms} AND timestamp_ms < {to_ms}
  AND event_date >= to_char(to_timestamp_millis({from_ms}), '%Y-%m-%d')
  AND event_date <= to_char(to_timestamp_millis({to_ms} - 1), '%Y-%m-%d')
GROUP BY event_id
