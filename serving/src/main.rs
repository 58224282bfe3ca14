//! `strata-serving`: the merged query API. See the crate docs of `strata_serving`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use strata_shared::{telemetry, Config};

/// The serving layer of Strata: Prometheus query API, JSON API, SQL and recompute jobs.
#[derive(Parser)]
#[command(name = "strata-serving", version, about)]
struct Args {
    /// Strata configuration file (default: $STRATA_CONFIG, else built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strata-serving: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&cfg.telemetry);
    let stop = telemetry::stop_on_signals();
    match strata_serving::app::run(cfg, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("strata-serving: {e}");
            ExitCode::FAILURE
        }
    }
}
