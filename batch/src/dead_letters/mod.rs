//! Dead letters kept and replayable: every message of the dead-letter topic (`kafka.dlq_topic`)
//! appended to the Delta table `dead_letters` exactly once ([`archiver`], run by
//! `strata-batch archive`), readable by SQL, and replayed after a fix ([`replay`], the CLI
//! `strata-batch dead-letters list | show | replay`): each re-validated with today's rules, the
//! valid ones produced to `kafka.topic` as they were (their event id unchanged, so a replay
//! counts once however often it runs), recorded in `dead_letter_replays`.
//!
//! [`table`] holds both tables' rows and their Delta handling.

pub mod archiver;
pub mod replay;
pub mod table;

/// What went wrong with dead letters, by who is to blame.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The lake could not be read or written (retry later).
    #[error("lake: {0}")]
    Lake(#[from] deltalake::DeltaTableError),
    /// A query over the tables failed.
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// The broker refused or did not acknowledge (retry later).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The table holds something this version cannot read (a bug or a foreign writer).
    #[error("the dead_letters table: {0}")]
    Corrupt(String),
    /// The caller asked for something that is not there or not possible.
    #[error("{0}")]
    Invalid(String),
}
