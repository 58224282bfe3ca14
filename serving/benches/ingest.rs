//! `make bench-ingest`: the receivers against producing straight to Kafka, same samples, same
//! broker, one run.
//!
//! BENCH_SAMPLES (300,000) samples of BENCH_SERIES (1,000) gauge series are sent three ways:
//!
//! 1. the anchor: Strata's own producer settings (`acks=all`, idempotence, zstd) produce them as
//!    Protobuf events to a topic, every delivery awaited;
//! 2. Prometheus remote write 1.0 to strata-serving (release build): requests of 2,000 samples
//!    (Prometheus' `max_samples_per_send`), snappy-compressed, BENCH_CONCURRENCY (4) in flight;
//! 3. OTLP/HTTP protobuf to the same server, the same request size and concurrency.
//!
//! Requests and payloads are encoded before the clock starts (that is the client's work); a
//! receiver's time includes decoding, validation, event encoding and the broker's
//! acknowledgements. 429/503 answers are retried after their `Retry-After`, as clients do.
//!
//! Last line: `ingest-bench: samples=N rw_sps=N otlp_sps=N kafka_sps=N vs_kafka=R rss_mb=N`
//! (vs_kafka = the slower receiver's rate / the direct rate; rss_mb = strata-serving's peak
//! resident memory, bounded by `ingest.max_in_flight`).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use strata_serving::ingest::remote_write::prompb;
use strata_serving::ingest::sample_event;
use strata_shared::codec::{encode, Encoding};
use strata_shared::{kafka, Config};
use strata_testkit::{env_u64, free_port, Proc};

const PER_REQUEST: usize = 2_000;

/// One sample: (series index, Unix ms, value).
type Point = (u64, i64, f64);

