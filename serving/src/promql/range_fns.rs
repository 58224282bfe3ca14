//! Functions of a range vector, one series' window at a time: the `*_over_time` family, the
//! counter and gauge functions (`rate`, `increase`, `delta`, `irate`, `idelta`, `deriv`,
//! `predict_linear`, `changes`, `resets`) and smoothing — each computed as Prometheus (3.x)
//! computes it, Kahan sums and extrapolation included, so answers agree to the last bits that
//! matter.

/// One window of one series, and where it sits.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    /// The samples (ms, value), increasing in time; never empty.
    pub samples: &'a [(i64, f64)],
    /// The window's end, ms (the evaluation time moved by `offset` / `@`).
    pub end_ms: i64,
    /// The range, ms: the window is `(end − range, end]`.
    pub range_ms: i64,
    /// The evaluation time, ms (what `predict_linear` predicts from).
    pub eval_ms: i64,
}

/// Prometheus' Kahan–Neumaier step: adds `inc` to `(sum, c)` (an infinite sum has no
/// compensation).
pub(super) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

fn values<'a>(w: &'a Window) -> impl Iterator<Item = f64> + 'a {
    w.samples.iter().map(|s| s.1)
}

/// `sum_over_time`.
pub fn sum(w: &Window) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for v in values(w) {
        (s, c) = kahan_inc(v, s, c);
    }
    if s.is_infinite() {
        s
    } else {
        s + c
    }
}

