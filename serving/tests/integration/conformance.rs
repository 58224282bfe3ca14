//! PromQL conformance: every query of `serving/tests/promql/conformance.promql` is answered by
//! strata-serving (over a real lake, written and recomputed by the batch layer's own code) and
//! by a real Prometheus (Debian's, installed by the stack script) holding the same per-minute
//! samples, backfilled from OpenMetrics; instant queries at three times and a range query at a
//! one-minute step must agree — label sets exactly, values to 1e-9 relative — or both refuse.
//!
//! Evaluation times sit 30 s after a minute: a window `(t − r, t]` then holds the same samples
//! whether its left end is open (Prometheus 3, Strata) or closed (Prometheus 2), and the
//! reference's one-minute look-back sees exactly the minute Strata's instant window holds.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;
use strata_batch::archive::schema::ArchivedEvent;
use strata_batch::archive::writer::Archive;
use strata_batch::recompute::recompute;
use strata_shared::Config;
use strata_testkit::gen::truth::hour_start;
use strata_testkit::promql::{events, minute_rows, write_openmetrics, ReferencePrometheus, Shape};

use crate::common::{Fixture, Series, H};

const M: i64 = 60_000;
const DAY: i64 = 24 * H;
const CORPUS: &str = include_str!("../promql/conformance.promql");

/// One answer, in a form both servers' JSON reduce to.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// Refused (status, message).
    Error(u16, String),
    Scalar(f64),
    /// Series in the order given: labels and (ms, value) points.
    Series(Vec<Series>),
}

fn value(v: &Json) -> f64 {
    match v.as_str() {
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

fn point(p: &Json) -> (i64, f64) {
    (
        (p[0].as_f64().unwrap() * 1000.0).round() as i64,
        value(&p[1]),
    )
}

fn answer(status: u16, body: &Json) -> Answer {
    if status != 200 || body["status"] != "success" {
        return Answer::Error(status, body["error"].as_str().unwrap_or("").to_owned());
    }
    let data = &body["data"];
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("scalar") => Answer::Scalar(value(&result[1])),
        Some("vector") => Answer::Series(
            result
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        serde_json::from_value(s["metric"].clone()).unwrap(),
                        vec![point(&s["value"])],
                    )
                })
                .collect(),
        ),
        Some("matrix") => Answer::Series(
            result
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let pts = s["values"].as_array().unwrap().iter().map(point).collect();
                    (serde_json::from_value(s["metric"].clone()).unwrap(), pts)
                })
                .collect(),
        ),
        other => Answer::Error(0, format!("unexpected result type {other:?}")),
    }
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
}

/// Whether two answers agree; `ordered`: the order of an instant vector counts (`sort`).
fn agree(strata: &Answer, prom: &Answer, ordered: bool) -> Result<(), String> {
    match (strata, prom) {
        (Answer::Error(..), Answer::Error(..)) => Ok(()),
        (Answer::Scalar(a), Answer::Scalar(b)) if close(*a, *b) => Ok(()),
        (Answer::Series(a), Answer::Series(b)) => {
            if ordered {
                let va: Vec<f64> = a.iter().map(|s| s.1[0].1).collect();
                let vb: Vec<f64> = b.iter().map(|s| s.1[0].1).collect();
                if va.len() != vb.len() || va.iter().zip(&vb).any(|(x, y)| !close(*x, *y)) {
                    return Err(format!("order differs: strata {va:?}, prometheus {vb:?}"));
                }
            }
            let ma: BTreeMap<_, _> = a.iter().cloned().collect();
            let mb: BTreeMap<_, _> = b.iter().cloned().collect();
            if ma.len() != a.len() {
                return Err("strata answered a label set twice".into());
            }
            for (labels, pb) in &mb {
                let Some(pa) = ma.get(labels) else {
                    return Err(format!(
                        "strata lacks {labels:?} ({} series vs {})",
                        ma.len(),
                        mb.len()
                    ));
                };
                if pa.len() != pb.len() {
                    return Err(format!("{labels:?}: {} points vs {}", pa.len(), pb.len()));
                }
                for (x, y) in pa.iter().zip(pb) {
                    if x.0 != y.0 || !close(x.1, y.1) {
                        return Err(format!(
                            "{labels:?} at {}: strata {} vs prometheus {} (at {})",
                            x.0, x.1, y.1, y.0
                        ));
                    }
                }
            }
            if let Some(extra) = ma.keys().find(|l| !mb.contains_key(*l)) {
                return Err(format!("strata has {extra:?} that prometheus has not"));
            }
            Ok(())
        }
        (a, b) => Err(format!("strata {a:?} vs prometheus {b:?}")),
    }
}

