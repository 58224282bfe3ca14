//! Receivers for the producers services already have — Prometheus remote write, OTLP/HTTP
//! metrics, StatsD — publishing to `kafka.topic` through the consumers' validation and
//! dead-letter path ([`publish`]).
//!
//! Why in strata-serving, not a gateway of its own: remote write and OTLP are HTTP endpoints
//! beside the query API they feed (as in Mimir, VictoriaMetrics and GreptimeDB, a Prometheus is
//! pointed at one URL for both `remote_write` and queries, and vmalert writes its results back
//! where it queries), they share its listener, bearer token and limits, and strata-serving is
//! already stateless and run as replicas behind a load balancer — a receiver holds nothing a
//! replica needs to share. StatsD's aggregates are held per replica until its flush.
//!
//! What a sample becomes (`sample_event`): an event of the metric `__name__`, its other labels
//! the tags (a `source` label the event's source), the tag `__kind__="sample"` (exposed by its
//! newest sample, `crate::series`), an id made from the series and the time ([`ids`]).

pub mod ids;
pub mod otlp;
pub mod publish;
pub mod remote_write;
pub mod statsd;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{IntCounterVec, Opts, Registry};
use strata_shared::config::IngestConfig;
use strata_shared::validate::{KIND_TAG, SAMPLE_KIND};
use strata_shared::MetricEvent;

use crate::series::Labels;
pub use publish::{PublishError, Published, Publisher};

/// What a receiver says when a request is not (all) taken.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IngestError {
    /// The body cannot be read (400; not worth sending again).
    #[error("{0}")]
    BadRequest(String),
    /// Bigger than the limits (413).
    #[error("{0}")]
    TooLarge(String),
    /// A format or version Strata does not take (415).
    #[error("{0}")]
    Unsupported(String),
    /// The broker is slow or away (429 / 503, with Retry-After): send again.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = match &self {
            IngestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::Publish(PublishError::Busy) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Publish(PublishError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut r = (status, self.to_string()).into_response();
        if matches!(self, IngestError::Publish(_)) {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

/// A 400 saying which samples were refused (the rest are stored).
pub fn refused_response(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// The receivers' counters (`/metrics` of strata-serving).
#[derive(Clone)]
pub struct IngestMetrics {
    samples: IntCounterVec,
}

impl IngestMetrics {
    /// Registers them.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let samples = IntCounterVec::new(
            Opts::new(
                "serving_ingest_samples_total",
                "Samples received, by receiver and what became of them (accepted, refused, stale, dropped)",
            ),
            &["receiver", "outcome"],
        )?;
        registry.register(Box::new(samples.clone()))?;
        Ok(Self { samples })
    }

    /// Counts a request's samples.
    pub fn received(&self, receiver: &str, _sent: usize, stale: usize, p: &Published) {
        let add = |outcome: &str, n: usize| {
            self.samples
                .with_label_values(&[receiver, outcome])
                .inc_by(n as u64)
        };
        add("accepted", p.accepted);
        add("refused", p.refused_total());
        add("stale", stale);
    }

    /// Counts samples that could not be taken at all (malformed StatsD lines, …).
    pub fn dropped(&self, receiver: &str, n: usize) {
        self.samples
            .with_label_values(&[receiver, "dropped"])
            .inc_by(n as u64);
    }
}

/// What every receiver shares.
#[derive(Clone)]
pub struct Ingest {
    /// `[ingest]`.
    pub cfg: Arc<IngestConfig>,
    /// The producer.
    pub publisher: Arc<Publisher>,
    /// The counters.
    pub metrics: IngestMetrics,
}

impl Ingest {
    /// Refuses a request of more than `ingest.max_samples_per_request` samples.
    pub fn check_size(&self, samples: usize) -> Result<(), IngestError> {
        if samples > self.cfg.max_samples_per_request {
            return Err(IngestError::TooLarge(format!(
                "{samples} samples in one request, more than ingest.max_samples_per_request ({}); send smaller batches",
                self.cfg.max_samples_per_request
            )));
        }
        Ok(())
    }

    /// Publishes and waits for the broker.
    pub async fn publish(
        &self,
        events: Vec<MetricEvent>,
        origin: &str,
    ) -> Result<Published, IngestError> {
        Ok(self.publisher.publish(events, origin).await?)
    }
}

/// A sample of the series `labels` (with `__name__`) as an event of a sample series.
pub fn sample_event(labels: &Labels, timestamp_ms: i64, value: f64) -> MetricEvent {
    let mut tags = labels.clone();
    let name = tags.remove("__name__").unwrap_or_default();
    let source = tags.remove("source").unwrap_or_default();
    tags.insert(KIND_TAG.into(), SAMPLE_KIND.into());
    MetricEvent {
        event_id: ids::event_id(&name, &source, &tags, timestamp_ms),
        metric_name: name,
        value,
        timestamp_ms,
        tags,
        source,
    }
}

/// An event of the metric `name`'s event stream (not a sample series): a delta point or a
/// StatsD value, `seq` telling apart events of one series at one time.
pub fn plain_event(
    name: &str,
    labels: &Labels,
    timestamp_ms: i64,
    seq: u32,
    value: f64,
) -> MetricEvent {
    let mut tags = labels.clone();
    tags.remove("__name__");
    let source = tags.remove("source").unwrap_or_default();
    let mut id_tags = tags.clone();
    if seq > 0 {
        id_tags.insert("\u{0}seq".into(), seq.to_string());
    }
    MetricEvent {
        event_id: ids::event_id(name, &source, &id_tags, timestamp_ms),
        metric_name: name.to_owned(),
        value,
        timestamp_ms,
        tags,
        source,
    }
}

/// Routes of the HTTP receivers, on `ingest` state.
pub fn router(ingest: Ingest) -> axum::Router {
    use axum::routing::post;
    let limit = ingest.cfg.max_body_bytes;
    axum::Router::new()
        .route("/api/v1/write", post(remote_write::write))
        .route("/v1/metrics", post(otlp::metrics))
        .route("/otlp/v1/metrics", post(otlp::metrics))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(ingest)
}
