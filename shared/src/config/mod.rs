//! Strata's configuration: one TOML file for every service, every key overridable from the
//! environment, validated at start-up with errors that name the key.
//!
//! Layers, later ones winning: built-in defaults (enough for the local stack), the file
//! (`--config PATH` or `$STRATA_CONFIG`), then `STRATA__SECTION__KEY=value` variables — e.g.
//! `STRATA__KAFKA__BROKERS=10.0.0.5:9092` or
//! `STRATA__KAFKA__CONSUMER_OPTIONS__FETCH.MIN.BYTES=1048576`. See `strata.toml.example`.

mod load;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::error::ConfigError;
use crate::validate::Limits;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Kafka-API broker and topics.
    pub kafka: KafkaConfig,
    /// The ClickHouse server of the speed layer.
    pub clickhouse: ClickHouseConfig,
    /// Where the batch layer's Delta tables live.
    pub lake: LakeConfig,
    /// Connection settings for an S3 lake (ignored for a local folder).
    pub s3: S3Config,
    /// What an event must satisfy to be counted.
    pub validation: Limits,
    /// Logging.
    pub telemetry: TelemetryConfig,
    /// The speed layer (`strata-speed`).
    pub speed: SpeedConfig,
    /// The batch layer (`strata-batch`).
    pub batch: BatchConfig,
    /// The serving layer (`strata-serving`).
    pub serving: ServingConfig,
    /// The receivers of standard producers (remote write, OTLP, StatsD) in `strata-serving`.
    pub ingest: IngestConfig,
}

/// `[kafka]`: the broker, the topics and raw librdkafka options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The topic producers publish events to.
    pub topic: String,
    /// The dead-letter topic for refused messages.
    pub dlq_topic: String,
    /// Consumer-group session timeout; a dead member's partitions move after it.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Raw librdkafka options for every client (e.g. `"security.protocol" = "SASL_SSL"`).
    #[serde(deserialize_with = "load::string_map")]
    pub options: BTreeMap<String, String>,
    /// Raw librdkafka options for consumers only (e.g. `"auto.offset.reset" = "earliest"`).
    #[serde(deserialize_with = "load::string_map")]
    pub consumer_options: BTreeMap<String, String>,
    /// Raw librdkafka options for producers only (e.g. `"linger.ms" = "20"`).
    #[serde(deserialize_with = "load::string_map")]
    pub producer_options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "metrics-events".into(),
            dlq_topic: "metrics-events-dlq".into(),
            session_timeout: Duration::from_secs(6),
            options: BTreeMap::new(),
            consumer_options: BTreeMap::new(),
            producer_options: BTreeMap::new(),
        }
    }
}

/// `[clickhouse]`: the speed layer's store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:18123`.
    pub url: String,
    /// Database holding Strata's tables (created if missing).
    pub database: String,
    /// User name.
    pub user: String,
    /// Password (never logged).
    pub password: Secret,
    /// Timeout of one HTTP request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:18123".into(),
            database: "strata".into(),
            user: "default".into(),
            password: Secret::default(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// `[lake]`: the location of the Delta tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// A local folder (`/data/lake`, `file:///data/lake`, relative paths allowed) or
    /// `s3://bucket/prefix` (MinIO, SeaweedFS and AWS alike; see `[s3]`).
    pub url: String,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            url: ".strata/lake".into(),
        }
    }
}

/// `[s3]`: how to reach an S3 lake. Credentials not set here come from the usual `AWS_*`
/// environment variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint for S3-compatible servers (MinIO, SeaweedFS); unset means AWS.
    pub endpoint: Option<String>,
    /// Region name.
    pub region: String,
    /// Allow plain-HTTP endpoints (local servers).
    pub allow_http: bool,
    /// Access key id; default `$AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Secret access key (never logged); default `$AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<Secret>,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".into(),
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

/// `[telemetry]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// A tracing filter, e.g. `info` or `strata_speed=debug,rdkafka=warn`; `$RUST_LOG` wins.
    pub log_level: String,
    /// `text` for people, `json` for log shippers.
    pub log_format: LogFormat,
    /// How often each service publishes its own counters and gauges as metric events to
    /// `kafka.topic` (queryable like any metric, e.g. `strata_speed_dead_letters_total_sum`);
    /// `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub self_report_interval: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info,buoyant_kernel=off,deltalake_core=warn".into(),
            log_format: LogFormat::Text,
            self_report_interval: Duration::from_secs(15),
        }
    }
}

