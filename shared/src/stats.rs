//! Exact statistics over a bucket of values: the definitions Strata's batch layer, the load
//! generator's ground truth and the tests agree on.
//!
//! "Exact quantile" is linear interpolation between the closest ranks (DuckDB `quantile_cont`,
//! NumPy's default, DataFusion `percentile_cont`): for sorted `v` of length `n`, position
//! `p = q·(n−1)`, result `v[⌊p⌋] + (v[⌈p⌉] − v[⌊p⌋])·(p − ⌊p⌋)`.

/// The quantiles every rollup reports, in this order.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// The exact quantile `q` (0 ≤ q ≤ 1) of already sorted values; `None` when empty.
///
/// ```
/// use strata_shared::stats::quantile_cont;
/// assert_eq!(quantile_cont(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
/// assert_eq!(quantile_cont(&[7.0], 0.99), Some(7.0));
/// ```
pub fn quantile_cont(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let (a, b) = (sorted[lo], sorted[hi]);
    Some(a + (b - a) * (pos - lo as f64))
}

/// Count, sum, min, max and the [`QUANTILES`] of one bucket.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Number of values.
    pub count: u64,
    /// Sum of the values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Exact p50, p90, p95, p99.
    pub quantiles: [f64; 4],
}

impl Summary {
    /// Summarises a non-empty bucket (sorts it in place). `None` when empty.
    pub fn of(values: &mut [f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(f64::total_cmp);
        let q = |p| quantile_cont(values, p).expect("non-empty");
        Some(Summary {
            count: values.len() as u64,
            sum: values.iter().sum(),
            min: values[0],
            max: values[values.len() - 1],
            quantiles: QUANTILES.map(q),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_linear_interpolation() {
        // numpy.quantile([10, 20, 30, 40, 50], [0.5, 0.9, 0.95, 0.99]) → 30, 46, 48, 49.6
        let v = [10.0, 20.0, 30.0, 40.0, 50.0];
        let got: Vec<f64> = QUANTILES
            .iter()
            .map(|&q| quantile_cont(&v, q).unwrap())
            .collect();
        let want = [30.0, 46.0, 48.0, 49.6];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
    }

    #[test]
    fn edges() {
        assert_eq!(quantile_cont(&[], 0.5), None);
        assert_eq!(quantile_cont(&[1.0, 9.0], 0.0), Some(1.0));
        assert_eq!(quantile_cont(&[1.0, 9.0], 1.0), Some(9.0));
    }

    #[test]
    fn summary_sorts_and_counts() {
        let mut v = vec![3.0, -1.0, 2.0, 10.0];
        let s = Summary::of(&mut v).unwrap();
        assert_eq!((s.count, s.sum, s.min, s.max), (4, 14.0, -1.0, 10.0));
        assert_eq!(s.quantiles[0], 2.5);
        assert!(Summary::of(&mut []).is_none());
    }
}
