//! Deduplication of a range's events: `sql/datafusion/dedup.sql` reads the range (event_id,
//! Kafka position, series, value, timestamp); here each event_id is kept once — its first copy
//! in Kafka order, (partition, offset) — and the kept rows' series_id, value and timestamp_ms
//! become the in-memory table `deduped` that every tier reads.
//!
//! Rows are matched by an xxh64 digest of event_id in a hash map of integers; when two rows share
//! a digest their event_ids are compared, so a digest collision between different ids never
//! drops an event (such a row is matched by its full id instead). This replaced a SQL
//! `GROUP BY event_id` with three ordered `first_value`s, which hashed and grouped every id as
//! a string and kept three orderings per group.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use strata_shared::digest::DigestMap;
use xxhash_rust::xxh64::xxh64;

use super::RecomputeError;

/// The columns `dedup.sql` returns, in order.
const READ: [&str; 6] = [
    "event_id",
    "kafka_partition",
    "kafka_offset",
    "series_id",
    "value",
    "timestamp_ms",
];

/// The schema of `deduped`.
pub fn deduped_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("timestamp_ms", DataType::Int64, false),
    ]))
}

/// Where a row is: (batch, row).
type At = (u32, u32);

/// The kept copy of each event_id among `batches` (the rows of `dedup.sql`), as the table
/// `deduped` in `partitions` partitions (so that the tiers' aggregations run in parallel).
pub fn deduplicate(batches: &[RecordBatch], partitions: usize) -> Result<MemTable, RecomputeError> {
    Ok(MemTable::try_new(
        deduped_schema(),
        kept_rows(batches, partitions)?,
    )?)
}

/// The kept rows, projected to [`deduped_schema`], dealt round-robin into `partitions`.
fn kept_rows(
    batches: &[RecordBatch],
    partitions: usize,
) -> Result<Vec<Vec<RecordBatch>>, RecomputeError> {
    let keep = first_copies(batches, |id| xxh64(id, 0))?;
    let schema = deduped_schema();
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions.max(1)];
    let n = parts.len();
    for (i, (b, keep)) in batches.iter().zip(keep).enumerate() {
        let kept = filter_record_batch(b, &BooleanArray::from(keep))?;
        let columns: Vec<ArrayRef> = READ[3..]
            .iter()
            .map(|name| column(&kept, name))
            .collect::<Result<_, _>>()?;
        let out = RecordBatch::try_new(schema.clone(), columns)?;
        if out.num_rows() > 0 {
            parts[i % n].push(out);
        }
    }
    Ok(parts)
}

