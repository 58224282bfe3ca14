//! Helpers for the integration tests of every crate (and the end-to-end suite): child processes
//! that die with the test, free ports, the local stack's scripts, and reading a `/metrics` page.
//! Plain `std`; nothing here is used by the services themselves.

use std::path::Path;
use std::process::{Child, Command};

/// A child process killed when dropped, so a failing test leaves nothing behind.
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A number from the environment (benchmark knobs), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A port nobody listens on right now, for a server a test starts.
///
/// Drawn below Linux's ephemeral range (32768–60999): a port the kernel picked for `bind(:0)`
/// is one it also hands to outgoing connections, and a client connecting elsewhere could take it
/// before the server binds it ("address already in use"). No port is handed out twice by one
/// test process.
pub fn free_port() -> u16 {
    use rand::Rng;
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..32_000);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in 20000..32000")
}

/// Runs `infra/stack.sh ARGS` of the repository at `root` (to stop or start one server of the
/// local stack); panics if it fails.
pub fn stack(root: &Path, args: &[&str]) {
    let status = Command::new("bash")
        .arg(root.join("infra/stack.sh"))
        .args(args)
        .status()
        .expect("run infra/stack.sh");
    assert!(status.success(), "infra/stack.sh {args:?} failed");
}

/// The whole `/metrics` page of a service on loopback `port`.
pub fn metrics_page(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// One metric's value from a `/metrics` page, summed over the label sets that match; `None` if
/// absent. `metric` is a name, optionally with labels that must be present:
/// `strata_speed_inserts_total{result="retry"}` (the closing brace may be left off).
pub fn scrape(port: u16, metric: &str) -> Option<f64> {
    sum_samples(&metrics_page(port)?, metric)
}

/// The sum of the samples of `metric` (as in [`scrape`]) on a Prometheus text page.
pub fn sum_samples(page: &str, metric: &str) -> Option<f64> {
    let (name, wanted) = match metric.split_once('{') {
        Some((n, l)) => (n, l.trim_end_matches('}')),
        None => (metric, ""),
    };
    let wanted: Vec<&str> = wanted.split(',').filter(|l| !l.is_empty()).collect();
    let values: Vec<f64> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let have: Vec<&str> = labels.split(',').collect();
            (n == name && wanted.iter().all(|w| have.contains(w))).then(|| value.parse().ok())?
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Drops a test's ClickHouse database (plain blocking HTTP, so it can run in `Drop`); errors
/// are ignored — a test that cleans up must not fail for it.
pub fn drop_clickhouse_database(cfg: &strata_shared::config::ClickHouseConfig) {
    use std::io::{Read, Write};
    let Some(addr) = cfg
        .url
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
    else {
        return;
    };
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let sql = format!(
        "DROP DATABASE IF EXISTS {}",
        strata_shared::clickhouse::quote_identifier(&cfg.database)
    );
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nX-ClickHouse-User: {}\r\nX-ClickHouse-Key: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{sql}",
        cfg.user,
        cfg.password.expose(),
        sql.len()
    );
    if s.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
    }
}

