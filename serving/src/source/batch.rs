//! The batch layer's side of a query: the Delta tables `rollup_1m` and `rollup_1h`, held in
//! memory and refreshed as recomputes commit, with the coverage that sets the time boundary.
//!
//! A refresh looks at the newest version of `rollup_1h`; only when it changed does it read the
//! recompute commits from the Delta log and reload the ranges they replaced (the minute tier is
//! committed before the hour tier, so both are complete for a range the hour log names). Coverage
//! is the set of hours some recompute included, as `strata_batch::coverage` defines it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTableError;
use strata_batch::archive::writer::open_table;
use strata_batch::coverage::{covered_hours, recomputes, Recomputed};
use strata_batch::recompute::Tier;
use strata_shared::sketch::Sketch;
use strata_shared::Config;

use crate::series::SeriesInfo;
use crate::window::{Bucket, Layer, Need};

/// One stored rollup row.
#[derive(Debug, Clone)]
struct Row {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    quantiles: [f64; 4],
    sketch: Arc<Sketch>,
}

/// One tier in memory: series → bucket start → row.
#[derive(Default)]
struct TierRows {
    by_series: HashMap<u64, BTreeMap<i64, Row>>,
}

impl TierRows {
    fn remove_range(&mut self, from_ms: i64, to_ms: i64) -> usize {
        let mut removed = 0;
        for rows in self.by_series.values_mut() {
            let keys: Vec<i64> = rows.range(from_ms..to_ms).map(|(k, _)| *k).collect();
            removed += keys.len();
            for k in keys {
                rows.remove(&k);
            }
        }
        removed
    }
}

/// Why the batch views could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The lake could not be read.
    #[error("lake: {0}")]
    Lake(#[from] DeltaTableError),
    /// A rollup table could not be queried.
    #[error("rollup query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// A rollup table has an unexpected shape.
    #[error("rollup table: {0}")]
    Shape(String),
}

/// The batch views in memory.
#[derive(Default)]
pub struct BatchView {
    /// Covered hour start → archive version of its latest recompute.
    pub covered: BTreeMap<i64, i64>,
    tiers: [TierRows; 2],
    series: HashMap<u64, Arc<SeriesInfo>>,
    applied: usize,
    version: Option<u64>,
    rows: usize,
}

impl BatchView {
    /// Rows held (both tiers).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The time boundary: end of the newest covered hour.
    pub fn boundary(&self) -> Option<i64> {
        strata_batch::coverage::boundary(&self.covered)
    }

    /// Every series the views hold.
    pub fn series(&self) -> impl Iterator<Item = &Arc<SeriesInfo>> {
        self.series.values()
    }

    /// Series holding rows in `[from_ms, to_ms)` (minute tier).
    pub fn series_in(&self, from_ms: i64, to_ms: i64) -> Vec<Arc<SeriesInfo>> {
        let minute = &self.tiers[0];
        self.series
            .values()
            .filter(|s| {
                minute
                    .by_series
                    .get(&s.series_id)
                    .is_some_and(|rows| rows.range(from_ms..to_ms).next().is_some())
            })
            .cloned()
            .collect()
    }

    /// Buckets of one series from `tier` whose start lies in `[from_ms, to_ms)`, with their
    /// sketches when `need` asks for quantiles.
    pub fn buckets(
        &self,
        tier: Tier,
        series_id: u64,
        (from_ms, to_ms): (i64, i64),
        need: Need,
    ) -> Vec<Bucket> {
        let i = tier_index(tier);
        let Some(rows) = self.tiers[i].by_series.get(&series_id) else {
            return Vec::new();
        };
        rows.range(from_ms..to_ms)
            .map(|(start, r)| Bucket {
                end_ms: start + tier.step_ms(),
                count: r.count,
                sum: r.sum,
                min: r.min,
                max: r.max,
                quantiles: r.quantiles,
                sketch: (need == Need::Quantiles).then(|| r.sketch.clone()),
                layer: Layer::Batch,
            })
            .collect()
    }

