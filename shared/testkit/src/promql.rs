//! PromQL against a reference: a deterministic dataset with the shapes dashboards and rules
//! meet (latencies with gaps, error counts to join on, a counter that resets, a seasonal gauge),
//! its per-minute samples as OpenMetrics text, and a real Prometheus (Debian's `prometheus`)
//! holding exactly those samples — for the conformance test and `make bench-promql`.
//!
//! A minute bucket `[m, m + 1 min)` of a Strata series is, in the reference, one sample of each
//! exposed series (`x_count`, `x_sum`, `x_min`, `x_max`, `x_avg`, `x{quantile=…}`) at `m + 1 min`,
//! so the same PromQL reads the same numbers in both.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_shared::event::MetricEvent;
use strata_shared::stats::QUANTILES;

use crate::gen::quantize;
use crate::gen::truth::{Truth, TruthRow};
use crate::gen::{Kind, Message};
use crate::kit::{free_port, Proc};

const MINUTE_MS: i64 = 60_000;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Time ranges `[from, to)` (Unix ms, whole minutes) that hold data.
    pub spans: Vec<(i64, i64)>,
    /// Instances per (source, region) of the latency metric.
    pub instances: usize,
    /// Seed of everything random.
    pub seed: u64,
}

fn event(
    rng: &mut ChaCha8Rng,
    metric: &str,
    t: i64,
    value: f64,
    tags: &[(&str, &str)],
    source: &str,
) -> MetricEvent {
    let mut id = [0u8; 16];
    rng.fill(&mut id);
    MetricEvent {
        event_id: uuid::Builder::from_random_bytes(id).into_uuid().to_string(),
        metric_name: metric.to_owned(),
        value: quantize(value),
        timestamp_ms: t,
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        source: source.to_owned(),
    }
}

/// The events of `shape`, deterministic for its seed.
///
/// - `conf_latency{source, region, instance}`: 0–5 events a minute (a sixth of minutes empty),
///   log-normal-ish values;
/// - `conf_errors{source, region}`: 0–3 events of value 1 a minute — joins to the latencies on
///   (source, region);
/// - `conf_queue{source, region="eu"}`: one event a minute, a counter that rises and resets
///   every 37 minutes;
/// - `conf_temp{source="api", region}`: one event a minute, a daily sine plus noise.
pub fn events(shape: &Shape) -> Vec<MetricEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(shape.seed);
    let mut out = Vec::new();
    let sources = ["api", "worker"];
    let regions = ["eu", "us"];
    for &(from, to) in &shape.spans {
        let mut m = from;
        while m < to {
            let minute = m / MINUTE_MS;
            for source in sources {
                for region in regions {
                    for i in 0..shape.instances {
                        let instance = format!("i-{i}");
                        let n = rng.random_range(0..6);
                        for _ in 0..n {
                            let t = m + rng.random_range(0..MINUTE_MS);
                            let v = (rng.random::<f64>() * 3.0).exp() * 4.0 + 1.0;
                            let tags = [("region", region), ("instance", instance.as_str())];
                            out.push(event(&mut rng, "conf_latency", t, v, &tags, source));
                        }
                    }
                    for _ in 0..rng.random_range(0..4) {
                        let t = m + rng.random_range(0..MINUTE_MS);
                        out.push(event(
                            &mut rng,
                            "conf_errors",
                            t,
                            1.0,
                            &[("region", region)],
                            source,
                        ));
                    }
                }
                let since_reset = (minute % 37) as f64;
                let queue = since_reset * 17.0 + rng.random_range(0..9) as f64;
                let t = m + rng.random_range(0..MINUTE_MS);
                out.push(event(
                    &mut rng,
                    "conf_queue",
                    t,
                    queue,
                    &[("region", "eu")],
                    source,
                ));
            }
            for region in regions {
                let phase = (minute % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
                let temp = 20.0 + 8.0 * phase.sin() + rng.random::<f64>() * 2.0;
                let t = m + rng.random_range(0..MINUTE_MS);
                out.push(event(
                    &mut rng,
                    "conf_temp",
                    t,
                    temp,
                    &[("region", region)],
                    "api",
                ));
            }
            m += MINUTE_MS;
        }
    }
    out
}

/// The exact per-minute aggregates of `events` (each event counted once).
pub fn minute_rows(events: &[MetricEvent]) -> Vec<TruthRow> {
    let mut truth = Truth::new(None);
    for e in events {
        truth.record(&Message {
            key: Some(e.metric_name.clone()),
            payload: Vec::new(),
            kind: Kind::Valid,
            event: Some(e.clone()),
        });
    }
    truth
        .rows()
        .into_iter()
        .filter(|r| r.tier == "1m")
        .collect()
}

