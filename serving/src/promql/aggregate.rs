//! Aggregations, point by point: `sum avg min max count group stddev stdvar quantile topk
//! bottomk count_values` with `by` / `without`, computed as Prometheus computes them (its
//! incremental mean and variance, its NaN rules, its quantile).

use std::collections::HashMap;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};

use super::eval::{unparen, Evaluator, Grid};
use super::labels::{drop_name, group_key, merge_same};
use super::range_fns::kahan_inc;
use super::{EvalError, Series, Value};
use crate::series::Labels;

/// The `q` quantile of `values` (sorted here), interpolating between the closest ranks;
/// −∞ below 0, +∞ above 1, NaN for no value or a NaN `q`.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as Prometheus' sort of samples by value does.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// A running aggregate of one group at one point, as Prometheus 3 keeps it: Kahan sums, the
/// mean from the sum until the sum would overflow (then incrementally), Welford's variance.
#[derive(Clone)]
struct Acc {
    value: f64,
    c: f64,
    mean: f64,
    count: f64,
    incremental: bool,
    values: Vec<f64>,
}

impl Acc {
    fn first(op: u16, v: f64) -> Self {
        let value = match op {
            T_STDDEV | T_STDVAR if !v.is_finite() => f64::NAN,
            T_STDDEV | T_STDVAR => 0.0,
            T_GROUP => 1.0,
            _ => v,
        };
        Acc {
            value,
            c: 0.0,
            mean: v,
            count: 1.0,
            incremental: false,
            values: if op == T_QUANTILE {
                vec![v]
            } else {
                Vec::new()
            },
        }
    }

    fn add(&mut self, op: u16, v: f64) {
        match op {
            T_SUM => (self.value, self.c) = kahan_inc(v, self.value, self.c),
            T_AVG => {
                self.count += 1.0;
                if !self.incremental {
                    let (s, c) = kahan_inc(v, self.value, self.c);
                    if !s.is_infinite() {
                        (self.value, self.c) = (s, c);
                        return;
                    }
                    self.incremental = true;
                    self.mean = self.value / (self.count - 1.0);
                    self.c /= self.count - 1.0;
                }
                let q = (self.count - 1.0) / self.count;
                (self.mean, self.c) = kahan_inc(v / self.count, q * self.mean, q * self.c);
            }
            T_MAX if self.value < v || self.value.is_nan() => self.value = v,
            T_MIN if self.value > v || self.value.is_nan() => self.value = v,
            T_COUNT | T_COUNT_VALUES => self.count += 1.0,
            T_STDDEV | T_STDVAR => {
                self.count += 1.0;
                let delta = v - self.mean;
                self.mean += delta / self.count;
                self.value += delta * (v - self.mean);
            }
            T_QUANTILE => self.values.push(v),
            _ => {} // group
        }
    }

    fn result(mut self, op: u16, q: f64) -> f64 {
        match op {
            T_SUM => self.value + self.c,
            T_AVG if self.incremental => self.mean + self.c,
            T_AVG => self.value / self.count + self.c / self.count,
            T_COUNT | T_COUNT_VALUES => self.count,
            T_STDVAR => self.value / self.count,
            T_STDDEV => (self.value / self.count).sqrt(),
            T_QUANTILE => quantile(q, &mut self.values),
            _ => self.value,
        }
    }
}

/// The text of a value as a label value (`count_values`), as Go's `FormatFloat(v, 'f', -1)`.
pub fn value_label(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl Evaluator<'_> {
    /// Evaluates an aggregation.
    pub(super) async fn aggregate(
        &self,
        a: &AggregateExpr,
        grid: &Grid,
    ) -> Result<Value, EvalError> {
        let op = a.op.id();
        let name = a.op.to_string();
        if !matches!(
            op,
            T_SUM
                | T_AVG
                | T_MIN
                | T_MAX
                | T_COUNT
                | T_GROUP
                | T_STDDEV
                | T_STDVAR
                | T_QUANTILE
                | T_TOPK
                | T_BOTTOMK
                | T_COUNT_VALUES
        ) {
            return Err(EvalError::bad(format!(
                "aggregation {name}() is not supported (experimental in Prometheus 3)"
            )));
        }
        let input = self.vector_arg(&a.expr, grid, &format!("{name}()")).await?;
        let n = grid.len();
        let modifier = a.modifier.as_ref();
        match op {
            T_COUNT_VALUES => {
                let label =
                    match a.param.as_deref().map(unparen) {
                        Some(Expr::StringLiteral(s)) => s.val.clone(),
                        _ => return Err(EvalError::bad(
                            "count_values() needs a label name (a string) as its first argument",
                        )),
                    };
                if !strata_shared::validate::is_label_name(&label) {
                    return Err(EvalError::exec(format!("invalid label name {label:?}")));
                }
                Ok(Value::Vector(count_values(&label, modifier, &input, n)))
            }
            T_TOPK | T_BOTTOMK => {
                let Some(p) = &a.param else {
                    return Err(EvalError::bad(format!("{name}() needs k")));
                };
                let k = self.scalar_arg(p, grid, &format!("{name}(): k")).await?;
                Ok(Value::Vector(top(op == T_TOPK, &k, modifier, input, n)?))
            }
            _ => {
                let q = match (&a.param, op) {
                    (Some(p), T_QUANTILE) => self.scalar_arg(p, grid, "quantile(): φ").await?,
                    _ => vec![f64::NAN; n],
                };
                Ok(Value::Vector(fold(op, &q, modifier, &input, n)))
            }
        }
    }
}

