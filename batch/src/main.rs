//! `strata-batch`: the batch layer's service and tools. See the crate docs of `strata_batch`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use strata_shared::{telemetry, Config};

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
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("signal received; committing and stopping");
        flag.store(true, Ordering::SeqCst);
    });
    let result = match args.command {
        Command::Archive => strata_batch::service::run_archive(cfg, stop).await,
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
