//! The merge: which layer answers which part of a query, and the buckets of both, side by side.
//!
//! Hours the batch layer covers are read from the batch views (exact); every other hour — after
//! the time boundary, or a hole inside the batch range where a recompute failed — from
//! ClickHouse. A layer that cannot answer adds a warning instead of failing the query: with
//! ClickHouse down the batch-covered part is still served, and the other way round.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use strata_batch::recompute::Tier;
use strata_shared::Config;

use crate::series::{exposed_base, SeriesInfo};
use crate::source::batch::{merge_ranges, BatchError, BatchSource, View};
use crate::source::speed::{SpeedError, SpeedSource};
use crate::window::{Bucket, Layer, Need};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// How long a list of ClickHouse metric names is reused for the same ranges.
const NAMES_TTL: Duration = Duration::from_secs(10);
/// Lists of ClickHouse metric names kept (one per range asked for).
const NAMES_KEPT: usize = 64;
/// Metrics of one query fetched at once.
const CONCURRENT_METRICS: usize = 4;

/// A time range and the layer that answered it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Provenance {
    /// Start, Unix ms (inclusive).
    pub from_ms: i64,
    /// End, Unix ms (exclusive).
    pub to_ms: i64,
    /// Which layer.
    pub layer: Layer,
}

/// Buckets of the selected series, and what the caller should know about them.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Per series, its buckets sorted by end.
    pub series: Vec<(Arc<SeriesInfo>, Vec<Bucket>)>,
    /// Which layer answered which part of the span.
    pub provenance: Vec<Provenance>,
    /// Problems that made the answer partial.
    pub warnings: Vec<String>,
}

type NameLists = BTreeMap<Vec<(i64, i64)>, (Instant, Vec<String>)>;
type SeriesLists = BTreeMap<(Vec<String>, Vec<(i64, i64)>), (Instant, Vec<Arc<SeriesInfo>>)>;

/// Both layers behind one interface.
pub struct Engine {
    batch: BatchSource,
    batch_problem: RwLock<Option<String>>,
    speed: SpeedSource,
    /// ClickHouse metric names per ranges asked (minute-aligned), reused for [`NAMES_TTL`].
    names: Mutex<NameLists>,
    /// ClickHouse series per (metrics, ranges asked), reused for [`NAMES_TTL`] like the names.
    speed_series: Mutex<SeriesLists>,
}

fn batch_warning(e: &BatchError) -> String {
    format!("batch views unreadable, answers may miss batch data: {e}")
}

fn speed_warning(e: &impl std::fmt::Display) -> String {
    format!("speed layer unavailable: {e}")
}

impl Engine {
    /// An engine over the configured lake and ClickHouse (nothing is read yet).
    pub fn new(cfg: &Config) -> Result<Self, BatchError> {
        Ok(Self {
            batch: BatchSource::new(cfg)?,
            batch_problem: RwLock::new(None),
            speed: SpeedSource::new(&cfg.clickhouse, cfg.validation.max_future),
            names: Mutex::new(BTreeMap::new()),
            speed_series: Mutex::new(BTreeMap::new()),
        })
    }

