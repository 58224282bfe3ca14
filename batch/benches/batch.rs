//! `make bench-batch`: the batch layer against its anchors, on the same broker and machine, in
//! one run.
//!
//! 1. BENCH_EVENTS (5M) generated JSON events are produced to a fresh 12-partition topic (at 1M
//!    the run lasts ≈ 10 s, and launch, group join and the final commit weigh like the stream).
//! 2. raw: a plain rdkafka consumer (fresh group) reads them all — the broker's consume rate.
//! 3. archive: `strata-batch archive` (release build, fresh group) from launch until every
//!    event is committed to a Delta table in a local folder; then again into SeaweedFS (S3).
//! 4. recompute: BENCH_RECOMPUTE_EVENTS (10M) events over 24 hours written to a Delta archive,
//!    then both tiers (1m and 1h, exact quantiles and sketches) recomputed in one timed call.
//! 5. DuckDB (pip `duckdb`) computes the same aggregates — dedup by event_id, count, sum, min,
//!    max, quantile_cont p50/p90/p95/p99 per (series, minute) and (series, hour) — over the same
//!    Parquet files; its query time (not Python's start-up) is compared, and both answers are
//!    compared row by row.
//!
//! 6. ballista: the same recompute on an Apache DataFusion Ballista cluster of this machine (a
//!    scheduler and two executors of two task slots, `strata-batch ballista`, release build),
//!    from the same files; its answer is compared with DuckDB's too. Two executors on the same
//!    two cores cannot be faster than the embedded engine: this shows what the cluster costs
//!    (plans sent, shuffles written and fetched, results returned over Arrow Flight).
//!
//! `BENCH_BALLISTA=0` leaves step 6 out (`ballista_s=0.0`).
//!
//! Last line: `batch-bench: archive_eps=N raw_eps=N vs_raw=R recompute_s=N duckdb_s=N
//! vs_duckdb=R equal=true ballista_s=N` (archive_eps: the local-folder lake; equal: both the
//! embedded and the Ballista answers equal DuckDB's).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use strata_batch::archive::schema::ArchivedEvent;
use strata_batch::archive::writer::{open_table, Archive};
use strata_batch::recompute::{recompute_with_progress, Tier};
use strata_shared::{kafka, Config};
use strata_testkit::gen::produce::{produce, Run};
use strata_testkit::gen::truth::hour_start;
use strata_testkit::gen::{Format, Generator, Spec};
use strata_testkit::{env_u64, free_port, scrape, Proc};

/// The allocator `strata-batch` runs with (its `main.rs`), so the recompute is timed as it runs
/// there: glibc's malloc made a fifth of this process's samples (`perf`, 2026-12-01).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::main]
async fn main() {
    let events = env_u64("BENCH_EVENTS", 5_000_000);
    let recompute_events = env_u64("BENCH_RECOMPUTE_EVENTS", 10_000_000);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = Config::load(None).expect("configuration");
    // The recompute's own phase timings (read, dedup, labels, each tier's query and commit).
    let mut telemetry = cfg.telemetry.clone();
    telemetry.log_level = "warn,strata_batch::recompute=debug".into();
    strata_shared::telemetry::init_tracing(&telemetry);
    cfg.kafka.topic = format!("strata-bench-batch-{id}");
    kafka::create_topics(&cfg.kafka, &[(&cfg.kafka.topic, 12)])
        .await
        .expect("create topic (run `make up`)");
    let spec = Spec {
        series: 10_000,
        metrics: 10,
        format: Format::Json,
        duplicate_ratio: 0.01,
        base_time_ms: chrono::Utc::now().timestamp_millis(),
        ..Spec::default()
    };
    // BENCH_EVENTS=0 skips the archive part (to time the recompute alone).
    let (raw_eps, local_eps) = if events > 0 {
        let t = Instant::now();
        let run = Run {
            kafka: &cfg.kafka,
            events,
            rate: 0.0,
            stop: Arc::new(AtomicBool::new(false)),
            progress: &|_| {},
        };
        let r = produce(&run, spec, None).expect("produce");
        assert_eq!(r.delivered, events);
        eprintln!(
            "produced {events} events in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let raw_eps = raw_consume(&cfg, events).await;
        eprintln!("raw consumer: {raw_eps:.0} events/s");
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake").display().to_string();
        let local_eps = archive(&cfg, &lake, events, "local");
        let s3_eps = archive(&cfg, &format!("s3://lake/bench-{id}"), events, "s3");
        eprintln!("archive: local folder {local_eps:.0} events/s, SeaweedFS {s3_eps:.0} events/s");
        (raw_eps, local_eps)
    } else {
        (0.0, 0.0)
    };

    let (recompute_s, duckdb_s, ballista_s, equal) = recompute_vs_duckdb(recompute_events).await;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!(
        "batch-bench: archive_eps={local_eps:.0} raw_eps={raw_eps:.0} vs_raw={:.2} recompute_s={recompute_s:.1} duckdb_s={duckdb_s:.1} vs_duckdb={:.2} equal={equal} ballista_s={ballista_s:.1}",
        ratio(local_eps, raw_eps),
        ratio(recompute_s, duckdb_s)
    );
}

/// A plain consumer in a fresh group, from creation to the last message.
async fn raw_consume(cfg: &Config, events: u64) -> f64 {
    let k = cfg.kafka.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let c: BaseConsumer = kafka::consumer_config(&k, &format!("{}-raw", k.topic))
            .create()
            .unwrap();
        c.subscribe(&[&k.topic]).unwrap();
        let mut n = 0u64;
        while n < events && started.elapsed() < Duration::from_secs(600) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                std::hint::black_box(rdkafka::Message::payload(&m).map_or(0, <[u8]>::len));
                n += 1;
            }
        }
        assert_eq!(n, events, "raw consumer read everything");
        n as f64 / started.elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

