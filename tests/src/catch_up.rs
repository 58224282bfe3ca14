//! Waiting for a layer to catch up, judged by progress rather than by a wall clock.
//!
//! `make chaos` counts what each layer holds once the stream has ended. A layer still working
//! through a backlog is not a layer that lost something: the harness polls each layer's count,
//! and a [`Watch`] turns the polls into an [`Outcome`] — caught up, stalled (no increase for
//! the stall period: what is missing then is missing), or still rising when the overall cap
//! ran out (its own, failing, outcome; nothing is called lost).

use std::time::Duration;

/// How a wait for one layer ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The layer held everything after this long.
    CaughtUp(Duration),
    /// The count stopped increasing for the whole stall period, short of what was wanted.
    Stalled {
        /// What the layer held.
        have: u64,
        /// How long the wait took in all.
        after: Duration,
    },
    /// The count was still increasing when the overall cap ran out.
    StillRising {
        /// What the layer held.
        have: u64,
        /// How long the wait took in all.
        after: Duration,
    },
}

impl Outcome {
    /// True when the layer's missing items may be counted as lost (it caught up, or it stopped
    /// making progress).
    pub fn settled(&self) -> bool {
        !matches!(self, Outcome::StillRising { .. })
    }

    /// How long the layer took to hold everything, if it did.
    pub fn caught_up(&self) -> Option<Duration> {
        match self {
            Outcome::CaughtUp(d) => Some(*d),
            _ => None,
        }
    }
}

/// What one poll tells the waiter.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Poll again later.
    Wait,
    /// Stop: this is the outcome.
    Done(Outcome),
}

/// The progress of one layer's count toward `want`.
#[derive(Debug, Clone)]
pub struct Watch {
    want: u64,
    stall: Duration,
    cap: Duration,
    best: u64,
    last_increase: Duration,
}

impl Watch {
    /// A watch that gives up after `stall` without an increase, or after `cap` in all.
    pub fn new(want: u64, stall: Duration, cap: Duration) -> Self {
        Self {
            want,
            stall,
            cap,
            best: 0,
            last_increase: Duration::ZERO,
        }
    }

    /// Records the count `have` seen `elapsed` after the wait began.
    ///
    /// ```
    /// use std::time::Duration;
    /// use strata_tests::catch_up::{Outcome, Step, Watch};
    /// let s = Duration::from_secs;
    /// let mut w = Watch::new(100, s(300), s(3600));
    /// assert_eq!(w.observe(40, s(10)), Step::Wait);
    /// assert_eq!(w.observe(100, s(20)), Step::Done(Outcome::CaughtUp(s(20))));
    /// ```
    pub fn observe(&mut self, have: u64, elapsed: Duration) -> Step {
        if have >= self.want {
            return Step::Done(Outcome::CaughtUp(elapsed));
        }
        if have > self.best {
            self.best = have;
            self.last_increase = elapsed;
        }
        if elapsed.saturating_sub(self.last_increase) >= self.stall {
            return Step::Done(Outcome::Stalled {
                have: self.best,
                after: elapsed,
            });
        }
        if elapsed >= self.cap {
            return Step::Done(Outcome::StillRising {
                have: self.best,
                after: elapsed,
            });
        }
        Step::Wait
    }
}

/// How an outcome reads in the harness's log.
pub fn describe(layer: &str, want: u64, o: &Outcome) -> String {
    match o {
        Outcome::CaughtUp(d) => format!("{layer}: holds all {want} after {:.0} s", d.as_secs_f64()),
        Outcome::Stalled { have, after } => format!(
            "{layer}: stalled at {have} of {want} (no increase in the stall period; {:.0} s in all)",
            after.as_secs_f64()
        ),
        Outcome::StillRising { have, after } => format!(
            "{layer}: not caught up after {:.0} s (still rising): {have} of {want}",
            after.as_secs_f64()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_slow_but_steady_layer_is_waited_for_past_any_fixed_budget() {
        // The run of the issue: +300 every 45 s, long past 15 minutes.
        let mut w = Watch::new(1_990_106, s(300), s(7200));
        let mut have = 1_989_809;
        let mut t = 900;
        loop {
            match w.observe(have, s(t)) {
                Step::Wait => {}
                Step::Done(o) => {
                    assert_eq!(o, Outcome::CaughtUp(s(t)));
                    break;
                }
            }
            have += 300;
            t += 45;
        }
        assert!(t > 900);
    }

    #[test]
    fn no_increase_for_the_stall_period_is_a_stall_with_the_count() {
        let mut w = Watch::new(100, s(300), s(3600));
        assert_eq!(w.observe(90, s(10)), Step::Wait);
        assert_eq!(w.observe(90, s(200)), Step::Wait);
        assert_eq!(
            w.observe(90, s(310)),
            Step::Done(Outcome::Stalled {
                have: 90,
                after: s(310)
            })
        );
    }

    #[test]
    fn a_count_that_drops_back_does_not_reset_the_stall_clock() {
        // A query answered from a replica behind, or a restart: only a new high is progress.
        let mut w = Watch::new(100, s(300), s(3600));
        assert_eq!(w.observe(90, s(0)), Step::Wait);
        assert_eq!(w.observe(50, s(100)), Step::Wait);
        assert_eq!(w.observe(90, s(200)), Step::Wait);
        assert!(matches!(
            w.observe(90, s(300)),
            Step::Done(Outcome::Stalled { have: 90, .. })
        ));
    }

    #[test]
    fn still_rising_at_the_cap_is_its_own_outcome_and_not_settled() {
        let mut w = Watch::new(1000, s(300), s(600));
        let mut last = Step::Wait;
        for (i, t) in (0..=600).step_by(60).enumerate() {
            last = w.observe(10 * i as u64, s(t));
            if last != Step::Wait {
                break;
            }
        }
        let Step::Done(o) = last else {
            panic!("the cap ends the wait")
        };
        assert_eq!(
            o,
            Outcome::StillRising {
                have: 100,
                after: s(600)
            }
        );
        assert!(!o.settled());
        assert_eq!(o.caught_up(), None);
        assert!(describe("archive", 1000, &o).contains("still rising"));
    }

    #[test]
    fn caught_up_and_stalled_are_settled() {
        assert!(Outcome::CaughtUp(s(1)).settled());
        assert!(Outcome::Stalled {
            have: 1,
            after: s(1)
        }
        .settled());
        assert_eq!(Outcome::CaughtUp(s(7)).caught_up(), Some(s(7)));
    }
}
