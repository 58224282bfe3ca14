//! Recompute on an Apache DataFusion Ballista cluster (`batch.engine = "ballista"`): a real
//! scheduler and two executors (`strata-batch ballista …`, Ballista's own processes) on loopback,
//! reading the archive's Parquet files from the local stack's S3 server (SeaweedFS).
//!
//! Each test starts its own cluster (on free ports), so one test may kill an executor without
//! touching another's. Needs `make up` (SeaweedFS).

use std::time::Duration;

use crate::common;

use datafusion::arrow::util::pretty::pretty_format_batches;
use strata_batch::archive::writer::open_table;
use strata_batch::recompute::{recompute, recompute_with_progress, Phase, Tier};
use strata_shared::config::{Engine, Secret};
use strata_shared::Config;
use strata_testkit::gen::truth::hour_start;
use strata_testkit::gen::{Format, Spec};
use strata_testkit::LocalBallista;

/// A configuration whose lake is a fresh prefix of the stack's S3 bucket.
fn s3_lake() -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = Config::default();
    cfg.lake.url = format!("s3://lake/test-ballista-{id}");
    cfg.s3.endpoint = Some(
        std::env::var("STRATA__S3__ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8333".into()),
    );
    cfg.s3.allow_http = true;
    cfg.s3.access_key_id = Some("minioadmin".into());
    cfg.s3.secret_access_key = Some(Secret("minioadmin".into()));
    cfg
}

/// Starts a scheduler and two executors of this test's own (an executor counts as lost after
/// 6 s without a heartbeat) and points `cfg` at them; returns once a query has run there.
async fn start_cluster(cfg: &mut Config) -> LocalBallista {
    let endpoint = cfg.s3.endpoint.clone().unwrap();
    let cluster = LocalBallista::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_strata-batch")),
        2,
        2,
        6,
        &[
            ("STRATA__S3__ENDPOINT", &endpoint),
            ("STRATA__S3__ALLOW_HTTP", "true"),
            ("STRATA__S3__ACCESS_KEY_ID", "minioadmin"),
            ("STRATA__S3__SECRET_ACCESS_KEY", "minioadmin"),
        ],
    );
    cfg.batch.engine = Engine::Ballista;
    cfg.batch.ballista_scheduler = cluster.address.clone();
    cfg.batch.ballista_job_timeout = Duration::from_secs(300);
    strata_batch::cluster::wait_until_ready(cfg, Duration::from_secs(90))
        .await
        .expect("the Ballista cluster runs a query");
    // Both executors have registered after a few heartbeats.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster
}

/// Archives `n` generated events (late ones and duplicates among them) in three Kafka
/// partitions; returns the hour range they cover.
async fn archive_events(cfg: &Config, n: usize, seed: u64) -> (i64, i64) {
    let spec = Spec {
        base_time_ms: 1_764_000_000_000,
        spread_ms: 3 * 3_600_000,
        series: 200,
        metrics: 4,
        duplicate_ratio: 0.05,
        late_ratio: 0.03,
        format: Format::Json,
        seed,
        ..Spec::default()
    };
    let events = common::archived(spec, n, 3, |_| {});
    common::archive_all(cfg, &events, 20_000).await;
    let hours = events.iter().map(|e| hour_start(e.event.timestamp_ms));
    let (from, to) = (hours.clone().min(), hours.max());
    (from.unwrap_or(0), to.map_or(0, |h| h + 3_600_000))
}

