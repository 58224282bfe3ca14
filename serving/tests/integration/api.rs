//! The endpoints as clients use them: Prometheus-shaped answers over GET and POST and through
//! the real promtool; a clear 4xx for every malformed request; auth; the series limit.
//! (Degraded answers when a dependency is away: `degraded.rs`.)

use crate::common;

use std::time::{Duration, Instant};

use common::{Fixture, H};
use serde_json::json;

const METRIC: &str = "http_request_duration_ms";

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_endpoints_answer_like_prometheus() {
    let fx = Fixture::new("prom", 3000, &[0, 1]).await;
    let server = fx.serve(&[]).await;
    let (start, end) = (
        ((fx.h0) / 1000).to_string(),
        ((fx.h0 + 4 * H) / 1000).to_string(),
    );

    // Grafana's "Save & test": 1+1 at time 4, GET and POST.
    for body in [
        server
            .get("/api/v1/query", &[("query", "1+1"), ("time", "4")])
            .await,
        server
            .post_form("/api/v1/query", &[("query", "1+1"), ("time", "4")])
            .await,
    ] {
        assert_eq!(body.0, 200);
        assert_eq!(
            body.1,
            json!({"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}})
        );
    }
    let (s, b) = server.get("/api/v1/status/buildinfo", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["features"], json!({}));
    assert!(b["data"]["version"].as_str().unwrap().starts_with('2'));

    // The metric browser.
    let (s, b) = server
        .get(
            "/api/v1/label/__name__/values",
            &[("start", &start), ("end", &end)],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let names: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for stat in ["_count", "_sum", "_min", "_max", "_avg", ""] {
        assert!(
            names.contains(&format!("{METRIC}{stat}").as_str()),
            "{names:?}"
        );
    }
    let (s, b) = server
        .post_form("/api/v1/labels", &[("start", &start), ("end", &end)])
        .await;
    assert_eq!(s, 200);
    for l in ["__name__", "instance", "quantile", "region", "source"] {
        assert!(b["data"].as_array().unwrap().contains(&json!(l)), "{b}");
    }
    let sel = format!("{METRIC}_count{{region=\"eu-west-1\"}}");
    let (s, b) = server
        .get(
            "/api/v1/series",
            &[("match[]", &sel), ("start", &start), ("end", &end)],
        )
        .await;
    assert_eq!(s, 200);
    let series = b["data"].as_array().unwrap();
    assert!(!series.is_empty());
    for l in series {
        assert_eq!(l["region"], "eu-west-1");
        assert_eq!(l["__name__"], format!("{METRIC}_count"));
    }
    let (s, b) = server
        .get(
            "/api/v1/label/source/values",
            &[("match[]", &sel), ("start", &start), ("end", &end)],
        )
        .await;
    assert_eq!(s, 200);
    assert!(!b["data"].as_array().unwrap().is_empty());
    let (s, b) = server.get("/api/v1/metadata", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"][METRIC][0]["type"], "summary");
    assert_eq!(b["data"][format!("{METRIC}_count")][0]["type"], "gauge");

    // Instant query: the minute before `time`.
    let t = ((fx.h0 + 30 * 60_000) / 1000).to_string();
    let (s, b) = server
        .get(
            "/api/v1/query",
            &[("query", &format!("sum({METRIC}_count)")), ("time", &t)],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["resultType"], "vector");
    let want: u64 = fx
        .rows
        .iter()
        .filter(|r| {
            r.tier == "1m" && r.labels.metric_name == METRIC && r.start_ms == fx.h0 + 29 * 60_000
        })
        .map(|r| r.stats.count)
        .sum();
    let got: f64 = b["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(got as u64, want);

    // Aggregations, arithmetic and range functions.
    let q = format!(
        "sum by (source) (rate({METRIC}_count[5m])) * 60 > 0 and on(source) topk(2, sum by (source) (increase({METRIC}_count[5m])))"
    );
    let (series, _) = server.range(&q, fx.h0 + H, fx.h0 + 2 * H, 300).await;
    assert!(!series.is_empty());
    let mut per_point: std::collections::BTreeMap<i64, usize> = Default::default();
    for (_, values) in &series {
        for (t, _) in values {
            *per_point.entry(*t).or_default() += 1;
        }
    }
    assert!(
        per_point.values().all(|n| *n <= 2),
        "topk(2) per point: {per_point:?}"
    );
    let (series, _) = server
        .range(
            &format!("max by (region) ({METRIC}_max) - min by (region) ({METRIC}_min)"),
            fx.h0 + H,
            fx.h0 + 2 * H,
            600,
        )
        .await;
    assert!(series.iter().all(|(l, v)| l.contains_key("region")
        && !l.contains_key("__name__")
        && v.iter().all(|(_, x)| *x >= 0.0)));

    // promtool, the reference client (it POSTs forms).
    let out = std::process::Command::new("promtool")
        .args(["query", "instant", &server.base, "1+1"])
        .output()
        .expect("promtool (installed by make setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("scalar: 2"), "{text}");
    let out = std::process::Command::new("promtool")
        .args([
            "query",
            "range",
            "--start",
            &start,
            "--end",
            &end,
            "--step",
            "5m",
            &server.base,
            &format!("sum by (source) ({METRIC}_count)"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("source=\"api-gateway\""), "{text}");
    assert!(text.contains(" @["), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_4xx_that_says_what_is_wrong() {
    let fx = Fixture::new("bad", 500, &[0]).await;
    let server = fx.serve(&[]).await;
    let (s0, e0) = ((fx.h0 / 1000).to_string(), ((fx.h0 + H) / 1000).to_string());
    let too_many = ((fx.h0 + H) / 1000 - 20_000).to_string();
    let range = |q: &'static str, start: &str, end: &str, step: &str| {
        vec![
            ("query", q.to_owned()),
            ("start", start.to_owned()),
            ("end", end.to_owned()),
            ("step", step.to_owned()),
        ]
    };
    type Case<'a> = (Vec<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (range("sum(", &s0, &e0, "60"), 400, "parse error"),
        (
            range("histogram_count(x_count)", &s0, &e0, "60"),
            400,
            "native histograms",
        ),
        (range("limitk(2, x_count)", &s0, &e0, "60"), 400, "limitk"),
        (range("x_count", &s0, &e0, "0"), 400, "zero or negative"),
        (
            range("x_count", &e0, &s0, "60"),
            400,
            "end timestamp must not be before start",
        ),
        (range("x_count", &too_many, &e0, "1"), 400, "11000"),
        (
            range("x_count", "0", "99999999999", "86400"),
            400,
            "max_range",
        ),
        (
            range("x_count", "yesterday", &e0, "60"),
            400,
            "cannot parse",
        ),
        (range("x_count[5m]", &s0, &e0, "60"), 400, "range vector"),
        (
            range("x_count + on(a) group_left fill(0) x_sum", &s0, &e0, "60"),
            400,
            "fill",
        ),
        (
            vec![
                ("start", s0.clone()),
                ("end", e0.clone()),
                ("step", "60".into()),
            ],
            400,
            "missing parameter \"query\"",
        ),
    ];
    for (params, status, needle) in cases {
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, b) = server.post_form("/api/v1/query_range", &p).await;
        assert_eq!(s, status, "{params:?}: {b}");
        assert_eq!(b["status"], "error");
        assert_eq!(b["errorType"], "bad_data", "{params:?}");
        let msg = b["error"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{params:?}: {msg:?} should mention {needle:?}"
        );
    }

    // Valid queries the data or the limits make impossible: 422 `execution`, as Prometheus.
    let cases: Vec<Case> = vec![
        (
            range("holt_winters(x_count[5m], 1.5, 0.1)", &s0, &e0, "60"),
            422,
            "smoothing factor",
        ),
        (
            range("max_over_time(x_count[500d])", &s0, &e0, "60"),
            422,
            "serving.max_range",
        ),
        (
            range("max_over_time(vector(1)[300d:1s])", &s0, &e0, "60"),
            422,
            "serving.max_samples",
        ),
        (
            range(
                r#"label_replace(x_count, "bad-name", "$1", "source", "(.*)")"#,
                &s0,
                &e0,
                "60",
            ),
            422,
            "destination label",
        ),
    ];
    for (params, status, needle) in cases {
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, b) = server.post_form("/api/v1/query_range", &p).await;
        assert_eq!(s, status, "{params:?}: {b}");
        assert_eq!(b["errorType"], "execution", "{params:?}");
        let msg = b["error"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{params:?}: {msg:?} should mention {needle:?}"
        );
    }

    // Hostile label values and regexes are data, never SQL: answered (empty), quickly.
    for q in [
        r#"http_request_duration_ms_count{source="a\"b\\c') OR 1=1 --"}"#,
        r#"http_request_duration_ms_count{source=~"(a+)+$", region!~".*'.*"}"#,
        r#"{__name__=~"http.*'; DROP TABLE x; --"}"#,
    ] {
        let started = Instant::now();
        let (s, b) = server
            .get(
                "/api/v1/query_range",
                &[("query", q), ("start", &s0), ("end", &e0), ("step", "60")],
            )
            .await;
        assert_eq!(s, 200, "{q}: {b}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let (s, b) = server.get("/api/v1/label/bad-name/values", &[]).await;
    assert_eq!((s, b["errorType"].as_str()), (400, Some("bad_data")));
    let (s, b) = server.get("/api/v1/series", &[]).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("match[]"));
    let (s, _) = server.get("/api/v1/nope", &[]).await;
    assert_eq!(s, 404);
    let (s, b) = server
        .get("/api/v1/timeseries", &[("metric", METRIC), ("stat", "p42")])
        .await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("p42"));

    // SQL and recompute refuse what they must, saying why.
    for (sql, needle) in [
        ("DROP TABLE events", "read-only"),
        ("COPY events TO '/tmp/x.csv'", "read-only"),
        ("SELECT * FROM '/etc/passwd'", ""),
        ("SELEC 1", ""),
    ] {
        let (s, body) = server
            .post_json("/api/v1/sql", &json!({"sql": sql}), &[])
            .await;
        assert_eq!(s, 400, "{sql}: {body}");
        assert!(body.contains(needle), "{sql}: {body}");
    }
    let (s, body) = server
        .post_json("/api/v1/sql", &json!({"query": "SELECT 1"}), &[])
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("unknown field"), "{body}");
    // Bodies past serving.max_body_bytes (1 MiB) are refused before they are read.
    let huge = "x".repeat(2 << 20);
    let (s, _) = server
        .post_json("/api/v1/sql", &json!({"sql": huge}), &[])
        .await;
    assert_eq!(s, 413);
    let (s, _) = server
        .post_form("/api/v1/query", &[("query", huge.as_str())])
        .await;
    assert_eq!(s, 413);
    let (s, body) = server
        .post_json(
            "/api/v1/recompute",
            &json!({"from": 1, "to": 3_600_000}),
            &[],
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("whole hours"), "{body}");
    let (s, body) = server
        .post_json(
            "/api/v1/recompute",
            &json!({"from": "2026-13-01T00:00:00Z", "to": 3_600_000}),
            &[],
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("RFC 3339"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_and_recompute_work_and_are_guarded() {
    let fx = Fixture::new("auth", 1000, &[0]).await;
    let open = fx.serve(&[]).await;
    // No token configured: loopback clients may use SQL.
    let (s, body) = open
        .post_json(
            "/api/v1/sql",
            &json!({"sql": "SELECT count(*) AS n FROM events"}),
            &[],
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["rows"][0]["n"], json!(1000));
    let (s, csv) = open
        .post_json(
            "/api/v1/sql",
            &json!({"sql": "SELECT sum(count) AS n FROM rollup_1h", "format": "csv"}),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert!(csv.starts_with("n\n"), "{csv}");
    // … but not from another address.
    if let Some(ip) = non_loopback_ip() {
        let exposed = fx.serve_at("0.0.0.0", &[]).await;
        let r = exposed
            .http
            .post(format!("http://{ip}:{}/api/v1/sql", exposed.port))
            .json(&json!({"sql": "SELECT 1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert!(r.text().await.unwrap().contains("loopback"));
        let r = exposed
            .http
            .get(format!("http://{ip}:{}/api/v1/query?query=1", exposed.port))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "queries stay open");
    } else {
        eprintln!("no non-loopback address here: the remote-client case is not exercised");
    }

    let token = "t0ken-for-the-serving-test";
    let guarded = fx.serve(&[("STRATA__SERVING__AUTH_TOKEN", token)]).await;
    let sql = json!({"sql": "SELECT 1 AS one"});
    let (s, body) = guarded.post_json("/api/v1/sql", &sql, &[]).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("Bearer"));
    let (s, _) = guarded
        .post_json(
            "/api/v1/sql",
            &sql,
            &[("authorization", "Bearer wrong-token-xxxxxxxx")],
        )
        .await;
    assert_eq!(s, 401);
    let auth = format!("Bearer {token}");
    let (s, body) = guarded
        .post_json("/api/v1/sql", &sql, &[("authorization", &auth)])
        .await;
    assert_eq!(s, 200, "{body}");
    // Queries stay open unless auth_all.
    let (s, _) = guarded.get("/api/v1/query", &[("query", "1")]).await;
    assert_eq!(s, 200);

    // Recompute: 202 and a job; the same Idempotency-Key names the same job.
    let range = json!({"from": fx.h0 + H, "to": fx.h0 + 2 * H});
    let (s, body) = guarded.post_json("/api/v1/recompute", &range, &[]).await;
    assert_eq!(s, 401, "{body}");
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "abc-1"),
    ];
    let (s, body) = guarded
        .post_json("/api/v1/recompute", &range, &headers)
        .await;
    assert_eq!(s, 202, "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = job["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(job["data"]["state"], "queued");
    let (s, again) = guarded
        .post_json("/api/v1/recompute", &range, &headers)
        .await;
    assert_eq!(s, 202);
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["data"]["id"], json!(id));
    let r = guarded
        .http
        .get(guarded.url(&format!("/api/v1/jobs/{id}")))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = guarded
        .http
        .get(guarded.url("/api/v1/jobs/nosuchjob"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // auth_all guards the queries too.
    let all = fx
        .serve(&[
            ("STRATA__SERVING__AUTH_TOKEN", token),
            ("STRATA__SERVING__AUTH_ALL", "true"),
        ])
        .await;
    let (s, _) = all.get("/api/v1/query", &[("query", "1")]).await;
    assert_eq!(s, 401);
    let r = all
        .http
        .get(all.url("/api/v1/query?query=1"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = all.http.get(all.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "health stays open");

    // No secret in the logs, whatever was asked.
    for server in [&guarded, &all] {
        let log = std::fs::read_to_string(&server.log).unwrap();
        assert!(log.contains("serving"), "the log is there: {log}");
        assert!(!log.contains(token), "the token leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_sides_of_an_operator_count_against_the_series_limit() {
    // The two sides of a binary operator are evaluated at once; their series still add up.
    let fx = Fixture::new("limit", 2000, &[0]).await;
    let n = fx
        .rows
        .iter()
        .filter(|r| r.labels.metric_name == METRIC)
        .map(|r| r.series_id)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(n > 0, "the fixture has series of {METRIC}");
    let limit = (2 * n - 1).to_string();
    let server = fx
        .serve(&[("STRATA__SERVING__MAX_SERIES", limit.as_str())])
        .await;
    // Over the whole of the fixture's data, so every series of the metric is selected.
    let mine = || fx.rows.iter().filter(|r| r.labels.metric_name == METRIC);
    let first = mine().map(|r| r.start_ms).min().unwrap();
    let last = mine().map(|r| r.start_ms).max().unwrap();
    let (start, end) = ((first / 1000).to_string(), ((last + H) / 1000).to_string());
    let ask = |q: String| {
        let (start, end, server) = (start.clone(), end.clone(), &server);
        async move {
            let p = [
                ("query", q.as_str()),
                ("start", start.as_str()),
                ("end", end.as_str()),
                ("step", "60"),
            ];
            server.post_form("/api/v1/query_range", &p).await
        }
    };
    let (status, body) = ask(format!("{METRIC}_count")).await;
    assert_eq!(status, 200, "one side alone is within the limit: {body}");
    let (status, body) = ask(format!("{METRIC}_count / {METRIC}_sum")).await;
    assert_eq!(status, 422, "both sides pass the limit: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{} series", 2 * n)) && error.contains("serving.max_series"),
        "{error}"
    );
}

/// This machine's address on its network, if it has one other than loopback (no packet is
/// sent: a UDP socket is only pointed at a documentation address).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback()).then_some(ip)
}
