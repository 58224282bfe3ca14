//! The merge: which layer answers which part of a query, and the buckets of both, side by side.
//!
//! Hours the batch layer covers are read from the batch views (exact); every other hour — after
//! the time boundary, or a hole inside the batch range where a recompute failed — from
//! ClickHouse. A layer that cannot answer adds a warning instead of failing the query: with
//! ClickHouse down the batch-covered part is still served, and the other way round.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_batch::recompute::Tier;
use strata_shared::Config;
use tokio::sync::{Mutex, RwLock};

use crate::series::{exposed_base, SeriesInfo};
use crate::source::batch::{merge_ranges, BatchView};
use crate::source::speed::SpeedSource;
use crate::window::{Bucket, Layer, Need};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// How long the list of ClickHouse metric names is reused.
const NAMES_TTL: Duration = Duration::from_secs(10);

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

/// Both layers behind one interface.
pub struct Engine {
    cfg: Config,
    batch: RwLock<BatchView>,
    batch_problem: RwLock<Option<String>>,
    speed: SpeedSource,
    names: Mutex<Option<(Instant, Vec<String>)>>,
}

impl Engine {
    /// An engine over the configured lake and ClickHouse (nothing is read yet).
    pub fn new(cfg: Config) -> Self {
        let speed = SpeedSource::new(&cfg.clickhouse);
        Self {
            cfg,
            batch: RwLock::new(BatchView::default()),
            batch_problem: RwLock::new(None),
            speed,
            names: Mutex::new(None),
        }
    }

    /// Re-reads the batch views if a recompute committed; a failure is kept as a warning for
    /// the queries that follow (the last good views stay in use).
    pub async fn refresh_batch(&self) -> bool {
        // Most refreshes find nothing new: look without blocking the queries that read the view.
        match BatchView::latest_version(&self.cfg).await {
            Ok(v) if v == self.batch.read().await.version() => {
                *self.batch_problem.write().await = None;
                return false;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the batch views");
                *self.batch_problem.write().await = Some(e.to_string());
                return false;
            }
        }
        let mut view = self.batch.write().await;
        match view.refresh(&self.cfg).await {
            Ok(changed) => {
                *self.batch_problem.write().await = None;
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the batch views");
                *self.batch_problem.write().await = Some(e.to_string());
                false
            }
        }
    }

    /// The time boundary (end of the newest covered hour), if any hour is covered.
    pub async fn boundary(&self) -> Option<i64> {
        self.batch.read().await.boundary()
    }

    /// Rows held by the batch views.
    pub async fn batch_rows(&self) -> usize {
        self.batch.read().await.rows()
    }

    /// The speed source (for health checks).
    pub fn speed(&self) -> &SpeedSource {
        &self.speed
    }

    async fn batch_warning(&self) -> Option<String> {
        self.batch_problem
            .read()
            .await
            .as_ref()
            .map(|e| format!("batch views unreadable, answers may miss batch data: {e}"))
    }

    /// Metric names with data around `[from_ms, to_ms)` in either layer.
    pub async fn metric_names(&self, from_ms: i64, to_ms: i64) -> (Vec<String>, Vec<String>) {
        let mut warnings = Vec::new();
        let mut names: Vec<String> = self
            .batch
            .read()
            .await
            .series_in(from_ms, to_ms)
            .iter()
            .map(|s| s.metric.clone())
            .collect();
        match self.speed_names(from_ms, to_ms).await {
            Ok(n) => names.extend(n),
            Err(e) => warnings.push(format!("speed layer unavailable: {e}")),
        }
        warnings.extend(self.batch_warning().await);
        names.sort();
        names.dedup();
        (names, warnings)
    }

