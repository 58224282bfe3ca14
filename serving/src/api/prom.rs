//! The Prometheus HTTP API over the merged views, as Grafana's built-in Prometheus data source
//! and promtool use it: query, query_range, labels, label values, series, metadata, buildinfo.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Value as Json};

use super::params::{parse_duration, Params};
use super::response::{
    format_time, format_value, ApiError, ApiResult, ErrorType, Sample, SharedAnswer, Success,
};
use crate::app::AppState;
use crate::promql::{parse, EngineSource, Evaluator, Limits, SeriesSource, Value};
use crate::series::{exposed_name, Labels, Stat};

/// Default look-back of label and series lookups without `start`.
const DEFAULT_LOOKBACK_MS: i64 = 6 * 3_600_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The evaluation deadline: the `timeout` parameter, capped by `serving.query_timeout`.
fn deadline(state: &AppState, p: &Params) -> Result<Duration, ApiError> {
    let max = state.cfg.serving.query_timeout;
    match p.get("timeout") {
        None | Some("") => Ok(max),
        Some(t) => {
            let ms = parse_duration(t)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"timeout\": {e}")))?;
            if ms <= 0 {
                return Err(ApiError::bad_data("timeout must be positive"));
            }
            Ok(Duration::from_millis(ms as u64).min(max))
        }
    }
}

/// Evaluates `query` at `steps`, within the deadline.
async fn evaluate(
    state: &AppState,
    p: &Params,
    query: &str,
    steps: Vec<i64>,
    step_ms: i64,
) -> Result<(Value, Vec<String>), ApiError> {
    let expr = parse(query)?;
    let limit = deadline(state, p)?;
    let source = EngineSource::new(&state.engine);
    let ev = Evaluator::new(&source, Limits::of(&state.cfg.serving), steps, step_ms);
    let started = Instant::now();
    let value = match tokio::time::timeout(limit, ev.eval(&expr)).await {
        Ok(v) => v?,
        Err(_) => {
            return Err(ApiError::new(
                ErrorType::Timeout,
                format!("query timed out in expression evaluation after {limit:?}"),
            ))
        }
    };
    state.metrics.observe_merge(&ev.provenance());
    tracing::debug!(query, elapsed = ?started.elapsed(), "evaluated");
    Ok((value, ev.warnings()))
}

