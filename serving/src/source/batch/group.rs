//! Grouped reads: several minute-tier hours of one metric and day read from the lake in one
//! query, instead of one query per hour block.
//!
//! A block read costs a DataFusion plan, the file's footer and page index, and row groups
//! decoded whole, whatever the rows it keeps; a cold 7-day panel wants 168 hour blocks of each
//! metric. When a query wants minute blocks that nobody holds or loads, each of their days is
//! read in spans of consecutive hours — the wanted hours and, ahead of them, the day's other
//! covered hours that are not held — and the rows are cut into hour blocks: the wanted ones go
//! to the loads waiting for them, the others into the cache for the next window. A span holds
//! at most [`SPAN_BYTES`] by the metric's series count in its day (from the hour tier's
//! block, which resolving the query's series has just read), so a read stays bounded however
//! many series a metric has: with thousands of series a span is one hour, as before.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

use super::block::{Block, Rows};
use super::{read, BatchError, BatchSource, BlockKey, View, DAY_MS, HOUR_MS};

/// Most bytes one grouped read may decode (estimated from the metric's series count, 60 rows
/// per series and hour, and [`row_bytes`]).
pub const SPAN_BYTES: usize = 8 << 20;
/// Decoded bytes of a minute row: the totals, and with quantiles the four quantiles and a
/// sketch of a few dozen buckets.
fn row_bytes(quantiles: bool) -> usize {
    if quantiles {
        400
    } else {
        64
    }
}

/// Series count assumed when the hour tier's block of the day is not held.
const UNKNOWN_SERIES: usize = 2_000;

/// The hours' rows of a [`DayRead`], by hour start, as each load takes its own out.
type HourRows = Arc<Mutex<HashMap<i64, Rows>>>;

/// One read of several minute-tier hours of a metric and day, shared by those hours' loads;
/// each load takes its hour's rows out.
#[derive(Clone)]
pub struct DayRead {
    rows: Shared<BoxFuture<'static, Result<HourRows, Arc<BatchError>>>>,
}

impl DayRead {
    /// The block of `hour`, once the read is done.
    pub async fn take(self, hour: i64) -> Result<Block, BatchError> {
        let rows = self.rows.await.map_err(BatchError::Shared)?;
        let mut rows = rows.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Block::Rows(rows.remove(&hour).unwrap_or_default()))
    }
}

/// Hours of a day to read in spans of at most `max_hours`: each span starts at the next wanted
/// hour and takes the wanted and `ahead` hours inside it; a span of one hour is left to the
/// usual one-block load. Returns (wanted hours, ahead hours) per span.
pub fn spans(wanted: &[i64], ahead: &[i64], max_hours: i64) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < wanted.len() {
        let end = wanted[i] + max_hours.max(1) * HOUR_MS;
        let day_end = wanted[i].div_euclid(DAY_MS) * DAY_MS + DAY_MS;
        let end = end.min(day_end);
        let w: Vec<i64> = wanted[i..]
            .iter()
            .take_while(|h| **h < end)
            .copied()
            .collect();
        let a: Vec<i64> = ahead
            .iter()
            .filter(|h| (wanted[i]..end).contains(*h))
            .copied()
            .collect();
        i += w.len();
        if w.len() + a.len() > 1 {
            out.push((w, a));
        }
    }
    out
}

