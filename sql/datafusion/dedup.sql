-- The archived events of one time range, each event_id once (DataFusion SQL).
--
-- Placeholders, filled by strata-batch (integers only, never text from a user):
--   {from_ms}  first millisecond of the range (inclusive, a whole hour)
--   {to_ms}    end of the range (exclusive, a whole hour)
--
-- Duplicates (producer retries, the same event imported twice) are removed by event_id, keeping
-- the first copy in Kafka order. Only what the rollups compute from is kept (labels come from
-- labels.sql), so the result stays small: it is held in memory as the table `deduped`, and every
-- tier of rollup.sql and sketch.sql reads it.
SELECT series_id, value, timestamp_ms
FROM (
    SELECT series_id, value, timestamp_ms,
           row_number() OVER (PARTITION BY event_id ORDER BY kafka_partition, kafka_offset) AS copy
    FROM events
    WHERE timestamp_ms >= {from_ms} AND timestamp_ms < {to_ms}
      AND event_date >= to_char(to_timestamp_millis({from_ms}), '%Y-%m-%d')
      AND event_date <= to_char(to_timestamp_millis({to_ms} - 1), '%Y-%m-%d')
)
WHERE copy = 1
