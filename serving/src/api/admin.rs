//! The batch layer through HTTP: read-only SQL over the lake (`POST /api/v1/sql`) and recompute
//! jobs (`POST /api/v1/recompute`, `GET /api/v1/jobs`, `GET /api/v1/jobs/<id>`). Jobs are
//! written to the durable queue in the lake; `strata-batch serve` runs them.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use strata_batch::jobs::{Job, JobError, JobQueue, Trigger};
use strata_batch::sql::{render, Limits, OutputFormat, SqlError, SqlSession};

use super::response::{ApiError, ErrorType, Success};
use crate::app::AppState;

/// Body of `POST /api/v1/sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One SELECT statement over events, rollup_1m, rollup_1h.
    pub sql: String,
    /// `json` (default), `csv` or `arrow` (Arrow IPC stream).
    #[serde(default)]
    pub format: Option<String>,
    /// Fewer rows than `serving.sql_max_rows`.
    #[serde(default)]
    pub max_rows: Option<usize>,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        ApiError::bad_data(format!("invalid JSON body at {}: {}", e.path(), e.inner()))
    })
}

/// `POST /api/v1/sql`.
pub async fn sql(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let _t = state.metrics.time("sql");
    match run_sql(&state, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run_sql(state: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let req: SqlRequest = json_body(body)?;
    let max_rows = req
        .max_rows
        .unwrap_or(state.cfg.serving.sql_max_rows)
        .min(state.cfg.serving.sql_max_rows);
    let limits = Limits {
        max_rows,
        timeout: state.cfg.serving.sql_timeout,
    };
    let session = SqlSession::open(&state.cfg, limits)
        .await
        .map_err(sql_error)?;
    let result = session.query(&req.sql).await.map_err(sql_error)?;
    let truncated = if result.truncated { "true" } else { "false" };
    match req.format.as_deref().unwrap_or("json") {
        "json" => {
            let text = render(&result.batches, OutputFormat::Json)
                .map_err(|e| ApiError::new(ErrorType::Internal, e.to_string()))?;
            let rows: serde_json::Value =
                serde_json::from_str(if text.trim().is_empty() { "[]" } else { &text })
                    .map_err(|e| ApiError::new(ErrorType::Internal, e.to_string()))?;
            let columns: Vec<String> = result
                .batches
                .first()
                .map(|b| {
                    b.schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect()
                })
                .unwrap_or_default();
            Ok(Success::new(
                json!({"columns": columns, "rows": rows, "truncated": result.truncated}),
                Vec::new(),
            )
            .into_response())
        }
        "csv" => {
            let text = render(&result.batches, OutputFormat::Csv)
                .map_err(|e| ApiError::new(ErrorType::Internal, e.to_string()))?;
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::HeaderName::from_static("x-strata-truncated"),
                        truncated,
                    ),
                ],
                text,
            )
                .into_response())
        }
        "arrow" => {
            let mut buf = Vec::new();
            if let Some(first) = result.batches.first() {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &first.schema())
                    .map_err(|e| ApiError::new(ErrorType::Internal, e.to_string()))?;
                for b in &result.batches {
                    w.write(b)
                        .map_err(|e| ApiError::new(ErrorType::Internal, e.to_string()))?;
                }
                w.finish()
                    .map_err(|e| ApiError::new(ErrorType::Internal, e.to_string()))?;
            }
            Ok((
                [
                    (header::CONTENT_TYPE, "application/vnd.apache.arrow.stream"),
                    (
                        header::HeaderName::from_static("x-strata-truncated"),
                        truncated,
                    ),
                ],
                buf,
            )
                .into_response())
        }
        other => Err(ApiError::bad_data(format!(
            "unknown format {other:?} (json, csv, arrow)"
        ))),
    }
}

fn sql_error(e: SqlError) -> ApiError {
    match e {
        SqlError::Refused(_) | SqlError::Query(_) => ApiError::bad_data(e.to_string()),
        SqlError::Timeout(_) => ApiError::new(ErrorType::Timeout, e.to_string()),
        SqlError::Lake(_) => ApiError::new(ErrorType::Unavailable, e.to_string()),
    }
}

/// A time in a recompute request: Unix ms or RFC 3339.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TimeArg {
    /// Unix milliseconds.
    Millis(i64),
    /// RFC 3339.
    Text(String),
}

impl TimeArg {
    fn ms(&self, key: &str) -> Result<i64, ApiError> {
        match self {
            TimeArg::Millis(ms) => Ok(*ms),
            TimeArg::Text(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| {
                    ApiError::bad_data(format!(
                        "{key}: {s:?} is neither Unix milliseconds nor RFC 3339: {e}"
                    ))
                }),
        }
    }
}

/// Body of `POST /api/v1/recompute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecomputeRequest {
    /// Start (a whole hour).
    pub from: TimeArg,
    /// End, exclusive (a whole hour).
    pub to: TimeArg,
}

/// Client mistakes are 4xx; a lake that cannot be reached is 503 (with `Retry-After`); a job
/// document this server cannot read is its own fault, 500.
fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::Invalid(m) => ApiError::bad_data(m),
        JobError::NotFound(id) => ApiError::new(ErrorType::NotFound, format!("no job {id:?}")),
        JobError::Store(_) | JobError::Lake(_) => {
            ApiError::new(ErrorType::Unavailable, e.to_string())
        }
        JobError::Corrupt { .. } => ApiError::new(ErrorType::Internal, e.to_string()),
    }
}

fn queue(state: &AppState) -> Result<JobQueue, ApiError> {
    JobQueue::open(&state.cfg).map_err(job_error)
}

/// `POST /api/v1/recompute` → 202 with the job (the same job again for a repeated
/// `Idempotency-Key`).
pub async fn recompute(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Success<Job>), ApiError> {
    let _t = state.metrics.time("recompute");
    let req: RecomputeRequest = json_body(&body)?;
    let (from, to) = (req.from.ms("from")?, req.to.ms("to")?);
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_data("Idempotency-Key must be printable ASCII"))
        })
        .transpose()?;
    // The request's own mistakes first: they are the client's, whatever state the lake is in.
    strata_batch::jobs::check_range(from, to).map_err(job_error)?;
    let now = chrono::Utc::now().timestamp_millis();
    let (job, _) = queue(&state)?
        .submit(from, to, Trigger::Api, key, now)
        .await
        .map_err(job_error)?;
    Ok((StatusCode::ACCEPTED, Success::new(job, Vec::new())))
}

/// `GET /api/v1/jobs`: every job, newest first.
pub async fn jobs(State(state): State<AppState>) -> Result<Success<Vec<Job>>, ApiError> {
    let mut jobs = queue(&state)?.list().await.map_err(job_error)?;
    jobs.reverse();
    Ok(Success::new(jobs, Vec::new()))
}

/// `GET /api/v1/jobs/<id>`.
pub async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Success<Job>, ApiError> {
    let job = queue(&state)?.get(&id).await.map_err(job_error)?;
    Ok(Success::new(job, Vec::new()))
}

/// `GET /api/v1/openapi.json`: the OpenAPI description of the JSON, SQL and recompute APIs.
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
}
