//! Re-aggregation of rollup buckets into query windows — the heart of the merge.
//!
//! Both layers deliver [`Bucket`]s: a batch bucket is one row of `rollup_1m` / `rollup_1h`
//! (exact quantiles plus a mergeable [`Sketch`]); a speed bucket is ClickHouse's merge of its
//! t-digest states over one window or minute (quantiles only, not mergeable further). A point at
//! time `t` with window width `r` aggregates every bucket whose **end** lies in `(t − r, t]`, so
//! each bucket counts in exactly one point when `r` equals the step, whatever the step.
//!
//! Counts and sums are summed, min of mins, max of maxes. Quantiles: one bucket → its own (exact
//! for batch); several batch buckets → their merged sketch (1 % relative accuracy); buckets that
//! include a speed bucket → the quantile of the count-weighted mixture of each bucket's
//! distribution (the sketch's, or a piecewise-linear one through the t-digest's min, p50, p90,
//! p95, p99 and max).

use std::sync::Arc;

use strata_shared::sketch::Sketch;
use strata_shared::stats::QUANTILES;

/// Which layer a bucket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// The batch views (exact).
    Batch,
    /// The speed layer's ClickHouse rollups.
    Speed,
}

/// What a query reads from its buckets. Quantiles cost most to produce (ClickHouse merges
/// t-digest states, windows of several buckets merge sketches), so a query that shows none
/// asks for [`Need::Totals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Count, sum, min and max (and what follows from them: the mean).
    Totals,
    /// Also the quantiles.
    Quantiles,
}

/// One rollup bucket of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// End of the bucket (exclusive), Unix ms.
    pub end_ms: i64,
    /// Number of events.
    pub count: u64,
    /// Sum of values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// p50, p90, p95, p99 of the bucket.
    pub quantiles: [f64; 4],
    /// The bucket's mergeable sketch (batch buckets).
    pub sketch: Option<Arc<Sketch>>,
    /// The newest value and its time, Unix ms (`None` for rows written before Strata kept it).
    pub last: Option<(i64, f64)>,
    /// Where it came from.
    pub layer: Layer,
}

/// The aggregate of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    /// Number of events.
    pub count: u64,
    /// Sum of values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// p50, p90, p95, p99.
    pub quantiles: [f64; 4],
    /// The newest value and its time (the newest of the buckets').
    pub last: Option<(i64, f64)>,
}

/// The newer of two (time, value) pairs: the later, or at one time the larger value — the rule
/// both layers write `last` by.
pub fn newer(a: Option<(i64, f64)>, b: Option<(i64, f64)>) -> Option<(i64, f64)> {
    match (a, b) {
        (Some(x), Some(y)) => {
            let later = y.0 > x.0 || (y.0 == x.0 && y.1.total_cmp(&x.1).is_gt());
            Some(if later { y } else { x })
        }
        (x, None) => x,
        (None, y) => y,
    }
}

