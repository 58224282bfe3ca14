//! `make bench-speed`: strata-speed against its anchors, on the same broker and machine, in one run.
//!
//! 1. 2M generated JSON events (10k series) are produced to a fresh 12-partition topic.
//! 2. raw: a plain rdkafka consumer (fresh group) reads all of them — the broker's consume rate.
//! 3. strata: strata-speed (release build, fresh group and database) from launch until every
//!    rollup is queryable in ClickHouse.
//! 4. anchor: ClickHouse's own Kafka engine + materialized view computing the same rollups (count,
//!    sum, min, max, t-digest per series and minute) from the same messages, until all are counted.
//! 5. freshness: strata-speed running, live events produced at a steady 20k/s for 20 s; the p99 of
//!    produced → counted in ClickHouse.
//! 6. memory: peak RSS (VmHWM) of strata-speed after 100k live series.
//!
//! Every rate includes joining the consumer group (all three pay it). The last line is
//! `speed-bench: strata_eps=N ch_engine_eps=N raw_eps=N vs_ch=R vs_raw=R fresh_p99_ms=N rss_mb=N`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use strata_shared::kafka;
use strata_testkit::env_u64;
use strata_testkit::gen::produce::{produce, Run};
use strata_testkit::gen::{Format, Spec};

const EVENTS: u64 = 2_000_000;
/// How often both contenders' ClickHouse counts are polled. Each poll merges the whole rollup
/// table: at 50 ms the polls alone took ≈ 8 % of the machine (perf), competing with what they
/// measure; at 250 ms they cost little and the finish is known to within a quarter second.
const COUNT_POLL: Duration = Duration::from_millis(250);

#[tokio::main]
async fn main() {
    let events = env_u64("BENCH_EVENTS", EVENTS);
    let env = TestEnv::new("bench").await;
    let spec = Spec {
        series: 10_000,
        metrics: 10,
        format: Format::Json,
        ..env.spec(99)
    };
    let t = Instant::now();
    let (truth, _) = env.produce(spec, events, 0.0);
    let want = truth.summary().valid_unique;
    eprintln!(
        "produced {events} JSON events ({want} distinct) in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // The broker's pace varies from run to run: each contender reads the topic BENCH_RUNS times
    // (fresh group, fresh database), interleaved, and the medians are compared.
    let runs = env_u64("BENCH_RUNS", 3);
    let (mut raw, mut strata_runs, mut ch) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let run_env = env.fork(&format!("r{r}"));
        raw.push(raw_consume(&run_env, events).await);
        strata_runs.push(strata(&run_env, want).await);
        match ch_engine(&run_env, events).await {
            Ok(eps) => ch.push(eps),
            Err(e) => eprintln!("ClickHouse Kafka engine anchor failed: {e}"),
        }
        run_env.drop_database().await;
        eprintln!(
            "run {r}: raw {:.0}/s, strata-speed {:.0}/s, ClickHouse Kafka engine {:.0}/s",
            raw[r as usize],
            strata_runs[r as usize],
            ch.last().copied().unwrap_or(0.0)
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            0.0
        } else {
            v[v.len() / 2]
        }
    };
    let (raw_eps, strata_eps, ch_eps) = (median(raw), median(strata_runs), median(ch));

    let (fresh_p99, raw_fresh_p99) = freshness().await;
    eprintln!("freshness p99: {fresh_p99:.0} ms (a plain consumer sees messages after {raw_fresh_p99:.0} ms at p99)");
    let rss_mb = rss_at_100k_series().await;
    eprintln!("peak RSS at 100k series: {rss_mb:.0} MB");
    env.drop_database().await;

    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!(
        "speed-bench: strata_eps={strata_eps:.0} ch_engine_eps={ch_eps:.0} raw_eps={raw_eps:.0} vs_ch={:.2} vs_raw={:.2} fresh_p99_ms={fresh_p99:.0} rss_mb={rss_mb:.0}",
        ratio(strata_eps, ch_eps),
        ratio(strata_eps, raw_eps)
    );
}

