//! Selectors: a plain selector's value per point (its window re-aggregated), a range selector's
//! per-minute samples, a subquery's points — each at the times its `offset` and `@` say.

use super::eval::{duration_ms, unparen, Evaluator, Grid};
use super::source::Exposed;
use super::{EvalError, RangeSeries, Series, Value};
use crate::series::{Labels, Stat};
use promql_parser::parser::{Expr, MatrixSelector, SubqueryExpr, VectorSelector};

/// The default step of a subquery without one (`x[1h:]`), as Prometheus' default evaluation
/// interval: one minute, the rollups' resolution.
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// One series of a range vector.
#[derive(Debug, Clone)]
pub struct RangeInput {
    /// Its labels (with `__name__`).
    pub labels: Labels,
    /// The statistic it shows (`None` for a subquery's points).
    pub stat: Option<Stat>,
    /// (time, value), increasing in time.
    pub samples: Vec<(i64, f64)>,
}

/// A range vector at every point of a grid.
#[derive(Debug, Clone)]
pub struct RangeArg {
    /// Its series.
    pub series: Vec<RangeInput>,
    /// The end of each point's window (the point moved by `offset` / `@`).
    pub ends: Vec<i64>,
    /// The range, ms: a point's window is `(end − range, end]`.
    pub range_ms: i64,
}

impl RangeArg {
    /// The samples of `s` in point `i`'s window.
    pub fn window<'s>(&self, s: &'s RangeInput, i: usize) -> &'s [(i64, f64)] {
        let end = self.ends[i];
        let lo = s.samples.partition_point(|x| x.0 <= end - self.range_ms);
        let hi = s.samples.partition_point(|x| x.0 <= end);
        &s.samples[lo..hi.max(lo)]
    }

    /// The range vector at the single point of an instant query.
    pub fn into_matrix(self) -> Vec<RangeSeries> {
        let mut out: Vec<RangeSeries> = (0..self.series.len())
            .map(|k| RangeSeries {
                labels: self.series[k].labels.clone(),
                samples: self.window(&self.series[k], 0).to_vec(),
            })
            .filter(|s| !s.samples.is_empty())
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

/// The distinct times of `times`, sorted, and each time's index among them.
fn distinct(times: &[i64]) -> (Vec<i64>, Vec<usize>) {
    let mut uniq = times.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let at = times
        .iter()
        .map(|t| uniq.partition_point(|u| u < t))
        .collect();
    (uniq, at)
}

/// The multiples of `step` that windows `(e − range, e]` of `ends` (sorted) hold, increasing.
fn subquery_times(ends: &[i64], range: i64, step: i64) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    for &e in ends {
        let mut t = ((e - range).div_euclid(step) + 1) * step;
        if let Some(&last) = out.last() {
            t = t.max(last + step);
        }
        while t <= e {
            out.push(t);
            t += step;
        }
    }
    out
}

