//! A mergeable quantile sketch (logarithmic buckets, as DDSketch): what the batch rollups store
//! next to their exact quantiles so the serving layer can answer quantiles at any step.
//!
//! A value `v` falls in the bucket with key [`key`]`(v)`; a bucket holds a count. Two sketches
//! merge by adding counts per key, so a window of any width is the sum of its minute sketches.
//! The quantile read back from a sketch is within [`RELATIVE_ACCURACY`] (1 %) of a value whose
//! rank is the requested one. Keys sort in value order: negative values below zero below positive.
//!
//! The batch layer's recompute stores each bucket's sketch with [`key`] itself (the aggregate
//! `strata_quantiles` of `strata-batch`), so stored and merged keys cannot disagree.

/// Relative accuracy α of a quantile read from a sketch.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// γ = (1 + α) / (1 − α): each bucket spans `(γ^(k−1), γ^k]`.
pub const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
/// ln γ, the divisor of the key formula (filled into the rollup SQL).
pub const LN_GAMMA: f64 = 0.020_000_666_706_669_435;
/// Keys of positive values are `OFFSET + k`, of negative values `−OFFSET − k`, of zero `0`.
pub const OFFSET: i32 = 1_000_000;

/// The bucket key of a finite value.
///
/// ```
/// use strata_shared::sketch::{key, value_of};
/// assert_eq!(key(0.0), 0);
/// assert!(key(-5.0) < key(0.0) && key(0.0) < key(1e-9) && key(1e-9) < key(5.0));
/// assert!((value_of(key(250.0)) / 250.0 - 1.0).abs() <= 0.01);
/// ```
pub fn key(v: f64) -> i32 {
    if v > 0.0 {
        OFFSET + (v.ln() / LN_GAMMA).ceil() as i32
    } else if v < 0.0 {
        -OFFSET - ((-v).ln() / LN_GAMMA).ceil() as i32
    } else {
        0
    }
}

/// The value a key stands for: the point of its bucket with the smallest relative error.
pub fn value_of(key: i32) -> f64 {
    let mid = |k: i32| 2.0 * GAMMA.powi(k) / (GAMMA + 1.0);
    if key > 0 {
        mid(key - OFFSET)
    } else if key < 0 {
        -mid(-key - OFFSET)
    } else {
        0.0
    }
}

/// Bucket counts by key.
///
/// Held as a vector sorted by key: a minute's sketch has a handful of buckets, and the serving
/// layer holds one per series and minute of a quantile query, so its size matters more than
/// the cost of an insert in the middle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    /// (key, count), keys strictly ascending.
    counts: Vec<(i32, u64)>,
}

