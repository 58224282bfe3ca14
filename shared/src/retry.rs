//! The one backoff every retry loop of Strata waits with: exponential from a first delay,
//! doubling, capped, with ±20 % random jitter (so that many clients of one server that failed
//! together do not come back together).
//!
//! Which failures are worth another attempt is the caller's to say — each client knows its
//! server's errors (`strata_speed::clickhouse::retry::classify` for ClickHouse); the lake's and
//! the job store's loops retry every error, since none of their calls can be wrong in a way a
//! retry would repeat forever without an operator seeing the warnings.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// Starts at `first`, doubles after each attempt, never waits longer than `max` (±20 %).
    ///
    /// ```
    /// use std::time::Duration;
    /// use strata_shared::retry::Backoff;
    /// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    /// let first = b.next_delay();
    /// assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
    /// assert_eq!(b.attempts(), 1);
    /// ```
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first.min(max),
            max,
            attempts: 0,
        }
    }

    /// The wait before the next attempt (and counts the attempt that failed).
    pub fn next_delay(&mut self) -> Duration {
        self.attempts += 1;
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::rng().random_range(0.8..1.2))
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let within = |d: Duration, ms: u64| {
            d >= Duration::from_millis(ms * 8 / 10) && d <= Duration::from_millis(ms * 12 / 10)
        };
        assert!(
            within(d[0], 100) && within(d[1], 200) && within(d[3], 800),
            "{d:?}"
        );
        assert!(d[4..].iter().all(|x| within(*x, 1000)), "capped: {d:?}");
        assert_eq!(b.attempts(), 8);
        // Jitter spreads clients that failed together.
        let firsts: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(1))
                    .next_delay()
                    .as_micros()
            })
            .collect();
        assert!(firsts.len() > 10, "{firsts:?}");
    }
}