    /// Reads what the batch layer committed since the last refresh; a failure is kept as a
    /// warning for the queries that follow (the last good view stays in use). Never blocks a
    /// query.
    pub async fn refresh_batch(&self) -> bool {
        let outcome = self.batch.refresh().await;
        let mut problem = self
            .batch_problem
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(changed) => {
                *problem = None;
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the batch views");
                *problem = Some(e.to_string());
                false
            }
        }
    }

    /// The batch views as of the last refresh.
    pub fn view(&self) -> Arc<View> {
        self.batch.view()
    }

    /// The time boundary (end of the newest covered hour), if any hour is covered.
    pub fn boundary(&self) -> Option<i64> {
        self.batch.view().boundary()
    }

    /// The batch views' source (block cache size and counters).
    pub fn batch(&self) -> &BatchSource {
        &self.batch
    }

    /// The speed source (for health checks).
    pub fn speed(&self) -> &SpeedSource {
        &self.speed
    }

    /// The warning every answer carries while the batch views cannot be refreshed (the last
    /// good view is still used). Added by the API to whole answers, never to cached parts.
    pub fn refresh_warning(&self) -> Option<String> {
        self.batch_problem
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| format!("batch views unreadable, answers may miss recent recomputes: {e}"))
    }

    /// Metric names with data in `[from_ms, to_ms)`: from the batch views (as of `view`) for
    /// the hours they cover, from ClickHouse for the rest.
    pub async fn metric_names(
        &self,
        view: &View,
        from_ms: i64,
        to_ms: i64,
    ) -> (Vec<String>, Vec<String>) {
        let (batch_ranges, speed_ranges) = split(&view.covered, from_ms, to_ms);
        let mut warnings: Vec<String> = Vec::new();
        let mut names: BTreeSet<String> = BTreeSet::new();
        match self.batch.metric_names(view, &batch_ranges).await {
            Ok(n) => names.extend(n),
            Err(e) => warnings.push(batch_warning(&e)),
        }
        match self.speed_names(&speed_ranges).await {
            Ok(n) => names.extend(n),
            Err(e) => warnings.push(speed_warning(&e)),
        }
        (names.into_iter().collect(), warnings)
    }

    async fn speed_names(&self, ranges: &[(i64, i64)]) -> Result<Vec<String>, SpeedError> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        // Keyed by the ranges asked for, to the minute: a list answers only its own ranges.
        let key = minute_key(ranges);
        {
            let lists = self.names.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, names)) = lists.get(&key) {
                if at.elapsed() < NAMES_TTL {
                    return Ok(names.clone());
                }
            }
        }
        let names = self.speed.metric_names(ranges).await?;
        let mut lists = self.names.lock().unwrap_or_else(|p| p.into_inner());
        lists.retain(|_, (at, _)| at.elapsed() < NAMES_TTL);
        if lists.len() < NAMES_KEPT {
            lists.insert(key, (Instant::now(), names.clone()));
        }
        Ok(names)
    }

    /// ClickHouse's series of `names` in `ranges`, reused for the same names and ranges (to the
    /// minute) for [`NAMES_TTL`], as the names are: every panel of a dashboard, and every
    /// viewer, asks for the same ones.
    async fn speed_series(
        &self,
        names: Vec<String>,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<Arc<SeriesInfo>>, SpeedError> {
        let key = (names, minute_key(ranges));
        {
            let lists = self.speed_series.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, series)) = lists.get(&key) {
                if at.elapsed() < NAMES_TTL {
                    return Ok(series.clone());
                }
            }
        }
        let series: Vec<Arc<SeriesInfo>> = self
            .speed
            .series(Some(&key.0), ranges)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        let mut lists = self.speed_series.lock().unwrap_or_else(|p| p.into_inner());
        lists.retain(|_, (at, _)| at.elapsed() < NAMES_TTL);
        if lists.len() < NAMES_KEPT {
            lists.insert(key, (Instant::now(), series.clone()));
        }
        Ok(series)
    }

    /// Series whose exposed base name passes `want` with data in `[from_ms, to_ms)`, from both
    /// layers (each series once): the batch views (as of `view`) for the hours they cover, ClickHouse for the
    /// rest only — the same split as the data, and most of a long range is batch-covered.
    pub async fn series(
        &self,
        view: &View,
        want: impl Fn(&str) -> bool,
        from_ms: i64,
        to_ms: i64,
    ) -> (Vec<Arc<SeriesInfo>>, Vec<String>) {
        let (batch_ranges, speed_ranges) = split(&view.covered, from_ms, to_ms);
        let mut warnings: Vec<String> = Vec::new();
        let mut out: BTreeMap<u64, Arc<SeriesInfo>> = BTreeMap::new();
        if !batch_ranges.is_empty() {
            match self.batch.metric_names(view, &batch_ranges).await {
                Ok(names) => {
                    let wanted: Vec<String> = names
                        .into_iter()
                        .filter(|n| want(&exposed_base(n)))
                        .collect();
                    let lookups: Vec<_> = wanted
                        .iter()
                        .map(|m| self.batch.series(view, m, &batch_ranges))
                        .collect();
                    let mut found =
                        futures::stream::iter(lookups).buffer_unordered(CONCURRENT_METRICS);
                    while let Some(r) = found.next().await {
                        match r {
                            Ok(series) => {
                                out.extend(series.into_iter().map(|s| (s.series_id, s)));
                            }
                            Err(e) => warnings.push(batch_warning(&e)),
                        }
                    }
                }
                Err(e) => warnings.push(batch_warning(&e)),
            }
        }
        match self.speed_names(&speed_ranges).await {
            Ok(names) => {
                let names: Vec<String> = names
                    .into_iter()
                    .filter(|n| want(&exposed_base(n)))
                    .collect();
                if !names.is_empty() {
                    match self.speed_series(names, &speed_ranges).await {
                        Ok(series) => {
                            for s in series {
                                out.entry(s.series_id).or_insert(s);
                            }
                        }
                        Err(e) => warnings.push(speed_warning(&e)),
                    }
                }
            }
            Err(e) => warnings.push(speed_warning(&e)),
        }
        let mut series: Vec<Arc<SeriesInfo>> = out.into_values().collect();
        series.sort();
        warnings.sort();
        warnings.dedup();
        (series, warnings)
    }

    /// Buckets (batch rows as of `view`) for points `steps` (sorted) with windows `(t − range_ms, t]`: per minute when
    /// `per_minute` (for range functions), else as coarse as the windows allow; quantiles and
    /// sketches only when `need` says so. The metrics of the query are fetched concurrently; a
    /// metric whose batch rows cannot be read is answered from ClickHouse, with a warning.
    pub async fn fetch(
        &self,
        view: &View,
        series: &[Arc<SeriesInfo>],
        steps: &[i64],
        (step_ms, range_ms): (i64, i64),
        per_minute: bool,
        need: Need,
    ) -> Fetched {
        let mut fetched = Fetched::default();
        let (Some(&first), Some(&last)) = (steps.first(), steps.last()) else {
            return fetched;
        };
        // Minutes whose end lies in (first − range, last].
        let lo = ceil_to(first - range_ms - MINUTE_MS + 1, MINUTE_MS);
        let hi = ceil_to(last - MINUTE_MS + 1, MINUTE_MS);
        if hi <= lo {
            return fetched;
        }
        let (batch_ranges, speed_ranges) = split(&view.covered, lo, hi);
        for (ranges, layer) in [(&batch_ranges, Layer::Batch), (&speed_ranges, Layer::Speed)] {
            fetched
                .provenance
                .extend(ranges.iter().map(|(a, b)| Provenance {
                    from_ms: *a,
                    to_ms: *b,
                    layer,
                }));
        }
        fetched.provenance.sort_by_key(|p| p.from_ms);
        // The hour tier answers when each window is whole hours on the hour grid (a `[1d]`
        // window at hourly points reads 24 hour rows, not 1,440 minutes).
        let tier = if !per_minute
            && range_ms % HOUR_MS == 0
            && steps.iter().all(|t| t.rem_euclid(HOUR_MS) == 0)
        {
            Tier::Hour
        } else {
            Tier::Minute
        };
        // Both layers merge whole windows themselves when the windows tile the time (points
        // `step_ms` apart, each window one step wide: ClickHouse in its query, the batch views
        // as they cut rows from a block); otherwise they return the tier's buckets and the
        // windows are formed by the caller.
        let tiled = steps.windows(2).all(|w| w[1] - w[0] == step_ms);
        let grid = if range_ms == step_ms && !per_minute && tiled {
            (first, step_ms)
        } else {
            (0, tier.step_ms())
        };
        let mut by_metric: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for s in series {
            by_metric.entry(&s.metric).or_default().push(s.series_id);
        }
        let (batch_ranges, speed_ranges) = (&batch_ranges, &speed_ranges);
        let per_metric: Vec<_> = by_metric
            .into_iter()
            .map(|(metric, ids)| async move {
                let mut buckets: HashMap<u64, Vec<Bucket>> = HashMap::new();
                let mut warnings = Vec::new();
                let mut speed = speed_ranges.clone();
                if !batch_ranges.is_empty() {
                    match self
                        .batch
                        .buckets(view, tier, metric, &ids, batch_ranges, grid, need)
                        .await
                    {
                        Ok(b) => buckets = b,
                        Err(e) => {
                            warnings.push(format!(
                                "{}; answering those hours from the speed layer",
                                batch_warning(&e)
                            ));
                            speed = merge_ranges([speed, batch_ranges.clone()].concat());
                        }
                    }
                }
                if !speed.is_empty() {
                    match self.speed.buckets(metric, &ids, &speed, grid, need).await {
                        Ok(b) => {
                            for (id, b) in b {
                                buckets.entry(id).or_default().extend(b);
                            }
                        }
                        Err(e) => warnings.push(format!(
                            "speed layer unavailable, showing batch data only: {e}"
                        )),
                    }
                }
                (buckets, warnings)
            })
            .collect();
        let mut per_series: HashMap<u64, Vec<Bucket>> = HashMap::new();
        let mut results = futures::stream::iter(per_metric).buffer_unordered(CONCURRENT_METRICS);
        while let Some((buckets, warnings)) = results.next().await {
            per_series.extend(buckets);
            fetched.warnings.extend(warnings);
        }
        for s in series {
            let mut b = per_series.remove(&s.series_id).unwrap_or_default();
            b.sort_by_key(|b| b.end_ms);
            fetched.series.push((s.clone(), b));
        }
        fetched.warnings.sort();
        fetched.warnings.dedup();
        fetched
    }
}

