//! Calls of functions of a range vector: each series' window at each point goes through the
//! arithmetic of [`super::range_fns`]. Two things are Strata's own:
//! - `rate`, `increase`, `irate` of a range selector of a `_count` or `_sum` series read its
//!   per-minute totals as totals (see the module `promql`);
//! - where a function only sums, or takes the max or min of, a statistic that is itself a sum,
//!   max or min (`sum_over_time(x_count[1d])`, `max_over_time(x_max[1w])`, `rate(x_sum[1h])`),
//!   the window is asked of the source as one window, so the batch views answer a window of
//!   whole hours from their hour rows instead of 60 minute rows per hour.

use super::eval::{Evaluator, Grid};
use super::labels::{all_distinct, drop_name, NAME};
use super::range_fns::{self as f, Window};
use super::select::RangeArg;
use super::{EvalError, Series, Value};
use crate::series::Stat;
use promql_parser::parser::Expr;

/// Every function whose (one) range-vector argument this module evaluates.
const RANGE_FUNCTIONS: [&str; 28] = [
    "rate",
    "increase",
    "irate",
    "delta",
    "idelta",
    "deriv",
    "predict_linear",
    "changes",
    "resets",
    "avg_over_time",
    "sum_over_time",
    "min_over_time",
    "max_over_time",
    "count_over_time",
    "last_over_time",
    "first_over_time",
    "present_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "mad_over_time",
    "absent_over_time",
    "holt_winters",
    "double_exponential_smoothing",
    "ts_of_max_over_time",
    "ts_of_min_over_time",
    "ts_of_first_over_time",
    "ts_of_last_over_time",
];

/// Whether `name` is a function of a range vector.
pub fn is_range_function(name: &str) -> bool {
    RANGE_FUNCTIONS.contains(&name)
}

/// Whether a window of statistic `stat` answers `name` whole (see the module doc).
fn window_answers(name: &str, stat: Option<Stat>) -> bool {
    match name {
        "rate" | "increase" | "sum_over_time" => matches!(stat, Some(Stat::Count | Stat::Sum)),
        "max_over_time" => stat == Some(Stat::Max),
        "min_over_time" => stat == Some(Stat::Min),
        _ => false,
    }
}

/// Whether `rate`/`increase`/`irate` read per-minute totals of this statistic.
fn totals(stat: Option<Stat>) -> bool {
    matches!(stat, Some(Stat::Count | Stat::Sum))
}

/// The scalar parameters of a call, and where its range vector is.
struct Params {
    range_at: usize,
    scalars: Vec<Vec<f64>>,
}

