//! Starting and stopping strata-speed: migration, the writer task, the consumer thread, the
//! metrics listener and the monitor, with SIGTERM/SIGINT leading to a flush and a clean exit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::DeliveryFuture;
use strata_shared::telemetry::Telemetry;
use strata_shared::{kafka, Config};
use tokio::sync::mpsc;

use crate::clickhouse::retry::{classify, Backoff, Verdict, FIRST_RETRY};
use crate::clickhouse::schema::migrate;
use crate::clickhouse::writer::{RollupWriter, WriteError};
use crate::consumer::{self, Pipeline, SpeedContext, WriterCmd, Written};
use crate::dead_letters::DeadLetters;
use crate::metrics::Metrics;
use crate::{monitor, Error};

/// Runs strata-speed until `stop` is set (or a fatal error).
pub async fn run(cfg: Config, stop: Arc<AtomicBool>) -> Result<(), Error> {
    let telemetry = Telemetry::new("speed");
    let metrics =
        Arc::new(Metrics::new(&telemetry.registry).map_err(|e| Error::Telemetry(e.to_string()))?);
    strata_shared::self_report::spawn(&telemetry, &cfg, "speed");
    let addr: std::net::SocketAddr = cfg.speed.listen.parse().expect("validated at load");
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Telemetry(format!("listening on {addr}: {e}")))?;
    let router = telemetry.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    tracing::info!(%addr, "metrics on /metrics");

    // ClickHouse or the broker may come up after us: wait for them, never give up.
    let mut backoff = Backoff::new(FIRST_RETRY, cfg.speed.max_retry_backoff);
    while let Err(e) = migrate(&cfg.clickhouse).await {
        if classify(&e) == Verdict::Permanent {
            // Wrong credentials, no permission, bad SQL: waiting will not fix it.
            return Err(Error::Migrate(e));
        }
        tracing::warn!(error = %e, "cannot migrate the ClickHouse schema yet; retrying");
        tokio::time::sleep(backoff.next_delay()).await;
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
    let mut backoff = Backoff::new(FIRST_RETRY, cfg.speed.max_retry_backoff);
    while let Err(e) = kafka::ensure_topics(&cfg.kafka).await {
        tracing::warn!(error = %e, "cannot reach the broker to check topics yet; retrying");
        tokio::time::sleep(backoff.next_delay()).await;
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
    }

    let writer = Arc::new(RollupWriter::new(
        &cfg.clickhouse,
        &cfg.kafka.topic,
        cfg.speed.max_retry_backoff,
    ));
    let dead_letters = Arc::new(DeadLetters::new(&cfg.kafka)?);
    let (writer_tx, writer_rx) = mpsc::channel(cfg.speed.max_pending_batches);
    let (written_tx, written_rx) = std_mpsc::channel();
    let abandon = Arc::new(AtomicBool::new(false));
    let pipeline = Arc::new(Pipeline::new(
        cfg.clone(),
        tokio::runtime::Handle::current(),
        writer.clone(),
        writer_tx,
        dead_letters.clone(),
        metrics.clone(),
        stop.clone(),
        abandon.clone(),
    ));
    let writer_task = tokio::spawn(writer_loop(
        writer,
        dead_letters,
        metrics.clone(),
        abandon,
        writer_rx,
        written_tx,
    ));
    tokio::spawn(monitor::run(cfg.clone(), metrics.clone()));

    let consumer: BaseConsumer<SpeedContext> =
        kafka::consumer_config(&cfg.kafka, &cfg.speed.group_id)
            .set("partition.assignment.strategy", "range,roundrobin")
            .create_with_context(SpeedContext {
                pipeline: pipeline.clone(),
            })?;
    telemetry.set_ready(true);
    tracing::info!(topic = %cfg.kafka.topic, group = %cfg.speed.group_id, "consuming");
    let consumed = tokio::task::spawn_blocking(move || {
        let r = consumer::run(consumer, pipeline, written_rx);
        // Dropping the consumer leaves the group (after a final revoke) on this thread.
        r
    });
    let result = consumed.await.expect("the consumer thread does not panic");
    stop.store(true, Ordering::SeqCst);
    writer_task.abort();
    match writer_task.await {
        Ok(Err(e)) => Err(Error::Write(e)),
        _ => result,
    }
}

/// The writer task: dead letters acknowledged first, then the batch's one insert, then its
/// offsets reported back for the Kafka commit. Batches are written strictly in order.
async fn writer_loop(
    writer: Arc<RollupWriter>,
    dead_letters: Arc<DeadLetters>,
    metrics: Arc<Metrics>,
    abandon: Arc<AtomicBool>,
    mut rx: mpsc::Receiver<WriterCmd>,
    written: std_mpsc::Sender<Written>,
) -> Result<(), WriteError> {
    while let Some(cmd) = rx.recv().await {
        let mut batch = match cmd {
            WriterCmd::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
            WriterCmd::Batch(b) => b,
        };
        metrics.pending_batches.dec();
        if abandon.load(Ordering::SeqCst) {
            continue;
        }
        for f in std::mem::take(&mut batch.dead_letters) {
            deliver(&dead_letters, f).await;
        }
        let result = writer
            .write(&batch, &abandon, |_| {
                metrics.inserts.with_label_values(&["retry"]).inc()
            })
            .await;
        match result {
            Ok(elapsed) => {
                metrics.inserts.with_label_values(&["ok"]).inc();
                metrics.insert_seconds.observe(elapsed.as_secs_f64());
                metrics.rows_inserted.inc_by(batch.rows() as u64);
                metrics.events_inserted.inc_by(batch.events() as u64);
                let _ = written.send(Written {
                    offsets: batch.offsets().clone(),
                });
            }
            Err(WriteError::Abandoned) => tracing::warn!("batch abandoned after a revoke"),
            Err(e) => {
                metrics.inserts.with_label_values(&["failed"]).inc();
                tracing::error!(error = %e, "stopping: ClickHouse refuses our batches");
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Waits until a dead letter is acknowledged, sending it again for as long as it fails.
async fn deliver(dead_letters: &DeadLetters, mut f: DeliveryFuture) {
    let mut backoff = Backoff::new(FIRST_RETRY, Duration::from_secs(10));
    loop {
        match f.await {
            Ok(Ok(_)) => return,
            Ok(Err((e, msg))) => {
                tracing::warn!(error = %e, "dead letter not delivered; sending again");
                tokio::time::sleep(backoff.next_delay()).await;
                f = dead_letters.resend(&msg);
            }
            Err(_) => {
                tracing::error!("dead-letter producer went away");
                return;
            }
        }
    }
}
