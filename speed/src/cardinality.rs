//! The cardinality guard: at most `limit` series per metric; events of later series are folded
//! into one overflow series of the metric (same source, tags replaced by `__overflow__="true"`).
//!
//! All events of a metric share a Kafka partition (the key is the metric name), so one consumer
//! decides a metric's series in offset order. The admitted set is rebuilt from ClickHouse on
//! assignment; events replayed after a crash meet the same set and get the same decision.

use std::collections::{BTreeMap, HashMap, HashSet};

use strata_shared::series::series_id;

/// Tag that marks the overflow series.
pub const OVERFLOW_TAG: &str = "__overflow__";

/// Admitted series per metric.
#[derive(Debug)]
pub struct CardinalityGuard {
    limit: usize,
    admitted: HashMap<String, HashSet<u64>>,
    overflowed: HashMap<String, HashSet<u64>>,
}

/// The guard's decision for one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Count the event under its own series.
    Admitted,
    /// Count it under the metric's overflow series, whose id this is.
    Overflow(u64),
}

impl CardinalityGuard {
    /// A guard allowing `limit` series per metric.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            admitted: HashMap::new(),
            overflowed: HashMap::new(),
        }
    }

    /// Adds series known to be admitted already (read back from ClickHouse).
    pub fn preload(&mut self, metric: &str, ids: impl IntoIterator<Item = u64>) {
        self.admitted
            .entry(metric.to_owned())
            .or_default()
            .extend(ids);
    }

    /// Decides for series `id` of `metric` with `source`.
    pub fn admit(&mut self, metric: &str, source: &str, id: u64) -> Admission {
        let set = match self.admitted.get_mut(metric) {
            Some(s) => s,
            None => self.admitted.entry(metric.to_owned()).or_default(),
        };
        if set.contains(&id) {
            return Admission::Admitted;
        }
        if set.len() < self.limit {
            set.insert(id);
            return Admission::Admitted;
        }
        self.overflowed
            .entry(metric.to_owned())
            .or_default()
            .insert(id);
        Admission::Overflow(overflow_series_id(metric, source))
    }

    /// Distinct series folded into overflow, per metric, since start.
    pub fn overflowed(&self) -> impl Iterator<Item = (&str, usize)> {
        self.overflowed.iter().map(|(m, s)| (m.as_str(), s.len()))
    }
}

/// The tags of an overflow series.
pub fn overflow_tags() -> BTreeMap<String, String> {
    [(OVERFLOW_TAG.to_owned(), "true".to_owned())]
        .into_iter()
        .collect()
}

/// The id of `metric`'s overflow series for `source`.
pub fn overflow_series_id(metric: &str, source: &str) -> u64 {
    series_id(metric, source, &overflow_tags())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_past_the_limit_fold_into_overflow() {
        let mut g = CardinalityGuard::new(2);
        assert_eq!(g.admit("m", "s", 1), Admission::Admitted);
        assert_eq!(g.admit("m", "s", 2), Admission::Admitted);
        assert_eq!(
            g.admit("m", "s", 1),
            Admission::Admitted,
            "known series stay admitted"
        );
        assert_eq!(
            g.admit("m", "s", 3),
            Admission::Overflow(overflow_series_id("m", "s"))
        );
        assert_eq!(
            g.admit("other", "s", 3),
            Admission::Admitted,
            "limits are per metric"
        );
        assert_eq!(g.overflowed().collect::<Vec<_>>(), vec![("m", 1)]);
    }

    #[test]
    fn preloaded_series_count_against_the_limit() {
        let mut g = CardinalityGuard::new(2);
        g.preload("m", [10, 11]);
        assert_eq!(g.admit("m", "s", 10), Admission::Admitted);
        assert!(matches!(g.admit("m", "s", 12), Admission::Overflow(_)));
    }

    #[test]
    fn overflow_ids_differ_from_real_series() {
        assert_ne!(
            overflow_series_id("m", "s"),
            series_id("m", "s", &BTreeMap::new())
        );
        assert_ne!(overflow_series_id("m", "s"), overflow_series_id("m", "t"));
    }
}
