//! Folds the (series, bucket, key, count) rows of `sketch.sql` into the list columns
//! `sketch_keys` and `sketch_counts` of a tier's rows. Both inputs are ordered by
//! (series_id, start_ms), so one pass pairs them, whatever the number of buckets.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Builder, Int64Builder, ListBuilder, RecordBatch,
};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema};
use arrow::error::ArrowError;

/// The tier's rows with `sketch_keys` and `sketch_counts` inserted before `event_date`.
pub fn attach(
    stats: Vec<RecordBatch>,
    sketches: &[RecordBatch],
) -> Result<Vec<RecordBatch>, ArrowError> {
    let col = |b: &RecordBatch, name: &str, t: &DataType| -> Result<ArrayRef, ArrowError> {
        let c = b
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))?;
        cast(c, t)
    };
    let (sk_sid, sk_start, sk_key, sk_n) = match sketches.first() {
        Some(first) => {
            let all = concat_batches(&first.schema(), sketches)?;
            (
                col(&all, "series_id", &DataType::Int64)?,
                col(&all, "start_ms", &DataType::Int64)?,
                col(&all, "key", &DataType::Int32)?,
                col(&all, "n", &DataType::Int64)?,
            )
        }
        None => {
            let empty = |t: &DataType| arrow::array::new_empty_array(t);
            (
                empty(&DataType::Int64),
                empty(&DataType::Int64),
                empty(&DataType::Int32),
                empty(&DataType::Int64),
            )
        }
    };
    let (sk_sid, sk_start) = (
        sk_sid.as_primitive::<Int64Type>(),
        sk_start.as_primitive::<Int64Type>(),
    );
    let (sk_key, sk_n) = (
        sk_key.as_primitive::<Int32Type>(),
        sk_n.as_primitive::<Int64Type>(),
    );
    let mut at = 0usize;
    let mut out = Vec::with_capacity(stats.len());
    for b in stats {
        let sid = col(&b, "series_id", &DataType::Int64)?;
        let start = col(&b, "start_ms", &DataType::Int64)?;
        let (sid, start) = (
            sid.as_primitive::<Int64Type>(),
            start.as_primitive::<Int64Type>(),
        );
        let mut keys = ListBuilder::new(Int32Builder::new());
        let mut counts = ListBuilder::new(Int64Builder::new());
        for r in 0..b.num_rows() {
            let row = (sid.value(r), start.value(r));
            while at < sk_sid.len() && (sk_sid.value(at), sk_start.value(at)) < row {
                at += 1; // a bucket without stats cannot happen; skip defensively
            }
            while at < sk_sid.len() && (sk_sid.value(at), sk_start.value(at)) == row {
                keys.values().append_value(sk_key.value(at));
                counts.values().append_value(sk_n.value(at));
                at += 1;
            }
            keys.append(true);
            counts.append(true);
        }
        let (keys, counts): (ArrayRef, ArrayRef) =
            (Arc::new(keys.finish()), Arc::new(counts.finish()));
        let schema = b.schema();
        let date_at = schema.index_of("event_date")?;
        let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
        let mut columns: Vec<ArrayRef> = b.columns().to_vec();
        fields.insert(
            date_at,
            Arc::new(Field::new(
                "sketch_counts",
                counts.data_type().clone(),
                true,
            )),
        );
        columns.insert(date_at, counts);
        fields.insert(
            date_at,
            Arc::new(Field::new("sketch_keys", keys.data_type().clone(), true)),
        );
        columns.insert(date_at, keys);
        out.push(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};

    #[test]
    fn each_row_gets_its_own_buckets() {
        let stats_schema = Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::Int64, false),
            Field::new("start_ms", DataType::Int64, false),
            Field::new("event_date", DataType::Utf8, false),
        ]));
        let stats = RecordBatch::try_new(
            stats_schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 1, 2])),
                Arc::new(Int64Array::from(vec![0, 60, 0])),
                Arc::new(StringArray::from(vec!["d", "d", "d"])),
            ],
        )
        .unwrap();
        let sk_schema = Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::Int64, false),
            Field::new("start_ms", DataType::Int64, false),
            Field::new("key", DataType::Int32, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let sk = RecordBatch::try_new(
            sk_schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 1, 1, 2])),
                Arc::new(Int64Array::from(vec![0, 0, 60, 0])),
                Arc::new(Int32Array::from(vec![5, 7, 5, 0])),
                Arc::new(Int64Array::from(vec![2, 1, 4, 9])),
            ],
        )
        .unwrap();
        let out = attach(vec![stats], &[sk]).unwrap();
        let b = &out[0];
        assert_eq!(
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>(),
            vec![
                "series_id",
                "start_ms",
                "sketch_keys",
                "sketch_counts",
                "event_date"
            ]
        );
        let keys = b.column(2).as_list::<i32>();
        let counts = b.column(3).as_list::<i32>();
        let row = |r: usize| {
            (
                keys.value(r).as_primitive::<Int32Type>().values().to_vec(),
                counts
                    .value(r)
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec(),
            )
        };
        assert_eq!(row(0), (vec![5, 7], vec![2, 1]));
        assert_eq!(row(1), (vec![5], vec![4]));
        assert_eq!(row(2), (vec![0], vec![9]));
    }
}
