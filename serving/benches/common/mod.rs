//! What the serving benchmarks share: batch views of any size written with the batch layer's own
//! commit code, ClickHouse minutes written with the speed layer's own writer, a strata-serving
//! process (release build) with its start-up time and peak memory, and a load loop.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder, MapFieldNames,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{Field, Schema};
use strata_batch::archive::schema::ArchivedEvent;
use strata_batch::archive::writer::Archive;
use strata_batch::recompute::commit::commit_tier;
use strata_batch::recompute::rows::TierRows;
use strata_batch::recompute::{recompute, Tier};
use strata_shared::sketch::{key, value_of};
use strata_shared::{Config, MetricEvent};
use strata_speed::clickhouse::writer::RollupWriter;
use strata_speed::rollup::{Batch, Labels};
use strata_testkit::{free_port, Proc};

pub const H: i64 = 3_600_000;
pub const DAY: i64 = 24 * H;

/// A family of series: `series` series of `metric`, spread over five sources.
#[derive(Clone, Debug)]
pub struct Family {
    pub metric: String,
    pub series: u32,
}

impl Family {
    pub fn new(metric: &str, series: u32) -> Self {
        Self {
            metric: metric.into(),
            series,
        }
    }

    fn event(&self, s: u32, ts: i64, value: f64) -> MetricEvent {
        let mut e = MetricEvent::new(
            &format!("{}-{s}-{ts}", self.metric),
            &self.metric,
            value,
            ts,
        );
        e.source = format!("svc-{}", s % 5);
        e.tags.insert("instance".into(), format!("i-{s:04}"));
        e.tags.insert("region".into(), format!("r-{}", s % 3));
        e
    }
}

/// Sketch keys per synthetic rollup row (a minute of a few dozen events).
const KEYS: usize = 12;

/// One synthetic bucket: count, sum, min, max, quantiles and its sketch, all consistent.
struct Synth {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    q: [f64; 4],
    keys: Vec<i32>,
    counts: Vec<i64>,
}

fn synth(seed: u64, buckets: i64) -> Synth {
    // A deterministic spread of values around a level that drifts with the series and time.
    let level = 20.0 + (seed % 97) as f64;
    let first = key(level);
    let mut counts: Vec<i64> = (0..KEYS as u64)
        .map(|i| 1 + ((seed.wrapping_mul(31) + i * 17) % 7) as i64)
        .collect();
    for c in &mut counts {
        *c *= buckets;
    }
    let keys: Vec<i32> = (0..KEYS as i32).map(|i| first + i * 3).collect();
    let count: i64 = counts.iter().sum();
    let values: Vec<f64> = keys.iter().map(|k| value_of(*k)).collect();
    let sum: f64 = values.iter().zip(&counts).map(|(v, c)| v * *c as f64).sum();
    let at = |q: f64| {
        let rank = (q * (count - 1) as f64) as i64;
        let mut seen = 0;
        for (v, c) in values.iter().zip(&counts) {
            seen += c;
            if seen > rank {
                return *v;
            }
        }
        values[values.len() - 1]
    };
    Synth {
        count,
        sum,
        min: values[0],
        max: values[KEYS - 1],
        q: [at(0.5), at(0.9), at(0.95), at(0.99)],
        keys,
        counts,
    }
}

