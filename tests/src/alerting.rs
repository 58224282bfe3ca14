//! Alerting harness: a real Alertmanager and a real vmalert on free ports, evaluating rule files
//! against a [`Pipeline`]'s strata-serving (results and alert state written back to it by remote
//! write, restored from it on a restart), plus the seasonal signal the alerting tests and
//! `make bench-alerting` feed through the pipeline, and its week of history for the batch layer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use strata_testkit::{free_port, Proc};

use crate::{root, Pipeline};

/// The series the harness feeds: `shop_latency{source}` (anomaly rules watch `shop_latency_avg`).
pub const LATENCY: &str = "shop_latency";

/// A daily and weekly seasonal level with a little deterministic noise: what a healthy service's
/// latency looks like. The same function gives the history and the live events.
pub fn seasonal(t_ms: i64, source: &str) -> f64 {
    use std::f64::consts::TAU;
    let t = t_ms as f64;
    let day = (TAU * t / 86_400_000.0).sin();
    let week = (TAU * t / 604_800_000.0).sin();
    // Noise: a hash of (minute, source) in [-4, 4].
    let mut h: u64 = 1469598103934665603;
    for b in (t_ms / 60_000)
        .to_le_bytes()
        .iter()
        .chain(source.as_bytes())
    {
        h = (h ^ *b as u64).wrapping_mul(1099511628211);
    }
    let noise = (h % 801) as f64 / 100.0 - 4.0;
    200.0 + 80.0 * day + 20.0 * week + noise
}

/// One event as JSON, as a producer would send it.
pub fn event_json(metric: &str, source: &str, t_ms: i64, value: f64) -> String {
    serde_json::json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "metric_name": metric,
        "value": value,
        "timestamp_ms": t_ms,
        "tags": {"service": "shop"},
        "source": source,
    })
    .to_string()
}

/// Writes one event a minute per (metric, source) over `[from_ms, to_ms)` at the seasonal level
/// to a JSON Lines file, imports it into the pipeline's lake and recomputes those hours: the
/// batch layer's exact history the anomaly bands read (a day back, a week back).
pub async fn import_history(
    p: &Pipeline,
    series: &[(&str, &str)],
    from_ms: i64,
    to_ms: i64,
) -> Result<u64> {
    let file = p.dir.path().join("history.jsonl");
    let mut lines = Vec::new();
    let mut t = from_ms;
    while t < to_ms {
        for (metric, source) in series {
            lines.push(event_json(metric, source, t + 1_000, seasonal(t, source)));
        }
        t += 60_000;
    }
    std::fs::write(&file, lines.join("\n"))?;
    let mut cfg = p.cfg.clone();
    cfg.validation.max_past = Duration::from_secs(30 * 86_400);
    let now = chrono::Utc::now().timestamp_millis();
    let report = strata_batch::import::import(&cfg, &[file.as_path()], now)
        .await
        .context("import the history")?;
    strata_batch::recompute::recompute(&cfg, from_ms, to_ms)
        .await
        .context("recompute the history")?;
    Ok(report.imported)
}

/// A real Alertmanager on a free port, its own storage; killed when dropped.
pub struct Alertmanager {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts it (grouping as `infra/alerting/alertmanager.yml`, but no waiting to group).
    pub async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let cfg = dir.path().join("alertmanager.yml");
        std::fs::write(
            &cfg,
            "route:\n  receiver: default\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 5s\nreceivers:\n  - name: default\n",
        )?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log"))?;
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("prometheus-alertmanager (installed by `make setup`)")?;
        let am = Alertmanager {
            url: format!("http://127.0.0.1:{port}"),
            _proc: Proc(child),
            _dir: dir,
        };
        wait_http(&format!("{}/-/ready", am.url), "alertmanager").await?;
        Ok(am)
    }

    /// The alerts it holds now (firing, not yet resolved), from its v2 API.
    pub async fn alerts(&self) -> Result<Vec<Alert>> {
        let v: Value = reqwest::get(format!("{}/api/v2/alerts", self.url))
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(v.as_array()
            .context("a list of alerts")?
            .iter()
            .map(Alert::from_v2)
            .collect())
    }
}

/// An alert as Alertmanager holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Its labels (`alertname` among them).
    pub labels: BTreeMap<String, String>,
    /// Its annotations (`summary`, `runbook`).
    pub annotations: BTreeMap<String, String>,
    /// When it started firing, as vmalert says (RFC 3339).
    pub starts_at: String,
}

impl Alert {
    fn from_v2(v: &Value) -> Self {
        let map = |k: &str| -> BTreeMap<String, String> {
            v[k].as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default()
        };
        Alert {
            labels: map("labels"),
            annotations: map("annotations"),
            starts_at: v["startsAt"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// Its `alertname` and `source` labels.
    pub fn key(&self) -> (String, String) {
        let get = |k: &str| self.labels.get(k).cloned().unwrap_or_default();
        (get("alertname"), get("source"))
    }
}

/// A real vmalert evaluating `rules` (a glob) against the pipeline's strata-serving, sending to
/// `notifier`; restartable, killed when dropped.
pub struct Vmalert {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
    proc: Option<Proc>,
}

impl Vmalert {
    /// Starts it on `port` (the one the pipeline's `serving.rules_url` names) with the
    /// evaluation interval `every`.
    pub async fn start(
        p: &Pipeline,
        port: u16,
        rules: &str,
        notifier: &str,
        every: Duration,
    ) -> Result<Self> {
        let serving = &p.serving_url;
        let args = vec![
            format!("-rule={rules}"),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-datasource.url={serving}"),
            format!("-remoteWrite.url={serving}"),
            format!("-remoteRead.url={serving}"),
            format!("-notifier.url={notifier}"),
            format!("-evaluationInterval={}s", every.as_secs()),
            "-remoteWrite.flushInterval=1s".into(),
        ];
        let mut v = Vmalert {
            url: format!("http://127.0.0.1:{port}"),
            port,
            args,
            log: p.dir.path().join("vmalert.log"),
            proc: None,
        };
        v.restart().await?;
        Ok(v)
    }

    /// Stops it (SIGKILL) and starts it again with the same flags and port.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc = None;
        // The port is free again once the old process is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if Instant::now() > deadline {
                bail!("vmalert's port {} stays taken", self.port);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("vmalert")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("vmalert (Debian's victoria-metrics, installed by `make setup`)")?;
        self.proc = Some(Proc(child));
        wait_http(&format!("{}/-/healthy", self.url), "vmalert").await
    }

    /// The tail of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

async fn wait_http(url: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{what} not ready at {url}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Renders the anomaly rules (`infra/alerting/render-anomaly-rules.sh`) for `series` with
/// the given `for` and evaluation interval.
pub fn render_anomaly_rules(series: &[&str], r#for: &str, interval: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let list = dir.path().join("series");
    std::fs::write(&list, series.join("\n"))?;
    let out = Command::new(root().join("infra/alerting/render-anomaly-rules.sh"))
        .arg(&list)
        .env("ANOMALY_FOR", r#for)
        .env("ANOMALY_INTERVAL", interval)
        .output()?;
    if !out.status.success() {
        bail!("render: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}
