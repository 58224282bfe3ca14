//! What the batch views cover, and which hours changed since: compact records folded from the
//! Delta logs, never a replay of the whole history.
//!
//! Every recompute commit to `rollup_1m` / `rollup_1h` records `strata.recompute = {from_ms,
//! to_ms, archive_version, hours}` (the hours it wrote); every archive commit to `events` records
//! `strata.archive.hours` (the event hours it touched). Folding them gives:
//!
//! * [`Coverage`] of a rollup table: hour → the recompute that last wrote it ([`Cover`]: the
//!   archive version it was computed from and the table version of its commit, which names the
//!   rows exactly). The last writer wins, as it does for the rows: a recompute never writes an
//!   hour that a recompute from a newer archive version wrote (`crate::recompute`).
//! * [`Touches`] of `events`: hour → the newest archive version that touched it.
//!
//! An hour is *covered* when the hour tier holds a recompute of it; it is *dirty* when an archive
//! commit newer than that recompute's archive version touched it (late events, a backfill) — or
//! when it has data and was never recomputed. Each record is kept as a summary object
//! ([`summary`]) plus the commits after it, so reading it costs O(hours) plus what changed.

pub mod log;
pub mod summary;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strata_shared::Config;

use crate::archive::writer::EVENTS_TABLE;
use crate::recompute::Tier;
use log::Commit;
pub use summary::{Fold, Folded, Summaries, SummaryError};

const HOUR_MS: i64 = 3_600_000;
/// An `events` summary is rewritten once this many commits came after the stored one ...
const TOUCHES_SUMMARY_EVERY: usize = 256;
/// ... or once it is this old and any came (long before delta-rs expires log files: 30 days).
const TOUCHES_SUMMARY_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The recompute that last wrote an hour of a rollup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cover {
    /// The archive (`events`) version it was computed from.
    pub archive_version: i64,
    /// The rollup table version of its commit.
    pub table_version: i64,
}

/// Hour start → the recompute that last wrote it, for one rollup table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Covered hours.
    pub hours: BTreeMap<i64, Cover>,
}

/// What one recompute commit records (`strata.recompute` in its commit info).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecomputeInfo {
    /// Range start (inclusive).
    pub from_ms: i64,
    /// Range end (exclusive).
    pub to_ms: i64,
    /// Archive version it was computed from.
    pub archive_version: i64,
    /// The hours written (all of the range when absent: commits before partial writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<Vec<i64>>,
}

impl RecomputeInfo {
    /// The hours the commit wrote.
    pub fn written(&self) -> Vec<i64> {
        match &self.hours {
            Some(h) => h.clone(),
            None => (self.from_ms..self.to_ms)
                .step_by(HOUR_MS as usize)
                .collect(),
        }
    }
}

impl Fold for Coverage {
    fn apply(&mut self, c: &Commit) {
        let Some(info) = c.info.get("strata.recompute") else {
            return;
        };
        let Ok(info) = serde_json::from_value::<RecomputeInfo>(info.clone()) else {
            return;
        };
        for h in info.written() {
            self.hours.insert(
                h,
                Cover {
                    archive_version: info.archive_version,
                    table_version: c.version,
                },
            );
        }
    }
}

impl Coverage {
    /// Covered hour → archive version of its latest recompute.
    pub fn archive_versions(&self) -> BTreeMap<i64, i64> {
        self.hours
            .iter()
            .map(|(h, c)| (*h, c.archive_version))
            .collect()
    }
}

/// Hour start → the newest archive version that touched it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Touches {
    /// Touched hours.
    pub hours: BTreeMap<i64, i64>,
}

impl Fold for Touches {
    fn apply(&mut self, c: &Commit) {
        let Some(hours) = c
            .info
            .get("strata.archive")
            .and_then(|a| a.get("hours"))
            .and_then(|h| h.as_array())
        else {
            return;
        };
        for h in hours.iter().filter_map(serde_json::Value::as_i64) {
            self.hours.insert(h, c.version);
        }
    }
}

/// Hours touched after their latest recompute (or touched and never recomputed).
pub fn dirty_hours(covered: &BTreeMap<i64, i64>, touches: &Touches) -> BTreeSet<i64> {
    touches
        .hours
        .iter()
        .filter(|(h, v)| covered.get(h).is_none_or(|c| **v > *c))
        .map(|(h, _)| *h)
        .collect()
}

/// The time boundary: the end of the last covered hour (serving reads batch views before it).
pub fn boundary(covered: &BTreeMap<i64, i64>) -> Option<i64> {
    covered.keys().next_back().map(|h| h + HOUR_MS)
}

