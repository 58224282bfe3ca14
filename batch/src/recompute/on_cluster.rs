//! A recompute's queries on an Apache DataFusion Ballista cluster (`batch.engine = "ballista"`).
//!
//! What flows: the archive snapshot the recompute pinned → the Parquet files of the range's
//! dates, as their URLs (delta-rs's table provider cannot be sent to executors,
//! delta-io/delta-rs#4171, so the cluster gets the exact file list of that version, nothing
//! listed from the folder) → the table `events` on the client's Ballista session → the views
//! `deduped` and `labels` (`dedup_on_cluster.sql`, `labels_on_cluster.sql`: the rules of
//! [`super::dedup`] and `first_row_per_series`, as SQL the cluster can split) → one Ballista job
//! for the labels (a row per series) and one per tier's `rollup.sql`, whose rows come back here
//! to be labelled and committed.
//!
//! A job that fails for a reason that may pass (a lost executor, an unreachable scheduler, a
//! timeout) is run again, up to `batch.ballista_attempts`, both tiers from the start; nothing
//! is committed until both have come back.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use strata_shared::Config;

use super::{dedup_sql, labels_sql, tier_sql, Computed, Phase, RecomputeError, Tier};
use crate::archive::schema::{event_date, PARTITION_COLUMN};

/// `deduped` on the cluster, over the filled `dedup.sql` (`{range}`), compiled in.
pub const DEDUP_ON_CLUSTER_SQL: &str = include_str!("../../../sql/datafusion/dedup_on_cluster.sql");
/// `labels` on the cluster, over the filled `labels.sql` (`{range}`), compiled in.
pub const LABELS_ON_CLUSTER_SQL: &str =
    include_str!("../../../sql/datafusion/labels_on_cluster.sql");

/// The URLs of the snapshot's Parquet files whose `event_date` lies in `[from_ms, to_ms)`.
pub fn range_files(
    events: &DeltaTable,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<String>, RecomputeError> {
    let (first, last) = (event_date(from_ms), event_date(to_ms - 1));
    let store = events.log_store();
    let mut urls = Vec::new();
    for file in events.snapshot()?.log_data() {
        let date = file
            .partition_values_map()
            .remove(PARTITION_COLUMN)
            .flatten();
        // A file without the partition value cannot be pruned: read it (the SQL filters rows).
        if date
            .as_deref()
            .is_some_and(|d| d < &first[..] || d > &last[..])
        {
            continue;
        }
        if file.deletion_vector_descriptor().is_some() {
            return Err(RecomputeError::Cluster(format!(
                "{} has a deletion vector, which the ballista engine does not read; \
                 recompute with batch.engine = \"embedded\"",
                file.path()
            )));
        }
        urls.push(store.to_uri(&file.object_store_path()));
    }
    urls.sort();
    Ok(urls)
}

/// Registers `events` (the pinned files), `deduped` and `labels` for `[from_ms, to_ms)`.
async fn register_range(
    ctx: &SessionContext,
    files: &[String],
    from_ms: i64,
    to_ms: i64,
) -> Result<(), RecomputeError> {
    let urls = files
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let schema = options.infer_schema(&ctx.state(), &urls[0]).await?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(Arc::clone(&schema));
    ctx.register_table("events_files", Arc::new(ListingTable::try_new(config)?))?;
    // The partition column is in the Delta log, not in the files: derived again from the
    // timestamp, as the archiver derived it.
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != PARTITION_COLUMN)
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    let events = format!(
        "SELECT {}, to_char(to_timestamp_millis(timestamp_ms), '%Y-%m-%d') AS {PARTITION_COLUMN} \
         FROM events_files",
        columns.join(", ")
    );
    ctx.register_table(
        crate::archive::writer::EVENTS_TABLE,
        ctx.sql(&events).await?.into_view(),
    )?;
    for (name, sql, range) in [
        ("deduped", DEDUP_ON_CLUSTER_SQL, dedup_sql(from_ms, to_ms)),
        ("labels", LABELS_ON_CLUSTER_SQL, labels_sql(from_ms, to_ms)),
    ] {
        let view = ctx.sql(&fill_range(sql, &range)).await?.into_view();
        ctx.register_table(name, view)?;
    }
    Ok(())
}

/// `sql` with its `{range}` placeholder (the last one: the header comment names it too) filled.
fn fill_range(sql: &str, range: &str) -> String {
    match sql.rsplit_once("{range}") {
        Some((head, tail)) => format!("{head}{range}{tail}"),
        None => sql.to_owned(),
    }
}

