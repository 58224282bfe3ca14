-- The label columns of the events of one time range (DataFusion SQL). strata-batch keeps the
-- first row of each series_id (a series' labels are the same in every row: the id is a hash of
-- them) and holds the result in memory as the table `labels`, joined to each tier's rows.
--
-- Placeholders, filled by strata-batch (integers only): {from_ms}, {to_ms} as in dedup.sql.
SELECT series_id, metric_name, source, tags
FROM events
WHERE timestamp_ms >= {from_ms} AND timestamp_ms < {to_ms}
  AND event_date >= to_char(to_timestamp_millis({from_ms}), '%Y-%m-%d')
  AND event_date <= to_char(to_timestamp_millis({to_ms} - 1), '%Y-%m-%d')
