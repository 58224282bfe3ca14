//! The Delta tables `dead_letters` (one row per message of the dead-letter topic: the raw bytes,
//! the reason, where it came from, when it was refused) and `dead_letter_replays` (one row per
//! dead letter produced again), as Arrow rows and Delta commits.
//!
//! Like `events`, `dead_letters` stores with each commit one Delta transaction per partition of
//! the dead-letter topic (`app_id = strata-dead-letters-<partition>`, `version` = last offset), so
//! a crash never writes a dead letter twice nor skips one.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BinaryBuilder, Int32Array, Int32Builder, Int64Array, Int64Builder,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use strata_shared::Config;

use super::DeadLetterError;
use crate::archive::writer::{open_table, stored_offsets};

/// The table of dead letters.
pub const DEAD_LETTERS_TABLE: &str = "dead_letters";
/// The table of replayed dead letters.
pub const REPLAYS_TABLE: &str = "dead_letter_replays";

/// The Delta transaction app id of a dead-letter topic partition.
pub fn app_id(partition: i32) -> String {
    format!("strata-dead-letters-{partition}")
}

/// One message of the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Partition of the dead-letter topic.
    pub dlq_partition: i32,
    /// Offset in it (with the partition: the dead letter's identity).
    pub dlq_offset: i64,
    /// The message as it was refused.
    pub payload: Vec<u8>,
    /// The reason code (`bad_json`, `too_many_tags`, …).
    pub reason: String,
    /// The reason in words.
    pub error: String,
    /// Where it was read (`metrics-events`, or `ingest:<receiver>`).
    pub origin_topic: String,
    /// Its partition there (-1: a receiver).
    pub origin_partition: i32,
    /// Its offset there (-1: a receiver).
    pub origin_offset: i64,
    /// When it was refused, Unix ms.
    pub rejected_at_ms: i64,
    /// Which service refused it.
    pub service: String,
}

impl DeadLetter {
    /// A dead letter from a message of the dead-letter topic and its `strata.*` headers
    /// (`header(name)`); missing headers are empty (or -1, or 0).
    pub fn from_message(
        partition: i32,
        offset: i64,
        payload: &[u8],
        header: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let number = |k: &str| header(k).and_then(|v| v.parse::<i64>().ok());
        Self {
            dlq_partition: partition,
            dlq_offset: offset,
            payload: payload.to_vec(),
            reason: header("strata.reason").unwrap_or_default(),
            error: header("strata.error").unwrap_or_default(),
            origin_topic: header("strata.topic").unwrap_or_default(),
            origin_partition: number("strata.partition").unwrap_or(-1) as i32,
            origin_offset: number("strata.offset").unwrap_or(-1),
            rejected_at_ms: number("strata.rejected_at").unwrap_or(0),
            service: header("strata.service").unwrap_or_default(),
        }
    }

    /// `partition:offset`, how the CLI names it.
    pub fn key(&self) -> String {
        format!("{}:{}", self.dlq_partition, self.dlq_offset)
    }
}

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow schema of `dead_letters`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("dlq_partition", DataType::Int32, false),
        Field::new("dlq_offset", DataType::Int64, false),
        Field::new("payload", DataType::Binary, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("origin_topic", DataType::Utf8, false),
        Field::new("origin_partition", DataType::Int32, false),
        Field::new("origin_offset", DataType::Int64, false),
        Field::new("rejected_at", time_type(), false),
        Field::new("rejected_at_ms", DataType::Int64, false),
        Field::new("service", DataType::Utf8, false),
    ]))
}

