//! Alerting: the rule files pass promtool, and alerts evaluated by a real vmalert against the
//! whole pipeline reach a real Alertmanager and resolve.
//!
//! The end-to-end test imports a week of seasonal history into the lake and recomputes it (the
//! anomaly bands' long baselines come from the batch layer), then feeds live events through
//! Kafka: a steady series that must never alert, a level shift, a spike, a threshold breach and a
//! metric that stops; then kills strata-speed for Strata's own alert. On the way it restarts
//! vmalert while an alert is pending: the alert state written back to Strata by remote write
//! must keep its `for` clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use strata_shared::kafka;
use strata_testkit::gen::truth::hour_start;
use strata_tests::alerting::{
    event_json, import_history, render_anomaly_rules, seasonal, Alert, Alertmanager, Vmalert,
    LATENCY,
};
use strata_tests::{promtool, root, Pipeline};

const HOUR_MS: i64 = 3_600_000;
const WEEK_MS: i64 = 7 * 24 * HOUR_MS;
const ORDERS: &str = "shop_orders";

#[test]
fn rule_files_pass_promtool_and_the_anomaly_rules_are_rendered_from_their_list() {
    let rules = root().join("infra/alerting/rules");
    let mut files: Vec<String> = std::fs::read_dir(&rules)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    promtool(&args).expect("promtool check rules");

    let tests = root().join("infra/alerting/tests");
    let mut files: Vec<String> = std::fs::read_dir(&tests)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "rule tests: {files:?}");
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    promtool(&args).expect("promtool test rules");

    // The shipped anomaly rules are what the script renders from the shipped list.
    let out = std::process::Command::new(root().join("infra/alerting/render-anomaly-rules.sh"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(rules.join("anomaly.rules.yml")).unwrap(),
        "infra/alerting/rules/anomaly.rules.yml is stale: run infra/alerting/render-anomaly-rules.sh > infra/alerting/rules/anomaly.rules.yml"
    );
}

/// Threshold, no-data and a long-`for` rule of the test's own, as a user writes them.
const SHOP_RULES: &str = r#"
groups:
  - name: shop
    interval: 15s
    rules:
      - alert: ShopLatencyHigh
        expr: max by (source) (shop_latency_max) > 2000
        for: 30s
        labels: { severity: page }
        annotations:
          summary: "shop latency of {{ $labels.source }} is {{ $value }}"
      - alert: ShopOrdersStopped
        expr: absent_over_time(shop_orders_count{source="stopped"}[2m])
        for: 30s
        labels: { severity: warning }
        annotations:
          summary: "no shop_orders from stopped for 2 minutes"
      - alert: ShopSlowBurn
        expr: max by (source) (shop_latency_max{source="steady"}) > 0
        for: 4m
        labels: { severity: info }
        annotations:
          summary: "a pending alert whose for clock must survive a vmalert restart"
"#;

/// What the feeder injects, switched by the test.
#[derive(Default)]
struct Faults {
    shift: AtomicBool,
    spike: AtomicBool,
    breach: AtomicBool,
    stopped: AtomicBool,
}

impl Faults {
    fn set_all(&self, on: bool) {
        for f in [&self.shift, &self.spike, &self.breach, &self.stopped] {
            f.store(on, Ordering::Relaxed);
        }
    }
}

/// The level of `source` at `t` under the current faults (None: send nothing).
fn level(f: &Faults, source: &str, t: i64) -> Option<f64> {
    let base = seasonal(t, source);
    let on = |b: &AtomicBool| b.load(Ordering::Relaxed);
    Some(match source {
        "shift" if on(&f.shift) => base + 400.0,
        "spike" if on(&f.spike) => base * 6.0,
        "breach" if on(&f.breach) => 5_000.0,
        "stopped" if on(&f.stopped) => return None,
        _ => base,
    })
}

const SOURCES: [(&str, &str); 5] = [
    (LATENCY, "steady"),
    (LATENCY, "shift"),
    (LATENCY, "spike"),
    (LATENCY, "breach"),
    (ORDERS, "stopped"),
];

