use super::*;
use arrow::array::{Int32Array, Int64Array};
use strata_shared::sketch::Sketch;

/// A small deterministic generator (no rand dependency needed for a unit test).
fn values(seed: u64, n: usize) -> Vec<f64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Mixed signs, zeros and repeats: what keys and ranks must survive.
            match x % 11 {
                0 => 0.0,
                1 => -((x >> 40) as f64) / 1000.0,
                2 => 42.0,
                _ => ((x >> 33) as f64) / 77.0,
            }
        })
        .collect()
}

/// One row of the result as (quantiles, sketch), or None for a null row.
fn row(out: &StructArray, r: usize) -> Option<([f64; 4], Sketch)> {
    if out.is_null(r) {
        return None;
    }
    let q: [f64; 4] = std::array::from_fn(|i| out.column(i).as_primitive::<Float64Type>().value(r));
    let keys = out.column(4).as_list::<i32>().value(r);
    let counts = out.column(5).as_list::<i32>().value(r);
    let keys: &Int32Array = keys.as_primitive();
    let counts: &Int64Array = counts.as_primitive();
    let mut sketch = Sketch::new();
    sketch.merge_buckets(keys.values(), counts.values());
    assert!(
        keys.values().windows(2).all(|w| w[0] < w[1]),
        "keys strictly ascending"
    );
    Some((q, sketch))
}

