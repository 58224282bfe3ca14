//! The whole pipeline against the generator's ground truth: strata-gen's load (duplicates, late
//! and malformed messages) → broker → strata-speed and the archiver → scheduled recomputes →
//! strata-serving. Answers through the Prometheus API and the JSON API are exact where
//! batch-covered and within the t-digest's rank error where speed-only; duplicates count once;
//! late events for an already recomputed hour show up once the schedule recomputes that dirty
//! hour; every malformed message is in the dead-letter topic with its reason.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message as _;
use strata_serving::series::series_id_of as series_id;
use strata_shared::codec::{encode, Encoding};
use strata_shared::kafka;
use strata_shared::stats::QUANTILES;
use strata_testkit::gen::produce::{produce, Run};
use strata_testkit::gen::truth::{hour_start, Truth};
use strata_testkit::gen::{Format, Generator, Kind, Spec};
use strata_tests::Pipeline;

const H: i64 = 3_600_000;

/// A range query through the Prometheus API: (labels, [(t_ms, value)]) per series, warnings.
async fn range(
    http: &reqwest::Client,
    base: &str,
    query: &str,
    start_ms: i64,
    end_ms: i64,
    step_s: i64,
) -> Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)> {
    let body: serde_json::Value = http
        .post(format!("{base}/api/v1/query_range"))
        .form(&[
            ("query", query.to_owned()),
            ("start", (start_ms / 1000).to_string()),
            ("end", (end_ms / 1000).to_string()),
            ("step", step_s.to_string()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "success", "{query}: {body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = serde_json::from_value(s["metric"].clone()).unwrap();
            let points = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                        p[1].as_str().unwrap().parse::<f64>().unwrap(),
                    )
                })
                .collect();
            (labels, points)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_load_comes_back_exact_through_both_apis() {
    // Runs a whole pipeline or loads both cores: never beside another such test.
    let _heavy = strata_testkit::heavy().await;
    let p = Pipeline::start("e2e", &[("STRATA__BATCH__SCHEDULE_CLOSED_HOURS", "12")])
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp_millis();
    let spec = Spec {
        base_time_ms: now,
        spread_ms: 2 * H,
        series: 30,
        metrics: 3,
        format: Format::Mixed,
        duplicate_ratio: 0.03,
        late_ratio: 0.02,
        malformed_ratio: 0.02,
        seed: 2026,
        ..Spec::default()
    };
    let events = 20_000u64;
    let mut truth = Truth::new(Some(spec.clone()));
    let mut values: HashMap<(u64, i64), Vec<f64>> = HashMap::new();
    let mut seen = HashSet::new();
    for m in Generator::new(spec.clone()).take(events as usize) {
        truth.record(&m);
        if let (false, Some(e)) = (matches!(m.kind, Kind::Malformed(_)), &m.event) {
            if seen.insert(e.event_id.clone()) {
                values
                    .entry((e.series_id(), e.timestamp_ms.div_euclid(60_000) * 60_000))
                    .or_default()
                    .push(e.value);
            }
        }
    }
    for v in values.values_mut() {
        v.sort_by(f64::total_cmp);
    }
    let run = Run {
        kafka: &p.cfg.kafka,
        events,
        rate: 0.0,
        stop: Default::default(),
        progress: &|_| {},
    };
    let report = produce(&run, spec, None).unwrap();
    assert_eq!(report.delivered, events);
    let summary = truth.summary();
    let rows = truth.rows();
    let truth_1m: HashMap<(u64, i64), _> = rows
        .iter()
        .filter(|r| r.tier == "1m")
        .map(|r| ((r.series_id, r.start_ms), r))
        .collect();
    let first = rows.iter().map(|r| r.start_ms).min().unwrap();
    let end = (now.div_euclid(60_000) + 1) * 60_000;
    let last_closed = hour_start(now) - H;

    // Wait until both layers hold everything: the per-minute counts through the API equal the
    // truth, and every closed hour with data is batch-covered.
    let metrics: Vec<String> = (0..3).map(strata_testkit::gen::metric_name).collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mut total = 0.0;
        for m in &metrics {
            let query = format!("sum({m}_count)");
            let (from, to) = (hour_start(first) + H, hour_start(now) + H);
            for (_, pts) in range(&http, &p.serving_url, &query, from, to, 3600).await {
                total += pts.iter().map(|(_, v)| v).sum::<f64>();
            }
        }
        let body: serde_json::Value = http
            .get(format!("{}/api/v1/metrics", p.serving_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let boundary = body["data"]["boundary_ms"].as_i64().unwrap_or(0);
        if total as u64 == summary.valid_unique && boundary >= last_closed + H {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not everything arrived: {total} of {} events, boundary {boundary}\n{}",
            summary.valid_unique,
            p.logs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Per minute, per series: counts and sums exact everywhere; quantiles exact where batch
    // covered, close (by rank) where speed-only.
    for m in &metrics {
        let mut points = 0;
        for (labels, pts) in range(
            &http,
            &p.serving_url,
            &format!("{m}_count"),
            first + 60_000,
            end,
            60,
        )
        .await
        {
            let id = series_id(m, &labels);
            for (t, v) in pts {
                assert_eq!(
                    v as u64,
                    truth_1m[&(id, t - 60_000)].stats.count,
                    "{m} {id} {t}"
                );
                points += 1;
            }
        }
        let want = rows
            .iter()
            .filter(|r| r.tier == "1m" && &r.labels.metric_name == m)
            .count();
        assert_eq!(points, want, "{m}: every minute once");
        for (qi, q) in QUANTILES.iter().enumerate() {
            let query = format!("{m}{{quantile=\"{q}\"}}");
            for (labels, pts) in range(&http, &p.serving_url, &query, first + 60_000, end, 60).await
            {
                let id = series_id(m, &labels);
                for (t, v) in pts {
                    let minute = t - 60_000;
                    let exact = truth_1m[&(id, minute)].stats.quantiles[qi];
                    if hour_start(minute) <= last_closed {
                        assert_eq!(v, exact, "batch p{q} of {m} {id} at {t}");
                    } else {
                        let vals = &values[&(id, minute)];
                        let n = vals.len() as f64;
                        let pos = q * (n - 1.0);
                        let slack = (0.02 * n).max(2.0);
                        let lo = vals[(pos - slack).floor().max(0.0) as usize];
                        let hi = vals[(pos + slack).ceil().min(n - 1.0) as usize];
                        assert!(
                            lo <= v && v <= hi,
                            "speed p{q} of {m} at {t}: {v} ∉ [{lo}, {hi}]"
                        );
                    }
                }
            }
        }
    }

    // The JSON API: per source and hour, with provenance.
    let m = &metrics[0];
    let body: serde_json::Value = http
        .get(format!("{}/api/v1/timeseries", p.serving_url))
        .query(&[
            ("metric", m.as_str()),
            ("stat", "count"),
            ("start", &((hour_start(first) + H) / 1000).to_string()),
            ("end", &((hour_start(now) + H) / 1000).to_string()),
            ("step", "3600"),
            ("group_by", "source"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
    for g in body["data"]["series"].as_array().unwrap() {
        let total: f64 = g["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_f64().unwrap())
            .sum();
        by_source.insert(
            g["group"]["source"].as_str().unwrap().to_owned(),
            total as u64,
        );
    }
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.tier == "1h" && &r.labels.metric_name == m)
    {
        *want.entry(r.labels.source.clone()).or_default() += r.stats.count;
    }
    assert_eq!(by_source, want);
    let layers: HashSet<&str> = body["data"]["provenance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["layer"].as_str().unwrap())
        .collect();
    assert_eq!(layers, HashSet::from(["batch", "speed"]));

    // Late events for a recomputed hour: they appear once the schedule recomputes it.
    let hour = last_closed;
    let before: f64 = range(
        &http,
        &p.serving_url,
        &format!("sum({m}_count)"),
        hour + H,
        hour + H,
        3600,
    )
    .await
    .first()
    .map_or(0.0, |(_, pts)| pts[0].1);
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka::producer_config(&p.cfg.kafka).create().unwrap();
    let late = 50;
    for i in 0..late {
        let mut e = strata_shared::MetricEvent::new(&format!("late-{i}"), m, 1.0, hour + 1000 * i);
        e.source = "late-producer".into();
        let payload = encode(&e, Encoding::Json);
        producer
            .send(
                BaseRecord::to(&p.cfg.kafka.topic)
                    .key(m.as_str())
                    .payload(&payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now_v: f64 = range(
            &http,
            &p.serving_url,
            &format!("sum({m}_count)"),
            hour + H,
            hour + H,
            3600,
        )
        .await
        .first()
        .map_or(0.0, |(_, pts)| pts[0].1);
        if now_v as u64 == before as u64 + late as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "late events not recomputed: {now_v} vs {before}+{late}\n{}",
            p.logs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Every malformed message is in the dead-letter topic, with its reason.
    let c: BaseConsumer =
        kafka::consumer_config(&p.cfg.kafka, &format!("{}-check", p.cfg.kafka.dlq_topic))
            .create()
            .unwrap();
    c.subscribe(&[&p.cfg.kafka.dlq_topic]).unwrap();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let want_dlq: u64 = summary.malformed.values().sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reasons.values().sum::<u64>() < want_dlq && Instant::now() < deadline {
        if let Some(Ok(msg)) = c.poll(Duration::from_millis(200)) {
            let reason = msg
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "strata.reason"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            *reasons.entry(reason).or_default() += 1;
        }
    }
    assert_eq!(reasons, summary.malformed, "dead letters by reason");
}
