//! `make bench-alerting`: how long an anomaly takes from the pipeline to Alertmanager.
//!
//! The whole pipeline (release build) with a week of seasonal history imported and recomputed,
//! a real vmalert evaluating the anomaly rules (rendered for `shop_latency_avg`, `for` 1 m,
//! evaluation every 15 s) against strata-serving, and a real Alertmanager. Live events flow
//! through Kafka for BENCH_STEADY_S (180) seconds of steady load, then BENCH_ANOMALIES (8) series
//! each get a level shift, their starts spread over a minute; BENCH_STEADY_SERIES (4) series stay
//! steady throughout. Alertmanager is polled every 250 ms.
//!
//! Delay = from the broker's acknowledgement of a series' first anomalous event to the poll that
//! first sees its alert in Alertmanager. The floor is `for` + one evaluation interval (what any
//! rule evaluator needs); Strata adds up to a minute on top, because a minute's level is known
//! when the minute ends (one-minute rollups).
//!
//! Last line: `alert-bench: injected=N delivered=N floor_s=F p50_s=X p99_s=Y false_positives=N`
//! (false positives: alerts on the steady series, over the whole run).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use strata_shared::kafka;
use strata_testkit::env_u64;
use strata_testkit::gen::truth::hour_start;
use strata_tests::alerting::{
    event_json, import_history, render_anomaly_rules, seasonal, Alertmanager, Vmalert, LATENCY,
};
use strata_tests::Pipeline;

const HOUR_MS: i64 = 3_600_000;
const FOR_S: u64 = 60;
const EVERY_S: u64 = 15;

/// When each anomalous series' first anomalous event was acknowledged.
type Started = Arc<Mutex<BTreeMap<String, Instant>>>;

async fn feed(
    producer: FutureProducer,
    topic: String,
    sources: Vec<String>,
    anomalous: Arc<Mutex<BTreeSet<String>>>,
    started: Started,
    from_ms: i64,
) {
    let send = |source: String, t: i64, v: f64| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let body = event_json(LATENCY, &source, t, v);
            producer
                .send(
                    FutureRecord::to(&topic).key(&source).payload(&body),
                    Duration::from_secs(30),
                )
                .await
                .is_ok()
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let mut t = from_ms;
    while t < now - 60_000 {
        for s in &sources {
            send(s.clone(), t + 1_000, seasonal(t, s)).await;
        }
        t += 60_000;
    }
    loop {
        let t = chrono::Utc::now().timestamp_millis();
        let shifted = anomalous.lock().unwrap().clone();
        for s in &sources {
            let on = shifted.contains(s);
            let v = seasonal(t, s) + if on { 400.0 } else { 0.0 };
            let acked = send(s.clone(), t, v).await;
            if on && acked {
                started
                    .lock()
                    .unwrap()
                    .entry(s.clone())
                    .or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_u64("BENCH_ANOMALIES", 8) as usize;
    let steady_n = env_u64("BENCH_STEADY_SERIES", 4) as usize;
    let steady_s = env_u64("BENCH_STEADY_S", 180);
    let vmalert_port = strata_testkit::free_port();
    let rules_url = format!("http://127.0.0.1:{vmalert_port}");
    let p = Pipeline::start(
        "bench_alerting",
        &[("STRATA__SERVING__RULES_URL", &rules_url)],
    )
    .await?;

    let anomalies: Vec<String> = (0..n).map(|i| format!("anomaly_{i}")).collect();
    let steady: Vec<String> = (0..steady_n).map(|i| format!("steady_{i}")).collect();
    let sources: Vec<String> = anomalies.iter().chain(&steady).cloned().collect();
    let series: Vec<(&str, &str)> = sources.iter().map(|s| (LATENCY, s.as_str())).collect();
    let now = chrono::Utc::now().timestamp_millis();
    let h = hour_start(now);
    let t0 = Instant::now();
    let imported = import_history(&p, &series, h - 7 * 24 * HOUR_MS - 2 * HOUR_MS, h).await?;
    eprintln!(
        "history: {imported} events imported and recomputed in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    let rules = p.dir.path().join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(
        rules.join("anomaly.yml"),
        render_anomaly_rules(&["shop_latency_avg"], "1m", &format!("{EVERY_S}s"))?,
    )?;
    let anomalous = Arc::new(Mutex::new(BTreeSet::new()));
    let started: Started = Arc::default();
    let producer: FutureProducer = kafka::producer_config(&p.cfg.kafka).create()?;
    let feeder = tokio::spawn(feed(
        producer,
        p.cfg.kafka.topic.clone(),
        sources.clone(),
        anomalous.clone(),
        started.clone(),
        h,
    ));
    let am = Alertmanager::start().await?;
    let vm = Vmalert::start(
        &p,
        vmalert_port,
        &format!("{}/*.yml", rules.display()),
        &am.url,
        Duration::from_secs(EVERY_S),
    )
    .await?;

    let mut false_positives = BTreeSet::new();
    let mut delivered: BTreeMap<String, f64> = BTreeMap::new();
    let mut poll = async |delivered: &mut BTreeMap<String, f64>| {
        let alerts = am.alerts().await.unwrap_or_default();
        let now = Instant::now();
        for a in alerts {
            let (name, source) = a.key();
            if name != "AnomalousLevel" {
                continue;
            }
            if steady.contains(&source) {
                false_positives.insert(source);
            } else if let Some(t) = started.lock().unwrap().get(&source) {
                delivered
                    .entry(source)
                    .or_insert_with(|| (now - *t).as_secs_f64());
            }
        }
    };

    // Steady load first: nothing may alert.
    let steady_until = Instant::now() + Duration::from_secs(steady_s);
    while Instant::now() < steady_until {
        poll(&mut delivered).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The shifts, their starts spread over a minute.
    let spread = Duration::from_millis(60_000 / n.max(1) as u64);
    let mut next = Instant::now();
    let mut injected = 0;
    let deadline = Instant::now() + Duration::from_secs(420);
    while delivered.len() < n && Instant::now() < deadline {
        if injected < n && Instant::now() >= next {
            anomalous
                .lock()
                .unwrap()
                .insert(anomalies[injected].clone());
            injected += 1;
            next += spread;
        }
        poll(&mut delivered).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    feeder.abort();
    if delivered.len() < n {
        eprintln!("vmalert:\n{}", vm.log_tail());
    }
    let mut delays: Vec<f64> = delivered.values().copied().collect();
    delays.sort_by(f64::total_cmp);
    eprintln!("delays (s): {delays:.1?}");
    println!(
        "alert-bench: injected={injected} delivered={} floor_s={} p50_s={:.1} p99_s={:.1} false_positives={}",
        delivered.len(),
        FOR_S + EVERY_S,
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        false_positives.len()
    );
    Ok(())
}
