//! Blocks: the unit in which batch-view rows are read from the lake and kept in the cache.
//!
//! A [`Rows`] block holds the rows of one metric in one tier over one span — an hour of
//! `rollup_1m`, a day of `rollup_1h` — columnar and sorted by (series, start), so a series'
//! rows are found by binary search. Counts, sums, minima and maxima are always there; the exact
//! quantiles and the mergeable sketches only in a block read for a query that shows quantiles.
//! An hour-tier block also carries each series' labels: it is the series directory of its
//! metric and day. A [`Names`] block lists the metrics of one day, with the hours each has rows
//! in.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use strata_shared::sketch::Sketch;
use strata_shared::stats::QUANTILES as LEVELS;

use super::BatchError;
use crate::cache::Weigh;
use crate::series::SeriesInfo;
use crate::window::{Bucket, Layer};

/// Columns a block reads (quantile columns only for [`Detail::Quantiles`]).
pub const TOTALS: [&str; 6] = ["series_id", "start_ms", "count", "sum", "min", "max"];
/// The quantile columns.
pub const QUANTILES: [&str; 6] = ["p50", "p90", "p95", "p99", "sketch_keys", "sketch_counts"];
/// The newest sample of each row, where the table has it.
pub const LAST: [&str; 2] = ["last", "last_ms"];
/// The label columns (hour tier).
pub const LABELS: [&str; 3] = ["metric_name", "source", "tags"];

/// Flat sketches: row `r`'s buckets are `keys[offsets[r]..offsets[r + 1]]`.
#[derive(Debug, Default)]
struct Sketches {
    offsets: Vec<u32>,
    keys: Vec<i32>,
    counts: Vec<i64>,
}

impl Sketches {
    fn span(&self, r: usize) -> std::ops::Range<usize> {
        self.offsets[r] as usize..self.offsets[r + 1] as usize
    }

    fn keys_of(&self, r: usize) -> &[i32] {
        &self.keys[self.span(r)]
    }

    fn counts_of(&self, r: usize) -> &[i64] {
        &self.counts[self.span(r)]
    }
}

/// The rows of one metric of one tier over one span.
#[derive(Debug, Default)]
pub struct Rows {
    /// Series ids, ascending.
    series: Vec<u64>,
    /// Row range of each series: `first[i]..first[i + 1]`.
    first: Vec<u32>,
    start: Vec<i64>,
    count: Vec<u64>,
    sum: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    quantiles: Option<Vec<[f64; 4]>>,
    sketches: Option<Sketches>,
    /// The newest sample of each row (time, value), where the files have it.
    last: Option<Vec<Option<(i64, f64)>>>,
    /// Labels of each series (hour tier), in `series` order.
    labels: Option<Vec<Arc<SeriesInfo>>>,
}

fn column(b: &RecordBatch, name: &str, t: &DataType) -> Result<arrow::array::ArrayRef, BatchError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| BatchError::Shape(format!("no column {name}")))?;
    cast(c, t).map_err(|e| BatchError::Shape(format!("{name}: {e}")))
}

impl Rows {
    /// A block from query results (any order); quantiles and labels when their columns are
    /// there.
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Rows, BatchError> {
        let Some(first) = batches.first() else {
            return Ok(Rows::default());
        };
        let all = concat_batches(&first.schema(), batches)
            .map_err(|e| BatchError::Shape(e.to_string()))?;
        let n = all.num_rows() as u32;
        Rows::from_rows(&all, (0..n).collect())
    }