/// Ranges to the minute (start down, end up), the key of the short-lived ClickHouse lists.
fn minute_key(ranges: &[(i64, i64)]) -> Vec<(i64, i64)> {
    ranges
        .iter()
        .map(|(a, b)| (a.div_euclid(MINUTE_MS), ceil_to(*b, MINUTE_MS) / MINUTE_MS))
        .collect()
}

fn ceil_to(v: i64, unit: i64) -> i64 {
    v.div_euclid(unit) * unit + if v.rem_euclid(unit) == 0 { 0 } else { unit }
}

/// Time ranges `[from, to)` in Unix ms.
pub type Ranges = Vec<(i64, i64)>;

/// Splits `[lo, hi)` into the ranges of covered hours (batch) and the rest (speed).
pub fn split<T>(covered: &BTreeMap<i64, T>, lo: i64, hi: i64) -> (Ranges, Ranges) {
    let first_hour = lo.div_euclid(HOUR_MS) * HOUR_MS;
    let batch: Vec<(i64, i64)> = covered
        .range(first_hour..hi)
        .map(|(h, _)| ((*h).max(lo), (h + HOUR_MS).min(hi)))
        .filter(|(a, b)| a < b)
        .collect();
    let batch = merge_ranges(batch);
    let mut speed = Vec::new();
    let mut at = lo;
    for (a, b) in &batch {
        if *a > at {
            speed.push((at, *a));
        }
        at = *b;
    }
    if at < hi {
        speed.push((at, hi));
    }
    (batch, speed)
}

