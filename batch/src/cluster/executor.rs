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
    /// Folder for shuffle files, made if missing (default: a new temporary folder, removed when
    /// the executor stops).
    #[arg(long)]
    pub work_dir: Option<String>,
    /// A job's shuffle files left behind (its scheduler gone before it said "clean") are removed
    /// once untouched for this many seconds; keep it above `batch.ballista_job_timeout`.
    #[arg(long, default_value_t = 86_400)]
    pub job_data_ttl_secs: u64,
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
    // Ballista's own default folder is a temporary folder it drops at once (the path lives on,
    // nothing removes it): make ours, kept until the executor returns.
    let (work_dir, _temporary) = work_folder(args.work_dir.as_deref())?;
    let runtime_dir = work_dir.clone();
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
        work_dir: Some(work_dir),
        // Sweep stale jobs' folders every 10 minutes, and everything on SIGTERM.
        job_data_clean_up_interval_seconds: 600,
        job_data_ttl_seconds: args.job_data_ttl_secs.max(1),
        memory_pool_size: args.memory_pool_bytes,
        executor_heartbeat_interval_seconds: args.heartbeat_secs.max(1),
        special_mod_log_level: cfg.telemetry.log_level.clone(),
        override_function_registry: Some(Arc::new(functions)),
        override_runtime_producer: Some(Arc::new(move |_| super::runtime(&s3, Some(&runtime_dir)))),
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

/// The shuffle folder: `--work-dir` (made if missing) or a new temporary folder, whose guard
/// removes it when dropped.
fn work_folder(given: Option<&str>) -> Result<(String, Option<tempfile::TempDir>), Error> {
    match given {
        Some(path) => {
            std::fs::create_dir_all(path).map_err(|source| Error::WorkDir {
                path: path.to_owned(),
                source,
            })?;
            Ok((path.to_owned(), None))
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("strata-ballista-")
                .tempdir()
                .map_err(|source| Error::WorkDir {
                    path: std::env::temp_dir().display().to_string(),
                    source,
                })?;
            Ok((dir.path().display().to_string(), Some(dir)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::work_folder;

    #[test]
    fn a_given_folder_is_made_and_kept_a_temporary_one_goes_with_its_guard() {
        let root = tempfile::tempdir().unwrap();
        let given = root.path().join("a/b");
        let (path, guard) = work_folder(Some(given.to_str().unwrap())).unwrap();
        assert!(guard.is_none() && std::path::Path::new(&path).is_dir());

        let (path, guard) = work_folder(None).unwrap();
        assert!(std::path::Path::new(&path).is_dir());
        drop(guard);
        assert!(
            !std::path::Path::new(&path).exists(),
            "{path} outlived the executor"
        );
    }
}
