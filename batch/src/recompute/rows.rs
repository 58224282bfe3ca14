//! A tier's rows as the commit writes them: the aggregate's columns (`rollup.sql`) sorted by
//! (metric_name, hour of start_ms, series_id, start_ms), with each series' labels
//! (`labels.sql`: metric_name, source, tags) attached *after* sorting. Gathering the few label
//! rows per series is cheap; gathering a day's 7.16M minute rows with a map of tags each, in
//! hash-aggregation order, took most of the commit.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat_batches, take, take_record_batch};
use arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};

use super::{RecomputeError, HOUR_MS};

/// The label columns, in the order they follow `start_ms` in a rollup table.
const LABELS: [&str; 3] = ["metric_name", "source", "tags"];

/// The rollup rows: `stats` (schema `stats_schema`, series_id and start_ms first) sorted, with
/// the label columns of `labels` (one row per series) inserted after start_ms.
pub fn assemble(
    stats_schema: &SchemaRef,
    stats: &[RecordBatch],
    labels: &RecordBatch,
) -> Result<RecordBatch, RecomputeError> {
    let schema = table_schema(stats_schema, labels)?;
    let all = concat_batches(stats_schema, stats)?;
    if all.num_rows() == 0 {
        return Ok(RecordBatch::new_empty(schema));
    }
    let int64 = |b: &RecordBatch, name: &str| -> Result<ArrayRef, RecomputeError> {
        Ok(cast(&column(b, name)?, &DataType::Int64)?)
    };
    // Each series' label row, and each label row's metric name's rank.
    let label_series = int64(labels, "series_id")?;
    let label_series = label_series.as_primitive::<Int64Type>();
    let row_of: HashMap<i64, u32> = (0..labels.num_rows())
        .map(|r| (label_series.value(r), r as u32))
        .collect();
    let names = cast(&column(labels, "metric_name")?, &DataType::Utf8)?;
    let names = names.as_string::<i32>();
    let name_of = |r: usize| {
        if names.is_valid(r) {
            names.value(r)
        } else {
            ""
        }
    };
    let mut distinct: Vec<&str> = (0..labels.num_rows()).map(name_of).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let rank: Vec<u32> = (0..labels.num_rows())
        .map(|r| distinct.binary_search(&name_of(r)).unwrap_or(0) as u32)
        .collect();

    let series = int64(&all, "series_id")?;
    let series = series.as_primitive::<Int64Type>();
    let start = int64(&all, "start_ms")?;
    let start = start.as_primitive::<Int64Type>();
    let mut keys = Vec::with_capacity(all.num_rows());
    for i in 0..all.num_rows() {
        let s = series.value(i);
        let label_row = *row_of.get(&s).ok_or_else(|| {
            RecomputeError::Range(format!("series {s} has rows but no labels in the range"))
        })?;
        let t = start.value(i);
        keys.push((
            rank[label_row as usize],
            t.div_euclid(HOUR_MS),
            s,
            t,
            i as u32,
            label_row,
        ));
    }
    keys.sort_unstable();
    let order = UInt32Array::from_iter_values(keys.iter().map(|k| k.4));
    let label_rows = UInt32Array::from_iter_values(keys.iter().map(|k| k.5));
    let sorted = take_record_batch(&all, &order)?;
    let mut columns: Vec<ArrayRef> = sorted.columns().to_vec();
    for (at, name) in LABELS.iter().enumerate() {
        columns.insert(2 + at, take(&column(labels, name)?, &label_rows, None)?);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `stats_schema` with the label fields of `labels` inserted after start_ms.
fn table_schema(
    stats_schema: &SchemaRef,
    labels: &RecordBatch,
) -> Result<SchemaRef, RecomputeError> {
    let mut fields: Vec<_> = stats_schema.fields().iter().cloned().collect();
    for (at, name) in LABELS.iter().enumerate() {
        let field = labels.schema().field_with_name(name)?.clone();
        fields.insert(2 + at, Arc::new(field));
    }
    Ok(Arc::new(Schema::new(fields)))
}

fn column(b: &RecordBatch, name: &str) -> Result<ArrayRef, RecomputeError> {
    b.column_by_name(name)
        .cloned()
        .ok_or_else(|| RecomputeError::Range(format!("rollup rows have no column {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;

    #[test]
    fn rows_are_sorted_and_get_their_series_labels() {
        let h = HOUR_MS;
        let stats_schema = Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::Int64, false),
            Field::new("start_ms", DataType::Int64, false),
            Field::new("count", DataType::Int64, false),
        ]));
        let stats = RecordBatch::try_new(
            stats_schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![2, 1, 3, 1, 2])),
                Arc::new(Int64Array::from(vec![h, h, 0, 0, 0])),
                Arc::new(Int64Array::from(vec![10, 11, 12, 13, 14])),
            ],
        )
        .unwrap();
        // Series 3 belongs to metric "a", 1 and 2 to "b".
        let labels = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("series_id", DataType::Int64, false),
                Field::new("metric_name", DataType::Utf8, false),
                Field::new("source", DataType::Utf8, true),
                Field::new("tags", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["b", "b", "a"])),
                Arc::new(StringArray::from(vec!["s1", "s2", "s3"])),
                Arc::new(StringArray::from(vec!["t1", "t2", "t3"])),
            ],
        )
        .unwrap();
        let out = assemble(
            &stats_schema,
            &[stats.slice(0, 2), stats.slice(2, 3)],
            &labels,
        )
        .unwrap();
        let schema = out.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "series_id",
                "start_ms",
                "metric_name",
                "source",
                "tags",
                "count"
            ]
        );
        let ints = |c: usize| out.column(c).as_primitive::<Int64Type>().values().to_vec();
        let strs = |c: usize| {
            (0..out.num_rows())
                .map(|r| out.column(c).as_string::<i32>().value(r).to_owned())
                .collect::<Vec<_>>()
        };
        // metric a first; then b by hour, series, start.
        assert_eq!(ints(0), [3, 1, 2, 1, 2]);
        assert_eq!(ints(1), [0, 0, 0, h, h]);
        assert_eq!(ints(5), [12, 13, 14, 11, 10]);
        assert_eq!(strs(2), ["a", "b", "b", "b", "b"]);
        assert_eq!(strs(3), ["s3", "s1", "s2", "s1", "s2"]);
    }

    #[test]
    fn a_series_without_labels_is_an_error_not_a_silent_row() {
        let stats_schema = Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::Int64, false),
            Field::new("start_ms", DataType::Int64, false),
        ]));
        let stats = RecordBatch::try_new(
            stats_schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![9])),
                Arc::new(Int64Array::from(vec![0])),
            ],
        )
        .unwrap();
        let labels = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("series_id", DataType::Int64, false),
                Field::new("metric_name", DataType::Utf8, false),
                Field::new("source", DataType::Utf8, true),
                Field::new("tags", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["m"])),
                Arc::new(StringArray::from(vec!["s"])),
                Arc::new(StringArray::from(vec!["t"])),
            ],
        )
        .unwrap();
        assert!(assemble(&stats_schema, &[stats], &labels).is_err());
    }
}
