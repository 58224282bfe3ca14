//! Strata's batch layer: the Delta Lake archive of every valid event, exact recomputes with
//! DataFusion, the schedule and job queue that drive them, backfill and ad hoc SQL.
//!
//! Events flow: [`archive`] consumes `metrics-events` and appends to the Delta table `events`,
//! exactly once per Kafka offset ([`service`] wires it up), and [`import`] backfills files into
//! the same table. [`recompute`] turns a range of `events` into the exact rollup tables
//! `rollup_1m` / `rollup_1h`; [`coverage`] reads from the Delta logs which hours that covers and
//! which changed since. [`serve`] runs what [`schedule`] plans and what [`jobs`] holds (requests
//! from the CLI and the serving API). [`sql`] is the read-only SQL session over the lake's tables.
//! [`dead_letters`] keeps the dead-letter topic in the lake and replays it after a fix.
//! [`cluster`] runs recomputes on an Apache DataFusion Ballista cluster instead of in process.

pub mod archive;
pub mod cluster;
pub mod coverage;
pub mod dead_letters;
pub mod import;
pub mod jobs;
pub mod recompute;
pub mod schedule;
pub mod serve;
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
    /// The job queue could not be opened.
    #[error("jobs: {0}")]
    Jobs(#[from] crate::jobs::JobError),
    /// A Ballista scheduler or executor could not start or stopped with an error.
    #[error("ballista: {0}")]
    Cluster(#[from] ballista_core::error::BallistaError),
    /// A Ballista executor's shuffle folder cannot be made.
    #[error("ballista executor work folder {path}: {source}")]
    WorkDir {
        /// The folder (`--work-dir`, or a new temporary one).
        path: String,
        /// Why it cannot be made.
        source: std::io::Error,
    },
    /// Metrics registration failed (a bug: two metrics of one name).
    #[error("telemetry: {0}")]
    Telemetry(#[from] prometheus::Error),
    /// The metrics listener's address cannot be bound (in use, or not ours).
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why it cannot be bound.
        source: std::io::Error,
    },
}
