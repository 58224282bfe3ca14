//! `GET /api/v1/rules` and `GET /api/v1/alerts`: forwarded to the rule evaluator
//! (`serving.rules_url`, vmalert), so a Prometheus data source pointed at Strata — Grafana's
//! alert list, its rule browser — sees the rules evaluated against Strata and their alerts.
//!
//! The evaluator's answer is passed through as it is (vmalert answers in Prometheus' shapes).
//! Without an evaluator both answer empty lists; an evaluator that does not answer is a 503
//! naming it, never an empty list that would read as "no alerts".

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::response::{ApiError, ErrorType};
use crate::app::AppState;

/// `GET /api/v1/rules`: the rule groups, their rules, health and last evaluation.
pub async fn rules(state: State<AppState>, query: RawQuery) -> Response {
    forward(state, query, "/api/v1/rules", json!({ "groups": [] })).await
}

/// `GET /api/v1/alerts`: the pending and firing alerts.
pub async fn alerts(state: State<AppState>, query: RawQuery) -> Response {
    forward(state, query, "/api/v1/alerts", json!({ "alerts": [] })).await
}

async fn forward(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    path: &str,
    empty: serde_json::Value,
) -> Response {
    let _t = state.metrics.time("rules");
    let base = state.cfg.serving.rules_url.trim_end_matches('/');
    if base.is_empty() {
        return axum::Json(json!({ "status": "success", "data": empty })).into_response();
    }
    let url = match query {
        Some(q) => format!("{base}{path}?{q}"),
        None => format!("{base}{path}"),
    };
    let unavailable = |why: String| {
        ApiError::new(
            ErrorType::Unavailable,
            format!("the rule evaluator (serving.rules_url = {base}) {why}"),
        )
        .into_response()
    };
    let answer = match client().get(&url).send().await {
        Ok(a) => a,
        Err(e) => return unavailable(format!("does not answer: {e}")),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if status.is_server_error() {
        return unavailable(format!("answered {status}"));
    }
    match answer.bytes().await {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(body),
        )
            .into_response(),
        Err(e) => unavailable(format!("broke off its answer: {e}")),
    }
}

/// One client for every forwarded request (connections kept alive), with a deadline: a stuck
/// evaluator must not hold Grafana's request forever.
fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client")
    })
}