/// `[speed]`: the speed layer, Kafka → ClickHouse 1-minute rollups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeedConfig {
    /// Kafka consumer group.
    pub group_id: String,
    /// Longest time a consumed event waits before its rollup is written.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Write a batch once it holds this many events (at most 1,000,000, so that one insert is
    /// one ClickHouse block and one part).
    pub max_batch_events: usize,
    /// Batches waiting for ClickHouse before consumption pauses (the bounded buffer).
    pub max_pending_batches: usize,
    /// Duplicate event_ids are dropped when seen again within this many offsets of the same
    /// partition (0 turns deduplication off). Deterministic, so it survives restarts.
    pub dedup_window: u64,
    /// Most live series per metric; other series fold into one overflow series.
    pub max_series_per_metric: usize,
    /// A series is live while it had an event within this time (event time) of its metric's
    /// newest; a series silent for longer frees its place under `max_series_per_metric`.
    #[serde(with = "humantime_serde")]
    pub series_live_window: Duration,
    /// Days of rollups kept; older ClickHouse partitions are dropped.
    pub retention_days: u32,
    /// Longest wait between two attempts to write to ClickHouse.
    #[serde(with = "humantime_serde")]
    pub max_retry_backoff: Duration,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        Self {
            group_id: "strata-speed".into(),
            flush_interval: Duration::from_millis(500),
            max_batch_events: 500_000,
            max_pending_batches: 2,
            dedup_window: 100_000,
            max_series_per_metric: 10_000,
            series_live_window: Duration::from_secs(86_400),
            retention_days: 90,
            max_retry_backoff: Duration::from_secs(10),
            listen: "127.0.0.1:9101".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A string that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself, for handing to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// librdkafka consumer options Strata sets itself: overriding them would break exactly-once.
const MANAGED_CONSUMER_OPTIONS: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
];
/// librdkafka options set from their own keys instead.
const MANAGED_OPTIONS: &[&str] = &["bootstrap.servers", "group.id"];

impl Config {
    /// Loads defaults, then the file (`path`, else `$STRATA_CONFIG` if set), then `STRATA__*`
    /// environment variables, and validates the result.
    pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let from_env = std::env::var("STRATA_CONFIG")
            .ok()
            .map(std::path::PathBuf::from);
        let path = path.map(|p| p.to_path_buf()).or(from_env);
        let file = match &path {
            Some(p) => Some((
                std::fs::read_to_string(p).map_err(|e| ConfigError::File {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?,
                p.display().to_string(),
            )),
            None => None,
        };
        load::from_sources(file.as_ref().map(|(t, p)| (t.as_str(), p.as_str())), env)
    }

    /// Loads from TOML text alone (no environment), validated. Handy in tests and examples.
    ///
    /// ```
    /// let cfg = strata_shared::Config::from_toml("[kafka]\nbrokers = \"k1:9092,k2:9092\"").unwrap();
    /// assert_eq!(cfg.kafka.brokers, "k1:9092,k2:9092");
    /// let err = strata_shared::Config::from_toml("[kafka]\nsession_timeout = \"soon\"").unwrap_err();
    /// assert!(err.to_string().contains("kafka.session_timeout"));
    /// ```
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        load::from_sources(Some((text, "<toml>")), std::iter::empty())
    }

