//! Unit tests of the commit's row order and label attachment.

use super::*;
use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{Field, Schema};
use std::sync::Arc;

#[test]
fn rows_are_sorted_by_metric_hour_series_and_start() {
    let h = HOUR_MS;
    // (metric, start, series): by hour first, then series, then start within the hour.
    let rows = [
        ("b", 0, 1),
        ("a", h + 60_000, 1),
        ("a", h, 2),
        ("a", 0, 9),
        ("a", -h, 5),
        ("a", h, -3),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("start_ms", DataType::Int64, false),
        Field::new("series_id", DataType::Int64, false),
    ]));
    let batch = |r: &[(&str, i64, i64)]| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(r.iter().map(|x| x.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(r.iter().map(|x| x.1).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(r.iter().map(|x| x.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    };
    let all_hours = [-h, 0, h];
    let sorted = sorted_rows(&[batch(&rows[..2]), batch(&rows[2..])], &all_hours)
        .unwrap()
        .to_batch()
        .unwrap();
    let got: Vec<(String, i64, i64)> = (0..sorted.num_rows())
        .map(|i| {
            (
                sorted.column(0).as_string::<i32>().value(i).to_owned(),
                sorted.column(1).as_primitive::<Int64Type>().value(i),
                sorted.column(2).as_primitive::<Int64Type>().value(i),
            )
        })
        .collect();
    let want = [
        ("a", -h, 5),
        ("a", 0, 9),
        ("a", h, -3),
        ("a", h + 60_000, 1),
        ("a", h, 2),
        ("b", 0, 1),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(m, t, s)| (m.to_string(), *t, *s))
            .collect::<Vec<_>>()
    );
}

#[test]
fn only_the_written_hours_rows_are_kept() {
    let h = HOUR_MS;
    let schema = Arc::new(Schema::new(vec![
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("start_ms", DataType::Int64, false),
        Field::new("series_id", DataType::Int64, false),
    ]));
    let rows = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["a", "a", "a", "b"])),
            Arc::new(Int64Array::from(vec![0, h + 60_000, 2 * h, 2 * h + 1])),
            Arc::new(Int64Array::from(vec![1, 1, 1, 2])),
        ],
    )
    .unwrap();
    let kept = sorted_rows(std::slice::from_ref(&rows), &[0, 2 * h])
        .unwrap()
        .to_batch()
        .unwrap();
    let starts = kept.column(1).as_primitive::<Int64Type>();
    assert_eq!(starts.values().to_vec(), vec![0, 2 * h, 2 * h + 1]);
    let none = sorted_rows(&[rows], &[5 * h]).unwrap().to_batch().unwrap();
    assert_eq!(none.num_rows(), 0);
}

/// Unlabelled rows (series, start, count) and labels (series, metric, source, tags-less stand-in).
#[test]
fn labels_are_attached_in_the_order_of_their_metric() {
    let h = HOUR_MS;
    let rows_schema = Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::Int64, false),
        Field::new("start_ms", DataType::Int64, false),
        Field::new("count", DataType::Int64, false),
    ]));
    let rows = |r: &[(i64, i64, i64)]| {
        RecordBatch::try_new(
            rows_schema.clone(),
            vec![
                Arc::new(Int64Array::from(r.iter().map(|x| x.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(r.iter().map(|x| x.1).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(r.iter().map(|x| x.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    };
    let labels = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::Int64, false),
            Field::new("metric_name", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("tags", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![7, 3, 5])),
            Arc::new(StringArray::from(vec!["b", "a", "a"])),
            Arc::new(StringArray::from(vec!["s7", "s3", "s5"])),
            Arc::new(StringArray::from(vec!["t7", "t3", "t5"])),
        ],
    )
    .unwrap();
    let batches = [
        rows(&[(7, 0, 1), (5, h, 2), (3, 0, 3)]),
        rows(&[(5, 0, 4), (3, h, 5), (7, 2 * h, 6)]),
    ];
    let all = TierRows::Unlabelled {
        rows: &batches,
        labels: &labels,
    };
    let out = all.sorted(&[0, h]).unwrap().to_batch().unwrap();
    // Built a chunk at a time, the same rows.
    let sorted = all.sorted(&[0, h]).unwrap();
    let parts = [sorted.chunk(0..2).unwrap(), sorted.chunk(2..5).unwrap()];
    assert_eq!(
        arrow::compute::concat_batches(&out.schema(), &parts).unwrap(),
        out
    );
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
    let col = |i: usize| -> Vec<String> {
        let c = cast(out.column(i), &DataType::Utf8).unwrap();
        c.as_string::<i32>()
            .iter()
            .map(|v| v.unwrap().to_owned())
            .collect()
    };
    // Metric a first (series 3 and 5), hour by hour, series within the hour; hour 2 left out.
    let hh = h.to_string();
    assert_eq!(col(0), ["3", "5", "3", "5", "7"]);
    assert_eq!(col(1), ["0", "0", hh.as_str(), hh.as_str(), "0"]);
    assert_eq!(col(3), ["s3", "s5", "s3", "s5", "s7"]);
    assert_eq!(col(4), ["t3", "t5", "t3", "t5", "t7"]);
    assert_eq!(col(5), ["3", "4", "5", "2", "1"]);

    let orphan = [rows(&[(9, 0, 1)])];
    let e = TierRows::Unlabelled {
        rows: &orphan,
        labels: &labels,
    }
    .sorted(&[0])
    .unwrap_err();
    assert!(e.to_string().contains("no labels"), "{e}");
}

/// The packed order equals the order of the key tuples, and so does the fallback.
#[test]
fn packed_keys_sort_as_the_tuples_do() {
    let h = HOUR_MS;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for big_rank in [false, true] {
        // A (series, start) is one row, as in a tier; few series and hours, so that the
        // leading fields tie often.
        let mut seen = std::collections::HashSet::new();
        let keys: Vec<Key> = (0..5_000u32)
            .map(|i| {
                let hour = (next() % 50) as i64 - 25;
                let start = hour * h + (next() % 60) as i64 * 60_000;
                let series = (next() % 7) | (1 << 63);
                let rank = (series % 4) as u32 + if big_rank { 1 << 16 } else { 0 };
                (rank, hour, series, start, i % 3, i, i)
            })
            .filter(|k| seen.insert((k.2, k.3)))
            .collect();
        let mut want = keys.clone();
        want.sort_unstable();
        let want: Vec<u32> = want.iter().map(|k| k.6).collect();
        let (_, got) = order(keys);
        let wrong = got.iter().zip(&want).filter(|(g, w)| g != w).count();
        assert_eq!((got.len(), wrong), (want.len(), 0), "big ranks: {big_rank}");
    }
}
