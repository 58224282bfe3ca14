"""The anchor of `make bench-batch`: DuckDB computing Strata's exact rollups over the archive's
Parquet files. Dedup by event_id (first copy in Kafka order), then per (series, minute) and
(series, hour): count, sum, min, max, quantile_cont p50/p90/p95/p99. Prints duckdb_s=<seconds>
(query time only: Python and DuckDB start-up are not counted).

usage: duckdb_rollup.py FILES_JSON OUT_DIR FROM_MS TO_MS
"""
import json
import sys
import time

import duckdb

files, out, from_ms, to_ms = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
con = duckdb.connect()
started = time.perf_counter()
con.execute(
    f"""CREATE TEMP TABLE deduped AS
        SELECT series_id, value, timestamp_ms FROM read_parquet({files!r})
        WHERE timestamp_ms >= {from_ms} AND timestamp_ms < {to_ms}
        QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY kafka_partition, kafka_offset) = 1"""
)
for name, step in (("1m", 60_000), ("1h", 3_600_000)):
    con.execute(
        f"""COPY (
              SELECT series_id, timestamp_ms - timestamp_ms % {step} AS start_ms,
                     count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
                     quantile_cont(value, 0.5) AS p50, quantile_cont(value, 0.9) AS p90,
                     quantile_cont(value, 0.95) AS p95, quantile_cont(value, 0.99) AS p99
              FROM deduped GROUP BY ALL
            ) TO '{out}/{name}.parquet' (FORMAT parquet)"""
    )
print(f"duckdb_s={time.perf_counter() - started:.3f}")
