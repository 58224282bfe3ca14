//! Reading blocks from the lake: a rollup table's data files indexed by day (from a snapshot),
//! and the DataFusion reads that turn a day's files into [`Block`]s.
//!
//! A block reads only the files of its day that can hold its metric (by the Delta statistics'
//! metric range) and filters on metric and time, so the Parquet reader skips the row groups and
//! pages of other metrics and hours. Several minute-tier hours of one metric and day that are
//! wanted at once are read in one query and split into their hour blocks ([`minute_hours`]):
//! a cold 7-day panel is 7 reads per metric, not 168.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::{col, lit, ParquetReadOptions, SessionContext};
use deltalake::DeltaTable;
use strata_batch::recompute::Tier;

use super::block::{self, Block, Names, Rows};
use super::{BatchError, BlockKey, DAY_MS, HOUR_MS};

/// One Parquet file of a rollup table: where it is and which metrics it can hold.
#[derive(Debug, Clone)]
pub(super) struct DataFile {
    /// Where the file is.
    pub url: String,
    /// Smallest and largest metric name in it (from the Delta statistics), if known.
    pub metrics: Option<(String, String)>,
}

impl DataFile {
    /// Whether the file can hold rows of `metric`.
    pub fn may_hold(&self, metric: &str) -> bool {
        self.metrics
            .as_ref()
            .is_none_or(|(lo, hi)| lo.as_str() <= metric && metric <= hi.as_str())
    }
}

/// A tier's files by day, from the table's snapshot (the day from the `event_date=` directory
/// delta-rs writes partitions to; a file without one is listed under every day asked).
pub(super) fn files_by_day(table: &DeltaTable) -> Result<BTreeMap<i64, Vec<DataFile>>, BatchError> {
    let root = table.table_url().as_str().trim_end_matches('/').to_owned();
    let mut out: BTreeMap<i64, Vec<DataFile>> = BTreeMap::new();
    for f in table.snapshot()?.log_data().iter() {
        let path = f.object_store_path();
        let day = path.parts().find_map(|p| {
            let d = p.as_ref().strip_prefix("event_date=")?.to_owned();
            let date = chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()?;
            Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
        });
        let metrics = f.stats().and_then(|s| {
            let v: serde_json::Value = serde_json::from_str(&s).ok()?;
            let lo = v.get("minValues")?.get("metric_name")?.as_str()?.to_owned();
            let hi = v.get("maxValues")?.get("metric_name")?.as_str()?.to_owned();
            Some((lo, hi))
        });
        let file = DataFile {
            url: format!("{root}/{path}"),
            metrics,
        };
        out.entry(day.unwrap_or(i64::MIN)).or_default().push(file);
    }
    Ok(out)
}

/// Reads one block from `files` (its day's files that can hold its metric).
pub(super) async fn load(
    ctx: &SessionContext,
    key: &BlockKey,
    files: Vec<String>,
) -> Result<Block, BatchError> {
    if files.is_empty() {
        return Ok(match key {
            BlockKey::Names { .. } => Block::Names(Names::default()),
            _ => Block::Rows(Rows::default()),
        });
    }
    let read = || ctx.read_parquet(files.clone(), ParquetReadOptions::default());
    let (tier, metric, from, to, quantiles) = match key {
        BlockKey::Names { day, .. } => {
            let batches = read()
                .await?
                .filter(
                    col("start_ms")
                        .gt_eq(lit(*day))
                        .and(col("start_ms").lt(lit(day + DAY_MS))),
                )?
                .select_columns(&["metric_name", "start_ms"])?
                .distinct()?
                .collect()
                .await?;
            return Ok(Block::Names(Names::from_batches(*day, &batches)?));
        }
        BlockKey::Minute {
            metric,
            hour,
            quantiles,
            ..
        } => (Tier::Minute, metric, *hour, hour + HOUR_MS, *quantiles),
        BlockKey::Hour {
            metric,
            day,
            quantiles,
            ..
        } => (Tier::Hour, metric, *day, day + DAY_MS, *quantiles),
    };
    let df = read().await?;
    let cols = columns(tier, quantiles, df.schema());
    let batches = df
        .filter(
            col("metric_name")
                .eq(lit(metric.as_ref()))
                .and(col("start_ms").gt_eq(lit(from)))
                .and(col("start_ms").lt(lit(to))),
        )?
        .select_columns(&cols)?
        .collect()
        .await?;
    Ok(Block::Rows(Rows::from_batches(&batches)?))
}

