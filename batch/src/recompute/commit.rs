//! Committing a tier's rows: replace the hours of the range in ONE Delta commit, unless a
//! recompute from a newer archive version already wrote them.
//!
//! The protocol, per tier:
//! 1. load the table (version N) and its [`Coverage`] (hour → the recompute that last wrote it);
//! 2. keep the hours whose last recompute is not newer than ours (same archive version: same
//!    rows, written again); none left → nothing to do, a newer recompute covers the range;
//! 3. commit those hours' rows with `replace_where` on their start times, one Delta transaction
//!    action per hour (`strata-recompute-<hour ms>` = archive version) and the commit info
//!    `strata.recompute` naming the hours;
//! 4. a commit conflict means another commit landed after N: go back to 1. Two recomputes of one
//!    hour always conflict (same transaction app id), so the check of step 2 is never stale.
//!
//! Rows are written sorted by (metric_name, hour, series_id, start_ms), in row groups small
//! enough for a reader of one metric and hour to skip the rest by their statistics (page indexes
//! are on: the Parquet writer's default) — the unit the serving layer reads.

use deltalake::delta_datafusion::DeltaSessionContext;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::kernel::Transaction;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTableError;

use strata_shared::Config;

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;

use super::rows::TierRows;
use super::{RecomputeError, Tier, HOUR_MS};
use crate::archive::writer::open_table;
use crate::coverage::{self, Coverage, RecomputeInfo};

/// Attempts per tier when concurrent commits keep winning the race.
const MAX_ATTEMPTS: u32 = 10;
/// Rows per Parquet row group of a rollup file: a metric's rows can be found without reading
/// the others.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

/// The transaction app id that names an hour of a recompute.
pub fn hour_app_id(hour_ms: i64) -> String {
    format!("strata-recompute-{hour_ms}")
}

/// What committing a tier did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// Hours written.
    pub written: Vec<i64>,
    /// Hours left alone: a recompute from a newer archive version had written them.
    pub skipped: Vec<i64>,
    /// Rows written.
    pub rows: usize,
}

/// Hours of `[from_ms, to_ms)` that a recompute from `archive_version` may write.
pub fn writable_hours(
    coverage: &Coverage,
    from_ms: i64,
    to_ms: i64,
    archive_version: i64,
) -> (Vec<i64>, Vec<i64>) {
    (from_ms..to_ms).step_by(HOUR_MS as usize).partition(|h| {
        coverage
            .hours
            .get(h)
            .is_none_or(|c| c.archive_version <= archive_version)
    })
}

