//! The batch layer's side of a query: the Delta tables `rollup_1m` and `rollup_1h`, read from
//! the lake as queries need them, through a cache bounded in bytes.
//!
//! A [`View`] is what one refresh saw: each tier's coverage (hour → the recompute that last
//! wrote it, folded from the Delta log by `strata_batch::coverage`) and a DataFusion session over
//! both tables pinned at the coverage's versions. Queries read the current view without locks;
//! a refresh builds the next one aside and swaps it in, so it never blocks a query and a failed
//! refresh leaves the last good view in place. Nothing here grows with the history: a view holds
//! one entry per covered hour, and rows live in the cache.
//!
//! Rows are read in [`block`]s — one metric of `rollup_1m` for one hour, one metric of
//! `rollup_1h` for one day (which also lists the day's series and labels), the metric names of a
//! day — keyed by the coverage of what they hold (the table version of the recompute that wrote
//! each hour), so a recompute of an hour makes exactly that hour's blocks unreachable and they
//! age out. A view indexes each tier's data files by day (and metric range, from the files'
//! statistics) once per refresh, so a block reads only the files of its day that can hold its
//! metric — never a plan over the whole table — and in them, sorted by (metric, hour, series)
//! with small row groups and page indexes, only the row groups of its metric and hour. Hours
//! of one metric and day that a query wants at once are read together and cut into their
//! blocks (`group`).