/// A plain consumer in a fresh group, from creation to the last message.
async fn raw_consume(env: &TestEnv, events: u64) -> f64 {
    let k = env.kafka();
    let group = format!("{}-raw", env.cfg.speed.group_id);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let c: BaseConsumer = kafka::consumer_config(&k, &group).create().unwrap();
        c.subscribe(&[&k.topic]).unwrap();
        let mut n = 0u64;
        let mut bytes = 0usize;
        let mut first = None;
        while n < events && started.elapsed() < Duration::from_secs(300) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                first.get_or_insert_with(|| started.elapsed().as_secs_f64());
                bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
                n += 1;
            }
        }
        eprintln!(
            "raw consumer: first message after {:.1} s, all read after {:.1} s",
            first.unwrap_or(f64::NAN),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(n, events, "raw consumer read everything");
        std::hint::black_box(bytes);
        n as f64 / started.elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

/// strata-speed from launch until ClickHouse counts every event.
async fn strata(env: &TestEnv, want: u64) -> f64 {
    let started = Instant::now();
    let port = free_port();
    let mut speed = env.spawn_speed_on("bench", port, &[("RUST_LOG", "info")]);
    let mut counted = 0;
    let mut first_message = None;
    while counted < want && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(COUNT_POLL).await;
        if first_message.is_none()
            && scrape(port, "strata_speed_consumed_total").unwrap_or(0.0) > 0.0
        {
            first_message = Some(started.elapsed().as_secs_f64());
        }
        counted = env.counted().await;
    }
    let secs = started.elapsed().as_secs_f64();
    // Where the time went: CPU seconds of the process (utime + stime, in ticks of 10 ms).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", speed.id())).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    let inserts = scrape(port, "strata_speed_insert_seconds_count").unwrap_or(0.0);
    let insert_secs = scrape(port, "strata_speed_insert_seconds_sum").unwrap_or(0.0);
    eprintln!(
        "strata-speed: first message after {:.1} s, all counted after {secs:.1} s, {:.1} CPU-s used, \
         {inserts} inserts taking {insert_secs:.1} s in all",
        first_message.unwrap_or(f64::NAN),
        ticks / 100.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.counted().await,
        want,
        "strata-speed counted every event exactly once"
    );
    terminate(&mut speed);
    want as f64 / secs
}

