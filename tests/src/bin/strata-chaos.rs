//! `make chaos`: one long stream through the whole pipeline while everything fails — the broker
//! restarted, strata-speed and the archiver SIGKILLed five times each while writing, ClickHouse
//! stopped for 30 s, the S3 server stopped for 30 s — then a count of what was lost or counted twice in each place:
//! ClickHouse's rollups, the Delta archive (on S3) and the merged answers of strata-serving.
//!
//! The ground truth is the generator's: every message is sent until the broker acknowledges it
//! (a failed delivery is sent again), so the broker holds each generated message at least once.
//! Producer retries (no idempotence) may store a message twice; such copies carry the same
//! event_id, so per (series, minute) and (series, hour) they change nothing, and in the archive
//! each is a message of its own at its own (partition, offset). The archive is therefore checked
//! per event_id against the generator's copies (fewer = lost) and per (partition, offset) (twice
//! = duplicated). Reading the topic back instead would add minutes: tansu serves old offsets from
//! S3, one object per record batch.
//! Knobs: CHAOS_EVENTS (2,000,000), CHAOS_RATE (events/s, 3,000: the broker, the lake and
//! ClickHouse share this machine's 2 cores with the services; a faster stream builds a backlog),
//! CHAOS_STALL_S (300: a layer whose count has not risen for this long is done waiting for) and
//! CHAOS_MAX_WAIT_S (3600: a layer still rising after this long is "not caught up", not lossy).
//! Last line: `chaos: events=N kills=N lost=N duplicated=N exact=BOOL caught_up_s=N` (seconds
//! from the end of the stream until every layer held everything; `none` and
//! `not_caught_up=<layers>` when some layer was still rising at the cap).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strata_batch::sql::{render, Limits, OutputFormat, SqlSession};
use strata_testkit::gen::produce::{produce, Run};
use strata_testkit::gen::truth::{hour_start, Truth};
use strata_testkit::gen::{metric_name, Format, Generator, Spec};
use strata_testkit::{env_u64, scrape, stack};
use strata_tests::catch_up::{describe, Outcome, Step, Watch};
use strata_tests::{root, Pipeline};

const H: i64 = 3_600_000;
const METRICS: u32 = 8;

fn say(started: Instant, what: &str) {
    eprintln!("[{:6.1}s] {what}", started.elapsed().as_secs_f64());
}

/// `SELECT …` on ClickHouse over HTTP, tab-separated rows.
async fn clickhouse(http: &reqwest::Client, url: &str, sql: &str) -> Result<Vec<Vec<String>>> {
    let r = http
        .post(url)
        .body(format!("{sql} FORMAT TSV"))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("ClickHouse: {}", r.text().await?);
    }
    Ok(r.text()
        .await?
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect())
}

/// (lost, duplicated) between wanted and found counts per key.
fn compare<K: Ord + Clone>(want: &BTreeMap<K, u64>, got: &BTreeMap<K, u64>) -> (u64, u64) {
    let (mut lost, mut dup) = (0, 0);
    for (k, w) in want {
        let g = got.get(k).copied().unwrap_or(0);
        lost += w.saturating_sub(g);
        dup += g.saturating_sub(*w);
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            dup += g;
        }
    }
    (lost, dup)
}

/// Configuration of every service in the run, on its first start and on each restart.
const SERVICE_ENV: &[(&str, &str)] = &[
    ("STRATA__BATCH__SCHEDULE_CLOSED_HOURS", "6"),
    // Once a minute (the tests' helper says every 2 s): each run re-reads hours of the archive
    // from the same SeaweedFS that tansu serves the backlog from.
    ("STRATA__BATCH__SCHEDULE", "0 * * * * *"),
    ("STRATA__SPEED__MAX_RETRY_BACKOFF", "2s"),
    // The shipped defaults, not the tests' 1 s: a Delta commit and a Parquet file per second from
    // the archiver, and a coverage poll per second from serving, are S3 requests to the same
    // SeaweedFS that tansu reads its backlog from, and no deployment runs that way.
    ("STRATA__BATCH__ARCHIVE_FLUSH_INTERVAL", "5s"),
    ("STRATA__SERVING__COVERAGE_REFRESH", "5s"),
];