pub mod block;
mod group;
mod read;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use datafusion::prelude::SessionContext;
use deltalake::{DeltaTable, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use strata_batch::archive::writer::open_table;
use strata_batch::coverage::{Cover, Coverage, Folded, Summaries, SummaryError};
use strata_batch::recompute::Tier;
use strata_shared::Config;
use tokio::sync::Semaphore;

use crate::cache::Cache;
use crate::series::SeriesInfo;
use crate::window::{Bucket, Need};
use block::{Block, Rows};
use group::DayRead;
use read::{files_by_day, DataFile};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Blocks read from the lake at once, over all queries (each read decodes Parquet).
const CONCURRENT_READS: usize = 4;
/// Blocks one call asks for at once (the reads among them still wait for [`CONCURRENT_READS`]).
const BLOCKS_AT_ONCE: usize = 48;

/// Why the batch views could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The lake could not be read.
    #[error("lake: {0}")]
    Lake(#[from] DeltaTableError),
    /// The coverage record could not be read.
    #[error("coverage: {0}")]
    Coverage(#[from] SummaryError),
    /// A rollup table could not be queried.
    #[error("rollup query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// A rollup table has an unexpected shape.
    #[error("rollup table: {0}")]
    Shape(String),
    /// A block load that several queries waited for failed.
    #[error(transparent)]
    Shared(Arc<BatchError>),
}

/// One refresh's picture of the batch views.
#[derive(Default)]
pub struct View {
    /// Coverage of each tier, in [`Tier::ALL`] order.
    tiers: [Folded<Coverage>; 2],
    /// Hours covered by both tiers: hour start → (minute tier, hour tier) cover.
    pub covered: BTreeMap<i64, [Cover; 2]>,
    /// A session that can read the lake's files (`None` before the first recompute).
    ctx: Option<Arc<SessionContext>>,
    /// Each tier's data files at the coverage's version, by day.
    files: [BTreeMap<i64, Vec<DataFile>>; 2],
}

impl View {
    /// The time boundary: end of the newest covered hour.
    pub fn boundary(&self) -> Option<i64> {
        self.covered.keys().next_back().map(|h| h + HOUR_MS)
    }

    /// The table versions the view reads, in [`Tier::ALL`] order.
    pub fn versions(&self) -> [Option<i64>; 2] {
        [self.tiers[0].version, self.tiers[1].version]
    }

    /// A fingerprint of what the batch views hold for `hours`: equal fingerprints, equal rows.
    pub fn fingerprint(&self, hours: impl IntoIterator<Item = i64>) -> u64 {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        for hour in hours {
            h.update(&hour.to_le_bytes());
            match self.covered.get(&hour) {
                Some([m, o]) => {
                    h.update(&m.table_version.to_le_bytes());
                    h.update(&o.table_version.to_le_bytes());
                }
                None => h.update(b"-"),
            }
        }
        h.digest()
    }

    /// Whether every hour in `hours` is covered.
    pub fn covers(&self, mut hours: impl Iterator<Item = i64>) -> bool {
        hours.all(|h| self.covered.contains_key(&h))
    }

    /// The files a block must read: its tier's files of its day that can hold its metric.
    fn files_of(&self, key: &BlockKey) -> Vec<String> {
        let (tier, day, metric) = match key {
            BlockKey::Minute { metric, hour, .. } => {
                (0, hour.div_euclid(DAY_MS) * DAY_MS, Some(metric.as_ref()))
            }
            BlockKey::Hour { metric, day, .. } => (1, *day, Some(metric.as_ref())),
            BlockKey::Names { day, .. } => (1, *day, None),
        };
        [day, i64::MIN]
            .iter()
            .filter_map(|d| self.files[tier].get(d))
            .flatten()
            .filter(|f| metric.is_none_or(|m| f.may_hold(m)))
            .map(|f| f.url.clone())
            .collect()
    }

    fn day_fingerprint(&self, day: i64) -> u64 {
        let mut h = xxhash_rust::xxh64::Xxh64::new(1);
        for (hour, c) in self.tiers[1].state.hours.range(day..day + DAY_MS) {
            h.update(&hour.to_le_bytes());
            h.update(&c.table_version.to_le_bytes());
        }
        h.digest()
    }
}

/// What a block holds (and from which recomputes), the cache's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BlockKey {
    /// `rollup_1m` rows of a metric in one hour, as written by the commit `version`.
    Minute {
        metric: Arc<str>,
        hour: i64,
        version: i64,
        quantiles: bool,
    },
    /// `rollup_1h` rows (and labels) of a metric in one day.
    Hour {
        metric: Arc<str>,
        day: i64,
        fingerprint: u64,
        quantiles: bool,
    },
    /// Metric names of one day of `rollup_1h`.
    Names { day: i64, fingerprint: u64 },
}

impl BlockKey {
    fn with_quantiles(&self) -> Option<BlockKey> {
        match self {
            BlockKey::Minute {
                metric,
                hour,
                version,
                quantiles: false,
            } => Some(BlockKey::Minute {
                metric: metric.clone(),
                hour: *hour,
                version: *version,
                quantiles: true,
            }),
            BlockKey::Hour {
                metric,
                day,
                fingerprint,
                quantiles: false,
            } => Some(BlockKey::Hour {
                metric: metric.clone(),
                day: *day,
                fingerprint: *fingerprint,
                quantiles: true,
            }),
            _ => None,
        }
    }
}

/// The batch views: coverage, and rows through the block cache.
pub struct BatchSource {
    cfg: Config,
    /// The tiers' coverage summaries (`None` until the lake could be opened).
    summaries: tokio::sync::Mutex<Option<[Summaries; 2]>>,
    view: RwLock<Arc<View>>,
    /// The tables as of the last refresh, brought forward incrementally (refresh only).
    tables: tokio::sync::Mutex<[Option<DeltaTable>; 2]>,
    cache: Cache<BlockKey, Block, BatchError>,
    reads: Arc<Semaphore>,
}

impl BatchSource {
    /// A source over the configured lake with a block cache of `serving.block_cache_bytes`
    /// (nothing is read yet; a lake that cannot be opened now is tried again at each refresh).
    pub fn new(cfg: &Config) -> Result<Self, BatchError> {
        Ok(Self {
            cfg: cfg.clone(),
            summaries: tokio::sync::Mutex::new(None),
            view: RwLock::new(Arc::new(View::default())),
            tables: tokio::sync::Mutex::new([None, None]),
            cache: Cache::new(cfg.serving.block_cache_bytes as usize),
            reads: Arc::new(Semaphore::new(CONCURRENT_READS)),
        })
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The block cache (for its size and counters).
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// The block cache's counters.
    pub fn cache_stats(&self) -> &crate::cache::Stats {
        self.cache.stats()
    }

    /// Reads the commits since the current view and, if there are any, swaps in a view at the
    /// newest versions. Returns whether the view changed. Queries go on reading the current
    /// view meanwhile; on failure it stays.
    pub async fn refresh(&self) -> Result<bool, BatchError> {
        let mut tables = self.tables.lock().await;
        let mut summaries = self.summaries.lock().await;
        if summaries.is_none() {
            let [m, h] = Tier::ALL.map(|t| strata_batch::coverage::summaries(&self.cfg, t.table()));
            *summaries = Some([m?, h?]);
        }
        let summaries = summaries.as_ref().expect("opened above");
        let current = self.view();
        let mut tiers = current.tiers.clone();
        let mut changed = false;
        for (i, s) in summaries.iter().enumerate() {
            if tiers[i].version.is_none() {
                // First look: start from the newest summary rather than the whole log.
                tiers[i] = s.newest().await?;
                changed |= tiers[i].version.is_some();
            }
            changed |= s.advance(&mut tiers[i]).await? > 0;
        }
        if !changed {
            return Ok(false);
        }
        let ctx = SessionContext::new();
        let mut registered = false;
        let mut files: [BTreeMap<i64, Vec<DataFile>>; 2] = Default::default();
        for (i, tier) in Tier::ALL.into_iter().enumerate() {
            let Some(v) = tiers[i].version else { continue };
            let v = u64::try_from(v).unwrap_or(0);
            let table = match tables[i].take() {
                Some(mut t) if t.version().is_some_and(|have| have <= v) => {
                    t.update_incremental(Some(v)).await?;
                    t
                }
                _ => {
                    let mut t = open_table(&self.cfg, tier.table()).await?;
                    t.load_version(v).await?;
                    t
                }
            };
            table.update_datafusion_session(&ctx.state())?;
            files[i] = files_by_day(&table)?;
            tables[i] = Some(table);
            registered = true;
        }
        let covered = tiers[1]
            .state
            .hours
            .iter()
            .filter_map(|(h, hour)| Some((*h, [*tiers[0].state.hours.get(h)?, *hour])))
            .collect();
        let next = View {
            tiers,
            covered,
            ctx: registered.then(|| Arc::new(ctx)),
            files,
        };
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(true)
    }

    async fn block(&self, view: &View, key: BlockKey) -> Result<Arc<Block>, BatchError> {
        self.block_from(view, key, None).await
    }

    /// The block of `key`, taken from `day` (a read of several hours of its day) when it has
    /// to be loaded and `day` is given.
    async fn block_from(
        &self,
        view: &View,
        key: BlockKey,
        day: Option<DayRead>,
    ) -> Result<Arc<Block>, BatchError> {
        if let Some(b) = key.with_quantiles().and_then(|k| self.cache.get(&k)) {
            return Ok(b);
        }
        let Some(ctx) = view.ctx.clone() else {
            return Ok(Arc::new(Block::Rows(Rows::default())));
        };
        let reads = self.reads.clone();
        let k = key.clone();
        let files = view.files_of(&key);
        self.cache
            .get_or_load(key, move || async move {
                match (day, &k) {
                    (Some(day), BlockKey::Minute { hour, .. }) => day.take(*hour).await,
                    _ => {
                        let _permit = reads.acquire_owned().await.expect("never closed");
                        read::load(&ctx, &k, files).await
                    }
                }
            })
            .await
            .map_err(BatchError::Shared)
    }

    /// Metrics with hour-tier rows in the covered hours of `ranges`.
    pub async fn metric_names(
        &self,
        view: &View,
        ranges: &[(i64, i64)],
    ) -> Result<BTreeSet<String>, BatchError> {
        let mut out = BTreeSet::new();
        for (day, mask) in day_masks(ranges) {
            let key = BlockKey::Names {
                day,
                fingerprint: view.day_fingerprint(day),
            };
            if let Block::Names(n) = &*self.block(view, key).await? {
                out.extend(n.in_hours(mask).map(str::to_owned));
            }
        }
        Ok(out)
    }

    /// Series of `metric` with hour-tier rows in `ranges` (covered ranges).
    pub async fn series(
        &self,
        view: &View,
        metric: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<Arc<SeriesInfo>>, BatchError> {
        let metric: Arc<str> = Arc::from(metric);
        let mut out: BTreeMap<u64, Arc<SeriesInfo>> = BTreeMap::new();
        for (day, mask) in day_masks(ranges) {
            let key = BlockKey::Hour {
                metric: metric.clone(),
                day,
                fingerprint: view.day_fingerprint(day),
                quantiles: false,
            };
            if let Block::Rows(rows) = &*self.block(view, key).await? {
                for (a, b) in mask_ranges(day, mask) {
                    for s in rows.series_in(a, b) {
                        out.entry(s.series_id).or_insert(s);
                    }
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// Buckets of `series` (all of `metric`) from `tier` whose start lies in `ranges` (covered
    /// ranges), per series, sorted by end; merged into the windows of `grid` (first point,
    /// step) where that is coarser than the tier ([`Rows::windows`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn buckets(
        &self,
        view: &View,
        tier: Tier,
        metric: &str,
        series: &[u64],
        ranges: &[(i64, i64)],
        grid: (i64, i64),
        need: Need,
    ) -> Result<HashMap<u64, Vec<Bucket>>, BatchError> {
        let metric: Arc<str> = Arc::from(metric);
        let quantiles = need == Need::Quantiles;
        // (block key, the part of the ranges it answers)
        let mut wanted: Vec<(BlockKey, (i64, i64))> = Vec::new();
        for &(a, b) in ranges {
            let span = match tier {
                Tier::Minute => HOUR_MS,
                Tier::Hour => DAY_MS,
            };
            let mut at = a.div_euclid(span) * span;
            while at < b {
                let part = (a.max(at), b.min(at + span));
                let key = match tier {
                    Tier::Minute => match view.covered.get(&at) {
                        Some([m, _]) => BlockKey::Minute {
                            metric: metric.clone(),
                            hour: at,
                            version: m.table_version,
                            quantiles,
                        },
                        None => {
                            at += span;
                            continue;
                        }
                    },
                    Tier::Hour => BlockKey::Hour {
                        metric: metric.clone(),
                        day: at,
                        fingerprint: view.day_fingerprint(at),
                        quantiles,
                    },
                };
                wanted.push((key, part));
                at += span;
            }
        }
        let step = tier.step_ms();
        let mut out: HashMap<u64, Vec<Bucket>> = HashMap::new();
        let mut days = self.day_reads(view, &wanted);
        let loads: Vec<_> = wanted
            .into_iter()
            .map(|(key, part)| {
                let day = days.remove(&key);
                async move { self.block_from(view, key, day).await.map(|b| (b, part)) }
            })
            .collect();
        let mut blocks = futures::stream::iter(loads).buffered(BLOCKS_AT_ONCE);
        while let Some((block, part)) = blocks.try_next().await? {
            if let Block::Rows(rows) = &*block {
                for &id in series {
                    rows.windows(id, part, step, grid, quantiles, out.entry(id).or_default());
                }
            }
        }
        for b in out.values_mut() {
            b.sort_by_key(|b| b.end_ms);
        }
        Ok(out)
    }
}

/// The days that `ranges` touch, each with the bitmask of its hours they touch.
fn day_masks(ranges: &[(i64, i64)]) -> BTreeMap<i64, u32> {
    let mut out: BTreeMap<i64, u32> = BTreeMap::new();
    for &(a, b) in ranges {
        let mut h = a.div_euclid(HOUR_MS) * HOUR_MS;
        while h < b {
            let day = h.div_euclid(DAY_MS) * DAY_MS;
            *out.entry(day).or_default() |= 1 << ((h - day) / HOUR_MS);
            h += HOUR_MS;
        }
    }
    out
}

/// The hours of a day's mask as ranges.
fn mask_ranges(day: i64, mask: u32) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for i in 0..24 {
        if mask & (1 << i) != 0 {
            let h = day + i64::from(i) * HOUR_MS;
            match out.last_mut() {
                Some((_, to)) if *to == h => *to += HOUR_MS,
                _ => out.push((h, h + HOUR_MS)),
            }
        }
    }
    out
}

/// Sorted, non-overlapping union of ranges.
pub fn merge_ranges(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        assert_eq!(
            merge_ranges(vec![(5, 7), (0, 2), (1, 3), (7, 9)]),
            vec![(0, 3), (5, 9)]
        );
        assert!(merge_ranges(vec![]).is_empty());
    }

    #[test]
    fn ranges_become_days_and_hours() {
        let d = 3 * DAY_MS;
        // 22:30 of day 3 to 01:00 of day 4: hours 22, 23 of day 3, hour 0 of day 4.
        let m = day_masks(&[(d + 22 * HOUR_MS + HOUR_MS / 2, d + DAY_MS + HOUR_MS)]);
        assert_eq!(
            m,
            BTreeMap::from([(d, (1 << 22) | (1 << 23)), (d + DAY_MS, 1)])
        );
        assert_eq!(
            mask_ranges(d, (1 << 22) | (1 << 23) | 1),
            vec![(d, d + HOUR_MS), (d + 22 * HOUR_MS, d + DAY_MS)]
        );
    }

    #[test]
    fn a_fingerprint_changes_with_the_recompute_of_its_hours_only() {
        let c = |v| Cover {
            archive_version: 1,
            table_version: v,
        };
        let mut view = View::default();
        view.covered.insert(0, [c(1), c(1)]);
        view.covered.insert(HOUR_MS, [c(1), c(1)]);
        let (a, b) = (view.fingerprint([0]), view.fingerprint([HOUR_MS]));
        view.covered.insert(HOUR_MS, [c(2), c(2)]);
        assert_eq!(view.fingerprint([0]), a, "hour 0 untouched");
        assert_ne!(view.fingerprint([HOUR_MS]), b, "hour 1 recomputed");
        assert!(view.covers([0, HOUR_MS].into_iter()));
        assert!(!view.covers([0, 2 * HOUR_MS].into_iter()));
    }
}
