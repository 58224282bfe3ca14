//! Request parameters as Prometheus takes them: from the query string, and for POST also from an
//! `application/x-www-form-urlencoded` body (Grafana and promtool POST forms); repeated keys such
//! as `match[]` kept. Plus the parsers of times and durations.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, Method};

use super::response::{ApiError, ErrorType};

/// Every `key=value` of the request, in order.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if req.method() == Method::POST && is_form {
            let body = Bytes::from_request(req, state).await.map_err(|e| {
                use axum::response::IntoResponse;
                if e.into_response().status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorType::TooLarge,
                        "the request body is larger than serving.max_body_bytes",
                    )
                } else {
                    ApiError::bad_data("the form body could not be read")
                }
            })?;
            pairs.extend(url::form_urlencoded::parse(&body).into_owned());
        }
        Ok(Params(pairs))
    }
}

impl Params {
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A required value.
    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .ok_or_else(|| ApiError::bad_data(format!("missing parameter {key:?}")))
    }

    /// A time parameter, or `default`.
    pub fn time_or(&self, key: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(v) => parse_time(v)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter {key:?}: {e}"))),
        }
    }
}

/// Unix seconds (with fraction) or RFC 3339, to Unix ms.
///
/// ```
/// use strata_serving::api::params::parse_time;
/// assert_eq!(parse_time("4"), Ok(4000));
/// assert_eq!(parse_time("1.5"), Ok(1500));
/// assert_eq!(parse_time("2026-11-25T10:00:00Z"), Ok(1_795_600_800_000));
/// assert!(parse_time("yesterday").is_err());
/// ```
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 1e13 {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

/// Seconds (with fraction) or a Prometheus duration (`5m`, `1h30m`), to ms.
///
/// ```
/// use strata_serving::api::params::parse_duration;
/// assert_eq!(parse_duration("15"), Ok(15_000));
/// assert_eq!(parse_duration("1m30s"), Ok(90_000));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 1e12 {
            return Err(format!("cannot parse {s:?} to a valid duration"));
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    promql_parser::util::duration::parse_duration(s)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}