    /// Checks every value; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.brokers.split(',').any(|b| !is_host_port(b.trim())) {
            return Err(ConfigError::key(
                "kafka.brokers",
                format!(
                    "{:?} must be a comma-separated list of host:port",
                    k.brokers
                ),
            ));
        }
        for (key, topic) in [("kafka.topic", &k.topic), ("kafka.dlq_topic", &k.dlq_topic)] {
            if !is_topic_name(topic) {
                return Err(ConfigError::key(
                    key,
                    format!(
                        "{topic:?} is not a valid topic name ([a-zA-Z0-9._-], 1 to 249 characters)"
                    ),
                ));
            }
        }
        if k.topic == k.dlq_topic {
            return Err(ConfigError::key(
                "kafka.dlq_topic",
                "must differ from kafka.topic",
            ));
        }
        if k.session_timeout < Duration::from_secs(1)
            || k.session_timeout > Duration::from_secs(3600)
        {
            return Err(ConfigError::key(
                "kafka.session_timeout",
                "must be between 1s and 1h",
            ));
        }
        for (section, map, managed) in [
            ("options", &k.options, MANAGED_OPTIONS),
            (
                "consumer_options",
                &k.consumer_options,
                MANAGED_CONSUMER_OPTIONS,
            ),
            ("producer_options", &k.producer_options, MANAGED_OPTIONS),
        ] {
            if let Some(name) = map.keys().find(|name| managed.contains(&name.as_str())) {
                return Err(ConfigError::key(
                    format!("kafka.{section}.\"{name}\""),
                    "is managed by Strata (offsets are stored only once the data is safe; brokers come from kafka.brokers)",
                ));
            }
        }
        let c = &self.clickhouse;
        match url::Url::parse(&c.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(ConfigError::key(
                    "clickhouse.url",
                    format!("{:?} must be an http(s) URL", c.url),
                ))
            }
        }
        if !crate::validate::is_label_name(&c.database) {
            return Err(ConfigError::key(
                "clickhouse.database",
                format!("{:?} must match [a-zA-Z_][a-zA-Z0-9_]*", c.database),
            ));
        }
        if c.request_timeout.is_zero() {
            return Err(ConfigError::key(
                "clickhouse.request_timeout",
                "must be positive",
            ));
        }
        crate::lake::LakeLocation::parse(&self.lake.url)
            .map_err(|m| ConfigError::key("lake.url", m))?;
        if let Some(e) = &self.s3.endpoint {
            if url::Url::parse(e)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                return Err(ConfigError::key(
                    "s3.endpoint",
                    format!("{e:?} must be an http(s) URL"),
                ));
            }
        }
        let v = &self.validation;
        for (key, n) in [
            ("validation.max_tags", v.max_tags),
            ("validation.max_metric_name_len", v.max_metric_name_len),
            ("validation.max_tag_key_len", v.max_tag_key_len),
            ("validation.max_tag_value_len", v.max_tag_value_len),
            ("validation.max_source_len", v.max_source_len),
            ("validation.max_event_id_len", v.max_event_id_len),
        ] {
            if n == 0 || n > 65_536 {
                return Err(ConfigError::key(
                    key,
                    format!("{n} must be between 1 and 65536"),
                ));
            }
        }
        if !(128..=16 << 20).contains(&v.max_message_bytes) {
            return Err(ConfigError::key(
                "validation.max_message_bytes",
                "must be between 128 and 16 MiB",
            ));
        }
        let sp = &self.speed;
        if sp.group_id.is_empty() {
            return Err(ConfigError::key("speed.group_id", "must not be empty"));
        }
        if sp.flush_interval < Duration::from_millis(10)
            || sp.flush_interval > Duration::from_secs(600)
        {
            return Err(ConfigError::key(
                "speed.flush_interval",
                "must be between 10ms and 10m",
            ));
        }
        if !(1..=1_000_000).contains(&sp.max_batch_events) {
            return Err(ConfigError::key(
                "speed.max_batch_events",
                "must be between 1 and 1000000 (one insert must stay one ClickHouse block)",
            ));
        }
        if !(1..=64).contains(&sp.max_pending_batches) {
            return Err(ConfigError::key(
                "speed.max_pending_batches",
                "must be between 1 and 64",
            ));
        }
        if sp.max_series_per_metric == 0 {
            return Err(ConfigError::key(
                "speed.max_series_per_metric",
                "must be at least 1",
            ));
        }
        if sp.series_live_window < Duration::from_secs(60) {
            return Err(ConfigError::key(
                "speed.series_live_window",
                "must be at least 1m",
            ));
        }
        if sp.retention_days == 0 {
            return Err(ConfigError::key(
                "speed.retention_days",
                "must be at least 1",
            ));
        }
        if sp.max_retry_backoff < Duration::from_millis(100) {
            return Err(ConfigError::key(
                "speed.max_retry_backoff",
                "must be at least 100ms",
            ));
        }
        if sp.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::key(
                "speed.listen",
                format!("{:?} must be ip:port", sp.listen),
            ));
        }
        self.batch.validate()?;
        self.serving.validate()?;
        self.ingest.validate()?;
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level).is_err() {
            return Err(ConfigError::key(
                "telemetry.log_level",
                format!("{:?} is not a tracing filter", self.telemetry.log_level),
            ));
        }
        Ok(())
    }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn is_topic_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 249
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

mod batch;
mod ingest;
mod serving;
pub use batch::{BatchConfig, Engine};
pub use ingest::IngestConfig;
pub use serving::ServingConfig;

#[cfg(test)]
mod tests;
