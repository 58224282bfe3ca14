//! Recompute: exact rollups of the archive over an hour-aligned range, written to the Delta
//! tables `rollup_1m` and `rollup_1h`.
//!
//! `sql/datafusion/dedup.sql` and `labels.sql` read the range of `events` once into memory
//! (duplicates removed by event_id in [`dedup`]); per tier, `rollup.sql` computes the exact
//! statistics and the mergeable sketch (with the aggregate [`quantiles`], one sort per bucket);
//! [`rows`] sorts each tier's rows and attaches their series' labels; each tier's result
//! replaces that range of its table in ONE Delta commit ([`commit`]: `replace_where` on
//! `start_ms`), so readers never see half a recompute — unless a recompute from a newer archive
//! version already wrote an hour, which is then left alone. The commit records what it covers —
//! range, hours and archive version — in its commit info under `strata.recompute`, from which
//! [`crate::coverage`] folds the coverage and the serving layer its time boundary.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTableError;
use strata_shared::config::Engine;
use strata_shared::Config;

use crate::archive::writer::{open_table, EVENTS_TABLE};
use rows::TierRows;

pub mod commit;
mod dedup;
pub mod on_cluster;
pub mod quantiles;
pub mod rows;

/// The range's events with their Kafka positions ([`dedup`] keeps each event_id once; the
/// result becomes the in-memory table `deduped`), compiled in.
pub const DEDUP_SQL: &str = include_str!("../../../sql/datafusion/dedup.sql");
/// The labels of the range's series (one row per series kept: attached to the rows by
/// [`rows`]), compiled in.
pub const LABELS_SQL: &str = include_str!("../../../sql/datafusion/labels.sql");
/// The tier SQL over `deduped` (needs [`quantiles::udaf`]), compiled in.
pub const ROLLUP_SQL: &str = include_str!("../../../sql/datafusion/rollup.sql");

const HOUR_MS: i64 = 3_600_000;

/// A stored rollup tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Per (series, minute): table `rollup_1m`.
    Minute,
    /// Per (series, hour): table `rollup_1h`.
    Hour,
}

impl Tier {
    /// Both tiers, finest first.
    pub const ALL: [Tier; 2] = [Tier::Minute, Tier::Hour];

    /// The Delta table of the tier.
    pub fn table(self) -> &'static str {
        match self {
            Tier::Minute => "rollup_1m",
            Tier::Hour => "rollup_1h",
        }
    }

    /// Bucket width in ms.
    pub fn step_ms(self) -> i64 {
        match self {
            Tier::Minute => 60_000,
            Tier::Hour => HOUR_MS,
        }
    }
}

/// Why a recompute failed.
#[derive(Debug, thiserror::Error)]
pub enum RecomputeError {
    /// The range is not whole hours, or is empty.
    #[error("bad range: {0}")]
    Range(String),
    /// Nothing has been archived yet.
    #[error("the lake has no events table yet")]
    NoArchive,
    /// The lake could not be read or written.
    #[error("lake: {0}")]
    Lake(#[from] DeltaTableError),
    /// The rollup query failed.
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// The coverage record could not be read.
    #[error("coverage: {0}")]
    Coverage(#[from] crate::coverage::SummaryError),
    /// The query's rows could not be assembled (a bug, or a changed SQL file).
    #[error("assembling rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The Ballista cluster could not compute the recompute (`batch.engine = "ballista"`):
    /// after its attempts, or for a reason that would not pass.
    #[error("ballista: {0}")]
    Cluster(String),
}

/// What a recompute did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Range start (ms, inclusive).
    pub from_ms: i64,
    /// Range end (ms, exclusive).
    pub to_ms: i64,
    /// The archive version the rollups were computed from.
    pub archive_version: i64,
    /// Rows written per tier, in [`Tier::ALL`] order.
    pub rows: [usize; 2],
    /// Hours not written (per tier) because a recompute from a newer archive version had
    /// written them.
    pub skipped: [Vec<i64>; 2],
}

/// The dedup SQL for a range.
pub fn dedup_sql(from_ms: i64, to_ms: i64) -> String {
    range_sql(DEDUP_SQL, from_ms, to_ms)
}

/// The labels SQL for a range.
pub fn labels_sql(from_ms: i64, to_ms: i64) -> String {
    range_sql(LABELS_SQL, from_ms, to_ms)
}

fn range_sql(sql: &str, from_ms: i64, to_ms: i64) -> String {
    sql.replace("{from_ms}", &from_ms.to_string())
        .replace("{to_ms}", &to_ms.to_string())
}

/// The SQL of one tier (over `deduped`).
pub fn tier_sql(tier: Tier) -> String {
    ROLLUP_SQL.replace("{step_ms}", &tier.step_ms().to_string())
}

/// A step of a recompute, reported as it starts (for progress bars), in this order: `Dedup`,
/// each tier's `Query`, each tier's `Commit` (nothing is committed before both are computed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the range's events and removing duplicates.
    Dedup,
    /// Running the tier's SQL over them.
    Query(Tier),
    /// Committing the tier's rows (replacing the range).
    Commit(Tier),
}

