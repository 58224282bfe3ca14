//! Every query of the provisioned Grafana dashboard (infra/grafana/dashboards) parses and returns
//! data from a running pipeline fed like the demo — the Prometheus panels through promtool, the
//! reference Prometheus client, and the archive's SQL panels through psql over strata-serving's
//! PostgreSQL protocol.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_testkit::gen::produce::{produce, Run};
use strata_testkit::gen::truth::hour_start;
use strata_testkit::gen::{Format, Generator, Spec};
use strata_tests::{promtool, root, Pipeline};

const WEEK_MS: i64 = 7 * 86_400_000;

/// A week ago's traffic for the week-over-week panel: generated events around `now − 1w`,
/// imported into the pipeline's lake (as `strata-batch import` does) and recomputed.
async fn last_weeks_traffic(p: &Pipeline) {
    let now = chrono::Utc::now().timestamp_millis();
    let spec = Spec {
        base_time_ms: now - WEEK_MS + 10 * 60_000,
        spread_ms: 40 * 60_000,
        series: 60,
        metrics: 3,
        seed: 7,
        ..Spec::default()
    };
    let file = p.dir.path().join("last-week.jsonl");
    let lines: Vec<String> = Generator::new(spec)
        .take(5_000)
        .map(|m| serde_json::to_string(&m.event.expect("valid events only")).unwrap())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut cfg = p.cfg.clone();
    cfg.validation.max_past = Duration::from_secs(30 * 86_400);
    let report = strata_batch::import::import(&cfg, &[file.as_path()], now)
        .await
        .expect("import");
    assert_eq!(report.imported, 5_000, "{report:?}");
    let from = hour_start(now - WEEK_MS - 40 * 60_000);
    let to = hour_start(now - WEEK_MS + 10 * 60_000) + 3_600_000;
    strata_batch::recompute::recompute(&cfg, from, to)
        .await
        .expect("recompute a week ago");
}

/// The panels' expressions, with the dashboard variables as Grafana fills them.
fn panel_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("infra/grafana/dashboards/strata.json"))
        .expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let metric = dash["templating"]["list"][0]["current"]["value"]
        .as_str()
        .expect("a default metric")
        .to_owned();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let Some(expr) = t["expr"].as_str() else {
                continue;
            };
            let expr = expr
                .replace("${metric}", &metric)
                .replace("$__rate_interval", "4m");
            out.push((p["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    out
}

/// The SQL panels' queries, with Grafana's time macros filled for `[from, to)` (Unix seconds).
fn sql_panel_queries(from: i64, to: i64) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("infra/grafana/dashboards/strata.json"))
        .expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            if let Some(sql) = t["rawSql"].as_str() {
                let sql = sql
                    .replace("$__unixEpochFrom()", &from.to_string())
                    .replace("$__unixEpochTo()", &to.to_string());
                out.push((p["title"].as_str().unwrap().to_owned(), sql));
            }
        }
    }
    out
}

/// Rows psql prints for `sql` against the pipeline's PostgreSQL protocol (CSV, header first).
fn psql_rows(p: &Pipeline, sql: &str) -> Result<Vec<String>, String> {
    let port = p
        .cfg
        .serving
        .pg_listen
        .rsplit(':')
        .next()
        .unwrap_or_default();
    let out = std::process::Command::new("psql")
        .args(["-X", "-w", "--csv", "-h", "127.0.0.1", "-p", port])
        .args(["-U", "grafana", "-d", "strata", "-c", sql])
        .env_remove("PGPASSWORD")
        .output()
        .map_err(|e| format!("psql (Debian postgresql-client): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_panel_returns_data_through_promtool() {
    // Runs a whole pipeline or loads both cores: never beside another such test.
    let _heavy = strata_testkit::heavy().await;
    let queries = panel_queries();
    assert!(queries.len() >= 6, "{queries:?}");
    let p = Pipeline::start("grafana", &[]).await.unwrap();
    last_weeks_traffic(&p).await;
    // Demo-like load: live timestamps, a few duplicates, late and malformed messages.
    let kafka = p.cfg.kafka.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let spec = Spec {
                live: true,
                series: 60,
                metrics: 3,
                format: Format::Mixed,
                duplicate_ratio: 0.01,
                late_ratio: 0.01,
                malformed_ratio: 0.02,
                ..Spec::default()
            };
            let run = Run {
                kafka: &kafka,
                events: 0,
                rate: 400.0,
                stop,
                progress: &|_| {},
            };
            produce(&run, spec, None).unwrap();
        })
    };
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut pending = queries.clone();
    while !pending.is_empty() {
        let now = chrono::Utc::now().timestamp();
        let (start, end) = ((now - 900).to_string(), now.to_string());
        pending.retain(|(_, expr)| {
            let out = promtool(&[
                "query",
                "range",
                "--start",
                &start,
                "--end",
                &end,
                "--step",
                "60s",
                &p.serving_url,
                expr,
            ]);
            !matches!(out, Ok(text) if text.contains(" @["))
        });
        if Instant::now() > deadline {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            panic!("panels without data after 150 s: {pending:?}\n{}", p.logs());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The archive's SQL panels, as Grafana's PostgreSQL data source sends them.
    let now = chrono::Utc::now().timestamp();
    let sql = sql_panel_queries(now - 3600, now + 60);
    assert!(!sql.is_empty(), "the dashboard has an SQL panel");
    let mut pending = sql;
    while !pending.is_empty() {
        pending.retain(|(_, q)| !matches!(psql_rows(&p, q), Ok(rows) if !rows.is_empty()));
        if Instant::now() > deadline + Duration::from_secs(60) {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let errors: Vec<_> = pending.iter().map(|(t, q)| (t, psql_rows(&p, q))).collect();
            panic!("SQL panels without rows: {errors:?}\n{}", p.logs());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    producer.join().unwrap();
}
