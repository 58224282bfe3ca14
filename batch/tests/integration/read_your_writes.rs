//! A recompute asked for at time T includes every event the broker had acknowledged before T —
//! against the real broker, with the archiver and `strata-batch serve` as users run them. The
//! archiver flushes only every 5 s here, so a recompute that did not wait would miss the late
//! events sent just before it was asked for.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use strata_batch::jobs::{JobQueue, JobState, Trigger};
use strata_batch::schedule::last_closed_hour;
use strata_shared::{kafka, Config, MetricEvent};
use strata_testkit::{free_port, Proc};

const H: i64 = 3_600_000;

fn spawn(cfg: &Config, args: &[&str], env: &[(&str, &str)], log: &std::path::Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata-batch"));
    cmd.args(args)
        .env("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "0s")
        .env("STRATA__KAFKA__BROKERS", &cfg.kafka.brokers)
        .env("STRATA__KAFKA__TOPIC", &cfg.kafka.topic)
        .env("STRATA__KAFKA__SESSION_TIMEOUT", "6s")
        .env(
            "STRATA__BATCH__ARCHIVE_GROUP_ID",
            &cfg.batch.archive_group_id,
        )
        .env("STRATA__LAKE__URL", &cfg.lake.url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("start strata-batch"))
}

async fn send(producer: &FutureProducer, topic: &str, events: &[MetricEvent]) {
    for e in events {
        let body = serde_json::to_vec(e).unwrap();
        producer
            .send(
                FutureRecord::to(topic).key(&e.metric_name).payload(&body),
                Duration::from_secs(10),
            )
            .await
            .expect("acknowledged by the broker");
    }
}

/// Count of events of `metric` in rollup_1h's hour `hour`.
async fn hour_count(cfg: &Config, metric: &str, hour: i64) -> i64 {
    common::first_row(
        cfg,
        &format!(
            "SELECT coalesce(sum(count), 0) FROM rollup_1h WHERE start_ms = {hour} AND metric_name = '{metric}'"
        ),
    )
    .await[0]
        .parse()
        .unwrap()
}

async fn finished(queue: &JobQueue, id: &str, log: &std::path::Path) -> strata_batch::jobs::Job {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = queue.get(id).await.unwrap();
        if matches!(job.state, JobState::Done | JobState::Failed) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not finish:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requested_recompute_includes_what_was_sent_before_it() {
    // Runs a whole pipeline or loads both cores: never beside another such test.
    let _heavy = strata_testkit::heavy().await;
    let (dir, mut cfg) = common::local_lake();
    let id = uuid::Uuid::new_v4().simple().to_string();
    cfg.kafka.topic = format!("strata-test-ryw-{id}");
    cfg.batch.archive_group_id = format!("strata-test-ryw-{id}");
    kafka::create_topics(&cfg.kafka, &[(&cfg.kafka.topic, 4)])
        .await
        .expect("create topic (run `make up`)");
    let log = dir.path().join("batch.log");
    let _archiver = spawn(
        &cfg,
        &["archive"],
        &[
            ("STRATA__BATCH__ARCHIVE_FLUSH_INTERVAL", "5s"),
            (
                "STRATA__BATCH__LISTEN",
                &format!("127.0.0.1:{}", free_port()),
            ),
        ],
        &log,
    );
    let _serve = spawn(
        &cfg,
        &["serve"],
        &[
            ("STRATA__BATCH__SCHEDULE", "0 0 0 1 1 *"), // not in this test's lifetime
            ("STRATA__BATCH__JOB_POLL_INTERVAL", "200ms"),
            ("STRATA__BATCH__RECOMPUTE_WAIT", "60s"),
            (
                "STRATA__BATCH__SERVE_LISTEN",
                &format!("127.0.0.1:{}", free_port()),
            ),
        ],
        &log,
    );
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create().unwrap();
    let hour = last_closed_hour(chrono::Utc::now().timestamp_millis(), 0);
    let event = |i: usize, metric: &str| {
        let mut e = MetricEvent::new(
            &format!("ryw-{id}-{metric}-{i}"),
            metric,
            1.0,
            hour + i as i64 * 1000,
        );
        e.source = format!("s{}", i % 4);
        e
    };
    // Events of four metrics (so of several partitions), archived and recomputed once.
    let metrics = ["ryw_a", "ryw_b", "ryw_c", "ryw_d"];
    let first: Vec<MetricEvent> = (0..200).map(|i| event(i, metrics[i % 4])).collect();
    send(&producer, &cfg.kafka.topic, &first).await;
    let queue = JobQueue::open(&cfg).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let (job, _) = queue
        .submit(hour, hour + H, Trigger::Api, None, now)
        .await
        .unwrap();
    let job = finished(&queue, &job.id, &log).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let waited = job.report.as_ref().unwrap().waited.clone().unwrap();
    assert!(waited.complete && waited.partitions == 4, "{waited:?}");
    for m in metrics {
        assert_eq!(hour_count(&cfg, m, hour).await, 50, "{m}");
    }

    // Late events for that hour, acknowledged by the broker; the recompute is asked for at once.
    let late: Vec<MetricEvent> = (200..260).map(|i| event(i, metrics[i % 4])).collect();
    send(&producer, &cfg.kafka.topic, &late).await;
    let asked = chrono::Utc::now().timestamp_millis();
    let (job, new) = queue
        .submit(hour, hour + H, Trigger::Api, None, asked)
        .await
        .unwrap();
    assert!(new);
    let job = finished(&queue, &job.id, &log).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let waited = job.report.as_ref().unwrap().waited.clone().unwrap();
    assert!(
        waited.complete && waited.since_ms == asked && waited.caught_up == 4,
        "the report says what it waited for: {waited:?}"
    );
    for m in metrics {
        assert_eq!(
            hour_count(&cfg, m, hour).await,
            65,
            "{m}: the late events acknowledged before the request are in"
        );
    }
}
