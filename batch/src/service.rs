//! Starting and stopping the archiver: metrics listener, the lake, the consumer thread, the
//! dead-letter archiver, and SIGTERM leading to a final commit of both.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use strata_shared::retry::Backoff;
use strata_shared::telemetry::Telemetry;
use strata_shared::{kafka, Config};

use crate::archive::consumer::{self, ArchiveContext, ArchiveMetrics, Archiver};
use crate::archive::writer::Archive;
use crate::Error;

/// Runs the archiver until `stop` is set.
pub async fn run_archive(cfg: Config, stop: Arc<AtomicBool>) -> Result<(), Error> {
    let telemetry = Telemetry::new("batch");
    let metrics = Arc::new(ArchiveMetrics::new(&telemetry.registry)?);
    strata_shared::self_report::spawn(&telemetry, &cfg, "archive");
    let addr: std::net::SocketAddr = cfg.batch.listen.parse().expect("validated at load");
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let router = telemetry.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let archive = loop {
        match Archive::open(&cfg).await {
            Ok(a) => break a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the lake yet; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
            }
        }
    };
    // The dead-letter topic goes to the lake too, beside the events.
    let dead_letters = tokio::spawn(crate::dead_letters::archiver::run(
        cfg.clone(),
        stop.clone(),
    ));
    let archiver = Arc::new(Archiver::new(
        cfg.clone(),
        tokio::runtime::Handle::current(),
        archive,
        metrics,
        stop,
    ));
    let consumer: BaseConsumer<ArchiveContext> =
        kafka::consumer_config(&cfg.kafka, &cfg.batch.archive_group_id)
            .set("partition.assignment.strategy", "range,roundrobin")
            // Reaching a partition's end is how a waiting recompute learns the archive is
            // caught up (archive::progress); high watermarks are wrong on some brokers.
            .set("enable.partition.eof", "true")
            .create_with_context(ArchiveContext {
                archiver: archiver.clone(),
            })?;
    telemetry.set_ready(true);
    tracing::info!(lake = %cfg.lake.url, group = %cfg.batch.archive_group_id, "archiving");
    tokio::task::spawn_blocking(move || consumer::run(consumer, archiver))
        .await
        .expect("the consumer thread does not panic")?;
    let _ = dead_letters.await;
    Ok(())
}
