//! What the SQL protocol tests share: the questions every client must answer like
//! `POST /api/v1/sql`, the sandbox escapes every client must be refused, and how answers compare.

/// Counts, group by metric and by tag, a quantile over a time window, a tier summary and a join
/// of `rollup_1h` with `events`; each ordered so that answers compare row by row.
pub const QUERIES: &[&str] = &[
    "SELECT count(*) AS n FROM events",
    "SELECT metric_name, count(*) AS n FROM events GROUP BY metric_name ORDER BY metric_name",
    "SELECT tags['region'] AS region, count(*) AS n, sum(value) AS total FROM events \
     GROUP BY tags['region'] ORDER BY region",
    "SELECT metric_name, median(value) AS p50, max(value) AS top FROM events \
     WHERE timestamp_ms >= (SELECT min(timestamp_ms) FROM events) \
     AND timestamp_ms < (SELECT min(timestamp_ms) FROM events) + 1800000 \
     GROUP BY metric_name ORDER BY metric_name",
    "SELECT source, sum(count) AS n, max(p99) AS p99 FROM rollup_1h GROUP BY source ORDER BY source",
    "SELECT h.metric_name, h.start_ms, h.count, count(e.event_id) AS events \
     FROM rollup_1h h JOIN events e ON e.metric_name = h.metric_name AND e.series_id = h.series_id \
     AND e.timestamp_ms >= h.start_ms AND e.timestamp_ms < h.start_ms + 3600000 \
     GROUP BY h.metric_name, h.start_ms, h.count, h.series_id ORDER BY 1, 2, 3, 4 LIMIT 20",
];

/// Statements that would change the lake or the engine: refused, saying the session is read-only.
pub const WRITES: &[&str] = &[
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT * FROM events",
    "DROP TABLE events",
    "INSERT INTO events SELECT * FROM events",
    "DELETE FROM events",
    "UPDATE events SET value = 0",
    "COPY (SELECT * FROM events) TO '/tmp/strata-sql-stolen.csv'",
    "SET datafusion.execution.batch_size = 1",
];

/// Attempts to read outside the lake: refused (by whatever error), never answered.
pub const ESCAPES: &[&str] = &[
    "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_csv('/etc/passwd')",
];

/// A query no time limit under a few seconds lets finish (billions of rows).
pub const ENDLESS: &str =
    "SELECT count(*) FROM events a, events b, events c WHERE a.value + b.value > c.value";

/// CSV rows (after the header) as cells.
pub fn cells(csv: &str) -> Vec<Vec<String>> {
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

/// Same rows, numbers compared as numbers (clients print floats differently).
pub fn same(a: &[Vec<String>], b: &[Vec<String>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| match (p.parse::<f64>(), q.parse::<f64>()) {
                        (Ok(p), Ok(q)) => (p - q).abs() <= 1e-9 * p.abs().max(1.0),
                        _ => p == q,
                    })
        })
}
