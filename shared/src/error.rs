//! The shared crate's error type: one enum whose variants say who is to blame.

use std::fmt;

/// A configuration problem, naming the key (and where its value came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration file could not be read or is not valid TOML.
    File {
        /// The file's path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A key has a bad value, a wrong type, or is unknown.
    Key {
        /// Dotted key, e.g. `kafka.session_timeout`.
        key: String,
        /// Where the value came from: a file path, an environment variable or "default".
        origin: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// A bad value for `key` with no recorded origin.
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            origin: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::File { path, message } => {
                write!(f, "configuration file {path}: {message}")
            }
            ConfigError::Key {
                key,
                origin,
                message,
            } if origin.is_empty() => {
                write!(f, "configuration key `{key}`: {message}")
            }
            ConfigError::Key {
                key,
                origin,
                message,
            } => {
                write!(f, "configuration key `{key}` (from {origin}): {message}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Errors of the shared clients and helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operator's configuration is wrong; fix the named key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Kafka client failed (broker unreachable, topic missing, ...).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// ClickHouse refused or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// The object store (S3 or local folder) failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A local file or socket operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with the shared crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
