//! The JSON API for scripts and Grafana's Infinity plugin: the metrics, one metric's series, and
//! a time-series query by statistic, step, tag filters and grouping — with quantiles of a group
//! merged from the buckets of all its series (never averaged), and a `provenance` saying which
//! layer answered which range.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::json;

use super::params::{parse_duration, Params};
use super::response::{ApiError, ApiResult, ErrorType, Success};
use crate::app::AppState;
use crate::merge::Provenance;
use crate::series::{exposed_base, SeriesInfo};
use crate::window::{aggregate, windows, Agg, Bucket, Need};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One metric of `GET /api/v1/metrics`.
#[derive(Serialize)]
pub struct MetricInfo {
    /// The name as published.
    pub name: String,
    /// Its base name in the Prometheus API.
    pub prometheus_name: String,
    /// Series with data in the range.
    pub series: usize,
}

/// `GET /api/v1/metrics?start=&end=`.
pub async fn metrics(State(state): State<AppState>, p: Params) -> ApiResult<serde_json::Value> {
    let _t = state.metrics.time("json_metrics");
    let end = p.time_or("end", now_ms())?;
    let start = p.time_or("start", end - 86_400_000)?;
    let (series, warnings) = state
        .engine
        .series(&state.engine.view(), |_| true, start, end + 1)
        .await;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &series {
        *counts.entry(&s.metric).or_default() += 1;
    }
    let list: Vec<MetricInfo> = counts
        .into_iter()
        .map(|(name, n)| MetricInfo {
            name: name.to_owned(),
            prometheus_name: exposed_base(name),
            series: n,
        })
        .collect();
    Ok(Success::new(
        json!({"metrics": list, "boundary_ms": state.engine.boundary()}),
        super::with_refresh_warning(&state, warnings),
    ))
}

/// `GET /api/v1/metrics/<name>/series?start=&end=`.
pub async fn metric_series(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Params,
) -> ApiResult<serde_json::Value> {
    let _t = state.metrics.time("json_series");
    if !strata_shared::validate::is_metric_name(&name) {
        return Err(ApiError::bad_data(format!("invalid metric name: {name:?}")));
    }
    let end = p.time_or("end", now_ms())?;
    let start = p.time_or("start", end - 86_400_000)?;
    let base = exposed_base(&name);
    let (series, warnings) = state
        .engine
        .series(&state.engine.view(), |b| b == base, start, end + 1)
        .await;
    let list: Vec<serde_json::Value> = series
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| json!({"series_id": s.series_id.to_string(), "source": s.source, "tags": s.tags}))
        .collect();
    if list.is_empty() && warnings.is_empty() {
        return Err(ApiError::new(
            ErrorType::NotFound,
            format!("no series of metric {name:?} between start and end"),
        ));
    }
    Ok(Success::new(
        json!({"metric": name, "series": list}),
        super::with_refresh_warning(&state, warnings),
    ))
}

/// A statistic of the time-series query.
#[derive(Debug, Clone, Copy, PartialEq)]
enum JsonStat {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    Quantile(usize),
}

fn parse_stat(s: &str) -> Result<JsonStat, ApiError> {
    Ok(match s {
        "count" => JsonStat::Count,
        "sum" => JsonStat::Sum,
        "min" => JsonStat::Min,
        "max" => JsonStat::Max,
        "avg" => JsonStat::Avg,
        "p50" => JsonStat::Quantile(0),
        "p90" => JsonStat::Quantile(1),
        "p95" => JsonStat::Quantile(2),
        "p99" => JsonStat::Quantile(3),
        other => {
            return Err(ApiError::bad_data(format!(
                "unknown stat {other:?} (count, sum, min, max, avg, p50, p90, p95, p99)"
            )))
        }
    })
}

fn stat_of(a: &Agg, s: JsonStat) -> f64 {
    match s {
        JsonStat::Count => a.count as f64,
        JsonStat::Sum => a.sum,
        JsonStat::Min => a.min,
        JsonStat::Max => a.max,
        JsonStat::Avg => a.avg(),
        JsonStat::Quantile(i) => a.quantiles[i],
    }
}