/// Every row of a tier, every column, in a fixed order, as text.
async fn tier_rows(cfg: &Config, tier: Tier) -> Vec<String> {
    let batches =
        common::query_tier(cfg, tier, "SELECT * FROM r ORDER BY series_id, start_ms").await;
    pretty_format_batches(&batches)
        .unwrap()
        .to_string()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn table_version(cfg: &Config, tier: Tier) -> Option<u64> {
    let mut table = open_table(cfg, tier.table()).await.unwrap();
    table.load().await.ok()?;
    table.version()
}

fn assert_same_rows(embedded: &[String], on_cluster: &[String], tier: Tier) {
    assert_eq!(
        embedded.len(),
        on_cluster.len(),
        "{}: as many rows on the cluster as in process",
        tier.table()
    );
    if let Some((i, (e, c))) = embedded
        .iter()
        .zip(on_cluster)
        .enumerate()
        .find(|(_, (e, c))| e != c)
    {
        panic!(
            "{}: line {i} differs\n embedded: {e}\n ballista: {c}",
            tier.table()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_range_on_ballista_gives_identical_rows() {
    let mut cfg = s3_lake();
    let (from, to) = archive_events(&cfg, 30_000, 5).await;

    let embedded = recompute(&cfg, from, to).await.unwrap();
    let want = [
        tier_rows(&cfg, Tier::Minute).await,
        tier_rows(&cfg, Tier::Hour).await,
    ];
    assert!(embedded.rows[0] > 1_000, "{embedded:?}");

    let _cluster = start_cluster(&mut cfg).await;
    let on_cluster = recompute(&cfg, from, to).await.unwrap();
    assert_eq!(on_cluster.archive_version, embedded.archive_version);
    assert_eq!(on_cluster.rows, embedded.rows);
    for (i, tier) in Tier::ALL.into_iter().enumerate() {
        assert_same_rows(&want[i], &tier_rows(&cfg, tier).await, tier);
    }

    // A range with no archived files at all still replaces (empties) what was there.
    let empty = recompute(&cfg, to + 24 * 3_600_000, to + 25 * 3_600_000)
        .await
        .unwrap();
    assert_eq!(empty.rows, [0, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_killed_mid_job_never_leaves_a_partial_commit() {
    let mut cfg = s3_lake();
    let (from, to) = archive_events(&cfg, 150_000, 9).await;
    recompute(&cfg, from, to).await.unwrap();
    let want = [
        tier_rows(&cfg, Tier::Minute).await,
        tier_rows(&cfg, Tier::Hour).await,
    ];
    let versions = [
        table_version(&cfg, Tier::Minute).await,
        table_version(&cfg, Tier::Hour).await,
    ];

    let mut cluster = start_cluster(&mut cfg).await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let job = {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let mut started = Some(started_tx);
            recompute_with_progress(&cfg, from, to, None, move |p| {
                if p == Phase::Query(Tier::Minute) {
                    if let Some(tx) = started.take() {
                        let _ = tx.send(());
                    }
                }
            })
            .await
        })
    };
    started_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !job.is_finished(),
        "the job must still be running when its executor is killed (make the range larger)"
    );
    let victim = &mut cluster.executors[0];
    assert!(victim.try_wait().unwrap().is_none());
    victim.kill().unwrap();
    victim.wait().unwrap();
    eprintln!("executor killed mid-job");

    match job.await.unwrap() {
        Ok(report) => {
            // Ballista ran the lost tasks again on the other executor (or Strata ran the job
            // again): the result is whole.
            // (A table as text has four lines besides its rows.)
            assert_eq!(report.rows, [want[0].len() - 4, want[1].len() - 4]);
            for (i, tier) in Tier::ALL.into_iter().enumerate() {
                assert_same_rows(&want[i], &tier_rows(&cfg, tier).await, tier);
            }
        }
        Err(e) => {
            // A clean failure: nothing committed, and the job runs whole when asked again.
            eprintln!("failed cleanly: {e}");
            assert!(e.to_string().contains("ballista"), "{e}");
            for (i, tier) in Tier::ALL.into_iter().enumerate() {
                assert_eq!(
                    table_version(&cfg, tier).await,
                    versions[i],
                    "{}: a failed job commits nothing",
                    tier.table()
                );
            }
            recompute(&cfg, from, to).await.unwrap();
            for (i, tier) in Tier::ALL.into_iter().enumerate() {
                assert_same_rows(&want[i], &tier_rows(&cfg, tier).await, tier);
            }
        }
    }
    drop(cluster.scheduler);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_scheduler_fails_cleanly_after_its_attempts_and_commits_nothing() {
    let mut cfg = s3_lake();
    let (from, to) = archive_events(&cfg, 5_000, 3).await;
    recompute(&cfg, from, to).await.unwrap();
    let versions = [
        table_version(&cfg, Tier::Minute).await,
        table_version(&cfg, Tier::Hour).await,
    ];
    // Nobody listens there.
    cfg.batch.engine = Engine::Ballista;
    cfg.batch.ballista_scheduler = format!("df://127.0.0.1:{}", strata_testkit::free_port());
    cfg.batch.ballista_attempts = 2;
    cfg.batch.ballista_job_timeout = Duration::from_secs(20);
    let e = recompute(&cfg, from, to).await.unwrap_err().to_string();
    assert!(
        e.contains("ballista") && e.contains("attempt 2 of 2"),
        "{e}"
    );
    for (i, tier) in Tier::ALL.into_iter().enumerate() {
        assert_eq!(
            table_version(&cfg, tier).await,
            versions[i],
            "{}: nothing committed",
            tier.table()
        );
    }
}
