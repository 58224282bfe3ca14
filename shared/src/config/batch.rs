//! `[batch]`: the archiver, the schedule and job queue of recomputes, and where recomputes run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[batch]`: the batch layer — the Delta Lake archive and recomputes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Kafka consumer group of the archiver.
    pub archive_group_id: String,
    /// Longest time a consumed event waits before it is committed to the archive. Each commit
    /// writes at least one Parquet file per event date, so longer means fewer, larger files.
    #[serde(with = "humantime_serde")]
    pub archive_flush_interval: Duration,
    /// Commit once this many events are pending.
    pub archive_max_batch_events: usize,
    /// Address of the archiver's `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
    /// When `strata-batch serve` recomputes on its own: a cron expression with seconds
    /// (`sec min hour day-of-month month day-of-week`), in UTC.
    pub schedule: String,
    /// How many of the most recent closed hours each scheduled run makes sure are recomputed
    /// (besides every dirty hour).
    pub schedule_closed_hours: u32,
    /// How long after its end an hour counts as closed (time for late events to arrive).
    #[serde(with = "humantime_serde")]
    pub schedule_grace: Duration,
    /// How often `strata-batch serve` compacts the archive's small files (0s: never).
    #[serde(with = "humantime_serde")]
    pub compact_interval: Duration,
    /// How often `strata-batch serve` looks for queued recompute jobs.
    #[serde(with = "humantime_serde")]
    pub job_poll_interval: Duration,
    /// Finished jobs older than this are removed from the queue.
    #[serde(with = "humantime_serde")]
    pub jobs_retention: Duration,
    /// Longest wait of a requested recompute (API, CLI) for the archive to hold what the broker
    /// had acknowledged when it was asked for; past it, it computes anyway and says so.
    #[serde(with = "humantime_serde")]
    pub recompute_wait: Duration,
    /// Address of the `strata-batch serve` `/metrics`, `/healthz` and `/readyz`.
    pub serve_listen: String,
    /// Where recomputes run: `embedded` (inside `strata-batch`, one machine) or `ballista` (an
    /// Apache DataFusion Ballista cluster at `ballista_scheduler`).
    pub engine: Engine,
    /// The Ballista scheduler recomputes are sent to (`df://host:port`) with `engine =
    /// "ballista"`; also the address `strata-batch ballista scheduler` listens on by default.
    pub ballista_scheduler: String,
    /// Longest time one attempt of a recompute may take on the cluster before it is given up.
    #[serde(with = "humantime_serde")]
    pub ballista_job_timeout: Duration,
    /// Attempts of a recompute on the cluster (a lost executor, an unreachable scheduler) before
    /// the recompute fails; nothing is committed until every tier has been computed.
    pub ballista_attempts: u32,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            archive_group_id: "strata-archive".into(),
            archive_flush_interval: Duration::from_secs(5),
            archive_max_batch_events: 500_000,
            listen: "127.0.0.1:9102".into(),
            schedule: "0 */5 * * * *".into(),
            schedule_closed_hours: 2,
            schedule_grace: Duration::from_secs(120),
            compact_interval: Duration::from_secs(3600),
            job_poll_interval: Duration::from_secs(1),
            jobs_retention: Duration::from_secs(7 * 86_400),
            recompute_wait: Duration::from_secs(120),
            serve_listen: "127.0.0.1:9103".into(),
            engine: Engine::Embedded,
            ballista_scheduler: "df://127.0.0.1:50050".into(),
            ballista_job_timeout: Duration::from_secs(1800),
            ballista_attempts: 3,
        }
    }
}

/// Where a recompute's queries run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// In the `strata-batch` process: DataFusion on this machine's cores.
    Embedded,
    /// On an Apache DataFusion Ballista cluster (its scheduler at `batch.ballista_scheduler`).
    Ballista,
}

