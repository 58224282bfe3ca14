//! Degraded answers, not failures, when a dependency is away: ClickHouse unreachable → the
//! batch view alone with a warning; the lake unreadable → ClickHouse's minutes with a warning;
//! a lake that cannot be opened → a 503 that names it (not the client's fault, a 4xx stays a
//! 4xx); a rule evaluator that does not answer → a 503 that names it, not an empty alert list.

use crate::common;

use std::time::{Duration, Instant};

use common::{Fixture, H};
use serde_json::json;

const METRIC: &str = "http_request_duration_ms";

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_down_still_serves_batch_data_with_a_warning() {
    let fx = Fixture::new("chdown", 2000, &[0]).await;
    let dead = format!("http://127.0.0.1:{}", strata_testkit::free_port());
    let server = fx
        .serve(&[
            ("STRATA__CLICKHOUSE__URL", &dead),
            ("STRATA__CLICKHOUSE__REQUEST_TIMEOUT", "2s"),
        ])
        .await;
    let q = format!("sum({METRIC}_count)");
    let (series, body) = server.range(&q, fx.h0 + 60_000, fx.h0 + 2 * H, 60).await;
    let warnings = body["warnings"].as_array().expect("a warning");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("speed layer unavailable")),
        "{warnings:?}"
    );
    // The batch-covered hour is all there; the hour after it has nothing (not an error).
    let points = &series[0].1;
    let want = fx
        .rows
        .iter()
        .filter(|r| r.tier == "1m" && r.labels.metric_name == METRIC && r.start_ms < fx.h0 + H)
        .map(|r| r.start_ms)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(points.len(), want);
    assert!(points.iter().all(|(t, _)| *t <= fx.h0 + H));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_lake_still_serves_speed_data_with_a_warning() {
    let fx = Fixture::new("lakedown", 2000, &[0]).await;
    let dead = format!("http://127.0.0.1:{}", strata_testkit::free_port());
    let server = fx
        .serve(&[
            ("STRATA__LAKE__URL", "s3://lake/unreachable"),
            ("STRATA__S3__ENDPOINT", &dead),
            ("STRATA__S3__ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "minioadmin"),
            ("AWS_SECRET_ACCESS_KEY", "minioadmin"),
        ])
        .await;
    let q = format!("sum({METRIC}_count)");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (series, body) = server.range(&q, fx.h0 + 60_000, fx.h0 + 2 * H, 60).await;
        let warned = body["warnings"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w.as_str().unwrap().contains("batch views unreadable"))
        });
        if warned {
            // Every minute comes from ClickHouse instead, complete.
            let got: f64 = series[0].1.iter().map(|(_, v)| v).sum();
            let want: u64 = fx
                .rows
                .iter()
                .filter(|r| {
                    r.tier == "1h" && r.labels.metric_name == METRIC && r.start_ms < fx.h0 + 2 * H
                })
                .map(|r| r.stats.count)
                .sum();
            assert_eq!(got as u64, want);
            break;
        }
        assert!(Instant::now() < deadline, "no warning: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lake_that_cannot_be_opened_is_a_503_not_the_clients_fault() {
    let fx = Fixture::new("lakefault", 500, &[]).await;
    // A lake folder that cannot be created: strata-serving still starts and answers from
    // ClickHouse, and the requests that need the lake are told to come back later.
    let server = fx
        .serve(&[("STRATA__LAKE__URL", "/proc/strata-no-such-lake/lake")])
        .await;
    let (series, body) = server
        .range(
            &format!("sum({METRIC}_count)"),
            fx.h0 + 60_000,
            fx.h0 + H,
            60,
        )
        .await;
    assert!(!series.is_empty(), "speed data still served: {body}");
    for (method, path, payload) in [
        (
            "POST",
            "/api/v1/recompute",
            Some(json!({"from": fx.h0, "to": fx.h0 + H})),
        ),
        ("GET", "/api/v1/jobs", None),
    ] {
        let req = match method {
            "POST" => server.http.post(server.url(path)).json(&payload.unwrap()),
            _ => server.http.get(server.url(path)),
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").cloned();
        let text = r.text().await.unwrap();
        assert_eq!(status, 503, "{method} {path}: {text}");
        assert!(retry.is_some(), "{method} {path} says when to retry");
        assert!(text.contains("lake"), "{text}");
    }
    // A client mistake stays a 4xx.
    let (s, _) = server
        .post_json("/api/v1/recompute", &json!({"from": 1, "to": 2}), &[])
        .await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_and_alerts_are_empty_without_an_evaluator_and_a_503_when_it_is_down() {
    let fx = Fixture::new("rulesdown", 200, &[]).await;
    // No evaluator configured: Prometheus' shapes, empty.
    let server = fx.serve(&[]).await;
    let (s, b) = server.get("/api/v1/rules", &[]).await;
    assert_eq!(
        (s, b),
        (200, json!({"status": "success", "data": {"groups": []}}))
    );
    let (s, b) = server.get("/api/v1/alerts", &[]).await;
    assert_eq!(
        (s, b),
        (200, json!({"status": "success", "data": {"alerts": []}}))
    );
    drop(server);
    // An evaluator that does not answer is not "no alerts": a 503 naming the key.
    let dead = format!("http://127.0.0.1:{}", strata_testkit::free_port());
    let server = fx.serve(&[("STRATA__SERVING__RULES_URL", &dead)]).await;
    for path in ["/api/v1/rules", "/api/v1/alerts"] {
        let (s, b) = server.get(path, &[("type", "alert")]).await;
        assert_eq!(s, 503, "{path}: {b}");
        assert_eq!(b["status"], "error");
        let error = b["error"].as_str().unwrap();
        assert!(
            error.contains("serving.rules_url") && error.contains(&dead),
            "{path}: {error}"
        );
    }
}
