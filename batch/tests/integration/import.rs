//! Backfill: JSON Lines and Parquet files of MetricEvents go into the archive through the same
//! validation as the Kafka path; refusals are counted by reason with their line; the recompute
//! then counts each event once even when a file is imported twice. Local lake, no servers.

use crate::common;

use std::io::Write;

use strata_batch::archive::schema::{to_record_batch, ArchivedEvent};
use strata_batch::import::import;
use strata_batch::recompute::recompute;
use strata_testkit::gen::truth::{hour_start, Truth};
use strata_testkit::gen::{Generator, Kind, Spec};

#[tokio::test(flavor = "multi_thread")]
async fn jsonl_and_parquet_backfill_through_validation() {
    let (dir, cfg) = common::local_lake();
    let now = chrono::Utc::now().timestamp_millis();
    let spec = Spec {
        base_time_ms: now,
        malformed_ratio: 0.1,
        duplicate_ratio: 0.05,
        seed: 5,
        ..Spec::default()
    };
    let mut truth = Truth::new(Some(spec.clone()));

    // JSON Lines: the first 3000 generated messages, malformed ones included — binary ones that
    // are not UTF-8 too (empty payloads and ones spanning lines cannot be lines; left out).
    let jsonl = dir.path().join("events.jsonl");
    let mut f = std::fs::File::create(&jsonl).unwrap();
    let mut want_refused = 0;
    let mut binary = 0u64;
    let mut parquet_events = Vec::new();
    for (i, m) in Generator::new(spec).take(6000).enumerate() {
        let is_text = !m.payload.contains(&b'\n') && !m.payload.iter().all(u8::is_ascii_whitespace);
        if i < 3000 {
            if !is_text {
                continue;
            }
            truth.record(&m);
            if let Kind::Malformed(_) = m.kind {
                want_refused += 1;
            }
            binary += std::str::from_utf8(&m.payload).is_err() as u64;
            f.write_all(&m.payload).unwrap();
            f.write_all(b"\n").unwrap();
        } else if let Some(e) = m.event.clone() {
            truth.record(&m);
            parquet_events.push(ArchivedEvent {
                event: e,
                partition: 0,
                offset: i as i64,
            });
        }
    }
    drop(f);
    assert!(binary > 0, "the file has lines that are not UTF-8");
    // Parquet: the remaining valid events, in the archive's own column layout.
    let parquet = dir.path().join("events.parquet");
    let batch = to_record_batch(&parquet_events).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let report = import(&cfg, &[jsonl.as_path(), parquet.as_path()], now)
        .await
        .unwrap();
    let refused: u64 = report.refused.values().sum();
    assert_eq!(refused, want_refused, "{report:?}");
    assert!(
        report.examples[0].contains("events.jsonl:"),
        "refusals say where: {:?}",
        report.examples
    );
    let summary = truth.summary();
    assert_eq!(report.imported, summary.valid_unique + summary.duplicates);
    assert_eq!(
        common::first_row(&cfg, "SELECT count(*) FROM events").await,
        vec![report.imported.to_string()]
    );

    // Importing the JSON Lines again duplicates rows; the recompute counts each event once.
    import(&cfg, &[jsonl.as_path()], now).await.unwrap();
    let from = hour_start(now - 3 * 3_600_000);
    let to = hour_start(now) + 3_600_000;
    recompute(&cfg, from, to).await.unwrap();
    assert_eq!(
        common::first_row(&cfg, "SELECT sum(count) FROM rollup_1h").await,
        vec![summary.valid_unique.to_string()]
    );
}