fn metric_json(labels: &Labels) -> Json {
    Json::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

/// `GET|POST /api/v1/query`.
pub async fn query(State(state): State<AppState>, p: Params) -> ApiResult<Json> {
    let _t = state.metrics.time("query");
    let q = p.required("query")?;
    let t = p.time_or("time", now_ms())?;
    let (value, warnings) = evaluate(&state, &p, q, vec![t], 60_000).await?;
    let ts = format_time(t);
    let data = match value {
        Value::Scalar(s) => json!({"resultType": "scalar", "result": [ts, format_value(s[0])]}),
        Value::String(s) => json!({"resultType": "string", "result": [ts, s]}),
        Value::Vector(vs) => {
            let result: Vec<Json> = vs
                .iter()
                .filter_map(|s| {
                    s.values[0].map(|v| {
                        json!({"metric": metric_json(&s.labels), "value": [ts.clone(), format_value(v)]})
                    })
                })
                .collect();
            json!({"resultType": "vector", "result": result})
        }
        Value::Matrix(m) => {
            let result: Vec<Json> = m
                .iter()
                .map(|s| {
                    let values: Vec<Sample> = s
                        .samples
                        .iter()
                        .map(|(ms, value)| Sample {
                            ms: *ms,
                            value: *value,
                        })
                        .collect();
                    json!({"metric": metric_json(&s.labels), "values": values})
                })
                .collect();
            json!({"resultType": "matrix", "result": result})
        }
    };
    Ok(Success::new(
        data,
        super::with_refresh_warning(&state, warnings),
    ))
}

/// A range query's answer: `{"resultType": "matrix", "result": [...]}`.
#[derive(serde::Serialize)]
pub struct Matrix {
    #[serde(rename = "resultType")]
    result_type: &'static str,
    result: Vec<MatrixSeries>,
}

/// One series of a matrix: its labels and samples.
#[derive(serde::Serialize)]
struct MatrixSeries {
    metric: Json,
    values: Vec<Sample>,
}

/// Answers `compute`, or joins an identical request (same endpoint and parameters, same batch
/// views) whose answer is being computed right now: a dashboard's viewers that refresh at
/// once ask the same questions.
pub async fn shared<T, F, Fut>(state: &AppState, endpoint: &str, p: &Params, compute: F) -> Response
where
    T: serde::Serialize,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ApiResult<T>> + Send + 'static,
{
    let mut params = p.0.clone();
    params.sort();
    let key = format!(
        "{endpoint}\u{1}{:?}\u{1}{:?}",
        params,
        state.engine.view().versions()
    );
    let fut = compute();
    let answer = state
        .shared
        .get_or_load(key, move || async move { Ok(SharedAnswer::of(fut.await)) })
        .await
        .unwrap_or_else(|never| match *never {});
    answer.response()
}

/// `GET|POST /api/v1/query_range`.
pub async fn query_range(State(state): State<AppState>, p: Params) -> Response {
    let _t = state.metrics.time("query_range");
    let s = state.clone();
    let q = p.clone();
    shared(&state, "query_range", &p, move || range_answer(s, q)).await
}

async fn range_answer(state: AppState, p: Params) -> ApiResult<Matrix> {
    let q = p.required("query")?;
    let start = p.time_or("start", i64::MIN)?;
    let end = p.time_or("end", i64::MIN)?;
    if start == i64::MIN || end == i64::MIN {
        return Err(ApiError::bad_data("start and end are required"));
    }
    let step = parse_duration(p.required("step")?)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))?;
    if end < start {
        return Err(ApiError::bad_data(
            "end timestamp must not be before start time",
        ));
    }
    if step <= 0 {
        return Err(ApiError::bad_data(
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    let serving = &state.cfg.serving;
    if (end - start) as u128 > serving.max_range.as_millis() {
        return Err(ApiError::bad_data(format!(
            "the range {}s is wider than the limit of {}s (serving.max_range)",
            (end - start) / 1000,
            serving.max_range.as_secs()
        )));
    }
    let points = (end - start) / step + 1;
    if points as u64 > serving.max_points_per_series {
        return Err(ApiError::bad_data(format!(
            "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
            serving.max_points_per_series
        )));
    }
    let steps: Vec<i64> = (0..points).map(|k| start + k * step).collect();
    let expr = parse(q)?;
    if expr.value_type() == promql_parser::parser::value::ValueType::Matrix {
        return Err(ApiError::bad_data(
            "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector",
        ));
    }
    let limit = deadline(&state, &p)?;
    let answer =
        match tokio::time::timeout(limit, state.results.range((q, &expr), &steps, step)).await {
            Ok(a) => a?,
            Err(_) => {
                return Err(ApiError::new(
                    ErrorType::Timeout,
                    format!("query timed out in expression evaluation after {limit:?}"),
                ))
            }
        };
    state.metrics.observe_merge(&answer.provenance);
    let results = &state.results;
    state
        .metrics
        .observe_cache("results", results.cache_bytes(), results.cache_stats());
    let (value, warnings) = (answer.value, answer.warnings);
    let series = |labels: &Labels, values: &[Option<f64>]| {
        let points: Vec<Sample> = steps
            .iter()
            .zip(values)
            .filter_map(|(t, v)| v.map(|value| Sample { ms: *t, value }))
            .collect();
        (!points.is_empty()).then(|| MatrixSeries {
            metric: metric_json(labels),
            values: points,
        })
    };
    let result: Vec<MatrixSeries> = match value {
        Value::Scalar(s) => {
            let values: Vec<Option<f64>> = s.into_iter().map(Some).collect();
            series(&Labels::new(), &values).into_iter().collect()
        }
        Value::Vector(vs) => vs
            .iter()
            .filter_map(|s| series(&s.labels, &s.values))
            .collect(),
        Value::String(_) => return Err(ApiError::bad_data(
            "invalid expression type \"string\" for range query, must be Scalar or instant Vector",
        )),
        Value::Matrix(_) => return Err(ApiError::bad_data(
            "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector",
        )),
    };
    state.metrics.points(result.len());
    Ok(Success::new(
        Matrix {
            result_type: "matrix",
            result,
        },
        super::with_refresh_warning(&state, warnings),
    ))
}

/// The label sets of the exposed series selected by the `match[]` selectors (all series when
/// there is none) in `[start, end]`.
async fn matched(state: &AppState, p: &Params) -> Result<(Vec<Labels>, Vec<String>), ApiError> {
    let end = p.time_or("end", now_ms())?;
    let start = p.time_or("start", end - DEFAULT_LOOKBACK_MS)?;
    if end < start {
        return Err(ApiError::bad_data(
            "end timestamp must not be before start time",
        ));
    }
    let selectors = p.all("match[]");
    let selectors = if selectors.is_empty() {
        vec!["{__name__=~\".+\"}"]
    } else {
        selectors
    };
    let mut out = BTreeSet::new();
    let mut warnings = Vec::new();
    for s in selectors {
        let expr = parse(s)?;
        let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
            return Err(ApiError::bad_data(format!(
                "match[] must be a series selector, not {s:?}"
            )));
        };
        let source = EngineSource::new(&state.engine);
        let found = source.select(&vs, start, end).await;
        if out.len() + found.value.len() > state.cfg.serving.max_series {
            return Err(ApiError::new(
                ErrorType::Execution,
                format!(
                    "the selectors match more than {} series (serving.max_series); narrow them",
                    state.cfg.serving.max_series
                ),
            ));
        }
        out.extend(found.value.into_iter().map(|e| e.labels));
        warnings.extend(found.warnings);
    }
    warnings.sort();
    warnings.dedup();
    Ok((out.into_iter().collect(), warnings))
}

/// `GET|POST /api/v1/labels`.
pub async fn labels(State(state): State<AppState>, p: Params) -> ApiResult<Vec<String>> {
    let _t = state.metrics.time("labels");
    let (series, warnings) = matched(&state, &p).await?;
    let names: BTreeSet<String> = series.iter().flat_map(|l| l.keys().cloned()).collect();
    Ok(Success::new(
        names.into_iter().collect(),
        super::with_refresh_warning(&state, warnings),
    ))
}

/// `GET /api/v1/label/<name>/values`.
pub async fn label_values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Params,
) -> Response {
    let _t = state.metrics.time("label_values");
    let (s, q) = (state.clone(), p.clone());
    let endpoint = format!("label_values/{name}");
    shared(&state, &endpoint, &p, move || values_answer(s, name, q)).await
}

