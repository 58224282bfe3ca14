//! `strata-batch serve` as a user runs it (the real binary, a lake in a local folder): the
//! schedule recomputes the latest closed hours, a late event marks its hour dirty and the next
//! scheduled run corrects it, queued jobs from the API/CLI run to `done` durably, and /metrics
//! reports what happened.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_batch::coverage::status;
use strata_batch::jobs::{JobQueue, JobState, Trigger};
use strata_batch::schedule::last_closed_hour;
use strata_shared::Config;
use strata_testkit::gen::truth::Truth;
use strata_testkit::gen::Spec;
use strata_testkit::{free_port, scrape, Proc};

const H: i64 = 3_600_000;

fn spawn_serve(cfg: &Config, port: u16, log: &std::path::Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_strata-batch"))
            .env("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "0s")
            .arg("serve")
            .env("STRATA__LAKE__URL", &cfg.lake.url)
            .env("STRATA__BATCH__SCHEDULE", "*/2 * * * * *")
            .env("STRATA__BATCH__SCHEDULE_GRACE", "0s")
            .env("STRATA__BATCH__SCHEDULE_CLOSED_HOURS", "2")
            .env("STRATA__BATCH__JOB_POLL_INTERVAL", "200ms")
            // No archiver runs here: a requested recompute's wait for it runs out at once.
            .env("STRATA__BATCH__RECOMPUTE_WAIT", "1s")
            .env("STRATA__BATCH__SERVE_LISTEN", format!("127.0.0.1:{port}"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start strata-batch serve"),
    )
}

/// Count per hour in rollup_1h (through the SQL session).
async fn hour_count(cfg: &Config, hour: i64) -> i64 {
    let row = common::first_row(
        cfg,
        &format!("SELECT coalesce(sum(count), 0) FROM rollup_1h WHERE start_ms = {hour}"),
    )
    .await;
    row[0].parse().unwrap()
}

async fn wait_until<F, Fut>(log: &std::path::Path, what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("timed out waiting: {what}\n--- strata-batch serve log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schedule_recomputes_closed_and_dirty_hours_and_runs_queued_jobs() {
    let (dir, cfg) = common::local_lake();
    let now = chrono::Utc::now().timestamp_millis();
    let hour = last_closed_hour(now, 0);
    // 3000 events inside the newest closed hour, with duplicates.
    let spec = Spec {
        base_time_ms: hour + 50 * 60_000,
        spread_ms: 40 * 60_000,
        duplicate_ratio: 0.05,
        seed: 21,
        ..Spec::default()
    };
    let mut truth = Truth::new(Some(spec.clone()));
    let events = common::archived(spec, 3000, 1, |m| truth.record(m));
    let mut archive = common::archive_all(&cfg, &events, events.len()).await;
    let unique = truth.summary().valid_unique as i64;

    let port = free_port();
    let log = dir.path().join("serve.log");
    let _serve = spawn_serve(&cfg, port, &log);

    // The schedule covers the newest closed hours on its own.
    wait_until(
        &log,
        "the scheduled recompute of the closed hour",
        60,
        || async {
            let (covered, dirty, _) = status(&cfg).await.unwrap();
            covered.contains_key(&hour) && dirty.is_empty()
        },
    )
    .await;
    assert_eq!(hour_count(&cfg, hour).await, unique, "duplicates removed");
    let (covered, _, end) = status(&cfg).await.unwrap();
    assert!(covered.contains_key(&(hour - H)), "both closed hours");
    assert_eq!(
        end,
        Some(hour + H),
        "the boundary is the end of the newest closed hour"
    );

    // A late event for that hour: dirty, until the next scheduled run recomputes it.
    let mut late = events[0].clone();
    late.event.event_id = "late-event".into();
    late.event.timestamp_ms = hour + 1;
    late.offset = 3000;
    archive
        .append(&[late], &BTreeMap::from([(0, 3000)]))
        .await
        .unwrap();
    wait_until(
        &log,
        "the late event's hour to be recomputed",
        60,
        || async { hour_count(&cfg, hour).await == unique + 1 },
    )
    .await;
    assert!(status(&cfg).await.unwrap().1.is_empty(), "nothing dirty");

    // A job queued as the serving API does, for an older range: it runs to done.
    let queue = JobQueue::open(&cfg).unwrap();
    let (job, _) = queue
        .submit(
            hour - 5 * H,
            hour - 3 * H,
            Trigger::Api,
            Some("test-key"),
            now,
        )
        .await
        .unwrap();
    wait_until(&log, "the queued job to finish", 60, || async {
        queue.get(&job.id).await.unwrap().state == JobState::Done
    })
    .await;
    let done = queue.get(&job.id).await.unwrap();
    assert!(done.report.is_some() && done.error.is_none(), "{done:?}");
    assert!(status(&cfg).await.unwrap().0.contains_key(&(hour - 5 * H)));

    // /metrics says what happened.
    wait_until(&log, "metrics", 40, || async {
        scrape(port, "strata_batch_archive_files").unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(scrape(port, "strata_batch_jobs_total").unwrap() >= 3.0);
    assert!(scrape(port, "strata_batch_recompute_seconds_count").unwrap() >= 3.0);
    assert_eq!(
        scrape(port, "strata_batch_coverage_end_seconds").unwrap(),
        ((hour + H) / 1000) as f64
    );
    assert_eq!(scrape(port, "strata_batch_dirty_hours"), Some(0.0));
    assert!(scrape(port, "strata_batch_archive_bytes").unwrap() > 1000.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_and_the_schedule_recomputing_the_same_hours_at_once_end_exact() {
    // `strata-batch serve` recomputes the two newest closed hours every 2 s; meanwhile late
    // events keep arriving in the archive and the CLI recomputes the same hours, so commits of
    // results from different archive versions race. At the end every hour holds every event
    // once, and nothing is dirty.
    let (dir, cfg) = common::local_lake();
    let now = chrono::Utc::now().timestamp_millis();
    let hour = last_closed_hour(now, 0);
    let spec = Spec {
        base_time_ms: hour + 55 * 60_000,
        spread_ms: 100 * 60_000,
        duplicate_ratio: 0.05,
        seed: 22,
        ..Spec::default()
    };
    let mut truth = Truth::new(Some(spec.clone()));
    let events = common::archived(spec, 4000, 1, |m| truth.record(m));
    let mut archive = common::archive_all(&cfg, &events, events.len()).await;
    let mut want: BTreeMap<i64, i64> = BTreeMap::new();
    for r in truth.rows().iter().filter(|r| r.tier == "1h") {
        *want.entry(r.start_ms).or_default() += r.stats.count as i64;
    }
    assert!(
        want.contains_key(&hour) && want.contains_key(&(hour - H)),
        "events in both closed hours: {want:?}"
    );

    let port = free_port();
    let log = dir.path().join("serve.log");
    let _serve = spawn_serve(&cfg, port, &log);
    let (from, to) = ((hour - H).to_string(), (hour + H).to_string());
    for round in 0..6i64 {
        // A late event for one of the two hours, then the CLI recomputes both while the
        // schedule does the same.
        let at = if round % 2 == 0 { hour } else { hour - H };
        let mut late = events[0].clone();
        late.event.event_id = format!("late-{round}");
        late.event.timestamp_ms = at + 1 + round;
        late.offset = 4000 + round;
        archive
            .append(&[late], &BTreeMap::from([(0, 4000 + round)]))
            .await
            .unwrap();
        *want.get_mut(&at).unwrap() += 1;
        let out = Command::new(env!("CARGO_BIN_EXE_strata-batch"))
            .args(["recompute", "--from", &from, "--to", &to])
            .env("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "0s")
            .env("STRATA__LAKE__URL", &cfg.lake.url)
            // No archiver runs here: the read-your-writes wait runs out at once.
            .env("STRATA__BATCH__RECOMPUTE_WAIT", "1s")
            .env_remove("RUST_LOG")
            .output()
            .expect("run strata-batch recompute");
        assert!(
            out.status.success(),
            "round {round}: the CLI's recompute failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_until(
        &log,
        "both hours to hold every event and nothing to be dirty",
        90,
        || async {
            let (_, dirty, _) = status(&cfg).await.unwrap();
            dirty.is_empty()
                && hour_count(&cfg, hour).await == want[&hour]
                && hour_count(&cfg, hour - H).await == want[&(hour - H)]
        },
    )
    .await;
    // And the minute tier agrees with the hour tier.
    let minutes = common::first_row(
        &cfg,
        &format!(
            "SELECT coalesce(sum(count), 0) FROM rollup_1m WHERE start_ms >= {} AND start_ms < {}",
            hour - H,
            hour + H
        ),
    )
    .await;
    assert_eq!(
        minutes[0].parse::<i64>().unwrap(),
        want[&hour] + want[&(hour - H)]
    );
}