    /// A block from the rows `order` (indices, any order) of `all`.
    pub fn from_rows(all: &RecordBatch, mut order: Vec<u32>) -> Result<Rows, BatchError> {
        let n = order.len();
        // Series ids are u64 stored as Int64: order them as u64, as the look-ups do.
        let sid = column(all, "series_id", &DataType::Int64)?;
        let start = column(all, "start_ms", &DataType::Int64)?;
        let (sid, start) = (
            sid.as_primitive::<Int64Type>(),
            start.as_primitive::<Int64Type>(),
        );
        order.sort_unstable_by_key(|&i| (sid.value(i as usize) as u64, start.value(i as usize)));
        let b = take_record_batch(all, &arrow::array::UInt32Array::from(order))
            .map_err(|e| BatchError::Shape(e.to_string()))?;
        let sid = column(&b, "series_id", &DataType::Int64)?;
        let sid = sid.as_primitive::<Int64Type>();
        let start = column(&b, "start_ms", &DataType::Int64)?;
        let count = column(&b, "count", &DataType::Int64)?;
        let f = |name: &str| -> Result<Vec<f64>, BatchError> {
            Ok(column(&b, name, &DataType::Float64)?
                .as_primitive::<Float64Type>()
                .values()
                .to_vec())
        };
        let mut rows = Rows {
            start: start.as_primitive::<Int64Type>().values().to_vec(),
            count: count
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .map(|c| (*c).max(0) as u64)
                .collect(),
            sum: f("sum")?,
            min: f("min")?,
            max: f("max")?,
            ..Rows::default()
        };
        let mut first_rows = Vec::new();
        for r in 0..n {
            let id = sid.value(r) as u64;
            if rows.series.last() != Some(&id) {
                rows.series.push(id);
                rows.first.push(r as u32);
                first_rows.push(r);
            }
        }
        rows.first.push(n as u32);
        if b.column_by_name("p50").is_some() {
            let q: Vec<Vec<f64>> = ["p50", "p90", "p95", "p99"]
                .iter()
                .map(|c| f(c))
                .collect::<Result<_, _>>()?;
            rows.quantiles = Some(
                (0..n)
                    .map(|r| [q[0][r], q[1][r], q[2][r], q[3][r]])
                    .collect(),
            );
            rows.sketches = Some(sketches(&b)?);
        }
        if b.column_by_name("tags").is_some() {
            rows.labels = Some(labels(&b, &first_rows, &rows.series)?);
        }
        if b.column_by_name("last").is_some() && b.column_by_name("last_ms").is_some() {
            let v = column(&b, "last", &DataType::Float64)?;
            let t = column(&b, "last_ms", &DataType::Int64)?;
            let (v, t) = (
                v.as_primitive::<Float64Type>(),
                t.as_primitive::<Int64Type>(),
            );
            rows.last = Some(
                (0..n)
                    .map(|r| (!v.is_null(r) && !t.is_null(r)).then(|| (t.value(r), v.value(r))))
                    .collect(),
            );
        }
        Ok(rows)
    }

    /// Series with rows in the block.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether the block holds no row.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// Whether the block has quantiles and sketches.
    pub fn has_quantiles(&self) -> bool {
        self.quantiles.is_some()
    }

    fn rows_of(&self, series_id: u64) -> std::ops::Range<usize> {
        match self.series.binary_search(&series_id) {
            Ok(i) => self.first[i] as usize..self.first[i + 1] as usize,
            Err(_) => 0..0,
        }
    }

    /// The buckets of one series starting in `[from_ms, to_ms)`, `step_ms` wide, with quantiles
    /// and sketches when the block has them and `quantiles` asks.
    pub fn buckets(
        &self,
        series_id: u64,
        (from_ms, to_ms): (i64, i64),
        step_ms: i64,
        quantiles: bool,
        out: &mut Vec<Bucket>,
    ) {
        for r in self.rows_in(series_id, from_ms, to_ms) {
            out.push(self.bucket(r, step_ms, quantiles));
        }
    }

    /// As [`Rows::buckets`], but merged into the windows of `grid` (first point, step): the rows
    /// of a window `(t − step, t]`, `t = first + k·step`, become one bucket ending at `t` —
    /// counts and sums added, sketches merged, quantiles read from the merged sketch and
    /// clamped to its min and max, as [`crate::window::aggregate`] computes them from the rows.
    /// A window of one row keeps that row (its exact quantiles); a grid no coarser than the
    /// rows gives the rows. A quantile panel over 7 days then holds a sketch per point, not per
    /// minute.
    pub fn windows(
        &self,
        series_id: u64,
        (from_ms, to_ms): (i64, i64),
        step_ms: i64,
        (first, grid_step): (i64, i64),
        quantiles: bool,
        out: &mut Vec<Bucket>,
    ) {
        if grid_step <= step_ms {
            return self.buckets(series_id, (from_ms, to_ms), step_ms, quantiles, out);
        }
        let rows = self.rows_in(series_id, from_ms, to_ms);
        let mut r = rows.start;
        while r < rows.end {
            let end = self.start[r] + step_ms;
            let t = first + (end - first + grid_step - 1).div_euclid(grid_step) * grid_step;
            let mut z = r + 1;
            while z < rows.end && self.start[z] + step_ms <= t {
                z += 1;
            }
            let live: Vec<usize> = (r..z).filter(|&i| self.count[i] > 0).collect();
            match live.as_slice() {
                [] => {}
                [one] => out.push(self.bucket(*one, step_ms, quantiles)),
                many => out.push(self.merged(many, t, quantiles)),
            }
            r = z;
        }
    }