impl Evaluator<'_> {
    async fn params(&self, name: &str, args: &[&Expr], grid: &Grid) -> Result<Params, EvalError> {
        let range_at = usize::from(name == "quantile_over_time");
        let mut scalars = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if i != range_at {
                scalars.push(self.scalar_arg(a, grid, &format!("{name}()")).await?);
            }
        }
        let want = match name {
            "quantile_over_time" | "predict_linear" => 1,
            "holt_winters" | "double_exponential_smoothing" => 2,
            _ => 0,
        };
        if scalars.len() != want || args.len() <= range_at {
            return Err(EvalError::bad(format!(
                "{name}(): wrong number of arguments"
            )));
        }
        Ok(Params { range_at, scalars })
    }

    /// Evaluates a call of a function of a range vector.
    pub(super) async fn range_call(
        &self,
        name: &str,
        args: &[&Expr],
        grid: &Grid,
    ) -> Result<Value, EvalError> {
        let p = self.params(name, args, grid).await?;
        let arg = args[p.range_at];
        if let Expr::MatrixSelector(m) = arg {
            if [
                "rate",
                "increase",
                "sum_over_time",
                "max_over_time",
                "min_over_time",
            ]
            .contains(&name)
            {
                let (series, ends, range) = self.matrix_selection(m, grid).await?;
                if !series.is_empty() && series.iter().all(|s| window_answers(name, s.stat)) {
                    return self.whole_windows(name, series, ends, range, grid).await;
                }
                let arg = self.matrix_samples(series, ends, range).await?;
                return self.apply(name, arg, &p, grid, None);
            }
        }
        // absent_over_time's series: the labels its selector's equality matchers name.
        let absent = (name == "absent_over_time").then(|| match arg {
            Expr::MatrixSelector(m) => super::functions::absent_labels(&m.vs.matchers.matchers),
            _ => Default::default(),
        });
        let range = self.range_arg(arg, grid).await?;
        self.apply(name, range, &p, grid, absent)
    }

    /// `name` where each window is one read: its sum (or max, or min) as the source keeps it.
    async fn whole_windows(
        &self,
        name: &str,
        series: Vec<super::Exposed>,
        ends: Vec<i64>,
        range_ms: i64,
        grid: &Grid,
    ) -> Result<Value, EvalError> {
        let mut reads = ends.clone();
        reads.sort_unstable();
        reads.dedup();
        self.count_samples(series.len().saturating_mul(reads.len()))?;
        let found = self.source.windows(&series, &reads, range_ms).await;
        self.note(found.warnings, found.provenance);
        let secs = range_ms as f64 / 1000.0;
        let out: Vec<Series> = series
            .into_iter()
            .zip(found.value)
            .map(|(e, w)| Series {
                labels: drop_name(e.labels),
                values: ends
                    .iter()
                    .map(|end| {
                        let i = reads.partition_point(|r| r < end);
                        w[i].map(|(_, v)| if name == "rate" { v / secs } else { v })
                    })
                    .collect(),
            })
            .filter(|s| s.values.iter().any(Option::is_some))
            .collect();
        debug_assert_eq!(grid.len(), ends.len());
        all_distinct(&out)?;
        Ok(Value::Vector(out))
    }

    /// Applies `name` to every series' window at every point.
    fn apply(
        &self,
        name: &str,
        arg: RangeArg,
        p: &Params,
        grid: &Grid,
        absent: Option<crate::series::Labels>,
    ) -> Result<Value, EvalError> {
        let n = grid.len();
        if let Some(labels) = absent {
            let values = (0..n)
                .map(|i| {
                    arg.series
                        .iter()
                        .all(|s| arg.window(s, i).is_empty())
                        .then_some(1.0)
                })
                .collect();
            let out = vec![Series { labels, values }];
            return Ok(Value::Vector(
                out.into_iter()
                    .filter(|s| s.values.iter().any(Option::is_some))
                    .collect(),
            ));
        }
        if matches!(name, "holt_winters" | "double_exponential_smoothing") {
            for i in 0..n {
                let (sf, tf) = (p.scalars[0][i], p.scalars[1][i]);
                if !(sf > 0.0 && sf < 1.0) {
                    return Err(EvalError::exec(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                    )));
                }
                if !(tf > 0.0 && tf < 1.0) {
                    return Err(EvalError::exec(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                    )));
                }
            }
        }
        let keep_name = matches!(name, "last_over_time" | "first_over_time");
        let mut out = Vec::with_capacity(arg.series.len());
        for s in &arg.series {
            // A subquery's points have no statistic: Prometheus' counter functions apply.
            let strata_totals = totals(s.stat);
            let values: Vec<Option<f64>> = (0..n)
                .map(|i| {
                    let samples = arg.window(s, i);
                    if samples.is_empty() {
                        return None;
                    }
                    let w = Window {
                        samples,
                        end_ms: arg.ends[i],
                        range_ms: arg.range_ms,
                        eval_ms: grid.times[i],
                    };
                    let param = |k: usize| p.scalars[k][i];
                    value(name, &w, param, strata_totals)
                })
                .collect();
            if values.iter().any(Option::is_some) {
                let labels = if keep_name {
                    s.labels.clone()
                } else {
                    drop_name(s.labels.clone())
                };
                out.push(Series { labels, values });
            }
        }
        all_distinct(&out)?;
        debug_assert!(out
            .iter()
            .all(|s| keep_name || !s.labels.contains_key(NAME)));
        Ok(Value::Vector(out))
    }
}

/// One function of one window (`param(k)`: the k-th scalar parameter at this point).
fn value(name: &str, w: &Window, param: impl Fn(usize) -> f64, strata_totals: bool) -> Option<f64> {
    let secs = w.range_ms as f64 / 1000.0;
    let last = w.samples[w.samples.len() - 1];
    Some(match name {
        "rate" if strata_totals => f::sum(w) / secs,
        "increase" if strata_totals => f::sum(w),
        "irate" if strata_totals => last.1 / 60.0,
        "rate" => return f::extrapolated(w, true, true),
        "increase" => return f::extrapolated(w, true, false),
        "delta" => return f::extrapolated(w, false, false),
        "irate" => return f::instant(w, true),
        "idelta" => return f::instant(w, false),
        "deriv" => return f::deriv(w),
        "predict_linear" => return f::predict_linear(w, param(0)),
        "holt_winters" | "double_exponential_smoothing" => return f::smooth(w, param(0), param(1)),
        "changes" => f::changes(w),
        "resets" => f::resets(w),
        "avg_over_time" => f::avg(w),
        "sum_over_time" => f::sum(w),
        "min_over_time" => f::min(w),
        "max_over_time" => f::max(w),
        "count_over_time" => w.samples.len() as f64,
        "last_over_time" => last.1,
        "first_over_time" => w.samples[0].1,
        "present_over_time" => 1.0,
        "quantile_over_time" => f::quantile(param(0), w),
        "stddev_over_time" => f::stdvar(w).sqrt(),
        "stdvar_over_time" => f::stdvar(w),
        "mad_over_time" => f::mad(w),
        "ts_of_max_over_time" => f::ts_of(w, |a, b| a > b),
        "ts_of_min_over_time" => f::ts_of(w, |a, b| a < b),
        "ts_of_first_over_time" => w.samples[0].0 as f64 / 1000.0,
        "ts_of_last_over_time" => last.0 as f64 / 1000.0,
        _ => return None,
    })
}