/// The rollup rows of `families` for one tier over `[from, to)`, in the recompute's columns.
fn rows(families: &[Family], tier: Tier, from: i64, to: i64) -> RecordBatch {
    let step = tier.step_ms();
    let per_bucket = step / 60_000;
    let map_names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let (mut sid, mut start, mut metric, mut source) = (
        Int64Builder::new(),
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut tags = MapBuilder::new(Some(map_names), StringBuilder::new(), StringBuilder::new());
    let mut count = Int64Builder::new();
    let mut f: Vec<Float64Builder> = (0..7).map(|_| Float64Builder::new()).collect();
    let mut keys = ListBuilder::new(Int32Builder::new());
    let mut counts = ListBuilder::new(Int64Builder::new());
    let mut date = StringBuilder::new();
    for fam in families {
        for s in 0..fam.series {
            let e = fam.event(s, from, 0.0);
            let id = e.series_id() as i64;
            let mut t = from;
            while t < to {
                let x = synth(
                    (id as u64) ^ (t as u64 / 60_000).wrapping_mul(0x9e37_79b9),
                    per_bucket,
                );
                sid.append_value(id);
                start.append_value(t);
                metric.append_value(&fam.metric);
                source.append_value(&e.source);
                for (k, v) in &e.tags {
                    tags.keys().append_value(k);
                    tags.values().append_value(v);
                }
                tags.append(true).unwrap();
                count.append_value(x.count);
                for (b, v) in f
                    .iter_mut()
                    .zip([x.sum, x.min, x.max, x.q[0], x.q[1], x.q[2], x.q[3]])
                {
                    b.append_value(v);
                }
                keys.values().append_slice(&x.keys);
                keys.append(true);
                counts.values().append_slice(&x.counts);
                counts.append(true);
                date.append_value(
                    chrono::DateTime::from_timestamp_millis(t)
                        .unwrap()
                        .format("%Y-%m-%d")
                        .to_string(),
                );
                t += step;
            }
        }
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(sid.finish()),
        Arc::new(start.finish()),
        Arc::new(metric.finish()),
        Arc::new(source.finish()),
        Arc::new(tags.finish()),
        Arc::new(count.finish()),
    ];
    cols.extend(f.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    cols.push(Arc::new(keys.finish()));
    cols.push(Arc::new(counts.finish()));
    cols.push(Arc::new(date.finish()));
    let names = [
        "series_id",
        "start_ms",
        "metric_name",
        "source",
        "tags",
        "count",
        "sum",
        "min",
        "max",
        "p50",
        "p90",
        "p95",
        "p99",
        "sketch_keys",
        "sketch_counts",
        "event_date",
    ];
    let fields: Vec<Field> = names
        .iter()
        .zip(&cols)
        .map(|(n, c)| Field::new(*n, c.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// Writes batch views of `families` over the whole days `[from, to)` into the lake of `cfg` —
/// per day one commit per tier, through the recompute's own commit code — and returns the
/// minute and hour rows written. A tiny real recompute first creates the tables.
pub async fn write_views(cfg: &Config, families: &[Family], from: i64, to: i64) -> (usize, usize) {
    // The tables, created by a real recompute of one hour before the range.
    let fam = &families[0];
    let events: Vec<ArchivedEvent> = (0..60)
        .map(|i| ArchivedEvent {
            event: fam.event(0, from - H + i * 60_000, 1.0),
            partition: 0,
            offset: i,
        })
        .collect();
    let mut archive = Archive::open(cfg).await.unwrap();
    archive
        .append(&events, &BTreeMap::from([(0, 59)]))
        .await
        .unwrap();
    let real = recompute(cfg, from - H, from).await.unwrap();
    let mut written = (0, 0);
    let mut day = from;
    let t = Instant::now();
    while day < to {
        for tier in Tier::ALL {
            // A day at a time per family keeps each batch a few million rows at most.
            let mut all = Vec::new();
            for f in families {
                all.push(rows(std::slice::from_ref(f), tier, day, day + DAY));
            }
            let rows = TierRows::Labelled(&all);
            let done = commit_tier(cfg, tier, (day, day + DAY), real.archive_version, &rows)
                .await
                .unwrap();
            match tier {
                Tier::Minute => written.0 += done.rows,
                Tier::Hour => written.1 += done.rows,
            }
        }
        day += DAY;
        eprintln!(
            "  wrote {} minute and {} hour rows ({:.0}s)",
            written.0,
            written.1,
            t.elapsed().as_secs_f64()
        );
    }
    (written.0 + 60, written.1 + 1)
}

/// Adds batch views of `families` for the whole hours `[from, to)` of one day to tables
/// [`write_views`] created.
pub async fn write_views_hours(cfg: &Config, families: &[Family], from: i64, to: i64) {
    for tier in Tier::ALL {
        let all: Vec<RecordBatch> = families
            .iter()
            .map(|f| rows(std::slice::from_ref(f), tier, from, to))
            .collect();
        commit_tier(cfg, tier, (from, to), 0, &TierRows::Labelled(&all))
            .await
            .unwrap();
    }
}

/// Writes ClickHouse minutes of `families` over `[from, to)` with the speed layer's writer
/// (`per_minute` events per series and minute).
pub async fn write_speed(cfg: &Config, families: &[Family], from: i64, to: i64, per_minute: u32) {
    let writer = RollupWriter::new(&cfg.clickhouse, "bench", Duration::from_secs(5));
    let mut hour = from;
    let mut offset = 0i64;
    while hour < to {
        let mut batch = Batch::default();
        for fam in families {
            for s in 0..fam.series {
                let mut t = hour;
                while t < (hour + H).min(to) {
                    for k in 0..per_minute {
                        let ts = t + (k as i64 * 997 + s as i64 * 13) % 60_000;
                        let v = ((s as u64 * 31 + k as u64 * 17 + t as u64 / 60_000 * 7) % 500)
                            as f64
                            + 0.5;
                        let e = fam.event(s, ts, v);
                        let labels = || Labels {
                            metric_name: Arc::from(e.metric_name.as_str()),
                            source: Arc::from(e.source.as_str()),
                            tag_keys: e.tags.keys().cloned().collect::<Vec<_>>().into(),
                            tag_values: e.tags.values().cloned().collect::<Vec<_>>().into(),
                        };
                        batch.add(e.series_id(), ts, v, labels);
                        offset += 1;
                    }
                    t += 60_000;
                }
            }
        }
        batch.cover(0, offset);
        writer
            .insert_once(&batch)
            .await
            .expect("insert into ClickHouse");
        hour += H;
    }
}

/// A strata-serving process (release build) and how long it took to answer.
pub struct Serving {
    _proc: Proc,
    pub pid: u32,
    pub base: String,
    pub http: reqwest::Client,
    pub log: std::path::PathBuf,
}

impl Serving {
    /// Starts strata-serving on `cfg`'s lake and ClickHouse with extra `env`.
    pub fn start(cfg: &Config, dir: &std::path::Path, env: &[(&str, &str)]) -> Serving {
        let port = free_port();
        let log = dir.join(format!("serving-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata-serving"));
        cmd.env("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "0s")
            .env("STRATA__CLICKHOUSE__DATABASE", &cfg.clickhouse.database)
            .env("STRATA__LAKE__URL", &cfg.lake.url)
            .env("STRATA__SERVING__LISTEN", format!("127.0.0.1:{port}"))
            .env("STRATA__SERVING__PG_LISTEN", "")
            .env("STRATA__SERVING__FLIGHT_LISTEN", "")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start strata-serving");
        Serving {
            pid: child.id(),
            _proc: Proc(child),
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            log,
        }
    }

    /// POSTs a query_range form; the body's bytes, or the failure.
    pub async fn range(&self, form: &[(String, String)]) -> Result<usize, String> {
        let r = self
            .http
            .post(format!("{}/api/v1/query_range", self.base))
            .form(form)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(body.len())
    }

    /// Waits until `form` is answered with data; the time since `started`.
    pub async fn ready(&self, started: Instant, form: &[(String, String)]) -> Duration {
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Ok(n) = self.range(form).await {
                if n > 200 {
                    return started.elapsed();
                }
            }
            assert!(
                Instant::now() < deadline,
                "strata-serving did not answer: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Peak resident memory so far, MB (`VmHWM`).
    pub fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb / 1024.0
    }
}

/// A query_range form.
pub fn form(query: &str, start_ms: i64, end_ms: i64, step_s: i64) -> Vec<(String, String)> {
    vec![
        ("query".into(), query.into()),
        ("start".into(), (start_ms / 1000).to_string()),
        ("end".into(), (end_ms / 1000).to_string()),
        ("step".into(), step_s.to_string()),
    ]
}

/// The `p` quantile of sorted latencies.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The ClickHouse database and lake folder of a benchmark, dropped at the end.
pub fn bench_config(name: &str, dir: &std::path::Path) -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = Config::load(None).expect("configuration");
    cfg.clickhouse.database = format!("strata_bench_{name}_{}", &id[..12]);
    cfg.lake.url = dir.join("lake").display().to_string();
    cfg
}

/// Drops the benchmark's ClickHouse database.
pub fn drop_database(cfg: &Config) {
    strata_testkit::drop_clickhouse_database(&cfg.clickhouse);
}