impl Phase {
    /// Number of phases of one recompute.
    pub const COUNT: u64 = 5;
}

/// Recomputes both tiers over `[from_ms, to_ms)` (whole hours) from the newest archive.
pub async fn recompute(cfg: &Config, from_ms: i64, to_ms: i64) -> Result<Report, RecomputeError> {
    recompute_with_progress(cfg, from_ms, to_ms, None, |_| {}).await
}

/// [`recompute`] from the archive as of `archive_version` (the newest when `None`), calling
/// `progress` as each [`Phase`] starts.
pub async fn recompute_with_progress(
    cfg: &Config,
    from_ms: i64,
    to_ms: i64,
    archive_version: Option<i64>,
    mut progress: impl FnMut(Phase),
) -> Result<Report, RecomputeError> {
    if from_ms % HOUR_MS != 0 || to_ms % HOUR_MS != 0 || to_ms <= from_ms {
        return Err(RecomputeError::Range(format!(
            "[{from_ms}, {to_ms}) must be whole hours, from before to"
        )));
    }
    let mut events = open_table(cfg, EVENTS_TABLE).await?;
    let loaded = match archive_version {
        Some(v) => events.load_version(u64::try_from(v).unwrap_or(0)).await,
        None => events.load().await,
    };
    match loaded {
        Ok(()) => {}
        Err(DeltaTableError::NotATable(_)) => return Err(RecomputeError::NoArchive),
        Err(e) => return Err(e.into()),
    }
    let archive_version = events.version().ok_or(RecomputeError::NoArchive)? as i64;
    progress(Phase::Dedup);
    let computed = match cfg.batch.engine {
        Engine::Embedded => embedded_tiers(&events, from_ms, to_ms, &mut progress).await?,
        Engine::Ballista => {
            let files = on_cluster::range_files(&events, from_ms, to_ms)?;
            if files.is_empty() {
                // Nothing to send: the (empty) answer, with its columns, is had here.
                embedded_tiers(&events, from_ms, to_ms, &mut progress).await?
            } else {
                on_cluster::tiers(cfg, &files, from_ms, to_ms, &mut progress).await?
            }
        }
    };
    drop(events);
    let Computed {
        tiers: computed,
        labels,
    } = computed;

    let mut rows = [0usize; 2];
    let mut skipped: [Vec<i64>; 2] = Default::default();
    for (i, (tier, batches)) in Tier::ALL.into_iter().zip(computed).enumerate() {
        progress(Phase::Commit(tier));
        let t = std::time::Instant::now();
        let tier_rows = TierRows::Unlabelled {
            rows: &batches,
            labels: &labels,
        };
        let done =
            commit::commit_tier(cfg, tier, (from_ms, to_ms), archive_version, &tier_rows).await?;
        rows[i] = done.rows;
        skipped[i] = done.skipped;
        tracing::info!(
            table = tier.table(),
            rows = rows[i],
            skipped_hours = skipped[i].len(),
            commit_took = ?t.elapsed(),
            "tier committed"
        );
    }
    Ok(Report {
        from_ms,
        to_ms,
        archive_version,
        rows,
        skipped,
    })
}