#[tokio::main]
async fn main() -> Result<()> {
    let events = env_u64("CHAOS_EVENTS", 2_000_000);
    let rate = env_u64("CHAOS_RATE", 3_000) as f64;
    let started = Instant::now();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut p =
        Pipeline::start_with_lake("chaos", SERVICE_ENV, Some(format!("s3://lake/chaos-{id}")))
            .await?;
    say(started, "pipeline up (lake on SeaweedFS)");
    let now = chrono::Utc::now().timestamp_millis();
    let spec = Spec {
        base_time_ms: now,
        spread_ms: 2 * H,
        series: 1000,
        metrics: METRICS,
        format: Format::Json,
        duplicate_ratio: 0.01,
        late_ratio: 0.01,
        malformed_ratio: 0.005,
        seed: 7,
        ..Spec::default()
    };
    // The load generator's producer without idempotence: an idempotent producer whose broker
    // restarts without its producer state can stall or turn fatal (tansu keeps none), and the
    // stream must go on. Retries may then write a message twice; such a copy keeps its event_id,
    // so the rollups must not count it, and the archive keeps it at its own offset.
    let mut kafka = p.cfg.kafka.clone();
    kafka
        .producer_options
        .insert("enable.idempotence".into(), "false".into());
    // Batches of ≈ 500 ms: tansu stores every record batch as one S3 object and serves a
    // consumer object by object; at 3k/s over the metrics' partitions 50 ms batches hold ≈ 20
    // messages each, and SeaweedFS (shared with the lake) cannot serve them fast enough.
    kafka
        .producer_options
        .insert("linger.ms".into(), "500".into());
    let produced_spec = spec.clone();
    let producer = std::thread::spawn(move || {
        let run = Run {
            kafka: &kafka,
            events,
            rate,
            stop: Arc::new(AtomicBool::new(false)),
            progress: &|_| {},
        };
        let mut truth = Truth::new(Some(produced_spec.clone()));
        produce(&run, produced_spec, Some(&mut truth)).map(|r| (r, truth))
    });

    // The faults, one after another while the stream runs. The broker restart comes first, once
    // both consumers are writing: tansu serves reads from S3 object by object after a restart,
    // so consumers far behind at that moment would need tens of minutes to catch up.
    let repo = root();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (scrape(p.ports[0], "strata_speed_events_inserted_total").unwrap_or(0.0) == 0.0
        || scrape(p.ports[1], "strata_archive_commits_total").unwrap_or(0.0) == 0.0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say(started, "restarting the broker");
    stack(&repo, &["stop", "tansu"]);
    stack(&repo, &["start", "tansu"]);
    say(started, "broker back");
    let mut kills = 0;
    let mut jitter: u64 = 11;
    for (service, port, written) in [
        ("speed", p.ports[0], "strata_speed_events_inserted_total"),
        ("archive", p.ports[1], "strata_archive_commits_total"),
    ] {
        for _ in 0..5 {
            // Kill an instance only once it is writing (it has its partitions and has committed
            // something), then at a pseudo-random instant — a kill during start-up tests little.
            let deadline = Instant::now() + Duration::from_secs(60);
            while scrape(port, written).unwrap_or(0.0) == 0.0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            jitter = jitter
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            tokio::time::sleep(Duration::from_millis(200 + (jitter >> 33) % 1500)).await;
            p.kill(service);
            kills += 1;
            say(started, &format!("SIGKILL {service} (it was writing)"));
            let args: &[&str] = if service == "speed" {
                &["strata-speed", "run"]
            } else {
                &["strata-batch", "archive"]
            };
            p.spawn(service, args, SERVICE_ENV)?;
        }
    }
    for server in ["clickhouse", "seaweedfs"] {
        say(started, &format!("stopping {server} for 30 s"));
        stack(&repo, &["stop", server]);
        tokio::time::sleep(Duration::from_secs(30)).await;
        stack(&repo, &["start", server]);
        say(started, &format!("{server} back"));
    }
    let (report, mut truth) = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))?
        .context("produce")?;
    say(
        started,
        &format!(
            "stream done: {} produced, {} acknowledged, {} failed for good (first delivery \
             error: {})",
            report.produced,
            report.delivered,
            report.failed,
            report.first_error.as_deref().unwrap_or("none")
        ),
    );
    if report.failed > 0 {
        bail!("{} messages never reached the broker", report.failed);
    }
    let summary = truth.summary();
    let messages = report.produced;
    let truth_unique = summary.valid_unique;
    let (mut want_1m, mut want_1h) = (BTreeMap::new(), BTreeMap::new());
    for row in truth.rows() {
        let tier = if row.tier == "1m" {
            &mut want_1m
        } else {
            &mut want_1h
        };
        tier.insert((row.series_id, row.start_ms), row.stats.count);
    }
    // The copies of each valid event the generator sent (a repeat is a message of its own); the
    // same deterministic stream again, checked against what was produced.
    let mut sent: HashMap<String, u64> = HashMap::new();
    for m in Generator::new(spec).take(messages as usize) {
        if let Some(e) = m.event {
            *sent.entry(e.event_id).or_default() += 1;
        }
    }
    if sent.len() as u64 != truth_unique {
        bail!("the generator did not repeat its stream");
    }
    let archive_want: u64 = sent.values().sum();
    say(
        started,
        &format!(
            "generator: {messages} messages, {truth_unique} distinct valid events, {} malformed",
            summary.malformed.values().sum::<u64>()
        ),
    );

    // Wait for every layer to catch up, judged by progress: a layer whose count rises is waited
    // for (up to CHAOS_MAX_WAIT_S in all); one whose count has not risen for CHAOS_STALL_S is
    // done, and what it lacks then is lost.
    let http = reqwest::Client::new();
    let ch_url = p.cfg.clickhouse.url.clone();
    let db = p.cfg.clickhouse.database.clone();
    let names: Vec<String> = (0..METRICS).map(metric_name).collect();
    let in_list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(",");
    let stall = Duration::from_secs(env_u64("CHAOS_STALL_S", 300));
    let cap = Duration::from_secs(env_u64("CHAOS_MAX_WAIT_S", 3600));
    let stream_end = Instant::now();
    let mut ch_watch = Watch::new(truth_unique, stall, cap);
    let mut ar_watch = Watch::new(archive_want, stall, cap);
    let (mut ch_outcome, mut ar_outcome) = (None, None);
    while ch_outcome.is_none() || ar_outcome.is_none() {
        let total = clickhouse(
            &http,
            &ch_url,
            &format!(
                "SELECT sumMerge(cnt) FROM {db}.speed_rollup_1m WHERE metric_name IN ({in_list})"
            ),
        )
        .await
        .ok()
        .and_then(|r| r.first()?.first()?.parse::<u64>().ok())
        .unwrap_or(0);
        let archived = archive_count(&p).await.unwrap_or(0);
        let elapsed = stream_end.elapsed();
        say(
            started,
            &format!(
                "caught up? ClickHouse {total}/{truth_unique}, archive {archived}/{archive_want}"
            ),
        );
        for (watch, outcome, have) in [
            (&mut ch_watch, &mut ch_outcome, total),
            (&mut ar_watch, &mut ar_outcome, archived),
        ] {
            if outcome.is_none() {
                if let Step::Done(o) = watch.observe(have, elapsed) {
                    *outcome = Some(o);
                }
            }
        }
        if ch_outcome.is_some() && ar_outcome.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let ch_outcome = ch_outcome.expect("decided");
    let ar_outcome = ar_outcome.expect("decided");
    say(started, &describe("ClickHouse", truth_unique, &ch_outcome));
    say(
        started,
        &describe("Delta archive", archive_want, &ar_outcome),
    );
    if ch_outcome.caught_up().is_none() || ar_outcome.caught_up().is_none() {
        eprintln!("{}", p.logs());
        say(started, &broker_holds_everything(&p));
    }

    // ClickHouse: events per (series, minute).
    let mut ch_1m = BTreeMap::new();
    for r in clickhouse(
        &http,
        &ch_url,
        &format!(
            "SELECT series_id, toUInt32(minute), sumMerge(cnt) FROM {db}.speed_rollup_1m \
             WHERE metric_name IN ({in_list}) GROUP BY series_id, minute"
        ),
    )
    .await?
    {
        let key = (r[0].parse::<u64>()?, r[1].parse::<i64>()? * 1000);
        ch_1m.insert(key, r[2].parse::<u64>()?);
    }
    let (ch_lost, ch_dup) = compare(&want_1m, &ch_1m);
    say(
        started,
        &format!("ClickHouse rollups: lost {ch_lost}, duplicated {ch_dup}"),
    );
    for ((series, minute), w) in want_1m
        .iter()
        .filter(|(k, w)| ch_1m.get(k) != Some(w))
        .take(10)
    {
        say(
            started,
            &format!(
                "  series {series} minute {minute}: want {w}, ClickHouse {}",
                ch_1m.get(&(*series, *minute)).copied().unwrap_or(0)
            ),
        );
    }

    // The archive: every copy the generator sent at least once (fewer = lost), each broker
    // message once (a (partition, offset) twice = duplicated), nothing the generator never sent.
    let archived = archive_ids(&p).await?;
    let mut ar_lost = 0;
    let mut retry_copies = 0;
    for (id, n) in &sent {
        let got = archived.per_event.get(id).copied().unwrap_or(0);
        ar_lost += n.saturating_sub(got);
        retry_copies += got.saturating_sub(*n);
    }
    let strangers: u64 = archived
        .per_event
        .iter()
        .filter(|(id, _)| !sent.contains_key(*id))
        .map(|(_, n)| n)
        .sum();
    let ar_dup = archived.rows - archived.distinct_offsets + strangers;
    say(
        started,
        &format!(
            "Delta archive: lost {ar_lost}, duplicated {ar_dup} ({} rows, {} distinct offsets, \
             {retry_copies} extra copies the broker holds from producer retries)",
            archived.rows, archived.distinct_offsets
        ),
    );

    // Merged answers: events per (series, hour) through the Prometheus API, once the schedule
    // has caught up — no closed hour dirty, no job queued or running — and the serving layer has
    // re-read the coverage.
    let queue = strata_batch::jobs::JobQueue::open(&p.cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Progress of the batch layer is its remaining work (dirty closed hours and pending jobs)
    // reaching a new low; a watch counts up, so it watches FAR - remaining toward FAR.
    const FAR: u64 = 1 << 32;
    let mut batch_watch = Watch::new(FAR, stall, cap);
    let batch_outcome = loop {
        let last_closed = hour_start(chrono::Utc::now().timestamp_millis()) - H;
        let dirty = strata_batch::coverage::status(&p.cfg)
            .await
            .map(|(_, d, _)| d.range(..=last_closed).count())
            .unwrap_or(usize::MAX);
        let busy = queue
            .list()
            .await
            .map(|jobs| {
                jobs.iter()
                    .filter(|j| {
                        matches!(
                            j.state,
                            strata_batch::jobs::JobState::Queued
                                | strata_batch::jobs::JobState::Running
                        )
                    })
                    .count()
            })
            .unwrap_or(usize::MAX);
        say(
            started,
            &format!("batch layer: {dirty} dirty closed hours, {busy} jobs pending"),
        );
        let remaining = (dirty as u64).saturating_add(busy as u64).min(FAR);
        if let Step::Done(o) = batch_watch.observe(FAR - remaining, stream_end.elapsed()) {
            break o;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    if batch_outcome.caught_up().is_none() {
        eprintln!("{}", p.logs());
    }
    say(
        started,
        &match &batch_outcome {
            Outcome::CaughtUp(d) => format!(
                "batch layer: nothing dirty or pending {:.0} s after the stream",
                d.as_secs_f64()
            ),
            Outcome::Stalled { have, .. } => format!(
                "batch layer: stalled with {} dirty hours or pending jobs",
                FAR - have
            ),
            Outcome::StillRising { have, after } => format!(
                "batch layer: not caught up after {:.0} s (still working): {} dirty hours or \
                 pending jobs",
                after.as_secs_f64(),
                FAR - have
            ),
        },
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let first = want_1h.keys().map(|(_, h)| *h).min().unwrap_or(now);
    let mut merged = BTreeMap::new();
    for m in &names {
        let body: serde_json::Value = http
            .post(format!("{}/api/v1/query_range", p.serving_url))
            .form(&[
                ("query", format!("{m}_count")),
                ("start", ((hour_start(first) + H) / 1000).to_string()),
                ("end", ((hour_start(now) + 2 * H) / 1000).to_string()),
                ("step", "3600".into()),
            ])
            .send()
            .await?
            .json()
            .await?;
        for s in body["data"]["result"].as_array().context("a matrix")? {
            let labels: BTreeMap<String, String> = serde_json::from_value(s["metric"].clone())?;
            let sid = strata_serving::series::series_id_of(m, &labels);
            for pt in s["values"].as_array().context("values")? {
                let t = (pt[0].as_f64().unwrap_or(0.0) * 1000.0) as i64;
                let v: f64 = pt[1].as_str().unwrap_or("0").parse()?;
                merged.insert((sid, t - H), v as u64);
            }
        }
    }
    let (mg_lost, mg_dup) = compare(&want_1h, &merged);
    say(
        started,
        &format!("merged answers: lost {mg_lost}, duplicated {mg_dup}"),
    );

    // Keep the services' logs for a look afterwards.
    let kept = repo.join("target/chaos").join(&id);
    std::fs::create_dir_all(&kept)?;
    for entry in std::fs::read_dir(p.dir.path())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            std::fs::copy(&path, kept.join(path.file_name().unwrap_or_default()))?;
        }
    }
    say(started, &format!("service logs kept in {}", kept.display()));

    // Only a layer that caught up or stopped making progress can have lost something; one still
    // rising when the cap ran out is "not caught up", a failure of its own.
    let layers = [
        ("clickhouse", &ch_outcome, ch_lost),
        ("archive", &ar_outcome, ar_lost),
        ("merged", &batch_outcome, mg_lost),
    ];
    let lost: u64 = layers
        .iter()
        .filter(|(_, o, _)| o.settled())
        .map(|(_, _, n)| n)
        .sum();
    let behind: Vec<&str> = layers
        .iter()
        .filter(|(_, o, _)| !o.settled())
        .map(|(name, _, _)| *name)
        .collect();
    let duplicated = ch_dup + ar_dup + mg_dup;
    let exact = lost == 0 && duplicated == 0 && behind.is_empty();
    let caught_up = layers
        .iter()
        .map(|(_, o, _)| o.caught_up())
        .collect::<Option<Vec<_>>>()
        .map_or("none".to_owned(), |d| {
            format!(
                "{:.0}",
                d.iter().max().copied().unwrap_or_default().as_secs_f64()
            )
        });
    let behind = if behind.is_empty() {
        String::new()
    } else {
        format!(" not_caught_up={}", behind.join(","))
    };
    println!(
        "chaos: events={messages} kills={kills} lost={lost} duplicated={duplicated} exact={exact} \
         caught_up_s={caught_up}{behind}"
    );
    Ok(())
}

/// Whether the broker still holds every message of the topic (no partition's start moved past
/// offset 0), so that what a stalled layer lacks is a loss of that layer, not of retention.
fn broker_holds_everything(p: &Pipeline) -> String {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = &p.cfg.kafka.topic;
    let consumer: BaseConsumer =
        match strata_shared::kafka::consumer_config(&p.cfg.kafka, "chaos-check").create() {
            Ok(c) => c,
            Err(e) => return format!("broker: could not ask for watermarks: {e}"),
        };
    let n = strata_shared::kafka::partition_count(&p.cfg.kafka, topic).unwrap_or(0);
    let moved: Vec<String> = (0..n as i32)
        .filter_map(
            |part| match consumer.fetch_watermarks(topic, part, Duration::from_secs(10)) {
                Ok((0, _)) => None,
                Ok((low, _)) => Some(format!("partition {part} starts at {low}")),
                Err(e) => Some(format!("partition {part}: {e}")),
            },
        )
        .collect();
    if moved.is_empty() {
        format!("broker: all {n} partitions still start at offset 0 (nothing removed by retention)")
    } else {
        format!(
            "broker: not every message is still held: {}",
            moved.join("; ")
        )
    }
}

async fn session(p: &Pipeline) -> Result<SqlSession> {
    SqlSession::open(
        &p.cfg,
        Limits {
            max_rows: 10_000_000,
            timeout: Duration::from_secs(600),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}

async fn archive_count(p: &Pipeline) -> Result<u64> {
    let s = session(p).await?;
    let r = s
        .query("SELECT count(*) AS n FROM events WHERE metric_name NOT LIKE 'strata%'")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let csv = render(&r.batches, OutputFormat::Csv)?;
    Ok(csv.lines().nth(1).unwrap_or("0").trim().parse()?)
}

/// What the archive holds: rows per event_id, all rows, distinct (partition, offset) pairs.
struct Archived {
    per_event: HashMap<String, u64>,
    rows: u64,
    distinct_offsets: u64,
}

async fn archive_ids(p: &Pipeline) -> Result<Archived> {
    let s = session(p).await?;
    let csv = |sql: &'static str| {
        let s = &s;
        async move {
            let r = s.query(sql).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            render(&r.batches, OutputFormat::Csv).map_err(anyhow::Error::from)
        }
    };
    let mut per_event = HashMap::new();
    let mut rows = 0;
    for line in csv(
        "SELECT event_id, count(*) AS n FROM events WHERE metric_name NOT LIKE 'strata%' \
         GROUP BY event_id",
    )
    .await?
    .lines()
    .skip(1)
    {
        if let Some((id, n)) = line.rsplit_once(',') {
            let n: u64 = n.trim().parse()?;
            rows += n;
            per_event.insert(id.to_owned(), n);
        }
    }
    let distinct = csv(
        "SELECT count(*) AS n FROM (SELECT DISTINCT kafka_partition, kafka_offset FROM events \
         WHERE metric_name NOT LIKE 'strata%')",
    )
    .await?;
    let distinct_offsets = distinct.lines().nth(1).unwrap_or("0").trim().parse()?;
    Ok(Archived {
        per_event,
        rows,
        distinct_offsets,
    })
}
