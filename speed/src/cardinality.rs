//! The cardinality guard: at most `limit` live series per metric; events of other series are
//! folded into one overflow series of the metric (same source, tags replaced by
//! `__overflow__="true"`).
//!
//! A series is *live* while it has had an event within `window` (event time) of the newest
//! event of its metric; one silent for longer leaves the set and frees its place — pods and hosts
//! come and go, and a series of last month must not hold a place today. The set is rebuilt from
//! the rollups ClickHouse holds for the last `window` on assignment. All events of a metric share
//! a Kafka partition (the key is the metric name), so one consumer decides a metric's series in
//! offset order, and events replayed after a crash meet the same set.
//!
//! Memory is bounded whatever arrives: at most `limit` series per metric are kept, and the
//! series folded into overflow are only counted, approximately, in a fixed-size sketch
//! (HyperLogLog, ±3 %) — a flood of new series, the very attack the guard is for, adds nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use strata_shared::series::series_id;

/// Tag that marks the overflow series.
pub const OVERFLOW_TAG: &str = "__overflow__";

/// The live series of one metric: id → last minute seen, and the same ordered by minute.
#[derive(Debug, Default)]
struct Live {
    last_seen: HashMap<u64, i64>,
    by_time: BTreeSet<(i64, u64)>,
}

impl Live {
    fn touch(&mut self, id: u64, minute: i64) {
        let old = self.last_seen.insert(id, minute);
        match old {
            Some(m) if m >= minute => {
                self.last_seen.insert(id, m);
            }
            Some(m) => {
                self.by_time.remove(&(m, id));
                self.by_time.insert((minute, id));
            }
            None => {
                self.by_time.insert((minute, id));
            }
        }
    }

    /// Forgets series last seen before `cutoff`.
    fn expire(&mut self, cutoff: i64) {
        while let Some(&(m, id)) = self.by_time.first() {
            if m >= cutoff {
                break;
            }
            self.by_time.pop_first();
            self.last_seen.remove(&id);
        }
    }

    fn newest(&self) -> Option<i64> {
        self.by_time.last().map(|(m, _)| *m)
    }
}

/// A fixed-size estimate of how many distinct ids were added (HyperLogLog, 2^10 registers).
#[derive(Debug, Clone)]
pub struct DistinctCount {
    registers: Box<[u8; 1024]>,
}

impl Default for DistinctCount {
    fn default() -> Self {
        Self {
            registers: Box::new([0; 1024]),
        }
    }
}

impl DistinctCount {
    /// Adds an id (a well-mixed 64-bit hash: series ids are).
    pub fn add(&mut self, id: u64) {
        let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let idx = (h >> 54) as usize;
        let rank = ((h << 10) | (1 << 9)).leading_zeros() as u8 + 1;
        self.registers[idx] = self.registers[idx].max(rank);
    }

    /// The estimated number of distinct ids added.
    pub fn estimate(&self) -> f64 {
        let m = 1024.0;
        let sum: f64 = self
            .registers
            .iter()
            .map(|r| 2f64.powi(-i32::from(*r)))
            .sum();
        let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
        let zeros = self.registers.iter().filter(|r| **r == 0).count();
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }
}

/// Live series per metric.
#[derive(Debug)]
pub struct CardinalityGuard {
    limit: usize,
    window_ms: i64,
    live: HashMap<String, Live>,
    overflowed: HashMap<String, DistinctCount>,
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
    /// A guard allowing `limit` series per metric that had an event within `window_ms`.
    pub fn new(limit: usize, window_ms: i64) -> Self {
        Self {
            limit,
            window_ms,
            live: HashMap::new(),
            overflowed: HashMap::new(),
        }
    }

    /// Adds series known to be live already (read back from ClickHouse), last seen at `minute`.
    pub fn preload(&mut self, metric: &str, series: impl IntoIterator<Item = (u64, i64)>) {
        let live = self.live.entry(metric.to_owned()).or_default();
        for (id, minute) in series {
            live.touch(id, minute);
        }
    }

    /// Decides for series `id` of `metric` with `source`, for an event at `timestamp_ms`.
    pub fn admit(&mut self, metric: &str, source: &str, id: u64, timestamp_ms: i64) -> Admission {
        let minute = timestamp_ms.div_euclid(60_000) * 60_000;
        let live = match self.live.get_mut(metric) {
            Some(s) => s,
            None => self.live.entry(metric.to_owned()).or_default(),
        };
        if live.last_seen.contains_key(&id) {
            live.touch(id, minute);
            return Admission::Admitted;
        }
        if live.last_seen.len() >= self.limit {
            // Full: places of series silent for longer than the window are free again.
            let newest = live.newest().unwrap_or(minute).max(minute);
            live.expire(newest - self.window_ms);
        }
        if live.last_seen.len() < self.limit {
            live.touch(id, minute);
            return Admission::Admitted;
        }
        self.overflowed
            .entry(metric.to_owned())
            .or_default()
            .add(id);
        Admission::Overflow(overflow_series_id(metric, source))
    }