    /// Rows of one series starting in `[from_ms, to_ms)`.
    fn rows_in(&self, series_id: u64, from_ms: i64, to_ms: i64) -> std::ops::Range<usize> {
        let rows = self.rows_of(series_id);
        let starts = &self.start[rows.clone()];
        let lo = rows.start + starts.partition_point(|s| *s < from_ms);
        let hi = rows.start + starts.partition_point(|s| *s < to_ms);
        lo..hi
    }

    /// Row `r` as a bucket.
    fn bucket(&self, r: usize, step_ms: i64, quantiles: bool) -> Bucket {
        let (q, sketch) = match (&self.quantiles, &self.sketches) {
            (Some(q), Some(s)) if quantiles => {
                let mut sk = Sketch::new();
                sk.merge_buckets(s.keys_of(r), s.counts_of(r));
                (q[r], Some(Arc::new(sk)))
            }
            _ => ([f64::NAN; 4], None),
        };
        Bucket {
            end_ms: self.start[r] + step_ms,
            count: self.count[r],
            sum: self.sum[r],
            min: self.min[r],
            max: self.max[r],
            quantiles: q,
            sketch,
            last: self.last.as_ref().and_then(|l| l[r]),
            layer: Layer::Batch,
        }
    }

    /// Rows `rows` (of one series, with events) as one bucket ending at `end_ms`.
    fn merged(&self, rows: &[usize], end_ms: i64, quantiles: bool) -> Bucket {
        let mut b = Bucket {
            end_ms,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            quantiles: [f64::NAN; 4],
            sketch: None,
            last: None,
            layer: Layer::Batch,
        };
        for &r in rows {
            b.last = crate::window::newer(b.last, self.last.as_ref().and_then(|l| l[r]));
            b.count += self.count[r];
            b.sum += self.sum[r];
            b.min = b.min.min(self.min[r]);
            b.max = b.max.max(self.max[r]);
        }
        if let (Some(s), true) = (&self.sketches, quantiles) {
            let mut sk = Sketch::new();
            for &r in rows {
                sk.merge_buckets(s.keys_of(r), s.counts_of(r));
            }
            b.quantiles =
                LEVELS.map(|q| sk.quantile(q, Some(b.min), Some(b.max)).unwrap_or(f64::NAN));
            b.sketch = Some(Arc::new(sk));
        }
        b
    }

    /// The series (with labels) that have a row starting in `[from_ms, to_ms)`; empty for a
    /// block without labels.
    pub fn series_in(&self, from_ms: i64, to_ms: i64) -> Vec<Arc<SeriesInfo>> {
        let Some(labels) = &self.labels else {
            return Vec::new();
        };
        self.series
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let r = self.first[*i] as usize..self.first[*i + 1] as usize;
                self.start[r].iter().any(|s| (from_ms..to_ms).contains(s))
            })
            .map(|(i, _)| labels[i].clone())
            .collect()
    }
}

fn sketches(b: &RecordBatch) -> Result<Sketches, BatchError> {
    let list = |name: &str| {
        b.column_by_name(name)
            .and_then(|c| c.as_list_opt::<i32>())
            .ok_or_else(|| BatchError::Shape(format!("{name} is not a list")))
    };
    let (keys, counts) = (list("sketch_keys")?, list("sketch_counts")?);
    let k = cast(keys.values(), &DataType::Int32).map_err(|e| BatchError::Shape(e.to_string()))?;
    let c =
        cast(counts.values(), &DataType::Int64).map_err(|e| BatchError::Shape(e.to_string()))?;
    let (k, c) = (k.as_primitive::<Int32Type>(), c.as_primitive::<Int64Type>());
    let mut s = Sketches {
        offsets: Vec::with_capacity(b.num_rows() + 1),
        ..Sketches::default()
    };
    s.offsets.push(0);
    for r in 0..b.num_rows() {
        if !keys.is_null(r) && !counts.is_null(r) {
            let (a, z) = (
                keys.value_offsets()[r] as usize,
                keys.value_offsets()[r + 1] as usize,
            );
            let (ca, cz) = (
                counts.value_offsets()[r] as usize,
                counts.value_offsets()[r + 1] as usize,
            );
            if z - a != cz - ca {
                return Err(BatchError::Shape(
                    "sketch keys and counts differ in length".into(),
                ));
            }
            s.keys.extend_from_slice(&k.values()[a..z]);
            s.counts.extend_from_slice(&c.values()[ca..cz]);
        }
        s.offsets.push(s.keys.len() as u32);
    }
    Ok(s)
}

