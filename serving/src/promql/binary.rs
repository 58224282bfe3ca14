//! Binary operators, point by point: arithmetic, comparisons (filtering, or 0/1 with `bool`),
//! `atan2`, and the set operators `and or unless`; between two vectors with Prometheus'
//! matching — one-to-one, `group_left`/`group_right` (many-to-one), `on`/`ignoring` — and its
//! errors when a match is ambiguous.

use std::collections::HashMap;

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{Evaluator, Grid};
use super::labels::{display, drop_name, merge_same, signature, NAME, SAME_LABELSET};
use super::{EvalError, Series, Value};
use crate::series::Labels;

/// `op` between two numbers: `(value, keep)` — a comparison keeps the left value when it
/// holds; `None` for an operator that is not arithmetic or a comparison.
pub fn apply(op: u16, a: f64, b: f64) -> Option<(f64, bool)> {
    Some(match op {
        T_ADD => (a + b, true),
        T_SUB => (a - b, true),
        T_MUL => (a * b, true),
        T_DIV => (a / b, true),
        T_MOD => (go_mod(a, b), true),
        T_POW => (go_pow(a, b), true),
        T_ATAN2 => (a.atan2(b), true),
        T_EQLC => (a, a == b),
        T_NEQ => (a, a != b),
        T_GTR => (a, a > b),
        T_LSS => (a, a < b),
        T_GTE => (a, a >= b),
        T_LTE => (a, a <= b),
        _ => return None,
    })
}

/// Go's `math.Mod`: the sign of the dividend, NaN for a zero divisor or an infinite dividend.
fn go_mod(a: f64, b: f64) -> f64 {
    a % b
}

/// Go's `math.Pow` (Rust's agrees on the special cases PromQL meets: `x^0 = 1`, `1^y = 1`).
fn go_pow(a: f64, b: f64) -> f64 {
    a.powf(b)
}

fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Whether the result loses the metric name (the arithmetic operators, `atan2` included as in
/// Prometheus 3).
fn drops_name(op: u16) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW | T_ATAN2)
}

/// `-v`: the name goes, values change sign.
pub fn negate(v: Value) -> Result<Value, EvalError> {
    match v {
        Value::Scalar(s) => Ok(Value::Scalar(s.into_iter().map(|x| -x).collect())),
        Value::Vector(vs) => Ok(Value::Vector(merge_same(
            vs.into_iter()
                .map(|s| Series {
                    labels: drop_name(s.labels),
                    values: s.values.into_iter().map(|v| v.map(|x| -x)).collect(),
                })
                .collect(),
        )?)),
        _ => Err(EvalError::bad(
            "unary minus expects a scalar or an instant vector",
        )),
    }
}

impl Evaluator<'_> {
    /// Evaluates a binary expression; both sides are evaluated at once.
    pub(super) async fn binary(&self, b: &BinaryExpr, grid: &Grid) -> Result<Value, EvalError> {
        let op = b.op.id();
        let name = b.op.to_string();
        let modifier = b.modifier.as_ref();
        let return_bool = modifier.is_some_and(|m| m.return_bool);
        if modifier.is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some()) {
            return Err(EvalError::bad(
                "fill modifiers (experimental in Prometheus 3) are not supported",
            ));
        }
        let set = matches!(op, T_LAND | T_LOR | T_LUNLESS);
        if !set && apply(op, 1.0, 1.0).is_none() {
            return Err(EvalError::bad(format!("operator {name} is not supported")));
        }
        let (lhs, rhs) = futures::join!(self.eval_at(&b.lhs, grid), self.eval_at(&b.rhs, grid));
        let (lhs, rhs) = (lhs?, rhs?);
        match (lhs, rhs) {
            (Value::Scalar(x), Value::Scalar(y)) => {
                if set {
                    return Err(EvalError::bad(format!(
                        "set operator {name} not allowed in binary scalar expression"
                    )));
                }
                if is_comparison(op) && !return_bool {
                    return Err(EvalError::bad(
                        "comparisons between scalars must use BOOL modifier",
                    ));
                }
                Ok(Value::Scalar(
                    x.iter()
                        .zip(&y)
                        .map(|(a, b)| {
                            let (v, keep) = apply(op, *a, *b).expect("checked");
                            if is_comparison(op) {
                                if keep {
                                    1.0
                                } else {
                                    0.0
                                }
                            } else {
                                v
                            }
                        })
                        .collect(),
                ))
            }
            (Value::Vector(_), Value::Scalar(_)) | (Value::Scalar(_), Value::Vector(_)) if set => {
                Err(EvalError::bad(format!(
                    "set operator {name} not allowed in binary scalar expression"
                )))
            }
            (Value::Vector(v), Value::Scalar(s)) => {
                Ok(Value::Vector(vector_scalar(op, v, &s, false, return_bool)?))
            }
            (Value::Scalar(s), Value::Vector(v)) => {
                Ok(Value::Vector(vector_scalar(op, v, &s, true, return_bool)?))
            }
            (Value::Vector(l), Value::Vector(r)) => {
                let matching = modifier.and_then(|m| m.matching.as_ref());
                let out = if set {
                    set_op(op, l, r, matching, grid.len())
                } else {
                    let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
                    vector_vector(op, l, r, matching, card, return_bool, grid.len())?
                };
                Ok(Value::Vector(out))
            }
            _ => Err(EvalError::bad(format!(
                "operator {name} expects scalars or instant vectors"
            ))),
        }
    }
}

