-- Speed layer: 1-minute rollups per series, written exactly once (how: 002_speed_ingest_batch.sql).
--
-- Besides the rollups, the table holds one marker row per Kafka partition per batch
-- (metric_name = '', series_id = partition, source = topic) whose kafka_offset is the last offset
-- the batch covers; after a crash strata-speed resumes after maxMerge(kafka_offset).
--
-- Portable between ClickHouse 18.16 and current releases: DateTime (not DateTime64), tag pairs as
-- two arrays (not Map), no TTL (retention drops old partitions), ENGINE = X() PARTITION BY ... ORDER BY.
-- {db} is replaced by the quoted database name from clickhouse.database.
--
-- `last` and `last_ms` (the newest sample of the minute, for sample series) came with 003, which
-- says how an older table gains them.
--
-- Every column is either an aggregate state or part of the sorting key: a background merge
-- collapses the rows of one sorting key, and a plain column outside it would keep an arbitrary
-- value (current releases refuse such a table). source, tag_keys and tag_values are the series'
-- labels, which series_id is a hash of, so adding them after (metric_name, series_id, minute)
-- leaves the rows that merge unchanged; the primary index stays (metric_name, series_id, minute).
-- Tables created by earlier versions with the shorter key keep working where the server accepts
-- them (their label columns hold the same value in every row of a key, so no value is lost).

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
    kafka_offset AggregateFunction(max, Int64),
    last         AggregateFunction(argMax, Float64, Int64),
    last_ms      AggregateFunction(max, Int64)
) ENGINE = AggregatingMergeTree() PARTITION BY ingest_day
  ORDER BY (metric_name, series_id, minute, source, tag_keys, tag_values)
  PRIMARY KEY (metric_name, series_id, minute);