impl Agg {
    /// The mean.
    pub fn avg(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// Aggregates buckets into one window; `None` when there is nothing (no event) in it. With
/// [`Need::Totals`] the quantiles are left NaN.
pub fn aggregate(buckets: &[&Bucket], need: Need) -> Option<Agg> {
    let buckets: Vec<&&Bucket> = buckets.iter().filter(|b| b.count > 0).collect();
    let first = buckets.first()?;
    let mut agg = Agg {
        count: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        quantiles: match need {
            Need::Quantiles => first.quantiles,
            Need::Totals => [f64::NAN; 4],
        },
        last: None,
    };
    for b in &buckets {
        agg.last = newer(agg.last, b.last);
        agg.count += b.count;
        agg.sum += b.sum;
        agg.min = agg.min.min(b.min);
        agg.max = agg.max.max(b.max);
    }
    if buckets.len() > 1 && need == Need::Quantiles {
        agg.quantiles = if buckets.iter().all(|b| b.sketch.is_some()) {
            let mut merged = Sketch::new();
            for b in &buckets {
                merged.merge(b.sketch.as_ref().expect("checked"));
            }
            QUANTILES.map(|q| {
                merged
                    .quantile(q, Some(agg.min), Some(agg.max))
                    .unwrap_or(f64::NAN)
            })
        } else {
            let parts: Vec<(f64, Vec<(f64, f64)>)> = buckets
                .iter()
                .map(|b| (b.count as f64, cdf_knots(b)))
                .collect();
            QUANTILES.map(|q| mixture_quantile(&parts, q, agg.min, agg.max))
        };
    }
    Some(agg)
}

/// Points `(value, cumulative probability)` of a bucket's distribution, increasing.
fn cdf_knots(b: &Bucket) -> Vec<(f64, f64)> {
    let mut knots = Vec::with_capacity(102);
    knots.push((b.min, 0.0));
    match &b.sketch {
        Some(s) => {
            for i in 1..100 {
                let p = f64::from(i) / 100.0;
                if let Some(v) = s.quantile(p, Some(b.min), Some(b.max)) {
                    knots.push((v, p));
                }
            }
        }
        None => {
            for (q, v) in QUANTILES.iter().zip(b.quantiles) {
                knots.push((v.clamp(b.min, b.max), *q));
            }
        }
    }
    knots.push((b.max, 1.0));
    // Keep it monotone in value (t-digest estimates can cross by rounding).
    for i in 1..knots.len() {
        if knots[i].0 < knots[i - 1].0 {
            knots[i].0 = knots[i - 1].0;
        }
    }
    knots
}

/// P(X ≤ x) of a piecewise-linear distribution.
fn cdf_at(knots: &[(f64, f64)], x: f64) -> f64 {
    if x < knots[0].0 {
        return 0.0;
    }
    for w in knots.windows(2) {
        let ((x0, p0), (x1, p1)) = (w[0], w[1]);
        if x < x1 {
            return if x1 > x0 {
                p0 + (p1 - p0) * (x - x0) / (x1 - x0)
            } else {
                p1
            };
        }
    }
    1.0
}

/// The `q` quantile of the count-weighted mixture, by bisection over `[lo, hi]`.
fn mixture_quantile(parts: &[(f64, Vec<(f64, f64)>)], q: f64, lo: f64, hi: f64) -> f64 {
    let total: f64 = parts.iter().map(|(n, _)| n).sum();
    let f = |x: f64| parts.iter().map(|(n, k)| n * cdf_at(k, x)).sum::<f64>() / total;
    let (mut a, mut b) = (lo, hi);
    for _ in 0..100 {
        let m = a + (b - a) / 2.0;
        if m <= a || m >= b {
            break;
        }
        if f(m) < q {
            a = m;
        } else {
            b = m;
        }
    }
    b
}

/// For each point `t` of `steps` (sorted), the buckets whose end is in `(t − range_ms, t]`.
/// `buckets` must be sorted by `end_ms`.
pub fn windows<'a>(buckets: &'a [Bucket], steps: &[i64], range_ms: i64) -> Vec<Vec<&'a Bucket>> {
    let mut out = Vec::with_capacity(steps.len());
    let mut lo = 0;
    for &t in steps {
        while lo < buckets.len() && buckets[lo].end_ms <= t - range_ms {
            lo += 1;
        }
        let mut hi = lo;
        let mut w = Vec::new();
        while hi < buckets.len() && buckets[hi].end_ms <= t {
            w.push(&buckets[hi]);
            hi += 1;
        }
        out.push(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shared::stats::quantile_cont;

    fn batch(end_ms: i64, values: &[f64]) -> Bucket {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mut sketch = Sketch::new();
        v.iter().for_each(|x| sketch.insert(*x));
        Bucket {
            end_ms,
            count: v.len() as u64,
            sum: v.iter().sum(),
            min: v[0],
            max: v[v.len() - 1],
            quantiles: QUANTILES.map(|q| quantile_cont(&v, q).unwrap()),
            sketch: Some(Arc::new(sketch)),
            last: Some((end_ms - 1, values[values.len() - 1])),
            layer: Layer::Batch,
        }
    }

    fn speed(end_ms: i64, values: &[f64]) -> Bucket {
        Bucket {
            sketch: None,
            layer: Layer::Speed,
            ..batch(end_ms, values)
        }
    }

    #[test]
    fn each_bucket_lands_in_exactly_one_point_when_the_window_is_the_step() {
        let buckets: Vec<Bucket> = (1..=10).map(|m| batch(m * 60_000, &[1.0])).collect();
        for step in [30_000, 60_000, 90_000, 120_000, 420_000] {
            let steps: Vec<i64> = (0..=(600_000 / step + 1)).map(|k| k * step).collect();
            let total: usize = windows(&buckets, &steps, step).iter().map(Vec::len).sum();
            assert_eq!(total, 10, "step {step}");
        }
        // A range longer than the step counts a bucket in several points.
        let w = windows(&buckets, &[300_000, 360_000], 300_000);
        assert_eq!((w[0].len(), w[1].len()), (5, 5));
    }

    #[test]
    fn one_bucket_keeps_its_exact_quantiles() {
        let b = batch(60_000, &[1.0, 2.0, 3.0, 10.0]);
        let a = aggregate(&[&b], Need::Quantiles).unwrap();
        assert_eq!(a.quantiles, b.quantiles);
        assert_eq!((a.count, a.sum, a.min, a.max), (4, 16.0, 1.0, 10.0));
        assert_eq!(a.avg(), 4.0);
    }

    #[test]
    fn batch_buckets_merge_through_their_sketches() {
        let vals: Vec<Vec<f64>> = (0..30)
            .map(|m| {
                (0..50)
                    .map(|i| f64::from((i * 7 + m * 13) % 200 + 1))
                    .collect()
            })
            .collect();
        let buckets: Vec<Bucket> = vals
            .iter()
            .enumerate()
            .map(|(m, v)| batch(m as i64 * 60_000, v))
            .collect();
        let refs: Vec<&Bucket> = buckets.iter().collect();
        let a = aggregate(&refs, Need::Quantiles).unwrap();
        let mut all: Vec<f64> = vals.concat();
        all.sort_by(f64::total_cmp);
        assert_eq!(a.count, 1500);
        assert_eq!(a.sum, all.iter().sum::<f64>());
        for (i, q) in QUANTILES.iter().enumerate() {
            let exact = quantile_cont(&all, *q).unwrap();
            assert!(
                (a.quantiles[i] - exact).abs() <= 0.011 * exact,
                "{q}: {} vs {exact}",
                a.quantiles[i]
            );
        }
    }

    #[test]
    fn totals_alone_skip_the_quantiles_and_agree_on_the_rest() {
        let buckets: Vec<Bucket> = (0..5)
            .map(|m| batch(m * 60_000, &[f64::from(m as i32) + 1.0, 50.0, 7.5]))
            .collect();
        let refs: Vec<&Bucket> = buckets.iter().collect();
        let full = aggregate(&refs, Need::Quantiles).unwrap();
        let totals = aggregate(&refs, Need::Totals).unwrap();
        assert_eq!(
            (totals.count, totals.sum, totals.min, totals.max),
            (full.count, full.sum, full.min, full.max)
        );
        assert!(full.quantiles.iter().all(|q| q.is_finite()));
        assert!(totals.quantiles.iter().all(|q| q.is_nan()));
        let one = aggregate(&refs[..1], Need::Totals).unwrap();
        assert!(one.quantiles.iter().all(|q| q.is_nan()));
    }

    #[test]
    fn a_mixture_across_layers_stays_between_the_parts() {
        let low = batch(60_000, &(1..=100).map(f64::from).collect::<Vec<_>>());
        let high = speed(120_000, &(1001..=1100).map(f64::from).collect::<Vec<_>>());
        let a = aggregate(&[&low, &high], Need::Quantiles).unwrap();
        assert_eq!(a.count, 200);
        // Half the events are ≤ 100 and half ≥ 1001: the median lies between the two groups,
        // p90 inside the high group.
        assert!(
            a.quantiles[0] >= 99.0 && a.quantiles[0] <= 1002.0,
            "{:?}",
            a.quantiles
        );
        assert!(
            a.quantiles[1] > 1001.0 && a.quantiles[1] <= 1100.0,
            "{:?}",
            a.quantiles
        );
        let exact_p90 = 1080.1;
        assert!((a.quantiles[1] - exact_p90).abs() / exact_p90 < 0.01);
    }

    #[test]
    fn empty_windows_have_no_point() {
        assert_eq!(aggregate(&[], Need::Quantiles), None);
        let mut b = batch(60_000, &[1.0]);
        b.count = 0;
        assert_eq!(aggregate(&[&b], Need::Quantiles), None);
    }
}
