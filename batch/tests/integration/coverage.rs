//! Coverage against the real lake: it is read from compact summaries plus the newest commits, so
//! it survives delta-rs checkpoints and expired log files; and a recompute from an older archive
//! version never replaces the rows of a newer one, however the commits are ordered.

use crate::common;

use std::collections::BTreeMap;

use deltalake::checkpoints::{cleanup_expired_logs_for, create_checkpoint};
use strata_batch::archive::schema::ArchivedEvent;
use strata_batch::archive::writer::{open_table, Archive, EVENTS_TABLE};
use strata_batch::coverage::{coverage, status};
use strata_batch::recompute::{recompute, recompute_with_progress, Tier};
use strata_shared::Config;
use strata_testkit::gen::truth::hour_start;
use strata_testkit::gen::Spec;

const H: i64 = 3_600_000;

fn events(base: i64, n: usize, seed: u64) -> Vec<ArchivedEvent> {
    let spec = Spec {
        base_time_ms: base,
        spread_ms: H / 2,
        seed,
        ..Spec::default()
    };
    common::archived(spec, n, 1, |_| {})
}

/// A late event for `hour`, archived at offset `offset`.
async fn late_event(archive: &mut Archive, like: &ArchivedEvent, hour: i64, offset: i64) -> u64 {
    let mut late = like.clone();
    late.event.event_id = format!("late-{offset}");
    late.event.timestamp_ms = hour + 1;
    late.offset = offset;
    let id = late.event.series_id();
    archive
        .append(&[late], &BTreeMap::from([(0, offset)]))
        .await
        .unwrap();
    id
}

/// Count of the hour-tier row of (series, hour).
async fn hour_count(cfg: &Config, series: u64, hour: i64) -> i64 {
    let rows = common::first_row(
        cfg,
        &format!(
            "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM rollup_1h \
             WHERE series_id = {} AND start_ms = {hour}",
            series as i64
        ),
    )
    .await;
    rows[0].parse().unwrap()
}

/// Writes a checkpoint of `table` and deletes every log file before it, as delta-rs does once
/// its log retention has passed.
async fn checkpoint_and_expire(cfg: &Config, table: &str) {
    let mut t = open_table(cfg, table).await.unwrap();
    t.load().await.unwrap();
    create_checkpoint(&t, None).await.unwrap();
    let version = t.version().unwrap();
    let removed = cleanup_expired_logs_for(
        version,
        t.log_store().as_ref(),
        chrono::Utc::now().timestamp_millis() + 60_000,
        None,
    )
    .await
    .unwrap();
    assert!(removed > 0, "{table}: old log files expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn coverage_survives_checkpoints_and_expired_logs() {
    let (_dir, cfg) = common::local_lake();
    let base = hour_start(1_764_000_000_000) + H / 2;
    let (h0, h1) = (hour_start(base), hour_start(base) + H);
    let evs = events(base, 2000, 5);
    let mut archive = Archive::open(&cfg).await.unwrap();
    archive
        .append(&evs, &BTreeMap::from([(0, 1999)]))
        .await
        .unwrap();
    // Several recomputes and archive commits, so that the logs have history to lose.
    recompute(&cfg, h0, h1 + H).await.unwrap();
    late_event(&mut archive, &evs[0], h1, 2000).await;
    recompute(&cfg, h1, h1 + H).await.unwrap();
    let before = coverage(&cfg, Tier::Hour).await.unwrap();
    assert_eq!(before.state.hours.len(), 2);
    // An hour with data that was never recomputed: dirty, before and after the expiry.
    let h2 = h1 + H;
    late_event(&mut archive, &evs[2], h2, 2001).await;
    let (_, dirty, _) = status(&cfg).await.unwrap(); // as the scheduler reads it
    assert_eq!(dirty.into_iter().collect::<Vec<_>>(), vec![h2]);

    for table in [Tier::Minute.table(), Tier::Hour.table(), EVENTS_TABLE] {
        checkpoint_and_expire(&cfg, table).await;
    }
    let (covered, dirty, end) = status(&cfg).await.unwrap();
    assert_eq!(
        covered,
        before.state.archive_versions(),
        "coverage is the same once the log before the checkpoint is gone"
    );
    assert_eq!(dirty.into_iter().collect::<Vec<_>>(), vec![h2]);
    assert_eq!(end, Some(h1 + H));

    // A late event after the expiry: its hour is dirty, and the next recompute is seen.
    let series = late_event(&mut archive, &evs[1], h0, 2002).await;
    let (_, dirty, _) = status(&cfg).await.unwrap();
    assert_eq!(dirty.into_iter().collect::<Vec<_>>(), vec![h0, h2]);
    let counted = hour_count(&cfg, series, h0).await;
    let report = recompute(&cfg, h0, h0 + H).await.unwrap();
    let (covered, dirty, _) = status(&cfg).await.unwrap();
    assert_eq!(dirty.into_iter().collect::<Vec<_>>(), vec![h2]);
    assert_eq!(covered[&h0], report.archive_version);
    assert_eq!(hour_count(&cfg, series, h0).await, counted + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_recompute_committing_last_leaves_the_newer_rows() {
    let (_dir, cfg) = common::local_lake();
    let base = hour_start(1_764_000_000_000) + H / 2;
    let h = hour_start(base);
    let evs = events(base, 1500, 6);
    let mut archive = Archive::open(&cfg).await.unwrap();
    archive
        .append(&evs, &BTreeMap::from([(0, 1499)]))
        .await
        .unwrap();
    let mut events_table = open_table(&cfg, EVENTS_TABLE).await.unwrap();
    events_table.load().await.unwrap();
    let old_version = events_table.version().unwrap() as i64;
    let series = late_event(&mut archive, &evs[0], h, 1500).await;

    // The newer recompute (it sees the late event) commits first ...
    let newer = recompute(&cfg, h, h + H).await.unwrap();
    assert!(newer.archive_version > old_version);
    let with_late = hour_count(&cfg, series, h).await;
    // ... then one computed from the archive before the late event commits.
    let older = recompute_with_progress(&cfg, h, h + H, Some(old_version), |_| {})
        .await
        .unwrap();
    assert_eq!(older.archive_version, old_version);
    assert_eq!(older.skipped, [vec![h], vec![h]], "both tiers left alone");
    assert_eq!(older.rows, [0, 0]);

    assert_eq!(
        hour_count(&cfg, series, h).await,
        with_late,
        "the table holds the newer rows, late event included"
    );
    let (covered, dirty, _) = status(&cfg).await.unwrap();
    assert_eq!(covered[&h], newer.archive_version);
    assert!(dirty.is_empty(), "{dirty:?}");

    // The same older recompute of a range reaching past that hour writes only the rest.
    let wider = recompute_with_progress(&cfg, h, h + 2 * H, Some(old_version), |_| {})
        .await
        .unwrap();
    assert_eq!(wider.skipped, [vec![h], vec![h]]);
    assert_eq!(hour_count(&cfg, series, h).await, with_late);
    let (covered, _, _) = status(&cfg).await.unwrap();
    assert_eq!(
        covered,
        BTreeMap::from([(h, newer.archive_version), (h + H, old_version)])
    );
}
