//! What a scheduled run recomputes: the latest closed hours that are not yet covered (or are
//! dirty), and every dirty closed hour, grouped into contiguous ranges. Pure logic; the loop
//! that acts on it is [`crate::serve`].

use std::collections::{BTreeMap, BTreeSet};

const HOUR_MS: i64 = 3_600_000;

/// The start of the newest closed hour at `now_ms`: an hour is closed `grace_ms` after its end.
pub fn last_closed_hour(now_ms: i64, grace_ms: i64) -> i64 {
    let t = now_ms - grace_ms;
    t - t.rem_euclid(HOUR_MS) - HOUR_MS
}

/// Ranges `[from, to)` a scheduled run at `now_ms` recomputes.
///
/// * the `closed_hours` newest closed hours, unless covered and not dirty;
/// * every dirty hour that is closed (an open hour is never recomputed: it would move the
///   boundary past data still arriving).
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use strata_batch::schedule::plan;
/// const H: i64 = 3_600_000;
/// // At 10:30 with 5 min grace, hours 8 and 9 are the two newest closed ones; 9 is covered.
/// let covered = BTreeMap::from([(9 * H, 1)]);
/// let dirty = BTreeSet::from([3 * H, 4 * H, 10 * H]);
/// assert_eq!(
///     plan(10 * H + H / 2, 2, 300_000, &covered, &dirty),
///     vec![(3 * H, 5 * H), (8 * H, 9 * H)]
/// );
/// ```
pub fn plan(
    now_ms: i64,
    closed_hours: u32,
    grace_ms: i64,
    covered: &BTreeMap<i64, i64>,
    dirty: &BTreeSet<i64>,
) -> Vec<(i64, i64)> {
    let last = last_closed_hour(now_ms, grace_ms);
    let mut hours: BTreeSet<i64> = dirty.range(..=last).copied().collect();
    for i in 0..i64::from(closed_hours) {
        let h = last - i * HOUR_MS;
        if !covered.contains_key(&h) {
            hours.insert(h);
        }
    }
    let mut out: Vec<(i64, i64)> = Vec::new();
    for h in hours {
        match out.last_mut() {
            Some((_, to)) if *to == h => *to += HOUR_MS,
            _ => out.push((h, h + HOUR_MS)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    const H: i64 = HOUR_MS;

    #[test]
    fn an_hour_closes_after_its_grace() {
        assert_eq!(last_closed_hour(10 * H + 60_000, 120_000), 8 * H);
        assert_eq!(last_closed_hour(10 * H + 120_000, 120_000), 9 * H);
        assert_eq!(last_closed_hour(10 * H, 0), 9 * H);
    }

    #[test]
    fn nothing_to_do_when_all_is_covered_and_clean() {
        let covered = BTreeMap::from([(8 * H, 1), (9 * H, 1)]);
        assert!(plan(10 * H + H / 2, 2, 0, &covered, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn the_open_hour_is_never_planned_even_when_dirty() {
        let dirty = BTreeSet::from([10 * H]);
        let covered = BTreeMap::from([(8 * H, 1), (9 * H, 1)]);
        assert!(plan(10 * H + H / 2, 2, 0, &covered, &dirty).is_empty());
    }

    #[test]
    fn contiguous_hours_make_one_range() {
        let covered = BTreeMap::new();
        assert_eq!(
            plan(10 * H + 1, 3, 0, &covered, &BTreeSet::from([6 * H])),
            vec![(6 * H, 10 * H)]
        );
    }
}
