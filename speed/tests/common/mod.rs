//! Test helpers: each test gets its own topics, ClickHouse database and consumer group on the
//! real local stack (`make up`), runs the real `strata-speed` binary, and compares ClickHouse
//! with the generator's ground truth.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
use serde::Deserialize;
use strata_shared::config::KafkaConfig;
use strata_shared::stats::quantile_cont;
use strata_shared::{kafka, Config};
use strata_testkit::gen::produce::{produce, Report, Run};
use strata_testkit::gen::truth::{Truth, TruthRow};
use strata_testkit::gen::Spec;
#[allow(unused_imports)]
pub use strata_testkit::{free_port, scrape, Proc};

/// One test's private slice of the stack.
pub struct TestEnv {
    pub name: String,
    pub cfg: Config,
    pub log_dir: PathBuf,
}

/// One aggregated rollup bucket read back from ClickHouse.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct ChRow {
    pub series_id: u64,
    pub start: u32,
    pub cnt: u64,
    pub total: f64,
    pub mn: f64,
    pub mx: f64,
    pub q: Vec<f64>,
}

impl TestEnv {
    pub async fn new(name: &str) -> TestEnv {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut cfg = Config::load(None).expect("configuration from the environment");
        cfg.kafka.topic = format!("strata-test-{name}-{id}");
        cfg.kafka.dlq_topic = format!("strata-test-{name}-{id}-dlq");
        cfg.clickhouse.database = format!("strata_test_{}_{}", name.replace('-', "_"), &id[..12]);
        cfg.speed.group_id = format!("strata-test-{name}-{id}");
        cfg.speed.listen = format!("127.0.0.1:{}", free_port());
        kafka::create_topics(
            &cfg.kafka,
            &[(&cfg.kafka.topic, 12), (&cfg.kafka.dlq_topic, 12)],
        )
        .await
        .expect("create topics (is the stack up? run `make up`)");
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{id}"));
        std::fs::create_dir_all(&log_dir).unwrap();
        TestEnv {
            name: name.to_owned(),
            cfg,
            log_dir,
        }
    }

    /// The same topics with a fresh database and consumer group (to consume the same data again).
    pub fn fork(&self, suffix: &str) -> TestEnv {
        let mut cfg = self.cfg.clone();
        cfg.clickhouse.database = format!("{}_{suffix}", cfg.clickhouse.database);
        cfg.speed.group_id = format!("{}-{suffix}", cfg.speed.group_id);
        TestEnv {
            name: format!("{}-{suffix}", self.name),
            cfg,
            log_dir: self.log_dir.clone(),
        }
    }

    /// Environment variables that point a strata-speed process at this test's slice.
    pub fn envs(&self) -> Vec<(String, String)> {
        let c = &self.cfg;
        vec![
            ("STRATA__KAFKA__BROKERS".into(), c.kafka.brokers.clone()),
            ("STRATA__KAFKA__TOPIC".into(), c.kafka.topic.clone()),
            ("STRATA__KAFKA__DLQ_TOPIC".into(), c.kafka.dlq_topic.clone()),
            ("STRATA__CLICKHOUSE__URL".into(), c.clickhouse.url.clone()),
            (
                "STRATA__CLICKHOUSE__DATABASE".into(),
                c.clickhouse.database.clone(),
            ),
            ("STRATA__SPEED__GROUP_ID".into(), c.speed.group_id.clone()),
            ("STRATA__SPEED__FLUSH_INTERVAL".into(), "200ms".into()),
            ("STRATA__SPEED__MAX_RETRY_BACKOFF".into(), "2s".into()),
            ("RUST_LOG".into(), "info,strata_speed=debug".into()),
        ]
    }

    /// Starts a strata-speed process; `instance` names its log file.
    pub fn spawn_speed(&self, instance: &str, extra: &[(&str, &str)]) -> Proc {
        self.spawn_speed_on(instance, free_port(), extra)
    }

