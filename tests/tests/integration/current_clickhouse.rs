//! Strata's ClickHouse SQL on a current ClickHouse release, not only on the local stack's 18.16.
//!
//! Every statement the code sends — the schema migration, the speed writer's insert (its real
//! RowBinary body), the offset read and the in-flight check, the cardinality guard's rebuild, the
//! monitor's gauges and retention, every query of the serving layer — is recorded on its way to
//! 18.16 (`strata_tests::recorder`), values bound as the client binds them. The same statements
//! then run, in order, on ClickHouse 26.9 in-process (`chdb-core`, installed into the stack's
//! venv by `infra/stack.sh`), and every answer about the data is compared with 18.16's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_serving::source::speed::SpeedSource;
use strata_serving::window::Need;
use strata_shared::Config;
use strata_speed::clickhouse::writer::RollupWriter;
use strata_speed::rollup::{Batch, Labels};
use strata_testkit::gen::{Generator, Spec};
use strata_tests::recorder::{decompress, Recorded, Recorder};

/// A recorded request as a statement for the replay: (database, settings, SQL, rows).
struct Statement {
    database: Option<String>,
    settings: BTreeMap<String, String>,
    sql: String,
    data: Option<Vec<u8>>,
}

fn statement(r: &Recorded) -> Statement {
    let query = r.target.split_once('?').map_or("", |(_, q)| q);
    let mut params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let database = params.remove("database");
    let compressed = params.get("decompress").is_some_and(|v| v == "1");
    let body = if compressed {
        decompress(&r.body).expect("a ClickHouse-compressed body")
    } else {
        r.body.clone()
    };
    match params.remove("query") {
        Some(sql) => Statement {
            database,
            settings: params,
            sql,
            data: (!body.is_empty()).then_some(body),
        },
        None => Statement {
            database,
            settings: params,
            sql: String::from_utf8(body).expect("SQL in the body"),
            data: None,
        },
    }
}

fn is_data_select(sql: &str) -> bool {
    let s = sql.trim_start().to_ascii_uppercase();
    (s.starts_with("SELECT") || s.starts_with("WITH")) && !s.contains("SYSTEM.") && s != "SELECT 1"
}

/// Without the client's `FORMAT …` at the end.
fn unformatted(sql: &str) -> &str {
    let t = sql.trim_end();
    match t.to_ascii_uppercase().rfind(" FORMAT ") {
        Some(i) if !t[i + 8..].trim().contains(' ') => &t[..i],
        _ => t,
    }
}

/// A TSV answer in an order-free form: its rows sorted.
fn normalized(tsv: &str) -> Vec<Vec<String>> {
    let mut lines: Vec<Vec<String>> = tsv
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    lines.sort();
    lines
}

/// Whether two fields agree: equal text, or numbers (in arrays too) within `tolerance`.
fn same_field(a: &str, b: &str, tolerance: f64) -> bool {
    if a == b {
        return true;
    }
    let items = |f: &str| -> Vec<String> {
        f.trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    let (x, y) = (items(a), items(b));
    x.len() == y.len()
        && x.iter()
            .zip(&y)
            .all(|(x, y)| match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(x), Ok(y)) => (x - y).abs() <= tolerance * x.abs().max(y.abs()).max(1e-12),
                _ => x == y,
            })
}