/// `GET /api/v1/timeseries?metric=&stat=&start=&end=&step=&group_by=a,b&tag.<key>=<value>`.
pub async fn timeseries(State(state): State<AppState>, p: Params) -> ApiResult<serde_json::Value> {
    let _t = state.metrics.time("json_timeseries");
    let metric = p.required("metric")?.to_owned();
    if !strata_shared::validate::is_metric_name(&metric) {
        return Err(ApiError::bad_data(format!(
            "invalid metric name: {metric:?}"
        )));
    }
    let stats: Vec<JsonStat> = p
        .get("stat")
        .unwrap_or("count")
        .split(',')
        .map(parse_stat)
        .collect::<Result<_, _>>()?;
    let end = p.time_or("end", now_ms())?;
    let start = p.time_or("start", end - 3_600_000)?;
    let step = parse_duration(p.get("step").unwrap_or("60"))
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))?;
    if step <= 0 || end < start {
        return Err(ApiError::bad_data(
            "step must be positive and end not before start",
        ));
    }
    let serving = &state.cfg.serving;
    let points = (end - start) / step + 1;
    if points as u64 > serving.max_points_per_series
        || (end - start) as u128 > serving.max_range.as_millis()
    {
        return Err(ApiError::bad_data(format!(
            "too many points ({points}) or too wide a range; the limits are {} points and {}s",
            serving.max_points_per_series,
            serving.max_range.as_secs()
        )));
    }
    let group_by: Vec<String> = p
        .get("group_by")
        .filter(|g| !g.is_empty())
        .map(|g| g.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    let filters: Vec<(String, String)> =
        p.0.iter()
            .filter_map(|(k, v)| k.strip_prefix("tag.").map(|k| (k.to_owned(), v.clone())))
            .collect();
    let base = exposed_base(&metric);
    let view = state.engine.view();
    let (series, mut warnings) = state
        .engine
        .series(&view, |b| b == base, start - step - 60_000, end + 1)
        .await;
    let series: Vec<Arc<SeriesInfo>> = series
        .into_iter()
        .filter(|s| s.metric == metric)
        .filter(|s| {
            let labels = s.labels();
            filters
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|x| x == v))
        })
        .collect();
    if series.len() > serving.max_series {
        return Err(ApiError::new(
            ErrorType::Execution,
            format!(
                "{} series match, more than the limit of {}; filter by tag",
                series.len(),
                serving.max_series
            ),
        ));
    }
    let steps: Vec<i64> = (0..points).map(|k| start + k * step).collect();
    let need = if stats.iter().any(|s| matches!(s, JsonStat::Quantile(_))) {
        Need::Quantiles
    } else {
        Need::Totals
    };
    let fetched = state
        .engine
        .fetch(&view, &series, &steps, (step, step), false, need)
        .await;
    warnings.extend(fetched.warnings);
    state.metrics.observe_merge(&fetched.provenance);
    // Group the buckets of all member series, then aggregate each window of each group: a
    // group's quantiles come from all its events, not from its members' quantiles.
    let mut groups: BTreeMap<BTreeMap<String, String>, Vec<Bucket>> = BTreeMap::new();
    for (s, buckets) in fetched.series {
        let labels = s.labels();
        let key = group_by
            .iter()
            .map(|g| (g.clone(), labels.get(g).cloned().unwrap_or_default()))
            .collect();
        groups.entry(key).or_default().extend(buckets);
    }
    let mut out = Vec::new();
    for (group, mut buckets) in groups {
        buckets.sort_by_key(|b| b.end_ms);
        let aggs: Vec<Option<Agg>> = windows(&buckets, &steps, step)
            .iter()
            .map(|w| aggregate(w, need))
            .collect();
        let mut points = Vec::new();
        for (t, a) in steps.iter().zip(&aggs) {
            if let Some(a) = a {
                let mut row = vec![json!(t)];
                row.extend(stats.iter().map(|s| json!(stat_of(a, *s))));
                points.push(serde_json::Value::Array(row));
            }
        }
        out.push(json!({"group": group, "points": points}));
    }
    let stat_names: Vec<&str> = p.get("stat").unwrap_or("count").split(',').collect();
    Ok(Success::new(
        json!({
            "metric": metric,
            "stats": stat_names,
            "step_ms": step,
            "boundary_ms": view.boundary(),
            "provenance": merge_provenance(fetched.provenance),
            "series": out,
        }),
        super::with_refresh_warning(&state, warnings),
    ))
}

/// Adjacent ranges of the same layer, joined.
fn merge_provenance(mut p: Vec<Provenance>) -> Vec<Provenance> {
    p.sort_by_key(|x| x.from_ms);
    let mut out: Vec<Provenance> = Vec::new();
    for x in p {
        match out.last_mut() {
            Some(l) if l.layer == x.layer && l.to_ms == x.from_ms => l.to_ms = x.to_ms,
            _ => out.push(x),
        }
    }
    out
}