    /// Starts a strata-speed process serving `/metrics` on `port`.
    pub fn spawn_speed_on(&self, instance: &str, port: u16, extra: &[(&str, &str)]) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("speed-{instance}.log")))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_strata-speed"))
            .env("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "0s")
            .envs(self.envs())
            .env("STRATA__SPEED__LISTEN", format!("127.0.0.1:{port}"))
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Proc)
            .expect("start strata-speed")
    }

    /// The log of instance `instance`.
    pub fn log(&self, instance: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("speed-{instance}.log")))
            .unwrap_or_default()
    }

    pub fn kafka(&self) -> KafkaConfig {
        self.cfg.kafka.clone()
    }

    pub fn spec(&self, seed: u64) -> Spec {
        Spec {
            seed,
            base_time_ms: chrono::Utc::now().timestamp_millis(),
            ..Spec::default()
        }
    }

    /// Produces `events` of `spec` (optionally at `rate`/s) and returns the truth.
    pub fn produce(&self, spec: Spec, events: u64, rate: f64) -> (Truth, Report) {
        produce_with_truth(&self.kafka(), spec, events, rate)
    }

    /// Produces `events` of `spec` at `rate`/s on a background thread; join it for the truth.
    pub fn produce_in_background(
        &self,
        spec: Spec,
        events: u64,
        rate: f64,
    ) -> std::thread::JoinHandle<Truth> {
        let k = self.kafka();
        std::thread::spawn(move || produce_with_truth(&k, spec, events, rate).0)
    }

    pub fn client(&self) -> Client {
        strata_shared::clickhouse::client(&self.cfg.clickhouse)
    }

    /// Events counted in ClickHouse so far (0 while the table does not exist).
    pub async fn counted(&self) -> u64 {
        self.client()
            .query("SELECT sumMerge(cnt) FROM speed_rollup_1m WHERE metric_name != ''")
            .fetch_one::<u64>()
            .await
            .unwrap_or(0)
    }

    /// Waits until ClickHouse counts `want` events, then a little longer to catch overcounting.
    pub async fn wait_for_count(&self, want: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.counted().await;
            if n >= want || Instant::now() > deadline {
                if n == want {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    return self.counted().await;
                }
                return n;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Rollups per (series, bucket) at `step_secs` (60 = the stored minutes, 3600 = hours).
    pub async fn rollups(&self, step_secs: u32) -> Vec<ChRow> {
        self.client()
            .query(&format!(
                "SELECT series_id, toUInt32(intDiv(toUInt32(minute), {step_secs}) * {step_secs}) AS start, \
                 sumMerge(cnt) AS cnt, sumMerge(total) AS total, minMerge(mn) AS mn, maxMerge(mx) AS mx, \
                 arrayMap(x -> toFloat64(x), quantilesTDigestArrayMerge(0.5, 0.9, 0.95, 0.99)(q)) AS q \
                 FROM speed_rollup_1m WHERE metric_name != '' GROUP BY series_id, start"
            ))
            .fetch_all()
            .await
            .expect("read rollups")
    }

    pub async fn drop_database(&self) {
        let _ = strata_shared::clickhouse::server_client(&self.cfg.clickhouse)
            .query(&format!(
                "DROP DATABASE IF EXISTS {}",
                strata_shared::clickhouse::quote_identifier(&self.cfg.clickhouse.database)
            ))
            .execute()
            .await;
    }
}

/// Produces a generated stream, asserting every message was delivered; returns its truth.
pub fn produce_with_truth(k: &KafkaConfig, spec: Spec, events: u64, rate: f64) -> (Truth, Report) {
    let mut truth = Truth::new(Some(spec.clone()));
    let run = Run {
        kafka: k,
        events,
        rate,
        stop: Arc::new(AtomicBool::new(false)),
        progress: &|_| {},
    };
    let report = produce(&run, spec, Some(&mut truth)).expect("produce");
    assert_eq!((report.delivered, report.failed), (events, 0), "{report:?}");
    (truth, report)
}

/// Runs `infra/stack.sh ARGS` (to stop or start one server of the local stack).
pub fn stack(args: &[&str]) {
    strata_testkit::stack(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."), args);
}

/// Sends SIGTERM and waits for a clean exit.
pub fn terminate(child: &mut Proc) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap()
}

/// Compares ClickHouse's rollups at tier `tier` ("1m" or "1h") with the truth: count, sum, min
/// and max exactly; each quantile within t-digest's rank error (the estimate lies between the
/// exact quantiles at q ± 0.05, with float32 slack).
pub fn assert_matches_truth(ch: &[ChRow], truth: &[TruthRow], tier: &str) {
    let want: HashMap<(u64, u32), &TruthRow> = truth
        .iter()
        .filter(|r| r.tier == tier)
        .map(|r| ((r.series_id, (r.start_ms / 1000) as u32), r))
        .collect();
    let got: BTreeMap<(u64, u32), &ChRow> =
        ch.iter().map(|r| ((r.series_id, r.start), r)).collect();
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "buckets missing {missing:?}, unexpected {extra:?}"
    );
    for (key, row) in got {
        let t = &want[&key].stats;
        assert_eq!(row.cnt, t.count, "count of {key:?}");
        assert_eq!(row.total, t.sum, "sum of {key:?}");
        assert_eq!((row.mn, row.mx), (t.min, t.max), "min/max of {key:?}");
        assert_eq!(row.q.len(), 4);
    }
}

/// Quantiles: rank-error check against the exact values of each (series, minute). A t-digest
/// estimate may be off by up to 5 % of the ranks plus one rank (ClickHouse places each centroid at
/// its middle rank, linear interpolation at rank q·(n−1)), so it must lie between the exact values
/// at positions q·(n−1) ∓ (0.05·n + 1).
pub fn assert_quantiles_within_rank_error(ch: &[ChRow], values: &HashMap<(u64, u32), Vec<f64>>) {
    let mut checked = 0;
    for row in ch {
        let Some(v) = values.get(&(row.series_id, row.start)) else {
            continue;
        };
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        for (i, q) in [0.5, 0.9, 0.95, 0.99].into_iter().enumerate() {
            let n = v.len() as f64;
            let spread = (0.05 * n + 1.0) / (n - 1.0).max(1.0);
            let lo = quantile_cont(&v, (q - spread).max(0.0)).unwrap();
            let hi = quantile_cont(&v, (q + spread).min(1.0)).unwrap();
            let slack = 1e-6 * lo.abs().max(hi.abs()).max(1.0);
            let est = row.q[i];
            assert!(
                est >= lo - slack && est <= hi + slack,
                "q{q} of {:?}: {est} not in [{lo}, {hi}]",
                (row.series_id, row.start)
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no quantile was checked");
}

/// The exact values per (series, minute start in seconds) of a generated stream, dedup applied.
pub fn values_per_minute(spec: &Spec, events: u64) -> HashMap<(u64, u32), Vec<f64>> {
    let mut seen = std::collections::HashSet::new();
    let mut out: HashMap<(u64, u32), Vec<f64>> = HashMap::new();
    for m in strata_testkit::gen::Generator::new(spec.clone()).take(events as usize) {
        if let Some(e) = m.event {
            if seen.insert(e.event_id.clone()) {
                let minute = (e.timestamp_ms.div_euclid(60_000) * 60) as u32;
                out.entry((e.series_id(), minute))
                    .or_default()
                    .push(e.value);
            }
        }
    }
    out
}
