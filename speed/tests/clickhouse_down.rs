//! ClickHouse stops for 30 s in the middle of a stream: strata-speed keeps running, pauses,
//! retries with backoff, resumes by itself, and ends exact. Runs alone in its own test binary
//! (cargo runs test binaries one at a time), since it stops the shared ClickHouse server.

mod common;

use std::time::Duration;

use common::*;
use strata_shared::gen::Spec;

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
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        speed.try_wait().unwrap().is_none(),
        "strata-speed must survive ClickHouse being down"
    );
    let retries = scrape(port, "strata_speed_inserts_total").unwrap_or(0.0);
    stack(&["start", "clickhouse"]);

    let mut truth = producer.join().unwrap();
    let summary = truth.summary();
    assert_eq!(
        env.wait_for_count(summary.valid_unique, Duration::from_secs(180))
            .await,
        summary.valid_unique
    );
    assert_matches_truth(&env.rollups(60).await, &truth.rows(), "1m");
    let retried = scrape(port, "strata_speed_inserts_total{result=\"retry\"").unwrap_or(0.0);
    assert!(
        retried > 0.0 || retries > 0.0,
        "the outage was seen and retried"
    );
    assert!(
        env.log("a").contains("pausing consumption"),
        "consumption paused while ClickHouse was down"
    );
    assert!(terminate(&mut speed).success());
    env.drop_database().await;
}
