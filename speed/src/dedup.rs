//! Best-effort removal of duplicate event_ids (producer retries), made deterministic.
//!
//! An event is a duplicate when an event with the same id was seen at one of the previous
//! `window` offsets of the same partition. Because the rule depends only on the partition's
//! messages, not on process history, a restarted consumer rebuilds the exact same state by
//! re-reading the `window` offsets before its resume point ("warm-up") — so deduplication does
//! not break the exactly-once guarantee. Producers retry into the same partition (the key is the
//! metric name), so one window per partition sees every retry of an event.

use std::collections::VecDeque;

use strata_shared::digest::DigestMap;
use xxhash_rust::xxh64::xxh64;

/// The window of recent event ids of one partition.
#[derive(Debug, Default)]
pub struct DedupWindow {
    window: u64,
    counts: DigestMap<u32>,
    order: VecDeque<(i64, u64)>,
}

impl DedupWindow {
    /// A window covering `window` offsets (0: everything is new).
    pub fn new(window: u64) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }

    /// Records the valid event `event_id` at `offset`; true when it is new (count it), false when
    /// the same id appeared within the window before it (drop it). Offsets must not go back.
    ///
    /// ```
    /// let mut w = strata_speed::dedup::DedupWindow::new(10);
    /// assert!(w.observe(0, "a"));
    /// assert!(!w.observe(5, "a"));
    /// assert!(w.observe(20, "a")); // the earlier ones left the window
    /// ```
    pub fn observe(&mut self, offset: i64, event_id: &str) -> bool {
        if self.window == 0 {
            return true;
        }
        let oldest_kept = offset.saturating_sub(self.window as i64 - 1);
        while let Some(&(o, h)) = self.order.front() {
            if o >= oldest_kept {
                break;
            }
            self.order.pop_front();
            if let Some(c) = self.counts.get_mut(&h) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&h);
                }
            }
        }
        let h = xxh64(event_id.as_bytes(), 0);
        let c = self.counts.entry(h).or_insert(0);
        let new = *c == 0;
        *c += 1;
        self.order.push_back((offset, h));
        new
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_inside_the_window_are_dropped() {
        let mut w = DedupWindow::new(100);
        assert!(w.observe(1, "x"));
        assert!(w.observe(2, "y"));
        assert!(!w.observe(3, "x"));
        assert!(
            !w.observe(100, "x"),
            "offset 100 still sees offset 3 (window of 100)"
        );
        assert!(w.observe(104, "q"));
        // offsets 1..=4 are gone at 104 (window keeps 5..=104); x was last seen at 100.
        assert!(!w.observe(104, "x"));
        assert!(w.observe(300, "x"));
    }

    #[test]
    fn zero_window_keeps_everything() {
        let mut w = DedupWindow::new(0);
        assert!(w.observe(1, "x") && w.observe(2, "x"));
        assert!(w.is_empty());
    }

    #[test]
    fn warm_up_from_window_before_resume_point_reproduces_decisions() {
        // A stream with retries; decide it in one go, then "crash" at offset 500 and rebuild
        // the window from offsets 500-W+1..=500 before deciding the rest.
        let ids: Vec<String> = (0..1000)
            .map(|i| format!("e{}", if i % 7 == 0 { i / 2 } else { i }))
            .collect();
        let window = 64;
        let mut straight = DedupWindow::new(window);
        let all: Vec<bool> = ids
            .iter()
            .enumerate()
            .map(|(o, id)| straight.observe(o as i64, id))
            .collect();

        let resume = 500usize;
        let mut restarted = DedupWindow::new(window);
        let first = resume + 1 - window as usize;
        for (o, id) in ids.iter().enumerate().take(resume + 1).skip(first) {
            restarted.observe(o as i64, id);
        }
        for (o, id) in ids.iter().enumerate().skip(resume + 1) {
            assert_eq!(restarted.observe(o as i64, id), all[o], "offset {o}");
        }
        assert!(
            all.iter().any(|n| !n),
            "the stream has duplicates inside the window"
        );
    }

    #[test]
    fn memory_is_bounded_by_the_window() {
        let mut w = DedupWindow::new(1000);
        for o in 0..100_000 {
            w.observe(o, &o.to_string());
        }
        assert_eq!(w.len(), 1000);
        assert_eq!(w.counts.len(), 1000);
    }
}