impl BatchConfig {
    /// Checks every `[batch]` value; the error names the first bad key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let b = self;
        if b.archive_group_id.is_empty() {
            return Err(ConfigError::key(
                "batch.archive_group_id",
                "must not be empty",
            ));
        }
        if b.archive_flush_interval < Duration::from_millis(100)
            || b.archive_flush_interval > Duration::from_secs(3600)
        {
            return Err(ConfigError::key(
                "batch.archive_flush_interval",
                "must be between 100ms and 1h",
            ));
        }
        if !(1..=10_000_000).contains(&b.archive_max_batch_events) {
            return Err(ConfigError::key(
                "batch.archive_max_batch_events",
                "must be between 1 and 10000000",
            ));
        }
        for (key, addr) in [
            ("batch.listen", &b.listen),
            ("batch.serve_listen", &b.serve_listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::key(key, format!("{addr:?} must be ip:port")));
            }
        }
        if let Err(e) = b.schedule.parse::<cron::Schedule>() {
            return Err(ConfigError::key(
                "batch.schedule",
                format!(
                    "{:?} is not a cron expression with seconds (e.g. \"0 */5 * * * *\"): {e}",
                    b.schedule
                ),
            ));
        }
        if !(1..=24 * 31).contains(&b.schedule_closed_hours) {
            return Err(ConfigError::key(
                "batch.schedule_closed_hours",
                "must be between 1 and 744",
            ));
        }
        if b.schedule_grace > Duration::from_secs(86_400) {
            return Err(ConfigError::key(
                "batch.schedule_grace",
                "must be at most 1d",
            ));
        }
        if b.jobs_retention < Duration::from_secs(60) {
            return Err(ConfigError::key(
                "batch.jobs_retention",
                "must be at least 1m",
            ));
        }
        if b.job_poll_interval < Duration::from_millis(100) {
            return Err(ConfigError::key(
                "batch.job_poll_interval",
                "must be at least 100ms",
            ));
        }
        if let Err(m) = scheduler_host_port(&self.ballista_scheduler) {
            return Err(ConfigError::key("batch.ballista_scheduler", m));
        }
        if self.ballista_job_timeout < Duration::from_secs(1) {
            return Err(ConfigError::key(
                "batch.ballista_job_timeout",
                "must be at least 1s",
            ));
        }
        if !(1..=100).contains(&self.ballista_attempts) {
            return Err(ConfigError::key(
                "batch.ballista_attempts",
                "must be between 1 and 100",
            ));
        }
        Ok(())
    }

    /// Host and port of `ballista_scheduler`.
    pub fn ballista_host_port(&self) -> Result<(String, u16), ConfigError> {
        scheduler_host_port(&self.ballista_scheduler)
            .map_err(|m| ConfigError::key("batch.ballista_scheduler", m))
    }
}

/// `df://host:port` → (host, port).
fn scheduler_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("{s:?} must be df://host:port (the Ballista scheduler)");
    let u = url::Url::parse(s).map_err(|_| bad())?;
    match (u.scheme(), u.host_str(), u.port()) {
        ("df", Some(h), Some(p)) if !h.is_empty() && p > 0 && u.path().is_empty() => {
            Ok((h.to_owned(), p))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_address_is_df_host_port() {
        assert_eq!(
            scheduler_host_port("df://127.0.0.1:50050"),
            Ok(("127.0.0.1".into(), 50050))
        );
        assert_eq!(
            scheduler_host_port("df://ballista.internal:7000"),
            Ok(("ballista.internal".into(), 7000))
        );
        for bad in [
            "127.0.0.1:50050",
            "http://h:1",
            "df://h",
            "df://:1",
            "df://h:1/x",
            "",
        ] {
            assert!(scheduler_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_ballista_keys_are_named() {
        for (cfg, key) in [
            (
                BatchConfig {
                    ballista_scheduler: "localhost:50050".into(),
                    ..Default::default()
                },
                "batch.ballista_scheduler",
            ),
            (
                BatchConfig {
                    ballista_attempts: 0,
                    ..Default::default()
                },
                "batch.ballista_attempts",
            ),
            (
                BatchConfig {
                    ballista_job_timeout: Duration::ZERO,
                    ..Default::default()
                },
                "batch.ballista_job_timeout",
            ),
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        BatchConfig::default().validate().unwrap();
    }
}
