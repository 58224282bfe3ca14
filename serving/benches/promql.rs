//! `make bench-promql`: dashboard and rule queries on strata-serving and on a real Prometheus
//! holding the same per-minute samples, in one run.
//!
//! Data: the conformance dataset's shapes (`strata_testkit::promql`) over the last 15 days up to
//! the last closed hour (BENCH_INSTANCES latency instances per source and region, default 4):
//! written with the batch layer's archive and recompute, and backfilled into Prometheus (Debian's
//! 2.42) from the same rows. Queries: a week-over-week panel (`offset 1w`), a p99 panel, an
//! error-ratio `group_left` join, an anomaly band, a daily median (`quantile_over_time(0.5,
//! x[1d])`) and a rate panel, each as a 6 h range at a 1 m step and a 7 d range at a 10 m step,
//! plus three rule-style instant queries. Each query is asked BENCH_REPEATS (5) times of each
//! server after one warm-up; Strata's results cache is off (Prometheus has none), its block
//! cache on (as Prometheus keeps its blocks memory-mapped).
//!
//! Last line: `promql-bench: queries=N strata_p50_ms=… prom_p50_ms=… vs_prom=…` (the ratio of
//! the p50s; goal ≤ 2.0).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{bench_config, drop_database, pct, Serving, DAY, H};
use strata_batch::archive::schema::ArchivedEvent;
use strata_batch::archive::writer::Archive;
use strata_batch::recompute::recompute;
use strata_testkit::env_u64;
use strata_testkit::gen::truth::hour_start;
use strata_testkit::promql::{events, minute_rows, write_openmetrics, ReferencePrometheus, Shape};

/// The dashboard panels (as range queries) and the rules (as instant queries).
const PANELS: [&str; 6] = [
    "sum by (source) (rate(conf_latency_count[5m]))",
    "max by (source) (conf_latency{quantile=\"0.99\"})",
    "sum by (source, region) (conf_errors_count) / on(source, region) group_left sum by (source, region) (conf_latency_count)",
    "sum(conf_latency_count) - sum(conf_latency_count offset 1w)",
    "avg_over_time(conf_temp_avg[1h]) + 2 * stddev_over_time(conf_temp_avg[1h])",
    "quantile_over_time(0.5, conf_temp_avg[1d])",
];
const RULES: [&str; 3] = [
    "max by (source) (conf_latency{quantile=\"0.99\"}) > 100",
    "abs(avg_over_time(conf_temp_avg[1h]) - avg_over_time(conf_temp_avg[1h] offset 1d)) > 3",
    "absent(conf_queue_max{source=\"api\"})",
];

async fn timed(http: &reqwest::Client, url: &str, form: &[(String, String)]) -> f64 {
    let started = Instant::now();
    let r = http.post(url).form(form).send().await.expect("request");
    let ok = r.status().is_success();
    let body = r.text().await.unwrap_or_default();
    assert!(ok && body.contains("\"success\""), "{url} {form:?}: {body}");
    started.elapsed().as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let instances = env_u64("BENCH_INSTANCES", 4) as usize;
    let repeats = env_u64("BENCH_REPEATS", 5);
    let dir = tempfile::tempdir().unwrap();
    let cfg = bench_config("promql", dir.path());
    strata_speed::clickhouse::schema::migrate(&cfg.clickhouse)
        .await
        .expect("ClickHouse (run `make up`)");
    let end = hour_start(chrono::Utc::now().timestamp_millis()) - H;
    let shape = Shape {
        spans: vec![(end - 15 * DAY, end)],
        instances,
        seed: 11,
    };
    let started = Instant::now();
    let evs = events(&shape);
    let archived: Vec<ArchivedEvent> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| ArchivedEvent {
            event: e.clone(),
            partition: 0,
            offset: i as i64,
        })
        .collect();
    let mut archive = Archive::open(&cfg).await.unwrap();
    archive
        .append(&archived, &BTreeMap::from([(0, evs.len() as i64 - 1)]))
        .await
        .unwrap();
    recompute(&cfg, end - 15 * DAY, end).await.unwrap();
    let rows = minute_rows(&evs);
    let om = dir.path().join("samples.om");
    let samples = write_openmetrics(&rows, std::fs::File::create(&om).unwrap()).unwrap();
    drop(archived);
    eprintln!(
        "promql-bench: {} events, {samples} samples, loaded in {:.0} s",
        evs.len(),
        started.elapsed().as_secs_f64()
    );
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom =
        ReferencePrometheus::start(&prom_dir, &om, "59s").expect("prometheus (run `make up`)");
    let strata = Serving::start(
        &cfg,
        dir.path(),
        &[("STRATA__SERVING__RESULTS_CACHE_BYTES", "0")],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    // Ready when the coverage is read: a covered hour answers.
    let probe = common::form("sum(conf_latency_count)", end - H, end - 30_000, 60);
    strata.ready(Instant::now(), &probe).await;

    // (query, form) pairs: panels over 6 h at 1 m and 7 d at 10 m, rules at the last point.
    let at = end - 30_000;
    let mut asks: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for q in PANELS {
        for (range, step) in [(6 * H, 60_000), (7 * DAY, 600_000)] {
            let e = at.div_euclid(step) * step;
            asks.push((q.to_owned(), common::form(q, e - range, e, step / 1000)));
        }
    }
    for q in RULES {
        asks.push((
            q.to_owned(),
            vec![
                ("query".into(), q.into()),
                ("time".into(), (at / 1000).to_string()),
            ],
        ));
    }
    let (mut s_ms, mut p_ms) = (Vec::new(), Vec::new());
    for (q, form) in &asks {
        let path = if form.iter().any(|(k, _)| k == "step") {
            "/api/v1/query_range"
        } else {
            "/api/v1/query"
        };
        let (su, pu) = (
            format!("{}{path}", strata.base),
            format!("{}{path}", prom.url()),
        );
        let (cold_s, cold_p) = (timed(&http, &su, form).await, timed(&http, &pu, form).await);
        let (mut qs, mut qp) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            qs.push(timed(&http, &su, form).await);
            qp.push(timed(&http, &pu, form).await);
        }
        qs.sort_by(f64::total_cmp);
        qp.sort_by(f64::total_cmp);
        let span = form
            .iter()
            .find(|(k, _)| k == "start")
            .map_or("instant".to_owned(), |_| {
                if form.iter().any(|(k, v)| k == "step" && v == "60") {
                    "6h".into()
                } else {
                    "7d".into()
                }
            });
        eprintln!(
            "  {span:>7} strata {:>8.1} ms (cold {cold_s:>8.1})  prometheus {:>8.1} ms (cold {cold_p:>8.1})  {q}",
            pct(&qs, 0.5),
            pct(&qp, 0.5)
        );
        s_ms.extend(qs);
        p_ms.extend(qp);
    }
    s_ms.sort_by(f64::total_cmp);
    p_ms.sort_by(f64::total_cmp);
    let (sp, pp) = (pct(&s_ms, 0.5), pct(&p_ms, 0.5));
    eprintln!(
        "promql-bench: strata p99 {:.1} ms, prometheus p99 {:.1} ms, strata peak RSS {:.0} MB",
        pct(&s_ms, 0.99),
        pct(&p_ms, 0.99),
        strata.peak_rss_mb()
    );
    drop_database(&cfg);
    println!(
        "promql-bench: queries={} strata_p50_ms={sp:.1} prom_p50_ms={pp:.1} vs_prom={:.2}",
        asks.len(),
        sp / pp
    );
}