#[cfg(test)]
mod tests {
    use super::*;
    const H: i64 = HOUR_MS;

    #[test]
    fn covered_hours_go_to_batch_and_holes_to_speed() {
        // Hours 1, 2 and 4 covered; 3 is a hole; the boundary is the end of hour 4.
        let covered = BTreeMap::from([(H, 1), (2 * H, 1), (4 * H, 1)]);
        let (batch, speed) = split(&covered, H / 2, 6 * H);
        assert_eq!(batch, vec![(H, 3 * H), (4 * H, 5 * H)]);
        assert_eq!(speed, vec![(H / 2, H), (3 * H, 4 * H), (5 * H, 6 * H)]);
        let (batch, speed) = split(&BTreeMap::<i64, i64>::new(), 0, H);
        assert!(batch.is_empty());
        assert_eq!(speed, vec![(0, H)]);
        // A range inside one covered hour.
        let (batch, speed) = split(&covered, H + 60_000, H + 120_000);
        assert_eq!((batch, speed), (vec![(H + 60_000, H + 120_000)], vec![]));
    }

    #[test]
    fn rounding_up_to_a_unit() {
        assert_eq!(ceil_to(0, 60_000), 0);
        assert_eq!(ceil_to(1, 60_000), 60_000);
        assert_eq!(ceil_to(-1, 60_000), 0);
        assert_eq!(ceil_to(-60_001, 60_000), -60_000);
    }
}
