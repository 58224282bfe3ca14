//! `[serving]`: the query API's address, auth and limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// `[serving]`: `strata-serving`, the merged query API (Prometheus, JSON, SQL, recompute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingConfig {
    /// Address the API listens on (`ip:port`). Grafana's Prometheus data source points here.
    pub listen: String,
    /// Address of the PostgreSQL wire protocol (`ip:port`): read-only SQL over the archive for
    /// psql, DBeaver, Grafana's PostgreSQL data source, psycopg… Password = `auth_token` (any
    /// user name); without a token only loopback clients are let in. Empty: off.
    pub pg_listen: String,
    /// Address of Arrow Flight SQL (`ip:port`): the same read-only SQL for ADBC, JDBC and
    /// Arrow-native clients, results streamed as Arrow batches. Bearer token = `auth_token`
    /// (or a handshake with password = `auth_token`); without a token only loopback clients are
    /// let in. Empty: off.
    pub flight_listen: String,
    /// Bearer token required by SQL and recompute (and by everything when `auth_all`). Empty:
    /// no token, and those endpoints answer only clients on loopback.
    pub auth_token: Secret,
    /// Require the token on every endpoint except /healthz and /readyz.
    pub auth_all: bool,
    /// Most points one series may have in a range query (Prometheus: 11,000).
    pub max_points_per_series: u64,
    /// Most series one query may return or touch.
    pub max_series: usize,
    /// Most samples one query may hold at once: selected windows and minutes, and the points
    /// of subqueries (Prometheus: `--query.max-samples`). Bounds a query's memory (≈ 16 bytes
    /// a sample) however long its ranges, offsets and subqueries.
    pub max_samples: usize,
    /// Longest evaluation of one query before it is abandoned with an error.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Widest time range one query may cover, and the widest span of data one selector may
    /// read (its range, offset and enclosing subqueries included).
    #[serde(with = "humantime_serde")]
    pub max_range: Duration,
    /// Most rows `POST /api/v1/sql` returns.
    pub sql_max_rows: usize,
    /// Longest run time of one SQL statement.
    #[serde(with = "humantime_serde")]
    pub sql_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How often the batch coverage (and so the time boundary) is re-read from the lake.
    #[serde(with = "humantime_serde")]
    pub coverage_refresh: Duration,
    /// Bytes of batch-view rows kept in memory (blocks read from the lake, least recently used
    /// out first). Sets most of a replica's memory, whatever the history holds.
    pub block_cache_bytes: u64,
    /// Bytes of query results kept for step-aligned windows below the time boundary (0: off).
    pub results_cache_bytes: u64,
    /// Base URL of the rule evaluator (vmalert, e.g. `http://127.0.0.1:8880`) whose
    /// `/api/v1/rules` and `/api/v1/alerts` this API forwards, so Grafana's Prometheus data source
    /// lists the rules and alerts evaluated against Strata. Empty: both answer empty lists.
    pub rules_url: String,
}

impl Default for ServingConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            pg_listen: "127.0.0.1:5433".into(),
            flight_listen: "127.0.0.1:50051".into(),
            auth_token: Secret::default(),
            auth_all: false,
            max_points_per_series: 11_000,
            max_series: 10_000,
            max_samples: 20_000_000,
            query_timeout: Duration::from_secs(30),
            max_range: Duration::from_secs(400 * 86_400),
            sql_max_rows: 100_000,
            sql_timeout: Duration::from_secs(60),
            max_body_bytes: 1 << 20,
            coverage_refresh: Duration::from_secs(5),
            block_cache_bytes: 64 << 20,
            results_cache_bytes: 16 << 20,
            rules_url: String::new(),
        }
    }
}

impl ServingConfig {
    /// Checks the section; errors name the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::key(
                "serving.listen",
                format!("{:?} must be ip:port", self.listen),
            ));
        }
        for (key, value) in [
            ("serving.pg_listen", &self.pg_listen),
            ("serving.flight_listen", &self.flight_listen),
        ] {
            if !value.is_empty() && value.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::key(
                    key,
                    format!("{value:?} must be ip:port, or empty to turn it off"),
                ));
            }
        }
        if !self.rules_url.is_empty()
            && !self.rules_url.starts_with("http://")
            && !self.rules_url.starts_with("https://")
        {
            return Err(ConfigError::key(
                "serving.rules_url",
                format!("{:?} must be an http(s):// URL, or empty", self.rules_url),
            ));
        }
        let t = self.auth_token.expose();
        if !t.is_empty() && (t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ConfigError::key(
                "serving.auth_token",
                "must be at least 16 characters without spaces",
            ));
        }
        if self.auth_all && t.is_empty() {
            return Err(ConfigError::key(
                "serving.auth_all",
                "needs serving.auth_token to be set",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_points_per_series) {
            return Err(ConfigError::key(
                "serving.max_points_per_series",
                "must be between 1 and 1000000",
            ));
        }
        if self.max_samples < 1_000 {
            return Err(ConfigError::key(
                "serving.max_samples",
                "must be at least 1000",
            ));
        }
        if self.max_series == 0 || self.sql_max_rows == 0 {
            return Err(ConfigError::key(
                if self.max_series == 0 {
                    "serving.max_series"
                } else {
                    "serving.sql_max_rows"
                },
                "must be at least 1",
            ));
        }
        for (key, d) in [
            ("serving.query_timeout", self.query_timeout),
            ("serving.sql_timeout", self.sql_timeout),
            ("serving.max_range", self.max_range),
            ("serving.coverage_refresh", self.coverage_refresh),
        ] {
            if d < Duration::from_millis(100) {
                return Err(ConfigError::key(key, "must be at least 100ms"));
            }
        }
        if !(1 << 20..=1 << 40).contains(&self.block_cache_bytes) {
            return Err(ConfigError::key(
                "serving.block_cache_bytes",
                "must be between 1 MiB and 1 TiB",
            ));
        }
        if self.results_cache_bytes > 1 << 40 {
            return Err(ConfigError::key(
                "serving.results_cache_bytes",
                "must be at most 1 TiB (0 turns the results cache off)",
            ));
        }
        if !(1024..=256 << 20).contains(&self.max_body_bytes) {
            return Err(ConfigError::key(
                "serving.max_body_bytes",
                "must be between 1 KiB and 256 MiB",
            ));
        }
        Ok(())
    }
}
