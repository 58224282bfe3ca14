//! A batch: the events consumed since the last write, pre-aggregated per (series, minute), plus
//! the last offset it covers per Kafka partition.
//!
//! One batch becomes one ClickHouse insert of one row (see
//! `sql/clickhouse/002_speed_ingest_batch.sql`): arrays with one element per (series, minute) —
//! count, sum, min, max, the values (ClickHouse folds them into a t-digest) and the newest value
//! with its time (what a sample series shows) — then one offset marker per partition. The marker covers every message up to that offset — counted,
//! duplicate or dead-lettered alike.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use rdkafka::producer::DeliveryFuture;
use serde::Serialize;

/// Labels of a series, shared by all its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    /// Metric name.
    pub metric_name: Arc<str>,
    /// Source.
    pub source: Arc<str>,
    /// Tag keys, sorted.
    pub tag_keys: Arc<[String]>,
    /// Tag values, in the order of `tag_keys`.
    pub tag_values: Arc<[String]>,
}

/// Aggregate of one (series, minute).
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Number of events.
    pub count: u64,
    /// Sum of values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Every value (ClickHouse builds the quantile state from them).
    pub values: Vec<f64>,
    /// The newest value: (time in Unix ms, value); of two at one time, the larger value (so
    /// that both layers pick the same).
    pub last: (i64, f64),
}

/// Whether `(t, v)` is newer than `than` by the rule of [`Cell::last`].
pub fn newer(t: i64, v: f64, than: (i64, f64)) -> bool {
    t > than.0 || (t == than.0 && v.total_cmp(&than.1).is_gt())
}

/// The one row a batch is inserted as, into `speed_ingest_batch_v2` (RowBinary, column order of
/// the table): element `i` of every array is rollup row `i`.
#[derive(Debug, Default, clickhouse::Row, Serialize)]
pub struct IngestBatch<'a> {
    /// Day of the insert (the rollup table's partition key), days since 1970-01-01.
    pub ingest_day: u16,
    /// Metric name per row ('' for an offset marker).
    pub metric_names: Vec<&'a str>,
    /// Series id per row (the Kafka partition for a marker).
    pub series_ids: Vec<u64>,
    /// Minute start per row, Unix seconds.
    pub minutes: Vec<u32>,
    /// Source per row (the topic for a marker).
    pub sources: Vec<&'a str>,
    /// Tag keys per row.
    pub tag_keys_per_row: Vec<&'a [String]>,
    /// Tag values per row.
    pub tag_values_per_row: Vec<&'a [String]>,
    /// Event count per row.
    pub counts: Vec<u64>,
    /// Sum of values per row.
    pub totals: Vec<f64>,
    /// Smallest value per row.
    pub mins: Vec<f64>,
    /// Largest value per row.
    pub maxes: Vec<f64>,
    /// Every value per row.
    pub values_per_row: Vec<&'a [f64]>,
    /// Last covered Kafka offset (markers) or -1 (rollups).
    pub kafka_offsets: Vec<i64>,
    /// The newest value per row (0 for a marker).
    pub last_values: Vec<f64>,
    /// Its time, Unix ms, per row (0 for a marker).
    pub last_times: Vec<i64>,
}

impl<'a> IngestBatch<'a> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        metric_name: &'a str,
        series_id: u64,
        minute: u32,
        source: &'a str,
        tags: (&'a [String], &'a [String]),
        (cnt, total, mn, mx): (u64, f64, f64, f64),
        vals: &'a [f64],
        kafka_offset: i64,
        (last_ms, last): (i64, f64),
    ) {
        self.metric_names.push(metric_name);
        self.series_ids.push(series_id);
        self.minutes.push(minute);
        self.sources.push(source);
        self.tag_keys_per_row.push(tags.0);
        self.tag_values_per_row.push(tags.1);
        self.counts.push(cnt);
        self.totals.push(total);
        self.mins.push(mn);
        self.maxes.push(mx);
        self.values_per_row.push(vals);
        self.kafka_offsets.push(kafka_offset);
        self.last_values.push(last);
        self.last_times.push(last_ms);
    }

    /// Rollup rows and markers in it.
    pub fn len(&self) -> usize {
        self.series_ids.len()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.series_ids.is_empty()
    }
}

