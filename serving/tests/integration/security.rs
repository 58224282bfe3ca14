//! The security review, as tests: every user-supplied string that can reach ClickHouse is tried
//! with injection payloads (nothing leaks, nothing changes), every write and admin endpoint
//! demands the token, and the SQL time limit and request size limit hold. (The SQL sandbox's
//! escapes are tested in `batch/src/sql.rs`; secrets in logs in `api.rs`.)

use crate::common;

use std::time::{Duration, Instant};

use common::{Fixture, H};
use serde_json::json;

const METRIC: &str = "http_request_duration_ms";

/// Strings an attacker would put wherever a label value, label name or metric name goes.
const PAYLOADS: &[&str] = &[
    "x' OR '1'='1",
    "x' OR 1=1 --",
    "'; DROP TABLE canary; --",
    "x\\' OR 1=1 --",
    "x\" OR \"1\"=\"1",
    "') UNION ALL SELECT name FROM system.tables --",
    "x' AND sleep(3) = 0 OR '",
    "{db}.canary",
    "`canary`",
    "x%' OR '%'='",
    ".*') OR ('1'='1",
    "\u{0}' OR 1=1",
];

async fn ch(fx: &Fixture, sql: &str) -> String {
    strata_shared::clickhouse::client(&fx.cfg.clickhouse)
        .query(sql)
        .fetch_one::<String>()
        .await
        .expect(sql)
}