fn label_text(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Writes the exposed series of `rows` as OpenMetrics text, one sample per minute bucket at
/// the minute's end; returns the number of samples.
pub fn write_openmetrics(rows: &[TruthRow], mut w: impl Write) -> std::io::Result<usize> {
    // family name → series labels → samples (s, value)
    type Samples = Vec<(i64, f64)>;
    let mut families: BTreeMap<String, BTreeMap<BTreeMap<String, String>, Samples>> =
        BTreeMap::new();
    for r in rows {
        let base = r.labels.metric_name.replace('.', "_");
        let mut labels = r.labels.tags.clone();
        labels.insert("source".into(), r.labels.source.clone());
        let t = (r.start_ms + MINUTE_MS) / 1000;
        let s = &r.stats;
        let mut put = |name: String, labels: BTreeMap<String, String>, v: f64| {
            families
                .entry(name)
                .or_default()
                .entry(labels)
                .or_default()
                .push((t, v));
        };
        put(format!("{base}_count"), labels.clone(), s.count as f64);
        put(format!("{base}_sum"), labels.clone(), s.sum);
        put(format!("{base}_min"), labels.clone(), s.min);
        put(format!("{base}_max"), labels.clone(), s.max);
        put(
            format!("{base}_avg"),
            labels.clone(),
            s.sum / s.count as f64,
        );
        for (q, v) in QUANTILES.iter().zip(s.quantiles) {
            let mut l = labels.clone();
            l.insert("quantile".into(), format!("{q}"));
            put(base.clone(), l, v);
        }
    }
    let mut n = 0;
    for (name, series) in &families {
        writeln!(w, "# TYPE {name} gauge")?;
        for (labels, samples) in series {
            let mut samples = samples.clone();
            samples.sort_by_key(|s| s.0);
            let l = label_text(labels);
            for (t, v) in samples {
                writeln!(w, "{name}{l} {} {t}", number(v))?;
                n += 1;
            }
        }
    }
    writeln!(w, "# EOF")?;
    w.flush()?;
    Ok(n)
}

/// A real Prometheus serving a TSDB backfilled from OpenMetrics text, on loopback.
pub struct ReferencePrometheus {
    _proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its log.
    pub log: PathBuf,
}

impl ReferencePrometheus {
    /// Backfills `openmetrics` into a TSDB under `dir` with `promtool tsdb
    /// create-blocks-from openmetrics` and starts `prometheus` on it, an instant selector
    /// looking back `lookback` (Strata's instant window is one minute: `1m`).
    pub fn start(dir: &Path, openmetrics: &Path, lookback: &str) -> std::io::Result<Self> {
        let data = dir.join("tsdb");
        std::fs::create_dir_all(&data)?;
        let backfill = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(openmetrics)
            .arg(&data)
            .stdout(Stdio::null())
            .output()?;
        if !backfill.status.success() {
            return Err(std::io::Error::other(format!(
                "promtool backfill failed: {}",
                String::from_utf8_lossy(&backfill.stderr)
            )));
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  evaluation_interval: 1m\n")?;
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--query.lookback-delta={lookback}"))
            .arg("--query.max-samples=200000000")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let me = Self {
            _proc: Proc(child),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ready = std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .and_then(|mut s| {
                    use std::io::Read;
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n").ok()?;
                    let mut b = String::new();
                    s.read_to_string(&mut b).ok()?;
                    Some(b.starts_with("HTTP/1.0 200") || b.starts_with("HTTP/1.1 200"))
                })
                .unwrap_or(false);
            if ready {
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(std::io::Error::other(format!(
            "prometheus not ready: {}",
            std::fs::read_to_string(&me.log).unwrap_or_default()
        )))
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bucket_is_one_sample_of_each_exposed_series() {
        let shape = Shape {
            spans: vec![(0, 3 * MINUTE_MS)],
            instances: 1,
            seed: 7,
        };
        let rows = minute_rows(&events(&shape));
        let mut text = Vec::new();
        let n = write_openmetrics(&rows, &mut text).unwrap();
        // 5 statistics and 4 quantiles per bucket.
        assert_eq!(n, rows.len() * 9);
        let text = String::from_utf8(text).unwrap();
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE conf_latency_count gauge"));
        assert!(text.contains(r#"conf_temp{quantile="0.5",region="eu",source="api"}"#));
        // Samples sit at minute ends.
        assert!(text.lines().filter(|l| !l.starts_with('#')).all(|l| {
            let t: i64 = l.rsplit(' ').next().unwrap().parse().unwrap();
            t % 60 == 0 && t > 0
        }));
        // The same seed, the same events.
        assert_eq!(events(&shape), events(&shape));
    }
}