/// A TCP proxy on loopback that a test can cut and restore: while cut it refuses new
/// connections and drops open ones, as a stopped server would look to its clients. It also
/// counts the HTTP requests under way at once ([`CuttableProxy::max_in_flight`]). Used to take
/// one client's server away without stopping a server others share (SeaweedFS also stores the
/// broker's log).
pub struct CuttableProxy {
    /// The port clients connect to.
    pub port: u16,
    up: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    open: InFlight,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CuttableProxy {
    /// Starts forwarding `127.0.0.1:<port>` to `target` (`host:port`).
    pub async fn start(target: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (up, rx) = tokio::sync::watch::channel(true);
        let target = target.to_owned();
        let open = std::sync::Arc::new((
            std::sync::atomic::AtomicUsize::new(0),
            std::sync::atomic::AtomicUsize::new(0),
        ));
        let counts = open.clone();
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*rx.borrow() {
                    drop(client); // refused, as far as the client can tell
                    continue;
                }
                let mut rx = rx.clone();
                let target = target.clone();
                let counts = counts.clone();
                let delay = delay.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = relay(client, server, counts, delay) => {}
                        _ = rx.wait_for(|up| !*up) => {} // cut: both ends dropped
                    }
                });
            }
        });
        Ok(Self {
            port,
            up,
            task,
            open,
            delay_ms,
        })
    }

    /// The most HTTP requests that were under way through the proxy at once (a request counts
    /// from its first byte to the end of a chunked response).
    pub fn max_in_flight(&self) -> usize {
        self.open.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Holds each answer's first bytes back this long (a slow server): requests sent together
    /// then overlap whatever the machine's load, and requests sent one after another do not.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Cuts (false) or restores (true) the path.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

type InFlight = std::sync::Arc<(
    std::sync::atomic::AtomicUsize,
    std::sync::atomic::AtomicUsize,
)>;

/// Copies both ways between `client` and `server`, counting requests under way: one starts
/// with bytes from the client, and ends with the last chunk of the server's chunked answer.
/// Each answer's first bytes wait `delay_ms` first.
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    counts: InFlight,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::AtomicBool;
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let busy = std::sync::Arc::new(AtomicBool::new(false));
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (up_busy, up_counts) = (busy.clone(), counts.clone());
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            if !up_busy.swap(true, SeqCst) {
                let now = up_counts.0.fetch_add(1, SeqCst) + 1;
                up_counts.1.fetch_max(now, SeqCst);
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        let mut answer_starts = true;
        while let Ok(n) = sr.read(&mut buf).await {
            let delay = delay_ms.load(SeqCst);
            if n > 0 && answer_starts && delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            answer_starts = false;
            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            let keep = tail.len().saturating_sub(5);
            tail.drain(..keep);
            if tail.ends_with(b"0\r\n\r\n") {
                answer_starts = true;
                if busy.swap(false, SeqCst) {
                    counts.0.fetch_sub(1, SeqCst);
                }
            }
        }
        if busy.swap(false, SeqCst) {
            counts.0.fetch_sub(1, SeqCst);
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `script` (a path in the repository at `root`) with the stack's venv Python
/// (`.strata/venv`, filled by `infra/stack.sh`), `input` as JSON on its stdin, and returns the
/// JSON it prints — or its stderr if it failed.
pub fn venv_python(
    root: &Path,
    script: &str,
    input: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    use std::io::Write;
    use std::process::Stdio;
    let python = root.join(".strata/venv/bin/python");
    let mut child = Command::new(&python)
        .arg(root.join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{} (run `make up`): {e}", python.display()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{script} printed no JSON: {e}"))
}

/// Tests that drive a whole pipeline or load both cores for minutes take this guard first, so
/// that no two of them overlap inside one test binary (each crate's integration tests are one
/// binary; the harness runs two tests at a time on this machine's two cores).
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// A Ballista cluster of a test's or benchmark's own on loopback: `strata-batch ballista
/// scheduler` and executors, on free ports, killed when dropped.
pub struct LocalBallista {
    /// The scheduler process.
    pub scheduler: Proc,
    /// The executor processes.
    pub executors: Vec<Proc>,
    /// The scheduler's address for `batch.ballista_scheduler` (`df://127.0.0.1:PORT`).
    pub address: String,
    /// The executors' shuffle folders, removed when the cluster is dropped (an executor that is
    /// killed cannot clean its own).
    _work: tempfile::TempDir,
}

impl LocalBallista {
    /// Starts a scheduler (executors count as lost after `executor_timeout_secs` without a
    /// heartbeat) and `executors` executors (a heartbeat a second, `vcores` tasks at once) of the
    /// `strata-batch` binary `bin`, each with the environment `env` (the lake's `STRATA__S3__*`).
    /// Returns at once: the caller waits until the cluster answers.
    pub fn start(
        bin: &Path,
        executors: usize,
        vcores: usize,
        executor_timeout_secs: u64,
        env: &[(&str, &str)],
    ) -> LocalBallista {
        let address = format!("df://127.0.0.1:{}", free_port());
        let spawn = |args: &[String]| {
            let mut cmd = Command::new(bin);
            cmd.arg("ballista")
                .args(args)
                .env("STRATA__BATCH__BALLISTA_SCHEDULER", &address)
                .env("STRATA__TELEMETRY__LOG_LEVEL", "warn")
                .envs(env.iter().copied())
                .stdout(std::process::Stdio::null());
            Proc(cmd.spawn().expect("start strata-batch ballista"))
        };
        let scheduler = spawn(&[
            "scheduler".into(),
            "--executor-timeout-secs".into(),
            executor_timeout_secs.to_string(),
        ]);
        let work = tempfile::tempdir().expect("ballista work folder");
        let executors = (0..executors)
            .map(|i| {
                spawn(&[
                    "executor".into(),
                    "--work-dir".into(),
                    work.path().join(i.to_string()).display().to_string(),
                    "--port".into(),
                    free_port().to_string(),
                    "--grpc-port".into(),
                    free_port().to_string(),
                    "--vcores".into(),
                    vcores.to_string(),
                    "--heartbeat-secs".into(),
                    "1".into(),
                ])
            })
            .collect();
        LocalBallista {
            scheduler,
            executors,
            address,
            _work: work,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sum_samples;

    const PAGE: &str = "# HELP a_total x\n# TYPE a_total counter\n\
        a_total{result=\"ok\",service=\"speed\"} 3\n\
        a_total{result=\"retry\",service=\"speed\"} 2\n\
        a_total_more{result=\"ok\"} 100\n\
        b 7\n";

    #[test]
    fn samples_are_picked_by_name_and_labels() {
        assert_eq!(sum_samples(PAGE, "a_total"), Some(5.0));
        assert_eq!(sum_samples(PAGE, "a_total{result=\"retry\""), Some(2.0));
        assert_eq!(
            sum_samples(PAGE, "a_total{service=\"speed\",result=\"ok\"}"),
            Some(3.0)
        );
        assert_eq!(sum_samples(PAGE, "a_total{result=\"gone\"}"), None);
        assert_eq!(sum_samples(PAGE, "b"), Some(7.0));
        assert_eq!(sum_samples(PAGE, "a"), None);
    }
}
