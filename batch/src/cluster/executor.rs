//! `strata-batch ballista executor`: Ballista's executor, with Strata's functions and the lake's
//! object stores. It registers with the scheduler at `batch.ballista_scheduler`, reads the
//! archive's Parquet files the plans name, and serves shuffle data and results over Arrow Flight.

use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use strata_shared::Config;

use crate::Error;

/// Options of `strata-batch ballista executor`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorArgs {
    /// Arrow Flight port: shuffle data between executors, results to the client.
    #[arg(long, default_value_t = 50061)]
    pub port: u16,
    /// gRPC port: tasks from the scheduler.
    #[arg(long, default_value_t = 50062)]
    pub grpc_port: u16,
    /// Address both ports bind to.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_host: String,
    /// Host the scheduler, the other executors and clients reach this executor at (default:
    /// --bind-host, unless that is 0.0.0.0).
    #[arg(long)]
    pub external_host: Option<String>,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long)]
    pub vcores: Option<usize>,
    /// Folder for shuffle files (default: a new temporary folder).
    #[arg(long)]
    pub work_dir: Option<String>,
    /// Bytes of memory the executor's tasks may hold before they spill (default: Ballista's
    /// share of the machine's memory).
    #[arg(long)]
    pub memory_pool_bytes: Option<u64>,
    /// Seconds between heartbeats to the scheduler (keep it well under the scheduler's
    /// --executor-timeout-secs).
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,
}

/// Runs the executor until SIGTERM or Ctrl-C.
pub async fn run(cfg: &Config, args: &ExecutorArgs) -> Result<(), Error> {
    let (scheduler_host, scheduler_port) = cfg.batch.ballista_host_port()?;
    let mut functions = BallistaFunctionRegistry::default();
    for f in super::aggregate_functions() {
        functions.aggregate_functions.insert(f.name().to_owned(), f);
    }
    let s3 = cfg.s3.clone();
    let work_dir = args.work_dir.clone();
    let defaults = ExecutorProcessConfig::default();
    let external_host = args
        .external_host
        .clone()
        .or_else(|| (args.bind_host != "0.0.0.0").then(|| args.bind_host.clone()));
    let config = ExecutorProcessConfig {
        bind_host: args.bind_host.clone(),
        external_host,
        port: args.port,
        grpc_port: args.grpc_port,
        scheduler_host,
        scheduler_port,
        // Wait for the scheduler rather than exit when it is not up yet.
        scheduler_connect_timeout_seconds: 60,
        vcores: args.vcores.unwrap_or(defaults.vcores).max(1),
        work_dir: args.work_dir.clone(),
        memory_pool_size: args.memory_pool_bytes,
        executor_heartbeat_interval_seconds: args.heartbeat_secs.max(1),
        special_mod_log_level: cfg.telemetry.log_level.clone(),
        override_function_registry: Some(Arc::new(functions)),
        override_runtime_producer: Some(Arc::new(move |_| {
            super::runtime(&s3, work_dir.as_deref())
        })),
        ..defaults
    };
    tracing::info!(
        port = args.port,
        grpc_port = args.grpc_port,
        vcores = config.vcores,
        "ballista executor starting"
    );
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}
