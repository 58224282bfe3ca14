//! `make bench-dashboard`: the provisioned *Strata overview* dashboard
//! (`infra/grafana/dashboards/strata.json`) as Grafana's Prometheus data source asks for it,
//! viewed by BENCH_VIEWERS (16) people whose dashboards refresh at the same moment.
//!
//! Data: metric `http_request_duration_ms` (the dashboard's default), 100 series. The batch
//! views hold 7 days up to the last closed hour (written with the batch layer's commit code);
//! ClickHouse holds the last hours (written with the speed layer's writer), so every answer
//! merges both. Half the viewers look at the last 6 hours, half at the last 7 days. A refresh of
//! one viewer is what Grafana sends: the `label_values(__name__)` variable, then every panel's
//! query as a `query_range` form with start and end aligned to the step (6 h: 60 s step, rate
//! window 4m; 7 d: 10 m step, rate window 11m), all at once. BENCH_ROUNDS (100) refreshes of all
//! viewers run back to back against one strata-serving (release build, default caches).
//!
//! Last line: `dashboard-bench: p50_ms=N p99_ms=N cached_p99_ms=N` over every request, and over
//! the refreshes after the first (goal: p99 ≤ 100 ms on the 2-core machine).

mod common;

use std::time::Instant;

use common::{pct, write_speed, write_views, Family, Serving, DAY, H};
use strata_testkit::env_u64;

/// The panels' queries with `$metric` and `$__rate_interval` left to fill.
fn panel_queries() -> Vec<String> {
    let d: serde_json::Value =
        serde_json::from_str(include_str!("../../infra/grafana/dashboards/strata.json")).unwrap();
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

/// One viewer's refresh: (path, form) of every request Grafana sends.
fn refresh(range_ms: i64, now: i64) -> Vec<(&'static str, Vec<(String, String)>)> {
    // Grafana: interval = max(range / max data points, the data source's 60 s), rounded to a
    // nice value; $__rate_interval = max(interval + 60 s, 4 × 60 s).
    let step = if range_ms <= 6 * H { 60_000 } else { 600_000 };
    let rate = (step + 60_000).max(240_000) / 60_000;
    let end = now.div_euclid(step) * step;
    let start = (now - range_ms).div_euclid(step) * step;
    let mut out = vec![(
        "/api/v1/label/__name__/values",
        vec![
            ("start".to_owned(), (start / 1000).to_string()),
            ("end".to_owned(), (end / 1000).to_string()),
        ],
    )];
    for q in panel_queries() {
        let q = q
            .replace("${metric}", "http_request_duration_ms")
            .replace("$__rate_interval", &format!("{rate}m"));
        out.push((
            "/api/v1/query_range",
            common::form(&q, start, end, step / 1000),
        ));
    }
    out
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::bench_config("dashboard", dir.path());
    strata_speed::clickhouse::schema::migrate(&cfg.clickhouse)
        .await
        .expect("ClickHouse (run `make up`)");
    let now = chrono::Utc::now().timestamp_millis();
    let boundary = strata_testkit::gen::truth::hour_start(now) - H;
    let fam = [Family::new("http_request_duration_ms", 100)];
    // Whole days for the batch views up to the day of the boundary, then its hours.
    let day = boundary.div_euclid(DAY) * DAY;
    let t = Instant::now();
    let (rows, _) = write_views(&cfg, &fam, day - 7 * DAY, day).await;
    if boundary > day {
        common::write_views_hours(&cfg, &fam, day, boundary).await;
    }
    write_speed(&cfg, &fam, boundary - 2 * H, now, 4).await;
    eprintln!(
        "data: {rows} minute rows in the batch views up to {boundary}, ClickHouse from 2 h before it, in {:.0}s",
        t.elapsed().as_secs_f64()
    );

    let serving = std::sync::Arc::new(Serving::start(&cfg, dir.path(), &[]));
    let probe = refresh(6 * H, now);
    serving.ready(Instant::now(), &probe[1].1).await;
    let viewers = env_u64("BENCH_VIEWERS", 16);
    let rounds = env_u64("BENCH_ROUNDS", 100);
    let mut all = Vec::new();
    let mut cached = Vec::new();
    let mut by_request: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut first_round: Vec<(f64, String)> = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        let now = chrono::Utc::now().timestamp_millis();
        let mut tasks = Vec::new();
        for v in 0..viewers {
            let range = if v % 2 == 0 { 6 * H } else { 7 * DAY };
            for (path, params) in refresh(range, now) {
                let serving = serving.clone();
                let name = format!(
                    "{} {}",
                    if range > DAY { "7d" } else { "6h" },
                    params
                        .iter()
                        .find(|(k, _)| k == "query")
                        .map_or(path.to_owned(), |(_, q)| q.clone())
                );
                tasks.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let url = format!("{}{path}", serving.base);
                    let r = if path.contains("/label/") {
                        serving.http.get(&url).query(&params).send().await
                    } else {
                        serving.http.post(&url).form(&params).send().await
                    }
                    .expect("an answer");
                    assert!(r.status().is_success(), "{path} {params:?}: {}", r.status());
                    r.bytes().await.unwrap();
                    (name, t.elapsed().as_secs_f64() * 1000.0)
                }));
            }
        }
        for t in tasks {
            let (name, ms) = t.await.unwrap();
            if round > 0 {
                by_request.entry(name.clone()).or_default().push(ms);
            }
            all.push(ms);
            if round == 0 {
                first_round.push((ms, name));
            } else {
                cached.push(ms);
            }
        }
    }
    all.sort_by(f64::total_cmp);
    cached.sort_by(f64::total_cmp);
    let mut slowest: Vec<(f64, f64, String)> = by_request
        .into_iter()
        .map(|(name, mut l)| {
            l.sort_by(f64::total_cmp);
            (pct(&l, 0.99), pct(&l, 0.5), name)
        })
        .collect();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    first_round.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut seen = std::collections::HashSet::new();
    first_round.retain(|(_, name)| seen.insert(name.clone()));
    for (ms, name) in first_round.iter().take(8) {
        eprintln!("  first refresh (cold caches): {ms:.0} ms: {name}");
    }
    let first_round_max = first_round.first().map_or(0.0, |f| f.0);
    for (p99, p50, name) in slowest.iter().take(5) {
        eprintln!("  after the first refresh: p50 {p50:.0} ms, p99 {p99:.0} ms: {name}");
    }
    eprintln!(
        "{} requests in {:.1}s ({} refreshes of {viewers} viewers); slowest of the first refresh {:.0} ms; peak RSS {:.0} MB",
        all.len(),
        started.elapsed().as_secs_f64(),
        rounds,
        first_round_max,
        serving.peak_rss_mb()
    );
    common::drop_database(&cfg);
    println!(
        "dashboard-bench: p50_ms={:.1} p99_ms={:.1} cached_p99_ms={:.1}",
        pct(&all, 0.5),
        pct(&all, 0.99),
        if cached.is_empty() {
            f64::NAN
        } else {
            pct(&cached, 0.99)
        }
    );
}
