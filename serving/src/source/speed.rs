//! The speed layer's side of a query: ClickHouse's `speed_rollup_1m`, merged per window by
//! ClickHouse itself (`-Merge` of the stored states, t-digest quantiles included).
//!
//! Every value from a request travels as a bound parameter (`?`, escaped by the client) or as an
//! integer the program computed; no user text is spliced into SQL.
//!
//! The table's key is `(metric_name, series_id, minute)` and its partitions are ingest days, so a
//! condition on `minute` alone reads every partition of the retention. An event is accepted only
//! up to `validation.max_future` ahead of the clock that ingests it, so rows of minute `m` sit in
//! partitions of days from `m − max_future` on: every query also bounds `ingest_day` from below,
//! and reads only the partitions since its range began. Every query carries ClickHouse's own
//! `max_execution_time`, so a query the client gave up on does not go on running there.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use strata_shared::config::ClickHouseConfig;

use crate::series::SeriesInfo;
use crate::window::{Bucket, Layer, Need};

const TABLE: &str = "speed_rollup_1m";
const MINUTE_MS: i64 = 60_000;
/// Ranges up to this long are read by one ClickHouse thread per query.
const SHORT_RANGE_MS: i64 = 6 * 3_600_000;

/// ClickHouse could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SpeedError {
    /// The query failed.
    #[error("ClickHouse: {0}")]
    Query(#[from] clickhouse::error::Error),
    /// No answer within `clickhouse.request_timeout`.
    #[error("ClickHouse did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The identical query this one joined failed.
    #[error("{0}")]
    Joined(std::sync::Arc<SpeedError>),
}

/// The buckets of one query, per series.
#[derive(Debug, Default)]
struct Buckets(HashMap<u64, Vec<Bucket>>);

impl crate::cache::Weigh for Buckets {
    fn weight(&self) -> usize {
        // Never kept (the flights cache has budget 0); at least one byte so it never fits.
        1 + self
            .0
            .values()
            .map(|b| b.len() * std::mem::size_of::<Bucket>())
            .sum::<usize>()
    }
}

