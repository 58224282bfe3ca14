//! Strata's speed layer: Kafka topic `metrics-events` → 1-minute rollups in ClickHouse, within
//! seconds and exactly once.
//!
//! The flow, module by module: [`consumer`] reads, validates ([`dead_letters`] for refusals),
//! deduplicates ([`dedup`]), caps cardinality ([`cardinality`]) and pre-aggregates into a
//! [`rollup::Batch`]; [`service`]'s writer task hands each batch to
//! [`clickhouse::writer`], which writes rollups and Kafka offsets in one atomic insert (the
//! exactly-once argument is in that module's docs); [`monitor`] watches ClickHouse and enforces
//! retention; [`metrics`] is what `/metrics` shows.

pub mod cardinality;
pub mod clickhouse;
pub mod consumer;
pub mod dead_letters;
pub mod dedup;
pub mod metrics;
pub mod monitor;
pub mod rollup;
pub mod service;

/// Errors that stop strata-speed, by who is to blame.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong (the message names the key).
    #[error(transparent)]
    Config(#[from] strata_shared::config::ConfigError),
    /// The Kafka client failed in a way it cannot recover from.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// ClickHouse refused a batch permanently (schema or permissions); nothing was committed.
    #[error(transparent)]
    Write(#[from] clickhouse::writer::WriteError),
    /// ClickHouse refused the schema migration with an error waiting cannot fix (credentials,
    /// permissions).
    #[error("ClickHouse refused the schema migration: {0}")]
    Migrate(::clickhouse::error::Error),
    /// The writer task ended unexpectedly.
    #[error("the ClickHouse writer stopped")]
    WriterGone,
    /// Metrics registration or the metrics listener failed.
    #[error("telemetry: {0}")]
    Telemetry(String),
}