fn points(samples: u64, series: u64, base_ms: i64) -> Vec<Point> {
    (0..samples)
        .map(|i| {
            let s = i % series;
            let k = (i / series) as i64;
            (s, base_ms + k * 15_000, (i % 977) as f64 + 0.25)
        })
        .collect()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

fn remote_write_bodies(points: &[Point]) -> Vec<Vec<u8>> {
    points
        .chunks(PER_REQUEST)
        .map(|chunk| {
            let mut by_series: BTreeMap<u64, Vec<prompb::Sample>> = BTreeMap::new();
            for &(s, t, v) in chunk {
                by_series.entry(s).or_default().push(prompb::Sample {
                    value: v,
                    timestamp: t,
                });
            }
            let label = |n: &str, v: String| prompb::Label {
                name: n.into(),
                value: v,
            };
            let req = prompb::WriteRequest {
                timeseries: by_series
                    .into_iter()
                    .map(|(s, samples)| prompb::TimeSeries {
                        labels: vec![
                            label("__name__", "bench_rw_gauge".into()),
                            label("instance", format!("i-{s:04}")),
                            label("job", "bench".into()),
                        ],
                        samples,
                        histograms: Vec::new(),
                    })
                    .collect(),
            };
            snap::raw::Encoder::new()
                .compress_vec(&req.encode_to_vec())
                .expect("snappy")
        })
        .collect()
}

fn otlp_bodies(points: &[Point]) -> Vec<Vec<u8>> {
    points
        .chunks(PER_REQUEST)
        .map(|chunk| {
            let data_points = chunk
                .iter()
                .map(|&(s, t, v)| NumberDataPoint {
                    attributes: vec![kv("instance", &format!("i-{s:04}"))],
                    time_unix_nano: t as u64 * 1_000_000,
                    value: Some(number_data_point::Value::AsDouble(v)),
                    ..Default::default()
                })
                .collect();
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", "bench")],
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![Metric {
                            name: "bench.otlp.gauge".into(),
                            data: Some(metric::Data::Gauge(Gauge { data_points })),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        })
        .collect()
}

/// POSTs every body (`concurrency` at a time), retrying 429/503; returns the seconds taken.
async fn send_all(
    http: &reqwest::Client,
    url: &str,
    content_type: &str,
    extra: Option<(&str, &str)>,
    bodies: Vec<Vec<u8>>,
    concurrency: usize,
) -> f64 {
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, queue) = (http.clone(), url.to_owned(), queue.clone());
        let ct = content_type.to_owned();
        let extra = extra.map(|(k, v)| (k.to_owned(), v.to_owned()));
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    return;
                };
                loop {
                    let mut req = http
                        .post(&url)
                        .header("content-type", &ct)
                        .body(body.clone());
                    if let Some((k, v)) = &extra {
                        req = req.header(k, v);
                    }
                    let r = req.send().await.expect("strata-serving answers");
                    let status = r.status();
                    if status.is_success() {
                        break;
                    }
                    assert!(
                        status.as_u16() == 429 || status.as_u16() == 503,
                        "{url}: {status} {}",
                        r.text().await.unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    t.elapsed().as_secs_f64()
}

fn peak_rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

#[tokio::main]
async fn main() {
    let samples = env_u64("BENCH_SAMPLES", 300_000);
    let series = env_u64("BENCH_SERIES", 1_000);
    let concurrency = env_u64("BENCH_CONCURRENCY", 4) as usize;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = Config::load(None).expect("configuration");
    cfg.kafka.topic = format!("strata-bench-ingest-{id}");
    cfg.kafka.dlq_topic = format!("strata-bench-ingest-{id}-dlq");
    kafka::create_topics(
        &cfg.kafka,
        &[(&cfg.kafka.topic, 12), (&cfg.kafka.dlq_topic, 1)],
    )
    .await
    .expect("create topics (run `make up`)");
    let base_ms = chrono::Utc::now().timestamp_millis() - 24 * 3_600_000;

    // 1. The anchor: the same samples as events, produced directly.
    let direct: Vec<(String, Vec<u8>)> = points(samples, series, base_ms)
        .iter()
        .map(|&(s, t, v)| {
            let labels = BTreeMap::from([
                ("__name__".to_owned(), "bench_kafka_gauge".to_owned()),
                ("instance".to_owned(), format!("i-{s:04}")),
                ("job".to_owned(), "bench".to_owned()),
            ]);
            let e = sample_event(&labels, t, v);
            (e.metric_name.clone(), encode(&e, Encoding::Protobuf))
        })
        .collect();
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create().unwrap();
    let t = Instant::now();
    let mut deliveries = Vec::with_capacity(direct.len());
    for (key, payload) in &direct {
        loop {
            match producer.send_result(FutureRecord::to(&cfg.kafka.topic).key(key).payload(payload))
            {
                Ok(f) => {
                    deliveries.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    for f in deliveries {
        f.await.unwrap().expect("delivered");
    }
    let kafka_s = t.elapsed().as_secs_f64();
    eprintln!("direct: {samples} events in {kafka_s:.2}s");

    // 2. and 3. strata-serving's receivers.
    let port = free_port();
    let log = std::env::temp_dir().join(format!("bench-ingest-{id}.log"));
    let serving = Proc(
        Command::new(env!("CARGO_BIN_EXE_strata-serving"))
            .env("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "0s")
            .env("STRATA__KAFKA__TOPIC", &cfg.kafka.topic)
            .env("STRATA__KAFKA__DLQ_TOPIC", &cfg.kafka.dlq_topic)
            .env("STRATA__SERVING__LISTEN", format!("127.0.0.1:{port}"))
            .env("STRATA__SERVING__PG_LISTEN", "")
            .env("STRATA__SERVING__FLIGHT_LISTEN", "")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start strata-serving"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "strata-serving did not start: {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pts = points(samples, series, base_ms);
    let rw_s = send_all(
        &http,
        &format!("{base}/api/v1/write"),
        "application/x-protobuf",
        Some(("content-encoding", "snappy")),
        remote_write_bodies(&pts),
        concurrency,
    )
    .await;
    eprintln!("remote write: {samples} samples in {rw_s:.2}s");
    let otlp_s = send_all(
        &http,
        &format!("{base}/v1/metrics"),
        "application/x-protobuf",
        None,
        otlp_bodies(&pts),
        concurrency,
    )
    .await;
    eprintln!("otlp: {samples} samples in {otlp_s:.2}s");
    let rss = peak_rss_mb(serving.0.id());
    drop(serving);

    let sps = |s: f64| samples as f64 / s;
    let (rw, otlp, direct) = (sps(rw_s), sps(otlp_s), sps(kafka_s));
    println!(
        "ingest-bench: samples={samples} rw_sps={rw:.0} otlp_sps={otlp:.0} kafka_sps={direct:.0} vs_kafka={:.2} rss_mb={rss}",
        rw.min(otlp) / direct
    );
}
