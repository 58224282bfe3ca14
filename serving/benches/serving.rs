//! `make bench-serving`: strata-serving against ClickHouse answering the same question directly,
//! on the same machine, in one run.
//!
//! 1. 24 hours of one-minute data for 100 series (BENCH_EVENTS_PER_MINUTE events per series and
//!    minute) go into both layers with the layers' own code: ClickHouse through the speed
//!    layer's rollup writer, the lake through the archive; the batch layer recomputes the first
//!    12 hours, so the time boundary sits in the middle.
//! 2. strata-serving (release build) answers `query_range` of `bench_latency_count` over the 24
//!    hours at a 60 s step (100 series × 1440 points, half from each layer) to BENCH_CLIENTS
//!    (32) concurrent clients for BENCH_SECONDS (30); `BENCH_CLIENTS=1` shows the cost of one
//!    answer without the queueing.
//! 3. The anchor: ClickHouse answers the equivalent rollup SQL (count per series and minute over
//!    the same 24 hours, JSON over HTTP) to as many concurrent clients for as long.
//!
//! Last line: `serving-bench: p50_ms=N p99_ms=N qps=N ch_p99_ms=N vs_ch=R` (vs_ch = p99 ratio).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_batch::archive::schema::ArchivedEvent;
use strata_batch::archive::writer::Archive;
use strata_batch::recompute::recompute;
use strata_shared::{Config, MetricEvent};
use strata_speed::clickhouse::writer::RollupWriter;
use strata_speed::rollup::{Batch, Labels};
use strata_testkit::gen::truth::hour_start;
use strata_testkit::{env_u64, free_port, Proc};

const H: i64 = 3_600_000;
const SERIES: u32 = 100;

