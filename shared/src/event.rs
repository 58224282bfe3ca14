//! The metric event: one measurement published by an application to topic `metrics-events`.
//!
//! [`MetricEvent`] is the in-memory form every layer works with; [`proto::MetricEvent`] is the
//! prost-generated `analytics.MetricEvent` message (see `shared/proto/metric_event.proto`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The prost-generated types of `proto/metric_event.proto` (package `analytics`).
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/analytics.rs"));
}

/// One metric measurement, as published by a producer.
///
/// ```
/// use strata_shared::MetricEvent;
/// let e = MetricEvent::new("req-1", "http_request_duration_ms", 12.5, 1_700_000_000_000)
///     .with_tag("route", "/api")
///     .with_source("gateway");
/// assert_eq!(e.tags["route"], "/api");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvent {
    /// Unique id of the measurement (a UUID); the deduplication key.
    pub event_id: String,
    /// Metric name, matching `[a-zA-Z_:][a-zA-Z0-9_:.]*`.
    pub metric_name: String,
    /// The measured value; must be finite.
    pub value: f64,
    /// Event time, Unix epoch milliseconds.
    pub timestamp_ms: i64,
    /// Bounded-cardinality labels, sorted by key.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Name of the producing service (may be empty).
    #[serde(default)]
    pub source: String,
}

impl MetricEvent {
    /// An event without tags or source.
    pub fn new(event_id: &str, metric_name: &str, value: f64, timestamp_ms: i64) -> Self {
        Self {
            event_id: event_id.to_owned(),
            metric_name: metric_name.to_owned(),
            value,
            timestamp_ms,
            tags: BTreeMap::new(),
            source: String::new(),
        }
    }

    /// The same event with one more tag.
    pub fn with_tag(mut self, key: &str, value: &str) -> Self {
        self.tags.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The same event with its source set.
    pub fn with_source(mut self, source: &str) -> Self {
        self.source = source.to_owned();
        self
    }

    /// The stable 64-bit identity of this event's series (metric, source, tags).
    pub fn series_id(&self) -> u64 {
        crate::series::series_id(&self.metric_name, &self.source, &self.tags)
    }
}

impl From<proto::MetricEvent> for MetricEvent {
    fn from(p: proto::MetricEvent) -> Self {
        Self {
            event_id: p.event_id,
            metric_name: p.metric_name,
            value: p.value,
            timestamp_ms: p.timestamp_ms,
            tags: p.tags,
            source: p.source,
        }
    }
}

impl From<MetricEvent> for proto::MetricEvent {
    fn from(e: MetricEvent) -> Self {
        Self {
            event_id: e.event_id,
            metric_name: e.metric_name,
            value: e.value,
            timestamp_ms: e.timestamp_ms,
            tags: e.tags,
            source: e.source,
        }
    }
}
