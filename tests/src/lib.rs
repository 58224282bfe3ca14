//! End-to-end helpers: the whole pipeline — strata-speed, the archiver, the batch scheduler and
//! strata-serving, as built in `target/` — running against the real local stack (`make up`) with
//! a private topic, dead-letter topic, ClickHouse database, lake folder and ports, so a test
//! sees only its own data.

pub mod alerting;
pub mod catch_up;
pub mod recorder;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strata_shared::{kafka, Config};
use strata_testkit::{free_port, Proc};

/// The directory holding the workspace's binaries: next to this executable (a test lives in
/// `target/<profile>/deps/`, a binary in `target/<profile>/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the executable");
    let dir = exe.parent().expect("a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .map(Path::to_path_buf)
            .expect("target/<profile>")
    } else {
        dir
    }
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A private pipeline.
pub struct Pipeline {
    /// The configuration every service gets (through environment variables).
    pub cfg: Config,
    /// Logs and the lake live here.
    pub dir: tempfile::TempDir,
    /// `strata-serving`'s base URL.
    pub serving_url: String,
    /// Ports of the services' /metrics: speed, archive, batch, serving.
    pub ports: [u16; 4],
    procs: Vec<(String, Proc)>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // The services first: strata-speed would create its tables again.
        self.procs.clear();
        strata_testkit::drop_clickhouse_database(&self.cfg.clickhouse);
    }
}

impl Pipeline {
    /// Creates the topics and starts every service; `extra` overrides configuration for all.
    pub async fn start(name: &str, extra: &[(&str, &str)]) -> Result<Pipeline> {
        Self::start_with_lake(name, extra, None).await
    }

    /// [`Pipeline::start`] with the lake at `lake_url` (e.g. `s3://lake/x` on the local
    /// SeaweedFS) instead of a temporary folder.
    pub async fn start_with_lake(
        name: &str,
        extra: &[(&str, &str)],
        lake_url: Option<String>,
    ) -> Result<Pipeline> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = tempfile::tempdir()?;
        let mut cfg = Config::load(None).context("configuration")?;
        cfg.kafka.topic = format!("strata-e2e-{name}-{id}");
        cfg.kafka.dlq_topic = format!("strata-e2e-{name}-{id}-dlq");
        cfg.clickhouse.database = format!("strata_e2e_{name}_{}", &id[..12]);
        cfg.lake.url = lake_url.unwrap_or_else(|| dir.path().join("lake").display().to_string());
        if cfg.lake.url.starts_with("s3://") {
            cfg.s3.endpoint = Some("http://127.0.0.1:8333".into());
            cfg.s3.allow_http = true;
            cfg.s3.access_key_id = Some("minioadmin".into());
            cfg.s3.secret_access_key = Some(strata_shared::config::Secret("minioadmin".into()));
        }
        cfg.speed.group_id = format!("strata-e2e-speed-{id}");
        cfg.serving.pg_listen = format!("127.0.0.1:{}", free_port());
        cfg.serving.flight_listen = format!("127.0.0.1:{}", free_port());
        cfg.batch.archive_group_id = format!("strata-e2e-archive-{id}");
        kafka::create_topics(
            &cfg.kafka,
            &[(&cfg.kafka.topic, 12), (&cfg.kafka.dlq_topic, 1)],
        )
        .await
        .context("create topics (run `make up`)")?;
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let serving_url = format!("http://127.0.0.1:{}", ports[3]);
        let mut p = Pipeline {
            cfg,
            dir,
            serving_url,
            ports,
            procs: Vec::new(),
        };
        for (service, args) in [
            ("speed", vec!["strata-speed", "run"]),
            ("archive", vec!["strata-batch", "archive"]),
            ("batch", vec!["strata-batch", "serve"]),
            ("serving", vec!["strata-serving"]),
        ] {
            p.spawn(service, &args, extra)?;
        }
        p.wait_ready().await?;
        Ok(p)
    }

    /// The environment every service gets.
    pub fn envs(&self) -> Vec<(String, String)> {
        let c = &self.cfg;
        let [speed, archive, batch, serving] = self.ports;
        [
            ("STRATA__KAFKA__TOPIC", c.kafka.topic.clone()),
            ("STRATA__KAFKA__DLQ_TOPIC", c.kafka.dlq_topic.clone()),
            (
                "STRATA__CLICKHOUSE__DATABASE",
                c.clickhouse.database.clone(),
            ),
            ("STRATA__LAKE__URL", c.lake.url.clone()),
            ("STRATA__SPEED__GROUP_ID", c.speed.group_id.clone()),
            ("STRATA__SPEED__FLUSH_INTERVAL", "500ms".into()),
            ("STRATA__SPEED__LISTEN", format!("127.0.0.1:{speed}")),
            (
                "STRATA__BATCH__ARCHIVE_GROUP_ID",
                c.batch.archive_group_id.clone(),
            ),
            ("STRATA__BATCH__ARCHIVE_FLUSH_INTERVAL", "1s".into()),
            ("STRATA__BATCH__LISTEN", format!("127.0.0.1:{archive}")),
            ("STRATA__BATCH__SERVE_LISTEN", format!("127.0.0.1:{batch}")),
            ("STRATA__BATCH__SCHEDULE", "*/2 * * * * *".into()),
            ("STRATA__BATCH__SCHEDULE_GRACE", "0s".into()),
            ("STRATA__SERVING__LISTEN", format!("127.0.0.1:{serving}")),
            ("STRATA__SERVING__PG_LISTEN", c.serving.pg_listen.clone()),
            (
                "STRATA__SERVING__FLIGHT_LISTEN",
                c.serving.flight_listen.clone(),
            ),
            ("STRATA__SERVING__COVERAGE_REFRESH", "1s".into()),
            ("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "2s".into()),
            ("STRATA__S3__ENDPOINT", "http://127.0.0.1:8333".into()),
            ("STRATA__S3__ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "minioadmin".into()),
            ("AWS_SECRET_ACCESS_KEY", "minioadmin".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts (or restarts) one service.
    pub fn spawn(&mut self, service: &str, args: &[&str], extra: &[(&str, &str)]) -> Result<()> {
        let log = self.dir.path().join(format!("{service}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(bin_dir().join(args[0]))
            .args(&args[1..])
            .envs(self.envs())
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {} (cargo build first)", args[0]))?;
        self.procs.retain(|(n, _)| n != service);
        self.procs.push((service.to_owned(), Proc(child)));
        Ok(())
    }

    /// Waits until every service answers /readyz.
    pub async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        for port in self.ports {
            loop {
                if ready(port).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("a service on port {port} is not ready:\n{}", self.logs());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// SIGKILLs one service (it is restarted by [`Pipeline::spawn`]).
    pub fn kill(&mut self, service: &str) {
        self.procs.retain(|(n, _)| n != service); // dropping the Proc kills it
    }

    /// The tail of every service's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for s in ["speed", "archive", "batch", "serving"] {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{s}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {s}\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

async fn ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    buf.starts_with("HTTP/1.1 200")
}

/// Runs `promtool ARGS` and returns its standard output.
pub fn promtool(args: &[&str]) -> Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .context("promtool (installed by `make setup`)")?;
    if !out.status.success() {
        bail!(
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
