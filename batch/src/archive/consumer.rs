//! The archiver's consumer loop: Kafka → validated events → batched Delta commits.
//!
//! Offsets live in the Delta log (see [`super::writer`]); Kafka commits follow each Delta commit
//! for lag tools only. A failed commit may still have landed: before retrying, the archiver reloads
//! the table and drops from the pending batch whatever the stored offsets already cover, so a
//! retry never writes an event twice. Before partitions are given up, the pending batch is
//! committed (or, if the lake stays unreachable past a deadline, dropped — the next owner reads
//! it again from the stored offsets). The ends of partitions the consumer reaches are tracked
//! ([`super::progress`]), so a recompute can wait until what was sent before it is archived.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message};
use strata_shared::offset_gaps::GapGuard;
use strata_shared::retry::Backoff;
use strata_shared::validate::check_message;
use strata_shared::Config;
use tokio::runtime::Handle;

use super::progress::Tracker;
use super::schema::ArchivedEvent;
use super::writer::Archive;

/// How long a revoke keeps trying to commit the pending batch before dropping it.
const REVOKE_DEADLINE: Duration = Duration::from_secs(60);

/// The archiver's self-metrics.
pub struct ArchiveMetrics {
    /// Valid events committed to the archive.
    pub events: IntCounter,
    /// Messages skipped as invalid (the speed layer dead-letters them).
    pub skipped: IntCounter,
    /// Delta commits.
    pub commits: IntCounter,
    /// Failed commit attempts (retried).
    pub commit_failures: IntCounter,
    /// Seconds per successful commit.
    pub commit_seconds: Histogram,
    /// Offset gaps the broker served, each read again from the first missing offset.
    pub offset_gaps: IntCounter,
}

impl ArchiveMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            events: IntCounter::new(
                "archive_events_total",
                "Valid events committed to the archive",
            )?,
            skipped: IntCounter::new("archive_skipped_total", "Invalid messages skipped")?,
            commits: IntCounter::new("archive_commits_total", "Delta commits")?,
            commit_failures: IntCounter::new(
                "archive_commit_failures_total",
                "Failed commit attempts",
            )?,
            offset_gaps: IntCounter::new(
                "archive_offset_gaps_total",
                "Offset gaps the broker served, read again",
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new("archive_commit_seconds", "Latency of Delta commits")
                    .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
        };
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.skipped.clone()))?;
        registry.register(Box::new(m.commits.clone()))?;
        registry.register(Box::new(m.commit_failures.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.offset_gaps.clone()))?;
        Ok(m)
    }
}

#[derive(Default)]
struct Pending {
    events: Vec<ArchivedEvent>,
    offsets: BTreeMap<i32, i64>,
    started: Option<Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Drops what the stored offsets already cover (a commit that failed but landed).
    fn without_stored(&mut self, stored: &BTreeMap<i32, i64>) {
        let covered = |p: i32, o: i64| stored.get(&p).is_some_and(|&s| o <= s);
        self.events.retain(|e| !covered(e.partition, e.offset));
        self.offsets.retain(|&p, &mut o| !covered(p, o));
    }
}

/// State shared by the loop and its rebalance callbacks.
pub struct Archiver {
    cfg: Config,
    rt: Handle,
    archive: Mutex<Archive>,
    pending: Mutex<Pending>,
    /// Offsets skipped by the broker are read again (see `strata_shared::offset_gaps`).
    gaps: Mutex<GapGuard>,
    /// Which partitions were read to their end, for recomputes that wait for the archive.
    progress: Mutex<Tracker>,
    metrics: Arc<ArchiveMetrics>,
    stop: Arc<AtomicBool>,
}

impl Archiver {
    /// An archiver writing to `archive`.
    pub fn new(
        cfg: Config,
        rt: Handle,
        archive: Archive,
        metrics: Arc<ArchiveMetrics>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let store = strata_shared::lake::object_store(&cfg.lake, &cfg.s3)
            .expect("the lake opened already, so its store does");
        Self {
            cfg,
            rt,
            archive: Mutex::new(archive),
            pending: Mutex::new(Pending::default()),
            gaps: Mutex::new(GapGuard::default()),
            progress: Mutex::new(Tracker::new(store)),
            metrics,
            stop,
        }
    }

