//! `[ingest]`: the receivers for standard producers in strata-serving — Prometheus remote write,
//! OTLP/HTTP metrics and StatsD — and what they accept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[ingest]`: what `strata-serving` receives from standard producers and publishes to
/// `kafka.topic`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Serve `POST /api/v1/write` (remote write) and `POST /v1/metrics` (OTLP/HTTP).
    pub http_enabled: bool,
    /// Largest (decompressed) request body of a receiver, in bytes.
    pub max_body_bytes: usize,
    /// Most samples one request may carry; more is refused whole with a 413.
    pub max_samples_per_request: usize,
    /// Longest wait for the broker to acknowledge a request's events; past it the client gets
    /// a 503 with `Retry-After` and sends again (ids are deterministic: a resend is deduplicated).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Most events waiting for the broker at once, all receivers together; past it requests
    /// get a 429 with `Retry-After` (bounds the receivers' memory).
    pub max_in_flight: usize,
    /// OTLP resource attributes copied onto every series as labels (dots become `_`), besides
    /// `service.name`/`service.namespace` (→ `job`) and `service.instance.id` (→ `instance`).
    pub otlp_resource_attributes: Vec<String>,
    /// StatsD over UDP (`ip:port`, e.g. `127.0.0.1:8125`). Empty (the default): off, so that
    /// replicas on one host do not fight over the port; turn it on where StatsD clients send.
    pub statsd_udp_listen: String,
    /// StatsD over TCP, one line per metric (`ip:port`, e.g. `127.0.0.1:8126`). Empty (the
    /// default): off.
    pub statsd_tcp_listen: String,
    /// How often StatsD counters, timings and gauges are published (StatsD's flush interval).
    #[serde(with = "humantime_serde")]
    pub statsd_flush_interval: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            http_enabled: true,
            max_body_bytes: 16 << 20,
            max_samples_per_request: 200_000,
            publish_timeout: Duration::from_secs(30),
            max_in_flight: 500_000,
            otlp_resource_attributes: Vec::new(),
            statsd_udp_listen: String::new(),
            statsd_tcp_listen: String::new(),
            statsd_flush_interval: Duration::from_secs(10),
        }
    }
}

impl IngestConfig {
    /// Checks the section; errors name the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("ingest.statsd_udp_listen", &self.statsd_udp_listen),
            ("ingest.statsd_tcp_listen", &self.statsd_tcp_listen),
        ] {
            if !value.is_empty() && value.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::key(
                    key,
                    format!("{value:?} must be ip:port, or empty to turn it off"),
                ));
            }
        }
        for (key, n, least) in [
            ("ingest.max_body_bytes", self.max_body_bytes, 1024),
            (
                "ingest.max_samples_per_request",
                self.max_samples_per_request,
                1,
            ),
            ("ingest.max_in_flight", self.max_in_flight, 1_000),
        ] {
            if n < least {
                return Err(ConfigError::key(key, format!("must be at least {least}")));
            }
        }
        for (key, d) in [
            ("ingest.publish_timeout", self.publish_timeout),
            ("ingest.statsd_flush_interval", self.statsd_flush_interval),
        ] {
            if d < Duration::from_millis(100) {
                return Err(ConfigError::key(key, "must be at least 100ms"));
            }
        }
        if let Some(bad) = self
            .otlp_resource_attributes
            .iter()
            .find(|a| a.is_empty() || a.chars().any(char::is_control))
        {
            return Err(ConfigError::key(
                "ingest.otlp_resource_attributes",
                format!("{bad:?} is not an attribute name"),
            ));
        }
        Ok(())
    }
}
