//! The consumer thread: Kafka messages in, batches out to the writer, offsets committed back.
//!
//! Per message: decode and validate (refused → dead-letter topic), drop duplicates
//! ([`DedupWindow`]), fold excess series into overflow ([`CardinalityGuard`]), add to the open
//! [`Batch`], and record the offset as covered. Every `flush_interval` (or `max_batch_events`) the
//! open batch goes to the writer task; when the writer is behind (ClickHouse slow or down), batches
//! wait in a short local queue and consumption pauses — memory stays bounded, nothing is dropped.
//!
//! Offsets: the source of truth is ClickHouse (markers written with the data, see
//! [`crate::clickhouse::writer`]). On assignment the consumer seeks to just after them, minus the
//! dedup window, which it re-reads only to rebuild the duplicate filter. Kafka commits follow each
//! successful insert, for lag tools and as a fallback; they are never ahead of ClickHouse.
//!
//! Rebalances: before partitions are given up, every pending batch is written (or, if ClickHouse
//! stays down past a deadline, abandoned — the next owner re-reads it from the stored offsets), so
//! two owners never write the same offsets.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message};
use strata_shared::offset_gaps::GapGuard;
use strata_shared::validate::check_message;
use strata_shared::Config;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::cardinality::{overflow_tags, Admission, CardinalityGuard};
use crate::clickhouse::retry::{Backoff, FIRST_RETRY};
use crate::clickhouse::writer::RollupWriter;
use crate::dead_letters::DeadLetters;
use crate::dedup::DedupWindow;
use crate::metrics::Metrics;
use crate::rollup::{Batch, Labels};

/// How long a revoke waits for ClickHouse to take the pending batches before abandoning them.
const REVOKE_DEADLINE: Duration = Duration::from_secs(60);
/// Hard cap on rows in one insert: below ClickHouse's 1,048,576-row block, so one insert is one part.
const MAX_BATCH_ROWS: usize = 1_000_000;

/// Series already in ClickHouse, per metric.
type AdmittedSeries = Vec<(String, Vec<(u64, i64)>)>;

/// An empty cardinality guard as configured.
fn guard_for(cfg: &Config) -> CardinalityGuard {
    CardinalityGuard::new(
        cfg.speed.max_series_per_metric,
        cfg.speed.series_live_window.as_millis() as i64,
    )
}

/// What the consumer thread sends the writer task.
pub enum WriterCmd {
    /// Write this batch.
    Batch(Batch),
    /// Answer once everything sent before has been written (or abandoned).
    Barrier(oneshot::Sender<()>),
}

/// Offsets the writer has made durable, sent back for the Kafka commit.
pub struct Written {
    /// Last written offset per partition.
    pub offsets: BTreeMap<i32, i64>,
}

struct State {
    batch: Batch,
    ready: VecDeque<Batch>,
    dedup: HashMap<i32, DedupWindow>,
    /// The last offset this process handled per partition: with ClickHouse's marker, it tells
    /// whether a partition's duplicate filter is still current when the partition comes back.
    handled: HashMap<i32, i64>,
    warm_until: HashMap<i32, i64>,
    /// Offsets skipped by the broker are read again (see `strata_shared::offset_gaps`).
    gaps: GapGuard,
    guard: CardinalityGuard,
    paused: bool,
}

/// State shared by the consumer thread, its rebalance callbacks and the writer task.
pub struct Pipeline {
    pub(crate) cfg: Config,
    pub(crate) rt: Handle,
    pub(crate) writer: Arc<RollupWriter>,
    pub(crate) writer_tx: mpsc::Sender<WriterCmd>,
    pub(crate) dead_letters: Arc<DeadLetters>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) abandon: Arc<AtomicBool>,
    state: Mutex<State>,
}