/// `avg_over_time`: the Kahan sum over the count, or (once the sum would overflow) the
/// incremental mean, as Prometheus 3 computes it.
pub fn avg(w: &Window) -> f64 {
    let mut it = values(w);
    let (mut sum, mut c, mut mean) = (it.next().unwrap_or(f64::NAN), 0.0, 0.0);
    let mut count = 1.0;
    let mut incremental = false;
    for v in it {
        count += 1.0;
        if !incremental {
            let (s2, c2) = kahan_inc(v, sum, c);
            if !s2.is_infinite() {
                (sum, c) = (s2, c2);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(v / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

/// `max_over_time` (a NaN is replaced by any number).
pub fn max(w: &Window) -> f64 {
    let mut m = w.samples[0].1;
    for v in values(w) {
        if v > m || m.is_nan() {
            m = v;
        }
    }
    m
}

/// `min_over_time`.
pub fn min(w: &Window) -> f64 {
    let mut m = w.samples[0].1;
    for v in values(w) {
        if v < m || m.is_nan() {
            m = v;
        }
    }
    m
}

/// `stdvar_over_time`: Welford's algorithm with Kahan sums.
pub fn stdvar(w: &Window) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for v in values(w) {
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// `quantile_over_time`.
pub fn quantile(q: f64, w: &Window) -> f64 {
    let mut v: Vec<f64> = values(w).collect();
    super::aggregate::quantile(q, &mut v)
}

/// `mad_over_time`: the median absolute deviation from the median.
pub fn mad(w: &Window) -> f64 {
    let mut v: Vec<f64> = values(w).collect();
    if v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    let median = super::aggregate::quantile(0.5, &mut v);
    for x in &mut v {
        *x = (*x - median).abs();
    }
    super::aggregate::quantile(0.5, &mut v)
}

/// `changes`: how often the value changed.
pub fn changes(w: &Window) -> f64 {
    let mut n = 0;
    let mut prev = w.samples[0].1;
    for v in values(w).skip(1) {
        if v != prev && !(v.is_nan() && prev.is_nan()) {
            n += 1;
        }
        prev = v;
    }
    f64::from(n)
}

/// `resets`: how often the value went down.
pub fn resets(w: &Window) -> f64 {
    let mut n = 0;
    let mut prev = w.samples[0].1;
    for v in values(w).skip(1) {
        if v < prev {
            n += 1;
        }
        prev = v;
    }
    f64::from(n)
}

/// `rate`, `increase` and `delta` as Prometheus computes them: the change over the samples
/// (counter resets added back for counters), extrapolated towards the window's edges — all the
/// way where the first (last) sample is within 110 % of the average spacing of the edge, else
/// half a spacing; a counter not below zero.
pub fn extrapolated(w: &Window, counter: bool, per_second: bool) -> Option<f64> {
    let s = w.samples;
    if s.len() < 2 {
        return None;
    }
    let (first, last) = (s[0], s[s.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = first.1;
        for &(_, v) in &s[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let range_start = w.end_ms - w.range_ms;
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let mut to_end = (w.end_ms - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let average = sampled / (s.len() - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if counter && result > 0.0 && first.1 >= 0.0 {
        // A counter does not go below zero: extrapolate at most to where it would be zero.
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = if sampled != 0.0 {
        (sampled + to_start + to_end) / sampled
    } else {
        1.0
    };
    if per_second {
        factor /= w.range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` (`rate` of the last two samples, a drop read as a reset) and `idelta`.
pub fn instant(w: &Window, rate: bool) -> Option<f64> {
    let s = w.samples;
    if s.len() < 2 {
        return None;
    }
    let (prev, last) = (s[s.len() - 2], s[s.len() - 1]);
    let mut result = if rate && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    let interval = last.0 - prev.0;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares fit of the samples: (slope per second, value at `at_ms`).
fn regression(samples: &[(i64, f64)], at_ms: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init = samples[0].1;
    let mut constant = true;
    for (i, &(t, v)) in samples.iter().enumerate() {
        if constant && i > 0 && v != init {
            constant = false;
        }
        n += 1.0;
        let x = (t - at_ms) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if constant {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// `deriv`: the slope per second of the least-squares line.
pub fn deriv(w: &Window) -> Option<f64> {
    if w.samples.len() < 2 {
        return None;
    }
    Some(regression(w.samples, w.samples[0].0).0)
}

/// `predict_linear`: the least-squares line's value `seconds` after the evaluation time.
pub fn predict_linear(w: &Window, seconds: f64) -> Option<f64> {
    if w.samples.len() < 2 {
        return None;
    }
    let (slope, intercept) = regression(w.samples, w.eval_ms);
    Some(slope * seconds + intercept)
}

/// `double_exponential_smoothing` (`holt_winters` before Prometheus 3) with smoothing factor
/// `sf` and trend factor `tf`, both in (0, 1).
pub fn smooth(w: &Window, sf: f64, tf: f64) -> Option<f64> {
    let s = w.samples;
    if s.len() < 2 {
        return None;
    }
    let trend = |i: usize, s0: f64, s1: f64, b: f64| {
        if i == 0 {
            b
        } else {
            tf * (s1 - s0) + (1.0 - tf) * b
        }
    };
    let (mut s0, mut s1, mut b) = (0.0, s[0].1, s[1].1 - s[0].1);
    for (i, &(_, v)) in s.iter().enumerate().skip(1) {
        let x = sf * v;
        b = trend(i - 1, s0, s1, b);
        let y = (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, x + y);
    }
    Some(s1)
}

/// The time (s) of the last sample whose value beats all before it by `better` (or ties it:
/// the latest such), for `ts_of_max_over_time` / `ts_of_min_over_time`.
pub fn ts_of(w: &Window, better: fn(f64, f64) -> bool) -> f64 {
    let (mut best, mut at) = (w.samples[0].1, w.samples[0].0);
    for &(t, v) in w.samples {
        if better(v, best) || v == best || best.is_nan() {
            best = v;
            at = t;
        }
    }
    at as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(samples: &[(i64, f64)], end: i64, range: i64) -> Window<'_> {
        Window {
            samples,
            end_ms: end,
            range_ms: range,
            eval_ms: end,
        }
    }

    #[test]
    fn a_steady_counter_rates_exactly() {
        // 10 per minute, samples every minute at 1..=5 min, window (0, 5 min].
        let s: Vec<(i64, f64)> = (1..=5).map(|m| (m * 60_000, 10.0 * m as f64)).collect();
        let win = w(&s, 300_000, 300_000);
        // 40 over 4 minutes sampled; extrapolated to the start (60 s < 1.1 × 60 s) → 50.
        assert!((extrapolated(&win, true, false).unwrap() - 50.0).abs() < 1e-9);
        assert!((extrapolated(&win, true, true).unwrap() - 50.0 / 300.0).abs() < 1e-12);
        // A reset is added back: 10 → 20 is 10, then a reset to 5 is 5 more.
        let r = [(60_000, 10.0), (120_000, 20.0), (180_000, 5.0)];
        let win = w(&r, 180_000, 120_000);
        assert_eq!(extrapolated(&win, true, false), Some(15.0));
        assert_eq!(
            extrapolated(&win, false, false),
            Some(-5.0),
            "delta does not"
        );
        assert_eq!(resets(&win), 1.0);
        assert_eq!(changes(&win), 2.0);
        assert_eq!(
            instant(&win, true),
            Some(5.0 / 60.0),
            "irate reads a drop as a reset"
        );
        assert_eq!(instant(&win, false), Some(-15.0));
    }

    #[test]
    fn regression_finds_the_line() {
        let s: Vec<(i64, f64)> = (0..10)
            .map(|i| (i * 60_000, 3.0 + 0.5 * (i * 60) as f64))
            .collect();
        let win = w(&s, 540_000, 600_000);
        assert!((deriv(&win).unwrap() - 0.5).abs() < 1e-12);
        // 60 s after the end: 3 + 0.5 × 600.
        assert!((predict_linear(&win, 60.0).unwrap() - 303.0).abs() < 1e-9);
    }

    #[test]
    fn sums_and_means_survive_cancellation() {
        let s = [(1, 1e100), (2, 1.0), (3, -1e100)];
        let win = w(&s, 3, 10);
        assert_eq!(sum(&win), 1.0, "Kahan keeps the 1");
        let s = [(1, 1.0), (2, 2.0), (3, 4.0)];
        assert!((avg(&w(&s, 3, 10)) - 7.0 / 3.0).abs() < 1e-15);
        assert_eq!(stdvar(&w(&[(1, 2.0), (2, 4.0)], 2, 10)), 1.0);
    }

    #[test]
    fn nan_loses_to_numbers_in_max_and_min() {
        let s = [(1, f64::NAN), (2, 3.0), (3, 1.0)];
        assert_eq!(max(&w(&s, 3, 10)), 3.0);
        assert_eq!(min(&w(&s, 3, 10)), 1.0);
    }
}
