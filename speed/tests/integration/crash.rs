//! Exactly once under crashes: strata-speed is SIGKILLed five times while a stream (with
//! duplicates and malformed messages) flows; afterwards every rollup equals the exact aggregate
//! of the valid events — nothing lost, nothing counted twice. (The 1M-event version of this
//! run is `make chaos`.)

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use strata_testkit::gen::{Format, Spec};

#[tokio::test(flavor = "multi_thread")]
async fn five_sigkills_during_a_stream_lose_nothing_and_count_nothing_twice() {
    // Runs a whole pipeline or loads both cores: never beside another such test.
    let _heavy = strata_testkit::heavy().await;
    let env = TestEnv::new("crash").await;
    let spec = Spec {
        format: Format::Mixed,
        duplicate_ratio: 0.03,
        malformed_ratio: 0.01,
        series: 2000,
        ..env.spec(21)
    };
    let events = 120_000;
    let producer = env.produce_in_background(spec.clone(), events, 4_000.0);

    let mut speed = env.spawn_speed("0", &[]);
    let mut kills = 0;
    let mut jitter: u64 = 7;
    while kills < 5 {
        // Kill only once this instance is writing, then at a pseudo-random instant.
        let before = env.counted().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while env.counted().await == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        jitter = jitter
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(200 + (jitter >> 33) % 1500)).await;
        speed.kill().expect("SIGKILL");
        speed.wait().unwrap();
        kills += 1;
        eprintln!("kill {kills} at {} events counted", env.counted().await);
        speed = env.spawn_speed(&kills.to_string(), &[]);
    }

    let mut truth = producer.join().expect("producer");
    let summary = truth.summary();
    let counted = env
        .wait_for_count(summary.valid_unique, Duration::from_secs(180))
        .await;
    assert_eq!(
        counted, summary.valid_unique,
        "after {kills} SIGKILLs: events counted"
    );
    assert_matches_truth(&env.rollups(60).await, &truth.rows(), "1m");
    assert!(terminate(&mut speed).success());
    env.drop_database().await;
}