/// Events pending for one insert.
#[derive(Default)]
pub struct Batch {
    cells: HashMap<(u64, u32), Cell>,
    labels: HashMap<u64, Labels>,
    offsets: BTreeMap<i32, i64>,
    events: usize,
    started: Option<Instant>,
    /// Dead letters of this batch: they must be acknowledged before its offsets are written.
    pub dead_letters: Vec<DeliveryFuture>,
}

impl Batch {
    /// Adds one counted event of series `id` at `timestamp_ms`; `labels` is called only for a
    /// series new to this batch.
    pub fn add(&mut self, id: u64, timestamp_ms: i64, value: f64, labels: impl FnOnce() -> Labels) {
        self.started.get_or_insert_with(Instant::now);
        self.events += 1;
        self.labels.entry(id).or_insert_with(labels);
        let minute = (timestamp_ms.div_euclid(60_000) * 60) as u32;
        let cell = self.cells.entry((id, minute)).or_insert_with(|| Cell {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            values: Vec::new(),
            last: (i64::MIN, f64::NAN),
        });
        if newer(timestamp_ms, value, cell.last) {
            cell.last = (timestamp_ms, value);
        }
        cell.count += 1;
        cell.sum += value;
        cell.min = cell.min.min(value);
        cell.max = cell.max.max(value);
        cell.values.push(value);
    }

    /// Records that the batch covers `partition` up to and including `offset`.
    pub fn cover(&mut self, partition: i32, offset: i64) {
        self.started.get_or_insert_with(Instant::now);
        let o = self.offsets.entry(partition).or_insert(offset);
        *o = (*o).max(offset);
    }

