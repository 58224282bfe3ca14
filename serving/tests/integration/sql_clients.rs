//! SQL over the archive through clients none of us wrote, from Python (installed into the
//! stack's venv by `infra/stack.sh`): psycopg over the PostgreSQL protocol and ADBC's Flight SQL
//! driver over Arrow Flight SQL. Each question gets the same answer as `POST /api/v1/sql`; every
//! sandbox escape is refused through both; the token is checked; the row and time limits hold;
//! a client's cancel stops its query. The driving script is `serving/tests/clients/sql_clients.py`.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::sql::{cells, same, ENDLESS, ESCAPES, QUERIES, WRITES};
use common::{Fixture, Server};
use serde_json::{json, Value};

/// Runs the client script with `input` (ports filled in) and returns what it saw.
fn clients(server: &Server, mut input: Value) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    input["pg_port"] = json!(server.pg_port);
    input["flight_port"] = json!(server.flight_port);
    strata_testkit::venv_python(&root, "serving/tests/clients/sql_clients.py", &input)
        .unwrap_or_else(|e| panic!("client script failed: {e}"))
}

/// The rows of one result, or a panic naming the client, query and error.
fn rows(result: &Value, client: &str, sql: &str) -> Vec<Vec<String>> {
    match result.get("rows") {
        Some(rows) => serde_json::from_value(rows.clone()).unwrap(),
        None => panic!("{client}: {sql}: {}", result["error"]),
    }
}

/// The error of one result, or a panic saying it was answered.
fn error<'a>(result: &'a Value, client: &str, sql: &str) -> &'a str {
    result["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{client} was answered {sql}: {}", result["rows"]))
}

/// Waits until both protocols answer (they start once the lake is read).
fn wait_for_protocols(server: &Server, token: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = clients(server, json!({"token": token, "queries": ["SELECT 1"]}));
        if seen["psycopg"][0].get("rows").is_some() && seen["adbc"][0].get("rows").is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "SQL protocols never answered: {seen}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn psycopg_and_adbc_answer_like_the_sql_endpoint_and_refuse_what_it_refuses() {
    let fx = Fixture::new("sqlclients", 2000, &[0]).await;
    let server = fx.serve(&[("STRATA__SERVING__SQL_TIMEOUT", "120s")]).await;
    wait_for_protocols(&server, None);

    let asked: Vec<&str> = QUERIES
        .iter()
        .chain(WRITES)
        .chain(ESCAPES)
        .copied()
        .collect();
    let seen = clients(
        &server,
        json!({"queries": asked, "tables": true, "cancel": ENDLESS}),
    );
    for client in ["psycopg", "adbc"] {
        let results = seen[client].as_array().unwrap();
        for (i, sql) in QUERIES.iter().enumerate() {
            let (status, http) = server
                .post_json("/api/v1/sql", &json!({"sql": sql, "format": "csv"}), &[])
                .await;
            assert_eq!(status, 200, "{sql}: {http}");
            let (h, c) = (cells(&http), rows(&results[i], client, sql));
            assert!(!h.is_empty(), "{sql}: rows to compare");
            assert!(
                same(&h, &c),
                "{client}: {sql}\nHTTP:\n{http}\n{client}: {c:?}"
            );
        }
        for (i, sql) in WRITES.iter().enumerate() {
            let err = error(&results[QUERIES.len() + i], client, sql);
            assert!(err.contains("read-only"), "{client}: {sql}: {err}");
        }
        for (i, sql) in ESCAPES.iter().enumerate() {
            error(&results[QUERIES.len() + WRITES.len() + i], client, sql);
        }
    }
    assert!(!std::path::Path::new("/tmp/strata-sql-stolen.csv").exists());

    // What a tool browsing the catalog sees (DBeaver, pandas, ADBC's get_objects).
    let tables = &seen["tables"];
    for t in ["events", "rollup_1m", "rollup_1h"] {
        for client in ["adbc", "psycopg"] {
            let listed: Vec<String> = serde_json::from_value(tables[client].clone()).unwrap();
            assert!(
                listed.iter().any(|l| l == t),
                "{client} lists {t}: {listed:?}"
            );
        }
    }
    let columns: Vec<String> =
        serde_json::from_value(tables["adbc_events_columns"].clone()).unwrap();
    for c in ["event_id", "metric_name", "value", "timestamp_ms", "tags"] {
        assert!(
            columns.iter().any(|x| x == c),
            "events has {c}: {columns:?}"
        );
    }

    // A client's cancel (psycopg: a PostgreSQL cancel request; ADBC: cancelling the call) stops
    // a query the 120 s limit would not.
    for (client, says) in [("psycopg", "QueryCanceled"), ("adbc", "cancel")] {
        let cancel = &seen["cancel"][client];
        let err = cancel["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{client}: the endless query ended by itself: {cancel}"));
        assert!(
            err.to_lowercase().contains(&says.to_lowercase()),
            "{client}: {cancel}"
        );
        assert!(
            cancel["seconds"].as_f64().unwrap() < 60.0,
            "{client}: stopped by the cancel, not the limit: {cancel}"
        );
    }

    // And the cancelled queries stopped on the server too: it idles (two still running would
    // keep both cores busy, ~6 CPU-seconds in 3 s).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = server.cpu_seconds() - before;
    assert!(
        used < 1.5,
        "cancelled queries still running: {used:.1} CPU-s in 3 s"
    );

    // After all that, the table is intact and both protocols still answer.
    let after = clients(&server, json!({"queries": [QUERIES[0]]}));
    for client in ["psycopg", "adbc"] {
        assert_eq!(
            rows(&after[client][0], client, QUERIES[0]),
            vec![vec!["2000"]]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_guards_both_protocols_and_the_limits_hold() {
    let fx = Fixture::new("sqlauth", 2000, &[0]).await;
    let token = "t0ken-for-the-sql-protocols";
    let server = fx
        .serve(&[
            ("STRATA__SERVING__AUTH_TOKEN", token),
            ("STRATA__SERVING__SQL_TIMEOUT", "1s"),
            ("STRATA__SERVING__SQL_MAX_ROWS", "7"),
        ])
        .await;
    wait_for_protocols(&server, Some(token));
    let count = QUERIES[0];

    for (given, auth) in [
        (None, "bearer"),
        (Some("wrong-token-xxxxxxxxxx"), "bearer"),
        (Some("wrong-token-xxxxxxxxxx"), "handshake"),
    ] {
        let seen = clients(
            &server,
            json!({"token": given, "auth": auth, "queries": [count]}),
        );
        for client in ["psycopg", "adbc"] {
            let err = error(&seen[client][0], client, count).to_lowercase();
            assert!(
                err.contains("token")
                    || err.contains("password")
                    || err.contains("unauthenticated"),
                "{client} with {given:?} ({auth}): {err}"
            );
        }
    }
    for auth in ["bearer", "handshake"] {
        let seen = clients(
            &server,
            json!({"token": token, "auth": auth, "queries": [count, "SELECT event_id FROM events", ENDLESS]}),
        );
        for client in ["psycopg", "adbc"] {
            let results = &seen[client];
            assert_eq!(
                rows(&results[0], client, count),
                vec![vec!["2000"]],
                "{auth}"
            );
            // The row limit cuts a long answer, as on the HTTP endpoint.
            let ids = rows(&results[1], client, "SELECT event_id");
            assert_eq!(ids.len(), 7, "{client}: serving.sql_max_rows = 7");
            let err = error(&results[2], client, ENDLESS);
            assert!(err.contains("ran longer than"), "{client}: {err}");
        }
    }
}
