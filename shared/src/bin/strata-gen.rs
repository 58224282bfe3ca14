//! `strata-gen`: produces generated metric events to Kafka and optionally writes the exact
//! aggregates they must yield (the ground truth) to a file.
//!
//! Producer settings are those a careful user would pick (acks=all, idempotence, zstd, linger);
//! a full local queue means wait and retry, never drop; any message the broker finally refuses
//! makes the run fail.

use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use strata_shared::gen::truth::Truth;
use strata_shared::gen::{Format, Generator, Spec, ValueDist};
use strata_shared::{config, kafka, telemetry, Config};

/// Produce generated metric events to Kafka.
#[derive(Parser, Debug)]
#[command(name = "strata-gen", version, about)]
struct Args {
    /// Strata configuration file (default: $STRATA_CONFIG, else built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Bootstrap servers (overrides kafka.brokers).
    #[arg(long)]
    brokers: Option<String>,
    /// Topic to produce to (overrides kafka.topic).
    #[arg(long)]
    topic: Option<String>,
    /// Messages to produce; 0 means until interrupted.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Target messages per second; 0 means as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seed of the stream: the same seed and base time give the same messages.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of metric names.
    #[arg(long, default_value_t = 10)]
    metrics: u32,
    /// Number of series in all (cardinality).
    #[arg(long, default_value_t = 1000)]
    series: u32,
    /// Value distribution.
    #[arg(long, value_enum, default_value_t = ValueDist::Mixed)]
    distribution: ValueDist,
    /// Event times spread over this window before the base time (e.g. 10m, 2h).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    spread: Duration,
    /// End of the event-time window, Unix ms (default: now).
    #[arg(long)]
    base_time_ms: Option<i64>,
    /// Stamp events with the wall clock as they are produced (for live demos).
    #[arg(long)]
    live: bool,
    /// Share of messages that repeat an earlier event_id.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Share of valid events that are hours late.
    #[arg(long, default_value_t = 0.0)]
    late: f64,
    /// Share of malformed messages.
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// Encoding of the messages.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Share of valid messages in a Confluent wire-format frame.
    #[arg(long, default_value_t = 0.0)]
    framed: f64,
    /// Write the exact expected aggregates (JSON Lines) here.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct Ctx(Arc<Deliveries>);
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                self.0
                    .first_error
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert_with(|| e.to_string());
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg = Config::load(args.config.as_deref())?;
    if let Some(b) = &args.brokers {
        cfg.kafka.brokers = b.clone();
    }
    if let Some(t) = &args.topic {
        cfg.kafka.topic = t.clone();
    }
    cfg.validate()?;
    telemetry::init_tracing(&cfg.telemetry);
    for (name, r) in [
        ("duplicates", args.duplicates),
        ("late", args.late),
        ("malformed", args.malformed),
        ("framed", args.framed),
    ] {
        if !(0.0..=1.0).contains(&r) {
            bail!("--{name} must be a share between 0 and 1, got {r}");
        }
    }
    if args.duplicates + args.malformed > 1.0 {
        bail!("--duplicates plus --malformed must not exceed 1");
    }
    if args.truth.is_some() && args.events == 0 {
        bail!("--truth needs a finite --events");
    }
    let spec = Spec {
        seed: args.seed,
        metrics: args.metrics,
        series: args.series,
        distribution: args.distribution,
        base_time_ms: args
            .base_time_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
        spread_ms: args.spread.as_millis() as i64,
        live: args.live,
        duplicate_ratio: args.duplicates,
        late_ratio: args.late,
        malformed_ratio: args.malformed,
        format: args.format,
        framed_ratio: args.framed,
        ..Spec::default()
    };
    run(&args, &cfg.kafka, spec)
}

fn run(args: &Args, kcfg: &config::KafkaConfig, spec: Spec) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<Ctx> = kafka::producer_config(kcfg)
        .create_with_context(Ctx(deliveries.clone()))
        .context("creating the Kafka producer")?;
    let mut truth = args.truth.as_ref().map(|_| Truth::new(Some(spec.clone())));

    let bar = if args.no_progress {
        ProgressBar::hidden()
    } else if args.events > 0 {
        ProgressBar::new(args.events)
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_draw_target(if args.no_progress {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr_with_hz(4)
    });
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {pos}/{len} messages [{elapsed_precise}] {per_sec} {msg}",
        )
        .expect("valid template"),
    );

    let started = Instant::now();
    let mut produced: u64 = 0;
    let (mut late, mut duplicates, mut malformed) = (0u64, 0u64, 0u64);
    for msg in Generator::new(spec) {
        if (args.events > 0 && produced >= args.events) || stop.load(Ordering::Relaxed) {
            break;
        }
        if args.rate > 0.0 && produced % 64 == 0 {
            let due = Duration::from_secs_f64(produced as f64 / args.rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        match msg.kind {
            strata_shared::gen::Kind::Late => late += 1,
            strata_shared::gen::Kind::Duplicate => duplicates += 1,
            strata_shared::gen::Kind::Malformed(_) => malformed += 1,
            strata_shared::gen::Kind::Valid => {}
        }
        let mut record = BaseRecord::to(&kcfg.topic).payload(&msg.payload);
        if let Some(k) = &msg.key {
            record = record.key(k);
        }
        // A full local queue is backpressure: wait for deliveries and retry the same record.
        let mut record = Some(record);
        while let Some(r) = record.take() {
            match producer.send(r) {
                Ok(()) => {}
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    std::thread::sleep(Duration::from_millis(2));
                    record = Some(r);
                }
                Err((e, _)) => bail!("producing to {}: {e}", kcfg.topic),
            }
        }
        if let Some(t) = truth.as_mut() {
            t.record(&msg);
        }
        produced += 1;
        if produced % 1024 == 0 {
            bar.set_position(produced);
        }
    }
    bar.set_position(produced);
    bar.set_message("flushing");
    producer
        .flush(Duration::from_secs(300))
        .context("flushing the producer")?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();

    let failed = deliveries.failed.load(Ordering::Relaxed);
    let ok = deliveries.ok.load(Ordering::Relaxed);
    if let (Some(path), Some(t)) = (&args.truth, truth.as_mut()) {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        t.write_jsonl(BufWriter::new(f))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "strata-gen: produced={produced} delivered={ok} failed={failed} late={late} duplicates={duplicates} \
         malformed={malformed} seconds={secs:.2} eps={:.0}",
        produced as f64 / secs.max(1e-9)
    );
    if failed > 0 || ok != produced {
        bail!(
            "{} of {produced} messages were not delivered (first error: {})",
            produced - ok,
            deliveries
                .first_error
                .lock()
                .expect("not poisoned")
                .as_deref()
                .unwrap_or("none reported")
        );
    }
    Ok(())
}
