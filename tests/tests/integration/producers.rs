//! Real producers none of us wrote, sending to strata-serving's receivers, and what they sent
//! read back through the PromQL API:
//!
//! - Debian's Prometheus scrapes a `prometheus-client` app (counters with a reset, gauges, a
//!   classic histogram; one sample per series and simulated minute, timestamps honoured) and
//!   strata-serving's own /metrics, keeps its own TSDB and remote-writes everything to Strata:
//!   the same PromQL is asked of both and the answers compared — from the speed view, and again
//!   once the batch layer has recomputed the hours from the archive;
//! - the OpenTelemetry Python SDK exports over OTLP/HTTP with cumulative and with delta
//!   temporality;
//! - the `statsd` Python client sends over UDP and TCP.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_testkit::{free_port, Proc};
use strata_tests::{root, Pipeline};

type Labels = BTreeMap<String, String>;
type Matrix = BTreeMap<Labels, Vec<(i64, f64)>>;

const MINUTE: i64 = 60_000;
/// Minutes the prometheus-client app changes its values (the test lasts as long).
const MINUTES: i64 = 9;

fn python() -> Command {
    Command::new(root().join(".strata/venv/bin/python"))
}

/// A Prometheus query (`/api/v1/query` with `time`, or `/api/v1/query_range`) as a matrix:
/// labels → points. An error answer is an `Err` with the body.
async fn ask(
    http: &reqwest::Client,
    base: &str,
    query: &str,
    range: Option<(i64, i64)>,
    at_ms: i64,
) -> Result<Matrix, String> {
    let (path, mut form) = match range {
        Some((start, end)) => (
            "/api/v1/query_range",
            vec![
                ("start", format!("{:.3}", start as f64 / 1000.0)),
                ("end", format!("{:.3}", end as f64 / 1000.0)),
                ("step", "60".to_owned()),
            ],
        ),
        None => (
            "/api/v1/query",
            vec![("time", format!("{:.3}", at_ms as f64 / 1000.0))],
        ),
    };
    form.push(("query", query.to_owned()));
    let body: serde_json::Value = http
        .post(format!("{base}{path}"))
        .form(&form)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(body.to_string());
    }
    let point = |p: &serde_json::Value| {
        let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
        let v: f64 = p[1].as_str().unwrap().parse().unwrap();
        (t, v)
    };
    let mut out = Matrix::new();
    for s in body["data"]["result"].as_array().into_iter().flatten() {
        let labels: Labels = serde_json::from_value(s["metric"].clone()).unwrap();
        let points = match s.get("values") {
            Some(values) => values.as_array().unwrap().iter().map(point).collect(),
            None => vec![point(&s["value"])],
        };
        out.insert(labels, points);
    }
    Ok(out)
}

/// The first difference between two answers (values within 1e-9 relative), if any.
fn differ(want: &Matrix, got: &Matrix) -> Option<String> {
    if want.keys().ne(got.keys()) {
        return Some(format!(
            "series differ:\n  prometheus {:?}\n  strata     {:?}",
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>()
        ));
    }
    for (labels, w) in want {
        let g = &got[labels];
        let same = w.len() == g.len()
            && w.iter().zip(g).all(|(a, b)| {
                a.0 == b.0
                    && ((a.1.is_nan() && b.1.is_nan())
                        || (a.1 - b.1).abs() <= 1e-9 * a.1.abs().max(b.1.abs()).max(1.0))
            });
        if !same {
            return Some(format!(
                "{labels:?}:\n  prometheus {w:?}\n  strata     {g:?}"
            ));
        }
    }
    None
}

/// Debian's Prometheus scraping `targets` (job → host:port) every second and remote-writing to
/// `write_url`, keeping its own TSDB under `dir`.
fn scraping_prometheus(
    dir: &std::path::Path,
    targets: &[(&str, String)],
    write_url: &str,
) -> (Proc, String) {
    let mut yml =
        String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n");
    for (job, target) in targets {
        yml.push_str(&format!(
            "  - job_name: {job}\n    honor_timestamps: true\n    static_configs:\n      - targets: ['{target}']\n"
        ));
    }
    yml.push_str(&format!(
        "remote_write:\n  - url: {write_url}\n    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 2s\n"
    ));
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, yml).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (installed by `make up`)");
    (Proc(child), format!("http://127.0.0.1:{port}"))
}

