//! strata-speed against the real broker and ClickHouse: rollups equal the ground truth, bad input
//! lands in the dead-letter topic with its reason, idle partitions hold nothing back, and the
//! cardinality guard folds excess series without losing events.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::Message;
use strata_shared::kafka;
use strata_testkit::gen::{Format, Generator, Spec};

async fn rollups_equal_truth(name: &str, format: Format, framed: f64) {
    let env = TestEnv::new(name).await;
    let mut speed = env.spawn_speed("a", &[]);
    let spec = Spec {
        format,
        framed_ratio: framed,
        duplicate_ratio: 0.05,
        late_ratio: 0.05,
        series: 500,
        ..env.spec(11)
    };
    let events = 60_000;
    let (mut truth, _) = env.produce(spec.clone(), events, 0.0);
    let summary = truth.summary();
    let counted = env
        .wait_for_count(summary.valid_unique, Duration::from_secs(120))
        .await;
    assert_eq!(
        counted, summary.valid_unique,
        "events counted (duplicates must be dropped)"
    );

    let rows = truth.rows();
    assert_matches_truth(&env.rollups(60).await, &rows, "1m");
    // Any coarser step re-aggregates from the minutes: hours equal the hourly truth.
    assert_matches_truth(&env.rollups(3600).await, &rows, "1h");
    assert_quantiles_within_rank_error(&env.rollups(60).await, &values_per_minute(&spec, events));

    assert!(
        terminate(&mut speed).success(),
        "strata-speed exits cleanly on SIGTERM"
    );
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_rollups_equal_the_ground_truth() {
    rollups_equal_truth("json", Format::Json, 0.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn protobuf_and_framed_rollups_equal_the_ground_truth() {
    rollups_equal_truth("proto", Format::Protobuf, 0.3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_land_in_the_dlq_with_their_reason_while_valid_ones_flow() {
    let env = TestEnv::new("dlq").await;
    let mut speed = env.spawn_speed("a", &[]);
    let spec = Spec {
        malformed_ratio: 0.25,
        format: Format::Mixed,
        ..env.spec(5)
    };
    let events = 8_000;
    let (mut truth, report) = env.produce(spec.clone(), events, 0.0);
    let summary = truth.summary();
    assert!(
        summary.malformed.len() >= 15 && report.malformed > 1500,
        "{summary:?}"
    );
    assert_eq!(
        env.wait_for_count(summary.valid_unique, Duration::from_secs(90))
            .await,
        summary.valid_unique
    );
    assert_matches_truth(&env.rollups(60).await, &truth.rows(), "1m");

    // Every malformed message is in the DLQ, untouched, with reason and origin headers.
    let originals: HashMap<Vec<u8>, &'static str> = Generator::new(spec)
        .take(events as usize)
        .filter_map(|m| match m.kind {
            strata_testkit::gen::Kind::Malformed(code) => Some((m.payload, code)),
            _ => None,
        })
        .collect();
    let dlq = {
        let k = env.kafka();
        let want = report.malformed as usize;
        tokio::task::spawn_blocking(move || read_all(&k, &k.dlq_topic, want))
            .await
            .unwrap()
    };
    assert_eq!(
        dlq.len() as u64,
        report.malformed,
        "every malformed message, once"
    );
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for (payload, headers) in &dlq {
        let reason = &headers["strata.reason"];
        *by_reason.entry(reason.clone()).or_default() += 1;
        if let Some(code) = originals.get(payload) {
            assert_eq!(reason, code, "reason of an untouched payload");
        } else {
            panic!(
                "a DLQ payload differs from every produced message ({} bytes)",
                payload.len()
            );
        }
        assert_eq!(headers["strata.topic"], env.cfg.kafka.topic);
        assert!(headers["strata.partition"]
            .parse::<i32>()
            .is_ok_and(|p| (0..12).contains(&p)));
        assert!(headers["strata.offset"]
            .parse::<i64>()
            .is_ok_and(|o| o >= 0));
        assert!(!headers["strata.error"].is_empty());
    }
    assert_eq!(by_reason, summary.malformed, "DLQ counts by reason");
    assert!(terminate(&mut speed).success());
    env.drop_database().await;
}

/// Reads `want` messages from `topic` (or what arrives within 60 s) with their headers.
fn read_all(
    k: &strata_shared::config::KafkaConfig,
    topic: &str,
    want: usize,
) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    let c: BaseConsumer = kafka::consumer_config(k, &format!("{topic}-reader"))
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_owned(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((m.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    // Nothing more than expected arrives.
    let extra_deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < extra_deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push((m.payload().unwrap_or_default().to_vec(), HashMap::new()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_partition_holds_back_nothing() {
    // One metric → one partition carries data; the other eleven stay idle.
    let env = TestEnv::new("idle").await;
    let mut speed = env.spawn_speed("a", &[]);
    let (truth, _) = env.produce(
        Spec {
            metrics: 1,
            series: 3,
            ..env.spec(3)
        },
        300,
        0.0,
    );
    let want = truth.summary().valid_unique;
    let started = Instant::now();
    assert_eq!(
        env.wait_for_count(want, Duration::from_secs(60)).await,
        want
    );
    eprintln!("visible after {:?}", started.elapsed());
    assert!(terminate(&mut speed).success());
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn excess_series_fold_into_overflow_without_losing_events() {
    let env = TestEnv::new("cardinality").await;
    let mut speed = env.spawn_speed("a", &[("STRATA__SPEED__MAX_SERIES_PER_METRIC", "5")]);
    let (mut truth, _) = env.produce(
        Spec {
            metrics: 2,
            series: 40,
            ..env.spec(8)
        },
        4_000,
        0.0,
    );
    let summary = truth.summary();
    assert_eq!(
        env.wait_for_count(summary.valid_unique, Duration::from_secs(60))
            .await,
        summary.valid_unique
    );

    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct PerMetric {
        metric_name: String,
        series: u64,
        overflow_series: u64,
        cnt: u64,
    }
    let got: Vec<PerMetric> = env
        .client()
        .query(
            "SELECT metric_name, uniqExact(series_id) AS series, \
             uniqExactIf(series_id, has(tag_keys, '__overflow__')) AS overflow_series, sumMerge(cnt) AS cnt \
             FROM speed_rollup_1m WHERE metric_name != '' GROUP BY metric_name ORDER BY metric_name",
        )
        .fetch_all()
        .await
        .unwrap();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for r in truth.rows().iter().filter(|r| r.tier == "1h") {
        *want.entry(r.labels.metric_name.clone()).or_default() += r.stats.count;
    }
    assert_eq!(got.len(), 2, "{got:?}");
    for m in &got {
        // One overflow series per (metric, source): the generator's series have 3 sources.
        assert!((1..=3).contains(&m.overflow_series), "{m:?}");
        assert_eq!(
            m.series,
            5 + m.overflow_series,
            "5 admitted series + the overflow series: {m:?}"
        );
        assert_eq!(
            m.cnt, want[&m.metric_name],
            "no event lost to the cap: {m:?}"
        );
    }
    assert!(terminate(&mut speed).success());
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_drops_only_partitions_past_the_limit() {
    let env = TestEnv::new("retention").await;
    strata_speed::clickhouse::schema::migrate(&env.cfg.clickhouse)
        .await
        .unwrap();
    let c = env.client();
    // Three ingest days: 200 days ago, 91 days ago, today.
    for days_ago in [200u32, 91, 0] {
        c.query(&format!(
            "INSERT INTO speed_ingest_batch_v2 SELECT today() - {days_ago}, ['m'], [toUInt64(1)], [now()], ['s'], \
             [emptyArrayString()], [emptyArrayString()], [toUInt64(1)], [1.0], [1.0], [1.0], [[1.0]], [toInt64(-1)], \
             [1.0], [toInt64(1)]"
        ))
        .execute()
        .await
        .unwrap();
    }
    let mut cfg = env.cfg.clone();
    cfg.speed.retention_days = 90;
    let registry = prometheus::Registry::new();
    let metrics = strata_speed::metrics::Metrics::new(&registry).unwrap();
    let dropped = strata_speed::monitor::enforce_retention(&c, &cfg, &metrics)
        .await
        .unwrap();
    assert_eq!(dropped, 2);
    assert_eq!(env.counted().await, 1, "today's partition survives");
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_clickhouse_error_stops_the_service_with_the_reason() {
    let env = TestEnv::new("badauth").await;
    let mut speed = env.spawn_speed("a", &[("STRATA__CLICKHOUSE__PASSWORD", "not-the-password")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = speed.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "strata-speed kept retrying a wrong password"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = env.log("a");
    assert!(
        log.contains("ClickHouse refused the schema migration"),
        "{log}"
    );
    assert!(
        !log.contains("not-the-password"),
        "the password must not be logged"
    );
}
