//! The SQL session over the archive that the PostgreSQL and Arrow Flight SQL protocols share:
//! the lake's tables (`events`, `rollup_1m`, `rollup_1h`) plus the `pg_catalog` tables that
//! PostgreSQL clients read on connect. The lake's tables are re-registered every
//! `serving.coverage_refresh`, so new archive commits and recomputes show up without
//! reconnecting. Queries run on it through [`strata_batch::sql`]'s read-only rules and limits.

use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use strata_batch::sql::{register_lake_tables, SqlError};
use strata_shared::Config;

/// Builds the session once the lake is readable (retrying every 5 s until it is), then keeps
/// its tables fresh in the background.
pub async fn open(cfg: Arc<Config>) -> Arc<SessionContext> {
    let ctx = loop {
        match session(&cfg).await {
            Ok(ctx) => break ctx,
            Err(e) => {
                tracing::warn!(error = %e, "SQL protocols: lake not readable yet; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let refreshed = ctx.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(cfg.serving.coverage_refresh.max(Duration::from_secs(1))).await;
            if let Err(e) = register_lake_tables(&cfg, &refreshed).await {
                tracing::warn!(error = %e, "SQL protocols: lake tables not refreshed");
            }
        }
    });
    ctx
}

async fn session(cfg: &Config) -> Result<Arc<SessionContext>, SqlError> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
    setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider)
        .map_err(|e| SqlError::Lake(format!("pg_catalog: {e}")))?;
    register_lake_tables(cfg, &ctx).await?;
    Ok(Arc::new(ctx))
}
