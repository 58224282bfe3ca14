//! A recompute's queries on an Apache DataFusion Ballista cluster (`batch.engine = "ballista"`).
//!
//! What flows: the archive snapshot the recompute pinned → the Parquet files of the range's
//! dates, as their URLs (delta-rs's table provider cannot be sent to executors,
//! delta-io/delta-rs#4171, so the cluster gets the exact file list of that version, nothing
//! listed from the folder) → the table `events` on the client's Ballista session → the views
//! `deduped` and `labels` (`dedup_on_cluster.sql`, `labels_on_cluster.sql`: the rules of
//! [`super::dedup`] and `first_row_per_series`, as SQL the cluster can split) → one Ballista job
//! for the labels (a row per series) and one for both tiers (`rollup_on_cluster.sql`: the
//! statistics of `rollup.sql`, minute and hour grouping sets over one deduplication), whose rows
//! come back here, are split by tier, then labelled and committed.
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
/// Both tiers over `deduped` in one job, told apart by `step_ms`, compiled in.
pub const ROLLUP_ON_CLUSTER_SQL: &str =
    include_str!("../../../sql/datafusion/rollup_on_cluster.sql");

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
    progress(Phase::Query(Tier::Minute));
    let t = std::time::Instant::now();
    let both = tokio::time::timeout(timeout, ctx.sql(ROLLUP_ON_CLUSTER_SQL).await?.collect())
        .await
        .map_err(|_| Attempt::TimedOut(timeout, "the tiers"))??;
    tracing::info!(took = ?t.elapsed(), "both tiers computed on the cluster");
    progress(Phase::Query(Tier::Hour));
    // Each tier's columns as the embedded engine's `rollup.sql` gives them (planned here, not
    // run), so that both engines commit the same schema.
    let mut schemas = Vec::with_capacity(Tier::ALL.len());
    for tier in Tier::ALL {
        schemas.push(Arc::new(
            ctx.sql(&tier_sql(tier)).await?.schema().as_arrow().clone(),
        ));
    }
    let [minute, hour] = split_tiers(both, [&schemas[0], &schemas[1]])?;
    let tiers = [
        super::non_empty(minute, Arc::clone(&schemas[0])),
        super::non_empty(hour, Arc::clone(&schemas[1])),
    ];
    Ok(Computed { tiers, labels })
}

/// `rollup_on_cluster.sql`'s rows split into the tiers ([`Tier::ALL`] order) by `step_ms`, as
/// batches of each tier's schema (its columns, by name, in its order; `step_ms` dropped). Each
/// batch of `both` is freed once split, so the rows are held about once, not twice. Empty
/// batches are left out.
fn split_tiers(
    both: Vec<RecordBatch>,
    schemas: [&arrow::datatypes::SchemaRef; 2],
) -> Result<[Vec<RecordBatch>; 2], arrow::error::ArrowError> {
    let mut out: [Vec<RecordBatch>; 2] = Default::default();
    for batch in both {
        for (i, tier) in Tier::ALL.into_iter().enumerate() {
            if let Some(rows) = tier_rows(&batch, tier, schemas[i])? {
                out[i].push(rows);
            }
        }
    }
    Ok(out)
}

/// The rows of one `rollup_on_cluster.sql` batch that belong to `tier`, as a batch of `schema`
/// (None when there are none).
fn tier_rows(
    batch: &RecordBatch,
    tier: Tier,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
    use arrow::array::{Array, Int64Array};
    use arrow::error::ArrowError;
    let step = batch
        .column_by_name("step_ms")
        .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Int64))
        .transpose()?
        .ok_or_else(|| ArrowError::SchemaError("no step_ms column".into()))?;
    let step = step
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("cast to Int64");
    let mask = arrow::compute::kernels::cmp::eq(step, &Int64Array::new_scalar(tier.step_ms()))?;
    let rows = arrow::compute::filter_record_batch(batch, &mask)?;
    if rows.num_rows() == 0 {
        return Ok(None);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let c = rows.column_by_name(f.name()).ok_or_else(|| {
                ArrowError::SchemaError(format!("no {} column for {}", f.name(), tier.table()))
            })?;
            arrow::compute::cast(c, f.data_type())
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns).map(Some)
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

    /// A `rollup_on_cluster.sql`-shaped batch: step_ms first, then the tier's columns in
    /// another order than the tier's schema.
    fn both(steps: &[i64], starts: &[i64]) -> RecordBatch {
        use arrow::array::Int64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Schema::new(vec![
            Field::new("step_ms", DataType::Int64, false),
            Field::new("start_ms", DataType::Int64, true),
            Field::new("series_id", DataType::Int64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(steps.to_vec())),
                Arc::new(Int64Array::from(starts.to_vec())),
                Arc::new(Int64Array::from(vec![7; steps.len()])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_tiers_are_split_by_step_into_the_tier_schema() {
        use arrow::array::{AsArray, Int64Array};
        use arrow::datatypes::{DataType, Field, Int64Type, Schema};
        let tier_schema = Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::Int64, false),
            Field::new("start_ms", DataType::Int64, false),
        ]));
        let batches = [
            both(&[60_000, 3_600_000, 60_000], &[60_000, 0, 120_000]),
            both(&[3_600_000], &[3_600_000]),
        ];
        let [minute, hour] = split_tiers(batches.to_vec(), [&tier_schema, &tier_schema]).unwrap();
        assert_eq!(minute.len(), 1, "a batch without minute rows is left out");
        assert_eq!(minute[0].schema(), tier_schema);
        let starts: &Int64Array = minute[0].column(1).as_primitive::<Int64Type>();
        assert_eq!(starts.values(), &[60_000, 120_000]);
        let starts: Vec<i64> = hour
            .iter()
            .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(starts, [0, 3_600_000]);

        let missing = Arc::new(Schema::new(vec![Field::new(
            "p50",
            DataType::Float64,
            true,
        )]));
        let e = split_tiers(batches.to_vec(), [&tier_schema, &missing]).unwrap_err();
        assert!(e.to_string().contains("no p50 column for rollup_1h"), "{e}");
    }

    #[test]
    fn the_both_tiers_sql_keeps_rollup_sql_statistics() {
        let select = |sql: &str| {
            let tail = sql.rsplit_once("SELECT").unwrap().1.to_owned();
            tail.split_once("FROM")
                .unwrap()
                .0
                .replace(char::is_whitespace, "")
        };
        let (one, both) = (
            select(super::super::ROLLUP_SQL),
            select(ROLLUP_ON_CLUSTER_SQL),
        );
        for column in one
            .split(',')
            .filter(|c| !c.contains("event_date") && !c.contains("start_ms"))
        {
            assert!(
                both.contains(column),
                "{column} is computed on the cluster too"
            );
        }
        assert!(ROLLUP_ON_CLUSTER_SQL
            .contains("GROUPING SETS ((series_id, minute_ms), (series_id, hour_ms))"));
    }
}
