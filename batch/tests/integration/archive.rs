//! The archiver against the real broker, with the lake in a local folder and in SeaweedFS (S3):
//! after five SIGKILLs during a stream, the Delta table `events` holds every valid message exactly
//! once — read back with DataFusion.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int32Type, Int64Type};
use datafusion::prelude::SessionContext;
use strata_batch::archive::writer::{open_table, EVENTS_TABLE};
use strata_shared::{kafka, Config};
use strata_testkit::gen::produce::{produce, Run};
use strata_testkit::gen::{Format, Generator, Kind, Spec};
use strata_testkit::{free_port, CuttableProxy, Proc};

struct Env {
    cfg: Config,
    log: std::path::PathBuf,
    /// The S3 endpoint the archiver is given, when it differs from the test's own (a proxy).
    service_s3_endpoint: Option<String>,
}

impl Env {
    async fn new(name: &str, lake_url: String) -> Env {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut cfg = Config::load(None).expect("configuration");
        cfg.kafka.topic = format!("strata-test-{name}-{id}");
        cfg.batch.archive_group_id = format!("strata-test-{name}-{id}");
        cfg.lake.url = lake_url;
        if cfg.lake.url.starts_with("s3://") {
            cfg.s3.endpoint = Some(
                std::env::var("STRATA__S3__ENDPOINT")
                    .unwrap_or_else(|_| "http://127.0.0.1:8333".into()),
            );
            cfg.s3.allow_http = true;
            cfg.s3.access_key_id = Some("minioadmin".into());
            cfg.s3.secret_access_key = Some(strata_shared::config::Secret("minioadmin".into()));
        }
        kafka::create_topics(&cfg.kafka, &[(&cfg.kafka.topic, 12)])
            .await
            .expect("create topic (run `make up`)");
        let log =
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{id}.log"));
        Env {
            cfg,
            log,
            service_s3_endpoint: None,
        }
    }