/// Dead letters as one Arrow batch of [`schema`].
pub fn to_record_batch(rows: &[DeadLetter]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut part = Int32Builder::new();
    let mut off = Int64Builder::new();
    let mut payload = BinaryBuilder::new();
    let mut reason = StringBuilder::new();
    let mut error = StringBuilder::new();
    let mut topic = StringBuilder::new();
    let mut opart = Int32Builder::new();
    let mut ooff = Int64Builder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut at_ms = Int64Builder::new();
    let mut service = StringBuilder::new();
    for r in rows {
        part.append_value(r.dlq_partition);
        off.append_value(r.dlq_offset);
        payload.append_value(&r.payload);
        reason.append_value(&r.reason);
        error.append_value(&r.error);
        topic.append_value(&r.origin_topic);
        opart.append_value(r.origin_partition);
        ooff.append_value(r.origin_offset);
        at.append_value(r.rejected_at_ms * 1000);
        at_ms.append_value(r.rejected_at_ms);
        service.append_value(&r.service);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(part.finish()),
        Arc::new(off.finish()),
        Arc::new(payload.finish()),
        Arc::new(reason.finish()),
        Arc::new(error.finish()),
        Arc::new(topic.finish()),
        Arc::new(opart.finish()),
        Arc::new(ooff.finish()),
        Arc::new(at.finish()),
        Arc::new(at_ms.finish()),
        Arc::new(service.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
}

/// A column of `b` as `to` (a reader may give strings and bytes as views, or dictionaries).
fn column(b: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef, DeadLetterError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| DeadLetterError::Corrupt(format!("column {name} missing")))?;
    arrow::compute::cast(c, to).map_err(|e| DeadLetterError::Corrupt(format!("column {name}: {e}")))
}

fn typed<'a, T: 'static>(a: &'a ArrayRef, name: &str) -> Result<&'a T, DeadLetterError> {
    a.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| DeadLetterError::Corrupt(format!("column {name} of another type")))
}

/// The dead letters of a batch read from `dead_letters` (every column of [`schema`] but
/// `rejected_at`, in any order).
pub fn from_record_batch(b: &RecordBatch) -> Result<Vec<DeadLetter>, DeadLetterError> {
    use DataType::{Binary, Int32, Int64, Utf8};
    let cols = [
        column(b, "dlq_partition", &Int32)?,
        column(b, "dlq_offset", &Int64)?,
        column(b, "payload", &Binary)?,
        column(b, "reason", &Utf8)?,
        column(b, "error", &Utf8)?,
        column(b, "origin_topic", &Utf8)?,
        column(b, "origin_partition", &Int32)?,
        column(b, "origin_offset", &Int64)?,
        column(b, "rejected_at_ms", &Int64)?,
        column(b, "service", &Utf8)?,
    ];
    let part: &Int32Array = typed(&cols[0], "dlq_partition")?;
    let off: &Int64Array = typed(&cols[1], "dlq_offset")?;
    let payload: &BinaryArray = typed(&cols[2], "payload")?;
    let reason: &StringArray = typed(&cols[3], "reason")?;
    let error: &StringArray = typed(&cols[4], "error")?;
    let topic: &StringArray = typed(&cols[5], "origin_topic")?;
    let opart: &Int32Array = typed(&cols[6], "origin_partition")?;
    let ooff: &Int64Array = typed(&cols[7], "origin_offset")?;
    let at_ms: &Int64Array = typed(&cols[8], "rejected_at_ms")?;
    let service: &StringArray = typed(&cols[9], "service")?;
    Ok((0..b.num_rows())
        .map(|i| DeadLetter {
            dlq_partition: part.value(i),
            dlq_offset: off.value(i),
            payload: payload.value(i).to_vec(),
            reason: reason.value(i).to_owned(),
            error: error.value(i).to_owned(),
            origin_topic: topic.value(i).to_owned(),
            origin_partition: opart.value(i),
            origin_offset: ooff.value(i),
            rejected_at_ms: at_ms.value(i),
            service: service.value(i).to_owned(),
        })
        .collect())
}

/// A dead letter produced again.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The dead letter's partition of the dead-letter topic.
    pub dlq_partition: i32,
    /// Its offset there.
    pub dlq_offset: i64,
    /// Its event id (unchanged by the replay).
    pub event_id: String,
    /// When it was produced again, Unix ms.
    pub replayed_at_ms: i64,
}

/// The Arrow schema of `dead_letter_replays`.
pub fn replays_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("dlq_partition", DataType::Int32, false),
        Field::new("dlq_offset", DataType::Int64, false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("replayed_at", time_type(), false),
    ]))
}

