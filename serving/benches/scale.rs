//! `make bench-scale`: the same dashboard query against batch views of two sizes, to show that
//! memory, start-up and latency are set by configuration and by the query, not by the history.
//!
//! S: metric `bench_latency`, 100 series over 7 days — about 1M minute rows. L: the same, plus
//! 12 other metrics of 100 series, over 28 days — over 50M minute rows (BENCH_SCALE_L_DAYS,
//! BENCH_SCALE_L_METRICS). Both are written with the batch layer's own commit code (sorted by
//! metric, small row groups, page indexes) into a local lake folder. For each size a fresh
//! strata-serving (release build, default block cache, results cache off so every answer reads
//! the batch views) starts; `ready_s` is the time from its start to its first merged answer.
//! Then BENCH_CLIENTS (4) clients ask for BENCH_SECONDS (20) `sum by (source)
//! (rate(bench_latency_count[5m]))` over a 6 h window at a 60 s step, each window starting at a
//! random minute of the last 7 days (so blocks are read cold as well as from the cache).
//!
//! Last line: `scale-bench: rows_s=N rows_l=N p99_s_ms=N p99_l_ms=N growth=R rss_mb_l=N
//! ready_s_l=N` (growth = p99_l / p99_s; goals: growth ≤ 1.5, rss_mb_l ≤ 256, ready_s_l ≤ 5).

mod common;

use std::time::{Duration, Instant};

use common::{form, pct, write_views, Family, DAY, H};
use strata_testkit::env_u64;

const QUERY: &str = "sum by (source) (rate(bench_latency_count[5m]))";

struct Run {
    rows: usize,
    p50: f64,
    p99: f64,
    answers: usize,
    rss_mb: f64,
    ready_s: f64,
}

async fn run(name: &str, families: &[Family], days: i64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::bench_config(name, dir.path());
    let end = strata_testkit::gen::truth::hour_start(chrono::Utc::now().timestamp_millis())
        .div_euclid(DAY)
        * DAY;
    let t = Instant::now();
    let (minute_rows, hour_rows) = write_views(&cfg, families, end - days * DAY, end).await;
    eprintln!(
        "{name}: {minute_rows} minute rows and {hour_rows} hour rows written in {:.0}s ({:.0} MB on disk)",
        t.elapsed().as_secs_f64(),
        dir_size(dir.path()) as f64 / 1e6
    );
    strata_speed::clickhouse::schema::migrate(&cfg.clickhouse)
        .await
        .expect("ClickHouse (run `make up`)");
    let started = Instant::now();
    let serving = common::Serving::start(
        &cfg,
        dir.path(),
        &[("STRATA__SERVING__RESULTS_CACHE_BYTES", "0")],
    );
    let first = form(QUERY, end - 6 * H, end, 60);
    let ready = serving.ready(started, &first).await;
    let seconds = env_u64("BENCH_SECONDS", 20);
    let clients = env_u64("BENCH_CLIENTS", 4);
    let until = Instant::now() + Duration::from_secs(seconds);
    let serving = std::sync::Arc::new(serving);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let serving = serving.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut x = 0x2545_f491_4f6c_dd1d_u64 ^ c;
            while Instant::now() < until {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let minutes = 7 * 24 * 60 - 6 * 60;
                let start = end - 7 * DAY + (x % minutes) as i64 * 60_000;
                let t = Instant::now();
                serving
                    .range(&form(QUERY, start, start + 6 * H, 60))
                    .await
                    .expect("an answer");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_by(f64::total_cmp);
    let run = Run {
        rows: minute_rows,
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        answers: lat.len(),
        rss_mb: serving.peak_rss_mb(),
        ready_s: ready.as_secs_f64(),
    };
    eprintln!(
        "{name}: ready in {:.2}s; {} answers, p50 {:.1} ms, p99 {:.1} ms; peak RSS {:.0} MB",
        run.ready_s, run.answers, run.p50, run.p99, run.rss_mb
    );
    common::drop_database(&cfg);
    run
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let dashboard = Family::new("bench_latency", 100);
    let small = run("scale_s", std::slice::from_ref(&dashboard), 7).await;
    let mut families = vec![dashboard];
    for m in 0..env_u64("BENCH_SCALE_L_METRICS", 12) {
        families.push(Family::new(&format!("other_metric_{m:02}"), 100));
    }
    let large = run(
        "scale_l",
        &families,
        env_u64("BENCH_SCALE_L_DAYS", 28) as i64,
    )
    .await;
    println!(
        "scale-bench: rows_s={} rows_l={} p99_s_ms={:.1} p99_l_ms={:.1} growth={:.2} rss_mb_l={:.0} ready_s_l={:.2}",
        small.rows,
        large.rows,
        small.p99,
        large.p99,
        large.p99 / small.p99,
        large.rss_mb,
        large.ready_s
    );
}