/// Per batch, per row: whether the row is the first copy of its event_id in Kafka order;
/// `digest` hashes an event_id (xxh64; a test passes a colliding one).
fn first_copies(
    batches: &[RecordBatch],
    digest: impl Fn(&[u8]) -> u64,
) -> Result<Vec<Vec<bool>>, RecomputeError> {
    let ids: Vec<StringArray> = batches
        .iter()
        .map(|b| {
            let c = column(b, "event_id")?;
            Ok(arrow::compute::cast(&c, &DataType::Utf8)?
                .as_string::<i32>()
                .clone())
        })
        .collect::<Result<_, RecomputeError>>()?;
    let position = |b: &RecordBatch| -> Result<(ArrayRef, ArrayRef), RecomputeError> {
        Ok((
            arrow::compute::cast(&column(b, "kafka_partition")?, &DataType::Int32)?,
            arrow::compute::cast(&column(b, "kafka_offset")?, &DataType::Int64)?,
        ))
    };
    let positions: Vec<(ArrayRef, ArrayRef)> =
        batches.iter().map(position).collect::<Result<_, _>>()?;
    let kafka_order = |(b, r): At| {
        let (p, o) = &positions[b as usize];
        (
            p.as_primitive::<Int32Type>().value(r as usize),
            o.as_primitive::<Int64Type>().value(r as usize),
        )
    };
    let id = |(b, r): At| ids[b as usize].value(r as usize);

    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut by_digest: DigestMap<At> =
        DigestMap::with_capacity_and_hasher(rows, Default::default());
    // Ids whose digest is taken by a different id: matched by the id itself (practically empty).
    let mut by_id: HashMap<&str, At> = HashMap::new();
    let mut keep: Vec<Vec<bool>> = batches.iter().map(|b| vec![true; b.num_rows()]).collect();
    for (b, ids_of_batch) in ids.iter().enumerate() {
        for r in 0..ids_of_batch.len() {
            let at = (b as u32, r as u32);
            let this = ids_of_batch.value(r);
            let slot = match by_digest.entry(digest(this.as_bytes())) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(at);
                    continue;
                }
                std::collections::hash_map::Entry::Occupied(o) if id(*o.get()) == this => {
                    o.into_mut()
                }
                std::collections::hash_map::Entry::Occupied(_) => match by_id.entry(this) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(at);
                        continue;
                    }
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                },
            };
            // A second copy: the one earlier in Kafka order stays.
            let (loser, winner) = if kafka_order(at) < kafka_order(*slot) {
                (*slot, at)
            } else {
                (at, *slot)
            };
            keep[loser.0 as usize][loser.1 as usize] = false;
            *slot = winner;
        }
    }
    Ok(keep)
}

fn column(b: &RecordBatch, name: &str) -> Result<ArrayRef, RecomputeError> {
    b.column_by_name(name).cloned().ok_or_else(|| {
        RecomputeError::Arrow(arrow::error::ArrowError::SchemaError(format!(
            "dedup.sql returned no column {name}"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array, Int64Array};

    fn read_batch(rows: &[(&str, i32, i64, f64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(
            READ.iter()
                .zip([
                    DataType::Utf8,
                    DataType::Int32,
                    DataType::Int64,
                    DataType::Int64,
                    DataType::Float64,
                    DataType::Int64,
                ])
                .map(|(n, t)| Field::new(*n, t, false))
                .collect::<Vec<_>>(),
        ));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int32Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(vec![1; rows.len()])),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(vec![0; rows.len()])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_first_copy_in_kafka_order_stays_wherever_it_is_read() {
        // "a" three times: the copy at (0, 5) is first in Kafka order although read last.
        let batches = [
            read_batch(&[("a", 1, 2, 10.0), ("b", 0, 1, 20.0), ("a", 0, 9, 11.0)]),
            read_batch(&[("c", 2, 0, 30.0), ("a", 0, 5, 12.0), ("b", 0, 3, 21.0)]),
        ];
        let keep = first_copies(&batches, |id| xxh64(id, 0)).unwrap();
        assert_eq!(
            keep,
            vec![vec![false, true, false], vec![true, true, false]]
        );
        let parts = kept_rows(&batches, 2).unwrap();
        let values: Vec<Vec<f64>> = parts
            .iter()
            .map(|p| {
                p.iter()
                    .flat_map(|b| {
                        b.column(1)
                            .as_primitive::<arrow::datatypes::Float64Type>()
                            .values()
                            .to_vec()
                    })
                    .collect()
            })
            .collect();
        assert_eq!(values, vec![vec![20.0], vec![30.0, 12.0]]);
        assert_eq!(parts[0][0].schema(), deduped_schema());
    }

    #[test]
    fn ids_sharing_a_digest_are_told_apart() {
        // Every id gets the same digest: different ids are all kept, copies of each removed.
        let batches = [read_batch(&[
            ("x", 0, 1, 1.0),
            ("y", 0, 2, 2.0),
            ("x", 0, 3, 3.0),
            ("y", 0, 0, 4.0),
        ])];
        let keep = first_copies(&batches, |_| 7).unwrap();
        assert_eq!(keep, vec![vec![true, false, false, true]]);
    }
}
