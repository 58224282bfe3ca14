//! Dead letters kept in the lake and replayed after a fix: events refused for a rule
//! (`validation.max_tags`) and unreadable ones reach the Delta table `dead_letters` exactly
//! once, readable by SQL; the rule is relaxed, `strata-batch dead-letters replay` produces the
//! now valid ones again — run twice, they count once — and they show up in both views.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use strata_batch::dead_letters::replay::{select, Selection};
use strata_batch::sql::{Limits, SqlSession};
use strata_shared::kafka;
use strata_tests::{bin_dir, Pipeline};

const TIGHT: &str = "2";
const RELAXED: &str = "8";

fn event(id: &str, tags: usize, t: i64) -> String {
    let tags: BTreeMap<String, String> = (0..tags)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    serde_json::json!({
        "event_id": id,
        "metric_name": "replay.check",
        "value": 1.0,
        "timestamp_ms": t,
        "tags": tags,
        "source": "dlq-test",
    })
    .to_string()
}

/// `strata-batch dead-letters ARGS` with the pipeline's configuration and `max_tags`.
fn cli(p: &Pipeline, max_tags: &str, args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("strata-batch"))
        .arg("dead-letters")
        .args(args)
        .envs(p.envs())
        .env("STRATA__VALIDATION__MAX_TAGS", max_tags)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dead-letters {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

async fn total(http: &reqwest::Client, base: &str) -> Option<f64> {
    let t = chrono::Utc::now().timestamp_millis() / 1000 + 1;
    let body: serde_json::Value = http
        .post(format!("{base}/api/v1/query"))
        .form(&[
            ("query", "sum(increase(replay_check_count[2h]))".to_owned()),
            ("time", t.to_string()),
        ])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

async fn sql_rows(p: &Pipeline, q: &str) -> String {
    let s = SqlSession::open(
        &p.cfg,
        Limits {
            max_rows: 100,
            timeout: Duration::from_secs(60),
        },
    )
    .await
    .unwrap();
    let r = s.query(q).await.unwrap();
    strata_batch::sql::render(&r.batches, strata_batch::sql::OutputFormat::Csv).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_events_are_kept_and_a_replay_after_the_fix_counts_them_once() {
    let _heavy = strata_testkit::heavy().await;
    let mut p = Pipeline::start("dead_letters", &[("STRATA__VALIDATION__MAX_TAGS", TIGHT)])
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let t = chrono::Utc::now().timestamp_millis() - 120_000;
    let producer: FutureProducer = kafka::producer_config(&p.cfg.kafka).create().unwrap();
    let mut payloads: Vec<String> = Vec::new();
    payloads.extend((0..10).map(|i| event(&format!("ok-{i}"), 1, t)));
    payloads.extend((0..20).map(|i| event(&format!("wide-{i}"), 4, t)));
    payloads.extend((0..5).map(|i| format!("{{not json {i}")));
    for body in &payloads {
        producer
            .send(
                FutureRecord::to(&p.cfg.kafka.topic).key("k").payload(body),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }

    // Every refused message lands in `dead_letters` once, with its reason.
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let rows = select(&p.cfg, &Selection::default()).await.unwrap();
        if rows.len() >= 25 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for d in &rows {
        *reasons.entry(d.reason.clone()).or_default() += 1;
    }
    assert_eq!(
        reasons,
        BTreeMap::from([("bad_json".to_owned(), 5), ("too_many_tags".to_owned(), 20)]),
        "{}",
        p.logs()
    );
    assert!(rows.iter().all(|d| d.origin_topic == p.cfg.kafka.topic));
    let by_sql = sql_rows(
        &p,
        "SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason ORDER BY reason",
    )
    .await;
    assert!(
        by_sql.contains("bad_json,5") && by_sql.contains("too_many_tags,20"),
        "{by_sql}"
    );
    let listed = cli(
        &p,
        TIGHT,
        &["list", "--reason", "too_many_tags", "--limit", "3"],
    );
    assert!(
        listed.contains("too_many_tags") && listed.contains("17 more"),
        "{listed}"
    );
    let one = rows.iter().find(|d| d.reason == "too_many_tags").unwrap();
    let shown = cli(&p, TIGHT, &["show", &one.key()]);
    assert!(shown.contains("wide-") && shown.contains("tags"), "{shown}");

    // Before the fix a replay changes nothing: they are still refused.
    let dry = cli(&p, TIGHT, &["replay", "--dry-run"]);
    assert!(dry.contains("selected 25: 0 valid now"), "{dry}");
    // The fix: the services and the replay run with a wider limit.
    for (service, args) in [
        ("speed", vec!["strata-speed", "run"]),
        ("archive", vec!["strata-batch", "archive"]),
        ("serving", vec!["strata-serving"]),
    ] {
        p.kill(service);
        p.spawn(service, &args, &[("STRATA__VALIDATION__MAX_TAGS", RELAXED)])
            .unwrap();
    }
    p.wait_ready().await.unwrap();
    let first = cli(&p, RELAXED, &["replay"]);
    assert!(
        first.contains("selected 25: 20 replayed, 0 already replayed, 5 still invalid")
            && first.contains("bad_json × 5"),
        "{first}"
    );
    let second = cli(&p, RELAXED, &["replay", "--reason", "too_many_tags"]);
    assert!(
        second.contains("selected 20: 0 replayed, 20 already replayed"),
        "{second}"
    );

    // Both views count each event once: 10 valid from the start, 20 replayed.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut got = None;
    while Instant::now() < deadline {
        got = total(&http, &p.serving_url).await;
        if got == Some(30.0) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(got, Some(30.0), "speed view\n{}", p.logs());
    let deadline = Instant::now() + Duration::from_secs(90);
    let archived = loop {
        let a = sql_rows(
            &p,
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events \
             WHERE metric_name = 'replay.check'",
        )
        .await;
        if a.contains("30,30") || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(archived.contains("30,30"), "archive: {archived}");
    let hour = t.div_euclid(3_600_000) * 3_600_000;
    strata_batch::recompute::recompute(&p.cfg, hour, hour + 2 * 3_600_000)
        .await
        .unwrap();
    let batch = sql_rows(
        &p,
        "SELECT sum(count) AS n FROM rollup_1m WHERE metric_name = 'replay.check'",
    )
    .await;
    assert!(
        batch.lines().any(|l| l.trim() == "30"),
        "batch view: {batch}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(total(&http, &p.serving_url).await, Some(30.0), "merged");
}