async fn values_answer(state: AppState, name: String, p: Params) -> ApiResult<Vec<String>> {
    if !strata_shared::validate::is_label_name(&name) && name != "__name__" {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    if name == "__name__" && p.all("match[]").is_empty() {
        // Every metric with data in the range has all its exposed names: the metric names are
        // the answer, without looking up a single series (Grafana asks this on every refresh).
        let end = p.time_or("end", now_ms())?;
        let start = p.time_or("start", end - DEFAULT_LOOKBACK_MS)?;
        if end < start {
            return Err(ApiError::bad_data(
                "end timestamp must not be before start time",
            ));
        }
        let view = state.engine.view();
        let (metrics, warnings) = state.engine.metric_names(&view, start, end + 1).await;
        let names: BTreeSet<String> = metrics
            .iter()
            .flat_map(|m| Stat::ALL.map(|stat| exposed_name(m, stat)))
            .collect();
        return Ok(Success::new(
            names.into_iter().collect(),
            super::with_refresh_warning(&state, warnings),
        ));
    }
    let (series, warnings) = matched(&state, &p).await?;
    let values: BTreeSet<String> = series
        .iter()
        .filter_map(|l| l.get(&name).cloned())
        .collect();
    Ok(Success::new(
        values.into_iter().collect(),
        super::with_refresh_warning(&state, warnings),
    ))
}

/// `GET|POST /api/v1/series`.
pub async fn series(
    State(state): State<AppState>,
    p: Params,
) -> ApiResult<Vec<BTreeMap<String, String>>> {
    let _t = state.metrics.time("series");
    if p.all("match[]").is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let (series, warnings) = matched(&state, &p).await?;
    Ok(Success::new(
        series,
        super::with_refresh_warning(&state, warnings),
    ))
}

/// `GET /api/v1/metadata`: every exposed name with its type.
pub async fn metadata(State(state): State<AppState>, p: Params) -> ApiResult<Json> {
    let _t = state.metrics.time("metadata");
    let end = now_ms();
    let (names, warnings) = state
        .engine
        .metric_names(&state.engine.view(), end - 30 * 86_400_000, end + 1)
        .await;
    let only = p.get("metric");
    let mut out = serde_json::Map::new();
    for m in names {
        for stat in Stat::ALL {
            let name = exposed_name(&m, stat);
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let (kind, help) = match stat {
                Stat::Quantile => ("summary", format!("Quantiles of {m} per window")),
                Stat::Count => ("gauge", format!("Events of {m} per window")),
                Stat::Sum => ("gauge", format!("Sum of {m} values per window")),
                Stat::Min => ("gauge", format!("Smallest {m} value per window")),
                Stat::Max => ("gauge", format!("Largest {m} value per window")),
                Stat::Avg => ("gauge", format!("Mean {m} value per window")),
                Stat::Last => ("gauge", format!("Newest sample of {m}")),
            };
            out.insert(name, json!([{"type": kind, "help": help, "unit": ""}]));
        }
    }
    Ok(Success::new(
        Json::Object(out),
        super::with_refresh_warning(&state, warnings),
    ))
}

/// `GET /api/v1/status/buildinfo`.
pub async fn buildinfo() -> ApiResult<Json> {
    Ok(Success::new(
        json!({
            "version": "2.45.0",
            "revision": env!("CARGO_PKG_VERSION"),
            "branch": "strata",
            "buildUser": "strata",
            "buildDate": "",
            "goVersion": concat!("strata-serving ", env!("CARGO_PKG_VERSION")),
            "features": {},
        }),
        Vec::new(),
    ))
}
