//! Helpers shared by the batch tests: a lake in a temporary folder, generated events archived as
//! the archiver would, and one-row SQL answers.
#![allow(dead_code)]

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use strata_batch::archive::schema::ArchivedEvent;
use strata_batch::archive::writer::{open_table, Archive};
use strata_batch::recompute::Tier;
use strata_batch::sql::{render, Limits, OutputFormat, SqlSession};
use strata_shared::Config;
use strata_testkit::gen::{Generator, Message, Spec};

/// A configuration whose lake is a fresh temporary folder (kept alive by the returned guard).
pub fn local_lake() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.lake.url = dir.path().join("lake").display().to_string();
    (dir, cfg)
}

/// Runs `sql` over a rollup tier's table, registered as `r`.
pub async fn query_tier(cfg: &Config, tier: Tier, sql: &str) -> Vec<RecordBatch> {
    let mut table = open_table(cfg, tier.table()).await.unwrap();
    table.load().await.unwrap();
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("r", table.table_provider().await.unwrap())
        .unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// The first row of a query's answer, as CSV fields.
pub async fn first_row(cfg: &Config, sql: &str) -> Vec<String> {
    let s = SqlSession::open(cfg, Limits::default()).await.unwrap();
    let r = s.query(sql).await.unwrap();
    let csv = render(&r.batches, OutputFormat::Csv).unwrap();
    csv.lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// The generator's first `n` messages as the archiver stores their valid events: message `i` is
/// at offset `i / partitions` of partition `i % partitions` (Kafka order within each partition).
/// `seen` sees every message first, malformed ones too (to record a ground truth).
pub fn archived(
    spec: Spec,
    n: usize,
    partitions: usize,
    mut seen: impl FnMut(&Message),
) -> Vec<ArchivedEvent> {
    let partitions = partitions.max(1);
    Generator::new(spec)
        .take(n)
        .enumerate()
        .filter_map(|(i, m)| {
            seen(&m);
            m.event.map(|event| ArchivedEvent {
                event,
                partition: (i % partitions) as i32,
                offset: (i / partitions) as i64,
            })
        })
        .collect()
}

/// Appends `events` to the archive `per_commit` at a time; each commit stores, as the archiver
/// does, the last offset it holds of every partition. An empty list still commits once.
pub async fn append_in_commits(archive: &mut Archive, events: &[ArchivedEvent], per_commit: usize) {
    let mut chunks: Vec<&[ArchivedEvent]> = events.chunks(per_commit.max(1)).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for chunk in chunks {
        let offsets: BTreeMap<i32, i64> = chunk.iter().map(|e| (e.partition, e.offset)).collect();
        archive.append(chunk, &offsets).await.unwrap();
    }
}

/// Opens the archive of `cfg` and appends `events` to it (see [`append_in_commits`]).
pub async fn archive_all(cfg: &Config, events: &[ArchivedEvent], per_commit: usize) -> Archive {
    let mut archive = Archive::open(cfg).await.unwrap();
    append_in_commits(&mut archive, events, per_commit).await;
    archive
}
