//! `strata-batch`: the batch layer's service and tools. See the crate docs of `strata_batch`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata_batch::dead_letters::replay::{self, Selection};
use strata_batch::jobs::{JobQueue, Trigger};
use strata_batch::recompute::{Phase, Tier};
use strata_batch::sql::{render, Limits, OutputFormat, SqlSession};
use strata_shared::{telemetry, Config};

/// mimalloc instead of glibc's malloc: a profile of `make bench-speed` put a fifth of this
/// process's CPU in glibc's malloc and free (small per-event allocations across threads).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The batch layer of Strata.
#[derive(Parser)]
#[command(name = "strata-batch", version, about)]
struct Args {
    /// Strata configuration file (default: $STRATA_CONFIG, else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append every valid event to the Delta table `events`, exactly once, until SIGTERM.
    Archive,
    /// Recompute on the configured cron schedule (latest closed hours, dirty hours), run queued
    /// recompute jobs from the API and the CLI, and compact the archive, until SIGTERM.
    Serve,
    /// List recompute jobs (queued, running, done, failed) as JSON lines.
    Jobs,
    /// Recompute exact rollups (rollup_1m, rollup_1h) over whole hours [FROM, TO) from the archive.
    Recompute {
        /// Start: RFC 3339 (2026-11-25T10:00:00Z) or Unix milliseconds; a whole hour.
        #[arg(long, value_parser = parse_time)]
        from: i64,
        /// End (exclusive), same forms.
        #[arg(long, value_parser = parse_time)]
        to: i64,
        /// Queue the job for `strata-batch serve` instead of running it here.
        #[arg(long)]
        queue: bool,
    },
    /// Backfill: import MetricEvents from JSON Lines or Parquet files into the archive, through
    /// the same validation as the Kafka path.
    Import {
        /// Files to import (`.parquet` by extension, JSON Lines otherwise).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Rewrite the archive's small Parquet files into larger ones (one Delta commit).
    Compact {
        /// Target file size in MiB.
        #[arg(long, default_value_t = 128)]
        target_mib: u64,
    },
    /// Show what the batch views cover: covered hours, the time boundary, and dirty hours (changed
    /// since their last recompute).
    Status,
    /// The dead letters kept in the lake (table `dead_letters`): list, show, replay after a fix.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
    },
    /// Run an Apache DataFusion Ballista scheduler or executor with Strata's functions and the
    /// lake's object stores, for `batch.engine = "ballista"`.
    Ballista {
        #[command(subcommand)]
        role: BallistaRole,
    },
    /// Run read-only SQL over the lake (tables: events). Without QUERY, read statements ending
    /// in `;` from standard input (an interactive prompt on a terminal).
    Sql {
        /// The statement; omit it for the prompt.
        query: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Most rows printed.
        #[arg(long, default_value_t = 10_000)]
        max_rows: usize,
        /// Longest run time of one statement.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Count the dead letters by reason (first and last refusal), then list them, oldest first.
    List {
        #[command(flatten)]
        selection: SelectionArgs,
        /// Most dead letters listed after the counts.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one dead letter: every column and its payload.
    Show {
        /// PARTITION:OFFSET of the dead-letter topic, as `list` prints it.
        key: String,
    },
    /// Re-validate the selection with today's configuration and produce the valid ones to
    /// `kafka.topic` as they were (same event id: a replay run twice counts each once).
    Replay {
        #[command(flatten)]
        selection: SelectionArgs,
        /// Only re-validate and report; produce nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
struct SelectionArgs {
    /// Only this reason code (e.g. too_many_tags).
    #[arg(long)]
    reason: Option<String>,
    /// Refused at or after: RFC 3339 or Unix milliseconds.
    #[arg(long, value_parser = parse_time)]
    from: Option<i64>,
    /// Refused before, same forms.
    #[arg(long, value_parser = parse_time)]
    to: Option<i64>,
}

impl SelectionArgs {
    fn selection(&self) -> Selection {
        Selection {
            reason: self.reason.clone(),
            from_ms: self.from,
            to_ms: self.to,
        }
    }
}

#[derive(Subcommand)]
enum BallistaRole {
    /// The scheduler: recomputes send their plans here, executors register here (listens on
    /// `batch.ballista_scheduler`'s port).
    Scheduler(strata_batch::cluster::scheduler::SchedulerArgs),
    /// An executor: runs tasks of the scheduler at `batch.ballista_scheduler`.
    Executor(strata_batch::cluster::executor::ExecutorArgs),
}

/// RFC 3339 or Unix milliseconds.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{s:?} is neither RFC 3339 nor Unix milliseconds: {e}"))
}

/// Runs one statement and prints it; false on error.
async fn run_sql(session: &SqlSession, sql: &str, format: OutputFormat) -> bool {
    match session.query(sql).await {
        Ok(r) => {
            match render(&r.batches, format) {
                Ok(text) => println!("{}", text.trim_end()),
                Err(e) => {
                    eprintln!("error: {e}");
                    return false;
                }
            }
            if r.truncated {
                eprintln!("(cut at the row limit; use LIMIT or --max-rows)");
            }
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

/// The prompt: statements end with `;`.
async fn prompt(session: &SqlSession, format: OutputFormat) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    let tty = std::io::stdin().is_terminal();
    let mut ok = true;
    let mut buf = String::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if tty {
            print!(
                "{}",
                if buf.is_empty() {
                    "strata> "
                } else {
                    "   ...> "
                }
            );
            let _ = std::io::stdout().flush();
        }
        let Some(Ok(line)) = lines.next() else { break };
        buf.push_str(&line);
        buf.push('\n');
        if line.trim_end().ends_with(';') {
            let sql = buf.trim().trim_end_matches(';').to_owned();
            buf.clear();
            if !sql.is_empty() {
                ok &= run_sql(session, &sql, format).await;
            }
        }
    }
    ok
}

fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

async fn dead_letters(
    cfg: &Config,
    command: DeadLettersCommand,
) -> Result<(), strata_batch::dead_letters::DeadLetterError> {
    match command {
        DeadLettersCommand::List { selection, limit } => {
            let rows = replay::select(cfg, &selection.selection()).await?;
            println!(
                "{:<24} {:>8}  {:<24}  {:<24}",
                "reason", "count", "first", "last"
            );
            for (reason, (n, first, last)) in replay::by_reason(&rows) {
                println!(
                    "{reason:<24} {n:>8}  {:<24}  {:<24}",
                    time_text(first),
                    time_text(last)
                );
            }
            println!();
            for d in rows.iter().take(limit) {
                let text = String::from_utf8_lossy(&d.payload);
                let preview: String = text.chars().take(60).collect();
                println!(
                    "{:<10} {}  {:<20} {}  {preview:?}",
                    d.key(),
                    time_text(d.rejected_at_ms),
                    d.reason,
                    d.origin_topic
                );
            }
            if rows.len() > limit {
                println!("… {} more (--limit)", rows.len() - limit);
            }
        }
        DeadLettersCommand::Show { key } => {
            let d = replay::show(cfg, &key).await?;
            println!("dead letter   {}", d.key());
            println!("reason        {}", d.reason);
            println!("error         {}", d.error);
            println!(
                "refused at    {} by {}",
                time_text(d.rejected_at_ms),
                d.service
            );
            println!(
                "origin        {} partition {} offset {}",
                d.origin_topic, d.origin_partition, d.origin_offset
            );
            println!("payload       {} bytes", d.payload.len());
            match std::str::from_utf8(&d.payload) {
                Ok(text) => println!("{text}"),
                Err(_) => println!("{:02x?}", d.payload),
            }
        }
        DeadLettersCommand::Replay { selection, dry_run } => {
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} dead letters",
                )
                .expect("a valid template"),
            );
            let report = replay::replay(cfg, &selection.selection(), dry_run, |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
            .await;
            bar.finish_and_clear();
            let r = report?;
            let verb = if dry_run {
                "valid now (dry run)"
            } else {
                "replayed"
            };
            println!(
                "selected {}: {} {verb}, {} already replayed, {} still invalid",
                r.selected,
                r.replayed,
                r.already_replayed,
                r.still_invalid.values().sum::<u64>()
            );
            for (reason, n) in &r.still_invalid {
                println!("  still invalid: {reason} × {n}");
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strata-batch: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&cfg.telemetry);
    let stop = telemetry::stop_on_signals();
    let result = match args.command {
        Command::Archive => strata_batch::service::run_archive(cfg, stop).await,
        Command::Serve => strata_batch::serve::run_serve(cfg, stop).await,
        Command::Ballista { role } => {
            let run = async {
                match role {
                    BallistaRole::Scheduler(a) => {
                        strata_batch::cluster::scheduler::run(&cfg, &a).await
                    }
                    BallistaRole::Executor(a) => {
                        strata_batch::cluster::executor::run(&cfg, &a).await
                    }
                }
            };
            // Ballista's processes stop with the future; the signal handler above took SIGTERM.
            tokio::select! {
                r = run => r,
                _ = async {
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                } => Ok(()),
            }
        }
        Command::Jobs => {
            let jobs = match JobQueue::open(&cfg) {
                Ok(q) => q.list().await,
                Err(e) => Err(e),
            };
            return match jobs {
                Ok(jobs) => {
                    for j in jobs {
                        println!("{}", serde_json::to_string(&j).expect("a job serialises"));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("strata-batch: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Compact { target_mib } => {
            return match strata_batch::archive::compaction::compact(&cfg, target_mib << 20).await {
                Ok(c) => {
                    println!(
                        "compacted: {} small files rewritten into {}",
                        c.files_removed, c.files_added
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("strata-batch: compaction failed: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Status => {
            return match strata_batch::coverage::status(&cfg).await {
                Ok((covered, dirty, end)) => {
                    let hour = |ms: i64| {
                        chrono::DateTime::from_timestamp_millis(ms)
                            .map(|t| t.format("%Y-%m-%dT%H:00Z").to_string())
                            .unwrap_or_default()
                    };
                    println!("covered hours: {}", covered.len());
                    println!(
                        "boundary:      {}",
                        end.map(hour)
                            .unwrap_or_else(|| "none (nothing recomputed yet)".into())
                    );
                    println!(
                        "dirty hours:   {}",
                        dirty.iter().map(|h| hour(*h)).collect::<Vec<_>>().join(" ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("strata-batch: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Import { files } => {
            let paths: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
            let now = chrono::Utc::now().timestamp_millis();
            return match strata_batch::import::import(&cfg, &paths, now).await {
                Ok(r) => {
                    let refused: u64 = r.refused.values().sum();
                    println!(
                        "imported {} events; refused {refused} {:?}",
                        r.imported, r.refused
                    );
                    for e in &r.examples {
                        eprintln!("refused: {e}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("strata-batch: import failed: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Recompute {
            from,
            to,
            queue: true,
        } => {
            let now = chrono::Utc::now().timestamp_millis();
            let submitted = match JobQueue::open(&cfg) {
                Ok(q) => q.submit(from, to, Trigger::Cli, None, now).await,
                Err(e) => Err(e),
            };
            return match submitted {
                Ok((job, new)) => {
                    println!(
                        "{} job {} for [{from}, {to})",
                        if new { "queued" } else { "already queued:" },
                        job.id
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("strata-batch: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Recompute { from, to, .. } => {
            let started = std::time::Instant::now();
            let bar = indicatif::ProgressBar::new(Phase::COUNT).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:20} {pos}/{len} {msg}",
                )
                .expect("a valid template"),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            let progress = |p: Phase| {
                let (step, msg) = match p {
                    Phase::Dedup => (0, "reading the archive, removing duplicates".to_owned()),
                    Phase::Query(Tier::Minute) => (1, "computing rollup_1m".into()),
                    Phase::Query(Tier::Hour) => (2, "computing rollup_1h".into()),
                    Phase::Commit(Tier::Minute) => (3, "committing rollup_1m".into()),
                    Phase::Commit(Tier::Hour) => (4, "committing rollup_1h".into()),
                };
                bar.set_position(step);
                bar.set_message(msg);
            };
            let result =
                strata_batch::recompute::recompute_with_progress(&cfg, from, to, None, progress)
                    .await;
            bar.finish_and_clear();
            return match result {
                Ok(r) => {
                    println!(
                        "recomputed [{from}, {to}) from archive version {}: {} rollup_1m rows, {} rollup_1h rows in {:.1}s",
                        r.archive_version,
                        r.rows[0],
                        r.rows[1],
                        started.elapsed().as_secs_f64()
                    );
                    if !r.skipped[1].is_empty() {
                        println!(
                            "{} hours left as they were: a recompute from a newer archive version wrote them",
                            r.skipped[1].len()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("strata-batch: recompute failed: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::DeadLetters { command } => {
            return match dead_letters(&cfg, command).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("strata-batch: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Sql {
            query,
            format,
            max_rows,
            timeout,
        } => {
            let session = match SqlSession::open(&cfg, Limits { max_rows, timeout }).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("strata-batch: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let ok = match query {
                Some(q) => run_sql(&session, &q, format).await,
                None => prompt(&session, format).await,
            };
            return if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("strata-batch: {e}");
            ExitCode::FAILURE
        }
    }
}
