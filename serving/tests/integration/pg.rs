//! The PostgreSQL wire protocol, through a client none of us wrote: Debian's `psql`. The same
//! questions get the same answers as `POST /api/v1/sql`; psql's catalog commands work; every
//! sandbox escape the HTTP tests try is refused; the token is the password; a query past the
//! time limit is cancelled.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::sql::{cells, same, ENDLESS, ESCAPES, QUERIES, WRITES};
use common::{Fixture, Server};
use serde_json::json;

/// Runs `sql` through psql (CSV out); `Ok(stdout)` or `Err(stderr)`.
fn psql(server: &Server, sql: &str, password: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-w", "--csv", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &server.pg_port.to_string()])
        .args(["-U", "grafana", "-d", "strata", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd
        .output()
        .expect("psql (Debian postgresql-client) is installed");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Waits until the protocol answers (it starts beside the HTTP API).
fn wait_for_pg(server: &Server, password: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match psql(server, "SELECT 1", password) {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => {
                panic!("PostgreSQL protocol never answered: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_answers_like_the_sql_endpoint_and_refuses_what_it_refuses() {
    let fx = Fixture::new("pg", 2000, &[0]).await;
    let server = fx.serve(&[]).await;
    wait_for_pg(&server, None);

    for sql in QUERIES {
        let (status, http) = server
            .post_json("/api/v1/sql", &json!({"sql": sql, "format": "csv"}), &[])
            .await;
        assert_eq!(status, 200, "{sql}: {http}");
        let pg = psql(&server, sql, None).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let (h, p) = (cells(&http), cells(&pg));
        assert!(!h.is_empty(), "{sql}: rows to compare");
        assert!(same(&h, &p), "{sql}\nHTTP:\n{http}\npsql:\n{pg}");
    }

    // The catalog commands psql users type.
    let tables = psql(&server, "\\dt", None).expect("\\dt");
    for t in ["events", "rollup_1m", "rollup_1h"] {
        assert!(tables.contains(t), "\\dt lists {t}: {tables}");
    }
    let columns = psql(&server, "\\d events", None).expect("\\d events");
    for c in ["event_id", "metric_name", "timestamp_ms"] {
        assert!(columns.contains(c), "\\d events shows {c}: {columns}");
    }

    // What the HTTP sandbox refuses, refused here too, saying why.
    for sql in WRITES {
        let err = psql(&server, sql, None).expect_err(sql);
        assert!(err.contains("read-only"), "{sql}: {err}");
    }
    for sql in ESCAPES {
        assert!(psql(&server, sql, None).is_err(), "{sql} was allowed");
    }
    assert!(!std::path::Path::new("/tmp/strata-sql-stolen.csv").exists());
    let n = psql(&server, "SELECT count(*) AS n FROM events", None).unwrap();
    assert_eq!(
        cells(&n),
        vec![vec!["2000".to_owned()]],
        "the table is intact"
    );
    // Session settings drivers send still work.
    psql(&server, "SET application_name = 'check'", None).expect("session SET");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_the_password_and_a_long_query_is_cancelled() {
    let fx = Fixture::new("pgauth", 2000, &[0]).await;
    let token = "t0ken-for-the-pg-protocol";
    let server = fx
        .serve(&[
            ("STRATA__SERVING__AUTH_TOKEN", token),
            ("STRATA__SERVING__SQL_TIMEOUT", "500ms"),
            ("STRATA__SERVING__SQL_MAX_ROWS", "7"),
        ])
        .await;
    wait_for_pg(&server, Some(token));
    let none = psql(&server, "SELECT 1", None).expect_err("no password");
    assert!(none.to_lowercase().contains("password"), "{none}");
    let wrong = psql(&server, "SELECT 1", Some("wrong-password-xxxxxx")).expect_err("wrong");
    assert!(
        wrong
            .to_lowercase()
            .contains("password authentication failed"),
        "{wrong}"
    );
    assert!(psql(&server, "SELECT count(*) FROM events", Some(token)).is_ok());
    // The row limit cuts a long answer, as on the HTTP endpoint.
    let ids = psql(&server, "SELECT event_id FROM events", Some(token)).expect("rows");
    assert_eq!(cells(&ids).len(), 7, "serving.sql_max_rows = 7: {ids}");

    let err = psql(&server, ENDLESS, Some(token)).expect_err("8 billion rows do not fit in 500 ms");
    assert!(err.contains("ran longer than"), "{err}");
    // The server is still there and answers the next query.
    let n = psql(&server, "SELECT count(*) AS n FROM events", Some(token)).expect("next query");
    assert_eq!(cells(&n), vec![vec!["2000".to_owned()]]);
}
