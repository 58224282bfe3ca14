//! Writes a [`Batch`] to ClickHouse as one insert, and reads back what is already there.
//!
//! ## Why a batch is written exactly once
//! - One batch is one `INSERT` of one row into `speed_ingest_batch_v2` (arrays, one element per
//!   rollup row), which the materialized view unfolds into one part of `speed_rollup_1m` (the
//!   partition key, the ingest day, is constant within the row). A part appears whole or not at
//!   all — and a body cut short (the client killed mid-request) is an unparsable row, not a
//!   committed prefix: ClickHouse commits whatever rows it parsed when a body ends early.
//! - The same insert holds the batch's offset markers. What ClickHouse holds therefore always
//!   says which Kafka offsets it holds: after a crash, the consumer resumes right after them.
//! - When an attempt fails, its outcome may be unknown (the server may have committed the part
//!   before the connection broke). Before trying again the writer reads the markers: if they
//!   already reach the batch's offsets, the batch is in and is not written twice.
//! - An insert whose client is gone (timed out, or the process was SIGKILLed) can still be running
//!   in ClickHouse, and commit after the markers were read. So every insert carries a query id
//!   naming its database and topic, and before markers are trusted — on a retry, on a partition
//!   assignment — the writer waits until the inserts of this topic that ClickHouse is still running
//!   have finished ([`RollupWriter::wait_for_inflight`]); only then do the markers say everything.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clickhouse::Client;
use serde::Deserialize;
use strata_shared::config::ClickHouseConfig;

use super::retry::{classify, Backoff, Verdict, FIRST_RETRY};
use super::schema::{migrate, INGEST_TABLE, ROLLUP_TABLE};
use crate::rollup::{Batch, IngestBatch};

/// How many times a permanent error is retried before giving up.
const PERMANENT_ATTEMPTS: u32 = 5;
/// How often [`RollupWriter::wait_for_inflight`] looks at `system.processes`.
const INFLIGHT_POLL: Duration = Duration::from_millis(100);

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// ClickHouse refused it with an error that retrying cannot fix: the operator must act (the
    /// error says what). Nothing was committed, so nothing is lost.
    #[error("ClickHouse refused a batch {attempts} times with a non-retryable error: {source}")]
    Fatal {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// The consumer gave the batch's partitions away while ClickHouse was down; the next owner
    /// reads them again from the stored offsets.
    #[error("abandoned: the partitions were revoked before ClickHouse took the batch")]
    Abandoned,
}

/// Writes batches of one topic to ClickHouse.
pub struct RollupWriter {
    client: Client,
    /// Bound to no database: `system.processes` and `KILL QUERY`.
    server: Client,
    cfg: ClickHouseConfig,
    topic: String,
    max_backoff: Duration,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Marker {
    partition: i32,
    offset: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Running {
    query_id: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct MetricSeries {
    metric_name: String,
    series_id: u64,
    last_ms: i64,
}

/// Days since 1970-01-01 (ClickHouse `Date`), today in UTC.
pub fn today() -> u16 {
    (chrono::Utc::now().timestamp().div_euclid(86_400)) as u16
}

impl RollupWriter {
    /// A writer for `topic`'s batches.
    pub fn new(cfg: &ClickHouseConfig, topic: &str, max_backoff: Duration) -> Self {
        Self {
            client: strata_shared::clickhouse::client(cfg),
            server: strata_shared::clickhouse::server_client(cfg),
            cfg: cfg.clone(),
            topic: topic.to_owned(),
            max_backoff,
        }
    }

    /// The start of every query id this writer gives its inserts: database and topic, so
    /// writers of other topics or databases are never waited for.
    pub fn query_id_prefix(&self) -> String {
        format!("strata-speed/{}/{}/", self.cfg.database, self.topic)
    }

    /// One insert attempt.
    pub async fn insert_once(&self, batch: &Batch) -> Result<(), clickhouse::error::Error> {
        let timeout = Some(self.cfg.request_timeout);
        let query_id = format!(
            "{}{}",
            self.query_id_prefix(),
            uuid::Uuid::new_v4().simple()
        );
        let mut insert = self
            .client
            .insert::<IngestBatch<'_>>(INGEST_TABLE)
            .await?
            .with_setting("query_id", query_id)
            .with_timeouts(timeout, timeout);
        insert
            .write(&batch.ingest_batch(&self.topic, today()))
            .await?;
        insert.end().await
    }

    /// Query ids of this topic's inserts that ClickHouse is running now.
    async fn running_inserts(&self) -> Result<Vec<String>, clickhouse::error::Error> {
        let rows: Vec<Running> = self
            .server
            .query("SELECT query_id FROM system.processes WHERE position(query_id, ?) = 1")
            .bind(self.query_id_prefix())
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(|r| r.query_id).collect())
    }

    /// Waits until every insert of this topic that ClickHouse is running now has finished —
    /// committed or failed — so that the markers read afterwards are final. Inserts that started
    /// later belong to live writers of other partitions and are not waited for. One still
    /// running after `max_wait` is killed (an insert is one part: it lands whole or not at all).
    pub async fn wait_for_inflight(
        &self,
        max_wait: Duration,
    ) -> Result<(), clickhouse::error::Error> {
        let waiting = self.running_inserts().await?;
        if waiting.is_empty() {
            return Ok(());
        }
        tracing::info!(
            inserts = waiting.len(),
            "waiting for inserts ClickHouse is still running before reading the offsets"
        );
        let deadline = Instant::now() + max_wait;
        loop {
            let running = self.running_inserts().await?;
            let left: Vec<&String> = waiting.iter().filter(|q| running.contains(q)).collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                for q in left {
                    tracing::warn!(query_id = %q, "insert still running after {max_wait:?}; killing it");
                    self.server
                        .query("KILL QUERY WHERE query_id = ? SYNC")
                        .bind(q.as_str())
                        .execute()
                        .await?;
                }
                return Ok(());
            }
            tokio::time::sleep(INFLIGHT_POLL).await;
        }
    }

    /// The last offset ClickHouse holds per partition of the topic, once no insert of the topic
    /// that was running when asked can still land ([`Self::wait_for_inflight`]).
    pub async fn settled_offsets(&self) -> Result<BTreeMap<i32, i64>, clickhouse::error::Error> {
        self.wait_for_inflight(self.cfg.request_timeout).await?;
        self.stored_offsets().await
    }

    /// The last offset ClickHouse holds per partition of the topic.
    pub async fn stored_offsets(&self) -> Result<BTreeMap<i32, i64>, clickhouse::error::Error> {
        let rows: Vec<Marker> = self
            .client
            .query(&format!(
                "SELECT toInt32(series_id) AS partition, maxMerge(kafka_offset) AS offset \
                 FROM {ROLLUP_TABLE} WHERE metric_name = '' AND source = ? GROUP BY partition"
            ))
            .bind(&self.topic)
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(|m| (m.partition, m.offset)).collect())
    }

