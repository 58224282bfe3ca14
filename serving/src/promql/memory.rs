//! A [`SeriesSource`] over series held in memory: the language's tests (the `testdata/*.test`
//! scripts) run the evaluator on it without any server.
//!
//! Each series is a label set, the statistic it shows and its samples. A window shows what the
//! server's rollups would: sums of `_count`/`_sum` samples, min of `_min`, max of `_max`, and
//! the newest sample of anything else.

use std::sync::Arc;

use async_trait::async_trait;
use promql_parser::label::Matcher;
use promql_parser::parser::VectorSelector;

use super::source::{Exposed, Found, Point, SeriesSource};
use crate::series::{Labels, SeriesInfo, Stat};

struct Held {
    exposed: Exposed,
    samples: Vec<(i64, f64)>,
}

/// Series held in memory.
#[derive(Default)]
pub struct MemorySource {
    held: Vec<Held>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a series: its labels (with `__name__`), the statistic it shows and its samples
    /// (time in Unix ms, value; sorted here).
    pub fn add(&mut self, labels: Labels, stat: Option<Stat>, mut samples: Vec<(i64, f64)>) {
        samples.sort_by_key(|s| s.0);
        let id = self.held.len() as u64;
        let stored = Arc::new(SeriesInfo {
            metric: labels.get("__name__").cloned().unwrap_or_default(),
            series_id: id,
            source: String::new(),
            tags: Default::default(),
        });
        self.held.push(Held {
            exposed: Exposed {
                labels,
                stat,
                quantile: 0,
                stored,
            },
            samples,
        });
    }

    /// Removes every series.
    pub fn clear(&mut self) {
        self.held.clear();
    }

    fn held(&self, e: &Exposed) -> &Held {
        &self.held[e.stored.series_id as usize]
    }
}

fn in_window(samples: &[(i64, f64)], from: i64, to: i64) -> &[(i64, f64)] {
    let lo = samples.partition_point(|s| s.0 <= from);
    let hi = samples.partition_point(|s| s.0 <= to);
    &samples[lo..hi.max(lo)]
}

fn matches(group: &[Matcher], name: Option<&str>, labels: &Labels) -> bool {
    let get = |k: &str| labels.get(k).map_or("", String::as_str);
    name.is_none_or(|n| get("__name__") == n) && group.iter().all(|m| m.is_match(get(&m.name)))
}

#[async_trait]
impl SeriesSource for MemorySource {
    async fn select(
        &self,
        selector: &VectorSelector,
        from_ms: i64,
        to_ms: i64,
    ) -> Found<Vec<Exposed>> {
        let name = selector.name.as_deref();
        let m = &selector.matchers;
        let chosen = self
            .held
            .iter()
            .filter(|h| {
                if m.or_matchers.is_empty() {
                    matches(&m.matchers, name, &h.exposed.labels)
                } else {
                    m.or_matchers
                        .iter()
                        .any(|g| matches(g, name, &h.exposed.labels))
                }
            })
            .filter(|h| !in_window(&h.samples, from_ms, to_ms).is_empty())
            .map(|h| h.exposed.clone())
            .collect();
        Found::plain(chosen)
    }

    async fn windows(
        &self,
        series: &[Exposed],
        times: &[i64],
        width_ms: i64,
    ) -> Found<Vec<Vec<Option<Point>>>> {
        let value = series
            .iter()
            .map(|e| {
                let h = self.held(e);
                times
                    .iter()
                    .map(|t| {
                        let w = in_window(&h.samples, t - width_ms, *t);
                        let (newest, last) = *w.last()?;
                        let v = match e.stat {
                            Some(Stat::Count | Stat::Sum) => w.iter().map(|s| s.1).sum(),
                            Some(Stat::Min) => w.iter().map(|s| s.1).fold(f64::INFINITY, f64::min),
                            Some(Stat::Max) => {
                                w.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max)
                            }
                            _ => last,
                        };
                        Some((newest, v))
                    })
                    .collect()
            })
            .collect();
        Found::plain(value)
    }

    async fn samples(
        &self,
        series: &[Exposed],
        from_ms: i64,
        to_ms: i64,
    ) -> Found<Vec<Vec<(i64, f64)>>> {
        let value = series
            .iter()
            .map(|e| in_window(&self.held(e).samples, from_ms, to_ms).to_vec())
            .collect();
        Found::plain(value)
    }
}