/// What a recompute's queries computed, before the commit.
pub struct Computed {
    /// Each tier's rows without their labels (`rollup.sql`), in [`Tier::ALL`] order.
    pub tiers: [Vec<RecordBatch>; 2],
    /// One row per series of the range: `series_id` and [`rows::LABEL_COLUMNS`].
    pub labels: RecordBatch,
}

/// Both tiers of `[from_ms, to_ms)` and the range's labels, computed in this process.
async fn embedded_tiers(
    events: &deltalake::DeltaTable,
    from_ms: i64,
    to_ms: i64,
    progress: &mut impl FnMut(Phase),
) -> Result<Computed, RecomputeError> {
    let ctx = SessionContext::new();
    ctx.register_udaf(quantiles::udaf());
    events.update_datafusion_session(&ctx.state())?;
    ctx.register_table(EVENTS_TABLE, events.table_provider().await?)?;
    let started = std::time::Instant::now();
    let read = ctx.sql(&dedup_sql(from_ms, to_ms)).await?.collect().await?;
    let read_took = started.elapsed();
    let partitions = ctx.state().config().target_partitions();
    ctx.register_table("deduped", Arc::new(dedup::deduplicate(&read, partitions)?))?;
    drop(read);
    let dedup_took = started.elapsed() - read_took;
    let labels = first_row_per_series(&ctx, &labels_sql(from_ms, to_ms)).await?;
    let labels_took = started.elapsed() - read_took - dedup_took;
    tracing::info!(
        ?read_took,
        ?dedup_took,
        ?labels_took,
        "read and deduplicated the range"
    );
    let mut out: [Vec<RecordBatch>; 2] = Default::default();
    for (i, tier) in Tier::ALL.into_iter().enumerate() {
        progress(Phase::Query(tier));
        let t = std::time::Instant::now();
        let df = ctx.sql(&tier_sql(tier)).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches: Vec<RecordBatch> = df
            .collect()
            .await?
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .collect();
        out[i] = non_empty(batches, schema);
        tracing::info!(table = tier.table(), query_took = ?t.elapsed(), "tier computed");
    }
    Ok(Computed { tiers: out, labels })
}

/// `batches`, or one empty batch of `schema` when there are none: an empty range still
/// replaces what was there, and records its coverage.
fn non_empty(
    mut batches: Vec<RecordBatch>,
    schema: arrow::datatypes::SchemaRef,
) -> Vec<RecordBatch> {
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    batches
}

/// Runs `sql` (series_id first) and keeps the first row of each series_id, in one batch. Done
/// here rather than with `first_value(tags)` in SQL, which aggregates maps row by row.
async fn first_row_per_series(
    ctx: &SessionContext,
    sql: &str,
) -> Result<RecordBatch, RecomputeError> {
    use arrow::array::{AsArray, UInt32Array};
    use futures::StreamExt;
    let df = ctx.sql(sql).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b?;
        let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)?;
        let ids = ids.as_primitive::<arrow::datatypes::Int64Type>();
        let first: Vec<u32> = (0..b.num_rows())
            .filter(|&r| seen.insert(ids.value(r)))
            .map(|r| r as u32)
            .collect();
        if !first.is_empty() {
            kept.push(arrow::compute::take_record_batch(
                &b,
                &UInt32Array::from(first),
            )?);
        }
    }
    Ok(arrow::compute::concat_batches(&schema, &kept)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_filled_with_integers_only() {
        let dedup = dedup_sql(3_600_000, 7_200_000);
        assert!(dedup.contains("timestamp_ms >= 3600000 AND timestamp_ms < 7200000"));
        let sql = tier_sql(Tier::Minute);
        for s in [&dedup, &sql, &labels_sql(0, 1)] {
            assert!(!s.contains('{'), "every placeholder is filled");
        }
        assert!(sql.contains("% 60000"));
        assert!(tier_sql(Tier::Hour).contains("% 3600000"));
    }

    #[tokio::test]
    async fn ranges_must_be_whole_hours() {
        let cfg = Config::default();
        for (f, t) in [
            (1, 3_600_000),
            (0, 3_600_001),
            (3_600_000, 3_600_000),
            (7_200_000, 3_600_000),
        ] {
            assert!(
                matches!(recompute(&cfg, f, t).await, Err(RecomputeError::Range(_))),
                "{f}..{t}"
            );
        }
    }
}
