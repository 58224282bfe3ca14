//! Serving tests: each test gets its own ClickHouse database and lake folder, loads generated
//! events into both layers with the layers' own code (the speed layer's rollup writer, the
//! batch layer's archive and recompute), runs the real `strata-serving` binary, and compares
//! its answers with the generator's ground truth.
#![allow(dead_code)]

pub mod sql;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_batch::archive::schema::ArchivedEvent;
use strata_batch::archive::writer::Archive;
use strata_batch::recompute::recompute;
use strata_shared::Config;
use strata_speed::clickhouse::writer::RollupWriter;
use strata_speed::rollup::{Batch, Labels};
use strata_testkit::gen::truth::{hour_start, Truth, TruthRow};
use strata_testkit::gen::{Generator, Spec};
use strata_testkit::{free_port, Proc};

/// One series of a range answer: its labels and its (seconds, value) points.
pub type Series = (BTreeMap<String, String>, Vec<(i64, f64)>);
pub const H: i64 = 3_600_000;

/// Data in both layers and the ground truth.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub cfg: Config,
    /// First hour of data.
    pub h0: i64,
    /// Truth rows, 1m and 1h.
    pub rows: Vec<TruthRow>,
    /// Distinct valid events.
    pub unique: u64,
    /// Values of each (series, minute), sorted (to judge approximate quantiles by rank).
    pub values: HashMap<(u64, i64), Vec<f64>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        strata_testkit::drop_clickhouse_database(&self.cfg.clickhouse);
    }
}

impl Fixture {
    /// `events` over four hours [h0, h0 + 4h), all in ClickHouse (duplicates removed, as the
    /// speed layer does) and in the archive (duplicates kept); the batch layer recomputes the
    /// hours listed in `recomputed` (offsets from h0).
    pub async fn new(name: &str, events: usize, recomputed: &[i64]) -> Fixture {
        Self::build(name, events, recomputed, false).await
    }

    /// [`Fixture::new`] with the lake in the local stack's S3 server (SeaweedFS).
    pub async fn on_s3(name: &str, events: usize, recomputed: &[i64]) -> Fixture {
        Self::build(name, events, recomputed, true).await
    }

    async fn build(name: &str, events: usize, recomputed: &[i64], s3: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut cfg = Config::load(None).expect("configuration");
        cfg.clickhouse.database = format!("strata_test_{name}_{}", &id[..12]);
        cfg.lake.url = dir.path().join("lake").display().to_string();
        if s3 {
            cfg.lake.url = format!("s3://lake/test-{id}");
            cfg.s3.endpoint = Some(
                std::env::var("STRATA__S3__ENDPOINT")
                    .unwrap_or_else(|_| "http://127.0.0.1:8333".into()),
            );
            cfg.s3.allow_http = true;
            cfg.s3.access_key_id = Some("minioadmin".into());
            cfg.s3.secret_access_key = Some(strata_shared::config::Secret("minioadmin".into()));
        }
        strata_speed::clickhouse::schema::migrate(&cfg.clickhouse)
            .await
            .expect("ClickHouse (run `make up`)");
        let h0 = hour_start(chrono::Utc::now().timestamp_millis()) - 5 * H;
        let spec = Spec {
            base_time_ms: h0 + 4 * H,
            spread_ms: 4 * H,
            series: 12,
            metrics: 3,
            duplicate_ratio: 0.03,
            seed: 42,
            ..Spec::default()
        };
        let mut truth = Truth::new(Some(spec.clone()));
        let mut archived = Vec::new();
        let mut batch = Batch::default();
        let mut seen = HashSet::new();
        let mut values: HashMap<(u64, i64), Vec<f64>> = HashMap::new();
        for (i, m) in Generator::new(spec).take(events).enumerate() {
            truth.record(&m);
            let e = m.event.expect("no malformed events asked for");
            if seen.insert(e.event_id.clone()) {
                values
                    .entry((e.series_id(), e.timestamp_ms.div_euclid(60_000) * 60_000))
                    .or_default()
                    .push(e.value);
                let labels = || Labels {
                    metric_name: Arc::from(e.metric_name.as_str()),
                    source: Arc::from(e.source.as_str()),
                    tag_keys: e.tags.keys().cloned().collect::<Vec<_>>().into(),
                    tag_values: e.tags.values().cloned().collect::<Vec<_>>().into(),
                };
                batch.add(e.series_id(), e.timestamp_ms, e.value, labels);
            }
            archived.push(ArchivedEvent {
                event: e,
                partition: 0,
                offset: i as i64,
            });
        }
        batch.cover(0, events as i64 - 1);
        RollupWriter::new(
            &cfg.clickhouse,
            &format!("test-{id}"),
            Duration::from_secs(1),
        )
        .insert_once(&batch)
        .await
        .expect("insert into ClickHouse");
        let mut archive = Archive::open(&cfg).await.unwrap();
        archive
            .append(&archived, &BTreeMap::from([(0, events as i64 - 1)]))
            .await
            .unwrap();
        for h in recomputed {
            recompute(&cfg, h0 + h * H, h0 + (h + 1) * H).await.unwrap();
        }
        let unique = truth.summary().valid_unique;
        for v in values.values_mut() {
            v.sort_by(f64::total_cmp);
        }
        Fixture {
            dir,
            cfg,
            h0,
            rows: truth.rows(),
            unique,
            values,
        }
    }

