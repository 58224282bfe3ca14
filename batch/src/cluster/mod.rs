//! Strata on an Apache DataFusion Ballista cluster: what a scheduler and its executors need to
//! run a recompute's SQL — Strata's aggregate `strata_quantiles` and the lake's object stores —
//! and the client session a recompute sends its jobs through.
//!
//! `strata-batch ballista scheduler` and `strata-batch ballista executor` ([`scheduler`],
//! [`executor`]) are Ballista's own scheduler and executor processes (the `ballista-scheduler`
//! and `ballista-executor` crates), started with these registered; nothing of Ballista's
//! scheduling, shuffles or failure handling is Strata's. [`remote_context`] is the client side,
//! used by [`crate::recompute::on_cluster`].

use std::sync::Arc;

use ballista::extension::{SessionConfigExt, SessionContextExt};
use datafusion::error::Result;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{FunctionRegistry, SessionState, SessionStateBuilder};
use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::{SessionConfig, SessionContext};
use strata_shared::config::S3Config;
use strata_shared::Config;

pub mod executor;
pub mod scheduler;
mod stores;

pub use stores::LakeStores;

/// The aggregate functions Strata adds to DataFusion's: every process that plans or runs a
/// recompute (client, scheduler, executors) registers them, as plans name them only.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(crate::recompute::quantiles::udaf())]
}

/// A runtime whose object stores are the lake's ([`LakeStores`]); spill files under `temp_dir`.
pub fn runtime(s3: &S3Config, temp_dir: Option<&str>) -> Result<Arc<RuntimeEnv>> {
    let mut b =
        RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(LakeStores::new(s3.clone())));
    if let Some(dir) = temp_dir {
        b = b.with_temp_file_path(dir);
    }
    Ok(Arc::new(b.build()?))
}

/// The scheduler's session for a job: Ballista's defaults, the lake's stores and Strata's
/// functions (the scheduler decodes the client's plan and lists its files).
pub fn scheduler_session(config: SessionConfig, s3: &S3Config) -> Result<SessionState> {
    let state = ballista_core::utils::default_session_builder(config)?;
    let mut state = SessionStateBuilder::new_from_existing(state)
        .with_runtime_env(runtime(s3, None)?)
        .build();
    for f in aggregate_functions() {
        state.register_udaf(f)?;
    }
    Ok(state)
}

/// A session whose queries run on the Ballista cluster at `batch.ballista_scheduler`, with
/// Strata's functions and the lake's stores (to read the files' schema). Connects lazily: an
/// unreachable scheduler fails the first query, not this call.
pub async fn remote_context(cfg: &Config) -> Result<SessionContext> {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(SessionConfig::new_with_ballista().with_ballista_job_name("strata recompute"))
        .with_runtime_env(runtime(&cfg.s3, None)?)
        .build();
    let ctx = SessionContext::remote_with_state(&cfg.batch.ballista_scheduler, state).await?;
    // After the upgrade, which resets the functions to Ballista's own.
    for f in aggregate_functions() {
        ctx.register_udaf(Arc::unwrap_or_clone(f));
    }
    Ok(ctx)
}

/// Waits until the cluster at `batch.ballista_scheduler` has run a query (so a scheduler
/// answers and at least one executor has registered), for at most `within`.
pub async fn wait_until_ready(cfg: &Config, within: std::time::Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let attempt = async {
            let ctx = remote_context(cfg).await?;
            ctx.sql("SELECT 1").await?.collect().await
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, attempt).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => {
                return Err(datafusion::error::DataFusionError::Execution(format!(
                    "the Ballista cluster at {} ran no query within {within:?}",
                    cfg.batch.ballista_scheduler
                )))
            }
            Ok(Err(_)) => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
        }
    }
}