/// The summaries of a table of the configured lake.
pub fn summaries(cfg: &Config, table: &str) -> Result<Summaries, SummaryError> {
    let store = strata_shared::lake::object_store(&cfg.lake, &cfg.s3)?;
    Ok(Summaries::new(store, table))
}

/// The coverage of a rollup tier, up to its newest commit.
pub async fn coverage(cfg: &Config, tier: Tier) -> Result<Folded<Coverage>, SummaryError> {
    summaries(cfg, tier.table())?.read().await
}

/// Reads a tier's coverage and stores it as the newest summary when commits came after the
/// stored one (after a recompute commit).
pub async fn summarise(cfg: &Config, tier: Tier) -> Result<Folded<Coverage>, SummaryError> {
    let s = summaries(cfg, tier.table())?;
    let f: Folded<Coverage> = s.read().await?;
    if f.version > s.newest_version().await? {
        s.store(&f).await?;
    }
    Ok(f)
}

/// The archive's touched hours, up to its newest commit; the summary is rewritten when many
/// commits came after it, or when it is an hour old and any did.
pub async fn touches(cfg: &Config) -> Result<Folded<Touches>, SummaryError> {
    let s = summaries(cfg, EVENTS_TABLE)?;
    let age = s.newest_age().await?;
    let mut f: Folded<Touches> = s.newest().await?;
    let n = s.advance(&mut f).await?;
    if n >= TOUCHES_SUMMARY_EVERY || (n > 0 && age.is_none_or(|a| a >= TOUCHES_SUMMARY_AGE)) {
        s.store(&f).await?;
    }
    Ok(f)
}

/// Covered hours (hour → archive version of its latest recompute, from the hour tier), dirty
/// hours and the boundary, from the lake.
pub async fn status(
    cfg: &Config,
) -> Result<(BTreeMap<i64, i64>, BTreeSet<i64>, Option<i64>), SummaryError> {
    let covered = coverage(cfg, Tier::Hour).await?.state.archive_versions();
    let dirty = dirty_hours(&covered, &touches(cfg).await?.state);
    let end = boundary(&covered);
    Ok((covered, dirty, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recompute(
        version: i64,
        from: i64,
        to: i64,
        archive: i64,
        hours: Option<Vec<i64>>,
    ) -> Commit {
        let info = RecomputeInfo {
            from_ms: from,
            to_ms: to,
            archive_version: archive,
            hours,
        };
        let mut m = serde_json::Map::new();
        m.insert(
            "strata.recompute".into(),
            serde_json::to_value(info).unwrap(),
        );
        Commit { version, info: m }
    }

    fn archive(version: i64, hours: &[i64]) -> Commit {
        let mut m = serde_json::Map::new();
        m.insert(
            "strata.archive".into(),
            serde_json::json!({ "hours": hours }),
        );
        Commit { version, info: m }
    }

    #[test]
    fn the_last_recompute_of_an_hour_covers_it() {
        let mut c = Coverage::default();
        c.apply(&recompute(0, 0, 2 * HOUR_MS, 3, None));
        c.apply(&recompute(1, HOUR_MS, 2 * HOUR_MS, 5, None));
        // A partial write: of [0, 3h) only hour 2 was written (a newer one held 0 and 1).
        c.apply(&recompute(2, 0, 3 * HOUR_MS, 4, Some(vec![2 * HOUR_MS])));
        c.apply(&archive(3, &[0])); // not a recompute: ignored
        assert_eq!(
            c.archive_versions(),
            BTreeMap::from([(0, 3), (HOUR_MS, 5), (2 * HOUR_MS, 4)])
        );
        assert_eq!(c.hours[&HOUR_MS].table_version, 1);
    }

    #[test]
    fn dirty_means_touched_after_the_latest_recompute() {
        let covered = BTreeMap::from([(0, 3), (HOUR_MS, 5)]);
        let mut t = Touches::default();
        for c in [
            archive(2, &[0]),
            archive(4, &[0, HOUR_MS]),
            archive(6, &[5 * HOUR_MS]),
        ] {
            t.apply(&c);
        }
        // hour 0: touched by v4 > 3 → dirty; hour 1: v4 ≤ 5 → clean; hour 5: never recomputed.
        assert_eq!(dirty_hours(&covered, &t), BTreeSet::from([0, 5 * HOUR_MS]));
        assert_eq!(boundary(&covered), Some(2 * HOUR_MS));
        assert_eq!(boundary(&BTreeMap::new()), None);
    }
}
