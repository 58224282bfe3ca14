//! A batch: the events consumed since the last write, pre-aggregated per (series, minute), plus
//! the last offset it covers per Kafka partition.
//!
//! One batch becomes one ClickHouse insert (see `sql/clickhouse/001_speed_rollup_1m.sql`): one row
//! per (series, minute) with count, sum, min, max and the values (ClickHouse folds them into a
//! t-digest), and one offset-marker row per partition. The marker covers every message up to that
//! offset — counted, duplicate or dead-lettered alike.

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
}

/// The row shape of `speed_ingest` (RowBinary, column order of the table).
#[derive(Debug, clickhouse::Row, Serialize)]
pub struct IngestRow<'a> {
    metric_name: &'a str,
    series_id: u64,
    minute: u32,
    source: &'a str,
    tag_keys: &'a [String],
    tag_values: &'a [String],
    ingest_day: u16,
    cnt: u64,
    total: f64,
    mn: f64,
    mx: f64,
    vals: &'a [f64],
    kafka_offset: i64,
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
        });
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

    /// The insert's rows: data rows, then one offset marker per partition (`metric_name` '',
    /// `series_id` = partition, `source` = topic, `kafka_offset` = last covered offset).
    pub fn ingest_rows<'a>(
        &'a self,
        topic: &'a str,
        ingest_day: u16,
    ) -> impl Iterator<Item = IngestRow<'a>> + 'a {
        let data = self.cells.iter().map(move |(&(id, minute), c)| {
            let l = &self.labels[&id];
            IngestRow {
                metric_name: &l.metric_name,
                series_id: id,
                minute,
                source: &l.source,
                tag_keys: &l.tag_keys,
                tag_values: &l.tag_values,
                ingest_day,
                cnt: c.count,
                total: c.sum,
                mn: c.min,
                mx: c.max,
                vals: &c.values,
                kafka_offset: -1,
            }
        });
        let markers = self.offsets.iter().map(move |(&p, &o)| IngestRow {
            metric_name: "",
            series_id: p as u64,
            minute: 0,
            source: topic,
            tag_keys: &[],
            tag_values: &[],
            ingest_day,
            cnt: 0,
            total: 0.0,
            mn: 0.0,
            mx: 0.0,
            vals: &[],
            kafka_offset: o,
        });
        data.chain(markers)
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
        assert_eq!(b.cell(1, 180).unwrap().count, 1);
        assert_eq!(b.events(), 4);
        assert_eq!(b.rows(), 3 + 2);
        assert_eq!(b.offsets(), &BTreeMap::from([(0, 4), (3, 12)]));
    }

    #[test]
    fn rows_end_with_one_marker_per_partition() {
        let mut b = Batch::default();
        b.add(9, 60_000, 1.0, || labels("m"));
        b.cover(5, 99);
        let rows: Vec<_> = b.ingest_rows("topic", 20_000).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].metric_name,
                rows[0].series_id,
                rows[0].minute,
                rows[0].kafka_offset
            ),
            ("m", 9, 60, -1)
        );
        let m = &rows[1];
        assert_eq!(
            (m.metric_name, m.series_id, m.source, m.kafka_offset, m.cnt),
            ("", 5, "topic", 99, 0)
        );
        assert!(rows.iter().all(|r| r.ingest_day == 20_000));
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