    fn handle(&self, m: &BorrowedMessage<'_>, now_ms: i64) {
        let mut p = self.pending.lock().expect("not poisoned");
        match check_message(m.payload(), &self.cfg.validation, now_ms) {
            Ok(d) => p.events.push(ArchivedEvent {
                event: d.event,
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err(_) => self.metrics.skipped.inc(),
        }
        p.offsets.insert(m.partition(), m.offset());
        p.started.get_or_insert_with(Instant::now);
    }

    fn due(&self) -> bool {
        let p = self.pending.lock().expect("not poisoned");
        !p.is_empty()
            && (p.events.len() >= self.cfg.batch.archive_max_batch_events
                || p.started
                    .is_some_and(|t| t.elapsed() >= self.cfg.batch.archive_flush_interval))
    }

    /// Commits the pending batch, retrying until it is in (true) or `deadline` passes (false;
    /// the batch is then dropped, to be read again from the stored offsets).
    fn flush(&self, deadline: Option<Duration>) -> Option<BTreeMap<i32, i64>> {
        let mut batch = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        if batch.is_empty() {
            return Some(BTreeMap::new());
        }
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut archive = self.archive.lock().expect("not poisoned");
        loop {
            let t = Instant::now();
            match self
                .rt
                .block_on(archive.append(&batch.events, &batch.offsets))
            {
                Ok(()) => {
                    self.metrics.commits.inc();
                    self.metrics.events.inc_by(batch.events.len() as u64);
                    self.metrics
                        .commit_seconds
                        .observe(t.elapsed().as_secs_f64());
                    return Some(batch.offsets);
                }
                Err(e) => {
                    self.metrics.commit_failures.inc();
                    tracing::warn!(error = %e, "archive commit failed; retrying");
                }
            }
            if deadline.is_some_and(|d| started.elapsed() >= d) {
                tracing::error!("the lake stayed unreachable; dropping the pending batch (it will be read again)");
                return None;
            }
            std::thread::sleep(backoff.next_delay());
            // The failed attempt may have landed: keep only what the stored offsets lack.
            let partitions: Vec<i32> = batch.offsets.keys().copied().collect();
            match self.rt.block_on(archive.stored_offsets(&partitions)) {
                Ok(stored) => batch.without_stored(&stored),
                Err(e) => tracing::warn!(error = %e, "cannot read the archive's offsets"),
            }
            if batch.is_empty() {
                return Some(BTreeMap::new());
            }
        }
    }

    fn on_assign(&self, consumer: &BaseConsumer<ArchiveContext>, tpl: &mut TopicPartitionList) {
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let ids: Vec<i32> = parts.iter().map(|(_, p)| *p).collect();
        self.progress
            .lock()
            .expect("not poisoned")
            .assigned(ids.iter().copied());
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let stored = loop {
            let res = self.rt.block_on(
                self.archive
                    .lock()
                    .expect("not poisoned")
                    .stored_offsets(&ids),
            );
            match res {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the archive's offsets; retrying");
                    std::thread::sleep(backoff.next_delay());
                }
            }
        };
        let mut gaps = self.gaps.lock().expect("not poisoned");
        for (topic, p) in parts {
            if let Some(&o) = stored.get(&p) {
                let _ = tpl.set_partition_offset(&topic, p, Offset::Offset(o + 1));
                gaps.expect(p, o + 1);
                tracing::info!(partition = p, resume_after = o, "assigned");
            } else {
                gaps.forget(p);
            }
        }
        let _ = consumer;
    }
}

/// The consumer context: rebalances go through the [`Archiver`].
pub struct ArchiveContext {
    /// The shared archiver.
    pub archiver: Arc<Archiver>,
}

impl ClientContext for ArchiveContext {}

impl ConsumerContext for ArchiveContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let topic = self.archiver.cfg.kafka.topic.clone();
        strata_shared::kafka::apply_rebalance(
            consumer,
            err,
            tpl,
            |tpl| self.archiver.on_assign(consumer, tpl),
            |tpl| {
                if let Some(offsets) = self.archiver.flush(Some(REVOKE_DEADLINE)) {
                    commit_kafka(consumer, &topic, &offsets);
                }
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                self.archiver
                    .progress
                    .lock()
                    .expect("not poisoned")
                    .revoked(revoked);
            },
        );
    }
}

fn commit_kafka(
    consumer: &BaseConsumer<ArchiveContext>,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in offsets {
        let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o + 1));
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "Kafka commit failed (the Delta log holds the offsets)");
        }
    }
}

/// Runs the loop on the current (dedicated) thread until the stop flag is set.
pub fn run(
    consumer: BaseConsumer<ArchiveContext>,
    archiver: Arc<Archiver>,
) -> Result<(), rdkafka::error::KafkaError> {
    let topic = archiver.cfg.kafka.topic.clone();
    consumer.subscribe(&[&topic])?;
    while !archiver.stop.load(Ordering::SeqCst) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                archiver
                    .progress
                    .lock()
                    .expect("not poisoned")
                    .message(m.partition());
                let admitted = archiver
                    .gaps
                    .lock()
                    .expect("not poisoned")
                    .admit(&consumer, &m);
                if admitted {
                    archiver.handle(&m, now_ms);
                } else {
                    archiver.metrics.offset_gaps.inc();
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                archiver.progress.lock().expect("not poisoned").end(p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
        if archiver.due() {
            if let Some(offsets) = archiver.flush(None) {
                commit_kafka(&consumer, &topic, &offsets);
            }
        }
        let pending: std::collections::BTreeSet<i32> = archiver
            .pending
            .lock()
            .expect("not poisoned")
            .offsets
            .keys()
            .copied()
            .collect();
        let mut progress = archiver.progress.lock().expect("not poisoned");
        archiver
            .rt
            .block_on(progress.publish_if_wanted(&pending, now_ms));
    }
    tracing::info!("stopping: committing what is pending");
    if let Some(offsets) = archiver.flush(Some(REVOKE_DEADLINE)) {
        commit_kafka(&consumer, &topic, &offsets);
    }
    archiver
        .rt
        .block_on(archiver.progress.lock().expect("not poisoned").retire());
    consumer.unsubscribe();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shared::MetricEvent;

    fn ev(p: i32, o: i64) -> ArchivedEvent {
        ArchivedEvent {
            event: MetricEvent::new(&format!("{p}-{o}"), "m", 1.0, 0),
            partition: p,
            offset: o,
        }
    }

    #[test]
    fn a_landed_commit_is_not_written_again() {
        let mut p = Pending {
            events: vec![ev(0, 5), ev(0, 6), ev(1, 9)],
            offsets: BTreeMap::from([(0, 6), (1, 9)]),
            started: None,
        };
        p.without_stored(&BTreeMap::from([(0, 5)]));
        assert_eq!(p.events, vec![ev(0, 6), ev(1, 9)]);
        p.without_stored(&BTreeMap::from([(0, 6), (1, 9)]));
        assert!(p.is_empty() && p.events.is_empty());
    }
}
