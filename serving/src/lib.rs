//! Strata's serving layer: the batch and speed views merged at query time, behind the
//! Prometheus query API (so Grafana's built-in Prometheus data source works), a JSON API, SQL
//! over the archive and recompute jobs.
//!
//! A request flows: [`api`] parses it (typed parameters, one response shape) → [`promql`]
//! evaluates the expression, asking [`merge::Engine`] for the buckets of the selected
//! [`series`] → the engine reads covered hours from the batch views ([`source::batch`], blocks of the
//! lake's rollup tables through a byte-bounded [`cache`]) and the rest from ClickHouse
//! ([`source::speed`]) → [`window`] re-aggregates buckets into the query's
//! windows. [`app`] wires the router, auth, limits and self-metrics.
//!
//! Standard producers write in through [`ingest`] (Prometheus remote write, OTLP/HTTP, StatsD),
//! which publishes to Kafka like any producer.
//!
//! SQL over the archive also comes in over the PostgreSQL protocol ([`pg`]) and Arrow Flight SQL
//! ([`flight`]), both on one shared read-only session ([`archive`]).

pub mod api;
pub mod app;
pub mod archive;
pub mod cache;
pub mod flight;
pub mod ingest;
pub mod merge;
pub mod pg;
pub mod promql;
pub mod results;
pub mod series;
pub mod source;
pub mod window;

/// Errors that stop strata-serving, by who is to blame.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong (the message names the key).
    #[error(transparent)]
    Config(#[from] strata_shared::config::ConfigError),
    /// The listen address cannot be bound.
    #[error("listening on {0}")]
    Listen(String),
    /// Metrics registration failed (a bug: two metrics of one name).
    #[error("telemetry: {0}")]
    Telemetry(#[from] prometheus::Error),
    /// The lake named by `lake.url` cannot be opened.
    #[error("lake: {0}")]
    Lake(#[from] crate::source::batch::BatchError),
}
