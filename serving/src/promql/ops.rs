//! Operators over evaluated values, point by point: aggregations and binary operators with
//! label matching (functions are in `functions`).

use std::collections::BTreeMap;

use promql_parser::parser::token::{
    TokenType, T_ADD, T_AVG, T_BOTTOMK, T_COUNT, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS,
    T_LTE, T_LUNLESS, T_MAX, T_MIN, T_MOD, T_MUL, T_NEQ, T_POW, T_SUB, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::{EvalError, Evaluator, Series, Value};
use crate::series::Labels;

/// `-v`.
pub fn negate(v: Value) -> Value {
    match v {
        Value::Scalar(s) => Value::Scalar(s.into_iter().map(|x| -x).collect()),
        Value::Vector(vs) => Value::Vector(
            vs.into_iter()
                .map(|mut s| {
                    s.labels.remove("__name__");
                    s.values = s.values.into_iter().map(|v| v.map(|x| -x)).collect();
                    s
                })
                .collect(),
        ),
        other => other,
    }
}

fn op_name(op: TokenType) -> String {
    op.to_string()
}

/// The labels that group or match, given `by`/`on` (include) or `without`/`ignoring`.
fn key_labels(labels: &Labels, modifier: Option<&LabelModifier>, drop_name: bool) -> Labels {
    match modifier {
        Some(LabelModifier::Include(keep)) => labels
            .iter()
            .filter(|(k, _)| keep.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(drop)) => labels
            .iter()
            .filter(|(k, _)| !drop.labels.contains(k) && k.as_str() != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => labels
            .iter()
            .filter(|(k, _)| !drop_name || k.as_str() != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn arith(op: u16, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        T_ADD => a + b,
        T_SUB => a - b,
        T_MUL => a * b,
        T_DIV => a / b,
        T_MOD => a % b,
        T_POW => a.powf(b),
        _ => return None,
    })
}

fn compare(op: u16, a: f64, b: f64) -> Option<bool> {
    Some(match op {
        T_EQLC => a == b,
        T_NEQ => a != b,
        T_GTR => a > b,
        T_LSS => a < b,
        T_GTE => a >= b,
        T_LTE => a <= b,
        _ => return None,
    })
}

/// Applies `op` to a pair of values; `keep` is the value a filtering comparison keeps.
fn apply(op: u16, a: f64, b: f64, keep: f64, return_bool: bool) -> Option<f64> {
    if let Some(v) = arith(op, a, b) {
        return Some(v);
    }
    let c = compare(op, a, b)?;
    if return_bool {
        Some(if c { 1.0 } else { 0.0 })
    } else {
        c.then_some(keep)
    }
}

impl Evaluator<'_> {
    pub(super) async fn aggregate(&mut self, a: &AggregateExpr) -> Result<Value, EvalError> {
        let op = a.op.id();
        if !matches!(
            op,
            T_SUM | T_AVG | T_MIN | T_MAX | T_COUNT | T_TOPK | T_BOTTOMK
        ) {
            return Err(EvalError::BadData(format!(
                "aggregation {}() is not supported (supported: sum, avg, min, max, count, topk, bottomk)",
                op_name(a.op)
            )));
        }
        let k = match &a.param {
            Some(p) if matches!(op, T_TOPK | T_BOTTOMK) => match self.eval(p).await? {
                Value::Scalar(s) => s,
                _ => {
                    return Err(EvalError::BadData(format!(
                        "{}: k must be a scalar",
                        op_name(a.op)
                    )))
                }
            },
            _ => Vec::new(),
        };
        let Value::Vector(input) = self.eval(&a.expr).await? else {
            return Err(EvalError::BadData(format!(
                "{}() expects an instant vector",
                op_name(a.op)
            )));
        };
        let n = self.steps.len();
        if matches!(op, T_TOPK | T_BOTTOMK) {
            // Per point, the k largest (smallest) of each group keep their value there.
            let mut groups: BTreeMap<Labels, Vec<usize>> = BTreeMap::new();
            for (i, s) in input.iter().enumerate() {
                let key = match &a.modifier {
                    None => Labels::new(),
                    Some(m) => key_labels(&s.labels, Some(m), true),
                };
                groups.entry(key).or_default().push(i);
            }
            let mut out: Vec<Series> = input
                .iter()
                .map(|s| Series {
                    labels: s.labels.clone(),
                    values: vec![None; n],
                })
                .collect();
            for members in groups.values() {
                for t in 0..n {
                    let kk = k.get(t).copied().unwrap_or(0.0);
                    if !kk.is_finite() || kk < 1.0 {
                        continue;
                    }
                    let mut present: Vec<(usize, f64)> = members
                        .iter()
                        .filter_map(|&i| input[i].values[t].map(|v| (i, v)))
                        .collect();
                    present.sort_by(|x, y| {
                        if op == T_TOPK {
                            y.1.total_cmp(&x.1)
                        } else {
                            x.1.total_cmp(&y.1)
                        }
                    });
                    for (i, v) in present.into_iter().take(kk as usize) {
                        out[i].values[t] = Some(v);
                    }
                }
            }
            out.retain(|s| s.values.iter().any(Option::is_some));
            return Ok(Value::Vector(out));
        }
        let mut groups: BTreeMap<Labels, Vec<&Series>> = BTreeMap::new();
        for s in &input {
            let key = match &a.modifier {
                None => Labels::new(),
                Some(m) => key_labels(&s.labels, Some(m), true),
            };
            groups.entry(key).or_default().push(s);
        }
        let mut out = Vec::new();
        for (labels, members) in groups {
            let values = (0..n)
                .map(|t| {
                    let vals: Vec<f64> = members.iter().filter_map(|s| s.values[t]).collect();
                    if vals.is_empty() {
                        return None;
                    }
                    Some(match op {
                        T_SUM => vals.iter().sum(),
                        T_AVG => vals.iter().sum::<f64>() / vals.len() as f64,
                        T_MIN => vals.iter().copied().fold(f64::INFINITY, f64::min),
                        T_MAX => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        _ => vals.len() as f64, // count
                    })
                })
                .collect();
            out.push(Series { labels, values });
        }
        Ok(Value::Vector(out))
    }

    pub(super) async fn binary(&mut self, b: &BinaryExpr) -> Result<Value, EvalError> {
        let op = b.op.id();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        if let Some(m) = &b.modifier {
            if matches!(
                m.card,
                VectorMatchCardinality::ManyToOne(_) | VectorMatchCardinality::OneToMany(_)
            ) {
                return Err(EvalError::BadData(
                    "group_left / group_right are not supported".into(),
                ));
            }
        }
        // Both sides at once: their fetches overlap (and `x_sum / x_count` asks ClickHouse
        // one question, not two in a row).
        let (mut left, mut right, base) = (self.fork(), self.fork(), self.series_seen);
        let (lhs, rhs) = futures::join!(left.eval(&b.lhs), right.eval(&b.rhs));
        self.absorb(left, base)?;
        self.absorb(right, base)?;
        let (lhs, rhs) = (lhs?, rhs?);
        let n = self.steps.len();
        let is_set = matches!(op, T_LAND | T_LOR | T_LUNLESS);
        if !is_set && arith(op, 1.0, 1.0).is_none() && compare(op, 1.0, 1.0).is_none() {
            return Err(EvalError::BadData(format!(
                "operator {} is not supported",
                op_name(b.op)
            )));
        }
        match (lhs, rhs) {
            (Value::Scalar(x), Value::Scalar(y)) => {
                if is_set {
                    return Err(EvalError::BadData(format!(
                        "{} is not defined between scalars",
                        op_name(b.op)
                    )));
                }
                if compare(op, 1.0, 1.0).is_some() && !return_bool {
                    return Err(EvalError::BadData(
                        "comparisons between scalars must use the bool modifier".into(),
                    ));
                }
                Ok(Value::Scalar(
                    (0..n)
                        .map(|t| apply(op, x[t], y[t], x[t], true).unwrap_or(f64::NAN))
                        .collect(),
                ))
            }
            (Value::Vector(v), Value::Scalar(s)) | (Value::Scalar(s), Value::Vector(v))
                if is_set =>
            {
                let _ = (v, s);
                Err(EvalError::BadData(format!(
                    "{} is defined only between two instant vectors",
                    op_name(b.op)
                )))
            }
            (Value::Vector(v), Value::Scalar(s)) => {
                Ok(Value::Vector(vector_scalar(op, v, &s, false, return_bool)))
            }
            (Value::Scalar(s), Value::Vector(v)) => {
                Ok(Value::Vector(vector_scalar(op, v, &s, true, return_bool)))
            }
            (Value::Vector(l), Value::Vector(r)) => {
                let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
                Ok(Value::Vector(vector_vector(
                    op,
                    l,
                    r,
                    matching,
                    return_bool,
                    n,
                )?))
            }
            _ => Err(EvalError::BadData(format!(
                "operator {} cannot take a string",
                op_name(b.op)
            ))),
        }
    }
}

fn vector_scalar(
    op: u16,
    v: Vec<Series>,
    s: &[f64],
    scalar_left: bool,
    return_bool: bool,
) -> Vec<Series> {
    let is_cmp = compare(op, 1.0, 1.0).is_some();
    v.into_iter()
        .filter_map(|mut series| {
            if !is_cmp || return_bool {
                series.labels.remove("__name__");
            }
            series.values = series
                .values
                .iter()
                .zip(s)
                .map(|(v, s)| {
                    let v = (*v)?;
                    let (a, b) = if scalar_left { (*s, v) } else { (v, *s) };
                    apply(op, a, b, v, return_bool)
                })
                .collect();
            series.values.iter().any(Option::is_some).then_some(series)
        })
        .collect()
}

fn vector_vector(
    op: u16,
    l: Vec<Series>,
    r: Vec<Series>,
    matching: Option<&LabelModifier>,
    return_bool: bool,
    n: usize,
) -> Result<Vec<Series>, EvalError> {
    let key = |s: &Series| key_labels(&s.labels, matching, true);
    let mut right: BTreeMap<Labels, &Series> = BTreeMap::new();
    for s in &r {
        if right.insert(key(s), s).is_some() && !matches!(op, T_LAND | T_LOR | T_LUNLESS) {
            return Err(EvalError::Execution(
                "many-to-many matching: several series on the right side share the same \
                 matching labels; aggregate them or use on()/ignoring()"
                    .into(),
            ));
        }
    }
    let mut out = Vec::new();
    match op {
        T_LAND | T_LUNLESS => {
            for mut s in l {
                let other = right.get(&key(&s));
                s.values = (0..n)
                    .map(|t| {
                        let present = other.is_some_and(|o| o.values[t].is_some());
                        if (op == T_LAND) == present {
                            s.values[t]
                        } else {
                            None
                        }
                    })
                    .collect();
                if s.values.iter().any(Option::is_some) {
                    out.push(s);
                }
            }
        }
        T_LOR => {
            let left_keys: BTreeMap<Labels, Vec<bool>> = l
                .iter()
                .map(|s| (key(s), s.values.iter().map(Option::is_some).collect()))
                .collect();
            out.extend(l.iter().cloned());
            for s in r {
                let mut s = s.clone();
                if let Some(present) = left_keys.get(&key(&s)) {
                    for (t, p) in present.iter().enumerate() {
                        if *p {
                            s.values[t] = None;
                        }
                    }
                }
                if s.values.iter().any(Option::is_some) {
                    out.push(s);
                }
            }
        }
        _ => {
            let is_cmp = compare(op, 1.0, 1.0).is_some();
            let mut seen = BTreeMap::new();
            for s in l {
                let k = key(&s);
                let Some(o) = right.get(&k) else { continue };
                if seen.insert(k.clone(), ()).is_some() {
                    return Err(EvalError::Execution(
                        "many-to-many matching: several series on the left side share the \
                         same matching labels"
                            .into(),
                    ));
                }
                let values: Vec<Option<f64>> = (0..n)
                    .map(|t| match (s.values[t], o.values[t]) {
                        (Some(a), Some(b)) => apply(op, a, b, a, return_bool),
                        _ => None,
                    })
                    .collect();
                let labels = if is_cmp && !return_bool {
                    s.labels
                } else {
                    match matching {
                        Some(LabelModifier::Include(_)) => k,
                        _ => key_labels(&s.labels, None, true),
                    }
                };
                if values.iter().any(Option::is_some) {
                    out.push(Series { labels, values });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            &[("__name__", "m_count"), ("source", "a")],
            &[Some(1.0), Some(5.0), None],
        )];
        let filtered = vector_scalar(T_GTR, v.clone(), &[2.0, 2.0, 2.0], false, false);
        assert_eq!(filtered[0].values, vec![None, Some(5.0), None]);
        assert_eq!(
            filtered[0].labels["__name__"], "m_count",
            "a filter keeps the name"
        );
        let b = vector_scalar(T_GTR, v.clone(), &[2.0, 2.0, 2.0], false, true);
        assert_eq!(b[0].values, vec![Some(0.0), Some(1.0), None]);
        assert!(!b[0].labels.contains_key("__name__"));
        // scalar on the left: 10 - v
        let d = vector_scalar(T_SUB, v, &[10.0; 3], true, false);
        assert_eq!(d[0].values, vec![Some(9.0), Some(5.0), None]);
    }

    #[test]
    fn vectors_match_on_labels_without_the_name() {
        let l = vec![
            series(&[("__name__", "m_sum"), ("source", "a")], &[Some(10.0)]),
            series(&[("__name__", "m_sum"), ("source", "b")], &[Some(8.0)]),
        ];
        let r = vec![
            series(&[("__name__", "m_count"), ("source", "a")], &[Some(4.0)]),
            series(&[("__name__", "m_count"), ("source", "c")], &[Some(1.0)]),
        ];
        let out = vector_vector(T_DIV, l.clone(), r.clone(), None, false, 1).unwrap();
        assert_eq!(out.len(), 1, "only source=a matches");
        assert_eq!(out[0].values, vec![Some(2.5)]);
        assert_eq!(out[0].labels.get("source").map(String::as_str), Some("a"));
        let unless = vector_vector(T_LUNLESS, l.clone(), r.clone(), None, false, 1).unwrap();
        assert_eq!(unless.len(), 1);
        assert_eq!(unless[0].labels["source"], "b");
        let or = vector_vector(T_LOR, l, r, None, false, 1).unwrap();
        assert_eq!(or.len(), 3, "a, b from the left and c from the right");
    }

    #[test]
    fn duplicate_matches_are_an_error_not_a_guess() {
        let l = vec![series(&[("source", "a")], &[Some(1.0)])];
        let r = vec![
            series(&[("source", "a"), ("x", "1")], &[Some(1.0)]),
            series(&[("source", "a"), ("x", "2")], &[Some(1.0)]),
        ];
        let on = LabelModifier::Include(promql_parser::label::Labels::new(vec!["source"]));
        assert!(matches!(
            vector_vector(T_ADD, l, r, Some(&on), false, 1),
            Err(EvalError::Execution(_))
        ));
    }

    #[test]
    fn negation_drops_the_name() {
        let Value::Vector(v) = negate(Value::Vector(vec![series(
            &[("__name__", "m_min")],
            &[Some(2.0)],
        )])) else {
            panic!()
        };
        assert_eq!(v[0].values, vec![Some(-2.0)]);
        assert!(v[0].labels.is_empty());
    }
}
