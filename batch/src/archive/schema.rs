//! The `events` table: one row per valid event, as Arrow and as Delta sees it.
//!
//! Columns: the event (`event_id`, `metric_name`, `value`, `timestamp` µs UTC — Delta has no
//! millisecond type — plus the exact `timestamp_ms`, `tags` as a map, `source`), its identity
//! (`series_id`, the u64 id stored bit-for-bit as Int64 since Delta has no unsigned types), where
//! it came from (`kafka_partition`, `kafka_offset`) and the partition column `event_date`
//! (`YYYY-MM-DD` of the event time, UTC).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use strata_shared::MetricEvent;

/// The partition column.
pub const PARTITION_COLUMN: &str = "event_date";

fn map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(
                vec![
                    Field::new("key", DataType::Utf8, false),
                    Field::new("value", DataType::Utf8, true),
                ]
                .into(),
            ),
            false,
        )),
        false,
    )
}

/// The Arrow schema of `events`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("timestamp_ms", DataType::Int64, false),
        Field::new("tags", map_type(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("series_id", DataType::Int64, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new(PARTITION_COLUMN, DataType::Utf8, false),
    ]))
}

/// A valid event and where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedEvent {
    /// The event.
    pub event: MetricEvent,
    /// Kafka partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
}

/// `YYYY-MM-DD` (UTC) of a Unix-millisecond time.
pub fn event_date(timestamp_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(timestamp_ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// Rows of `events` for these events.
pub fn to_record_batch(events: &[ArchivedEvent]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = events.len();
    let mut event_id = StringBuilder::with_capacity(n, n * 36);
    let mut metric = StringBuilder::with_capacity(n, n * 24);
    let mut value = Float64Builder::with_capacity(n);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut ts_ms = Int64Builder::with_capacity(n);
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut tags = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    let mut source = StringBuilder::with_capacity(n, n * 12);
    let mut series = Int64Builder::with_capacity(n);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut date = StringBuilder::with_capacity(n, n * 10);
    for a in events {
        let e = &a.event;
        event_id.append_value(&e.event_id);
        metric.append_value(&e.metric_name);
        value.append_value(e.value);
        ts.append_value(e.timestamp_ms * 1000);
        ts_ms.append_value(e.timestamp_ms);
        for (k, v) in &e.tags {
            tags.keys().append_value(k);
            tags.values().append_value(v);
        }
        tags.append(true)?;
        source.append_value(&e.source);
        series.append_value(e.series_id() as i64);
        partition.append_value(a.partition);
        offset.append_value(a.offset);
        date.append_value(event_date(e.timestamp_ms));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(metric.finish()),
        Arc::new(value.finish()),
        Arc::new(ts.finish()),
        Arc::new(ts_ms.finish()),
        Arc::new(tags.finish()),
        Arc::new(source.finish()),
        Arc::new(series.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
        Arc::new(date.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;

    use super::*;

    #[test]
    fn rows_carry_the_event_and_its_origin() {
        let e = MetricEvent::new("id-1", "cpu", 0.5, 1_764_000_000_123)
            .with_tag("host", "a")
            .with_source("agent");
        let b = to_record_batch(&[ArchivedEvent {
            event: e.clone(),
            partition: 3,
            offset: 77,
        }])
        .unwrap();
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.column(0).as_string::<i32>().value(0), "id-1");
        assert_eq!(
            b.column(4).as_primitive::<Int64Type>().value(0),
            1_764_000_000_123
        );
        assert_eq!(
            b.column(7).as_primitive::<Int64Type>().value(0) as u64,
            e.series_id()
        );
        assert_eq!(b.column(9).as_primitive::<Int64Type>().value(0), 77);
        assert_eq!(b.column(10).as_string::<i32>().value(0), "2025-11-24");
        let tags = b.column(5).as_map();
        assert_eq!(tags.value(0).len(), 1);
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(event_date(0), "1970-01-01");
        assert_eq!(event_date(86_400_000 - 1), "1970-01-01");
        assert_eq!(event_date(86_400_000), "1970-01-02");
    }
}