async fn ask(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    params: &[(&str, String)],
) -> (Answer, Vec<String>) {
    let r = http
        .post(format!("{base}{path}"))
        .form(params)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Json = r.json().await.unwrap_or(Json::Null);
    let warnings = body["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (answer(status, &body), warnings)
}

/// The lake: three 3-hour spans (now, a day and a week before) archived and recomputed.
async fn dataset() -> (Fixture, i64, Vec<strata_testkit::gen::truth::TruthRow>) {
    let dir = tempfile::tempdir().unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = Config::load(None).expect("configuration");
    cfg.clickhouse.database = format!("strata_test_conf_{}", &id[..12]);
    cfg.lake.url = dir.path().join("lake").display().to_string();
    strata_speed::clickhouse::schema::migrate(&cfg.clickhouse)
        .await
        .expect("ClickHouse (run `make up`)");
    let t0 = hour_start(chrono::Utc::now().timestamp_millis()) - 5 * H;
    let shape = Shape {
        spans: vec![
            (t0, t0 + 3 * H),
            (t0 - DAY, t0 - DAY + 3 * H),
            (t0 - 7 * DAY, t0 - 7 * DAY + 3 * H),
        ],
        instances: 2,
        seed: 25,
    };
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
    recompute(&cfg, t0 - 7 * DAY, t0 + 3 * H).await.unwrap();
    let rows = minute_rows(&evs);
    let fixture = Fixture {
        dir,
        cfg,
        h0: t0,
        rows: rows.clone(),
        unique: evs.len() as u64,
        values: Default::default(),
    };
    (fixture, t0, rows)
}

#[tokio::test]
async fn strata_answers_promql_as_prometheus_does() {
    let (fixture, t0, rows) = dataset().await;
    let om = fixture.dir.path().join("samples.om");
    let samples = write_openmetrics(&rows, std::fs::File::create(&om).unwrap()).unwrap();
    let prom_dir = fixture.dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom =
        ReferencePrometheus::start(&prom_dir, &om, "59s").expect("prometheus (run `make up`)");
    let strata = fixture.serve(&[]).await;
    // Let the first coverage refresh land.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let secs = |ms: i64| (ms / 1000).to_string();
    let mid = t0 + 120 * M + 30_000;
    let instants = [t0 + 75 * M + 30_000, mid, t0 + 179 * M + 30_000];
    let (start, end) = (t0 + 60 * M + 30_000, t0 + 170 * M + 30_000);
    let http = reqwest::Client::new();
    let prom_url = prom.url();
    let (mut agreed, mut differ_as_documented, mut with_data) = (0, 0, 0);
    let mut failures = Vec::new();
    let queries: Vec<&str> = CORPUS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        queries.len() >= 150,
        "the corpus holds {} queries",
        queries.len()
    );
    for line in &queries {
        let (expect_differ, q) = match line.strip_prefix('!') {
            Some(q) => (true, q.trim()),
            None => (false, *line),
        };
        let q = q.replace("$mid", &secs(mid));
        let ordered = q.starts_with("sort");
        let mut problems = Vec::new();
        let mut asks: Vec<(&str, Vec<(&str, String)>)> = instants
            .iter()
            .map(|t| {
                (
                    "/api/v1/query",
                    vec![("query", q.clone()), ("time", secs(*t))],
                )
            })
            .collect();
        asks.push((
            "/api/v1/query_range",
            vec![
                ("query", q.clone()),
                ("start", secs(start)),
                ("end", secs(end)),
                ("step", "60".into()),
            ],
        ));
        let mut data = false;
        for (path, params) in &asks {
            let ((a, _), (b, _)) = futures::join!(
                ask(&http, &strata.base, path, params),
                ask(&http, &prom_url, path, params)
            );
            data |=
                matches!(&b, Answer::Series(s) if !s.is_empty()) || matches!(b, Answer::Scalar(_));
            if let Err(why) = agree(&a, &b, ordered && *path == "/api/v1/query") {
                problems.push(format!("{path} {params:?}: {why}"));
            }
        }
        with_data += usize::from(data);
        match (expect_differ, problems.is_empty()) {
            (false, true) => agreed += 1,
            (true, false) => differ_as_documented += 1,
            (false, false) => failures.push(format!("{q}\n    {}", problems.join("\n    "))),
            (true, true) => failures.push(format!(
                "{q}: agrees now; move it out of the differences (and the README)"
            )),
        }
    }
    println!(
        "conformance: queries={} agree={agreed} documented_differences={differ_as_documented} failed={} with_data={with_data} samples={samples}",
        queries.len(),
        failures.len()
    );
    // Agreement on empty answers proves little: nearly every query must find data.
    assert!(
        with_data * 10 >= queries.len() * 9,
        "only {with_data} queries found data"
    );
    assert!(
        failures.is_empty(),
        "{} of {} queries disagree:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
}

/// A query that reads only hours the batch layer covers never asks ClickHouse: with ClickHouse
/// unreachable it is answered whole, without a warning.
#[tokio::test]
async fn covered_hours_need_no_clickhouse() {
    let (fixture, t0, _) = dataset().await;
    let up = fixture.serve(&[]).await;
    let down = fixture
        .serve(&[("STRATA__CLICKHOUSE__URL", "http://127.0.0.1:9")])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let secs = |ms: i64| (ms / 1000).to_string();
    let http = reqwest::Client::new();
    for (path, params) in [
        ("/api/v1/query", vec![("query", "sum by (source) (conf_latency_count)".to_owned()), ("time", secs(t0 + 90 * M))]),
        (
            "/api/v1/query_range",
            vec![
                ("query", "rate(conf_queue_max[5m]) and on(source) sum by (source) (conf_errors_count) > 0".to_owned()),
                ("start", secs(t0 + 10 * M)),
                ("end", secs(t0 + 3 * H)),
                ("step", "60".into()),
            ],
        ),
        (
            "/api/v1/query_range",
            vec![
                ("query", "max_over_time(conf_temp_avg[1h] offset 1d) - conf_temp_avg".to_owned()),
                ("start", secs(t0 + 2 * H)),
                ("end", secs(t0 + 3 * H)),
                ("step", "300".into()),
            ],
        ),
    ] {
        let (a, wa) = ask(&http, &up.base, path, &params).await;
        let (b, wb) = ask(&http, &down.base, path, &params).await;
        assert!(matches!(a, Answer::Series(ref s) if !s.is_empty()), "{params:?}: {a:?}");
        assert_eq!(a, b, "{params:?}");
        assert!(wa.is_empty() && wb.is_empty(), "{params:?}: warnings {wa:?} / {wb:?}");
    }
}
