//! Backfill: MetricEvents from JSON Lines or Parquet files into the archive, through the same
//! validation as the Kafka path.
//!
//! JSON Lines: one event per line, exactly as on the topic. Parquet: columns `event_id`,
//! `metric_name`, `value`, `timestamp_ms`, optional `tags` (map of strings) and `source`.
//! Imported rows carry `kafka_partition = -1` (and a running `kafka_offset`); importing a file
//! twice stores its events twice, and the recompute's deduplication by `event_id` counts them
//! once. Each commit lists the event hours it touched, so the scheduler recomputes them.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use strata_shared::validate::{check_message, validate};
use strata_shared::{Config, MetricEvent};

use crate::archive::schema::ArchivedEvent;
use crate::archive::writer::Archive;

/// Kafka partition number recorded for imported rows.
pub const IMPORT_PARTITION: i32 = -1;
const COMMIT_EVERY: usize = 200_000;

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file could not be read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The archive could not be written.
    #[error("lake: {0}")]
    Lake(#[from] deltalake::DeltaTableError),
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Events archived.
    pub imported: u64,
    /// Refused events by reason code.
    pub refused: BTreeMap<String, u64>,
    /// The first refusals, as `file:line: reason`.
    pub examples: Vec<String>,
}

impl Report {
    fn refuse(&mut self, at: String, reason: &strata_shared::Reject) {
        *self.refused.entry(reason.code().to_owned()).or_default() += 1;
        if self.examples.len() < 10 {
            self.examples.push(format!("{at}: {reason}"));
        }
    }
}

struct Sink<'a> {
    archive: &'a mut Archive,
    pending: Vec<ArchivedEvent>,
    next_offset: i64,
}

impl Sink<'_> {
    async fn push(&mut self, event: MetricEvent) -> Result<(), ImportError> {
        self.pending.push(ArchivedEvent {
            event,
            partition: IMPORT_PARTITION,
            offset: self.next_offset,
        });
        self.next_offset += 1;
        if self.pending.len() >= COMMIT_EVERY {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ImportError> {
        if !self.pending.is_empty() {
            self.archive.append(&self.pending, &BTreeMap::new()).await?;
            self.pending.clear();
        }
        Ok(())
    }
}

/// Imports every file (`.parquet` by extension, JSON Lines otherwise), validating as of `now_ms`.
pub async fn import(cfg: &Config, files: &[&Path], now_ms: i64) -> Result<Report, ImportError> {
    let mut archive = Archive::open(cfg).await?;
    let mut sink = Sink {
        archive: &mut archive,
        pending: Vec::new(),
        next_offset: now_ms,
    };
    let mut report = Report::default();
    for path in files {
        let shown = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| ImportError::File {
            path: shown.clone(),
            message: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(|e| err(&e))?;
        if path.extension().is_some_and(|x| x == "parquet") {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| err(&e))?
                .build()
                .map_err(|e| err(&e))?;
            let mut row = 0usize;
            for batch in reader {
                let batch = batch.map_err(|e| err(&e))?;
                for event in events_of(&batch).map_err(|e| err(&e))? {
                    row += 1;
                    match validate(&event, &cfg.validation, now_ms) {
                        Ok(()) => {
                            report.imported += 1;
                            sink.push(event).await?;
                        }
                        Err(r) => report.refuse(format!("{shown}:row {row}"), &r),
                    }
                }
            }
        } else {
            // Lines as bytes: a line that is not UTF-8 is a refused message (its reason says
            // so), not the end of the import.
            for (i, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
                let mut line = line.map_err(|e| err(&e))?;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match check_message(Some(&line), &cfg.validation, now_ms) {
                    Ok(d) => {
                        report.imported += 1;
                        sink.push(d.event).await?;
                    }
                    Err(r) => report.refuse(format!("{shown}:{}", i + 1), &r),
                }
            }
        }
    }
    sink.flush().await?;
    Ok(report)
}

/// MetricEvents of a Parquet batch with the MetricEvent columns.
fn events_of(batch: &RecordBatch) -> Result<Vec<MetricEvent>, String> {
    let column = |name: &str, ty: &DataType| -> Result<Option<arrow::array::ArrayRef>, String> {
        match batch.column_by_name(name) {
            Some(c) => cast(c, ty)
                .map(Some)
                .map_err(|e| format!("column {name}: {e}")),
            None => Ok(None),
        }
    };
    let required = |name: &str, ty: &DataType| {
        column(name, ty)?.ok_or_else(|| format!("missing column {name}"))
    };
    let ids = required("event_id", &DataType::Utf8)?;
    let names = required("metric_name", &DataType::Utf8)?;
    let values = required("value", &DataType::Float64)?;
    let times = required("timestamp_ms", &DataType::Int64)?;
    let sources = column("source", &DataType::Utf8)?;
    let tags = batch.column_by_name("tags");
    let (ids, names) = (ids.as_string::<i32>(), names.as_string::<i32>());
    let (values, times) = (
        values.as_primitive::<Float64Type>(),
        times.as_primitive::<Int64Type>(),
    );
    let mut out = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let mut e = MetricEvent::new(
            ids.value(r),
            names.value(r),
            values.value(r),
            times.value(r),
        );
        if let Some(s) = &sources {
            let s = s.as_string::<i32>();
            if !s.is_null(r) {
                e.source = s.value(r).to_owned();
            }
        }
        if let Some(t) = tags.and_then(|t| t.as_map_opt()) {
            if !t.is_null(r) {
                let entry = t.value(r);
                let keys = cast(entry.column(0), &DataType::Utf8).map_err(|e| e.to_string())?;
                let vals = cast(entry.column(1), &DataType::Utf8).map_err(|e| e.to_string())?;
                let (keys, vals) = (keys.as_string::<i32>(), vals.as_string::<i32>());
                for j in 0..keys.len() {
                    e.tags
                        .insert(keys.value(j).to_owned(), vals.value(j).to_owned());
                }
            }
        }
        out.push(e);
    }
    Ok(out)
}