/// ClickHouse's Kafka engine + materialized view over the same topic.
async fn ch_engine(env: &TestEnv, events: u64) -> Result<f64, String> {
    let c = strata_shared::clickhouse::server_client(&env.cfg.clickhouse);
    let db = strata_shared::clickhouse::quote_identifier(&format!(
        "{}_anchor",
        env.cfg.clickhouse.database
    ));
    let q = |sql: String| {
        let c = c.clone();
        async move { c.query(&sql).execute().await.map_err(|e| e.to_string()) }
    };
    q(format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
    // Each JSON message is read whole (TabSeparated, one String column) and parsed by the view.
    q(format!(
        "CREATE TABLE {db}.queue (line String) ENGINE = Kafka SETTINGS kafka_broker_list = '{}', \
         kafka_topic_list = '{}', kafka_group_name = '{}-ch', kafka_format = 'TabSeparated', \
         kafka_row_delimiter = '\\n'",
        env.cfg.kafka.brokers, env.cfg.kafka.topic, env.cfg.speed.group_id
    ))
    .await?;
    q(format!(
        "CREATE TABLE {db}.rollup (metric_name String, series_id UInt64, minute DateTime, \
         cnt AggregateFunction(count), total AggregateFunction(sum, Float64), mn AggregateFunction(min, Float64), \
         mx AggregateFunction(max, Float64), q AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float64)) \
         ENGINE = AggregatingMergeTree() PARTITION BY toDate(minute) ORDER BY (metric_name, series_id, minute)"
    ))
    .await?;
    let started = Instant::now();
    q(format!(
        "CREATE MATERIALIZED VIEW {db}.mv TO {db}.rollup AS SELECT \
         visitParamExtractString(line, 'metric_name') AS metric_name, \
         cityHash64(metric_name, visitParamExtractString(line, 'source'), visitParamExtractRaw(line, 'tags')) AS series_id, \
         toStartOfMinute(toDateTime(intDiv(visitParamExtractInt(line, 'timestamp_ms'), 1000))) AS minute, \
         countState() AS cnt, sumState(visitParamExtractFloat(line, 'value')) AS total, \
         minState(visitParamExtractFloat(line, 'value')) AS mn, maxState(visitParamExtractFloat(line, 'value')) AS mx, \
         quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(visitParamExtractFloat(line, 'value')) AS q \
         FROM {db}.queue GROUP BY metric_name, series_id, minute"
    ))
    .await?;
    let count = || {
        let c = c.clone();
        let sql = format!("SELECT countMerge(cnt) FROM {db}.rollup");
        async move { c.query(&sql).fetch_one::<u64>().await.unwrap_or(0) }
    };
    let mut n = 0;
    while n < events && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(COUNT_POLL).await;
        n = count().await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = q(format!("DROP DATABASE IF EXISTS {db}")).await;
    if n < events {
        return Err(format!("the Kafka engine counted {n} of {events}"));
    }
    if n > events {
        // At-least-once: a rebalance or restart makes it read some messages twice.
        eprintln!("note: the Kafka engine counted {} events twice", n - events);
    }
    Ok(events as f64 / secs)
}

/// p99 of produced → counted, at a steady 20k events/s for 20 s; and, as the anchor, p99 of
/// produced → received by a plain consumer of the same stream.
async fn freshness() -> (f64, f64) {
    let env = TestEnv::new("bench-fresh").await;
    let mut speed = env.spawn_speed(
        "fresh",
        &[
            ("STRATA__SPEED__FLUSH_INTERVAL", "250ms"),
            ("RUST_LOG", "info"),
        ],
    );
    // Warm up: wait until strata-speed owns the partitions and has written something.
    let (warm, _) = env.produce(
        Spec {
            live: true,
            ..env.spec(1)
        },
        1000,
        0.0,
    );
    env.wait_for_count(warm.summary().valid_unique, Duration::from_secs(60))
        .await;
    let base = env.counted().await;

    let marks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    // The anchor consumer joins its group before the steady stream starts.
    let ready = Arc::new(AtomicBool::new(false));
    let start_ms = chrono::Utc::now().timestamp_millis();
    let raw = {
        let (k, done, ready) = (env.kafka(), done.clone(), ready.clone());
        std::thread::spawn(move || raw_latencies(&k, &done, &ready, start_ms))
    };
    while !ready.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer = {
        let (k, marks, done) = (env.kafka(), marks.clone(), done.clone());
        let spec = Spec {
            live: true,
            series: 10_000,
            ..env.spec(2)
        };
        std::thread::spawn(move || {
            let progress = |n: u64| marks.lock().unwrap().push((Instant::now(), n));
            let run = Run {
                kafka: &k,
                events: 400_000,
                rate: 20_000.0,
                stop: Arc::new(AtomicBool::new(false)),
                progress: &progress,
            };
            produce(&run, spec, None).unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut seen: Vec<(Instant, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = env.counted().await.saturating_sub(base);
        seen.push((Instant::now(), n));
        if (done.load(Ordering::SeqCst) && n >= 400_000) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    producer.join().unwrap();
    terminate(&mut speed);
    env.drop_database().await;
    let marks = marks.lock().unwrap().clone();
    let mut latencies: Vec<f64> = marks
        .iter()
        .filter_map(|&(at, n)| {
            seen.iter()
                .find(|&&(_, c)| c >= n)
                .map(|&(t, _)| t.saturating_duration_since(at).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut raw = raw.join().unwrap();
    raw.sort_by(f64::total_cmp);
    let p99 = |v: &[f64]| strata_shared::stats::quantile_cont(v, 0.99).unwrap_or(f64::NAN);
    (p99(&latencies), p99(&raw))
}

/// Produce → receive latency of every message a plain consumer (fresh group) reads until `done`.
fn raw_latencies(
    k: &strata_shared::config::KafkaConfig,
    done: &AtomicBool,
    ready: &AtomicBool,
    start_ms: i64,
) -> Vec<f64> {
    let c: BaseConsumer = kafka::consumer_config(k, &format!("{}-rawfresh", k.topic))
        .create()
        .unwrap();
    c.subscribe(&[&k.topic]).unwrap();
    while c.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        let _ = c.poll(Duration::from_millis(50));
    }
    ready.store(true, Ordering::SeqCst);
    let mut out = Vec::new();
    let mut idle_since = Instant::now();
    while !(done.load(Ordering::SeqCst) && idle_since.elapsed() > Duration::from_secs(3)) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
            idle_since = Instant::now();
            let now = chrono::Utc::now().timestamp_millis();
            if let Ok(e) = serde_json::from_slice::<strata_shared::MetricEvent>(
                rdkafka::Message::payload(&m).unwrap_or_default(),
            ) {
                if e.timestamp_ms >= start_ms {
                    out.push((now - e.timestamp_ms) as f64);
                }
            }
        }
    }
    out
}

/// Peak resident memory of strata-speed once 100k series are live.
async fn rss_at_100k_series() -> f64 {
    let env = TestEnv::new("bench-rss").await;
    let mut speed = env.spawn_speed(
        "rss",
        &[
            ("STRATA__SPEED__MAX_SERIES_PER_METRIC", "20000"),
            ("RUST_LOG", "info"),
        ],
    );
    let (truth, _) = env.produce(
        Spec {
            series: 100_000,
            metrics: 10,
            ..env.spec(3)
        },
        500_000,
        0.0,
    );
    let s = truth.summary();
    assert_eq!(
        env.wait_for_count(s.valid_unique, Duration::from_secs(300))
            .await,
        s.valid_unique
    );
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", speed.id())).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    eprintln!("series live: {}", s.series);
    terminate(&mut speed);
    env.drop_database().await;
    kb / 1024.0
}