/// Polls until `check` passes, up to `within`; the last failure otherwise.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Asks both servers `queries` over `range` and returns every difference.
async fn compare(
    http: &reqwest::Client,
    prometheus: &str,
    strata: &str,
    queries: &[&str],
    range: (i64, i64),
) -> Result<(), String> {
    let mut diffs = Vec::new();
    for q in queries {
        let want = ask(http, prometheus, q, Some(range), 0).await?;
        if want.is_empty() {
            diffs.push(format!(
                "{q}: Prometheus has no answer (the test's data is missing)"
            ));
            continue;
        }
        match ask(http, strata, q, Some(range), 0).await {
            Ok(got) => {
                if let Some(d) = differ(&want, &got) {
                    diffs.push(format!("{q}: {d}"));
                }
            }
            Err(e) => diffs.push(format!("{q}: strata refused: {e}")),
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_remote_writing_to_strata_answers_as_its_own_tsdb() {
    let _heavy = strata_testkit::heavy().await;
    let p = Pipeline::start("remote_write", &[]).await.unwrap();
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp_millis();
    // In real time (Prometheus remote-writes nothing older than its own start, and its head
    // takes nothing far from its newest sample), from the next minute on.
    let sim_start = now.div_euclid(MINUTE) * MINUTE + MINUTE;

    let sim_port = free_port();
    let mut sim = Command::new(root().join(".strata/venv/bin/python"))
        .arg(root().join("tests/producers/sim_target.py"))
        .args([
            sim_port.to_string(),
            sim_start.to_string(),
            MINUTES.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the venv's python (run `make up`)");
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let _sim = Proc(sim);
    let serving = p.serving_url.trim_start_matches("http://").to_owned();
    let (_prom, prom) = scraping_prometheus(
        p.dir.path(),
        &[
            ("sim", format!("127.0.0.1:{sim_port}")),
            ("strata", serving),
        ],
        &format!("{}/api/v1/write", p.serving_url),
    );

    // Points whose 5-minute windows hold the series from its first sample on: at a counter's
    // first minutes Prometheus 2.42 and Strata (Prometheus 3's rules) extrapolate its start
    // differently (e.g. rate at t0 + 2 min), a difference of versions, not of data.
    let range = (sim_start + 6 * MINUTE, sim_start + MINUTES * MINUTE);
    let queries = [
        "app_requests_total",
        "app_temperature_celsius",
        "rate(app_requests_total[5m])",
        "increase(app_requests_total[3m])",
        "resets(app_requests_total[10m])",
        "sum by (route) (rate(app_requests_total[5m]))",
        "max_over_time(app_temperature_celsius[5m])",
        "avg_over_time(app_temperature_celsius[4m])",
        "delta(app_temperature_celsius[5m])",
        "app_temperature_celsius offset 3m",
        "histogram_quantile(0.9, sum by (le, route) (rate(app_latency_seconds_bucket[5m])))",
        "rate(app_latency_seconds_sum[5m]) / rate(app_latency_seconds_count[5m])",
        "app_latency_seconds_bucket{le=\"0.5\"}",
    ];
    // Prometheus holds every minute once the app has shown the last one.
    let wait = (sim_start + MINUTES * MINUTE - chrono::Utc::now().timestamp_millis()) / 1000;
    tokio::time::sleep(Duration::from_secs(wait.max(0) as u64)).await;
    eventually(Duration::from_secs(90), || async {
        let at = sim_start + MINUTES * MINUTE;
        let last = ask(&http, &prom, "timestamp(app_temperature_celsius)", None, at).await?;
        let want = ((sim_start + (MINUTES - 1) * MINUTE + 500) as f64) / 1000.0;
        match last.values().next() {
            Some(v) if (v[0].1 - want).abs() < 1e-6 => Ok(()),
            other => Err(format!("prometheus is at {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "Prometheus did not scrape the simulated app: {e}\n{}",
            std::fs::read_to_string(p.dir.path().join("prometheus.log")).unwrap_or_default()
        )
    });
    eventually(Duration::from_secs(90), || {
        compare(&http, &prom, &p.serving_url, &queries, range)
    })
    .await
    .unwrap_or_else(|e| panic!("speed view:\n{e}\n{}", p.logs()));

    // Strata's own /metrics, scraped in real time: the same counters at a minute both hold.
    let t = chrono::Utc::now().timestamp_millis().div_euclid(MINUTE) * MINUTE;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let own = "strata_serving_ingest_samples_total{job=\"strata\"}";
    eventually(Duration::from_secs(60), || async {
        let want = ask(&http, &prom, own, None, t).await?;
        let stamps = ask(&http, &prom, &format!("timestamp({own})"), None, t).await?;
        if want.is_empty() {
            return Err("prometheus has no strata_serving_ingest_samples_total".into());
        }
        // A sample exactly on the minute is the next minute's in Strata: none expected, but
        // such a series would be compared wrongly, so it is left out.
        let on_the_minute = stamps
            .values()
            .any(|v| (v[0].1 * 1000.0).round() as i64 == t);
        if on_the_minute {
            return Ok(());
        }
        let got = ask(&http, &p.serving_url, own, None, t).await?;
        differ(&want, &got).map_or(Ok(()), Err)
    })
    .await
    .unwrap_or_else(|e| panic!("strata's own /metrics at {t}:\n{e}"));

    // The batch layer recomputes the hours from the archive: the answers stay the same.
    let from = range.0.div_euclid(3_600_000) * 3_600_000;
    let to = (range.1.div_euclid(3_600_000) + 1) * 3_600_000;
    strata_batch::recompute::recompute(&p.cfg, from, to)
        .await
        .expect("recompute the simulated hours");
    tokio::time::sleep(Duration::from_secs(3)).await;
    eventually(Duration::from_secs(30), || {
        compare(&http, &prom, &p.serving_url, &queries, range)
    })
    .await
    .unwrap_or_else(|e| panic!("after the recompute:\n{e}"));
}

/// One instant value of `query` from Strata (the only series), or why not.
async fn one(http: &reqwest::Client, base: &str, query: &str) -> Result<f64, String> {
    let now = chrono::Utc::now().timestamp_millis() + 1000;
    let got = ask(http, base, query, None, now).await?;
    match got.values().collect::<Vec<_>>()[..] {
        [v] => Ok(v[0].1),
        ref other => Err(format!("{query}: {} series: {got:?}", other.len())),
    }
}

/// Every `(query, want)` answered with `want` (1e-9), eventually.
async fn expect_values(http: &reqwest::Client, base: &str, checks: &[(String, f64)]) {
    eventually(Duration::from_secs(60), || async {
        let mut bad = Vec::new();
        for (q, want) in checks {
            match one(http, base, q).await {
                Ok(v) if (v - want).abs() <= 1e-9 * want.abs().max(1.0) => {}
                Ok(v) => bad.push(format!("{q} = {v}, want {want}")),
                Err(e) => bad.push(e),
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("\n"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn opentelemetry_and_statsd_clients_are_answered_by_promql() {
    let _heavy = strata_testkit::heavy().await;
    let (udp, tcp) = (free_port(), free_port());
    let udp_addr = format!("127.0.0.1:{udp}");
    let tcp_addr = format!("127.0.0.1:{tcp}");
    let p = Pipeline::start(
        "otel_statsd",
        &[
            ("STRATA__INGEST__STATSD_UDP_LISTEN", &udp_addr),
            ("STRATA__INGEST__STATSD_TCP_LISTEN", &tcp_addr),
            ("STRATA__INGEST__STATSD_FLUSH_INTERVAL", "1s"),
        ],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let base = p.serving_url.as_str();

    for temporality in ["cumulative", "delta"] {
        let out = python()
            .arg(root().join("tests/producers/otel_app.py"))
            .args([format!("{base}/v1/metrics"), temporality.to_owned()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "otel_app.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(sent["exported"], true, "the SDK's exports failed: {sent}");
    }
    let job = |t: &str| format!("job=\"shop-{t}\",instance=\"i-1\"");
    let c = job("cumulative");
    let d = job("delta");
    let checks: Vec<(String, f64)> = vec![
        // Cumulative: sample series, the newest sample by a plain selector.
        (format!("shop_orders_total{{{c},region=\"eu\"}}"), 13.0),
        (format!("shop_orders_total{{{c},region=\"us\"}}"), 4.0),
        (format!("shop_queue{{{c}}}"), 5.0),
        (
            format!("shop_temperature_celsius{{{c},room=\"store\"}}"),
            22.0,
        ),
        (format!("shop_latency_milliseconds_count{{{c}}}"), 4.0),
        (format!("shop_latency_milliseconds_sum{{{c}}}"), 575.0),
        (
            format!("shop_latency_milliseconds_bucket{{{c},le=\"100\"}}"),
            3.0,
        ),
        // Prometheus' interpolation: rank 2 of 4 lies in (10, 100], which holds ranks 2 and 3.
        (
            format!("histogram_quantile(0.5, shop_latency_milliseconds_bucket{{{c}}})"),
            10.0 + 90.0 * (2.0 - 1.0) / 2.0,
        ),
        // Delta: events of the increments, totalled over a window.
        (
            format!("increase(shop_orders_sum{{{d},region=\"eu\"}}[10m])"),
            13.0,
        ),
        (
            format!("increase(shop_latency_milliseconds_count_sum{{{d}}}[10m])"),
            4.0,
        ),
        (
            format!("increase(shop_latency_milliseconds_sum_sum{{{d}}}[10m])"),
            575.0,
        ),
        (
            format!("shop_temperature_celsius{{{d},room=\"store\"}}"),
            22.0,
        ),
    ];
    expect_values(&http, base, &checks).await;

    let out = python()
        .arg(root().join("tests/producers/statsd_app.py"))
        .args(["127.0.0.1".to_owned(), udp.to_string(), tcp.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "statsd_app.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: Vec<(String, f64)> = vec![
        ("increase(shop_checkout_sum[10m])".into(), 15.0),
        ("increase(shop_pipelined_sum[10m])".into(), 5.0),
        ("increase(shop_tcp_orders_sum[10m])".into(), 10.0),
        ("shop_stock".into(), 37.0),
        ("shop_visitors".into(), 3.0),
        ("increase(shop_render_count[10m])".into(), 4.0),
        ("increase(shop_render_sum[10m])".into(), 100.0),
        ("max_over_time(shop_render_max[10m])".into(), 40.0),
    ];
    expect_values(&http, base, &checks).await;

    // A line StatsD cannot read is in the dead-letter topic, not lost.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"shop.broken:abc|c", &udp_addr).unwrap();
    let dlq = dead_letters(&p, |payload| payload.contains("shop.broken"));
    assert!(
        dlq.iter().any(|(_, reason)| reason == "bad_statsd"),
        "{dlq:?}"
    );
}

/// The dead letters (payload, reason) of the pipeline's dead-letter topic, read until one
/// satisfies `wanted` or 30 s passed.
fn dead_letters(p: &Pipeline, wanted: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::Message as _;
    let group = format!("{}-check", p.cfg.kafka.dlq_topic);
    let c: BaseConsumer = strata_shared::kafka::consumer_config(&p.cfg.kafka, &group)
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[&p.cfg.kafka.dlq_topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !out.iter().any(|(m, _): &(String, String)| wanted(m)) {
        let Some(Ok(msg)) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let reason = msg
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "strata.reason"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let payload = String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned();
        out.push((payload, reason));
    }
    out
}