impl Sketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&mut self, k: i32, c: u64) {
        match self.counts.binary_search_by_key(&k, |e| e.0) {
            Ok(i) => self.counts[i].1 += c,
            Err(i) => self.counts.insert(i, (k, c)),
        }
    }

    /// Adds one value.
    pub fn insert(&mut self, v: f64) {
        self.add(key(v), 1);
    }

    /// Adds stored buckets (keys and counts of equal length, as in a rollup row).
    pub fn merge_buckets(&mut self, keys: &[i32], counts: &[i64]) {
        let n = keys.len().min(counts.len());
        if self.counts.is_empty() && keys[..n].windows(2).all(|w| w[0] < w[1]) {
            // Stored sketches are sorted: take them as they are.
            self.counts = keys[..n]
                .iter()
                .zip(counts)
                .map(|(k, c)| (*k, (*c).max(0) as u64))
                .collect();
            return;
        }
        for (k, c) in keys.iter().zip(counts) {
            self.add(*k, (*c).max(0) as u64);
        }
    }

    /// Adds another sketch.
    pub fn merge(&mut self, other: &Sketch) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.counts.clone_from(&other.counts);
            return;
        }
        let mut out = Vec::with_capacity(self.counts.len() + other.counts.len());
        let (mut a, mut b) = (
            self.counts.iter().peekable(),
            other.counts.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 < y.0 => out.push(*a.next().expect("peeked")),
                (Some(x), Some(y)) if x.0 > y.0 => out.push(*b.next().expect("peeked")),
                (Some(x), Some(y)) => {
                    out.push((x.0, x.1 + y.1));
                    a.next();
                    b.next();
                }
                (Some(_), None) => {
                    out.extend(a);
                    break;
                }
                (None, Some(_)) => {
                    out.extend(b);
                    break;
                }
                (None, None) => break,
            }
        }
        self.counts = out;
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|e| e.1).sum()
    }

    /// The quantile `q` (0 ≤ q ≤ 1), interpolated between the closest ranks as the exact
    /// definition is; `None` when empty. `min`/`max`, when known, clamp the ends exactly.
    pub fn quantile(&self, q: f64, min: Option<f64>, max: Option<f64>) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let (lo, hi) = (pos.floor() as u64, pos.ceil() as u64);
        let a = self.value_at_rank(lo);
        let b = self.value_at_rank(hi);
        let v = a + (b - a) * (pos - lo as f64);
        let v = min.map_or(v, |m| v.max(m));
        Some(max.map_or(v, |m| v.min(m)))
    }

    /// The bucket value of the value with 0-based rank `r`.
    fn value_at_rank(&self, r: u64) -> f64 {
        let mut seen = 0;
        for (k, c) in &self.counts {
            seen += c;
            if seen > r {
                return value_of(*k);
            }
        }
        self.counts.last().map_or(0.0, |e| value_of(e.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::quantile_cont;

    #[test]
    fn ln_gamma_matches_gamma() {
        assert!((GAMMA.ln() - LN_GAMMA).abs() < 1e-15);
    }

    #[test]
    fn every_bucket_value_is_within_the_accuracy_of_its_members() {
        for v in [
            1e-300, 1e-6, 0.5, 1.0, 1.0000001, 3.0, 99.5, 1e6, 4.2e15, 1e300,
        ] {
            for v in [v, -v] {
                let got = value_of(key(v));
                assert!(
                    (got - v).abs() <= RELATIVE_ACCURACY * v.abs() * (1.0 + 1e-9),
                    "{v} → {got}"
                );
            }
        }
    }

    #[test]
    fn keys_sort_like_values() {
        let vs = [-1e9, -3.0, -1e-3, 0.0, 1e-3, 0.999, 1.0, 7.0, 1e12];
        let keys: Vec<i32> = vs.iter().map(|v| key(*v)).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{keys:?}");
    }

    #[test]
    fn merged_minutes_answer_the_hour_within_accuracy() {
        // 60 minute sketches of different shapes, merged, against the exact hour quantile.
        let mut hour = Sketch::new();
        let mut all = Vec::new();
        for m in 0..60u32 {
            let mut minute = Sketch::new();
            for i in 0..100u32 {
                let v = f64::from((i * 37 + m * 11) % 1000) / 4.0 + f64::from(m);
                minute.insert(v);
                all.push(v);
            }
            hour.merge(&minute);
        }
        all.sort_by(f64::total_cmp);
        assert_eq!(hour.count(), 6000);
        for q in [0.5, 0.9, 0.95, 0.99] {
            let exact = quantile_cont(&all, q).unwrap();
            let est = hour.quantile(q, Some(all[0]), Some(all[5999])).unwrap();
            assert!(
                (est - exact).abs() <= 0.011 * exact.abs(),
                "q{q}: {est} vs {exact}"
            );
        }
        assert_eq!(Sketch::new().quantile(0.5, None, None), None);
    }

    #[test]
    fn stored_buckets_merge_like_sketches() {
        let mut a = Sketch::new();
        a.merge_buckets(&[0, key(2.0)], &[3, 4]);
        let mut b = Sketch::new();
        for v in [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0] {
            b.insert(v);
        }
        assert_eq!(a, b);
        assert_eq!(a.quantile(0.0, None, None), Some(0.0));
    }

    #[test]
    fn merging_is_the_same_in_any_order_and_from_any_form() {
        let values = [5.0, -1.0, 0.0, 250.0, 5.0, 1e-3, 7.5, 250.0, -1.0, 42.0];
        let mut one = Sketch::new();
        values.iter().for_each(|v| one.insert(*v));
        // Two halves merged either way round.
        let (mut a, mut b) = (Sketch::new(), Sketch::new());
        values[..4].iter().for_each(|v| a.insert(*v));
        values[4..].iter().for_each(|v| b.insert(*v));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, one);
        assert_eq!(ba, one);
        // Stored buckets out of order, with a repeated key and a negative count (ignored).
        let mut stored = Sketch::new();
        stored.merge_buckets(&[key(5.0), 0, key(5.0)], &[1, 1, 1]);
        let mut direct = Sketch::new();
        [5.0, 0.0, 5.0].iter().for_each(|v| direct.insert(*v));
        assert_eq!(stored, direct);
        let mut neg = Sketch::new();
        neg.merge_buckets(&[key(1.0)], &[-3]);
        assert_eq!(neg.count(), 0);
        assert_eq!(one.count(), values.len() as u64);
    }
}
