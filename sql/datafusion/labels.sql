-- The labels of every series with events in one time range (DataFusion SQL): one row per
-- series_id, held in memory as the table `labels` and joined to each tier's rows.
--
-- Placeholders, filled by strata-batch (integers only): {from_ms}, {to_ms} as in dedup.sql.
SELECT series_id,
       first_value(metric_name) AS metric_name,
       first_value(source) AS source,
       first_value(tags) AS tags
FROM events
WHERE timestamp_ms >= {from_ms} AND timestamp_ms < {to_ms}
  AND event_date >= to_char(to_timestamp_millis({from_ms}), '%Y-%m-%d')
  AND event_date <= to_char(to_timestamp_millis({to_ms} - 1), '%Y-%m-%d')
GROUP BY series_id