/// The columns a block of `tier` reads, of those `schema` has (files of an earlier version have
/// no newest sample).
fn columns(
    tier: Tier,
    quantiles: bool,
    schema: &datafusion::common::DFSchema,
) -> Vec<&'static str> {
    let mut columns: Vec<&str> = block::TOTALS.to_vec();
    columns.extend(
        block::LAST
            .iter()
            .filter(|c| schema.has_column_with_unqualified_name(c)),
    );
    if quantiles {
        columns.extend(block::QUANTILES);
    }
    if tier == Tier::Hour {
        columns.extend(block::LABELS);
    }
    columns
}

/// The minute-tier blocks of `metric` for `hours` (hour starts of one day), read from `files`
/// (that day's files that can hold the metric) in one query, by hour start. An hour without
/// rows gets an empty block.
pub(super) async fn minute_hours(
    ctx: &SessionContext,
    metric: &str,
    hours: &[i64],
    quantiles: bool,
    files: Vec<String>,
) -> Result<HashMap<i64, Rows>, BatchError> {
    let mut out: HashMap<i64, Rows> = hours.iter().map(|h| (*h, Rows::default())).collect();
    let (Some(from), Some(last)) = (hours.iter().min(), hours.iter().max()) else {
        return Ok(out);
    };
    if files.is_empty() {
        return Ok(out);
    }
    let df = ctx
        .read_parquet(files, ParquetReadOptions::default())
        .await?;
    let cols = columns(Tier::Minute, quantiles, df.schema());
    let batches = df
        .filter(
            col("metric_name")
                .eq(lit(metric))
                .and(col("start_ms").gt_eq(lit(*from)))
                .and(col("start_ms").lt(lit(last + HOUR_MS))),
        )?
        .select_columns(&cols)?
        .collect()
        .await?;
    let Some(first) = batches.first() else {
        return Ok(out);
    };
    let shape = |e: arrow::error::ArrowError| BatchError::Shape(e.to_string());
    let all = concat_batches(&first.schema(), &batches).map_err(shape)?;
    drop(batches);
    for (hour, idx) in rows_by_hour(&all)? {
        if let Some(rows) = out.get_mut(&hour) {
            *rows = Rows::from_rows(&all, idx)?;
        }
    }
    Ok(out)
}

/// The row indices of `batch` by the hour their `start_ms` lies in.
fn rows_by_hour(batch: &RecordBatch) -> Result<BTreeMap<i64, Vec<u32>>, BatchError> {
    let start = batch
        .column_by_name("start_ms")
        .ok_or_else(|| BatchError::Shape("no column start_ms".into()))?;
    let start = cast(start, &DataType::Int64).map_err(|e| BatchError::Shape(e.to_string()))?;
    let mut rows: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (i, s) in start
        .as_primitive::<Int64Type>()
        .values()
        .iter()
        .enumerate()
    {
        rows.entry(s.div_euclid(HOUR_MS) * HOUR_MS)
            .or_default()
            .push(i as u32);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn rows_split_into_the_hours_they_start_in() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("start_ms", DataType::Int64, false),
            Field::new("sum", DataType::Float64, false),
        ]));
        let batch = |starts: Vec<i64>| {
            let sums: Vec<f64> = starts.iter().map(|s| *s as f64).collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(starts)),
                    Arc::new(Float64Array::from(sums)),
                ],
            )
            .unwrap()
        };
        let h = HOUR_MS;
        let all = batch(vec![2 * h + 60_000, 0, h - 60_000, 2 * h, h]);
        let parts = rows_by_hour(&all).unwrap();
        assert_eq!(
            parts,
            BTreeMap::from([(0, vec![1, 2]), (h, vec![4]), (2 * h, vec![0, 3])])
        );
        assert!(rows_by_hour(&batch(vec![])).unwrap().is_empty());
    }
}