async fn ch_tsv(cfg: &Config, database: Option<&str>, sql: &str) -> String {
    let mut req = reqwest::Client::new()
        .post(&cfg.clickhouse.url)
        .body(format!("{} FORMAT TSV", unformatted(sql)));
    if let Some(db) = database {
        req = req.query(&[("database", db)]);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "18.16 refused {sql}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn every_statement_strata_sends_runs_on_current_clickhouse_and_answers_the_same() {
    let python = strata_tests::root().join(".strata/venv/bin/python");
    let direct = Config::load(None).expect("configuration");
    let upstream = direct
        .clickhouse
        .url
        .trim_start_matches("http://")
        .to_owned();
    let rec = Recorder::start(upstream.trim_end_matches('/'))
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = direct.clone();
    cfg.clickhouse.database = format!("strata_test_chdb_{}", &id[..12]);
    cfg.clickhouse.url = format!("http://127.0.0.1:{}", rec.port);
    let mut direct_db = direct.clone();
    direct_db.clickhouse.database = cfg.clickhouse.database.clone();

    // The speed layer: schema, two batches (with offset markers), offsets, the guard's rebuild.
    strata_speed::clickhouse::schema::migrate(&cfg.clickhouse)
        .await
        .expect("ClickHouse (run `make up`)");
    let topic = format!("chdb-{id}");
    let writer = RollupWriter::new(&cfg.clickhouse, &topic, Duration::from_secs(1));
    let spec = Spec {
        base_time_ms: chrono::Utc::now().timestamp_millis() - 600_000,
        spread_ms: 1_800_000,
        series: 40,
        metrics: 3,
        seed: 9,
        ..Spec::default()
    };
    let events: Vec<_> = Generator::new(spec)
        .take(6000)
        .filter_map(|m| m.event)
        .collect();
    for (part, chunk) in events.chunks(3000).enumerate() {
        let mut batch = Batch::default();
        for e in chunk {
            let labels = || Labels {
                metric_name: Arc::from(e.metric_name.as_str()),
                source: Arc::from(e.source.as_str()),
                tag_keys: e.tags.keys().cloned().collect::<Vec<_>>().into(),
                tag_values: e.tags.values().cloned().collect::<Vec<_>>().into(),
            };
            batch.add(e.series_id(), e.timestamp_ms, e.value, labels);
        }
        batch.cover(part as i32, chunk.len() as i64 - 1);
        writer.insert_once(&batch).await.expect("insert");
    }
    let offsets = writer.settled_offsets().await.unwrap();
    assert_eq!(offsets, BTreeMap::from([(0, 2999), (1, 2999)]));
    assert!(!writer
        .admitted_series(cfg.speed.series_live_window)
        .await
        .unwrap()
        .is_empty());
    let metrics = strata_speed::metrics::Metrics::new(&prometheus::Registry::new()).unwrap();
    // The monitor's client, as `strata_speed::monitor::run` makes it.
    let server = strata_shared::clickhouse::client(&cfg.clickhouse);
    strata_speed::monitor::gauges(&server, &cfg.clickhouse.database, &metrics)
        .await
        .unwrap();

    // The serving layer: names, series, windows (totals and quantiles, minute and 5-minute grids).
    let now = chrono::Utc::now().timestamp_millis();
    let source = SpeedSource::new(&cfg.clickhouse, cfg.validation.max_future);
    let ranges = [(now - 3_600_000, now + 60_000)];
    let names = source.metric_names(&ranges).await.unwrap();
    assert_eq!(names.len(), 3);
    let series = source.series(Some(&names), &ranges).await.unwrap();
    source.series(None, &ranges).await.unwrap();
    for m in &names {
        let ids: Vec<u64> = series
            .iter()
            .filter(|s| &s.metric == m)
            .map(|s| s.series_id)
            .collect();
        source
            .buckets(m, &ids, &ranges, (0, 60_000), Need::Totals)
            .await
            .unwrap();
        source
            .buckets(m, &ids, &ranges, (ranges[0].0, 300_000), Need::Quantiles)
            .await
            .unwrap();
    }
    assert!(source.ping().await);
    // The values of each (series, 5-minute window) of the quantile queries, sorted.
    let mut windows: BTreeMap<(u64, i64), Vec<f64>> = BTreeMap::new();
    for e in &events {
        let minute = e.timestamp_ms.div_euclid(60_000) * 60_000;
        if (ranges[0].0..ranges[0].1).contains(&minute) {
            let k = (minute + 60_000 - ranges[0].0 + 299_999).div_euclid(300_000);
            windows.entry((e.series_id(), k)).or_default().push(e.value);
        }
    }
    windows.values_mut().for_each(|v| v.sort_by(f64::total_cmp));

    // 18.16's answers to every data query, now, before retention empties the table.
    let recorded: Vec<Statement> = rec.requests().iter().map(statement).collect();
    let mut reference = BTreeMap::new();
    for (i, st) in recorded.iter().enumerate() {
        if st.data.is_none() && is_data_select(&st.sql) {
            reference.insert(i, ch_tsv(&direct, st.database.as_deref(), &st.sql).await);
        }
    }
    assert!(
        reference.len() >= 8,
        "data queries recorded: {}",
        reference.len()
    );

    // Retention with nothing kept: every partition is dropped.
    let mut keep_none = cfg.clone();
    keep_none.speed.retention_days = 0;
    let dropped = strata_speed::monitor::enforce_retention(&server, &keep_none, &metrics)
        .await
        .unwrap();
    assert!(dropped >= 1);
    let mut statements: Vec<Statement> = rec.requests().iter().map(statement).collect();
    // The in-flight check's KILL is sent only for an insert that hangs: replay its form too.
    statements.push(Statement {
        database: None,
        settings: BTreeMap::new(),
        sql: format!(
            "KILL QUERY WHERE query_id = '{}x' SYNC",
            writer.query_id_prefix()
        ),
        data: None,
    });

    // The same statements on ClickHouse 26.9.
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Vec::new();
    for (i, st) in statements.iter().enumerate() {
        let (data, columns) = match &st.data {
            Some(rows) => {
                let path = dir.path().join(format!("rows-{i}.bin"));
                std::fs::write(&path, rows).unwrap();
                let table = st
                    .sql
                    .split_whitespace()
                    .nth(2)
                    .unwrap()
                    .split('(')
                    .next()
                    .unwrap();
                let cols: Vec<(String, String)> = ch_tsv(
                    &direct,
                    st.database.as_deref(),
                    &format!("SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = '{}'", table.trim_matches('`')),
                )
                .await
                .lines()
                .map(|l| {
                    let (n, t) = l.split_once('\t').unwrap();
                    (n.to_owned(), t.to_owned())
                })
                .collect();
                (Some(path.display().to_string()), Some(cols))
            }
            None => (None, None),
        };
        spec.push(serde_json::json!({
            "database": st.database,
            "settings": st.settings,
            "sql": st.sql,
            "data": data,
            "columns": columns,
        }));
    }
    let input = dir.path().join("statements.json");
    std::fs::write(
        &input,
        serde_json::to_vec(&serde_json::json!({
            "dir": dir.path().join("chdb").display().to_string(),
            "statements": spec,
        }))
        .unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(&python)
        .arg(strata_tests::root().join("tests/chdb/replay.py"))
        .arg(&input)
        .output()
        .expect("the stack's venv (run `make up`)");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers.len(), statements.len());
    let mut compared = 0;
    for (i, (st, a)) in statements.iter().zip(&answers).enumerate() {
        assert!(
            a["ok"].as_bool().unwrap(),
            "ClickHouse 26.9 refuses statement {i}:\n{}\n{}",
            st.sql,
            a["error"]
        );
        if let Some(want) = reference.get(&i) {
            let (got, want) = (normalized(a["tsv"].as_str().unwrap()), normalized(want));
            assert_eq!(got.len(), want.len(), "rows of {}", st.sql);
            // Everything is exact but t-digest estimates, which releases compute differently:
            // each quantile of the window query (`series_id, k, …, qs`) must be, on both
            // servers, a fair estimate of the exact one — within two ranks (or 2 %) of it.
            let digest = st.sql.contains("quantilesTDigest");
            for (g, w) in got.iter().zip(&want) {
                let exact = if digest { g.len() - 1 } else { g.len() };
                assert!(
                    g.len() == w.len()
                        && g[..exact]
                            .iter()
                            .zip(&w[..exact])
                            .all(|(x, y)| same_field(x, y, 1e-9)),
                    "{}\n26.9: {g:?}\n18.16: {w:?}",
                    st.sql
                );
                if digest {
                    let key = (g[0].parse::<u64>().unwrap(), g[1].parse::<i64>().unwrap());
                    let values = &windows[&key];
                    for answer in [&g[exact], &w[exact]] {
                        let qs = answer.trim_matches(|c| c == '[' || c == ']').split(',');
                        for (q, v) in [0.5, 0.9, 0.95, 0.99].iter().zip(qs) {
                            assert!(
                                near_rank(values, *q, v.parse().unwrap()),
                                "p{q} {v} of {values:?}\n26.9: {g:?}\n18.16: {w:?}"
                            );
                        }
                    }
                }
            }
            compared += 1;
        }
    }
    assert_eq!(compared, reference.len());
    strata_testkit::drop_clickhouse_database(&direct_db.clickhouse);
}

/// Whether `got` estimates quantile `q` of sorted `values` fairly: between the values two ranks
/// (or 2 % of the ranks) either side of the exact position.
fn near_rank(values: &[f64], q: f64, got: f64) -> bool {
    let n = values.len() as f64;
    let pos = q * (n - 1.0);
    let slack = (0.02 * n).max(2.0);
    let lo = values[(pos - slack).floor().max(0.0) as usize];
    let hi = values[(pos + slack).ceil().min(n - 1.0) as usize];
    lo - 1e-9 <= got && got <= hi + 1e-9
}

#[test]
fn a_client_format_is_taken_off_and_answers_compare_without_order() {
    assert_eq!(unformatted("SELECT 1 FORMAT RowBinary"), "SELECT 1");
    assert_eq!(unformatted("SELECT x FROM t"), "SELECT x FROM t");
    assert_eq!(
        normalized("b\t[3,1,2]\na\t[2.5]\n"),
        vec![
            vec!["a".to_owned(), "[2.5]".to_owned()],
            vec!["b".to_owned(), "[3,1,2]".to_owned()]
        ]
    );
    assert!(same_field("[1,2.0000000001]", "[1,2]", 1e-9));
    assert!(!same_field("[1,2.1]", "[1,2]", 1e-9));
    assert!(same_field("[100,210]", "[101,200]", 0.05));
    assert!(!same_field("x", "y", 1.0));
}
