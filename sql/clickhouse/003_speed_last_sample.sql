-- Speed layer: the newest sample of each (series, minute) besides the statistics of its events.
-- A sample series (tag __kind__ = 'sample': a gauge's or a counter's values, as Prometheus remote
-- write, OTLP and StatsD gauges report them) is shown by its newest sample in a window, so the
-- rollups keep it: `last` (argMax of the value by its time) and `last_ms` (that time, Unix ms).
--
-- speed_rollup_1m gains the two columns in 001 for a new database; strata-speed adds them to a
-- table of an earlier version before this file runs (ClickHouse 18.16 has no
-- ADD COLUMN IF NOT EXISTS; speed/src/clickhouse/schema.rs checks system.columns first):
--   last    AggregateFunction(argMax, Float64, Int64)
--   last_ms AggregateFunction(max, Int64)
--
-- A batch now goes through speed_ingest_batch_v2 (002's columns, then the newest value and time
-- of each row) and its view; 002's table and view are dropped (a view must give every column of
-- its target, so the old one cannot feed the wider table). A strata-speed of an earlier version
-- still running during an upgrade then fails its inserts and retries or stops: nothing of its
-- batches is written, so nothing is lost or counted twice — the new version reads them again.

DROP TABLE IF EXISTS {db}.speed_rollup_1m_batch_mv;

DROP TABLE IF EXISTS {db}.speed_ingest_batch;

CREATE TABLE IF NOT EXISTS {db}.speed_ingest_batch_v2
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
    kafka_offsets      Array(Int64),
    last_values        Array(Float64),
    last_times         Array(Int64)
) ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.speed_rollup_1m_batch_v2_mv TO {db}.speed_rollup_1m AS
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
    maxState(o) AS kafka_offset,
    argMaxState(lv, lt) AS last,
    maxState(lt) AS last_ms
FROM {db}.speed_ingest_batch_v2
ARRAY JOIN metric_names AS metric_name, series_ids AS series_id, minutes AS minute, sources AS src,
           tag_keys_per_row AS tk, tag_values_per_row AS tv, counts AS c, totals AS x, mins AS lo,
           maxes AS hi, values_per_row AS v, kafka_offsets AS o, last_values AS lv,
           last_times AS lt
GROUP BY metric_name, series_id, minute, ingest_day;