impl BatchSource {
    /// Grouped reads for the minute-tier blocks among `wanted` that nobody holds or loads:
    /// block key → the read that brings it.
    pub(super) fn day_reads(
        &self,
        view: &View,
        wanted: &[(BlockKey, (i64, i64))],
    ) -> HashMap<BlockKey, DayRead> {
        let mut out = HashMap::new();
        let Some(ctx) = view.ctx.clone() else {
            return out;
        };
        let known = |k: &BlockKey| {
            self.cache.knows(k) || k.with_quantiles().is_some_and(|q| self.cache.knows(&q))
        };
        // (day, quantiles) → (metric, wanted hours)
        let mut days: BTreeMap<(i64, bool), (Arc<str>, Vec<i64>)> = BTreeMap::new();
        for (key, _) in wanted {
            if let BlockKey::Minute {
                metric,
                hour,
                quantiles,
                ..
            } = key
            {
                if !known(key) {
                    let day = hour.div_euclid(DAY_MS) * DAY_MS;
                    let e = days
                        .entry((day, *quantiles))
                        .or_insert_with(|| (metric.clone(), Vec::new()));
                    e.1.push(*hour);
                }
            }
        }
        for ((day, quantiles), (metric, mut hours)) in days {
            hours.sort_unstable();
            hours.dedup();
            let key_of = |hour: i64| -> Option<BlockKey> {
                let [m, _] = view.covered.get(&hour)?;
                Some(BlockKey::Minute {
                    metric: metric.clone(),
                    hour,
                    version: m.table_version,
                    quantiles,
                })
            };
            let ahead: Vec<i64> = view
                .covered
                .range(day..day + DAY_MS)
                .map(|(h, _)| *h)
                .filter(|h| hours.binary_search(h).is_err())
                .filter(|h| key_of(*h).is_some_and(|k| !known(&k)))
                .collect();
            let series = self
                .series_count(view, &metric, day)
                .unwrap_or(UNKNOWN_SERIES);
            let max_hours = (SPAN_BYTES / (series.max(1) * 60 * row_bytes(quantiles))) as i64;
            for (want, extra) in spans(&hours, &ahead, max_hours) {
                let read = self.span_read(&ctx, view, &metric, quantiles, &want, extra, &key_of);
                for h in want {
                    if let Some(k) = key_of(h) {
                        out.insert(k, read.clone());
                    }
                }
            }
        }
        out
    }

    /// Series of `metric` in `day`, from the hour tier's block if it is held.
    fn series_count(&self, view: &View, metric: &Arc<str>, day: i64) -> Option<usize> {
        [false, true].iter().find_map(|q| {
            let key = BlockKey::Hour {
                metric: metric.clone(),
                day,
                fingerprint: view.day_fingerprint(day),
                quantiles: *q,
            };
            match &*self.cache.peek(&key)? {
                Block::Rows(r) => Some(r.series_count()),
                Block::Names(_) => None,
            }
        })
    }

    /// One read of `want` and `ahead` hours; the `ahead` blocks go into the cache when it is
    /// done.
    #[allow(clippy::too_many_arguments)]
    fn span_read(
        &self,
        ctx: &Arc<datafusion::prelude::SessionContext>,
        view: &View,
        metric: &Arc<str>,
        quantiles: bool,
        want: &[i64],
        ahead: Vec<i64>,
        key_of: &dyn Fn(i64) -> Option<BlockKey>,
    ) -> DayRead {
        // The day's files that can hold the metric (whatever the hour's version).
        let files = view.files_of(&BlockKey::Minute {
            metric: metric.clone(),
            hour: want.first().copied().unwrap_or_default(),
            version: 0,
            quantiles,
        });
        let hours: Vec<i64> = want.iter().chain(&ahead).copied().collect();
        let extra: Vec<(i64, BlockKey)> = ahead
            .iter()
            .filter_map(|h| Some((*h, key_of(*h)?)))
            .collect();
        let (ctx, reads, metric, cache) = (
            ctx.clone(),
            self.reads.clone(),
            metric.clone(),
            self.cache.clone(),
        );
        let rows = async move {
            let _permit = reads.acquire_owned().await.expect("never closed");
            let mut rows = read::minute_hours(&ctx, &metric, &hours, quantiles, files)
                .await
                .map_err(Arc::new)?;
            for (h, key) in extra {
                if let Some(r) = rows.remove(&h) {
                    cache.put(key, Arc::new(Block::Rows(r)));
                }
            }
            Ok(Arc::new(Mutex::new(rows)))
        }
        .boxed()
        .shared();
        DayRead { rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_read_in_spans_of_wanted_and_ahead_hours() {
        let h = |i: i64| 10 * DAY_MS + i * HOUR_MS;
        // Wanted 2, 3, 9; ahead 4..8 and 10..23; spans of at most 6 hours.
        let ahead: Vec<i64> = (4..9).chain(10..24).map(h).collect();
        let s = spans(&[h(2), h(3), h(9)], &ahead, 6);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0], (vec![h(2), h(3)], (4..8).map(h).collect()));
        assert_eq!(s[1], (vec![h(9)], (10..15).map(h).collect()));
        // Many series: one hour per span, so each wanted hour is left to its own load.
        assert!(spans(&[h(2), h(3)], &ahead, 0).is_empty());
        // A span never crosses into the next day.
        let s = spans(&[h(22)], &[h(23), h(24), h(25)], 6);
        assert_eq!(s, vec![(vec![h(22)], vec![h(23)])]);
        // Nothing ahead and one wanted hour: nothing to group.
        assert!(spans(&[h(5)], &[], 6).is_empty());
    }
}