fn labels(
    b: &RecordBatch,
    first_rows: &[usize],
    ids: &[u64],
) -> Result<Vec<Arc<SeriesInfo>>, BatchError> {
    let metric = column(b, "metric_name", &DataType::Utf8)?;
    let source = column(b, "source", &DataType::Utf8)?;
    let (metric, source) = (metric.as_string::<i32>(), source.as_string::<i32>());
    let tags = b
        .column_by_name("tags")
        .and_then(|c| c.as_map_opt())
        .ok_or_else(|| BatchError::Shape("tags is not a map".into()))?;
    let shape = |e: arrow::error::ArrowError| BatchError::Shape(e.to_string());
    let keys = cast(tags.keys(), &DataType::Utf8).map_err(shape)?;
    let values = cast(tags.values(), &DataType::Utf8).map_err(shape)?;
    let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
    let offsets = tags.value_offsets();
    Ok(first_rows
        .iter()
        .zip(ids)
        .map(|(&r, &id)| {
            let (a, z) = (offsets[r] as usize, offsets[r + 1] as usize);
            Arc::new(SeriesInfo {
                metric: metric.value(r).to_owned(),
                series_id: id,
                source: source.value(r).to_owned(),
                tags: (a..z)
                    .map(|i| (keys.value(i).to_owned(), values.value(i).to_owned()))
                    .collect(),
            })
        })
        .collect())
}

/// The metrics of one day of the hour tier, with the hours (bit i: hour i of the day) in which
/// each has rows.
#[derive(Debug, Default)]
pub struct Names {
    /// Metric name → bitmask of hours.
    pub hours: BTreeMap<String, u32>,
}

impl Names {
    /// From rows of (metric_name, start_ms) of the day starting at `day_ms`.
    pub fn from_batches(day_ms: i64, batches: &[RecordBatch]) -> Result<Names, BatchError> {
        let mut out = Names::default();
        for b in batches {
            let m = column(b, "metric_name", &DataType::Utf8)?;
            let s = column(b, "start_ms", &DataType::Int64)?;
            let (m, s) = (m.as_string::<i32>(), s.as_primitive::<Int64Type>());
            for r in 0..b.num_rows() {
                let hour = (s.value(r) - day_ms).div_euclid(3_600_000);
                if (0..24).contains(&hour) {
                    *out.hours.entry(m.value(r).to_owned()).or_default() |= 1 << hour;
                }
            }
        }
        Ok(out)
    }

    /// Metrics with rows in any of the hours of `mask`.
    pub fn in_hours(&self, mask: u32) -> impl Iterator<Item = &str> {
        self.hours
            .iter()
            .filter(move |(_, h)| **h & mask != 0)
            .map(|(m, _)| m.as_str())
    }
}

/// What the cache holds.
// Blocks live behind an `Arc` in the cache, one allocation each; boxing `Rows` would only add
// a second indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Block {
    /// Rows of one metric, tier and span.
    Rows(Rows),
    /// The metric names of a day.
    Names(Names),
}

impl Weigh for Block {
    fn weight(&self) -> usize {
        let v = |n: usize, size: usize| n * size;
        match self {
            Block::Rows(r) => {
                let mut w = std::mem::size_of::<Rows>()
                    + v(r.series.capacity(), 8)
                    + v(r.first.capacity(), 4)
                    + v(r.start.capacity(), 8)
                    + v(r.count.capacity(), 8)
                    + v(r.sum.capacity(), 8)
                    + v(r.min.capacity(), 8)
                    + v(r.max.capacity(), 8)
                    + r.last.as_ref().map_or(0, |l| v(l.capacity(), 24));
                if let Some(q) = &r.quantiles {
                    w += v(q.capacity(), 32);
                }
                if let Some(s) = &r.sketches {
                    w += v(s.offsets.capacity(), 4)
                        + v(s.keys.capacity(), 4)
                        + v(s.counts.capacity(), 8);
                }
                if let Some(l) = &r.labels {
                    w += l
                        .iter()
                        .map(|s| {
                            96 + s.metric.len()
                                + s.source.len()
                                + s.tags
                                    .iter()
                                    .map(|(k, v)| 64 + k.len() + v.len())
                                    .sum::<usize>()
                        })
                        .sum::<usize>();
                }
                w
            }
            Block::Names(n) => {
                std::mem::size_of::<Names>() + n.hours.keys().map(|k| 64 + k.len()).sum::<usize>()
            }
        }
    }
}

#[cfg(test)]
mod tests;
