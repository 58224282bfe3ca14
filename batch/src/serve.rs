//! `strata-batch serve`: the batch layer's scheduler and job runner.
//!
//! On each cron tick it queues what [`crate::schedule::plan`] asks for (the latest closed hours
//! and every dirty hour); between ticks it runs queued jobs one at a time — from the schedule,
//! the CLI or the serving API — recording each outcome in the durable [`JobQueue`]; from time to
//! time it compacts the archive. `/metrics` reports recompute durations, job outcomes, the
//! coverage end (time boundary), dirty hours and the archive's size and freshness.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use strata_shared::retry::Backoff;
use strata_shared::telemetry::Telemetry;
use strata_shared::Config;

use crate::archive::compaction::compact;
use crate::archive::writer::{open_table, EVENTS_TABLE};
use crate::coverage::status;
use crate::jobs::{Job, JobQueue, JobReport, Trigger};
use crate::recompute::recompute;
use crate::schedule::plan;
use crate::Error;

/// Target file size of scheduled compactions.
const COMPACT_TARGET_BYTES: u64 = 128 << 20;
/// How often finished jobs past `batch.jobs_retention` are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often the status gauges are refreshed when nothing else happens.
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// The scheduler's self-metrics.
pub struct ServeMetrics {
    /// Seconds per recompute job.
    pub recompute_seconds: Histogram,
    /// Jobs finished, by outcome (`done`, `failed`).
    pub jobs: IntCounterVec,
    /// Jobs waiting.
    pub jobs_queued: IntGauge,
    /// End of the covered range (the time boundary), Unix seconds; 0 before any recompute.
    pub coverage_end: Gauge,
    /// Hours changed since their last recompute.
    pub dirty_hours: IntGauge,
    /// Data files of the archive.
    pub archive_files: IntGauge,
    /// Bytes of the archive's data files.
    pub archive_bytes: IntGauge,
    /// Seconds since the newest archive file was written.
    pub archive_lag: Gauge,
}

impl ServeMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            recompute_seconds: Histogram::with_opts(
                HistogramOpts::new("batch_recompute_seconds", "Duration of recompute jobs")
                    .buckets(vec![
                        0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                    ]),
            )?,
            jobs: IntCounterVec::new(
                Opts::new("batch_jobs_total", "Recompute jobs finished, by outcome"),
                &["state"],
            )?,
            jobs_queued: IntGauge::new("batch_jobs_queued", "Recompute jobs waiting")?,
            coverage_end: Gauge::new(
                "batch_coverage_end_seconds",
                "End of the batch-covered range (the time boundary), Unix seconds",
            )?,
            dirty_hours: IntGauge::new(
                "batch_dirty_hours",
                "Event hours changed since their last recompute",
            )?,
            archive_files: IntGauge::new("batch_archive_files", "Data files of the archive")?,
            archive_bytes: IntGauge::new("batch_archive_bytes", "Bytes of the archive's files")?,
            archive_lag: Gauge::new(
                "batch_archive_lag_seconds",
                "Seconds since the newest archive file was written",
            )?,
        };
        registry.register(Box::new(m.recompute_seconds.clone()))?;
        registry.register(Box::new(m.jobs.clone()))?;
        registry.register(Box::new(m.jobs_queued.clone()))?;
        registry.register(Box::new(m.coverage_end.clone()))?;
        registry.register(Box::new(m.dirty_hours.clone()))?;
        registry.register(Box::new(m.archive_files.clone()))?;
        registry.register(Box::new(m.archive_bytes.clone()))?;
        registry.register(Box::new(m.archive_lag.clone()))?;
        Ok(m)
    }
}

