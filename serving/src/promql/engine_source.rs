//! The server's [`SeriesSource`]: exposed series of the merged views, through [`Engine`] and
//! one refresh's [`View`] of the batch layer.
//!
//! A stored series (metric, source, tags) is exposed as `m_count`, `m_sum`, `m_min`, `m_max`,
//! `m_avg` and `m{quantile=…}`; a selector's name picks the readings (`crate::series`), its
//! label matchers the rest. Windows re-aggregate the rollup buckets ([`crate::window`]), so a
//! wide window reads hour rows where the hour tier fits it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use promql_parser::label::Matcher;
use promql_parser::parser::VectorSelector;

use super::source::{Exposed, Found, Point, SeriesSource};
use crate::merge::Engine;
use crate::series::{
    exposed_base, exposed_name, quantile_label, readings, Labels, SeriesInfo, Stat,
};
use crate::source::batch::View;
use crate::window::{aggregate, windows, Agg, Need};

const MINUTE_MS: i64 = 60_000;
/// How far back a plain selector of a sample series looks for its newest sample, whatever the
/// window: Prometheus' default look-back.
pub const LOOKBACK_MS: i64 = 5 * MINUTE_MS;

/// The merged views as a [`SeriesSource`].
pub struct EngineSource<'a> {
    engine: &'a Engine,
    view: Arc<View>,
}

impl<'a> EngineSource<'a> {
    /// The engine's data as of its current batch views.
    pub fn new(engine: &'a Engine) -> Self {
        Self::with_view(engine, engine.view())
    }

    /// The engine's data as of `view` (every part of one evaluation reads one picture).
    pub fn with_view(engine: &'a Engine, view: Arc<View>) -> Self {
        Self { engine, view }
    }
}

/// The value of a statistic of a window.
fn stat_value(a: &Agg, stat: Stat, quantile: usize) -> f64 {
    match stat {
        Stat::Count => a.count as f64,
        Stat::Sum => a.sum,
        Stat::Min => a.min,
        Stat::Max => a.max,
        Stat::Avg => a.avg(),
        Stat::Quantile => a.quantiles[quantile],
        Stat::Last => a.last.map_or(f64::NAN, |l| l.1),
    }
}

fn matches_all(matchers: &[&Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| {
        let v = labels.get(&m.name).map_or("", String::as_str);
        m.is_match(v)
    })
}

/// Minutes whose end lies in `(from, to]`, as the range of their starts `[lo, hi)`.
fn minute_starts(from_ms: i64, to_ms: i64) -> (i64, i64) {
    let ceil = |v: i64| {
        v.div_euclid(MINUTE_MS) * MINUTE_MS
            + if v.rem_euclid(MINUTE_MS) == 0 {
                0
            } else {
                MINUTE_MS
            }
    };
    (ceil(from_ms - MINUTE_MS + 1), ceil(to_ms - MINUTE_MS + 1))
}

/// Quantiles are fetched only when one of the series shows one.
fn need_of(series: &[Exposed]) -> Need {
    if series.iter().any(|x| x.stat == Some(Stat::Quantile)) {
        Need::Quantiles
    } else {
        Need::Totals
    }
}

/// The distinct stored series of `series`, in order of first appearance, and each exposed
/// series' index among them.
fn stored_of(series: &[Exposed]) -> (Vec<Arc<SeriesInfo>>, Vec<usize>) {
    let mut index: BTreeMap<u64, usize> = BTreeMap::new();
    let mut stored = Vec::new();
    let at = series
        .iter()
        .map(|e| {
            *index.entry(e.stored.series_id).or_insert_with(|| {
                stored.push(e.stored.clone());
                stored.len() - 1
            })
        })
        .collect();
    (stored, at)
}

impl EngineSource<'_> {
    /// The exposed series one group of matchers (all must hold) picks in `[lo, hi)`.
    async fn resolve(
        &self,
        name: Option<&str>,
        matchers: &[Matcher],
        (lo, hi): (i64, i64),
        found: &mut Found<Vec<Exposed>>,
    ) {
        let name_matchers: Vec<&Matcher> =
            matchers.iter().filter(|m| m.name == "__name__").collect();
        let label_matchers: Vec<&Matcher> =
            matchers.iter().filter(|m| m.name != "__name__").collect();
        // Which (exposed base, statistic) pairs the name selects.
        let wanted: BTreeSet<(String, Stat)> = match name {
            Some(name) => readings(name).into_iter().collect(),
            None => {
                let (names, warnings) = self.engine.metric_names(&self.view, lo, hi).await;
                found.warnings.extend(warnings);
                let mut out = BTreeSet::new();
                for m in names {
                    for stat in Stat::ALL {
                        let n = exposed_name(&m, stat);
                        if name_matchers.iter().all(|nm| nm.is_match(&n)) {
                            out.insert((exposed_base(&m), stat));
                        }
                    }
                }
                out
            }
        };
        if wanted.is_empty() {
            return;
        }
        let bases: BTreeSet<&str> = wanted.iter().map(|(b, _)| b.as_str()).collect();
        let (series, warnings) = self
            .engine
            .series(&self.view, |b| bases.contains(b), lo, hi)
            .await;
        found.warnings.extend(warnings);
        for s in series {
            let base = exposed_base(&s.metric);
            let sample = s.is_sample();
            for (b, stat) in &wanted {
                if *b != base {
                    continue;
                }
                // A sample series shows its newest sample under its own name.
                let stat = &if sample && *stat == Stat::Quantile {
                    Stat::Last
                } else {
                    *stat
                };
                let exposed = exposed_name(&s.metric, *stat);
                if !name_matchers.iter().all(|nm| nm.is_match(&exposed)) {
                    continue;
                }
                let quantiles = if *stat == Stat::Quantile { 0..4 } else { 0..1 };
                for q in quantiles {
                    let mut labels = s.labels();
                    labels.insert("__name__".into(), exposed.clone());
                    if *stat == Stat::Quantile {
                        labels.insert("quantile".into(), quantile_label(q));
                    }
                    if matches_all(&label_matchers, &labels) {
                        found.value.push(Exposed {
                            labels,
                            stat: Some(*stat),
                            quantile: q,
                            stored: s.clone(),
                        });
                    }
                }
            }
        }
    }
}