impl Evaluator<'_> {
    /// The exposed series `vs` picks with a bucket in some window `(t − width, t]` of `reads`
    /// (sorted), counted against the limits.
    async fn selection(
        &self,
        vs: &VectorSelector,
        reads: &[i64],
        width: i64,
    ) -> Result<Vec<Exposed>, EvalError> {
        let (Some(&first), Some(&last)) = (reads.first(), reads.last()) else {
            return Ok(Vec::new());
        };
        self.check_span(first - width, last)?;
        let found = self.source.select(vs, first - width, last).await;
        self.note(found.warnings, found.provenance);
        self.count_series(found.value.len())?;
        Ok(found.value)
    }

    /// A plain selector: at each point, its series' window re-aggregated (their newest
    /// bucket's time in seconds when `timestamps`, for `timestamp()`).
    pub(super) async fn plain(
        &self,
        vs: &VectorSelector,
        grid: &Grid,
        timestamps: bool,
    ) -> Result<Value, EvalError> {
        let shifted = self.shifted(grid, vs.at.as_ref(), vs.offset.as_ref())?;
        let (reads, at) = distinct(&shifted);
        // A sample series answers with its newest sample of the look-back, which may lie
        // before the window: pick the series that have one.
        let reach = grid.width_ms.max(super::engine_source::LOOKBACK_MS);
        let series = self.selection(vs, &reads, reach).await?;
        if series.is_empty() {
            return Ok(Value::Vector(Vec::new()));
        }
        self.count_samples(series.len().saturating_mul(reads.len()))?;
        let found = self.source.windows(&series, &reads, grid.width_ms).await;
        self.note(found.warnings, found.provenance);
        let out = series
            .into_iter()
            .zip(found.value)
            .map(|(e, w)| Series {
                labels: e.labels,
                values: at
                    .iter()
                    .map(|&i| w[i].map(|(t, v)| if timestamps { t as f64 / 1000.0 } else { v }))
                    .collect(),
            })
            .filter(|s| s.values.iter().any(Option::is_some))
            .collect();
        Ok(Value::Vector(out))
    }

    /// A range selector's series and each point's window end, before any data is read.
    pub(super) async fn matrix_selection(
        &self,
        m: &MatrixSelector,
        grid: &Grid,
    ) -> Result<(Vec<Exposed>, Vec<i64>, i64), EvalError> {
        let range = duration_ms(&m.range)?;
        if range <= 0 {
            return Err(EvalError::bad("a range selector's range must be positive"));
        }
        let ends = self.shifted(grid, m.vs.at.as_ref(), m.vs.offset.as_ref())?;
        let (reads, _) = distinct(&ends);
        let series = self.selection(&m.vs, &reads, range).await?;
        Ok((series, ends, range))
    }

    /// The per-minute samples of a range selector's series.
    pub(super) async fn matrix_samples(
        &self,
        series: Vec<Exposed>,
        ends: Vec<i64>,
        range_ms: i64,
    ) -> Result<RangeArg, EvalError> {
        let (from, to) = match (ends.iter().min(), ends.iter().max()) {
            (Some(a), Some(b)) => (a - range_ms, *b),
            _ => (0, 0),
        };
        let found = if series.is_empty() {
            super::Found::plain(Vec::new())
        } else {
            self.source.samples(&series, from, to).await
        };
        self.note(found.warnings, found.provenance);
        self.count_samples(found.value.iter().map(Vec::len).sum())?;
        Ok(RangeArg {
            series: series
                .into_iter()
                .zip(found.value)
                .map(|(e, samples)| RangeInput {
                    labels: e.labels,
                    stat: e.stat,
                    samples,
                })
                .collect(),
            ends,
            range_ms,
        })
    }

    /// A range vector argument: a range selector's minutes or a subquery's points.
    pub(super) async fn range_arg(&self, expr: &Expr, grid: &Grid) -> Result<RangeArg, EvalError> {
        match unparen(expr) {
            Expr::MatrixSelector(m) => {
                let (series, ends, range) = self.matrix_selection(m, grid).await?;
                self.matrix_samples(series, ends, range).await
            }
            Expr::Subquery(sq) => self.subquery(sq, grid).await,
            _ => Err(EvalError::bad(
                "expected a range vector: a range selector (name[5m]) or a subquery (expr[1h:1m])",
            )),
        }
    }

    /// A subquery `expr[range:step]`: `expr` evaluated at the multiples of `step` that each
    /// point's window `(end − range, end]` holds.
    async fn subquery(&self, sq: &SubqueryExpr, grid: &Grid) -> Result<RangeArg, EvalError> {
        let range = duration_ms(&sq.range)?;
        let step = match &sq.step {
            Some(s) => duration_ms(s)?,
            None => DEFAULT_SUBQUERY_STEP_MS,
        };
        if range <= 0 || step <= 0 {
            return Err(EvalError::bad(
                "a subquery's range and step must be positive",
            ));
        }
        let ends = self.shifted(grid, sq.at.as_ref(), sq.offset.as_ref())?;
        let (reads, _) = distinct(&ends);
        let (Some(&first), Some(&last)) = (reads.first(), reads.last()) else {
            return Ok(RangeArg {
                series: Vec::new(),
                ends,
                range_ms: range,
            });
        };
        // Bound the inner points before making them.
        let most = (last - first + range) / step + 1;
        if most as u128 > self.max_samples() as u128 {
            return Err(EvalError::exec(format!(
                "the subquery [{}:{}] would be evaluated at {most} points, more than \
                 serving.max_samples; raise its step",
                promql_parser::util::duration::display_duration(&sq.range),
                promql_parser::util::duration::display_duration(&std::time::Duration::from_millis(
                    step as u64
                ))
            )));
        }
        let inner = Grid::new(subquery_times(&reads, range, step), step);
        let points = inner.times.clone();
        let value = if inner.is_empty() {
            Value::Vector(Vec::new())
        } else {
            self.eval_at(&sq.expr, &inner).await?
        };
        let Value::Vector(vs) = value else {
            return Err(EvalError::bad(
                "a subquery's expression must be an instant vector",
            ));
        };
        let series: Vec<RangeInput> = vs
            .into_iter()
            .map(|s| RangeInput {
                labels: s.labels,
                stat: None,
                samples: points
                    .iter()
                    .zip(s.values)
                    .filter_map(|(t, v)| v.map(|v| (*t, v)))
                    .collect(),
            })
            .collect();
        self.count_samples(series.iter().map(|s| s.samples.len()).sum())?;
        Ok(RangeArg {
            series,
            ends,
            range_ms: range,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subquery_points_are_the_step_multiples_inside_each_window() {
        // (10, 30] with step 5: 15, 20, 25, 30.
        assert_eq!(subquery_times(&[30], 20, 5), vec![15, 20, 25, 30]);
        // Overlapping windows share their points; each point once.
        assert_eq!(subquery_times(&[30, 35], 20, 5), vec![15, 20, 25, 30, 35]);
        // Windows far apart: only what each holds.
        assert_eq!(subquery_times(&[30, 100], 10, 5), vec![25, 30, 95, 100]);
        // An end between multiples.
        assert_eq!(subquery_times(&[33], 10, 5), vec![25, 30]);
        // Negative times (before 1970) align the same way.
        assert_eq!(subquery_times(&[-10], 10, 5), vec![-15, -10]);
    }

    #[test]
    fn distinct_times_map_back() {
        let (u, at) = distinct(&[5, 5, 7, 3]);
        assert_eq!(u, vec![3, 5, 7]);
        assert_eq!(at, vec![1, 1, 2, 0]);
    }
}
