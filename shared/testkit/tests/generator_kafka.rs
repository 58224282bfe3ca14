//! The load generator against the real broker (start it with `make up`): 100k messages — JSON,
//! Protobuf, framed, duplicates, late and malformed ones — produced by the `strata-gen` binary to
//! a fresh topic are read back with a consumer group, exactly the same multiset; the ground-truth
//! file is then checked against an independent computation from what was consumed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::Message as _;
use strata_shared::config::KafkaConfig;
use strata_shared::validate::{check_message, Limits};
use strata_shared::{kafka, Config};
use strata_testkit::gen::truth::{read_jsonl, TruthRow};
use strata_testkit::gen::Generator;

const EVENTS: usize = 100_000;

fn kafka_config() -> KafkaConfig {
    Config::load(None)
        .expect("configuration from the environment")
        .kafka
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Reads until `want` messages arrived (or 120 s passed), commits, and returns (key, value) pairs.
fn consume(
    cfg: &KafkaConfig,
    topic: &str,
    group: &str,
    want: usize,
) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let consumer: BaseConsumer = kafka::consumer_config(cfg, group)
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::with_capacity(want);
    let deadline = Instant::now() + Duration::from_secs(120);
    while out.len() < want && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            out.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            ));
            consumer
                .store_offset_from_message(&m)
                .expect("store offset");
        }
    }
    if !out.is_empty() {
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit");
    }
    out
}

/// Exact quantile written differently from `stats::quantile_cont`: weights of the two ranks.
fn independent_quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let below = h.floor();
    let w = h - below;
    let i = below as usize;
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] * (1.0 - w) + sorted[j] * w
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_events_round_trip_through_the_broker_and_match_the_truth() {
    let cfg = kafka_config();
    let topic = unique("strata-test-gen");
    kafka::create_topics(&cfg, &[(&topic, 12)])
        .await
        .expect("create topic (is the stack up? run `make up`)");
    let truth_file = tempfile::NamedTempFile::new().unwrap();
    let base_time = chrono::Utc::now().timestamp_millis();

    let out = Command::new(env!("CARGO_BIN_EXE_strata-gen"))
        .args([
            "--topic",
            &topic,
            "--events",
            &EVENTS.to_string(),
            "--seed",
            "42",
            "--format",
            "mixed",
        ])
        .args([
            "--framed",
            "0.1",
            "--duplicates",
            "0.05",
            "--late",
            "0.05",
            "--malformed",
            "0.02",
        ])
        .args([
            "--series",
            "300",
            "--metrics",
            "6",
            "--spread",
            "30m",
            "--no-progress",
        ])
        .args(["--base-time-ms", &base_time.to_string(), "--truth"])
        .arg(truth_file.path())
        .env("STRATA__KAFKA__BROKERS", &cfg.brokers)
        .output()
        .expect("run strata-gen");
    assert!(
        out.status.success(),
        "strata-gen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("produced={EVENTS} delivered={EVENTS} failed=0")),
        "{stdout}"
    );

    // 1. The consumer group reads back exactly what the generator produced.
    let group = unique("strata-test-group");
    let consumed = tokio::task::spawn_blocking({
        let (cfg, topic, group) = (cfg.clone(), topic.clone(), group.clone());
        move || consume(&cfg, &topic, &group, EVENTS)
    })
    .await
    .unwrap();
    assert_eq!(
        consumed.len(),
        EVENTS,
        "consumed {} of {EVENTS}",
        consumed.len()
    );

    let (rows, summary) = read_jsonl(std::io::BufReader::new(
        std::fs::File::open(truth_file.path()).unwrap(),
    ))
    .unwrap();
    let spec = summary.spec.clone().expect("the truth records its spec");
    assert_eq!(spec.base_time_ms, base_time);
    let mut expected: HashMap<(Option<Vec<u8>>, Vec<u8>), i64> = HashMap::new();
    for m in Generator::new(spec).take(EVENTS) {
        *expected
            .entry((m.key.map(String::into_bytes), m.payload))
            .or_default() += 1;
    }
    for msg in &consumed {
        *expected
            .get_mut(msg)
            .expect("consumed a message the generator never made") -= 1;
    }
    assert!(
        expected.values().all(|&n| n == 0),
        "the consumed multiset differs from the produced one"
    );

    // 2. Committed offsets hold: the same group gets nothing more.
    let again = tokio::task::spawn_blocking({
        let (cfg, topic, group) = (cfg.clone(), topic.clone(), group.clone());
        move || {
            let consumer: BaseConsumer = kafka::consumer_config(&cfg, &group).create().unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            let deadline = Instant::now() + Duration::from_secs(12);
            let mut n = 0;
            while Instant::now() < deadline {
                if consumer.poll(Duration::from_millis(200)).is_some() {
                    n += 1;
                }
            }
            n
        }
    })
    .await
    .unwrap();
    assert_eq!(
        again, 0,
        "a restarted member of the group re-read committed messages"
    );

    // 3. The truth equals an independent computation from the consumed bytes.
    let limits = Limits::default();
    let mut seen = HashSet::new();
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    let mut duplicates = 0;
    let mut buckets: BTreeMap<(&str, u64, i64), Vec<f64>> = BTreeMap::new();
    for (_, payload) in &consumed {
        match check_message(Some(payload), &limits, base_time) {
            Err(r) => *rejected.entry(r.code().to_owned()).or_default() += 1,
            Ok(d) => {
                if !seen.insert(d.event.event_id.clone()) {
                    duplicates += 1;
                    continue;
                }
                let id = d.event.series_id();
                let ts = d.event.timestamp_ms;
                buckets
                    .entry(("1m", id, ts - ts.rem_euclid(60_000)))
                    .or_default()
                    .push(d.event.value);
                buckets
                    .entry(("1h", id, ts - ts.rem_euclid(3_600_000)))
                    .or_default()
                    .push(d.event.value);
            }
        }
    }
    assert_eq!(rejected, summary.malformed, "reject reasons by code");
    assert_eq!(duplicates, summary.duplicates);
    assert_eq!(seen.len() as u64, summary.valid_unique);
    assert!(
        summary.late > 1000 && summary.duplicates > 1000 && summary.malformed.len() >= 15,
        "{summary:?}"
    );

    let by_key: HashMap<(&str, u64, i64), &TruthRow> = rows
        .iter()
        .map(|r| ((r.tier.as_str(), r.series_id, r.start_ms), r))
        .collect();
    assert_eq!(
        by_key.len(),
        buckets.len(),
        "number of (series, bucket) rows"
    );
    for (key, mut values) in buckets {
        let row = by_key
            .get(&key)
            .unwrap_or_else(|| panic!("truth lacks bucket {key:?}"));
        values.sort_by(f64::total_cmp);
        let s = &row.stats;
        assert_eq!(s.count, values.len() as u64, "{key:?}");
        // Generated values are multiples of 1/1024: sums are exact in any order.
        assert_eq!(s.sum, values.iter().rev().sum::<f64>(), "{key:?}");
        assert_eq!(
            (s.min, s.max),
            (values[0], values[values.len() - 1]),
            "{key:?}"
        );
        for (q, got) in [0.5, 0.9, 0.95, 0.99].into_iter().zip(s.quantiles) {
            assert!(
                close(got, independent_quantile(&values, q)),
                "{key:?} q{q}: {got}"
            );
        }
    }
}