/// The aggregations that give one number per group and point.
fn fold(
    op: u16,
    q: &[f64],
    modifier: Option<&LabelModifier>,
    input: &[Series],
    n: usize,
) -> Vec<Series> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<(Labels, Vec<Option<Acc>>)> = Vec::new();
    for s in input {
        let key = group_key(&s.labels, modifier);
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, vec![None; n]));
            groups.len() - 1
        });
        let accs = &mut groups[g].1;
        for (t, v) in s.values.iter().enumerate() {
            let Some(v) = *v else { continue };
            match &mut accs[t] {
                None => accs[t] = Some(Acc::first(op, v)),
                Some(acc) => acc.add(op, v),
            }
        }
    }
    groups
        .into_iter()
        .map(|(labels, accs)| Series {
            labels,
            values: accs
                .into_iter()
                .enumerate()
                .map(|(t, a)| a.map(|a| a.result(op, q[t])))
                .collect(),
        })
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect()
}

/// `topk` / `bottomk`: per group and point, the `k` largest (smallest) keep their value there.
fn top(
    largest: bool,
    k: &[f64],
    modifier: Option<&LabelModifier>,
    input: Vec<Series>,
    n: usize,
) -> Result<Vec<Series>, EvalError> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, s) in input.iter().enumerate() {
        let g = *index
            .entry(group_key(&s.labels, modifier))
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[g].push(i);
    }
    let mut keep = vec![vec![false; n]; input.len()];
    // The order an instant query lists them in: group by group, largest (smallest) first.
    let mut rank = vec![usize::MAX; input.len()];
    let mut ranked = 0;
    for (t, &kk) in k.iter().enumerate() {
        if kk.is_nan() {
            return Err(EvalError::exec("Parameter value is NaN"));
        }
        if kk.abs() >= 9.2e18 {
            return Err(EvalError::exec(format!(
                "Scalar value {kk} overflows int64"
            )));
        }
        if kk < 1.0 {
            continue;
        }
        let kk = kk as usize;
        for members in &groups {
            let mut present: Vec<(usize, f64)> = members
                .iter()
                .filter_map(|&i| input[i].values[t].map(|v| (i, v)))
                .collect();
            // Largest first (smallest for bottomk); NaN last either way.
            present.sort_by(|a, b| match (a.1.is_nan(), b.1.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if largest => b.1.total_cmp(&a.1),
                _ => a.1.total_cmp(&b.1),
            });
            for (i, _) in present.into_iter().take(kk) {
                if t == 0 {
                    rank[i] = ranked;
                    ranked += 1;
                }
                keep[i][t] = true;
            }
        }
    }
    let mut out: Vec<(usize, Series)> = input
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let values = s
                .values
                .iter()
                .zip(&keep[i])
                .map(|(v, k)| if *k { *v } else { None })
                .collect();
            (
                i,
                Series {
                    labels: s.labels,
                    values,
                },
            )
        })
        .filter(|(_, s)| s.values.iter().any(Option::is_some))
        .collect();
    out.sort_by_key(|(i, _)| rank[*i]);
    Ok(out.into_iter().map(|(_, s)| s).collect())
}

/// `count_values`: per group and point, how many series have each value (the value becomes a
/// label).
fn count_values(
    label: &str,
    modifier: Option<&LabelModifier>,
    input: &[Series],
    n: usize,
) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for s in input {
        for (t, v) in s.values.iter().enumerate() {
            let Some(v) = *v else { continue };
            let mut labels = s.labels.clone();
            labels.insert(label.to_owned(), value_label(v));
            let key = match modifier {
                None => labels
                    .iter()
                    .filter(|(k, _)| k.as_str() == label)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                Some(LabelModifier::Include(by)) => labels
                    .iter()
                    .filter(|(k, _)| k.as_str() == label || by.labels.iter().any(|l| l == *k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                Some(m @ LabelModifier::Exclude(_)) => drop_name(group_key(&labels, Some(m))),
            };
            let g = *index.entry(key.clone()).or_insert_with(|| {
                out.push(Series {
                    labels: key,
                    values: vec![None; n],
                });
                out.len() - 1
            });
            let c = &mut out[g].values[t];
            *c = Some(c.unwrap_or(0.0) + 1.0);
        }
    }
    // Groups never collide: their labels are their keys.
    merge_same(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_between_ranks() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0, 4.0]), 2.5);
        assert_eq!(quantile(0.0, &mut [5.0, 1.0]), 1.0);
        assert_eq!(quantile(1.0, &mut [5.0, 1.0]), 5.0);
        assert_eq!(quantile(-0.1, &mut [1.0]), f64::NEG_INFINITY);
        assert_eq!(quantile(1.1, &mut [1.0]), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
        assert!(quantile(f64::NAN, &mut [1.0]).is_nan());
    }

    #[test]
    fn value_labels_as_go_formats_them() {
        assert_eq!(value_label(1.0), "1");
        assert_eq!(value_label(0.1), "0.1");
        assert_eq!(value_label(-2.5), "-2.5");
        assert_eq!(value_label(1e21), "1000000000000000000000");
        assert_eq!(value_label(f64::INFINITY), "+Inf");
        assert_eq!(value_label(f64::NAN), "NaN");
    }

    #[test]
    fn variance_is_welfords() {
        let mut a = Acc::first(T_STDVAR, 2.0);
        for v in [4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            a.add(T_STDVAR, v);
        }
        assert_eq!(a.clone().result(T_STDVAR, 0.0), 4.0);
        assert_eq!(a.result(T_STDDEV, 0.0), 2.0);
    }
}
