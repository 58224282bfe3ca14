//! The dead-letter archiver: the dead-letter topic → the Delta table `dead_letters`, exactly
//! once, alongside the events archiver in `strata-batch archive`.
//!
//! It reads every partition of `kafka.dlq_topic` (assigned, not a group member: dead letters are
//! few, one reader is enough, and a second one only loses commit races), from right after the
//! offsets stored in the table's log. Messages are batched for `batch.archive_flush_interval`;
//! a commit carries the batch's last offsets. A failed commit (the lake away, a concurrent
//! writer) is retried with back-off after reloading the table and dropping what it already
//! holds, so nothing is written twice and nothing is skipped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;
use strata_shared::retry::Backoff;
use strata_shared::{kafka, Config};

use super::table::{DeadLetter, DeadLetterTable};
use super::DeadLetterError;

/// Most dead letters in one commit.
const MAX_BATCH: usize = 50_000;

/// Archives the dead-letter topic until `stop` is set; errors are logged and retried.
pub async fn run(cfg: Config, stop: Arc<AtomicBool>) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    while !stop.load(Ordering::SeqCst) {
        match archive(&cfg, &stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter archiver: retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

fn message_to_letter(m: &rdkafka::message::BorrowedMessage<'_>) -> DeadLetter {
    let header = |name: &str| {
        m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    };
    DeadLetter::from_message(
        m.partition(),
        m.offset(),
        m.payload().unwrap_or_default(),
        header,
    )
}

async fn archive(cfg: &Config, stop: &AtomicBool) -> Result<(), DeadLetterError> {
    let topic = &cfg.kafka.dlq_topic;
    let mut table = DeadLetterTable::open(cfg).await?;
    let group = format!("{}-dead-letters", cfg.batch.archive_group_id);
    let consumer: StreamConsumer = kafka::consumer_config(&cfg.kafka, &group).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(DeadLetterError::Invalid(format!(
            "the dead-letter topic {topic} has no partitions yet"
        )));
    }
    let stored = table.stored_offsets(&partitions).await?;
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let from = stored
            .get(&p)
            .map_or(Offset::Beginning, |o| Offset::Offset(o + 1));
        tpl.add_partition_offset(topic, p, from)?;
    }
    consumer.assign(&tpl)?;
    tracing::info!(topic = %topic, ?stored, "archiving dead letters");
    let flush = cfg.batch.archive_flush_interval;
    let mut pending: Vec<DeadLetter> = Vec::new();
    let mut since = Instant::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let due = !pending.is_empty() && (since.elapsed() >= flush || pending.len() >= MAX_BATCH);
        if due || (stopping && !pending.is_empty()) {
            commit(&mut table, &mut pending, &partitions).await?;
        }
        if stopping {
            return Ok(());
        }
        match tokio::time::timeout(Duration::from_millis(250), consumer.recv()).await {
            Ok(Ok(m)) => {
                if pending.is_empty() {
                    since = Instant::now();
                }
                pending.push(message_to_letter(&m));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "dead-letter topic"),
            Err(_) => {}
        }
    }
}

/// Commits `pending` (what the table does not hold yet), retrying until it lands.
async fn commit(
    table: &mut DeadLetterTable,
    pending: &mut Vec<DeadLetter>,
    partitions: &[i32],
) -> Result<(), DeadLetterError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        match table.append(pending).await {
            Ok(()) => {
                tracing::debug!(n = pending.len(), "dead letters archived");
                pending.clear();
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter commit failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                // The failed commit may have landed, or another archiver wrote the same
                // offsets: keep only what the table does not hold.
                match table.stored_offsets(partitions).await {
                    Ok(stored) => pending.retain(|d| {
                        stored
                            .get(&d.dlq_partition)
                            .is_none_or(|&s| d.dlq_offset > s)
                    }),
                    Err(e) => tracing::warn!(error = %e, "reloading dead_letters"),
                }
                if pending.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}
