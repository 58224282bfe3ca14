//! `strata-gen`: produces generated metric events to Kafka and optionally writes the exact
//! aggregates they must yield (the ground truth) to a file.
//!
//! Producer settings are those a careful user would pick (acks=all, idempotence, zstd, linger);
//! a full local queue means wait and retry, never drop; any message the broker finally refuses
//! makes the run fail.

use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_shared::{config, telemetry, Config};
use strata_testkit::gen::produce::{produce, Run};
use strata_testkit::gen::truth::Truth;
use strata_testkit::gen::{Format, Spec, ValueDist};

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
    /// Write the messages to this file as JSON Lines (for `strata-batch import`) instead of
    /// producing them; needs `--format json` and a finite `--events`.
    #[arg(long)]
    to_file: Option<PathBuf>,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
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
    if args.to_file.is_some() && (args.events == 0 || args.format != Format::Json) {
        bail!("--to-file needs a finite --events and --format json");
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
    match &args.to_file {
        Some(path) => to_file(&args, path, spec),
        None => run(&args, &cfg.kafka, spec),
    }
}

/// Writes the stream as JSON Lines: one message per line, exactly as it would be on the topic
/// (a malformed message that spans lines is left out, so every line is one message).
fn to_file(args: &Args, path: &std::path::Path, spec: Spec) -> anyhow::Result<()> {
    use std::io::Write;
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(f);
    let mut truth = args.truth.as_ref().map(|_| Truth::new(Some(spec.clone())));
    let (mut written, mut skipped) = (0u64, 0u64);
    for m in strata_testkit::gen::Generator::new(spec).take(args.events as usize) {
        if m.payload.contains(&b'\n') {
            skipped += 1;
            continue;
        }
        out.write_all(&m.payload)?;
        out.write_all(b"\n")?;
        if let Some(t) = truth.as_mut() {
            t.record(&m);
        }
        written += 1;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    if let (Some(tpath), Some(t)) = (&args.truth, truth.as_mut()) {
        let f = std::fs::File::create(tpath)
            .with_context(|| format!("creating {}", tpath.display()))?;
        t.write_jsonl(BufWriter::new(f))
            .with_context(|| format!("writing {}", tpath.display()))?;
    }
    println!(
        "strata-gen: wrote {written} messages to {} ({skipped} multi-line malformed ones left out)",
        path.display()
    );
    Ok(())
}

fn run(args: &Args, kcfg: &config::KafkaConfig, spec: Spec) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    let bar = if args.no_progress {
        ProgressBar::hidden()
    } else if args.events > 0 {
        ProgressBar::new(args.events)
    } else {
        ProgressBar::new_spinner()
    };
    if !args.no_progress {
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {pos}/{len} messages [{elapsed_precise}] {per_sec} {msg}",
        )
        .expect("valid template"),
    );
    let mut truth = args.truth.as_ref().map(|_| Truth::new(Some(spec.clone())));
    let progress = |n: u64| bar.set_position(n);
    let run = Run {
        kafka: kcfg,
        events: args.events,
        rate: args.rate,
        stop,
        progress: &progress,
    };
    let r = produce(&run, spec, truth.as_mut())
        .with_context(|| format!("producing to {}", kcfg.topic))?;
    bar.finish_and_clear();

    if let (Some(path), Some(t)) = (&args.truth, truth.as_mut()) {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        t.write_jsonl(BufWriter::new(f))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "strata-gen: produced={} delivered={} failed={} late={} duplicates={} malformed={} seconds={:.2} eps={:.0}",
        r.produced,
        r.delivered,
        r.failed,
        r.late,
        r.duplicates,
        r.malformed,
        r.seconds,
        r.produced as f64 / r.seconds.max(1e-9)
    );
    if r.failed > 0 || r.delivered != r.produced {
        bail!(
            "{} of {} messages were not delivered (first error: {})",
            r.produced - r.delivered,
            r.produced,
            r.first_error.as_deref().unwrap_or("none reported")
        );
    }
    Ok(())
}