/// Indices of the sample series' newest samples and of the rest.
fn split_last(series: &[Exposed]) -> (Vec<usize>, Vec<usize>) {
    (0..series.len()).partition(|&i| series[i].stat == Some(Stat::Last))
}

/// `parts` (each a subset's answers, by index into the whole) put back in order.
fn reassemble<T>(n: usize, parts: Vec<(Vec<usize>, Found<Vec<T>>)>) -> Found<Vec<T>> {
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut out = Found::plain(Vec::new());
    for (idx, found) in parts {
        for (i, v) in idx.into_iter().zip(found.value) {
            slots[i] = Some(v);
        }
        out.warnings.extend(found.warnings);
        out.provenance.extend(found.provenance);
    }
    out.value = slots
        .into_iter()
        .map(|v| v.expect("every index answered"))
        .collect();
    out.warnings.sort();
    out.warnings.dedup();
    out
}

impl EngineSource<'_> {
    async fn event_windows(
        &self,
        series: &[Exposed],
        times: &[i64],
        width_ms: i64,
    ) -> Found<Vec<Vec<Option<Point>>>> {
        let (stored, at) = stored_of(series);
        let need = need_of(series);
        // Times that tile the axis let both layers merge whole windows themselves.
        let step = match times {
            [a, b, ..] => b - a,
            _ => width_ms,
        };
        let fetched = self
            .engine
            .fetch(&self.view, &stored, times, (step, width_ms), false, need)
            .await;
        let aggs: Vec<Vec<Option<(i64, Agg)>>> = fetched
            .series
            .iter()
            .map(|(_, buckets)| {
                windows(buckets, times, width_ms)
                    .iter()
                    .map(|w| {
                        let newest = w.iter().rev().find(|b| b.count > 0)?.end_ms;
                        aggregate(w, need).map(|a| (newest, a))
                    })
                    .collect()
            })
            .collect();
        let value = series
            .iter()
            .zip(at)
            .map(|(e, i)| {
                let stat = e.stat.unwrap_or(Stat::Quantile);
                aggs[i]
                    .iter()
                    .map(|a| {
                        a.as_ref()
                            .map(|(t, a)| (*t, stat_value(a, stat, e.quantile)))
                    })
                    .collect()
            })
            .collect();
        Found {
            value,
            warnings: fetched.warnings,
            provenance: fetched.provenance,
        }
    }

    async fn event_samples(
        &self,
        series: &[Exposed],
        from_ms: i64,
        to_ms: i64,
    ) -> Found<Vec<Vec<(i64, f64)>>> {
        let (stored, at) = stored_of(series);
        let need = need_of(series);
        let range = to_ms - from_ms;
        let fetched = self
            .engine
            .fetch(&self.view, &stored, &[to_ms], (range, range), true, need)
            .await;
        let aggs: Vec<Vec<(i64, Agg)>> = fetched
            .series
            .iter()
            .map(|(_, buckets)| {
                buckets
                    .iter()
                    .filter(|b| b.end_ms > from_ms && b.end_ms <= to_ms)
                    .filter_map(|b| aggregate(&[b], need).map(|a| (b.end_ms, a)))
                    .collect()
            })
            .collect();
        let value = series
            .iter()
            .zip(at)
            .map(|(e, i)| {
                let stat = e.stat.unwrap_or(Stat::Quantile);
                aggs[i]
                    .iter()
                    .map(|(t, a)| (*t, stat_value(a, stat, e.quantile)))
                    .collect()
            })
            .collect();
        Found {
            value,
            warnings: fetched.warnings,
            provenance: fetched.provenance,
        }
    }

    /// The newest samples of sample series at their own times (not their minutes' ends), in
    /// `(from_ms, to_ms]`: a sample at `t` is in the bucket that ends after it.
    async fn newest_samples(
        &self,
        series: &[Exposed],
        from_ms: i64,
        to_ms: i64,
    ) -> Found<Vec<Vec<(i64, f64)>>> {
        let (stored, at) = stored_of(series);
        let range = to_ms + MINUTE_MS - from_ms;
        let fetched = self
            .engine
            .fetch(
                &self.view,
                &stored,
                &[to_ms + MINUTE_MS],
                (range, range),
                true,
                Need::Totals,
            )
            .await;
        let per_stored: Vec<Vec<(i64, f64)>> = fetched
            .series
            .iter()
            .map(|(_, buckets)| {
                let mut v: Vec<(i64, f64)> = buckets
                    .iter()
                    .filter_map(|b| b.last)
                    .filter(|(t, _)| *t > from_ms && *t <= to_ms)
                    .collect();
                v.sort_by_key(|x| x.0);
                v
            })
            .collect();
        Found {
            value: at.into_iter().map(|i| per_stored[i].clone()).collect(),
            warnings: fetched.warnings,
            provenance: fetched.provenance,
        }
    }
}

