//! Selectors: from a name and label matchers to exposed series and their values — per window
//! for a plain selector, per minute for a range selector inside a function.

use std::collections::BTreeSet;
use std::sync::Arc;

use promql_parser::label::Matcher;
use promql_parser::parser::VectorSelector;

use super::{EvalError, Evaluator, Series, Value};
use crate::series::{exposed_name, quantile_label, readings, Labels, SeriesInfo, Stat};
use crate::window::{aggregate, windows, Agg, Need};

/// One exposed series' labels, its statistic, and (minute end, value) in time order.
pub type MinuteSeries = (Labels, Stat, Vec<(i64, f64)>);

/// Per-minute samples of the series a range selector chose.
pub struct Minutes {
    /// Each exposed series.
    pub series: Vec<MinuteSeries>,
    /// The range of the selector, ms.
    pub range_ms: i64,
}

/// One exposed series of a stored series: labels, statistic, quantile index.
struct Exposed {
    labels: Labels,
    stat: Stat,
    quantile: usize,
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
    }
}

fn matches_all(matchers: &[&Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| {
        let v = labels.get(&m.name).map_or("", String::as_str);
        m.is_match(v)
    })
}

impl Evaluator<'_> {
    /// The (stored series, exposed series) a selector names, over the query's span.
    async fn resolve(
        &mut self,
        vs: &VectorSelector,
        range_ms: i64,
    ) -> Result<Vec<(Arc<SeriesInfo>, Vec<Exposed>)>, EvalError> {
        if !vs.matchers.or_matchers.is_empty() {
            return Err(EvalError::BadData(
                "`or` between label matchers is not supported".into(),
            ));
        }
        let from = self.steps[0] - range_ms - 60_000;
        let to = *self.steps.last().expect("at least one point") + 1;
        let name_matchers: Vec<&Matcher> = vs
            .matchers
            .matchers
            .iter()
            .filter(|m| m.name == "__name__")
            .collect();
        let label_matchers: Vec<&Matcher> = vs
            .matchers
            .matchers
            .iter()
            .filter(|m| m.name != "__name__")
            .collect();
        // Which (exposed base, statistic) pairs the name selects.
        let wanted: BTreeSet<(String, Stat)> = match &vs.name {
            Some(name) => readings(name).into_iter().collect(),
            None => {
                let (names, warnings) = self.engine.metric_names(&self.view, from, to).await;
                self.warnings.extend(warnings);
                let mut out = BTreeSet::new();
                for m in names {
                    for stat in Stat::ALL {
                        let n = exposed_name(&m, stat);
                        if name_matchers.iter().all(|nm| nm.is_match(&n)) {
                            out.insert((crate::series::exposed_base(&m), stat));
                        }
                    }
                }
                out
            }
        };
        let bases: BTreeSet<&str> = wanted.iter().map(|(b, _)| b.as_str()).collect();
        let (series, warnings) = self
            .engine
            .series(&self.view, |b| bases.contains(b), from, to)
            .await;
        self.warnings.extend(warnings);
        let mut out = Vec::new();
        for s in series {
            let base = crate::series::exposed_base(&s.metric);
            let mut exposed = Vec::new();
            for (b, stat) in &wanted {
                if *b != base {
                    continue;
                }
                let name = exposed_name(&s.metric, *stat);
                if !name_matchers.iter().all(|nm| nm.is_match(&name)) {
                    continue;
                }
                let quantiles = if *stat == Stat::Quantile { 0..4 } else { 0..1 };
                for q in quantiles {
                    let mut labels = s.labels();
                    labels.insert("__name__".into(), name.clone());
                    if *stat == Stat::Quantile {
                        labels.insert("quantile".into(), quantile_label(q));
                    }
                    if matches_all(&label_matchers, &labels) {
                        exposed.push(Exposed {
                            labels,
                            stat: *stat,
                            quantile: q,
                        });
                    }
                }
            }
            if !exposed.is_empty() {
                out.push((s, exposed));
            }
        }
        let n: usize = out.iter().map(|(_, e)| e.len()).sum();
        self.count_series(n)?;
        Ok(out)
    }

    /// The label sets of the exposed series a selector names, with data since `from_ms`
    /// (for /api/v1/series, /labels and label values).
    pub async fn series_labels(
        &mut self,
        vs: &VectorSelector,
        from_ms: i64,
    ) -> Result<Vec<Labels>, EvalError> {
        let range = (self.steps[0] - from_ms - 60_000).max(0);
        let chosen = self.resolve(vs, range).await?;
        Ok(chosen
            .into_iter()
            .flat_map(|(_, e)| e.into_iter().map(|x| x.labels))
            .collect())
    }

    /// A plain selector: each point aggregates the window `(t − step, t]`.
    pub(super) async fn select(
        &mut self,
        vs: &VectorSelector,
        _hint: Option<()>,
    ) -> Result<Value, EvalError> {
        let step = self.step_ms;
        let chosen = self.resolve(vs, step).await?;
        let stored: Vec<Arc<SeriesInfo>> = chosen.iter().map(|(s, _)| s.clone()).collect();
        let need = need_of(&chosen);
        let fetched = self
            .engine
            .fetch(&self.view, &stored, &self.steps, (step, step), false, need)
            .await;
        self.warnings.extend(fetched.warnings);
        self.provenance.extend(fetched.provenance);
        let mut out = Vec::new();
        for ((_, exposed), (_, buckets)) in chosen.into_iter().zip(fetched.series) {
            let aggs: Vec<Option<Agg>> = windows(&buckets, &self.steps, step)
                .iter()
                .map(|w| aggregate(w, need))
                .collect();
            for e in exposed {
                let values = aggs
                    .iter()
                    .map(|a| a.as_ref().map(|a| stat_value(a, e.stat, e.quantile)))
                    .collect();
                out.push(Series {
                    labels: e.labels,
                    values,
                });
            }
        }
        Ok(Value::Vector(out))
    }

    /// A range selector: per-minute samples of each chosen series.
    pub(super) async fn select_minutes(
        &mut self,
        vs: &VectorSelector,
        range_ms: i64,
    ) -> Result<Minutes, EvalError> {
        let chosen = self.resolve(vs, range_ms).await?;
        let stored: Vec<Arc<SeriesInfo>> = chosen.iter().map(|(s, _)| s.clone()).collect();
        let need = need_of(&chosen);
        let fetched = self
            .engine
            .fetch(
                &self.view,
                &stored,
                &self.steps,
                (self.step_ms, range_ms),
                true,
                need,
            )
            .await;
        self.warnings.extend(fetched.warnings);
        self.provenance.extend(fetched.provenance);
        let mut series = Vec::new();
        for ((_, exposed), (_, buckets)) in chosen.into_iter().zip(fetched.series) {
            let aggs: Vec<(i64, Agg)> = buckets
                .iter()
                .filter_map(|b| aggregate(&[b], need).map(|a| (b.end_ms, a)))
                .collect();
            for e in exposed {
                let samples = aggs
                    .iter()
                    .map(|(t, a)| (*t, stat_value(a, e.stat, e.quantile)))
                    .collect();
                series.push((e.labels, e.stat, samples));
            }
        }
        Ok(Minutes { series, range_ms })
    }
}

/// Quantiles are fetched only when one of the chosen exposed series shows one.
fn need_of(chosen: &[(Arc<SeriesInfo>, Vec<Exposed>)]) -> Need {
    if chosen
        .iter()
        .any(|(_, e)| e.iter().any(|x| x.stat == Stat::Quantile))
    {
        Need::Quantiles
    } else {
        Need::Totals
    }
}
