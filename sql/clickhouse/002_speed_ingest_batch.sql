-- How a batch reaches speed_rollup_1m: as ONE row of `speed_ingest_batch` (a Null table: it
-- stores nothing), whose columns are arrays with one element per rollup row — the rows of every
-- (series, minute) of the batch, then one offset marker per Kafka partition. The materialized view
-- unfolds the arrays (ARRAY JOIN) into ONE part of `speed_rollup_1m`: the partition key, the ingest
-- day, is a constant of the row. Rollups and offsets are therefore one atomic write.
--
-- Why one row: ClickHouse commits the rows it has parsed when an HTTP insert's body ends early —
-- a client killed or cut off mid-request — even without the body's end (measured on 18.16, and
-- ClickHouse issues 9666 and 34725). With one row per rollup a cut body would commit a prefix of
-- the batch without its markers (they come last), and the batch would be counted again. A cut
-- single row cannot be parsed, so nothing of it is committed.
--
-- Replaces the row-per-rollup `speed_ingest` and its view (dropped here).

DROP TABLE IF EXISTS {db}.speed_rollup_1m_mv;

DROP TABLE IF EXISTS {db}.speed_ingest;

CREATE TABLE IF NOT EXISTS {db}.speed_ingest_batch
(
    ingest_day         Date,
    metric_names       Array(String),
    series_ids         Array(UInt64),
    minutes            Array(DateTime),
    sources            Array(String),
    tag_keys_per_row   Array(Array(String)),
    tag_values_per_row Array(Array(String)),
    counts             Array(UInt64),
    totals             Array(Float64),
    mins               Array(Float64),
    maxes              Array(Float64),
    values_per_row     Array(Array(Float64)),
    kafka_offsets      Array(Int64)
) ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.speed_rollup_1m_batch_mv TO {db}.speed_rollup_1m AS
SELECT
    metric_name,
    series_id,
    minute,
    any(src) AS source,
    any(tk) AS tag_keys,
    any(tv) AS tag_values,
    ingest_day,
    sumState(c) AS cnt,
    sumState(x) AS total,
    minState(lo) AS mn,
    maxState(hi) AS mx,
    quantilesTDigestArrayState(0.5, 0.9, 0.95, 0.99)(v) AS q,
    maxState(o) AS kafka_offset
FROM {db}.speed_ingest_batch
ARRAY JOIN metric_names AS metric_name, series_ids AS series_id, minutes AS minute, sources AS src,
           tag_keys_per_row AS tk, tag_values_per_row AS tv, counts AS c, totals AS x, mins AS lo,
           maxes AS hi, values_per_row AS v, kafka_offsets AS o
GROUP BY metric_name, series_id, minute, ingest_day;
