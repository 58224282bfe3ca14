//! Unit tests of `block`.

use super::*;
use arrow::array::{Float64Array, Int64Array, ListArray, MapBuilder, StringArray, StringBuilder};
use arrow::datatypes::{Field, Schema};

fn batch(rows: &[(i64, i64, i64)], with_quantiles: bool, with_labels: bool) -> RecordBatch {
    let mut fields = vec![
        Field::new("series_id", DataType::Int64, false),
        Field::new("start_ms", DataType::Int64, false),
        Field::new("count", DataType::Int64, false),
        Field::new("sum", DataType::Float64, false),
        Field::new("min", DataType::Float64, false),
        Field::new("max", DataType::Float64, false),
    ];
    let n = rows.len();
    let mut cols: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.2 as f64 * 2.0),
        )),
        Arc::new(Float64Array::from(vec![1.0; n])),
        Arc::new(Float64Array::from(vec![3.0; n])),
    ];
    if with_quantiles {
        for q in ["p50", "p90", "p95", "p99"] {
            fields.push(Field::new(q, DataType::Float64, false));
            cols.push(Arc::new(Float64Array::from(vec![2.0; n])));
        }
        let keys = ListArray::from_iter_primitive::<Int32Type, _, _>(
            rows.iter()
                .map(|r| Some(vec![Some(strata_shared::sketch::key(2.0)); r.2 as usize])),
        );
        let counts = ListArray::from_iter_primitive::<Int64Type, _, _>(
            rows.iter().map(|r| Some(vec![Some(1i64); r.2 as usize])),
        );
        fields.push(Field::new("sketch_keys", keys.data_type().clone(), true));
        fields.push(Field::new(
            "sketch_counts",
            counts.data_type().clone(),
            true,
        ));
        cols.push(Arc::new(keys));
        cols.push(Arc::new(counts));
    }
    if with_labels {
        fields.push(Field::new("metric_name", DataType::Utf8, false));
        fields.push(Field::new("source", DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from(vec!["m"; n])));
        cols.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| format!("s{}", r.0)),
        )));
        let mut tags = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for r in rows {
            tags.keys().append_value("k");
            tags.values().append_value(format!("v{}", r.0));
            tags.append(true).unwrap();
        }
        let tags = tags.finish();
        fields.push(Field::new("tags", tags.data_type().clone(), true));
        cols.push(Arc::new(tags));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

#[test]
fn rows_are_found_per_series_and_range_whatever_the_input_order() {
    let m = 60_000;
    // Ids past i64::MAX are stored negative; they must still be found.
    let big = -5i64;
    let b1 = batch(
        &[(9, 2 * m, 1), (big, 0, 7), (3, m, 2), (9, 0, 3)],
        false,
        true,
    );
    let b2 = batch(&[(3, 0, 4), (9, m, 5)], false, true);
    let rows = Rows::from_batches(&[b1, b2]).unwrap();
    assert_eq!(rows.len(), 6);
    let mut out = Vec::new();
    rows.buckets(big as u64, (0, m), m, false, &mut out);
    assert_eq!(out.len(), 1, "a u64 id above i64::MAX");
    out.clear();
    let mut out = Vec::new();
    rows.buckets(9, (0, 3 * m), m, false, &mut out);
    let got: Vec<(i64, u64)> = out.iter().map(|b| (b.end_ms, b.count)).collect();
    assert_eq!(got, vec![(m, 3), (2 * m, 5), (3 * m, 1)]);
    out.clear();
    rows.buckets(9, (m, 2 * m), m, false, &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].quantiles[0].is_nan() && out[0].sketch.is_none());
    out.clear();
    rows.buckets(4, (0, 3 * m), m, false, &mut out);
    assert!(out.is_empty(), "an unknown series has no rows");
    let s: Vec<(u64, String)> = rows
        .series_in(2 * m, 3 * m)
        .iter()
        .map(|s| (s.series_id, s.tags["k"].clone()))
        .collect();
    assert_eq!(s, vec![(9, "v9".to_owned())]);
    assert_eq!(rows.series_in(0, m).len(), 3);
}

#[test]
fn quantile_blocks_give_sketches_and_weigh_more() {
    let rows_q = Rows::from_batches(&[batch(&[(1, 0, 3), (2, 0, 1)], true, false)]).unwrap();
    let rows_t = Rows::from_batches(&[batch(&[(1, 0, 3), (2, 0, 1)], false, false)]).unwrap();
    assert!(rows_q.has_quantiles() && !rows_t.has_quantiles());
    let mut out = Vec::new();
    rows_q.buckets(1, (0, 60_000), 60_000, true, &mut out);
    assert_eq!(out[0].quantiles, [2.0; 4]);
    assert_eq!(out[0].sketch.as_ref().unwrap().count(), 3);
    assert!(Block::Rows(rows_q).weight() > Block::Rows(rows_t).weight());
}

#[test]
fn names_know_their_hours() {
    let h = 3_600_000;
    let schema = Arc::new(Schema::new(vec![
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("start_ms", DataType::Int64, false),
    ]));
    let day = 10 * 24 * h;
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["a", "b", "a"])),
            Arc::new(Int64Array::from(vec![day, day + 5 * h, day + 23 * h])),
        ],
    )
    .unwrap();
    let n = Names::from_batches(day, &[b]).unwrap();
    assert_eq!(n.hours["a"], 1 | 1 << 23);
    assert_eq!(n.in_hours(1 << 5).collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(n.in_hours(!0).count(), 2);
    assert_eq!(n.in_hours(1 << 7).count(), 0);
}

#[test]
fn rows_merged_into_windows_aggregate_as_the_rows_do() {
    use crate::window::{aggregate, Need};
    let m = 60_000;
    // Series 1: minutes 0..7 with different sketches; windows of 3 minutes from point 2m.
    let rows: Vec<(i64, i64, i64)> = (0..7).map(|i| (1, i * m, i + 1)).collect();
    let b = batch(&rows, true, false);
    let rows = Rows::from_batches(&[b]).unwrap();
    for need in [Need::Quantiles, Need::Totals] {
        let q = need == Need::Quantiles;
        let mut minutes = Vec::new();
        rows.buckets(1, (0, 7 * m), m, q, &mut minutes);
        let mut merged = Vec::new();
        rows.windows(1, (0, 7 * m), m, (2 * m, 3 * m), q, &mut merged);
        // Windows ending at 2m (minutes 0, 1), 5m (2, 3, 4), 8m (5, 6).
        let ends: Vec<i64> = merged.iter().map(|b| b.end_ms).collect();
        assert_eq!(ends, vec![2 * m, 5 * m, 8 * m]);
        for t in [2 * m, 5 * m, 8 * m] {
            let of = |bs: &[Bucket]| {
                let w: Vec<&Bucket> = bs
                    .iter()
                    .filter(|b| b.end_ms > t - 3 * m && b.end_ms <= t)
                    .collect();
                aggregate(&w, need).unwrap()
            };
            let (a, b) = (of(&minutes), of(&merged));
            assert_eq!(
                (a.count, a.sum, a.min, a.max),
                (b.count, b.sum, b.min, b.max)
            );
            for (x, y) in a.quantiles.iter().zip(b.quantiles) {
                assert!(x.to_bits() == y.to_bits(), "window {t}: {a:?} vs {b:?}");
            }
        }
    }
    // A grid no coarser than the rows gives the rows.
    let mut same = Vec::new();
    rows.windows(1, (0, 7 * m), m, (0, m), false, &mut same);
    assert_eq!(same.len(), 7);
}