    /// Whether `got` is a fair estimate of quantile `q` of a bucket: between the values two
    /// ranks (or 2 % of the ranks) either side of the exact position.
    pub fn near_rank(&self, series: u64, minute: i64, q: f64, got: f64) -> bool {
        let v = &self.values[&(series, minute)];
        let n = v.len() as f64;
        let pos = q * (n - 1.0);
        let slack = (0.02 * n).max(2.0);
        let lo = v[((pos - slack).floor().max(0.0)) as usize];
        let hi = v[((pos + slack).ceil().min(n - 1.0)) as usize];
        lo - 1e-9 <= got && got <= hi + 1e-9
    }

    /// Truth rows of one tier keyed by (series, start).
    pub fn truth(&self, tier: &str) -> HashMap<(u64, i64), &TruthRow> {
        self.rows
            .iter()
            .filter(|r| r.tier == tier)
            .map(|r| ((r.series_id, r.start_ms), r))
            .collect()
    }

    /// Starts strata-serving on this fixture (on loopback); `env` overrides configuration.
    pub async fn serve(&self, env: &[(&str, &str)]) -> Server {
        self.serve_at("127.0.0.1", env).await
    }

    /// Starts strata-serving listening on `host`.
    pub async fn serve_at(&self, host: &str, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let pg_port = free_port();
        let flight_port = free_port();
        let log = self.dir.path().join(format!("serving-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata-serving"));
        cmd.env("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "0s")
            .env(
                "STRATA__CLICKHOUSE__DATABASE",
                &self.cfg.clickhouse.database,
            )
            .env("STRATA__LAKE__URL", &self.cfg.lake.url)
            .env("STRATA__S3__ALLOW_HTTP", self.cfg.s3.allow_http.to_string())
            .env("STRATA__SERVING__LISTEN", format!("{host}:{port}"))
            .env("STRATA__SERVING__PG_LISTEN", format!("{host}:{pg_port}"))
            .env(
                "STRATA__SERVING__FLIGHT_LISTEN",
                format!("{host}:{flight_port}"),
            )
            .env("STRATA__SERVING__COVERAGE_REFRESH", "500ms")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(e) = &self.cfg.s3.endpoint {
            cmd.env("STRATA__S3__ENDPOINT", e)
                .env("AWS_ACCESS_KEY_ID", "minioadmin")
                .env("AWS_SECRET_ACCESS_KEY", "minioadmin");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc(cmd.spawn().expect("start strata-serving"));
        let server = Server {
            _proc: proc,
            base: format!("http://127.0.0.1:{port}"),
            port,
            pg_port,
            flight_port,
            log,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server.http.get(server.url("/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "strata-serving not ready: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }
}

/// A running strata-serving.
pub struct Server {
    _proc: Proc,
    pub base: String,
    pub port: u16,
    /// The PostgreSQL protocol's port.
    pub pg_port: u16,
    /// Arrow Flight SQL's port.
    pub flight_port: u16,
    pub log: std::path::PathBuf,
    pub http: reqwest::Client,
}

impl Server {
    /// Kills the process with SIGKILL and waits for it.
    /// CPU seconds the process has used so far (user + system, from `/proc`).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self._proc.0.id())).unwrap();
        // Fields after the command name (which ends with ')'): utime and stime are 12th and 13th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0 // USER_HZ is 100 on Linux
    }

    pub fn kill(&mut self) {
        let _ = self._proc.0.kill();
        let _ = self._proc.0.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET with query parameters → (status, JSON body).
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(self.url(path))
            .query(params)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// POST form → (status, JSON body).
    pub async fn post_form(&self, path: &str, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let body = url_encode(params);
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// POST JSON with optional headers → (status, body text).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut req = self.http.post(self.url(path)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A range query's series: labels → [(t_ms, value)].
    pub async fn range(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_s: i64,
    ) -> (Vec<Series>, serde_json::Value) {
        let (start, end, step) = (
            (start_ms / 1000).to_string(),
            (end_ms / 1000).to_string(),
            step_s.to_string(),
        );
        let (status, body) = self
            .post_form(
                "/api/v1/query_range",
                &[
                    ("query", query),
                    ("start", &start),
                    ("end", &end),
                    ("step", &step),
                ],
            )
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["status"], "success");
        assert_eq!(body["data"]["resultType"], "matrix");
        let series = body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = serde_json::from_value(s["metric"].clone()).unwrap();
                let points = s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                        let v: f64 = p[1].as_str().unwrap().parse().unwrap();
                        (t, v)
                    })
                    .collect();
                (labels, points)
            })
            .collect();
        (series, body)
    }
}

fn url_encode(params: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

#[allow(unused_imports)]
pub use strata_serving::series::series_id_of as series_id;
