//! Label sets as operators see them: the metric name dropped, matching signatures, grouping
//! keys, and the rule that one vector never holds two series with the same labels.

use std::collections::HashMap;

use promql_parser::parser::LabelModifier;

use super::{EvalError, Series};
use crate::series::Labels;

/// The name label.
pub const NAME: &str = "__name__";

/// `labels` without `__name__`.
pub fn drop_name(mut labels: Labels) -> Labels {
    labels.remove(NAME);
    labels
}

/// The labels two sides match on: those of `on(…)`, all but those of `ignoring(…)` and the
/// name, or (without either) all but the name.
pub fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels
            .iter()
            .filter(|(k, _)| on.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(ignoring)) => labels
            .iter()
            .filter(|(k, _)| k.as_str() != NAME && !ignoring.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => labels
            .iter()
            .filter(|(k, _)| k.as_str() != NAME)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The labels of an aggregation's group: those of `by(…)`, all but those of `without(…)` and
/// the name, or none.
pub fn group_key(labels: &Labels, grouping: Option<&LabelModifier>) -> Labels {
    match grouping {
        Some(LabelModifier::Include(by)) => labels
            .iter()
            .filter(|(k, _)| by.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(_)) => signature(labels, grouping),
        None => Labels::new(),
    }
}

/// The message Prometheus gives when one vector would hold two series with the same labels.
pub const SAME_LABELSET: &str = "vector cannot contain metrics with the same labelset";

/// Joins series with the same labels into one, as long as they never have a value at the same
/// point (then the vector would hold both at once: an error, as in Prometheus).
pub fn merge_same(series: Vec<Series>) -> Result<Vec<Series>, EvalError> {
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(series.len());
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    for s in series {
        match index.get(&s.labels) {
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
            Some(&i) => {
                let into = &mut out[i].values;
                for (a, b) in into.iter_mut().zip(s.values) {
                    match (a.is_some(), b) {
                        (true, Some(_)) => return Err(EvalError::exec(SAME_LABELSET)),
                        (false, Some(v)) => *a = Some(v),
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Refuses series that share labels at all (what Prometheus checks after a range function).
pub fn all_distinct(series: &[Series]) -> Result<(), EvalError> {
    let mut seen = std::collections::HashSet::with_capacity(series.len());
    for s in series {
        if !seen.insert(&s.labels) {
            return Err(EvalError::exec(SAME_LABELSET));
        }
    }
    Ok(())
}

/// Formats labels as Prometheus prints them: `{a="1", b="2"}`.
pub fn display(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use promql_parser::label::Labels as Names;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn signatures_follow_on_and_ignoring() {
        let x = l(&[(NAME, "m"), ("a", "1"), ("b", "2")]);
        assert_eq!(signature(&x, None), l(&[("a", "1"), ("b", "2")]));
        let on = LabelModifier::Include(Names::new(vec!["a"]));
        assert_eq!(signature(&x, Some(&on)), l(&[("a", "1")]));
        let ign = LabelModifier::Exclude(Names::new(vec!["a"]));
        assert_eq!(signature(&x, Some(&ign)), l(&[("b", "2")]));
        // on(__name__) keeps the name; by() groups everything into one.
        let on_name = LabelModifier::Include(Names::new(vec![NAME]));
        assert_eq!(signature(&x, Some(&on_name)), l(&[(NAME, "m")]));
        assert_eq!(group_key(&x, None), Labels::new());
        let by = LabelModifier::Include(Names::new(vec![]));
        assert_eq!(group_key(&x, Some(&by)), Labels::new());
    }

    #[test]
    fn same_labels_merge_when_apart_and_fail_when_together() {
        let s = |v: Vec<Option<f64>>| Series {
            labels: l(&[("a", "1")]),
            values: v,
        };
        let merged = merge_same(vec![s(vec![Some(1.0), None]), s(vec![None, Some(2.0)])]).unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].values, vec![Some(1.0), Some(2.0)]);
        let clash = merge_same(vec![s(vec![Some(1.0), None]), s(vec![Some(3.0), None])]);
        assert_eq!(clash, Err(EvalError::exec(SAME_LABELSET)));
        assert!(all_distinct(&[s(vec![Some(1.0)]), s(vec![None])]).is_err());
    }
}