#[tokio::main]
async fn main() {
    let per_minute = env_u64("BENCH_EVENTS_PER_MINUTE", 3);
    let seconds = env_u64("BENCH_SECONDS", 30);
    let dir = tempfile::tempdir().unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = Config::load(None).expect("configuration");
    cfg.clickhouse.database = format!("strata_bench_serving_{}", &id[..12]);
    cfg.lake.url = dir.path().join("lake").display().to_string();
    strata_speed::clickhouse::schema::migrate(&cfg.clickhouse)
        .await
        .expect("ClickHouse (run `make up`)");

    // 1. The data.
    let end = hour_start(chrono::Utc::now().timestamp_millis()) - H;
    let start = end - 24 * H;
    let t = Instant::now();
    let writer = RollupWriter::new(&cfg.clickhouse, "bench", Duration::from_secs(1));
    let mut archive = Archive::open(&cfg).await.unwrap();
    let mut offset = 0i64;
    for hour in 0..24 {
        let mut batch = Batch::default();
        let mut events = Vec::new();
        for minute in 0..60 {
            for s in 0..SERIES {
                for k in 0..per_minute {
                    let ts = start
                        + hour * H
                        + minute * 60_000
                        + (k as i64 * 997 + s as i64 * 13) % 60_000;
                    let value = ((s as u64 * 31 + k * 17 + minute as u64 * 7) % 500) as f64 + 0.5;
                    let mut e = MetricEvent::new(
                        &format!("{hour}-{minute}-{s}-{k}"),
                        "bench_latency",
                        value,
                        ts,
                    );
                    e.source = format!("svc-{}", s % 5);
                    e.tags.insert("instance".into(), format!("i-{s:03}"));
                    let labels = || Labels {
                        metric_name: Arc::from("bench_latency"),
                        source: Arc::from(e.source.as_str()),
                        tag_keys: e.tags.keys().cloned().collect::<Vec<_>>().into(),
                        tag_values: e.tags.values().cloned().collect::<Vec<_>>().into(),
                    };
                    batch.add(e.series_id(), ts, value, labels);
                    offset += 1;
                    events.push(ArchivedEvent {
                        event: e,
                        partition: 0,
                        offset,
                    });
                }
            }
        }
        batch.cover(0, offset);
        writer
            .insert_once(&batch)
            .await
            .expect("insert into ClickHouse");
        archive
            .append(&events, &BTreeMap::from([(0, offset)]))
            .await
            .unwrap();
    }
    recompute(&cfg, start, start + 12 * H).await.unwrap();
    eprintln!(
        "loaded {offset} events (24 h × {SERIES} series) into both layers and recomputed 12 h in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // 2. strata-serving.
    let port = free_port();
    let _serving = Proc(
        Command::new(env!("CARGO_BIN_EXE_strata-serving"))
            .env("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "0s")
            .env("STRATA__CLICKHOUSE__DATABASE", &cfg.clickhouse.database)
            .env("STRATA__LAKE__URL", &cfg.lake.url)
            .env("STRATA__SERVING__LISTEN", format!("127.0.0.1:{port}"))
            .env("STRATA__SERVING__PG_LISTEN", "")
            .env("STRATA__SERVING__FLIGHT_LISTEN", "")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("serving.log")).unwrap())
            .spawn()
            .expect("start strata-serving"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
    {
        assert!(Instant::now() < deadline, "strata-serving did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let form = vec![
        ("query".to_owned(), "bench_latency_count".to_owned()),
        ("start".to_owned(), ((start + 60_000) / 1000).to_string()),
        ("end".to_owned(), (end / 1000).to_string()),
        ("step".to_owned(), "60".to_owned()),
    ];
    // One checked answer first: every series, every minute, the boundary in the middle.
    let body: serde_json::Value = http
        .post(format!("{base}/api/v1/query_range"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let result = body["data"]["result"].as_array().expect("a matrix");
    assert_eq!(result.len(), SERIES as usize);
    assert!(result
        .iter()
        .all(|s| s["values"].as_array().unwrap().len() == 1440));
    let serving = {
        let (http, url) = (http.clone(), format!("{base}/api/v1/query_range"));
        load(seconds, move || {
            let (http, url, form) = (http.clone(), url.clone(), form.clone());
            async move {
                let r = http.post(&url).form(&form).send().await.ok()?;
                r.status().is_success().then_some(())?;
                r.bytes().await.ok().map(|_| ())
            }
        })
        .await
    };
    eprintln!(
        "strata-serving: {} answers, p50 {:.1} ms, p99 {:.1} ms, {:.1} qps",
        serving.0.len(),
        serving.1,
        serving.2,
        serving.3
    );

    // 3. ClickHouse directly.
    let sql = format!(
        "SELECT series_id, toUInt32(minute) AS t, sumMerge(cnt) AS c FROM {db}.speed_rollup_1m \
         WHERE metric_name = 'bench_latency' AND minute >= toDateTime({}) AND minute < toDateTime({}) \
         GROUP BY series_id, t ORDER BY series_id, t FORMAT JSON",
        start / 1000,
        end / 1000,
        db = cfg.clickhouse.database
    );
    let ch = {
        let (http, url) = (http.clone(), cfg.clickhouse.url.clone());
        load(seconds, move || {
            let (http, url, sql) = (http.clone(), url.clone(), sql.clone());
            async move {
                let r = http.post(&url).body(sql).send().await.ok()?;
                r.status().is_success().then_some(())?;
                r.bytes().await.ok().map(|_| ())
            }
        })
        .await
    };
    eprintln!(
        "ClickHouse direct: {} answers, p50 {:.1} ms, p99 {:.1} ms, {:.1} qps",
        ch.0.len(),
        ch.1,
        ch.2,
        ch.3
    );
    let _ = strata_shared::clickhouse::server_client(&cfg.clickhouse)
        .query(&format!(
            "DROP DATABASE IF EXISTS {}",
            cfg.clickhouse.database
        ))
        .execute()
        .await;
    println!(
        "serving-bench: p50_ms={:.1} p99_ms={:.1} qps={:.1} ch_p99_ms={:.1} vs_ch={:.2}",
        serving.1,
        serving.2,
        serving.3,
        ch.2,
        serving.2 / ch.2
    );
}

/// BENCH_CLIENTS loops calling `call` for `seconds`: (latencies ms, p50, p99, answers per second).
async fn load<F, Fut>(seconds: u64, call: F) -> (Vec<f64>, f64, f64, f64)
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Option<()>> + Send,
{
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..env_u64("BENCH_CLIENTS", 32) {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                call().await.expect("a successful answer");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    let (p50, p99) = (pct(0.5), pct(0.99));
    let qps = all.len() as f64 / elapsed;
    (all, p50, p99, qps)
}