/// A vector and a scalar (`scalar_left`: the scalar is the left operand).
fn vector_scalar(
    op: u16,
    v: Vec<Series>,
    s: &[f64],
    scalar_left: bool,
    return_bool: bool,
) -> Result<Vec<Series>, EvalError> {
    let out = v
        .into_iter()
        .map(|series| {
            let values = series
                .values
                .iter()
                .zip(s)
                .map(|(v, s)| {
                    let v = (*v)?;
                    let (a, b) = if scalar_left { (*s, v) } else { (v, *s) };
                    let (mut value, keep) = apply(op, a, b).expect("checked");
                    // A comparison keeps the vector's value, whichever side it is on.
                    if is_comparison(op) {
                        value = v;
                    }
                    if return_bool {
                        Some(if keep { 1.0 } else { 0.0 })
                    } else {
                        keep.then_some(value)
                    }
                })
                .collect();
            let labels = if drops_name(op) || return_bool {
                drop_name(series.labels)
            } else {
                series.labels
            };
            Series { labels, values }
        })
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect();
    merge_same(out)
}

/// Series indices by matching signature.
fn by_signature(
    series: &[Series],
    matching: Option<&LabelModifier>,
) -> (Vec<Labels>, HashMap<Labels, Vec<usize>>) {
    let sigs: Vec<Labels> = series
        .iter()
        .map(|s| signature(&s.labels, matching))
        .collect();
    let mut groups: HashMap<Labels, Vec<usize>> = HashMap::new();
    for (i, sig) in sigs.iter().enumerate() {
        groups.entry(sig.clone()).or_default().push(i);
    }
    (sigs, groups)
}

fn present_at(series: &[Series], members: Option<&Vec<usize>>, t: usize) -> bool {
    members.is_some_and(|m| m.iter().any(|&i| series[i].values[t].is_some()))
}

/// `and`, `or`, `unless`: many-to-many, by signature, point by point.
fn set_op(
    op: u16,
    l: Vec<Series>,
    r: Vec<Series>,
    matching: Option<&LabelModifier>,
    n: usize,
) -> Vec<Series> {
    let (lsig, lgroups) = by_signature(&l, matching);
    let (rsig, rgroups) = by_signature(&r, matching);
    let mut out: Vec<Series> = Vec::new();
    match op {
        T_LAND | T_LUNLESS => {
            for (s, sig) in l.into_iter().zip(&lsig) {
                let other = rgroups.get(sig);
                let values = (0..n)
                    .map(|t| {
                        let v = s.values[t]?;
                        let matched = present_at(&r, other, t);
                        ((op == T_LAND) == matched).then_some(v)
                    })
                    .collect();
                out.push(Series {
                    labels: s.labels,
                    values,
                });
            }
        }
        _ => {
            let right: Vec<Series> = r
                .iter()
                .zip(&rsig)
                .map(|(s, sig)| {
                    let left = lgroups.get(sig);
                    Series {
                        labels: s.labels.clone(),
                        values: (0..n)
                            .map(|t| {
                                if present_at(&l, left, t) {
                                    None
                                } else {
                                    s.values[t]
                                }
                            })
                            .collect(),
                    }
                })
                .collect();
            out.extend(l);
            out.extend(right);
        }
    }
    out.retain(|s| s.values.iter().any(Option::is_some));
    // Set operators keep labels as they are; Prometheus checks no two coincide.
    merge_same(out).unwrap_or_else(|_| Vec::new())
}

