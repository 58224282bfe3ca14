//! `strata-speed`: the speed layer's service. See the crate docs of `strata_speed`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata_shared::{telemetry, Config};

/// mimalloc instead of glibc's malloc: a profile of `make bench-speed` put a fifth of this
/// process's CPU in glibc's malloc and free (small per-event allocations across threads).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kafka → ClickHouse 1-minute rollups, exactly once.
#[derive(Parser)]
#[command(name = "strata-speed", version, about)]
struct Args {
    /// Strata configuration file (default: $STRATA_CONFIG, else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume and write rollups until SIGTERM (the default).
    Run,
    /// Apply the ClickHouse schema and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strata-speed: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&cfg.telemetry);
    let result = match args.command.unwrap_or(Command::Run) {
        Command::Migrate => strata_speed::clickhouse::schema::migrate(&cfg.clickhouse)
            .await
            .map_err(|e| anyhow::anyhow!("migration failed: {e}")),
        Command::Run => {
            let stop = telemetry::stop_on_signals();
            strata_speed::service::run(cfg, stop)
                .await
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("strata-speed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