    /// The live series per metric (overflow series excluded) with the start of the last minute
    /// each was seen: those with rollups within `window` of now, for the cardinality guard.
    pub async fn admitted_series(
        &self,
        window: Duration,
    ) -> Result<Vec<(String, Vec<(u64, i64)>)>, clickhouse::error::Error> {
        let since = (chrono::Utc::now().timestamp() - window.as_secs() as i64).max(0);
        let rows: Vec<MetricSeries> = self
            .client
            .query(&format!(
                "SELECT metric_name, series_id, toInt64(toUInt32(max(minute))) * 1000 AS last_ms \
                 FROM {ROLLUP_TABLE} WHERE metric_name != '' AND NOT has(tag_keys, ?) \
                 AND ingest_day >= toDate(toDateTime({since}) - 86400) AND minute >= toDateTime({since}) \
                 GROUP BY metric_name, series_id"
            ))
            .bind(crate::cardinality::OVERFLOW_TAG)
            .fetch_all()
            .await?;
        let mut out: std::collections::BTreeMap<String, Vec<(u64, i64)>> = Default::default();
        for r in rows {
            out.entry(r.metric_name)
                .or_default()
                .push((r.series_id, r.last_ms));
        }
        Ok(out.into_iter().collect())
    }

    /// Writes `batch`, retrying for as long as ClickHouse is unreachable or overloaded (until
    /// `abandon` is set), and never writing it twice. `on_retry` is told about each failed attempt.
    pub async fn write(
        &self,
        batch: &Batch,
        abandon: &AtomicBool,
        mut on_retry: impl FnMut(&clickhouse::error::Error),
    ) -> Result<Duration, WriteError> {
        let mut backoff = Backoff::new(FIRST_RETRY, self.max_backoff);
        let mut permanent = 0;
        loop {
            let started = Instant::now();
            let err = match self.insert_once(batch).await {
                Ok(()) => return Ok(started.elapsed()),
                Err(e) => e,
            };
            on_retry(&err);
            match classify(&err) {
                Verdict::Retry => {
                    tracing::warn!(error = %err, attempt = backoff.attempts() + 1, "insert failed; will retry")
                }
                Verdict::Migrate => {
                    tracing::warn!(error = %err, "schema missing; migrating before retrying");
                    if let Err(e) = migrate(&self.cfg).await {
                        tracing::warn!(error = %e, "migration failed");
                    }
                }
                Verdict::Permanent => {
                    permanent += 1;
                    tracing::error!(error = %err, attempt = permanent, "insert refused");
                    if permanent >= PERMANENT_ATTEMPTS {
                        return Err(WriteError::Fatal {
                            attempts: permanent,
                            source: err,
                        });
                    }
                }
            }
            // Did the failed attempt land after all? Ask before sending it again.
            loop {
                tokio::time::sleep(backoff.next_delay()).await;
                if abandon.load(Ordering::SeqCst) {
                    return Err(WriteError::Abandoned);
                }
                match self.settled_offsets().await {
                    Ok(stored) if already_written(batch, &stored) => {
                        tracing::info!("the failed insert had landed; not writing it again");
                        return Ok(started.elapsed());
                    }
                    Ok(_) => break,
                    Err(e) => tracing::warn!(error = %e, "ClickHouse unreachable; waiting"),
                }
            }
        }
    }
}

/// True when ClickHouse's markers reach every offset the batch covers.
pub fn already_written(batch: &Batch, stored: &BTreeMap<i32, i64>) -> bool {
    !batch.offsets().is_empty()
        && batch
            .offsets()
            .iter()
            .all(|(p, o)| stored.get(p).is_some_and(|s| s >= o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_written_when_every_marker_reaches_it() {
        let mut b = Batch::default();
        b.cover(1, 10);
        b.cover(2, 20);
        assert!(already_written(&b, &BTreeMap::from([(1, 10), (2, 25)])));
        assert!(!already_written(&b, &BTreeMap::from([(1, 10), (2, 19)])));
        assert!(!already_written(&b, &BTreeMap::from([(1, 10)])));
        assert!(!already_written(&Batch::default(), &BTreeMap::new()));
    }
}