    fn spawn(&self) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata-batch"));
        cmd.env("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "0s")
            .arg("archive")
            .env("STRATA__KAFKA__BROKERS", &self.cfg.kafka.brokers)
            .env("STRATA__KAFKA__TOPIC", &self.cfg.kafka.topic)
            .env(
                "STRATA__BATCH__ARCHIVE_GROUP_ID",
                &self.cfg.batch.archive_group_id,
            )
            .env("STRATA__BATCH__ARCHIVE_FLUSH_INTERVAL", "500ms")
            .env(
                "STRATA__BATCH__LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("STRATA__LAKE__URL", &self.cfg.lake.url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(e) = self
            .service_s3_endpoint
            .as_ref()
            .or(self.cfg.s3.endpoint.as_ref())
        {
            cmd.env("STRATA__S3__ENDPOINT", e)
                .env("STRATA__S3__ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "minioadmin")
                .env("AWS_SECRET_ACCESS_KEY", "minioadmin");
        }
        Proc(cmd.spawn().expect("start strata-batch"))
    }

    /// (partition, offset, event_id) of every archived row (empty while the table is missing).
    async fn rows(&self) -> Vec<(i32, i64, String)> {
        let Ok(mut table) = open_table(&self.cfg, EVENTS_TABLE).await else {
            return Vec::new();
        };
        if table.load().await.is_err() || table.version().is_none() {
            return Vec::new();
        }
        let ctx = SessionContext::new();
        table.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("events", table.table_provider().await.unwrap())
            .unwrap();
        let batches: Vec<RecordBatch> = ctx
            .sql("SELECT kafka_partition, kafka_offset, event_id FROM events")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut out = Vec::new();
        for b in batches {
            let (p, o, id) = (
                b.column(0).as_primitive::<Int32Type>(),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2),
            );
            let id =
                datafusion::arrow::compute::cast(id, &datafusion::arrow::datatypes::DataType::Utf8)
                    .unwrap();
            let id = id.as_string::<i32>();
            for i in 0..b.num_rows() {
                out.push((p.value(i), o.value(i), id.value(i).to_owned()));
            }
        }
        out
    }
}

/// Streams `events` generated messages at `rate`/s in a thread; returns it and, per event_id,
/// how many times it must be archived (every message that is not malformed; duplicates are
/// separate messages, removed by event_id in the recompute).
fn stream(
    env: &Env,
    events: u64,
    rate: f64,
) -> (std::thread::JoinHandle<()>, HashMap<String, usize>) {
    let spec = Spec {
        base_time_ms: chrono::Utc::now().timestamp_millis(),
        format: Format::Mixed,
        duplicate_ratio: 0.03,
        malformed_ratio: 0.02,
        late_ratio: 0.02,
        ..Spec::default()
    };
    let producer = {
        let (k, spec) = (env.cfg.kafka.clone(), spec.clone());
        std::thread::spawn(move || {
            let run = Run {
                kafka: &k,
                events,
                rate,
                stop: Arc::new(AtomicBool::new(false)),
                progress: &|_| {},
            };
            let r = produce(&run, spec, None).unwrap();
            assert_eq!(r.delivered, events);
        })
    };
    let mut want: HashMap<String, usize> = HashMap::new();
    for m in Generator::new(spec).take(events as usize) {
        if !matches!(m.kind, Kind::Malformed(_)) {
            *want.entry(m.event.unwrap().event_id).or_default() += 1;
        }
    }
    (producer, want)
}

/// Waits for the archive to catch up, then checks each wanted message is there exactly once.
async fn assert_each_valid_message_once(env: &Env, want: &HashMap<String, usize>) {
    let want_rows: usize = want.values().sum();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut rows = env.rows().await;
    while rows.len() < want_rows && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rows = env.rows().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = env.rows().await;
    let distinct: std::collections::HashSet<(i32, i64)> =
        rows.iter().map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(
        distinct.len(),
        rows.len(),
        "some Kafka offset was archived twice"
    );
    let mut got: HashMap<String, usize> = HashMap::new();
    for (_, _, id) in &rows {
        *got.entry(id.clone()).or_default() += 1;
    }
    assert_eq!(rows.len(), want_rows, "archived rows");
    assert_eq!(&got, want, "each valid message exactly once");
}

/// Waits until the archive has more rows than now (or a minute passes).
async fn wait_for_growth(env: &Env) {
    let before = env.rows().await.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.rows().await.len() == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn sigkills_leave_each_valid_event_exactly_once(env: Env) {
    let (producer, want) = stream(&env, 40_000, 1_500.0);
    let mut archiver = env.spawn();
    for kill in 1..=5 {
        wait_for_growth(&env).await;
        tokio::time::sleep(Duration::from_millis(150 * kill)).await;
        drop(archiver); // SIGKILL
        eprintln!("kill {kill} at {} rows", env.rows().await.len());
        archiver = env.spawn();
    }
    producer.join().unwrap();
    assert_each_valid_message_once(&env, &want).await;
    drop(archiver);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_lake_holds_each_valid_event_exactly_once_after_five_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(
        "archive-local",
        dir.path().join("lake").display().to_string(),
    )
    .await;
    sigkills_leave_each_valid_event_exactly_once(env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_lake_holds_each_valid_event_exactly_once_after_five_sigkills() {
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let env = Env::new("archive-s3", format!("s3://lake/test-{prefix}")).await;
    sigkills_leave_each_valid_event_exactly_once(env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_unreachable_for_30s_mid_stream_loses_nothing() {
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let mut env = Env::new("archive-s3-outage", format!("s3://lake/test-{prefix}")).await;
    // The archiver reaches SeaweedFS through a proxy the test cuts: stopping SeaweedFS itself
    // would also stop the broker, which keeps its log there.
    let direct = env.cfg.s3.endpoint.clone().unwrap();
    let proxy = CuttableProxy::start(direct.trim_start_matches("http://"))
        .await
        .unwrap();
    env.service_s3_endpoint = Some(format!("http://127.0.0.1:{}", proxy.port));
    let (producer, want) = stream(&env, 60_000, 1_000.0);
    let mut archiver = env.spawn();
    wait_for_growth(&env).await;
    proxy.set_up(false);
    let cut_at = env.rows().await.len();
    eprintln!("S3 cut at {cut_at} rows");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        env.rows().await.len(),
        cut_at,
        "nothing can be committed while S3 is unreachable"
    );
    assert!(
        archiver.try_wait().unwrap().is_none(),
        "the archiver waits for S3 instead of exiting"
    );
    proxy.set_up(true);
    eprintln!("S3 back");
    producer.join().unwrap();
    assert_each_valid_message_once(&env, &want).await;
    assert!(archiver.try_wait().unwrap().is_none());
}