/// What a group of `vals` must give, computed the slow way.
fn expected(vals: &[f64]) -> ([f64; 4], Sketch) {
    let mut sorted = vals.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = sorted.len();
    let q = QUANTILES.map(|(q, _)| {
        let p = q * (n - 1) as f64;
        let (lo, hi) = (p.floor() as usize, p.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (p - p.floor())
    });
    let mut sketch = Sketch::new();
    for &v in vals {
        sketch.insert(v);
    }
    (q, sketch)
}

fn f64s(v: &[f64]) -> ArrayRef {
    Arc::new(Float64Array::from(v.to_vec()))
}

fn evaluate(acc: &mut dyn GroupsAccumulator, emit: EmitTo) -> StructArray {
    acc.evaluate(emit).unwrap().as_struct().clone()
}

#[test]
fn quantiles_interpolate_between_the_closest_ranks() {
    let v = [10.0, 20.0, 30.0, 40.0, 50.0];
    for (q, want) in [
        (0.0, 10.0),
        (0.5, 30.0),
        (0.9, 46.0),
        (0.95, 48.0),
        (0.99, 49.6),
        (1.0, 50.0),
    ] {
        assert!((quantile_of_sorted(&v, q) - want).abs() < 1e-9, "q{q}");
    }
    assert_eq!(quantile_of_sorted(&[3.0, 1.0][..1], 0.9), 3.0);
}

#[test]
fn each_group_gets_its_exact_quantiles_and_sketch() {
    let all = values(1, 5000);
    // Group of a row: uneven sizes, one group of one value, one group left empty (index 3).
    let group_of = |i: usize| match i % 10 {
        0 => 2,
        1..=6 => 0,
        _ if i == 7 => 4,
        _ => 1,
    };
    let mut acc = Groups::default();
    for chunk in 0..5 {
        let rows = chunk * 1000..(chunk + 1) * 1000;
        let groups: Vec<usize> = rows.clone().map(group_of).collect();
        acc.update_batch(&[f64s(&all[rows])], &groups, None, 5)
            .unwrap();
    }
    let out = evaluate(&mut acc, EmitTo::All);
    assert_eq!(out.len(), 5);
    for g in 0..5 {
        let vals: Vec<f64> = (0..all.len())
            .filter(|&i| group_of(i) == g)
            .map(|i| all[i])
            .collect();
        if vals.is_empty() {
            assert_eq!(row(&out, g), None, "a group without values is null");
        } else {
            assert_eq!(row(&out, g), Some(expected(&vals)), "group {g}");
        }
    }
}

#[test]
fn state_merged_elsewhere_gives_the_same_answer() {
    let all = values(2, 3000);
    let groups: Vec<usize> = (0..all.len()).map(|i| i % 7).collect();
    let mut direct = Groups::default();
    direct
        .update_batch(&[f64s(&all)], &groups, None, 7)
        .unwrap();

    // Two partial accumulators over halves, then a final one merging their states (with the
    // groups numbered differently there, as a final aggregation does).
    let mut finals = Groups::default();
    for half in [0..1500, 1500..3000] {
        let mut partial = Groups::default();
        partial
            .update_batch(&[f64s(&all[half.clone()])], &groups[half], None, 7)
            .unwrap();
        let state = partial.state(EmitTo::All).unwrap();
        let renumber: Vec<usize> = (0..7).map(|g| 6 - g).collect();
        finals.merge_batch(&state, &renumber, 7).unwrap();
    }
    let (a, b) = (
        evaluate(&mut direct, EmitTo::All),
        evaluate(&mut finals, EmitTo::All),
    );
    for g in 0..7 {
        assert_eq!(row(&a, g), row(&b, 6 - g), "group {g}");
    }
}

#[test]
fn rows_converted_to_state_merge_like_rows_added() {
    let all = values(3, 400);
    let groups: Vec<usize> = (0..all.len()).map(|i| i % 3).collect();
    // A filter leaving every fifth row out, and a null value.
    let filter = BooleanArray::from((0..all.len()).map(|i| i % 5 != 0).collect::<Vec<_>>());
    let mut with_null: Vec<Option<f64>> = all.iter().copied().map(Some).collect();
    with_null[1] = None;
    let input: ArrayRef = Arc::new(Float64Array::from(with_null));

    let mut added = Groups::default();
    added
        .update_batch(std::slice::from_ref(&input), &groups, Some(&filter), 3)
        .unwrap();
    let mut converted = Groups::default();
    let state = converted.convert_to_state(&[input], Some(&filter)).unwrap();
    converted.merge_batch(&state, &groups, 3).unwrap();
    let (a, b) = (
        evaluate(&mut added, EmitTo::All),
        evaluate(&mut converted, EmitTo::All),
    );
    for g in 0..3 {
        assert_eq!(row(&a, g), row(&b, g));
        let vals: Vec<f64> = (0..all.len())
            .filter(|&i| groups[i] == g && i % 5 != 0 && i != 1)
            .map(|i| all[i])
            .collect();
        assert_eq!(row(&a, g), Some(expected(&vals)));
    }
}

#[test]
fn emitting_the_first_groups_keeps_and_renumbers_the_rest() {
    let mut acc = Groups::default();
    acc.update_batch(&[f64s(&[1.0, 2.0, 3.0, 4.0])], &[0, 1, 2, 2], None, 3)
        .unwrap();
    let first = evaluate(&mut acc, EmitTo::First(2));
    assert_eq!(first.len(), 2);
    assert_eq!(row(&first, 1).unwrap().0, [2.0; 4]);
    // The old group 2 is now group 0.
    acc.update_batch(&[f64s(&[5.0])], &[0], None, 1).unwrap();
    let rest = evaluate(&mut acc, EmitTo::All);
    assert_eq!(rest.len(), 1);
    assert_eq!(row(&rest, 0), Some(expected(&[3.0, 4.0, 5.0])));
}

#[test]
fn the_row_form_agrees_with_the_groups_form() {
    let all = values(4, 999);
    let mut one = OneGroup::default();
    one.update_batch(&[f64s(&all[..500])]).unwrap();
    let mut other = OneGroup::default();
    other.update_batch(&[f64s(&all[500..])]).unwrap();
    let state = other.state().unwrap();
    let state: Vec<ArrayRef> = state.iter().map(|s| s.to_array().unwrap()).collect();
    one.merge_batch(&state).unwrap();
    let ScalarValue::Struct(got) = one.evaluate().unwrap() else {
        panic!("a struct")
    };
    assert_eq!(row(&got, 0), Some(expected(&all)));
}
