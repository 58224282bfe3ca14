//! A second instance joins the group mid-stream and the first leaves (SIGTERM): partitions move
//! twice, and the rollups still equal the exact aggregates.

use crate::common;

use std::time::Duration;

use common::*;
use strata_testkit::gen::Spec;

#[tokio::test(flavor = "multi_thread")]
async fn a_joining_and_a_leaving_instance_lose_and_double_nothing() {
    // Runs a whole pipeline or loads both cores: never beside another such test.
    let _heavy = strata_testkit::heavy().await;
    let env = TestEnv::new("rebalance").await;
    let spec = Spec {
        duplicate_ratio: 0.02,
        series: 1000,
        metrics: 24,
        ..env.spec(41)
    };
    let events = 100_000;
    let producer = env.produce_in_background(spec.clone(), events, 4_000.0);
    let a_port = free_port();
    let mut a = env.spawn_speed_on("a", a_port, &[]);
    // b joins once a writes.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while env.counted().await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a never wrote\n{}",
            env.log("a")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut b = env.spawn_speed("b", &[]);
    // When b joined, every partition was revoked from a and some came back to it; a had written
    // them last, so it kept their duplicate filters instead of re-reading the window. The
    // deadline is generous: on a loaded 2-core machine tansu's rebalance took over 60 s once.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let kept = scrape(
            a_port,
            "strata_speed_partition_assignments_total{start=\"filter_kept\"",
        )
        .unwrap_or(0.0);
        if kept > 0.0 && env.log("b").contains("assigned") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "within 180 s of b joining, partitions came back to a with their duplicate filter \
             (kept {kept}) and b took some\n{}",
            env.log("a")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        terminate(&mut a).success(),
        "the leaving instance flushes and exits cleanly"
    );

    let mut truth = producer.join().unwrap();
    let summary = truth.summary();
    assert_eq!(
        env.wait_for_count(summary.valid_unique, Duration::from_secs(120))
            .await,
        summary.valid_unique
    );
    assert_matches_truth(&env.rollups(60).await, &truth.rows(), "1m");
    assert!(
        env.log("b").contains("assigned"),
        "the second instance took partitions"
    );
    assert!(
        env.log("a").contains("partitions revoked"),
        "the first gave partitions up"
    );
    assert!(terminate(&mut b).success());
    env.drop_database().await;
}