    /// The `rollup_1h` version the view reflects (`None` before the first load).
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The newest `rollup_1h` version in the lake (`None` while the table does not exist).
    pub async fn latest_version(cfg: &Config) -> Result<Option<u64>, BatchError> {
        let mut hour = open_table(cfg, Tier::Hour.table()).await?;
        match hour.load().await {
            Ok(()) => Ok(hour.version()),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Brings the view up to the lake's newest recompute. Returns whether anything changed.
    pub async fn refresh(&mut self, cfg: &Config) -> Result<bool, BatchError> {
        let mut hour = open_table(cfg, Tier::Hour.table()).await?;
        match hour.load().await {
            Ok(()) => {}
            Err(DeltaTableError::NotATable(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let version = hour.version();
        if version == self.version {
            return Ok(false);
        }
        let all = recomputes(cfg).await?;
        let new: Vec<Recomputed> = all.iter().skip(self.applied).cloned().collect();
        let ranges = merge_ranges(new.iter().map(|r| (r.from_ms, r.to_ms)).collect());
        if !ranges.is_empty() {
            let ctx = SessionContext::new();
            for tier in Tier::ALL {
                let mut t = open_table(cfg, tier.table()).await?;
                t.load().await?;
                t.update_datafusion_session(&ctx.state())?;
                ctx.register_table(tier.table(), t.table_provider().await?)?;
            }
            for (from, to) in &ranges {
                for tier in Tier::ALL {
                    let batches = ctx
                        .sql(&format!(
                            "SELECT series_id, start_ms, metric_name, source, tags, count, sum, \
                             min, max, p50, p90, p95, p99, sketch_keys, sketch_counts \
                             FROM {} WHERE start_ms >= {from} AND start_ms < {to}",
                            tier.table()
                        ))
                        .await?
                        .collect()
                        .await?;
                    let i = tier_index(tier);
                    self.rows -= self.tiers[i].remove_range(*from, *to);
                    for b in &batches {
                        self.load_batch(i, b)?;
                    }
                }
            }
        }
        self.applied = all.len();
        self.covered = covered_hours(&all);
        self.version = version;
        Ok(true)
    }

    fn load_batch(&mut self, tier: usize, b: &RecordBatch) -> Result<(), BatchError> {
        let col = |name: &str, t: &DataType| {
            let c = b
                .column_by_name(name)
                .ok_or_else(|| BatchError::Shape(format!("no column {name}")))?;
            cast(c, t).map_err(|e| BatchError::Shape(format!("{name}: {e}")))
        };
        let sid = col("series_id", &DataType::Int64)?;
        let start = col("start_ms", &DataType::Int64)?;
        let count = col("count", &DataType::Int64)?;
        let metric = col("metric_name", &DataType::Utf8)?;
        let source = col("source", &DataType::Utf8)?;
        let f: Vec<_> = ["sum", "min", "max", "p50", "p90", "p95", "p99"]
            .iter()
            .map(|n| col(n, &DataType::Float64))
            .collect::<Result<_, _>>()?;
        let tags = b
            .column_by_name("tags")
            .ok_or_else(|| BatchError::Shape("no column tags".into()))?
            .as_map_opt()
            .ok_or_else(|| BatchError::Shape("tags is not a map".into()))?
            .clone();
        let keys = b
            .column_by_name("sketch_keys")
            .and_then(|c| c.as_list_opt::<i32>())
            .ok_or_else(|| BatchError::Shape("sketch_keys is not a list".into()))?
            .clone();
        let counts = b
            .column_by_name("sketch_counts")
            .and_then(|c| c.as_list_opt::<i32>())
            .ok_or_else(|| BatchError::Shape("sketch_counts is not a list".into()))?
            .clone();
        let (sid, start, count) = (
            sid.as_primitive::<Int64Type>(),
            start.as_primitive::<Int64Type>(),
            count.as_primitive::<Int64Type>(),
        );
        let (metric, source) = (metric.as_string::<i32>(), source.as_string::<i32>());
        let fv = |j: usize, r: usize| f[j].as_primitive::<Float64Type>().value(r);
        for r in 0..b.num_rows() {
            let id = sid.value(r) as u64;
            if let std::collections::hash_map::Entry::Vacant(slot) = self.series.entry(id) {
                let entry = tags.value(r);
                let (k, v) = (
                    cast(entry.column(0), &DataType::Utf8)
                        .map_err(|e| BatchError::Shape(e.to_string()))?,
                    cast(entry.column(1), &DataType::Utf8)
                        .map_err(|e| BatchError::Shape(e.to_string()))?,
                );
                let (k, v) = (k.as_string::<i32>(), v.as_string::<i32>());
                let tags = (0..k.len())
                    .map(|i| (k.value(i).to_owned(), v.value(i).to_owned()))
                    .collect();
                slot.insert(Arc::new(SeriesInfo {
                    metric: metric.value(r).to_owned(),
                    series_id: id,
                    source: source.value(r).to_owned(),
                    tags,
                }));
            }
            let mut sketch = Sketch::new();
            if !keys.is_null(r) && !counts.is_null(r) {
                let k = cast(&keys.value(r), &DataType::Int32)
                    .map_err(|e| BatchError::Shape(e.to_string()))?;
                let c = cast(&counts.value(r), &DataType::Int64)
                    .map_err(|e| BatchError::Shape(e.to_string()))?;
                sketch.merge_buckets(
                    k.as_primitive::<Int32Type>().values(),
                    c.as_primitive::<Int64Type>().values(),
                );
            }
            let row = Row {
                count: count.value(r) as u64,
                sum: fv(0, r),
                min: fv(1, r),
                max: fv(2, r),
                quantiles: [fv(3, r), fv(4, r), fv(5, r), fv(6, r)],
                sketch: Arc::new(sketch),
            };
            if self.tiers[tier]
                .by_series
                .entry(id)
                .or_default()
                .insert(start.value(r), row)
                .is_none()
            {
                self.rows += 1;
            }
        }
        Ok(())
    }
}

fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::Minute => 0,
        Tier::Hour => 1,
    }
}

/// Sorted, non-overlapping union of ranges.
pub fn merge_ranges(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        assert_eq!(
            merge_ranges(vec![(5, 7), (0, 2), (1, 3), (7, 9)]),
            vec![(0, 3), (5, 9)]
        );
        assert!(merge_ranges(vec![]).is_empty());
    }
}