/// strata-batch archive from launch until `events` are committed to `lake`.
fn archive(cfg: &Config, lake: &str, events: u64, name: &str) -> f64 {
    let port = free_port();
    let log = std::fs::File::create(std::env::temp_dir().join(format!("bench-archive-{name}.log")))
        .unwrap();
    let started = Instant::now();
    let _p = Proc(
        Command::new(env!("CARGO_BIN_EXE_strata-batch"))
            .env("STRATA__TELEMETRY__SELF_REPORT_INTERVAL", "0s")
            .arg("archive")
            .env("STRATA__KAFKA__TOPIC", &cfg.kafka.topic)
            .env(
                "STRATA__BATCH__ARCHIVE_GROUP_ID",
                format!("{}-{name}", cfg.kafka.topic),
            )
            .env("STRATA__BATCH__LISTEN", format!("127.0.0.1:{port}"))
            .env("STRATA__LAKE__URL", lake)
            .env("STRATA__S3__ENDPOINT", "http://127.0.0.1:8333")
            .env("STRATA__S3__ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "minioadmin")
            .env("AWS_SECRET_ACCESS_KEY", "minioadmin")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start strata-batch archive"),
    );
    loop {
        let n = scrape(port, "strata_archive_events_total").unwrap_or(0.0) as u64;
        if n >= events {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "archive ({name}) stalled at {n}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    events as f64 / started.elapsed().as_secs_f64()
}

/// A size line of /proc/self/status (`VmRSS`, `VmHWM`) in MB; 0 where there is none.
fn proc_status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(&format!("{key}:")))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Writes `n` events over 24 h to a fresh local archive, recomputes them, runs DuckDB over the
/// same files, recomputes them again on a local Ballista cluster, and compares: (recompute
/// seconds, DuckDB seconds, Ballista seconds, both equal DuckDB's answer).
async fn recompute_vs_duckdb(n: u64) -> (f64, f64, f64, bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.lake.url = dir.path().join("lake").display().to_string();
    let base = hour_start(chrono::Utc::now().timestamp_millis());
    let spec = Spec {
        series: 10_000,
        metrics: 10,
        duplicate_ratio: 0.01,
        base_time_ms: base,
        spread_ms: 24 * 3_600_000,
        seed: 1234,
        ..Spec::default()
    };
    let t = Instant::now();
    let mut archive = Archive::open(&cfg).await.unwrap();
    let mut batch = Vec::with_capacity(1_000_000);
    for (i, m) in Generator::new(spec).take(n as usize).enumerate() {
        batch.push(ArchivedEvent {
            event: m.event.expect("no malformed events asked for"),
            partition: 0,
            offset: i as i64,
        });
        if batch.len() == 1_000_000 {
            archive
                .append(&batch, &BTreeMap::from([(0, i as i64)]))
                .await
                .unwrap();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        archive
            .append(&batch, &BTreeMap::from([(0, n as i64 - 1)]))
            .await
            .unwrap();
    }
    eprintln!("archived {n} events in {:.1}s", t.elapsed().as_secs_f64());
    let (from, to) = (base - 24 * 3_600_000, base);

    // The recompute's memory: the peak resident size is reset here (Linux: `5` into
    // /proc/self/clear_refs) and read after.
    let rss_before = proc_status_mb("VmRSS");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t = Instant::now();
    let mut last = Instant::now();
    let report = recompute_with_progress(&cfg, from, to, None, |phase| {
        eprintln!(
            "  {phase:?} starts after {:.1}s",
            last.elapsed().as_secs_f64()
        );
        last = Instant::now();
    })
    .await
    .expect("recompute");
    let recompute_s = t.elapsed().as_secs_f64();
    eprintln!(
        "recompute: {} rollup_1m rows, {} rollup_1h rows in {recompute_s:.1}s; \
         resident {rss_before:.0} MB before, peak {:.0} MB during",
        report.rows[0],
        report.rows[1],
        proc_status_mb("VmHWM")
    );
    let mut minute = open_table(&cfg, Tier::Minute.table()).await.unwrap();
    minute.load().await.unwrap();
    let bytes: i64 = minute
        .snapshot()
        .unwrap()
        .log_data()
        .into_iter()
        .map(|f| f.size())
        .sum();
    eprintln!("rollup_1m: {:.1} MB of Parquet", bytes as f64 / 1e6);

    // DuckDB over the very same Parquet files.
    let mut events = open_table(&cfg, "events").await.unwrap();
    events.load().await.unwrap();
    let files: Vec<String> = events
        .get_file_uris()
        .unwrap()
        .map(|u| u.trim_start_matches("file://").to_owned())
        .collect();
    let out = dir.path().join("duckdb");
    std::fs::create_dir_all(&out).unwrap();
    let list = dir.path().join("files.json");
    std::fs::write(&list, serde_json::to_vec(&files).unwrap()).unwrap();
    let python = root().join(".strata/venv/bin/python");
    let output = Command::new(&python)
        .arg(root().join("batch/benches/duckdb_rollup.py"))
        .args([
            list.display().to_string(),
            out.display().to_string(),
            from.to_string(),
            to.to_string(),
        ])
        .output()
        .expect("run DuckDB (pip install duckdb into .strata/venv: make bench-batch does)");
    assert!(
        output.status.success(),
        "DuckDB failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let duckdb_s: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("duckdb_s="))
        .and_then(|v| v.trim().parse().ok())
        .expect("DuckDB prints duckdb_s=");
    eprintln!("DuckDB: {duckdb_s:.1}s");

    let mut equal = same_as_duckdb(&cfg, &out, "embedded").await;
    if env_u64("BENCH_BALLISTA", 1) == 0 {
        return (recompute_s, duckdb_s, 0.0, equal);
    }

    // The same recompute on a Ballista cluster on this machine.
    let cluster = strata_testkit::LocalBallista::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_strata-batch")),
        2,
        2,
        20,
        &[],
    );
    cfg.batch.engine = strata_shared::config::Engine::Ballista;
    cfg.batch.ballista_scheduler = cluster.address.clone();
    strata_batch::cluster::wait_until_ready(&cfg, Duration::from_secs(60))
        .await
        .expect("the Ballista cluster runs a query");
    tokio::time::sleep(Duration::from_secs(3)).await; // both executors registered
    let t = Instant::now();
    let report = recompute_with_progress(&cfg, from, to, None, |_| {})
        .await
        .expect("recompute on Ballista");
    let ballista_s = t.elapsed().as_secs_f64();
    eprintln!(
        "ballista: {} rollup_1m rows, {} rollup_1h rows in {ballista_s:.1}s",
        report.rows[0], report.rows[1]
    );
    equal &= same_as_duckdb(&cfg, &out, "ballista").await;
    drop(cluster);
    (recompute_s, duckdb_s, ballista_s, equal)
}

/// Whether both tiers equal DuckDB's answer (in `out`), saying which rows differ if not.
async fn same_as_duckdb(cfg: &Config, out: &std::path::Path, engine: &str) -> bool {
    let mut equal = true;
    for (tier, name) in [(Tier::Minute, "1m"), (Tier::Hour, "1h")] {
        let diff = compare(cfg, tier, &out.join(format!("{name}.parquet"))).await;
        if diff != 0 {
            eprintln!("{name}: {diff} rows differ between Strata ({engine}) and DuckDB");
            equal = false;
        }
    }
    equal
}

/// Rows that differ between a rollup table and DuckDB's answer (a full outer join on the key;
/// quantiles compared to 1e-9 relative, since the two interpolate in different operation
/// orders; count, sum, min and max exactly).
async fn compare(cfg: &Config, tier: Tier, duck: &std::path::Path) -> i64 {
    let mut table = open_table(cfg, tier.table()).await.unwrap();
    table.load().await.unwrap();
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("s", table.table_provider().await.unwrap())
        .unwrap();
    ctx.register_parquet("d", duck.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let close = |c: &str| format!("abs(s.{c} - d.{c}) > 1e-9 * greatest(abs(d.{c}), 1e-300)");
    let sql = format!(
        "SELECT count(*) FROM s FULL OUTER JOIN d
           ON CAST(s.series_id AS BIGINT) = CAST(d.series_id AS BIGINT) AND s.start_ms = d.start_ms
         WHERE s.start_ms IS NULL OR d.start_ms IS NULL
            OR s.count <> d.count OR s.sum <> d.sum OR s.min <> d.min OR s.max <> d.max
            OR {} OR {} OR {} OR {}",
        close("p50"),
        close("p90"),
        close("p95"),
        close("p99")
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let col = datafusion::arrow::compute::cast(
        batches[0].column(0),
        &datafusion::arrow::datatypes::DataType::Int64,
    )
    .unwrap();
    datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::Int64Type>(&col)
        .value(0)
}
