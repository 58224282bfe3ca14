//! What the batch views cover, and which hours changed since: read from the Delta logs.
//!
//! Every recompute commit to `rollup_1h` records `strata.recompute = {from_ms, to_ms,
//! archive_version}`; every archive commit to `events` records `strata.archive.hours` (the event
//! hours it touched). An hour is *covered* when some recompute included it; it is *dirty* when an
//! archive commit newer than the archive version of its latest recompute touched it (late events,
//! a backfill) — or when it has data and was never recomputed.

use std::collections::{BTreeMap, BTreeSet};

use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use strata_shared::Config;

use crate::archive::writer::{open_table, EVENTS_TABLE};
use crate::recompute::Tier;

const HOUR_MS: i64 = 3_600_000;

/// One recompute, as recorded in the rollup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recomputed {
    /// Range start (inclusive).
    pub from_ms: i64,
    /// Range end (exclusive).
    pub to_ms: i64,
    /// Archive version it was computed from.
    pub archive_version: i64,
}

/// For each covered hour, the archive version of its latest recompute.
pub fn covered_hours(recomputes: &[Recomputed]) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for r in recomputes {
        let mut h = r.from_ms;
        while h < r.to_ms {
            let v = out.entry(h).or_insert(r.archive_version);
            *v = (*v).max(r.archive_version);
            h += HOUR_MS;
        }
    }
    out
}

/// Hours touched by archive commits (version, hours) after their latest recompute.
pub fn dirty_hours(
    covered: &BTreeMap<i64, i64>,
    archive_commits: &[(i64, Vec<i64>)],
) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for (version, hours) in archive_commits {
        for h in hours {
            if covered.get(h).is_none_or(|&v| *version > v) {
                out.insert(*h);
            }
        }
    }
    out
}

/// The time boundary: the end of the last covered hour (serving reads batch views before it).
pub fn boundary(covered: &BTreeMap<i64, i64>) -> Option<i64> {
    covered.keys().next_back().map(|h| h + HOUR_MS)
}

/// Commit infos of a table with their versions, oldest first (empty if the table is missing).
async fn commits(
    cfg: &Config,
    name: &str,
) -> Result<Vec<(i64, serde_json::Value)>, DeltaTableError> {
    let mut table: DeltaTable = open_table(cfg, name).await?;
    match table.load().await {
        Ok(()) => {}
        Err(DeltaTableError::NotATable(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    let newest = table.version().unwrap_or(0) as i64;
    let infos: Vec<_> = table.history(None).try_collect().await?;
    // History lists the newest commit first, one per version.
    let mut out: Vec<(i64, serde_json::Value)> = infos
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            (
                newest - i as i64,
                serde_json::Value::Object(c.info.into_iter().collect()),
            )
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// Every recompute recorded in `rollup_1h`.
pub async fn recomputes(cfg: &Config) -> Result<Vec<Recomputed>, DeltaTableError> {
    Ok(commits(cfg, Tier::Hour.table())
        .await?
        .into_iter()
        .filter_map(|(_, info)| {
            let r = info.get("strata.recompute")?;
            Some(Recomputed {
                from_ms: r.get("from_ms")?.as_i64()?,
                to_ms: r.get("to_ms")?.as_i64()?,
                archive_version: r.get("archive_version")?.as_i64()?,
            })
        })
        .collect())
}

/// (archive version, event hours touched) of every archive commit.
pub async fn archive_commits(cfg: &Config) -> Result<Vec<(i64, Vec<i64>)>, DeltaTableError> {
    Ok(commits(cfg, EVENTS_TABLE)
        .await?
        .into_iter()
        .filter_map(|(v, info)| {
            let hours = info.get("strata.archive")?.get("hours")?.as_array()?;
            Some((
                v,
                hours.iter().filter_map(serde_json::Value::as_i64).collect(),
            ))
        })
        .collect())
}

/// Covered hours, dirty hours and the boundary, from the lake.
pub async fn status(
    cfg: &Config,
) -> Result<(BTreeMap<i64, i64>, BTreeSet<i64>, Option<i64>), DeltaTableError> {
    let covered = covered_hours(&recomputes(cfg).await?);
    let dirty = dirty_hours(&covered, &archive_commits(cfg).await?);
    let end = boundary(&covered);
    Ok((covered, dirty, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_means_touched_after_the_latest_recompute() {
        let covered = covered_hours(&[
            Recomputed {
                from_ms: 0,
                to_ms: 2 * HOUR_MS,
                archive_version: 3,
            },
            Recomputed {
                from_ms: HOUR_MS,
                to_ms: 2 * HOUR_MS,
                archive_version: 5,
            },
        ]);
        assert_eq!(covered, BTreeMap::from([(0, 3), (HOUR_MS, 5)]));
        let commits = vec![(2, vec![0]), (4, vec![0, HOUR_MS]), (6, vec![5 * HOUR_MS])];
        // hour 0: touched by v4 > 3 → dirty; hour 1: v4 ≤ 5 → clean; hour 5: never recomputed.
        assert_eq!(
            dirty_hours(&covered, &commits),
            BTreeSet::from([0, 5 * HOUR_MS])
        );
        assert_eq!(boundary(&covered), Some(2 * HOUR_MS));
        assert_eq!(boundary(&BTreeMap::new()), None);
    }
}
