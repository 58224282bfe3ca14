//! `make bench-sql`: one large result (BENCH_SQL_ROWS, 1M rows of `rollup_1m` by default)
//! fetched from strata-serving three ways, as a notebook user would fetch it — `POST
//! /api/v1/sql` as JSON (Python's urllib and json), the PostgreSQL protocol (psycopg) and Arrow
//! Flight SQL (ADBC's driver). The views are written with the batch layer's own commit code into
//! a local lake folder; strata-serving is the release build. Each client fetches the result
//! BENCH_SQL_REPEAT (3) times, interleaved with the others; the median counts.
//!
//! Last line: `sql-bench: rows=N http_ms=N pg_ms=N flight_ms=N vs_http=R` where
//! vs_http = flight_ms / http_ms (goal ≤ 0.5: Arrow end to end in at most half the JSON time).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{write_views, Family, DAY};
use strata_testkit::{env_u64, free_port};

const SQL: &str =
    "SELECT metric_name, source, series_id, start_ms, count, sum, min, max, p50, p99 \
                   FROM rollup_1m";

/// Runs the Python clients with `input`; their JSON answer.
fn clients(input: serde_json::Value) -> Result<serde_json::Value, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    strata_testkit::venv_python(&root, "serving/benches/sql_bench.py", &input)
}

fn median(values: &serde_json::Value) -> f64 {
    let mut v: Vec<f64> = values
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let rows = env_u64("BENCH_SQL_ROWS", 1_000_000);
    let repeat = env_u64("BENCH_SQL_REPEAT", 3);
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::bench_config("sql", dir.path());
    // One day of minute rows: `rows` / 1440 series.
    let series = rows.div_ceil(1440) as u32;
    let end = chrono::Utc::now().timestamp_millis().div_euclid(DAY) * DAY;
    let t = Instant::now();
    let (minute_rows, _) =
        write_views(&cfg, &[Family::new("bench_sql", series)], end - DAY, end).await;
    eprintln!(
        "{minute_rows} minute rows written in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    let (pg_port, flight_port) = (free_port(), free_port());
    let pg_listen = format!("127.0.0.1:{pg_port}");
    let flight_listen = format!("127.0.0.1:{flight_port}");
    let max_rows = (minute_rows + 1).to_string();
    let serving = common::Serving::start(
        &cfg,
        dir.path(),
        &[
            ("STRATA__SERVING__PG_LISTEN", &pg_listen),
            ("STRATA__SERVING__FLIGHT_LISTEN", &flight_listen),
            ("STRATA__SERVING__SQL_MAX_ROWS", &max_rows),
            ("STRATA__SERVING__SQL_TIMEOUT", "600s"),
        ],
    );
    let input = |sql: &str, repeat: u64| {
        serde_json::json!({
            "http": serving.base, "pg_port": pg_port, "flight_port": flight_port,
            "sql": sql, "repeat": repeat,
        })
    };
    // Ready: all three answer a small query over the lake.
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Err(e) = clients(input("SELECT count(*) FROM rollup_1m", 1)) {
        assert!(
            Instant::now() < deadline,
            "strata-serving's SQL protocols never answered: {e}\n{}",
            std::fs::read_to_string(&serving.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen = clients(input(SQL, repeat)).expect("the large fetch");
    for client in ["http", "pg", "flight"] {
        assert_eq!(
            seen["rows"][client].as_u64(),
            Some(minute_rows as u64),
            "{client} fetched every row: {seen}"
        );
        eprintln!("{client}: {} ms", seen["ms"][client]);
    }
    let (http, pg, flight) = (
        median(&seen["ms"]["http"]),
        median(&seen["ms"]["pg"]),
        median(&seen["ms"]["flight"]),
    );
    println!(
        "sql-bench: rows={minute_rows} http_ms={http:.0} pg_ms={pg:.0} flight_ms={flight:.0} vs_http={:.2}",
        flight / http
    );
    common::drop_database(&cfg);
}
