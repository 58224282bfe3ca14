//! ClickHouse stops for 30 s in the middle of a stream: strata-speed keeps running, pauses,
//! retries with backoff, resumes by itself, and ends exact. Runs alone in its own test binary
//! (cargo runs test binaries one at a time), since it stops the shared ClickHouse server.

mod common;

use std::time::Duration;

use common::*;
use strata_testkit::gen::Spec;

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_down_for_30s_mid_stream_then_exact() {
    let env = TestEnv::new("chdown").await;
    let port = free_port();
    let mut speed = env.spawn_speed_on("a", port, &[]);
    let spec = Spec {
        duplicate_ratio: 0.02,
        series: 1000,
        ..env.spec(31)
    };
    let events = 100_000;
    let producer = env.produce_in_background(spec.clone(), events, 2_000.0);
    // Let it write for a while, then take ClickHouse away.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while env.counted().await < 10_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack(&["stop", "clickhouse"]);
    // Down until strata-speed has retried and paused consumption (and at least 10 s).
    let down = std::time::Instant::now();
    let retried = |p| scrape(p, "strata_speed_inserts_total{result=\"retry\"").unwrap_or(0.0);
    while retried(port) == 0.0
        || !env.log("a").contains("pausing consumption")
        || down.elapsed() < Duration::from_secs(10)
    {
        assert!(
            down.elapsed() < Duration::from_secs(120),
            "no retry and pause within 120 s of the outage:\n{}",
            env.log("a")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        speed.try_wait().unwrap().is_none(),
        "strata-speed must survive ClickHouse being down"
    );
    let retries_during = retried(port);
    stack(&["start", "clickhouse"]);

    let mut truth = producer.join().unwrap();
    let summary = truth.summary();
    assert_eq!(
        env.wait_for_count(summary.valid_unique, Duration::from_secs(180))
            .await,
        summary.valid_unique
    );
    assert_matches_truth(&env.rollups(60).await, &truth.rows(), "1m");
    assert!(retries_during > 0.0, "the outage was seen and retried");
    assert!(
        env.log("a")
            .contains("ClickHouse caught up; resuming consumption"),
        "consumption resumed by itself once ClickHouse was back:\n{}",
        env.log("a")
    );
    assert!(terminate(&mut speed).success());
    env.drop_database().await;
}
