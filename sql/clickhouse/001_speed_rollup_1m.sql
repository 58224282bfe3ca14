-- Speed layer: 1-minute rollups per series, written exactly once.
--
-- strata-speed pre-aggregates a batch of events per (series, minute) and sends it as ONE insert
-- into `speed_ingest` (a Null table: it stores nothing). The materialized view turns that insert
-- into ONE part of `speed_rollup_1m`: the table's partition key is the ingest day, a constant per
-- insert, so an insert can never be half visible. The same insert carries one marker row per
-- Kafka partition (metric_name = '', series_id = partition, source = topic) whose kafka_offset is
-- the last offset the batch covers; after a crash strata-speed resumes after maxMerge(kafka_offset).
-- Rollup and offset are therefore one atomic write.
--
-- Portable between ClickHouse 18.16 and current releases: DateTime (not DateTime64), tag pairs as
-- two arrays (not Map), no TTL (retention drops old partitions), ENGINE = X() PARTITION BY ... ORDER BY.
-- {db} is replaced by the quoted database name from clickhouse.database.

CREATE TABLE IF NOT EXISTS {db}.speed_ingest
(
    metric_name  String,
    series_id    UInt64,
    minute       DateTime,
    source       String,
    tag_keys     Array(String),
    tag_values   Array(String),
    ingest_day   Date,
    cnt          UInt64,
    total        Float64,
    mn           Float64,
    mx           Float64,
    vals         Array(Float64),
    kafka_offset Int64
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS {db}.speed_rollup_1m
(
    metric_name  String,
    series_id    UInt64,
    minute       DateTime,
    source       String,
    tag_keys     Array(String),
    tag_values   Array(String),
    ingest_day   Date,
    cnt          AggregateFunction(sum, UInt64),
    total        AggregateFunction(sum, Float64),
    mn           AggregateFunction(min, Float64),
    mx           AggregateFunction(max, Float64),
    q            AggregateFunction(quantilesTDigestArray(0.5, 0.9, 0.95, 0.99), Array(Float64)),
    kafka_offset AggregateFunction(max, Int64)
) ENGINE = AggregatingMergeTree() PARTITION BY ingest_day ORDER BY (metric_name, series_id, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.speed_rollup_1m_mv TO {db}.speed_rollup_1m AS
SELECT
    metric_name,
    series_id,
    minute,
    any(source) AS source,
    any(tag_keys) AS tag_keys,
    any(tag_values) AS tag_values,
    ingest_day,
    sumState(cnt) AS cnt,
    sumState(total) AS total,
    minState(mn) AS mn,
    maxState(mx) AS mx,
    quantilesTDigestArrayState(0.5, 0.9, 0.95, 0.99)(vals) AS q,
    maxState(kafka_offset) AS kafka_offset
FROM {db}.speed_ingest
GROUP BY metric_name, series_id, minute, ingest_day;
