//! `strata-batch ballista scheduler`: Ballista's scheduler, with Strata's functions and the lake's
//! object stores in every job's session. Recomputes (`batch.engine = "ballista"`) send their
//! plans here; executors register here.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use strata_shared::Config;

use crate::Error;

/// Options of `strata-batch ballista scheduler`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// Address to listen on (default: the port of `batch.ballista_scheduler`, on that host when
    /// it is an IP address, else on every interface).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Seconds without a heartbeat after which an executor counts as lost: its tasks, and the
    /// shuffle output it held, are computed again on the others.
    #[arg(long, default_value_t = 20)]
    pub executor_timeout_secs: u64,
}

/// Runs the scheduler until SIGTERM or Ctrl-C.
pub async fn run(cfg: &Config, args: &SchedulerArgs) -> Result<(), Error> {
    let (host, port) = cfg.batch.ballista_host_port()?;
    let bind = args.bind.unwrap_or_else(|| {
        let ip = host.parse().unwrap_or([0, 0, 0, 0].into());
        SocketAddr::new(ip, port)
    });
    let s3 = cfg.s3.clone();
    let timeout = args.executor_timeout_secs.max(2);
    let mut config = SchedulerConfig::default()
        .with_hostname(host)
        .with_port(bind.port())
        .with_override_session_builder(Arc::new(move |c| super::scheduler_session(c, &s3)));
    config.executor_timeout_seconds = timeout;
    config.expire_dead_executor_interval_seconds = (timeout / 4).max(1);
    config.no_executors_grace_period_seconds = timeout;
    tracing::info!(%bind, executor_timeout_secs = timeout, "ballista scheduler starting");
    let cluster = BallistaCluster::new_from_config(&config).await?;
    start_server(cluster, bind, Arc::new(config)).await?;
    Ok(())
}