#[tokio::test(flavor = "multi_thread")]
async fn injection_through_every_user_supplied_string_reaches_no_clickhouse_sql() {
    // Hours 1–3 are not recomputed: every selector is answered by ClickHouse.
    let fx = Fixture::new("inject", 2000, &[0]).await;
    let client = strata_shared::clickhouse::client(&fx.cfg.clickhouse);
    client
        .query("CREATE TABLE canary (x String) ENGINE = TinyLog")
        .execute()
        .await
        .unwrap();
    client
        .query("INSERT INTO canary VALUES ('alive')")
        .execute()
        .await
        .unwrap();
    let rows_before = ch(&fx, "SELECT toString(count()) FROM speed_rollup_1m").await;
    let server = fx.serve(&[("STRATA__SERVING__QUERY_TIMEOUT", "10s")]).await;
    let (start, end) = (
        ((fx.h0 + H) / 1000).to_string(),
        ((fx.h0 + 4 * H) / 1000).to_string(),
    );

    let mut asked = 0;
    for raw in PAYLOADS {
        let p = raw.replace("{db}", &fx.cfg.clickhouse.database);
        let quoted = p.replace('\\', "\\\\").replace('"', "\\\"");
        // Label values in every matcher kind: a payload matches no series, so nothing may come back.
        for op in ["=", "=~"] {
            let sel = format!("{METRIC}_count{{region{op}\"{quoted}\"}}");
            for (path, params) in [
                (
                    "/api/v1/query_range",
                    vec![
                        ("query", sel.clone()),
                        ("start", start.clone()),
                        ("end", end.clone()),
                        ("step", "600".into()),
                    ],
                ),
                (
                    "/api/v1/series",
                    vec![
                        ("match[]", sel.clone()),
                        ("start", start.clone()),
                        ("end", end.clone()),
                    ],
                ),
            ] {
                let params: Vec<(&str, &str)> =
                    params.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let (s, body) = server.get(path, &params).await;
                asked += 1;
                assert!(s < 500, "{path} {sel}: {s} {body}");
                if s == 200 {
                    // ClickHouse answered cleanly: a payload spliced into SQL would have made it
                    // fail, and a failing layer shows as a warning, not as an error.
                    assert!(
                        body["warnings"].as_array().is_none_or(Vec::is_empty),
                        "{path} {sel}: {body}"
                    );
                    let data = &body["data"];
                    let empty = data.as_array().map(Vec::is_empty).unwrap_or(false)
                        || data["result"]
                            .as_array()
                            .map(Vec::is_empty)
                            .unwrap_or(false)
                        || data["series"]
                            .as_array()
                            .map(Vec::is_empty)
                            .unwrap_or(false);
                    assert!(empty, "{path} {sel} returned data: {body}");
                }
            }
        }
        // Negative matchers keep every series — and only the real ones.
        let sel = format!("{METRIC}_count{{region!=\"{quoted}\"}}");
        let (s, body) = server
            .get(
                "/api/v1/series",
                &[("match[]", &sel), ("start", &start), ("end", &end)],
            )
            .await;
        assert_eq!(s, 200, "{sel}: {body}");
        for series in body["data"].as_array().unwrap() {
            assert_eq!(
                series["__name__"],
                json!(format!("{METRIC}_count")),
                "{body}"
            );
        }
        // Label names and metric names in paths and parameters.
        let enc = urlencode(&p);
        for path in [
            format!("/api/v1/label/{enc}/values"),
            format!("/api/v1/metrics/{enc}/series"),
        ] {
            let (s, body) = server.get(&path, &[("start", &start), ("end", &end)]).await;
            asked += 1;
            assert!(s < 500, "{path}: {s} {body}");
            if s == 200 {
                assert!(
                    body["data"].as_array().is_none_or(Vec::is_empty),
                    "{path} returned data: {body}"
                );
            }
        }
        // The JSON API: tag filters, grouping and the metric name.
        let tag = format!(
            "tag.{}",
            if p.len() % 2 == 0 {
                "region"
            } else {
                p.as_str()
            }
        );
        for params in [
            vec![
                ("metric", format!("{METRIC}_count")),
                (tag.as_str(), p.clone()),
            ],
            vec![
                ("metric", format!("{METRIC}_count")),
                ("group_by", p.clone()),
            ],
            vec![("metric", p.clone())],
        ] {
            let mut params: Vec<(&str, &str)> =
                params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            params.extend([
                ("start", start.as_str()),
                ("end", end.as_str()),
                ("step", "600"),
            ]);
            let (s, body) = server.get("/api/v1/timeseries", &params).await;
            asked += 1;
            assert!(s < 500, "/api/v1/timeseries {params:?}: {s} {body}");
            if s == 200 && params.iter().any(|(k, _)| k.starts_with("tag.")) {
                assert!(
                    body["data"]["series"].as_array().is_none_or(Vec::is_empty),
                    "tag filter {p:?} returned data: {body}"
                );
            }
        }
    }
    assert!(asked > 100);
    // ClickHouse is untouched.
    assert_eq!(ch(&fx, "SELECT any(x) FROM canary").await, "alive");
    assert_eq!(
        ch(&fx, "SELECT toString(count()) FROM speed_rollup_1m").await,
        rows_before
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_write_and_admin_endpoint_demands_the_token() {
    let fx = Fixture::new("guard", 500, &[0]).await;
    let token = "a-long-enough-serving-token";
    let server = fx.serve(&[("STRATA__SERVING__AUTH_TOKEN", token)]).await;
    let range = json!({"from": fx.h0 + H, "to": fx.h0 + 2 * H});
    let endpoints: [(&str, &str, Option<serde_json::Value>); 4] = [
        ("POST", "/api/v1/sql", Some(json!({"sql": "SELECT 1"}))),
        ("POST", "/api/v1/recompute", Some(range)),
        ("GET", "/api/v1/jobs", None),
        ("GET", "/api/v1/jobs/some-job", None),
    ];
    let wrong = [
        None,
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(format!("Basic {token}")),
        Some(format!("bearer{token}")),
        Some(token.to_owned()),
    ];
    for (method, path, body) in &endpoints {
        let send = |auth: Option<String>| {
            let mut req = match *method {
                "POST" => server.http.post(server.url(path)),
                _ => server.http.get(server.url(path)),
            };
            if let Some(b) = body {
                req = req.json(b);
            }
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.send()
        };
        for auth in &wrong {
            let r = send(auth.clone()).await.unwrap();
            assert_eq!(
                r.status().as_u16(),
                401,
                "{method} {path} with {auth:?} must be refused"
            );
        }
        let r = send(Some(format!("Bearer {token}"))).await.unwrap();
        let s = r.status().as_u16();
        assert!(
            s != 401 && s != 403 && s < 500,
            "{method} {path} with the token: {s} {}",
            r.text().await.unwrap()
        );
    }
    // Jobs were created only by the authorised request.
    let r = server
        .http
        .get(server.url("/api/v1/jobs"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let jobs: serde_json::Value = r.json().await.unwrap();
    assert_eq!(jobs["data"].as_array().unwrap().len(), 1, "{jobs}");
    // Other methods on admin paths are not a way around the guard.
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let r = server
            .http
            .request(method.clone(), server.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(r.status().as_u16(), 401 | 405),
            "{method} /api/v1/jobs: {}",
            r.status()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_is_cut_at_its_time_limit_and_bodies_at_their_size_limit() {
    let fx = Fixture::new("limits", 3000, &[0]).await;
    let server = fx
        .serve(&[
            ("STRATA__SERVING__SQL_TIMEOUT", "1s"),
            ("STRATA__SERVING__MAX_BODY_BYTES", "4096"),
        ])
        .await;
    // 3000³ rows: hours of work without the limit.
    let started = Instant::now();
    let (s, body) = server
        .post_json(
            "/api/v1/sql",
            &json!({"sql": "SELECT count(*) AS n FROM events a, events b, events c WHERE a.value + b.value > c.value"}),
            &[],
        )
        .await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("timeout"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the limit did not cut the query"
    );
    // The server is still there and answers the next query.
    let (s, body) = server
        .post_json(
            "/api/v1/sql",
            &json!({"sql": "SELECT count(*) AS n FROM events"}),
            &[],
        )
        .await;
    assert_eq!(s, 200, "{body}");

    let big = "x".repeat(8192);
    let (s, body) = server
        .post_json("/api/v1/sql", &json!({ "sql": big }), &[])
        .await;
    assert_eq!(s, 413, "{body}");
    let form: Vec<(&str, &str)> = vec![("query", &big), ("time", "4")];
    let (s, _) = server.post_form("/api/v1/query", &form).await;
    assert_eq!(s, 413);
}
