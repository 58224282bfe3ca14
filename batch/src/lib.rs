//! Strata's batch layer: the Delta Lake archive of every valid event (and, as its issue lands,
//! exact recomputes with DataFusion, backfill and ad hoc SQL).
//!
//! [`archive`] consumes `metrics-events` and appends to the Delta table `events`, exactly once per
//! Kafka offset; [`service`] wires it up with telemetry and signals.

pub mod archive;
pub mod coverage;
pub mod import;
pub mod recompute;
pub mod service;
pub mod sql;

/// Errors that stop strata-batch, by who is to blame.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong (the message names the key).
    #[error(transparent)]
    Config(#[from] strata_shared::config::ConfigError),
    /// The Kafka client failed in a way it cannot recover from.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The lake could not be opened.
    #[error("lake: {0}")]
    Lake(#[from] deltalake::DeltaTableError),
    /// Metrics registration or the metrics listener failed.
    #[error("telemetry: {0}")]
    Telemetry(String),
}