    /// Live series of `metric`.
    pub fn live(&self, metric: &str) -> usize {
        self.live.get(metric).map_or(0, |l| l.last_seen.len())
    }

    /// Distinct series folded into overflow, per metric, since start (an estimate, ±3 %).
    pub fn overflowed(&self) -> impl Iterator<Item = (&str, usize)> {
        self.overflowed
            .iter()
            .map(|(m, s)| (m.as_str(), s.estimate().round() as usize))
    }

    /// Bytes the guard holds (its own estimate: entries and their maps), for the tests that show
    /// it bounded.
    pub fn heap_bytes(&self) -> usize {
        let per_live = |l: &Live| l.last_seen.capacity() * 24 + l.by_time.len() * 32;
        self.live
            .iter()
            .map(|(m, l)| m.capacity() + per_live(l))
            .sum::<usize>()
            + self
                .overflowed
                .keys()
                .map(|m| m.capacity() + 1024)
                .sum::<usize>()
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

    const DAY: i64 = 86_400_000;

    #[test]
    fn series_past_the_limit_fold_into_overflow() {
        let mut g = CardinalityGuard::new(2, DAY);
        assert_eq!(g.admit("m", "s", 1, 0), Admission::Admitted);
        assert_eq!(g.admit("m", "s", 2, 0), Admission::Admitted);
        assert_eq!(
            g.admit("m", "s", 1, 0),
            Admission::Admitted,
            "known series stay admitted"
        );
        assert_eq!(
            g.admit("m", "s", 3, 0),
            Admission::Overflow(overflow_series_id("m", "s"))
        );
        assert_eq!(
            g.admit("other", "s", 3, 0),
            Admission::Admitted,
            "limits are per metric"
        );
        assert_eq!(g.overflowed().collect::<Vec<_>>(), vec![("m", 1)]);
    }

    #[test]
    fn preloaded_series_count_against_the_limit() {
        let mut g = CardinalityGuard::new(2, DAY);
        g.preload("m", [(10, 0), (11, 0)]);
        assert_eq!(g.admit("m", "s", 10, 0), Admission::Admitted);
        assert!(matches!(g.admit("m", "s", 12, 0), Admission::Overflow(_)));
    }

    #[test]
    fn a_series_silent_for_longer_than_the_window_frees_its_place() {
        let mut g = CardinalityGuard::new(2, DAY);
        assert_eq!(g.admit("m", "s", 1, 0), Admission::Admitted);
        assert_eq!(g.admit("m", "s", 2, 0), Admission::Admitted);
        // Series 2 keeps reporting; series 1 goes quiet.
        assert_eq!(g.admit("m", "s", 2, DAY - 60_000), Admission::Admitted);
        assert!(matches!(
            g.admit("m", "s", 3, DAY / 2),
            Admission::Overflow(_)
        ));
        // A day after series 1's last event, a new series takes its place.
        assert_eq!(g.admit("m", "s", 3, DAY + 60_000), Admission::Admitted);
        assert_eq!(g.live("m"), 2);
        assert!(matches!(
            g.admit("m", "s", 1, DAY + 60_000),
            Admission::Overflow(_)
        ));
    }

    #[test]
    fn a_million_new_series_leave_memory_flat() {
        let limit = 1000;
        let mut g = CardinalityGuard::new(limit, DAY);
        let mut after_first = 0;
        for i in 0..1_000_000u64 {
            let id = strata_shared::series::series_id(
                "m",
                "s",
                &BTreeMap::from([("pod".to_owned(), i.to_string())]),
            );
            g.admit("m", "s", id, 1_000_000 + (i as i64 % 60) * 1000);
            if i == 10_000 {
                after_first = g.heap_bytes();
            }
        }
        assert_eq!(g.live("m"), limit);
        assert_eq!(
            g.heap_bytes(),
            after_first,
            "not a byte more after 990,000 series"
        );
        let (_, folded) = g.overflowed().next().unwrap();
        let want = 1_000_000 - limit;
        assert!(
            (folded as f64 - want as f64).abs() < 0.05 * want as f64,
            "≈ {want} series folded, estimated {folded}"
        );
    }

    #[test]
    fn distinct_counts_are_close_at_every_size() {
        for n in [0u64, 1, 10, 1000, 100_000] {
            let mut c = DistinctCount::default();
            for i in 0..n {
                c.add(strata_shared::series::series_id(
                    "x",
                    &i.to_string(),
                    &BTreeMap::new(),
                ));
                c.add(strata_shared::series::series_id(
                    "x",
                    &i.to_string(),
                    &BTreeMap::new(),
                ));
            }
            let e = c.estimate();
            assert!((e - n as f64).abs() <= 0.05 * n as f64 + 1.0, "{n}: {e}");
        }
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