#[async_trait]
impl SeriesSource for EngineSource<'_> {
    async fn select(
        &self,
        selector: &VectorSelector,
        from_ms: i64,
        to_ms: i64,
    ) -> Found<Vec<Exposed>> {
        let span = minute_starts(from_ms, to_ms);
        let mut found = Found::plain(Vec::new());
        if span.1 <= span.0 {
            return found;
        }
        let name = selector.name.as_deref();
        let groups: Vec<&Vec<Matcher>> = if selector.matchers.or_matchers.is_empty() {
            vec![&selector.matchers.matchers]
        } else {
            selector.matchers.or_matchers.iter().collect()
        };
        for group in groups {
            self.resolve(name, group, span, &mut found).await;
        }
        // `{a="1" or b="2"}` may pick a series twice.
        found.value.sort_by(|x, y| x.labels.cmp(&y.labels));
        found.value.dedup_by(|x, y| x.labels == y.labels);
        found.warnings.sort();
        found.warnings.dedup();
        found
    }

    async fn windows(
        &self,
        series: &[Exposed],
        times: &[i64],
        width_ms: i64,
    ) -> Found<Vec<Vec<Option<Point>>>> {
        let (last, events) = split_last(series);
        let pick = |idx: &[usize]| idx.iter().map(|&i| series[i].clone()).collect::<Vec<_>>();
        let mut parts = Vec::new();
        if !events.is_empty() {
            let found = self.event_windows(&pick(&events), times, width_ms).await;
            parts.push((events, found));
        }
        if let (false, Some(&first), Some(&end)) = (last.is_empty(), times.first(), times.last()) {
            // A sample series' value at t is its newest sample in (t − look-back, t], as in
            // Prometheus, whatever the window.
            let found = self
                .newest_samples(&pick(&last), first - LOOKBACK_MS, end)
                .await;
            let value = found
                .value
                .iter()
                .map(|samples| {
                    times
                        .iter()
                        .map(|t| {
                            let i = samples.partition_point(|s| s.0 <= *t);
                            let (ts, v) = *samples.get(i.checked_sub(1)?)?;
                            (ts > t - LOOKBACK_MS).then_some((ts, v))
                        })
                        .collect()
                })
                .collect();
            parts.push((
                last,
                Found {
                    value,
                    warnings: found.warnings,
                    provenance: found.provenance,
                },
            ));
        }
        reassemble(series.len(), parts)
    }

    async fn samples(
        &self,
        series: &[Exposed],
        from_ms: i64,
        to_ms: i64,
    ) -> Found<Vec<Vec<(i64, f64)>>> {
        let (last, events) = split_last(series);
        let pick = |idx: &[usize]| idx.iter().map(|&i| series[i].clone()).collect::<Vec<_>>();
        let mut parts = Vec::new();
        if !events.is_empty() {
            parts.push((
                events.clone(),
                self.event_samples(&pick(&events), from_ms, to_ms).await,
            ));
        }
        if !last.is_empty() {
            parts.push((
                last.clone(),
                self.newest_samples(&pick(&last), from_ms, to_ms).await,
            ));
        }
        reassemble(series.len(), parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_the_minutes_that_end_inside_them() {
        // (t − 1 min, t] at t = 10:00:30 holds the minute ending 10:00.
        let t = 36_000_000 + 30_000;
        assert_eq!(
            minute_starts(t - 60_000, t),
            (36_000_000 - 60_000, 36_000_000)
        );
        // On the minute: (09:59, 10:00] is the minute [09:59, 10:00).
        let t = 36_000_000;
        assert_eq!(minute_starts(t - 60_000, t), (t - 60_000, t));
        // Five minutes back from 10:00:30: ends 09:56 … 10:00.
        let t = 36_000_000 + 30_000;
        assert_eq!(
            minute_starts(t - 300_000, t),
            (36_000_000 - 300_000, 36_000_000)
        );
    }
}