/// The labels of a match: the "many" side's, without the name for arithmetic, cut to `on` /
/// without `ignoring` for one-to-one, plus the `group_x` labels from the "one" side.
fn result_labels(
    many: &Labels,
    one: &Labels,
    op: u16,
    matching: Option<&LabelModifier>,
    card: &VectorMatchCardinality,
    return_bool: bool,
) -> Labels {
    let mut out = many.clone();
    if drops_name(op) || return_bool {
        out.remove(NAME);
    }
    if matches!(card, VectorMatchCardinality::OneToOne) {
        match matching {
            Some(LabelModifier::Include(on)) => {
                out.retain(|k, _| on.labels.iter().any(|l| l == k));
            }
            Some(LabelModifier::Exclude(ignoring)) => {
                out.retain(|k, _| !ignoring.labels.iter().any(|l| l == k));
            }
            None => {}
        }
    }
    if let Some(include) = card.labels() {
        for l in &include.labels {
            match one.get(l) {
                Some(v) if !v.is_empty() => {
                    out.insert(l.clone(), v.clone());
                }
                _ => {
                    out.remove(l);
                }
            }
        }
    }
    out
}

/// Arithmetic and comparisons between two vectors.
fn vector_vector(
    op: u16,
    l: Vec<Series>,
    r: Vec<Series>,
    matching: Option<&LabelModifier>,
    card: &VectorMatchCardinality,
    return_bool: bool,
    n: usize,
) -> Result<Vec<Series>, EvalError> {
    if matches!(card, VectorMatchCardinality::ManyToMany) {
        return Err(EvalError::bad(
            "many-to-many matching is allowed only for set operators",
        ));
    }
    // The "many" side is matched against the "one" side; `group_right` swaps them.
    let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if swapped { (r, l) } else { (l, r) };
    let (many_sig, _) = by_signature(&many, matching);
    let (_, one_groups) = by_signature(&one, matching);
    let one_side = if swapped { "left" } else { "right" };
    // Result labels per (many, one) pair, made once.
    let mut labels_of: HashMap<(usize, usize), usize> = HashMap::new();
    let mut out: Vec<Series> = Vec::new();
    let mut out_index: HashMap<Labels, usize> = HashMap::new();
    for t in 0..n {
        let any = |side: &[Series]| side.iter().any(|s| s.values[t].is_some());
        if !any(&many) || !any(&one) {
            continue;
        }
        // The "one" side must be unique per signature at this point.
        let mut one_at: HashMap<&Labels, usize> = HashMap::new();
        for (sig, members) in &one_groups {
            let mut present = members.iter().filter(|&&i| one[i].values[t].is_some());
            if let Some(&first) = present.next() {
                if let Some(&second) = present.next() {
                    return Err(EvalError::exec(format!(
                        "found duplicate series for the match group {} on the {one_side} hand-side \
                         of the operation: [{}, {}];many-to-many matching not allowed: matching \
                         labels must be unique on one side",
                        display(sig),
                        display(&one[second].labels),
                        display(&one[first].labels)
                    )));
                }
                one_at.insert(sig, first);
            }
        }
        let mut matched: HashMap<&Labels, Vec<usize>> = HashMap::new();
        for (i, s) in many.iter().enumerate() {
            let Some(mv) = s.values[t] else { continue };
            let Some(&j) = one_at.get(&many_sig[i]) else {
                continue;
            };
            let ov = one[j].values[t].expect("present");
            let (a, b) = if swapped { (ov, mv) } else { (mv, ov) };
            let (value, keep) = apply(op, a, b).expect("checked");
            let k = *labels_of.entry((i, j)).or_insert_with(|| {
                let labels =
                    result_labels(&s.labels, &one[j].labels, op, matching, card, return_bool);
                *out_index.entry(labels.clone()).or_insert_with(|| {
                    out.push(Series {
                        labels,
                        values: vec![None; n],
                    });
                    out.len() - 1
                })
            });
            let same_sig = matched.entry(&many_sig[i]).or_default();
            if matches!(card, VectorMatchCardinality::OneToOne) {
                if !same_sig.is_empty() {
                    return Err(EvalError::exec(
                        "multiple matches for labels: many-to-one matching must be explicit \
                         (group_left/group_right)",
                    ));
                }
            } else if same_sig.contains(&k) {
                return Err(EvalError::exec(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                ));
            }
            same_sig.push(k);
            // Ambiguity is an error even where a comparison then filters the match out.
            let value = match (return_bool, keep) {
                (true, true) => 1.0,
                (true, false) => 0.0,
                (false, true) => value,
                (false, false) => continue,
            };
            let slot = &mut out[k].values[t];
            if slot.is_some() {
                return Err(EvalError::exec(SAME_LABELSET));
            }
            *slot = Some(value);
        }
    }
    out.retain(|s| s.values.iter().any(Option::is_some));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use promql_parser::label::Labels as Names;

    fn series(labels: &[(&str, &str)], values: &[Option<f64>]) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn comparisons_filter_and_bool_makes_numbers() {
        let v = vec![series(
            &[(NAME, "m_count"), ("source", "a")],
            &[Some(1.0), Some(5.0), None],
        )];
        let filtered = vector_scalar(T_GTR, v.clone(), &[2.0; 3], false, false).unwrap();
        assert_eq!(filtered[0].values, vec![None, Some(5.0), None]);
        assert_eq!(
            filtered[0].labels[NAME], "m_count",
            "a filter keeps the name"
        );
        let b = vector_scalar(T_GTR, v.clone(), &[2.0; 3], false, true).unwrap();
        assert_eq!(b[0].values, vec![Some(0.0), Some(1.0), None]);
        assert!(!b[0].labels.contains_key(NAME));
        // scalar on the left: 10 - v; and 2 < v keeps v's value.
        let d = vector_scalar(T_SUB, v.clone(), &[10.0; 3], true, false).unwrap();
        assert_eq!(d[0].values, vec![Some(9.0), Some(5.0), None]);
        let c = vector_scalar(T_LSS, v, &[2.0; 3], true, false).unwrap();
        assert_eq!(c[0].values, vec![None, Some(5.0), None]);
    }

    #[test]
    fn ignoring_drops_the_label_and_on_keeps_only_its_own() {
        let l = vec![series(&[(NAME, "a"), ("x", "1"), ("y", "2")], &[Some(6.0)])];
        let r = vec![series(&[(NAME, "b"), ("x", "1"), ("y", "3")], &[Some(2.0)])];
        let ign = LabelModifier::Exclude(Names::new(vec!["y"]));
        let out = vector_vector(
            T_DIV,
            l.clone(),
            r.clone(),
            Some(&ign),
            &VectorMatchCardinality::OneToOne,
            false,
            1,
        )
        .unwrap();
        assert_eq!(out[0].labels, series(&[("x", "1")], &[]).labels);
        assert_eq!(out[0].values, vec![Some(3.0)]);
        let on = LabelModifier::Include(Names::new(vec!["x"]));
        let out = vector_vector(
            T_GTR,
            l,
            r,
            Some(&on),
            &VectorMatchCardinality::OneToOne,
            false,
            1,
        )
        .unwrap();
        assert_eq!(
            out[0].labels,
            series(&[("x", "1")], &[]).labels,
            "on() keeps only x, even for a filter"
        );
        assert_eq!(out[0].values, vec![Some(6.0)]);
    }

    #[test]
    fn group_left_joins_many_to_one_and_copies_labels() {
        let l = vec![
            series(
                &[(NAME, "req"), ("region", "eu"), ("pod", "p1")],
                &[Some(10.0)],
            ),
            series(
                &[(NAME, "req"), ("region", "eu"), ("pod", "p2")],
                &[Some(30.0)],
            ),
        ];
        let r = vec![series(
            &[(NAME, "info"), ("region", "eu"), ("team", "core")],
            &[Some(2.0)],
        )];
        let on = LabelModifier::Include(Names::new(vec!["region"]));
        let card = VectorMatchCardinality::ManyToOne(Names::new(vec!["team"]));
        let out = vector_vector(T_MUL, l.clone(), r.clone(), Some(&on), &card, false, 1).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].labels["team"], "core");
        assert_eq!(out[0].labels["pod"], "p1");
        assert_eq!(out[0].values, vec![Some(20.0)]);
        // Without group_left the same join is ambiguous.
        let err = vector_vector(
            T_MUL,
            l.clone(),
            r.clone(),
            Some(&on),
            &VectorMatchCardinality::OneToOne,
            false,
            1,
        );
        assert!(matches!(err, Err(EvalError::Execution(m)) if m.contains("group_left")));
        // group_right: the right side is the many.
        let card = VectorMatchCardinality::OneToMany(Names::new(vec![]));
        let out = vector_vector(T_SUB, r, l, Some(&on), &card, false, 1).unwrap();
        assert_eq!(
            out.iter().map(|s| s.values[0]).collect::<Vec<_>>(),
            vec![Some(-8.0), Some(-28.0)]
        );
    }

    #[test]
    fn duplicates_on_the_one_side_fail_only_where_they_meet() {
        let l = vec![series(&[("a", "1")], &[Some(1.0), Some(1.0)])];
        let r = vec![
            series(&[("a", "1"), ("x", "1")], &[Some(1.0), None]),
            series(&[("a", "1"), ("x", "2")], &[None, Some(2.0)]),
        ];
        let on = LabelModifier::Include(Names::new(vec!["a"]));
        let out = vector_vector(
            T_ADD,
            l.clone(),
            r.clone(),
            Some(&on),
            &VectorMatchCardinality::OneToOne,
            false,
            2,
        )
        .unwrap();
        assert_eq!(
            out[0].values,
            vec![Some(2.0), Some(3.0)],
            "one match per point"
        );
        let mut r2 = r;
        r2[1].values[0] = Some(5.0);
        assert!(matches!(
            vector_vector(T_ADD, l, r2, Some(&on), &VectorMatchCardinality::OneToOne, false, 2),
            Err(EvalError::Execution(m)) if m.contains("duplicate series")
        ));
    }

    #[test]
    fn set_operators_work_point_by_point_with_many_series_per_key() {
        // Two series on the right share the key; `and` keeps the left wherever either is there.
        let l = vec![series(
            &[(NAME, "a"), ("k", "1")],
            &[Some(1.0), Some(2.0), Some(3.0)],
        )];
        let r = vec![
            series(
                &[(NAME, "b"), ("k", "1"), ("x", "1")],
                &[Some(1.0), None, None],
            ),
            series(
                &[(NAME, "b"), ("k", "1"), ("x", "2")],
                &[None, None, Some(1.0)],
            ),
        ];
        let on = LabelModifier::Include(Names::new(vec!["k"]));
        let and = set_op(T_LAND, l.clone(), r.clone(), Some(&on), 3);
        assert_eq!(and[0].values, vec![Some(1.0), None, Some(3.0)]);
        let unless = set_op(T_LUNLESS, l.clone(), r.clone(), Some(&on), 3);
        assert_eq!(unless[0].values, vec![None, Some(2.0), None]);
        // `or` fills the left's gaps with the right, point by point.
        let gaps = vec![series(&[(NAME, "a"), ("k", "1")], &[Some(1.0), None, None])];
        let or = set_op(T_LOR, gaps, r, Some(&on), 3);
        assert_eq!(or.len(), 2);
        assert_eq!(or[0].values, vec![Some(1.0), None, None]);
        assert_eq!(or[1].labels["x"], "2");
        assert_eq!(or[1].values, vec![None, None, Some(1.0)]);
    }

    #[test]
    fn sum_or_vector_zero_fills_every_point() {
        // `sum(x > 8) or vector(0)`: the sum where it exists, 0 elsewhere.
        let sum = vec![series(&[], &[None, Some(9.0), None])];
        let zero = vec![series(&[], &[Some(0.0), Some(0.0), Some(0.0)])];
        let or = set_op(T_LOR, sum, zero, None, 3);
        assert_eq!(or.len(), 1, "one label set, one series");
        assert_eq!(or[0].values, vec![Some(0.0), Some(9.0), Some(0.0)]);
    }

    #[test]
    fn negation_drops_the_name_and_refuses_collisions() {
        let Ok(Value::Vector(v)) = negate(Value::Vector(vec![series(
            &[(NAME, "m_min")],
            &[Some(2.0)],
        )])) else {
            panic!()
        };
        assert_eq!(v[0].values, vec![Some(-2.0)]);
        assert!(v[0].labels.is_empty());
        let two = Value::Vector(vec![
            series(&[(NAME, "a")], &[Some(2.0)]),
            series(&[(NAME, "b")], &[Some(3.0)]),
        ]);
        assert_eq!(negate(two), Err(EvalError::exec(SAME_LABELSET)));
    }
}