    async fn speed_names(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>, String> {
        // The cached list covers "recent" queries; other ranges ask ClickHouse.
        let recent = to_ms >= chrono::Utc::now().timestamp_millis() - HOUR_MS;
        if recent {
            if let Some((at, names)) = &*self.names.lock().await {
                if at.elapsed() < NAMES_TTL {
                    return Ok(names.clone());
                }
            }
        }
        let names = self
            .speed
            .metric_names(from_ms, to_ms)
            .await
            .map_err(|e| e.to_string())?;
        if recent {
            *self.names.lock().await = Some((Instant::now(), names.clone()));
        }
        Ok(names)
    }

    /// Series whose exposed base name passes `want` with data in `[from_ms, to_ms)`, from both
    /// layers (each series once): the batch views for the hours they cover, ClickHouse for the
    /// rest only — the same split as the data, and most of a long range is batch-covered.
    pub async fn series(
        &self,
        want: impl Fn(&str) -> bool,
        from_ms: i64,
        to_ms: i64,
    ) -> (Vec<Arc<SeriesInfo>>, Vec<String>) {
        let mut warnings = Vec::new();
        let view = self.batch.read().await;
        let mut out: HashMap<u64, Arc<SeriesInfo>> = view
            .series_in(from_ms, to_ms)
            .into_iter()
            .filter(|s| want(&exposed_base(&s.metric)))
            .map(|s| (s.series_id, s))
            .collect();
        let (_, speed_ranges) = split(&view.covered, from_ms, to_ms);
        drop(view);
        match self.speed_names(from_ms, to_ms).await {
            Ok(names) => {
                let names: Vec<String> = names
                    .into_iter()
                    .filter(|n| want(&exposed_base(n)))
                    .collect();
                if !names.is_empty() && !speed_ranges.is_empty() {
                    match self.speed.series(Some(&names), &speed_ranges).await {
                        Ok(series) => {
                            for s in series {
                                out.entry(s.series_id).or_insert_with(|| Arc::new(s));
                            }
                        }
                        Err(e) => warnings.push(format!("speed layer unavailable: {e}")),
                    }
                }
            }
            Err(e) => warnings.push(format!("speed layer unavailable: {e}")),
        }
        warnings.extend(self.batch_warning().await);
        let mut series: Vec<Arc<SeriesInfo>> = out.into_values().collect();
        series.sort();
        (series, warnings)
    }

    /// Buckets for points `steps` (sorted) with windows `(t − range_ms, t]`: per minute when
    /// `per_minute` (for range functions), else as coarse as the windows allow; quantiles and
    /// sketches only when `need` says so.
    pub async fn fetch(
        &self,
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
        let hi = last - MINUTE_MS + 1;
        let hi = ceil_to(hi, MINUTE_MS);
        if hi <= lo {
            return fetched;
        }
        let view = self.batch.read().await;
        let (batch_ranges, speed_ranges) = split(&view.covered, lo, hi);
        for (a, b) in &batch_ranges {
            fetched.provenance.push(Provenance {
                from_ms: *a,
                to_ms: *b,
                layer: Layer::Batch,
            });
        }
        for (a, b) in &speed_ranges {
            fetched.provenance.push(Provenance {
                from_ms: *a,
                to_ms: *b,
                layer: Layer::Speed,
            });
        }
        fetched.provenance.sort_by_key(|p| p.from_ms);
        // The hour tier answers when each window is whole hours on the hour grid.
        let tier =
            if !per_minute && range_ms == step_ms && step_ms % HOUR_MS == 0 && first % HOUR_MS == 0
            {
                Tier::Hour
            } else {
                Tier::Minute
            };
        let mut per_series: HashMap<u64, Vec<Bucket>> = HashMap::new();
        for s in series {
            let mut v = Vec::new();
            for (a, b) in &batch_ranges {
                v.extend(view.buckets(tier, s.series_id, (*a, *b), need));
            }
            per_series.insert(s.series_id, v);
        }
        drop(view);
        fetched.warnings.extend(self.batch_warning().await);

        if !speed_ranges.is_empty() {
            // ClickHouse merges whole windows itself when they do not overlap; otherwise it
            // returns minutes and the windows are formed here.
            let (grid_start, grid_step) = if range_ms == step_ms && !per_minute {
                (first, step_ms)
            } else {
                (0, MINUTE_MS)
            };
            let mut by_metric: HashMap<&str, Vec<u64>> = HashMap::new();
            for s in series {
                by_metric.entry(&s.metric).or_default().push(s.series_id);
            }
            for (metric, ids) in by_metric {
                match self
                    .speed
                    .buckets(metric, &ids, &speed_ranges, (grid_start, grid_step), need)
                    .await
                {
                    Ok(buckets) => {
                        for (id, b) in buckets {
                            per_series.entry(id).or_default().extend(b);
                        }
                    }
                    Err(e) => {
                        fetched.warnings.push(format!(
                            "speed layer unavailable, showing batch data only: {e}"
                        ));
                        break;
                    }
                }
            }
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

fn ceil_to(v: i64, unit: i64) -> i64 {
    v.div_euclid(unit) * unit + if v.rem_euclid(unit) == 0 { 0 } else { unit }
}

/// Time ranges `[from, to)` in Unix ms.
pub type Ranges = Vec<(i64, i64)>;

/// Splits `[lo, hi)` into the ranges of covered hours (batch) and the rest (speed).
pub fn split(covered: &std::collections::BTreeMap<i64, i64>, lo: i64, hi: i64) -> (Ranges, Ranges) {
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
    use std::collections::BTreeMap;
    const H: i64 = HOUR_MS;

    #[test]
    fn covered_hours_go_to_batch_and_holes_to_speed() {
        // Hours 1, 2 and 4 covered; 3 is a hole; the boundary is the end of hour 4.
        let covered = BTreeMap::from([(H, 1), (2 * H, 1), (4 * H, 1)]);
        let (batch, speed) = split(&covered, H / 2, 6 * H);
        assert_eq!(batch, vec![(H, 3 * H), (4 * H, 5 * H)]);
        assert_eq!(speed, vec![(H / 2, H), (3 * H, 4 * H), (5 * H, 6 * H)]);
        let (batch, speed) = split(&BTreeMap::new(), 0, H);
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