/// Reads the speed layer's rollups.
#[derive(Clone)]
pub struct SpeedSource {
    client: clickhouse::Client,
    timeout: std::time::Duration,
    max_future_ms: i64,
    /// Bucket queries under way, by their SQL and metric: an identical query asked meanwhile
    /// (two panels of one dashboard, `x_sum / x_count`) waits for that one instead of asking
    /// ClickHouse again. Nothing is kept once it is answered.
    flights: std::sync::Arc<crate::cache::Cache<String, Buckets, SpeedError>>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SeriesRow {
    metric_name: String,
    series_id: u64,
    source: String,
    tag_keys: Vec<String>,
    tag_values: Vec<String>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct WindowRow {
    series_id: u64,
    k: i64,
    c: u64,
    s: f64,
    lo: f64,
    hi: f64,
    lv: f64,
    lt: i64,
    qs: Vec<f64>,
}

/// `ingest_day >= … AND ((minute >= a AND minute < b) OR …)` for ms ranges (integers only).
fn ranges_sql(ranges: &[(i64, i64)], max_future_ms: i64) -> String {
    let Some(first) = ranges.iter().map(|r| r.0).min() else {
        return "0".into();
    };
    format!(
        "ingest_day >= toDate(toDateTime({})) AND {}",
        (first - max_future_ms).div_euclid(1000).max(0),
        minutes_sql(ranges)
    )
}

/// `(minute >= a AND minute < b) OR …` for ms ranges (integers only).
fn minutes_sql(ranges: &[(i64, i64)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|(a, b)| {
            format!(
                "(minute >= toDateTime({}) AND minute < toDateTime({}))",
                a.div_euclid(1000),
                b.div_euclid(1000)
            )
        })
        .collect();
    if parts.is_empty() {
        "0".into()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

impl SpeedSource {
    /// A source reading `clickhouse.database`; `max_future` is `validation.max_future`.
    pub fn new(cfg: &ClickHouseConfig, max_future: std::time::Duration) -> Self {
        let secs = cfg.request_timeout.as_secs().max(1);
        Self {
            client: strata_shared::clickhouse::client(cfg)
                .with_setting("max_execution_time", secs.to_string()),
            timeout: cfg.request_timeout,
            max_future_ms: max_future.as_millis() as i64,
            flights: std::sync::Arc::new(crate::cache::Cache::new(0)),
        }
    }

    /// Runs a query within `clickhouse.request_timeout`.
    async fn fetch<T>(&self, q: clickhouse::query::Query) -> Result<Vec<T>, SpeedError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        match tokio::time::timeout(self.timeout, q.fetch_all::<T>()).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(SpeedError::Timeout(self.timeout)),
        }
    }

    /// Metric names with data in `ranges` (ms).
    pub async fn metric_names(&self, ranges: &[(i64, i64)]) -> Result<Vec<String>, SpeedError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Name {
            metric_name: String,
        }
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<Name> = self
            .fetch(self.client.query(&format!(
                "SELECT DISTINCT metric_name FROM {TABLE} WHERE metric_name != '' AND {}",
                ranges_sql(ranges, self.max_future_ms)
            )))
            .await?;
        Ok(rows.into_iter().map(|r| r.metric_name).collect())
    }

    /// Series of the given metrics (all metrics when `None`) with data in `ranges` (ms).
    pub async fn series(
        &self,
        metrics: Option<&[String]>,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<SeriesInfo>, SpeedError> {
        let mut sql = format!(
            "SELECT metric_name, series_id, any(source) AS source, any(tag_keys) AS tag_keys, \
             any(tag_values) AS tag_values FROM {TABLE} WHERE metric_name != '' AND {}",
            ranges_sql(ranges, self.max_future_ms)
        );
        if let Some(m) = metrics {
            if m.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND metric_name IN (");
            sql.push_str(&vec!["?"; m.len()].join(","));
            sql.push(')');
        }
        sql.push_str(" GROUP BY metric_name, series_id");
        let mut q = self.client.query(&sql);
        for name in metrics.unwrap_or_default() {
            q = q.bind(name);
        }
        let rows: Vec<SeriesRow> = self.fetch(q).await?;
        Ok(rows
            .into_iter()
            .map(|r| SeriesInfo {
                metric: r.metric_name,
                series_id: r.series_id,
                source: r.source,
                tags: r.tag_keys.into_iter().zip(r.tag_values).collect(),
            })
            .collect())
    }

    /// Buckets of `series` (one metric) on the grid `t_k = start_ms + k·step_ms`: every stored
    /// minute inside `ranges` is merged into the point whose window `(t − step, t]` holds the
    /// minute's end. With `step_ms` = 60 000 and a whole-minute `start_ms` this yields one
    /// bucket per minute. The t-digest states are merged only when `need` asks for quantiles
    /// (most of the work of this query when it does).
    pub async fn buckets(
        &self,
        metric: &str,
        series: &[u64],
        ranges: &[(i64, i64)],
        (start_ms, step_ms): (i64, i64),
        need: Need,
    ) -> Result<HashMap<u64, Vec<Bucket>>, SpeedError> {
        if series.is_empty() || ranges.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<String> = series.iter().map(u64::to_string).collect();
        let quantiles = match need {
            Need::Quantiles => {
                "arrayMap(x -> toFloat64(x), quantilesTDigestArrayMerge(0.5, 0.9, 0.95, 0.99)(q))"
            }
            Need::Totals => "emptyArrayFloat64()",
        };
        // k = ceil((minute_end − start) / step), with minute_end − start > −step in range.
        let sql = format!(
            "SELECT series_id, \
                intDiv(toInt64(toUInt32(minute)) * 1000 + {MINUTE_MS} - ({start_ms}) + {step_ms} - 1, {step_ms}) AS k, \
                sumMerge(cnt) AS c, sumMerge(total) AS s, minMerge(mn) AS lo, maxMerge(mx) AS hi, \
                argMaxMerge(last) AS lv, maxMerge(last_ms) AS lt, {quantiles} AS qs \
             FROM {TABLE} WHERE metric_name = ? AND series_id IN ({}) AND {} \
             GROUP BY series_id, k",
            ids.join(","),
            ranges_sql(ranges, self.max_future_ms)
        );
        // The usual bucket query reads only the live hours past the time boundary (tens of
        // thousands of rows for one metric): one thread is plenty, and a dashboard's dozen
        // queries at once then share the cores instead of each spreading over all of them
        // (`make bench-dashboard`: p99 252 → 142 ms). Longer ranges (no batch views yet, a
        // lake that is down) keep the server's parallelism.
        let short = ranges.iter().map(|(a, b)| b - a).sum::<i64>() <= SHORT_RANGE_MS;
        let key = format!("{metric}\u{0}{short}\u{0}{sql}");
        let this = self.clone();
        let metric = metric.to_owned();
        let answer = self
            .flights
            .get_or_load(key, move || async move {
                let mut q = this.client.query(&sql).bind(metric);
                if short {
                    q = q.with_setting("max_threads", "1");
                }
                let rows: Vec<WindowRow> = this.fetch(q).await?;
                Ok(Buckets(to_buckets(rows, (start_ms, step_ms))))
            })
            .await
            .map_err(SpeedError::Joined)?;
        Ok(answer.0.clone())
    }

    /// Whether ClickHouse answers.
    pub async fn ping(&self) -> bool {
        matches!(
            tokio::time::timeout(self.timeout, self.client.query("SELECT 1").execute()).await,
            Ok(Ok(()))
        )
    }
}

/// Groups series by metric.
pub fn by_metric(series: &[SeriesInfo]) -> BTreeMap<&str, Vec<&SeriesInfo>> {
    let mut out: BTreeMap<&str, Vec<&SeriesInfo>> = BTreeMap::new();
    for s in series {
        out.entry(s.metric.as_str()).or_default().push(s);
    }
    out
}

/// ClickHouse's rows of a bucket query as buckets per series, in time order.
fn to_buckets(rows: Vec<WindowRow>, (start_ms, step_ms): (i64, i64)) -> HashMap<u64, Vec<Bucket>> {
    let mut out: HashMap<u64, Vec<Bucket>> = HashMap::new();
    for r in rows {
        let mut quantiles = [f64::NAN; 4];
        for (q, v) in quantiles.iter_mut().zip(&r.qs) {
            *q = *v;
        }
        out.entry(r.series_id).or_default().push(Bucket {
            end_ms: start_ms + r.k * step_ms,
            count: r.c,
            sum: r.s,
            min: r.lo,
            max: r.hi,
            quantiles,
            sketch: None,
            // Rows written before Strata kept the newest sample have none (an empty state).
            last: (r.lt > 0).then_some((r.lt, r.lv)),
            layer: Layer::Speed,
        });
    }
    for b in out.values_mut() {
        b.sort_by_key(|b| b.end_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_integer_conditions() {
        assert_eq!(ranges_sql(&[], 0), "0");
        assert_eq!(
            ranges_sql(&[(60_000, 120_000)], 0),
            "ingest_day >= toDate(toDateTime(60)) AND \
             ((minute >= toDateTime(60) AND minute < toDateTime(120)))"
        );
    }

    #[test]
    fn partitions_before_the_range_are_skipped_allowing_for_future_timestamps() {
        // A range starting at day 10 reads ingest days from 10 minutes before it on.
        let day = 86_400_000;
        let sql = ranges_sql(&[(12 * day, 13 * day), (10 * day, 11 * day)], 600_000);
        assert!(
            sql.starts_with(&format!(
                "ingest_day >= toDate(toDateTime({})) AND",
                (10 * day - 600_000) / 1000
            )),
            "{sql}"
        );
    }
}
