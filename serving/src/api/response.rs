//! The one response shape of every API endpoint, as Prometheus's HTTP API defines it:
//! `{"status":"success","data":…,"warnings":[…]}` or
//! `{"status":"error","errorType":"bad_data","error":"…"}` with the matching HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::promql::EvalError;

/// Prometheus's error types, each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// 400: the request is wrong.
    BadData,
    /// 422: valid, but cannot be executed (too big, …).
    Execution,
    /// 503: ran past the time limit.
    Timeout,
    /// 503: a dependency is unavailable.
    Unavailable,
    /// 404: no such thing.
    NotFound,
    /// 401: no or wrong bearer token.
    Unauthorized,
    /// 403: not allowed from here.
    Forbidden,
    /// 413: the body is larger than `serving.max_body_bytes`.
    TooLarge,
    /// 500: a fault of ours.
    Internal,
}

impl ErrorType {
    fn parts(self) -> (StatusCode, &'static str) {
        match self {
            ErrorType::BadData => (StatusCode::BAD_REQUEST, "bad_data"),
            ErrorType::Execution => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
            ErrorType::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ErrorType::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorType::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorType::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ErrorType::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ErrorType::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "bad_data"),
            ErrorType::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// Its type (and so its status).
    pub kind: ErrorType,
    /// What is wrong, for the user.
    pub message: String,
}

impl ApiError {
    /// A `bad_data` error.
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::BadData,
            message: message.into(),
        }
    }

    /// An error of any type.
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<EvalError> for ApiError {
    fn from(e: EvalError) -> Self {
        match e {
            EvalError::BadData(m) => ApiError::new(ErrorType::BadData, m),
            EvalError::Execution(m) => ApiError::new(ErrorType::Execution, m),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    status: &'static str,
    error_type: &'static str,
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error_type) = self.kind.parts();
        let mut r = (
            status,
            Json(ErrorBody {
                status: "error",
                error_type,
                error: &self.message,
            }),
        )
            .into_response();
        if matches!(self.kind, ErrorType::Unavailable) {
            // A dependency is down: the same request can succeed later.
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        if self.kind == ErrorType::Unauthorized {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"strata\""),
            );
        }
        r
    }
}

/// A success answer.
#[derive(Serialize)]
pub struct Success<T: Serialize> {
    status: &'static str,
    data: T,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl<T: Serialize> Success<T> {
    /// `data` with the warnings that made it partial.
    pub fn new(data: T, warnings: Vec<String>) -> Self {
        Self {
            status: "success",
            data,
            warnings,
        }
    }
}

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<Success<T>, ApiError>;

/// A finished answer as bytes, which identical requests under way at the same time share
/// (`app::AppState::shared`): status, body, and whether to say `Retry-After`.
#[derive(Debug)]
pub struct SharedAnswer {
    status: StatusCode,
    body: Vec<u8>,
    retry_after: bool,
}

impl SharedAnswer {
    /// The answer of a handler, serialized.
    pub fn of<T: Serialize>(result: ApiResult<T>) -> Self {
        match result {
            Ok(s) => Self {
                status: StatusCode::OK,
                body: serde_json::to_vec(&s).expect("an answer serialises"),
                retry_after: false,
            },
            Err(e) => {
                let (status, error_type) = e.kind.parts();
                let body = serde_json::to_vec(&ErrorBody {
                    status: "error",
                    error_type,
                    error: &e.message,
                })
                .expect("an error serialises");
                Self {
                    status,
                    body,
                    retry_after: e.kind == ErrorType::Unavailable,
                }
            }
        }
    }

    /// The HTTP response.
    pub fn response(&self) -> Response {
        let mut r = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body.clone(),
        )
            .into_response();
        if self.retry_after {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        r
    }
}

impl crate::cache::Weigh for SharedAnswer {
    fn weight(&self) -> usize {
        self.body.len() + 64
    }
}

/// A sample value as Prometheus writes it: a string, `NaN`, `+Inf` and `-Inf` included.
/// Serialized straight into the output, with no `String` per sample.
struct PromValue(f64);

impl std::fmt::Display for PromValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v == f64::INFINITY {
            f.write_str("+Inf")
        } else if v == f64::NEG_INFINITY {
            f.write_str("-Inf")
        } else {
            write!(f, "{v}")
        }
    }
}

impl Serialize for PromValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A time as Prometheus writes it: Unix seconds, a JSON integer when whole.
struct UnixSeconds(i64);

impl Serialize for UnixSeconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1000 == 0 {
            s.serialize_i64(self.0 / 1000)
        } else {
            s.serialize_f64(self.0 as f64 / 1000.0)
        }
    }
}

/// A sample value as Prometheus writes it (a string; `NaN`, `+Inf`, `-Inf`).
pub fn format_value(v: f64) -> String {
    PromValue(v).to_string()
}

/// A timestamp in Unix seconds as a JSON number (an integer when whole).
pub fn format_time(ms: i64) -> serde_json::Value {
    serde_json::to_value(UnixSeconds(ms)).expect("a number is always a JSON value")
}

/// One sample of a matrix as Prometheus writes it, `[<unix seconds>, "<value>"]`, serialized
/// without building a JSON tree (a range answer holds hundreds of thousands of them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Time, Unix ms.
    pub ms: i64,
    /// Value.
    pub value: f64,
}

impl Serialize for Sample {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (UnixSeconds(self.ms), PromValue(self.value)).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_serialize_as_the_json_tree_did() {
        for (ms, v) in [
            (4000, 1.0),
            (1500, 0.25),
            (-3000, -2.5),
            (60_000, f64::NAN),
            (61_001, f64::INFINITY),
            (0, f64::NEG_INFINITY),
            (1_700_000_000_000, 123456789.125),
        ] {
            let typed = serde_json::to_string(&Sample { ms, value: v }).unwrap();
            let tree = serde_json::json!([format_time(ms), format_value(v)]).to_string();
            assert_eq!(typed, tree);
        }
        let text = |ms, value| serde_json::to_string(&Sample { ms, value }).unwrap();
        assert_eq!(text(4000, 1.0), r#"[4,"1"]"#);
        assert_eq!(text(61_001, f64::INFINITY), r#"[61.001,"+Inf"]"#);
        assert_eq!(text(-1500, 0.25), r#"[-1.5,"0.25"]"#);
    }

    #[test]
    fn values_and_times_look_like_prometheus() {
        assert_eq!(format_value(2.0), "2");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_time(4000), serde_json::json!(4));
        assert_eq!(format_time(1500), serde_json::json!(1.5));
    }
}