/// Runs the scheduler and job runner until `stop` is set.
pub async fn run_serve(cfg: Config, stop: Arc<AtomicBool>) -> Result<(), Error> {
    let telemetry = Telemetry::new("batch");
    let metrics = ServeMetrics::new(&telemetry.registry)?;
    strata_shared::self_report::spawn(&telemetry, &cfg, "batch");
    let addr: std::net::SocketAddr = cfg.batch.serve_listen.parse().expect("validated at load");
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let router = telemetry.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let schedule = cron::Schedule::from_str(&cfg.batch.schedule).expect("validated at load");
    let queue = JobQueue::open(&cfg)?;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match queue.requeue_interrupted().await {
            Ok(n) => {
                if n > 0 {
                    tracing::warn!(jobs = n, "requeued jobs a previous run left unfinished");
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the job queue yet; retrying");
                if sleep_or_stop(&stop, backoff.next_delay()).await {
                    return Ok(());
                }
            }
        }
    }
    telemetry.set_ready(true);
    tracing::info!(schedule = %cfg.batch.schedule, lake = %cfg.lake.url, "scheduling recomputes");

    let mut next_tick = schedule.upcoming(Utc).next();
    let mut next_compact = Instant::now() + cfg.batch.compact_interval;
    let mut next_prune = Instant::now();
    let mut next_status = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now = Utc::now();
        if next_tick.is_some_and(|t| t <= now) {
            next_tick = schedule.upcoming(Utc).next();
            if let Err(e) = queue_scheduled(&cfg, &queue, now.timestamp_millis()).await {
                tracing::warn!(error = %e, "scheduled run could not plan; next tick retries");
            }
        }
        if !cfg.batch.compact_interval.is_zero() && Instant::now() >= next_compact {
            next_compact = Instant::now() + cfg.batch.compact_interval;
            match compact(&cfg, COMPACT_TARGET_BYTES).await {
                Ok(c) => tracing::info!(
                    removed = c.files_removed,
                    added = c.files_added,
                    "compacted the archive"
                ),
                Err(e) => tracing::warn!(error = %e, "compaction failed; next interval retries"),
            }
        }
        if Instant::now() >= next_prune {
            next_prune = Instant::now() + PRUNE_EVERY;
            match queue
                .prune(Utc::now().timestamp_millis(), cfg.batch.jobs_retention)
                .await
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(jobs = n, "removed finished jobs past batch.jobs_retention")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prune the job queue; next hour retries")
                }
            }
        }
        let worked = match queue.claim(Utc::now().timestamp_millis()).await {
            Ok(Some(job)) => {
                run_job(&cfg, &queue, job, &metrics, &stop).await;
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the job queue; retrying");
                false
            }
        };
        if worked || Instant::now() >= next_status {
            next_status = Instant::now() + STATUS_EVERY;
            refresh_status(&cfg, &queue, &metrics).await;
        }
        if !worked && sleep_or_stop(&stop, cfg.batch.job_poll_interval).await {
            break;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Why a scheduled run could not queue its jobs (the next tick tries again).
#[derive(Debug, thiserror::Error)]
enum PlanError {
    /// Coverage or dirty hours could not be read.
    #[error("coverage: {0}")]
    Coverage(#[from] crate::coverage::SummaryError),
    /// The job queue could not be written.
    #[error("jobs: {0}")]
    Jobs(#[from] crate::jobs::JobError),
}

/// Queues the ranges the schedule asks for now.
async fn queue_scheduled(cfg: &Config, queue: &JobQueue, now_ms: i64) -> Result<(), PlanError> {
    let (covered, dirty, _) = status(cfg).await?;
    let grace = cfg.batch.schedule_grace.as_millis() as i64;
    for (from, to) in plan(
        now_ms,
        cfg.batch.schedule_closed_hours,
        grace,
        &covered,
        &dirty,
    ) {
        let (job, new) = queue
            .submit(from, to, Trigger::Schedule, None, now_ms)
            .await?;
        if new {
            tracing::info!(id = %job.id, from, to, "scheduled a recompute");
        }
    }
    Ok(())
}

/// Runs one claimed job and records its outcome. A stop request abandons it: it stays
/// `running` and is queued again at the next start (its commits are atomic, so nothing is half
/// written).
async fn run_job(cfg: &Config, queue: &JobQueue, job: Job, m: &ServeMetrics, stop: &AtomicBool) {
    tracing::info!(id = %job.id, from = job.from_ms, to = job.to_ms, "recomputing");
    let started = Instant::now();
    let work = async {
        // A requested recompute includes what the broker had acknowledged when it was asked.
        let waited = match job.trigger {
            Trigger::Api | Trigger::Cli => Some(wait_for_archive(cfg, job.queued_at_ms).await),
            Trigger::Schedule => None,
        };
        recompute(cfg, job.from_ms, job.to_ms)
            .await
            .map(|r| (r, waited))
    };
    let watch = async {
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let outcome = tokio::select! {
        r = work => r,
        () = watch => {
            tracing::warn!(id = %job.id, "stopping in the middle of a job; it runs again at the next start");
            return;
        }
    };
    m.recompute_seconds.observe(started.elapsed().as_secs_f64());
    let outcome = outcome
        .map(|(r, waited)| JobReport {
            archive_version: r.archive_version,
            rows_1m: r.rows[0],
            rows_1h: r.rows[1],
            waited,
        })
        .map_err(|e| e.to_string());
    let state = if outcome.is_ok() { "done" } else { "failed" };
    if let Err(e) = &outcome {
        tracing::warn!(id = %job.id, error = %e, "recompute failed");
    }
    m.jobs.with_label_values(&[state]).inc();
    // The outcome must be recorded: retry the store until it answers (or we are stopped, and
    // the job runs again at the next start).
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    while let Err(e) = queue
        .finish(job.clone(), outcome.clone(), Utc::now().timestamp_millis())
        .await
    {
        tracing::warn!(id = %job.id, error = %e, "cannot record the job's outcome; retrying");
        if sleep_or_stop(stop, backoff.next_delay()).await {
            return;
        }
    }
}

/// Waits (at most `batch.recompute_wait`) until the archive holds every event the broker had
/// acknowledged at `since_ms`, and says what it found. A wait that cannot even start (the lake
/// or the broker unreachable) is reported as incomplete: the recompute runs anyway, and its hours
/// turn dirty again if it missed events.
async fn wait_for_archive(cfg: &Config, since_ms: i64) -> crate::archive::progress::Waited {
    use crate::archive::progress::{wait_for, Waited};
    let kafka = cfg.kafka.clone();
    let partitions = tokio::task::spawn_blocking(move || {
        strata_shared::kafka::partition_count(&kafka, &kafka.topic)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or(0);
    let waited = match strata_shared::lake::object_store(&cfg.lake, &cfg.s3) {
        Ok(store) => wait_for(&store, since_ms, partitions, cfg.batch.recompute_wait)
            .await
            .ok(),
        Err(_) => None,
    };
    let waited = waited.unwrap_or(Waited {
        since_ms,
        waited_ms: 0,
        partitions,
        caught_up: 0,
        complete: false,
    });
    if waited.complete {
        tracing::info!(
            ?waited,
            "the archive holds what was sent before the request"
        );
    } else {
        tracing::warn!(
            ?waited,
            "recomputing without every partition archived up to the request; its hours turn dirty if events were missed"
        );
    }
    waited
}

/// Refreshes the gauges from the lake (errors only logged: the next refresh retries).
async fn refresh_status(cfg: &Config, queue: &JobQueue, m: &ServeMetrics) {
    match status(cfg).await {
        Ok((_, dirty, end)) => {
            m.dirty_hours.set(dirty.len() as i64);
            m.coverage_end.set(end.map_or(0.0, |e| e as f64 / 1000.0));
        }
        Err(e) => tracing::warn!(error = %e, "cannot read coverage"),
    }
    if let Ok(jobs) = queue.active().await {
        let queued = jobs
            .iter()
            .filter(|j| j.state == crate::jobs::JobState::Queued)
            .count();
        m.jobs_queued.set(queued as i64);
    }
    let Ok(mut table) = open_table(cfg, EVENTS_TABLE).await else {
        return;
    };
    if table.load().await.is_err() {
        return;
    }
    if let Ok(snapshot) = table.snapshot() {
        let (mut files, mut bytes, mut newest) = (0i64, 0i64, 0i64);
        for f in snapshot.log_data().iter() {
            files += 1;
            bytes += f.size();
            newest = newest.max(f.modification_time());
        }
        m.archive_files.set(files);
        m.archive_bytes.set(bytes);
        if newest > 0 {
            m.archive_lag
                .set((Utc::now().timestamp_millis() - newest).max(0) as f64 / 1000.0);
        }
    }
}

/// Sleeps, waking early when stopped; true when stopped.
async fn sleep_or_stop(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::sleep((until - Instant::now()).min(Duration::from_millis(200))).await;
    }
    stop.load(Ordering::SeqCst)
}