/// Sends the minutes since `from_ms` (one event a minute), then an event per series every 5 s.
async fn feed(producer: FutureProducer, topic: String, faults: Arc<Faults>, from_ms: i64) {
    let send = |metric: &str, source: &str, t: i64, v: f64| {
        let body = event_json(metric, source, t, v);
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let _ = producer
                .send(
                    FutureRecord::to(&topic).key(&body[..8]).payload(&body),
                    Duration::from_secs(30),
                )
                .await;
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let mut t = from_ms;
    while t < now - 60_000 {
        for (metric, source) in SOURCES {
            send(metric, source, t + 1_000, seasonal(t, source)).await;
        }
        t += 60_000;
    }
    loop {
        let t = chrono::Utc::now().timestamp_millis();
        for (metric, source) in SOURCES {
            if let Some(v) = level(&faults, source, t) {
                send(metric, source, t, v).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Every alert Alertmanager held at some poll, by (alertname, source).
#[derive(Default)]
struct Seen(BTreeMap<(String, String), Alert>);

impl Seen {
    async fn poll(&mut self, am: &Alertmanager) -> Vec<Alert> {
        let now = am.alerts().await.unwrap_or_default();
        for a in &now {
            self.0.entry(a.key()).or_insert_with(|| a.clone());
        }
        now
    }
}

fn key(name: &str, source: &str) -> (String, String) {
    (name.to_owned(), source.to_owned())
}

/// Polls Alertmanager until `done` holds of its alerts (or panics after `within`).
async fn until(
    am: &Alertmanager,
    seen: &mut Seen,
    within: Duration,
    what: &str,
    vm: &Vmalert,
    mut done: impl FnMut(&[Alert]) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let now = seen.poll(am).await;
        if done(&now) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not within {within:?}; Alertmanager holds {:?}\nvmalert:\n{}",
            now.iter().map(Alert::key).collect::<Vec<_>>(),
            vm.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn has(alerts: &[Alert], name: &str, source: &str) -> bool {
    alerts.iter().any(|a| a.key() == key(name, source))
}

/// `GET url?query` as JSON (None: no answer, or not JSON).
async fn get_json(http: &reqwest::Client, url: &str, query: &[(&str, &str)]) -> Option<Value> {
    http.get(url)
        .query(query)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// vmalert's view of one alert through strata-serving's `/api/v1/alerts` (forwarded).
async fn vmalert_alert(http: &reqwest::Client, serving: &str, name: &str) -> Option<Value> {
    let v = get_json(http, &format!("{serving}/api/v1/alerts"), &[]).await?;
    v["data"]["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_from_the_pipeline_reach_alertmanager_and_resolve() {
    let _heavy = strata_testkit::heavy().await;
    let vmalert_port = strata_testkit::free_port();
    let rules_url = format!("http://127.0.0.1:{vmalert_port}");
    let mut p = Pipeline::start("alerting", &[("STRATA__SERVING__RULES_URL", &rules_url)])
        .await
        .unwrap();
    let http = reqwest::Client::new();

    // A week (and two hours) of seasonal history, exact in the batch layer.
    let now = chrono::Utc::now().timestamp_millis();
    let h = hour_start(now);
    let imported = import_history(&p, &SOURCES, h - WEEK_MS - 2 * HOUR_MS, h)
        .await
        .unwrap();
    assert_eq!(
        imported,
        5 * (7 * 24 + 2) * 60,
        "one event a minute per series"
    );

    // The rules: anomaly bands for shop_latency_avg (for 1 m), the shop's own, Strata's own.
    let rules = p.dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let anomaly = render_anomaly_rules(&["shop_latency_avg"], "1m", "15s").unwrap();
    std::fs::write(rules.join("anomaly.yml"), anomaly).unwrap();
    std::fs::write(rules.join("shop.yml"), SHOP_RULES).unwrap();
    std::fs::copy(
        root().join("infra/alerting/rules/strata.rules.yml"),
        rules.join("strata.yml"),
    )
    .unwrap();

    // Live events from the hour's start on, through Kafka and the speed layer.
    let faults = Arc::new(Faults::default());
    let producer: FutureProducer = kafka::producer_config(&p.cfg.kafka).create().unwrap();
    let feeder = tokio::spawn(feed(producer, p.cfg.kafka.topic.clone(), faults.clone(), h));
    let am = Alertmanager::start().await.unwrap();
    let mut vm = Vmalert::start(
        &p,
        vmalert_port,
        &format!("{}/*.yml", rules.display()),
        &am.url,
        Duration::from_secs(15),
    )
    .await
    .unwrap();
    let mut seen = Seen::default();

    // Grafana's rule list and alert list come through strata-serving.
    let listed = get_json(&http, &format!("{}/api/v1/rules", p.serving_url), &[])
        .await
        .expect("rules through strata-serving");
    let groups: BTreeSet<&str> = listed["data"]["groups"]
        .as_array()
        .expect("rule groups from vmalert")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for g in ["anomaly-bands", "anomaly-alerts", "shop", "strata-self"] {
        assert!(groups.contains(g), "{g} not listed: {groups:?}");
    }

    // 1. A pending alert keeps its `for` clock through a vmalert restart: vmalert wrote
    //    ALERTS_FOR_STATE to Strata by remote write and reads it back on start.
    let deadline = Instant::now() + Duration::from_secs(240);
    let active_at = loop {
        if let Some(a) = vmalert_alert(&http, &p.serving_url, "ShopSlowBurn").await {
            if a["state"] == "pending" {
                break a["activeAt"].as_str().unwrap().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "ShopSlowBurn never pending:\n{}\n{}",
            vm.log_tail(),
            p.logs()
        );
        seen.poll(&am).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let pending_since = Instant::now();
    while pending_since.elapsed() < Duration::from_secs(100) {
        seen.poll(&am).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    vm.restart().await.unwrap();
    let restarted = Instant::now();
    until(
        &am,
        &mut seen,
        Duration::from_secs(300),
        "ShopSlowBurn firing",
        &vm,
        |a| has(a, "ShopSlowBurn", "steady"),
    )
    .await;
    let after = vmalert_alert(&http, &p.serving_url, "ShopSlowBurn")
        .await
        .expect("ShopSlowBurn after the restart");
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    let restored = after["activeAt"].as_str().unwrap();
    assert!(
        (at(restored) - at(&active_at)).abs() < 1_000,
        "the restored alert keeps the time it became pending: {restored} vs {active_at}"
    );
    assert!(
        restarted.elapsed() < Duration::from_secs(200),
        "fired {:?} after the restart: the 4 m clock started again",
        restarted.elapsed()
    );

    // Recording rules' results come back through remote write: the band is queryable.
    let band = get_json(
        &http,
        &format!("{}/api/v1/query", p.serving_url),
        &[(
            "query",
            "last_over_time(anomaly:upper_band{anomaly_name=\"shop_latency_avg\",source=\"steady\"}[5m])",
        )],
    )
    .await
    .expect("an answer");
    let upper: f64 = band["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("no recorded band: {band}"))
        .parse()
        .unwrap();
    let level_now = seasonal(chrono::Utc::now().timestamp_millis(), "steady");
    assert!(
        upper > level_now && upper < level_now + 300.0,
        "upper band {upper} around a level of {level_now}"
    );

    // 2. Faults: each reaches Alertmanager with its labels and annotations.
    faults.set_all(true);
    let expected = [
        key("AnomalousLevel", "shift"),
        key("AnomalousLevel", "spike"),
        key("ShopLatencyHigh", "breach"),
        key("ShopOrdersStopped", "stopped"),
    ];
    until(
        &am,
        &mut seen,
        Duration::from_secs(300),
        "every injected fault alerting",
        &vm,
        |a| expected.iter().all(|(n, s)| has(a, n, s)),
    )
    .await;
    let shift = &seen.0[&key("AnomalousLevel", "shift")];
    assert_eq!(shift.labels["anomaly_name"], "shop_latency_avg");
    assert_eq!(shift.labels["kind"], "anomaly");
    assert!(
        shift.annotations["summary"].starts_with("shop_latency_avg is "),
        "{shift:?}"
    );
    let breach = &seen.0[&key("ShopLatencyHigh", "breach")];
    assert_eq!(breach.labels["severity"], "page");
    assert_eq!(
        breach.annotations["summary"],
        "shop latency of breach is 5000"
    );

    // ... and resolves after its condition ends.
    faults.set_all(false);
    until(
        &am,
        &mut seen,
        Duration::from_secs(300),
        "every fault's alert resolved",
        &vm,
        |a| !expected.iter().any(|(n, s)| has(a, n, s)),
    )
    .await;

    // The steady series raised nothing all along.
    let false_positives: Vec<_> = seen
        .0
        .keys()
        .filter(|(n, s)| s == "steady" && n != "ShopSlowBurn")
        .collect();
    assert!(
        false_positives.is_empty(),
        "alerts on the steady series: {false_positives:?}"
    );

    // 3. Strata's own alert: strata-speed killed, then back.
    p.kill("speed");
    until(
        &am,
        &mut seen,
        Duration::from_secs(360),
        "StrataSpeedNotReporting firing",
        &vm,
        |a| has(a, "StrataSpeedNotReporting", ""),
    )
    .await;
    let speed = &seen.0[&key("StrataSpeedNotReporting", "")];
    assert_eq!(speed.labels["component"], "speed");
    assert!(speed.annotations["runbook"].contains("strata-speed"));
    p.spawn("speed", &["strata-speed", "run"], &[]).unwrap();
    until(
        &am,
        &mut seen,
        Duration::from_secs(360),
        "StrataSpeedNotReporting resolved",
        &vm,
        |a| !has(a, "StrataSpeedNotReporting", ""),
    )
    .await;
    feeder.abort();
}