fn replays_batch(rows: &[Replayed]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut part = Int32Builder::new();
    let mut off = Int64Builder::new();
    let mut id = StringBuilder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for r in rows {
        part.append_value(r.dlq_partition);
        off.append_value(r.dlq_offset);
        id.append_value(&r.event_id);
        at.append_value(r.replayed_at_ms * 1000);
    }
    RecordBatch::try_new(
        replays_schema(),
        vec![
            Arc::new(part.finish()),
            Arc::new(off.finish()),
            Arc::new(id.finish()),
            Arc::new(at.finish()),
        ],
    )
}

/// Opens a table of the lake at its newest version; `None` if it does not exist yet.
pub async fn load(cfg: &Config, name: &str) -> Result<Option<DeltaTable>, DeltaTableError> {
    let mut t = open_table(cfg, name).await?;
    match t.load().await {
        Ok(()) => Ok(Some(t)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `dead_letters` table, opened for appending.
pub struct DeadLetterTable {
    table: DeltaTable,
}

impl DeadLetterTable {
    /// Opens (or prepares to create) the table in the configured lake.
    pub async fn open(cfg: &Config) -> Result<Self, DeltaTableError> {
        Ok(Self {
            table: open_table(cfg, DEAD_LETTERS_TABLE).await?,
        })
    }

    /// The last offset stored for each of `partitions`, at the table's newest version.
    pub async fn stored_offsets(
        &mut self,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, DeltaTableError> {
        stored_offsets(&mut self.table, partitions, app_id).await
    }

    /// Appends `rows` and records the last offset of each partition in the same commit.
    pub async fn append(&mut self, rows: &[DeadLetter]) -> Result<(), DeltaTableError> {
        let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
        for r in rows {
            let o = offsets.entry(r.dlq_partition).or_insert(r.dlq_offset);
            *o = (*o).max(r.dlq_offset);
        }
        let batch = to_record_batch(rows).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        let txns = offsets
            .iter()
            .map(|(&p, &o)| Transaction::new(app_id(p), o))
            .collect();
        self.table = self
            .table
            .clone()
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(CommitProperties::default().with_application_transactions(txns))
            .await?;
        Ok(())
    }
}

/// Appends `rows` to `dead_letter_replays` (creating it).
pub async fn record_replays(cfg: &Config, rows: &[Replayed]) -> Result<(), DeltaTableError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut table = open_table(cfg, REPLAYS_TABLE).await?;
    match table.load().await {
        Ok(()) | Err(DeltaTableError::NotATable(_)) => {}
        Err(e) => return Err(e),
    }
    let batch = replays_batch(rows).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: i64) -> DeadLetter {
        DeadLetter::from_message(0, offset, b"{\"x\":1}", |k| {
            Some(
                match k {
                    "strata.reason" => "too_many_tags",
                    "strata.topic" => "metrics-events",
                    "strata.partition" => "3",
                    "strata.offset" => "17",
                    "strata.rejected_at" => "1700000000000",
                    "strata.service" => "strata-speed",
                    _ => return None,
                }
                .to_owned(),
            )
        })
    }

    #[test]
    fn headers_become_columns_and_rows_survive_arrow() {
        let rows = vec![letter(5), letter(6)];
        assert_eq!(rows[0].origin_partition, 3);
        assert_eq!(rows[0].error, "");
        let back = from_record_batch(&to_record_batch(&rows).unwrap()).unwrap();
        assert_eq!(back, rows);
    }

    #[test]
    fn missing_headers_are_empty_not_an_error() {
        let d = DeadLetter::from_message(2, 9, b"", |_| None);
        assert_eq!(
            (d.origin_partition, d.origin_offset, d.rejected_at_ms),
            (-1, -1, 0)
        );
        assert_eq!(d.key(), "2:9");
    }

    #[tokio::test]
    async fn a_commit_stores_the_last_offset_of_each_partition() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.lake.url = dir.path().display().to_string();
        let mut t = DeadLetterTable::open(&cfg).await.unwrap();
        assert!(t.stored_offsets(&[0]).await.unwrap().is_empty());
        t.append(&[letter(5), letter(7)]).await.unwrap();
        let mut again = DeadLetterTable::open(&cfg).await.unwrap();
        assert_eq!(
            again.stored_offsets(&[0, 1]).await.unwrap(),
            BTreeMap::from([(0, 7)])
        );
    }
}