    /// True when the batch neither counts events nor covers offsets.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty() && self.cells.is_empty()
    }

    /// Counted events in the batch.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Rows the insert will have (cells plus one marker per partition).
    pub fn rows(&self) -> usize {
        self.cells.len() + self.offsets.len()
    }

    /// When the first message entered the batch.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Last offset covered per partition.
    pub fn offsets(&self) -> &BTreeMap<i32, i64> {
        &self.offsets
    }

    /// The aggregate of one (series, minute start in seconds), for tests and debugging.
    pub fn cell(&self, id: u64, minute: u32) -> Option<&Cell> {
        self.cells.get(&(id, minute))
    }

    /// The insert's one row: the rollup rows, then one offset marker per partition
    /// (`metric_name` '', `series_id` = partition, `source` = topic, `kafka_offset` = last covered
    /// offset).
    pub fn ingest_batch<'a>(&'a self, topic: &'a str, ingest_day: u16) -> IngestBatch<'a> {
        let n = self.rows();
        let mut out = IngestBatch {
            ingest_day,
            metric_names: Vec::with_capacity(n),
            series_ids: Vec::with_capacity(n),
            minutes: Vec::with_capacity(n),
            sources: Vec::with_capacity(n),
            tag_keys_per_row: Vec::with_capacity(n),
            tag_values_per_row: Vec::with_capacity(n),
            counts: Vec::with_capacity(n),
            totals: Vec::with_capacity(n),
            mins: Vec::with_capacity(n),
            maxes: Vec::with_capacity(n),
            values_per_row: Vec::with_capacity(n),
            kafka_offsets: Vec::with_capacity(n),
            last_values: Vec::with_capacity(n),
            last_times: Vec::with_capacity(n),
        };
        for (&(id, minute), c) in &self.cells {
            let l = &self.labels[&id];
            out.push(
                &l.metric_name,
                id,
                minute,
                &l.source,
                (&l.tag_keys, &l.tag_values),
                (c.count, c.sum, c.min, c.max),
                &c.values,
                -1,
                c.last,
            );
        }
        for (&p, &o) in &self.offsets {
            out.push(
                "",
                p as u64,
                0,
                topic,
                (&[], &[]),
                (0, 0.0, 0.0, 0.0),
                &[],
                o,
                (0, 0.0),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(m: &str) -> Labels {
        Labels {
            metric_name: m.into(),
            source: "s".into(),
            tag_keys: vec!["k".to_owned()].into(),
            tag_values: vec!["v".to_owned()].into(),
        }
    }

    #[test]
    fn aggregates_per_series_and_minute() {
        let mut b = Batch::default();
        b.add(1, 120_000, 2.0, || labels("m"));
        b.add(1, 179_999, -1.0, || {
            panic!("labels are asked once per series")
        });
        b.add(1, 180_000, 5.0, || {
            panic!("labels are asked once per series")
        });
        b.add(2, 120_001, 7.0, || labels("m"));
        b.cover(3, 10);
        b.cover(3, 12);
        b.cover(0, 4);
        let c = b.cell(1, 120).unwrap();
        assert_eq!(
            (c.count, c.sum, c.min, c.max, c.values.clone()),
            (2, 1.0, -1.0, 2.0, vec![2.0, -1.0])
        );
        assert_eq!(c.last, (179_999, -1.0), "the newest, not the largest");
        assert_eq!(b.cell(1, 180).unwrap().count, 1);
        assert_eq!(b.events(), 4);
        assert_eq!(b.rows(), 3 + 2);
        assert_eq!(b.offsets(), &BTreeMap::from([(0, 4), (3, 12)]));
    }

    #[test]
    fn the_row_ends_with_one_marker_per_partition() {
        let mut b = Batch::default();
        b.add(9, 60_000, 1.0, || labels("m"));
        b.add(9, 61_000, 3.0, || labels("m"));
        b.cover(5, 99);
        b.cover(2, 7);
        let r = b.ingest_batch("topic", 20_000);
        assert_eq!(r.len(), 3);
        assert_eq!(r.ingest_day, 20_000);
        assert_eq!(
            (
                r.metric_names[0],
                r.series_ids[0],
                r.minutes[0],
                r.kafka_offsets[0]
            ),
            ("m", 9, 60, -1)
        );
        assert_eq!(
            (r.counts[0], r.totals[0], r.values_per_row[0]),
            (2, 4.0, &[1.0, 3.0][..])
        );
        assert_eq!(r.metric_names[1..], ["", ""]);
        assert_eq!(r.series_ids[1..], [2, 5]);
        assert_eq!(r.kafka_offsets[1..], [7, 99]);
        assert_eq!(r.sources[1..], ["topic", "topic"]);
        assert_eq!(r.counts[1..], [0, 0]);
        // Every column has one element per row: ClickHouse's ARRAY JOIN needs equal lengths.
        let lens = [
            r.metric_names.len(),
            r.series_ids.len(),
            r.minutes.len(),
            r.sources.len(),
            r.tag_keys_per_row.len(),
            r.tag_values_per_row.len(),
            r.counts.len(),
            r.totals.len(),
            r.mins.len(),
            r.maxes.len(),
            r.values_per_row.len(),
            r.kafka_offsets.len(),
            r.last_values.len(),
            r.last_times.len(),
        ];
        assert!(lens.iter().all(|&n| n == 3), "{lens:?}");
        assert_eq!((r.last_times[0], r.last_values[0]), (61_000, 3.0));
        assert!(
            newer(5, 1.0, (5, 0.5)) && !newer(5, 0.5, (5, 1.0)),
            "ties: the larger value"
        );
    }

    #[test]
    fn a_batch_of_only_dead_letters_still_covers_its_offsets() {
        let mut b = Batch::default();
        assert!(b.is_empty());
        b.cover(1, 7);
        assert!(!b.is_empty());
        assert_eq!(b.rows(), 1);
    }
}
