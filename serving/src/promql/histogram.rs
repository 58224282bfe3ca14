//! `histogram_quantile` over classic histograms: series that differ only in their `le` label
//! are one histogram's cumulative buckets; the quantile is interpolated linearly inside the
//! bucket it falls in, as Prometheus does.

use std::collections::HashMap;

use super::labels::{merge_same, NAME};
use super::{EvalError, Series};
use crate::series::Labels;

/// The `q` quantile of cumulative buckets `(upper bound, count)`.
pub fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound are one bucket.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (le, c) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += c,
            _ => merged.push((le, c)),
        }
    }
    // Counts never fall as bounds rise (scrapes that are not atomic can make them).
    let mut max = merged[0].1;
    for b in merged.iter_mut().skip(1) {
        if b.1 > max {
            max = b.1;
        } else {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let n = merged.len();
    let b = merged[..n - 1].partition_point(|x| x.1 < rank);
    if b == n - 1 {
        return merged[n - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// `histogram_quantile(q, v)` at every point.
pub fn quantiles(q: &[f64], v: &[Series], n: usize) -> Result<Vec<Series>, EvalError> {
    // Histograms: the series' labels without `le` (the name included, as Prometheus keys them).
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut histograms: Vec<(Labels, Vec<(f64, &Series)>)> = Vec::new();
    for s in v {
        let Some(le) = s.labels.get("le").and_then(|l| parse_bound(l)) else {
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        let i = *index.entry(key.clone()).or_insert_with(|| {
            histograms.push((key, Vec::new()));
            histograms.len() - 1
        });
        histograms[i].1.push((le, s));
    }
    let out: Vec<Series> = histograms
        .into_iter()
        .map(|(mut labels, buckets)| {
            labels.remove(NAME);
            let values = (0..n)
                .map(|t| {
                    let present: Vec<(f64, f64)> = buckets
                        .iter()
                        .filter_map(|(le, s)| s.values[t].map(|c| (*le, c)))
                        .collect();
                    (!present.is_empty()).then(|| bucket_quantile(q[t], present))
                })
                .collect();
            Series { labels, values }
        })
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect();
    merge_same(out)
}

/// An `le` label's bound (`+Inf` included).
fn parse_bound(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_inside_the_bucket() {
        // 10 observations: 2 ≤ 0.1, 6 ≤ 0.5, 10 ≤ +Inf.
        let b = vec![(0.1, 2.0), (0.5, 6.0), (f64::INFINITY, 10.0)];
        // rank 5 of 10 falls in (0.1, 0.5] at 3/4 of its 4 observations.
        assert!((bucket_quantile(0.5, b.clone()) - 0.4).abs() < 1e-12);
        // In the +Inf bucket: the highest finite bound.
        assert_eq!(bucket_quantile(0.9, b.clone()), 0.5);
        assert_eq!(bucket_quantile(0.1, b.clone()), 0.05);
        assert!(
            bucket_quantile(0.5, vec![(0.1, 2.0)]).is_nan(),
            "no +Inf bucket"
        );
        assert_eq!(bucket_quantile(2.0, b), f64::INFINITY);
        assert_eq!(parse_bound("+Inf"), Some(f64::INFINITY));
    }
}