impl Pipeline {
    /// Wires the pipeline; the consumer and writer are started by [`crate::service`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Config,
        rt: Handle,
        writer: Arc<RollupWriter>,
        writer_tx: mpsc::Sender<WriterCmd>,
        dead_letters: Arc<DeadLetters>,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
        abandon: Arc<AtomicBool>,
    ) -> Self {
        let guard = guard_for(&cfg);
        Self {
            cfg,
            rt,
            writer,
            writer_tx,
            dead_letters,
            metrics,
            stop,
            abandon,
            state: Mutex::new(State {
                batch: Batch::default(),
                ready: VecDeque::new(),
                dedup: HashMap::new(),
                handled: HashMap::new(),
                warm_until: HashMap::new(),
                gaps: GapGuard::default(),
                guard,
                paused: false,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the consumer thread never panics holding the state")
    }

    /// Folds one Kafka message into the open batch, unless it lies past an offset gap (the
    /// partition is then read again from the gap).
    fn admit_and_handle(
        &self,
        consumer: &BaseConsumer<SpeedContext>,
        m: &BorrowedMessage<'_>,
        now_ms: i64,
    ) {
        let admitted = self.state().gaps.admit(consumer, m);
        if admitted {
            self.handle(m, now_ms);
        } else {
            self.metrics.offset_gaps.inc();
        }
    }

    /// Folds one Kafka message into the open batch.
    fn handle(&self, m: &BorrowedMessage<'_>, now_ms: i64) {
        self.metrics.consumed.inc();
        let (p, o) = (m.partition(), m.offset());
        let mut st = self.state();
        let st = &mut *st;
        st.handled.insert(p, o);
        if let Some(&until) = st.warm_until.get(&p) {
            if o <= until {
                // Re-read only to rebuild the duplicate filter: already counted before the restart.
                if let Ok(d) = check_message(m.payload(), &self.cfg.validation, now_ms) {
                    st.dedup
                        .entry(p)
                        .or_insert_with(|| DedupWindow::new(self.cfg.speed.dedup_window))
                        .observe(o, &d.event.event_id);
                }
                self.metrics.outcome.warmup.inc();
                return;
            }
            st.warm_until.remove(&p);
        }
        match check_message(m.payload(), &self.cfg.validation, now_ms) {
            Err(reject) => {
                self.metrics.outcome.rejected.inc();
                self.metrics
                    .dead_letters
                    .with_label_values(&[reject.code()])
                    .inc();
                st.batch
                    .dead_letters
                    .push(self.dead_letters.send(m, &reject, now_ms));
            }
            Ok(d) => {
                let e = d.event;
                let window = st
                    .dedup
                    .entry(p)
                    .or_insert_with(|| DedupWindow::new(self.cfg.speed.dedup_window));
                if !window.observe(o, &e.event_id) {
                    self.metrics.outcome.duplicate.inc();
                } else {
                    let id = e.series_id();
                    match st
                        .guard
                        .admit(&e.metric_name, &e.source, id, e.timestamp_ms)
                    {
                        Admission::Admitted => {
                            self.metrics.outcome.accepted.inc();
                            st.batch.add(id, e.timestamp_ms, e.value, || {
                                labels(&e.metric_name, &e.source, &e.tags)
                            });
                        }
                        Admission::Overflow(oid) => {
                            self.metrics.outcome.overflow.inc();
                            st.batch.add(oid, e.timestamp_ms, e.value, || {
                                labels(&e.metric_name, &e.source, &overflow_tags())
                            });
                        }
                    }
                }
            }
        }
        st.batch.cover(p, o);
    }

    /// Moves the open batch to the ready queue when it is due, then hands ready batches to the
    /// writer; pauses or resumes consumption accordingly.
    fn flush_due(
        &self,
        consumer: &BaseConsumer<SpeedContext>,
        force: bool,
    ) -> Result<(), crate::Error> {
        let mut st = self.state();
        let due = !st.batch.is_empty()
            && (force
                || st.batch.events() >= self.cfg.speed.max_batch_events
                || st.batch.rows() >= MAX_BATCH_ROWS
                || st
                    .batch
                    .started()
                    .is_some_and(|t| t.elapsed() >= self.cfg.speed.flush_interval));
        if due {
            let b = std::mem::take(&mut st.batch);
            st.ready.push_back(b);
        }
        while let Some(b) = st.ready.pop_front() {
            match self.writer_tx.try_send(WriterCmd::Batch(b)) {
                Ok(()) => self.metrics.pending_batches.inc(),
                Err(mpsc::error::TrySendError::Full(WriterCmd::Batch(b))) => {
                    st.ready.push_front(b);
                    break;
                }
                Err(_) => return Err(crate::Error::WriterGone),
            }
        }
        let behind = !st.ready.is_empty();
        if behind != st.paused {
            let assignment = consumer.assignment()?;
            if behind {
                consumer.pause(&assignment)?;
                tracing::warn!(
                    waiting = st.ready.len(),
                    "ClickHouse is behind; pausing consumption"
                );
            } else {
                consumer.resume(&assignment)?;
                tracing::info!("ClickHouse caught up; resuming consumption");
            }
            st.paused = behind;
            self.metrics.paused.set(behind as i64);
        }
        Ok(())
    }

    /// Hands every pending batch to the writer and waits until it has written them, for at most
    /// `deadline`. True when everything was written.
    fn drain(&self, deadline: Duration) -> bool {
        let batches: Vec<Batch> = {
            let mut st = self.state();
            let open = std::mem::take(&mut st.batch);
            st.ready.push_back(open);
            st.ready.drain(..).filter(|b| !b.is_empty()).collect()
        };
        let tx = self.writer_tx.clone();
        let metrics = self.metrics.clone();
        let work = async move {
            for b in batches {
                tx.send(WriterCmd::Batch(b)).await.ok()?;
                metrics.pending_batches.inc();
            }
            let (done_tx, done_rx) = oneshot::channel();
            tx.send(WriterCmd::Barrier(done_tx)).await.ok()?;
            done_rx.await.ok()
        };
        matches!(
            self.rt.block_on(tokio::time::timeout(deadline, work)),
            Ok(Some(()))
        )
    }

    /// Writes or abandons everything pending; after it returns, this process will write nothing
    /// more for the partitions it held.
    fn quiesce(&self) {
        if self.drain(REVOKE_DEADLINE) {
            return;
        }
        if self.writer_tx.is_closed() {
            // The writer stopped for good (a fatal error): nothing more can be written.
            return;
        }
        tracing::error!(
            "ClickHouse did not take the pending batches within {REVOKE_DEADLINE:?}; abandoning them \
             (their offsets were not stored, so they will be read again)"
        );
        self.abandon.store(true, Ordering::SeqCst);
        while !self.drain(REVOKE_DEADLINE) && !self.writer_tx.is_closed() {
            tracing::warn!("still waiting for the writer to abandon its batch");
        }
        self.abandon.store(false, Ordering::SeqCst);
        let mut st = self.state();
        st.batch = Batch::default();
        st.ready.clear();
    }

    fn on_revoke(&self, tpl: &TopicPartitionList) {
        tracing::info!(partitions = ?partitions(tpl), "partitions revoked; writing what is pending");
        self.quiesce();
        let mut st = self.state();
        for p in partitions(tpl) {
            // The duplicate filter stays: if the partition comes back and ClickHouse's marker is
            // still the last offset handled here, it is current and needs no warm-up.
            st.warm_until.remove(&p);
            st.gaps.forget(p);
        }
        st.paused = false;
        self.metrics.paused.set(0);
    }

    /// Sets each assigned partition's start offset from ClickHouse's markers and rebuilds the
    /// cardinality guard from the series ClickHouse holds.
    fn on_assign(&self, consumer: &BaseConsumer<SpeedContext>, tpl: &mut TopicPartitionList) {
        self.quiesce();
        let (stored, admitted) = self.read_stored_state();
        let window = self.cfg.speed.dedup_window as i64;
        let mut guard = guard_for(&self.cfg);
        for (metric, ids) in admitted {
            guard.preload(&metric, ids);
        }
        let mut st = self.state();
        st.guard = guard;
        for (topic, p) in tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect::<Vec<_>>()
        {
            st.warm_until.remove(&p);
            let Some(&marker) = stored.get(&p) else {
                st.dedup
                    .insert(p, DedupWindow::new(self.cfg.speed.dedup_window));
                st.handled.remove(&p);
                st.gaps.forget(p);
                self.metrics.assignments.with_label_values(&["fresh"]).inc();
                tracing::info!(
                    partition = p,
                    "no offsets in ClickHouse; starting from the committed offset"
                );
                continue;
            };
            let start = if st.dedup.contains_key(&p) && st.handled.get(&p) == Some(&marker) {
                // Nobody wrote this partition since this process did: its filter is current.
                self.metrics
                    .assignments
                    .with_label_values(&["filter_kept"])
                    .inc();
                tracing::info!(
                    partition = p,
                    resume_after = marker,
                    "assigned again; duplicate filter still current"
                );
                marker + 1
            } else {
                st.dedup
                    .insert(p, DedupWindow::new(self.cfg.speed.dedup_window));
                st.handled.remove(&p);
                let low = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(5))
                    .map(|(l, _)| l)
                    .unwrap_or(0);
                let start = (marker + 1 - window).max(low).max(0);
                if start <= marker {
                    st.warm_until.insert(p, marker);
                }
                self.metrics
                    .assignments
                    .with_label_values(&["warm_up"])
                    .inc();
                tracing::info!(
                    partition = p,
                    resume_after = marker,
                    warm_up_from = start,
                    "assigned"
                );
                start
            };
            st.gaps.expect(p, start);
            if let Err(e) = tpl.set_partition_offset(&topic, p, Offset::Offset(start)) {
                tracing::error!(partition = p, error = %e, "could not set the start offset");
            }
        }
    }

    fn read_stored_state(&self) -> (BTreeMap<i32, i64>, AdmittedSeries) {
        let mut backoff = Backoff::new(FIRST_RETRY, self.cfg.speed.max_retry_backoff);
        loop {
            let res = self.rt.block_on(async {
                Ok::<_, clickhouse::error::Error>((
                    self.writer.settled_offsets().await?,
                    self.writer
                        .admitted_series(self.cfg.speed.series_live_window)
                        .await?,
                ))
            });
            match res {
                Ok(r) => return r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read stored offsets from ClickHouse; retrying");
                    std::thread::sleep(backoff.next_delay());
                }
            }
        }
    }

    fn update_gauges(&self) {
        let st = self.state();
        for (metric, n) in st.guard.overflowed() {
            self.metrics
                .overflow_series
                .with_label_values(&[metric])
                .set(n as i64);
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

fn labels(metric: &str, source: &str, tags: &BTreeMap<String, String>) -> Labels {
    Labels {
        metric_name: metric.into(),
        source: source.into(),
        tag_keys: tags.keys().cloned().collect::<Vec<_>>().into(),
        tag_values: tags.values().cloned().collect::<Vec<_>>().into(),
    }
}

/// The consumer's context: routes rebalances through the [`Pipeline`].
pub struct SpeedContext {
    pub(crate) pipeline: Arc<Pipeline>,
}

impl ClientContext for SpeedContext {}

impl ConsumerContext for SpeedContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        strata_shared::kafka::apply_rebalance(
            consumer,
            err,
            tpl,
            |tpl| self.pipeline.on_assign(consumer, tpl),
            |tpl| self.pipeline.on_revoke(tpl),
        );
    }
}

/// Runs the consumer loop on the current (dedicated) thread until the stop flag is set or the
/// writer fails.
pub fn run(
    consumer: BaseConsumer<SpeedContext>,
    pipeline: Arc<Pipeline>,
    written: std_mpsc::Receiver<Written>,
) -> Result<(), crate::Error> {
    let topic = pipeline.cfg.kafka.topic.clone();
    consumer.subscribe(&[&topic])?;
    let mut last_gauges = Instant::now();
    let poll = pipeline
        .cfg
        .speed
        .flush_interval
        .min(Duration::from_millis(100));
    while !pipeline.stop.load(Ordering::SeqCst) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        match consumer.poll(poll) {
            Some(Ok(m)) => pipeline.admit_and_handle(&consumer, &m, now_ms),
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
        // Drain what is already buffered before looking at timers (cheap: zero timeout).
        for _ in 0..4096 {
            match consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => pipeline.admit_and_handle(&consumer, &m, now_ms),
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => break,
            }
        }
        pipeline.flush_due(&consumer, false)?;
        commit_written(&consumer, &pipeline, &written, CommitMode::Async);
        if last_gauges.elapsed() >= Duration::from_secs(10) {
            last_gauges = Instant::now();
            pipeline.update_gauges();
        }
    }
    tracing::info!("stopping: writing what is pending");
    pipeline.flush_due(&consumer, true)?;
    let _ = pipeline.drain(Duration::from_secs(300));
    commit_written(&consumer, &pipeline, &written, CommitMode::Sync);
    pipeline.dead_letters.flush();
    consumer.unsubscribe();
    Ok(())
}

fn commit_written(
    consumer: &BaseConsumer<SpeedContext>,
    pipeline: &Pipeline,
    written: &std_mpsc::Receiver<Written>,
    mode: CommitMode,
) {
    let mut latest: BTreeMap<i32, i64> = BTreeMap::new();
    while let Ok(w) = written.try_recv() {
        for (p, o) in w.offsets {
            let e = latest.entry(p).or_insert(o);
            *e = (*e).max(o);
        }
    }
    if latest.is_empty() {
        return;
    }
    let assigned: Vec<i32> = consumer
        .assignment()
        .map(|a| partitions(&a))
        .unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &latest {
        if assigned.contains(p) {
            let _ = tpl.add_partition_offset(&pipeline.cfg.kafka.topic, *p, Offset::Offset(o + 1));
        }
        pipeline
            .metrics
            .committed_offset
            .with_label_values(&[&p.to_string()])
            .set(o + 1);
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, mode) {
            tracing::warn!(error = %e, "Kafka commit failed (ClickHouse holds the offsets; harmless)");
        }
    }
}