/// Whether a failed job may succeed if run again: the plan itself was fine, so the cluster
/// (an executor lost mid-job, the scheduler unreachable) or the wait was to blame.
fn may_pass(e: &DataFusionError) -> bool {
    !matches!(
        e.find_root(),
        DataFusionError::Plan(_)
            | DataFusionError::SQL(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_)
    )
}

/// Both tiers of `[from_ms, to_ms)` and the range's labels, computed on the cluster from
/// `files`; `progress` is called as each tier's query starts.
pub async fn tiers(
    cfg: &Config,
    files: &[String],
    from_ms: i64,
    to_ms: i64,
    progress: &mut impl FnMut(Phase),
) -> Result<Computed, RecomputeError> {
    let attempts = cfg.batch.ballista_attempts.max(1);
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=attempts {
        match attempt_tiers(cfg, files, from_ms, to_ms, progress).await {
            Ok(t) => return Ok(t),
            Err(e) => {
                let retry = match &e {
                    Attempt::Query(q) => may_pass(q),
                    Attempt::TimedOut(..) => true,
                    Attempt::Arrow(_) => false,
                };
                let e = e.to_string();
                if !retry || attempt == attempts {
                    return Err(RecomputeError::Cluster(format!(
                        "attempt {attempt} of {attempts}: {e}"
                    )));
                }
                tracing::warn!(attempt, attempts, error = %e, ?backoff, "recompute on the cluster failed; running it again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Why one attempt on the cluster failed.
#[derive(Debug, thiserror::Error)]
enum Attempt {
    #[error("{0}")]
    Query(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0:?} passed (batch.ballista_job_timeout) before {1} came back")]
    TimedOut(Duration, &'static str),
}

impl From<RecomputeError> for Attempt {
    fn from(e: RecomputeError) -> Self {
        match e {
            RecomputeError::Query(q) => Attempt::Query(q),
            other => Attempt::Query(DataFusionError::External(Box::new(other))),
        }
    }
}

async fn attempt_tiers(
    cfg: &Config,
    files: &[String],
    from_ms: i64,
    to_ms: i64,
    progress: &mut impl FnMut(Phase),
) -> Result<Computed, Attempt> {
    let ctx = crate::cluster::remote_context(cfg).await?;
    register_range(&ctx, files, from_ms, to_ms).await?;
    let timeout = cfg.batch.ballista_job_timeout;
    let df = ctx.sql("SELECT * FROM labels").await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let labels = tokio::time::timeout(timeout, df.collect())
        .await
        .map_err(|_| Attempt::TimedOut(timeout, "the labels"))??;
    let labels = arrow::compute::concat_batches(&schema, &labels)?;
    let mut out: [Vec<RecordBatch>; 2] = Default::default();
    for (i, tier) in Tier::ALL.into_iter().enumerate() {
        progress(Phase::Query(tier));
        let t = std::time::Instant::now();
        let df = ctx.sql(&tier_sql(tier)).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = tokio::time::timeout(timeout, df.collect())
            .await
            .map_err(|_| Attempt::TimedOut(timeout, tier.table()))??;
        let batches = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        out[i] = super::non_empty(batches, schema);
        tracing::info!(table = tier.table(), took = ?t.elapsed(), "tier computed on the cluster");
    }
    Ok(Computed { tiers: out, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plan_errors_are_final() {
        assert!(!may_pass(&DataFusionError::Plan("no such column".into())));
        assert!(!may_pass(&DataFusionError::NotImplemented("x".into())));
        assert!(may_pass(&DataFusionError::Execution(
            "Job failed: executor lost".into()
        )));
        assert!(may_pass(&DataFusionError::External(
            "connection refused".into()
        )));
    }

    #[test]
    fn cluster_sql_wraps_the_range_read() {
        for sql in [DEDUP_ON_CLUSTER_SQL, LABELS_ON_CLUSTER_SQL] {
            let filled = fill_range(sql, &dedup_sql(0, 3_600_000));
            let code: String = filled
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect();
            assert!(!code.contains('{'), "every placeholder is filled");
            assert!(filled.contains("timestamp_ms >= 0 AND timestamp_ms < 3600000"));
        }
        assert!(DEDUP_ON_CLUSTER_SQL.contains("ORDER BY kafka_partition, kafka_offset"));
    }
}
