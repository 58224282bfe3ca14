//! Unit tests of `results`.

use super::*;

fn expr(q: &str) -> Expr {
    promql_parser::parser::parse(q).unwrap()
}

#[test]
fn the_reach_is_the_widest_window_read_moved_by_offsets() {
    assert_eq!(reach_ms(&expr("1 + 1"), 60_000), None);
    // A plain selector reaches back five minutes (a sample series' look-back), or its step.
    assert_eq!(reach_ms(&expr("m_count"), 60_000), Some((360_000, 0)));
    assert_eq!(reach_ms(&expr("m_count"), 600_000), Some((660_000, 0)));
    assert_eq!(
        reach_ms(
            &expr("sum by (a) (rate(m_count[11m])) / sum(m_sum)"),
            60_000
        ),
        Some((12 * 60_000, 0))
    );
    assert_eq!(
        reach_ms(&expr("topk(3, max_over_time(m_max[1h]))"), 300_000),
        Some((HOUR_MS + 60_000, 0))
    );
    // An offset moves the read back; a negative one reads after the point.
    assert_eq!(
        reach_ms(&expr("m_count offset 1h"), 60_000),
        Some((HOUR_MS + 360_000, 0))
    );
    assert_eq!(
        reach_ms(&expr("m_count offset -1h"), 60_000),
        Some((360_000 - HOUR_MS, HOUR_MS))
    );
    // A subquery widens what its inside reads by its range (the inside's windows are its step).
    assert_eq!(
        reach_ms(&expr("max_over_time(rate(m_count[5m])[1h:1m])"), 60_000),
        Some((HOUR_MS + 5 * 60_000 + 60_000, 0))
    );
    // `@` reads at fixed times: nothing to say about the points' neighbourhood.
    assert_eq!(reach_ms(&expr("m_count @ 1700000000"), 60_000), None);
    assert_eq!(reach_ms(&expr("rate(m_count[5m] @ end())"), 60_000), None);
}

#[test]
fn windows_are_aligned_on_absolute_time_and_read_whole_hours() {
    assert_eq!(window_steps(60_000), 120);
    assert_eq!(window_steps(600_000), 12);
    assert_eq!(window_steps(7 * HOUR_MS), 1);
    // Points 02:00..02:59 with a 5-minute lookback read hours 1 and 2.
    let h: Vec<i64> = hours_read(2 * HOUR_MS, 3 * HOUR_MS - 60_000, (300_000, 0)).collect();
    assert_eq!(h, vec![HOUR_MS, 2 * HOUR_MS]);
    // A point exactly on the hour reads the hour before it only.
    let h: Vec<i64> = hours_read(3 * HOUR_MS, 3 * HOUR_MS, (60_000, 0)).collect();
    assert_eq!(h, vec![2 * HOUR_MS]);
}

fn series(l: &str, values: &[Option<f64>]) -> Series {
    Series {
        labels: Labels::from([("a".to_owned(), l.to_owned())]),
        values: values.to_vec(),
    }
}

#[test]
fn parts_merge_by_labels_onto_the_query_points() {
    let steps = [10, 20, 30, 40];
    // A cached window evaluated whole (points 0..=20, of which 10 and 20 are asked) and a
    // live part (30, 40).
    let cached = Answer {
        value: Value::Vector(vec![
            series("x", &[Some(0.0), Some(1.0), Some(2.0)]),
            series("gone", &[Some(9.0), None, None]),
        ]),
        provenance: vec![],
        warnings: vec![],
    };
    let live = Answer {
        value: Value::Vector(vec![
            series("y", &[Some(4.0), None]),
            series("x", &[None, Some(3.0)]),
        ]),
        provenance: vec![],
        warnings: vec!["w".into()],
    };
    let out = merge(
        &steps,
        vec![
            (vec![0, 10, 20], Arc::new(cached)),
            (vec![30, 40], Arc::new(live)),
        ],
    );
    assert_eq!(
        out.value,
        Value::Vector(vec![
            series("x", &[Some(1.0), Some(2.0), None, Some(3.0)]),
            series("y", &[None, None, Some(4.0), None]),
        ]),
        "a series with no point in the query's range is dropped; the rest sorted by labels"
    );
    assert_eq!(out.warnings, vec!["w".to_owned()]);
}

#[test]
fn a_window_cut_from_a_run_holds_its_points_only() {
    let layer = crate::window::Layer::Batch;
    let whole = Answer {
        value: Value::Vector(vec![
            series("x", &[Some(0.0), Some(1.0), Some(2.0), Some(3.0)]),
            series("early", &[Some(9.0), None, None, None]),
        ]),
        provenance: vec![Provenance {
            from_ms: -5,
            to_ms: 40,
            layer,
        }],
        warnings: vec![],
    };
    // The run's points are 10, 20, 30, 40; the window is 30 and 40, reading 5 back.
    let part = part_of(&whole, 2..4, &[30, 40], (5, 0));
    assert_eq!(
        part.value,
        Value::Vector(vec![series("x", &[Some(2.0), Some(3.0)])]),
        "the window's values; a series without a point in it is left out"
    );
    assert_eq!(
        part.provenance,
        vec![Provenance {
            from_ms: 25,
            to_ms: 40,
            layer
        }]
    );
    let scalar = Answer {
        value: Value::Scalar(vec![1.0, 2.0, 3.0]),
        ..whole.clone()
    };
    assert_eq!(
        part_of(&scalar, 1..3, &[20, 30], (0, 0)).value,
        Value::Scalar(vec![2.0, 3.0])
    );
}

#[test]
fn a_partial_answer_is_never_kept() {
    let ok = Answer {
        value: Value::Scalar(vec![1.0]),
        provenance: vec![],
        warnings: vec![],
    };
    let partial = Answer {
        warnings: vec!["batch views: lake down".into()],
        ..ok.clone()
    };
    let cache: Cache<u8, Answer, ()> = Cache::new(1 << 20);
    cache.put(1, Arc::new(ok));
    cache.put(2, Arc::new(partial));
    assert!(cache.get(&1).is_some());
    assert!(
        cache.get(&2).is_none(),
        "an answer with warnings is not kept"
    );
}