/// Commits the tier's rows of `[from_ms, to_ms)` computed from `archive_version`.
pub async fn commit_tier(
    cfg: &Config,
    tier: Tier,
    (from_ms, to_ms): (i64, i64),
    archive_version: i64,
    rows: &TierRows<'_>,
) -> Result<Committed, RecomputeError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut table = open_table(cfg, tier.table()).await?;
        let exists = match table.load().await {
            Ok(()) => true,
            Err(DeltaTableError::NotATable(_)) => false,
            Err(e) => return Err(e.into()),
        };
        let covered = if exists {
            coverage::coverage(cfg, tier).await?.state
        } else {
            Coverage::default()
        };
        let (written, skipped) = writable_hours(&covered, from_ms, to_ms, archive_version);
        if written.is_empty() {
            tracing::info!(
                table = tier.table(),
                archive_version,
                "a recompute from a newer archive version covers the range; nothing written"
            );
            return Ok(Committed {
                written,
                skipped,
                rows: 0,
            });
        }
        let started = std::time::Instant::now();
        let rows = rows.sorted(&written)?;
        let n = rows.num_rows();
        let schema = rows.schema_ref();
        if exists {
            let missing = missing_columns(&table, &schema)?;
            if !missing.is_empty() {
                // A table of an earlier version: it gains the columns (nullable: its files
                // have none) in a commit of their own, then the tier is committed as always.
                tracing::info!(table = tier.table(), columns = ?missing, "adding columns");
                let fields = missing
                    .iter()
                    .map(|(name, ty)| deltalake::kernel::StructField::new(*name, ty.clone(), true));
                table.add_columns().with_fields(fields).await?;
                continue;
            }
        }
        tracing::debug!(took = ?started.elapsed(), rows = n, "rows sorted for the commit");
        let info = RecomputeInfo {
            from_ms,
            to_ms,
            archive_version,
            hours: Some(written.clone()),
        };
        let props = CommitProperties::default()
            .with_metadata([(
                "strata.recompute".to_owned(),
                serde_json::to_value(&info).expect("serialises"),
            )])
            .with_application_transactions(
                written
                    .iter()
                    .map(|h| Transaction::new(hour_app_id(*h), archive_version))
                    .collect(),
            );
        let writer = writer_properties();
        // The rows reach the writer a row group at a time, in order: one partition, and a
        // session of one target partition so that nothing repartitions them.
        let mut write = if n == 0 {
            table.write(vec![RecordBatch::new_empty(schema)])
        } else {
            let source = StreamingTable::try_new(schema, vec![Arc::new(rows)])?;
            let plan =
                LogicalPlanBuilder::scan("rows", provider_as_source(Arc::new(source)), None)?
                    .build()?;
            let one_partition = std::collections::HashMap::from([(
                "datafusion.execution.target_partitions".to_owned(),
                "1".to_owned(),
            )]);
            let session = DeltaSessionContext::new_with_session_overrides(&one_partition)?.state();
            table
                .write(Vec::new())
                .with_input_plan(plan)
                .with_session_state(Arc::new(session))
        }
        .with_partition_columns(["event_date"])
        .with_writer_properties(writer)
        .with_commit_properties(props);
        write = if exists {
            write
                .with_save_mode(SaveMode::Overwrite)
                .with_replace_where(replace_predicate(&written).as_str())
        } else {
            write.with_save_mode(SaveMode::Append)
        };
        match write.await {
            Ok(_) => {
                if let Err(e) = coverage::summarise(cfg, tier).await {
                    tracing::warn!(table = tier.table(), error = %e, "coverage summary not stored");
                }
                return Ok(Committed {
                    written,
                    skipped,
                    rows: n,
                });
            }
            Err(DeltaTableError::Transaction { source })
                if attempt < MAX_ATTEMPTS && is_conflict(&source) =>
            {
                tracing::info!(
                    table = tier.table(),
                    attempt,
                    "another commit landed first; checking coverage again"
                );
            }
            // A table created by a concurrent first recompute: load it and replace.
            Err(DeltaTableError::VersionAlreadyExists(_)) if attempt < MAX_ATTEMPTS && !exists => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Columns a later version of the rollup tables has that an earlier one lacks, with their
/// Delta types.
fn added_columns() -> [(&'static str, deltalake::kernel::DataType); 2] {
    use deltalake::kernel::{DataType, PrimitiveType};
    [
        ("last", DataType::Primitive(PrimitiveType::Double)),
        ("last_ms", DataType::Primitive(PrimitiveType::Long)),
    ]
}

/// The [`added_columns`] the rows have and the table lacks.
fn missing_columns(
    table: &deltalake::DeltaTable,
    rows: &arrow::datatypes::SchemaRef,
) -> Result<Vec<(&'static str, deltalake::kernel::DataType)>, RecomputeError> {
    let have = table.snapshot()?.schema();
    Ok(added_columns()
        .into_iter()
        .filter(|(name, _)| rows.field_with_name(name).is_ok() && have.field(name).is_none())
        .collect())
}

/// Columns whose values hardly repeat (the statistics and the sketch keys, floats and wide
/// integers): written without a dictionary, which would hash every value to find none to share.
/// The label columns, ids, bucket starts, counts and sketch counts repeat and keep theirs.
/// (A list's values are `list.element` or `list.item` by who made the list's schema.)
pub const NO_DICTIONARY: [&str; 10] = [
    "sum",
    "last",
    "min",
    "max",
    "p50",
    "p90",
    "p95",
    "p99",
    "sketch_keys.list.element",
    "sketch_keys.list.item",
];

/// How the tier's Parquet files are written: row groups of [`ROW_GROUP_ROWS`], no dictionary
/// for [`NO_DICTIONARY`].
fn writer_properties() -> WriterProperties {
    let mut b = WriterProperties::builder().set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for c in NO_DICTIONARY {
        b = b.set_column_dictionary_enabled(column_path(c), false);
    }
    b.build()
}

/// `a.b.c` as a Parquet column path.
fn column_path(dotted: &str) -> ColumnPath {
    ColumnPath::new(dotted.split('.').map(str::to_owned).collect())
}

fn is_conflict(e: &TransactionError) -> bool {
    matches!(
        e,
        TransactionError::CommitConflict(_) | TransactionError::VersionAlreadyExists(_)
    )
}

/// `start_ms` inside any of the hours (contiguous hours merged into one range).
fn replace_predicate(hours: &[i64]) -> String {
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for &h in hours {
        match ranges.last_mut() {
            Some((_, to)) if *to == h => *to += HOUR_MS,
            _ => ranges.push((h, h + HOUR_MS)),
        }
    }
    ranges
        .iter()
        .map(|(a, b)| format!("(start_ms >= {a} AND start_ms < {b})"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coverage::Cover;

    #[test]
    fn statistics_are_written_without_a_dictionary_labels_with_one() {
        let p = writer_properties();
        assert!(!p.dictionary_enabled(&column_path("p99")));
        assert!(!p.dictionary_enabled(&column_path("sketch_keys.list.item")));
        assert!(p.dictionary_enabled(&column_path("metric_name")));
        assert!(p.dictionary_enabled(&column_path("tags.key_value.value")));
        assert_eq!(p.max_row_group_row_count(), Some(ROW_GROUP_ROWS));
    }

    #[test]
    fn a_newer_recompute_keeps_its_hours() {
        let h = HOUR_MS;
        let mut c = Coverage::default();
        c.hours.insert(
            h,
            Cover {
                archive_version: 7,
                table_version: 3,
            },
        );
        c.hours.insert(
            2 * h,
            Cover {
                archive_version: 5,
                table_version: 2,
            },
        );
        // From archive version 5: hour 1 belongs to a newer recompute; hour 2 (same version)
        // and hour 0 (never covered) are written.
        assert_eq!(writable_hours(&c, 0, 3 * h, 5), (vec![0, 2 * h], vec![h]));
        assert_eq!(writable_hours(&c, h, 2 * h, 8), (vec![h], vec![]));
    }

    #[test]
    fn contiguous_hours_make_one_range() {
        let h = HOUR_MS;
        assert_eq!(
            replace_predicate(&[0, h, 3 * h]),
            format!(
                "(start_ms >= 0 AND start_ms < {}) OR (start_ms >= {} AND start_ms < {})",
                2 * h,
                3 * h,
                4 * h
            )
        );
    }
}
