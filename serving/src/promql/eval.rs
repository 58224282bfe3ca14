//! The evaluator: walks an expression on a [`Grid`] — the times it is evaluated at and the
//! width of a plain selector's window there — and keeps what the evaluation learns on the way
//! (warnings, which layer answered what) and what it has used of the [`Limits`].
//!
//! The top grid is the query's points (one for an instant query, with a one-minute window; a
//! range query's steps, each window one step wide); a subquery `expr[r:s]` evaluates `expr` on
//! a grid of its own, the multiples of `s` its windows need, each window `s` wide. Both sides
//! of a binary operator are evaluated at once, so their reads overlap.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use promql_parser::parser::{AtModifier, Expr, Offset};
use strata_shared::config::ServingConfig;

use super::source::SeriesSource;
use super::{EvalError, Value};
use crate::merge::Provenance;

/// How far one query may go.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most series its selectors may pick, all together (`serving.max_series`).
    pub max_series: usize,
    /// Most samples it may hold (`serving.max_samples`).
    pub max_samples: usize,
    /// Widest span of time one selector may read, ms (`serving.max_range`).
    pub max_span_ms: i64,
}

impl Limits {
    /// The limits `serving` sets.
    pub fn of(serving: &ServingConfig) -> Self {
        Self {
            max_series: serving.max_series,
            max_samples: serving.max_samples,
            max_span_ms: serving.max_range.as_millis().min(i64::MAX as u128) as i64,
        }
    }
}

/// Where an expression is evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Evaluation times, Unix ms, increasing.
    pub times: Arc<[i64]>,
    /// Width of a plain selector's window `(t − width, t]`, ms.
    pub width_ms: i64,
}

impl Grid {
    /// Points `times` with windows `width_ms` wide.
    pub fn new(times: Vec<i64>, width_ms: i64) -> Self {
        Self {
            times: times.into(),
            width_ms,
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether there is no point.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

#[derive(Default)]
struct Notes {
    warnings: Vec<String>,
    provenance: Vec<Provenance>,
    series: usize,
    samples: usize,
}

pub(super) type BoxFut<'b, T> = Pin<Box<dyn Future<Output = T> + Send + 'b>>;

/// Evaluates expressions of one query against a [`SeriesSource`].
pub struct Evaluator<'a> {
    pub(super) source: &'a dyn SeriesSource,
    limits: Limits,
    /// The query's first and last point: what `@ start()` and `@ end()` mean.
    range: (i64, i64),
    grid: Grid,
    notes: Mutex<Notes>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator for points `steps` (increasing) whose plain selectors read windows
    /// `step_ms` wide (for an instant query: one point, a one-minute window).
    pub fn new(
        source: &'a dyn SeriesSource,
        limits: Limits,
        steps: Vec<i64>,
        step_ms: i64,
    ) -> Self {
        let range = (
            steps.first().copied().unwrap_or(0),
            steps.last().copied().unwrap_or(0),
        );
        Self {
            source,
            limits,
            range,
            grid: Grid::new(steps, step_ms),
            notes: Mutex::new(Notes::default()),
        }
    }

    /// Sets the query's start and end (when the points are a part of a longer query).
    pub fn with_query_range(mut self, start_ms: i64, end_ms: i64) -> Self {
        self.range = (start_ms, end_ms);
        self
    }

    /// The evaluation times.
    pub fn steps(&self) -> &[i64] {
        &self.grid.times
    }

    /// Evaluates an expression at every point. A range vector (`x[5m]`, a subquery) is an
    /// answer only at a single point (an instant query), as in Prometheus.
    pub async fn eval(&self, expr: &Expr) -> Result<Value, EvalError> {
        match unparen(expr) {
            e @ (Expr::MatrixSelector(_) | Expr::Subquery(_)) => {
                if self.grid.len() != 1 {
                    return Err(EvalError::bad(
                        "invalid expression type \"range vector\" for range query, must be \
                         Scalar or instant Vector",
                    ));
                }
                let arg = self.range_arg(e, &self.grid).await?;
                Ok(Value::Matrix(arg.into_matrix()))
            }
            e => self.eval_at(e, &self.grid).await,
        }
    }

    /// Problems met on the way (sorted, each once).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.lock().warnings.clone();
        w.sort();
        w.dedup();
        w
    }

    /// Which layer answered which range.
    pub fn provenance(&self) -> Vec<Provenance> {
        self.lock().provenance.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps what a source said besides its answer.
    pub(super) fn note(&self, warnings: Vec<String>, provenance: Vec<Provenance>) {
        let mut n = self.lock();
        n.warnings.extend(warnings);
        n.provenance.extend(provenance);
    }

    /// Counts selected series against the limit.
    pub(super) fn count_series(&self, n: usize) -> Result<(), EvalError> {
        let mut notes = self.lock();
        notes.series += n;
        if notes.series > self.limits.max_series {
            return Err(EvalError::exec(format!(
                "the query selects {} series, more than the limit of {} (serving.max_series); \
                 narrow the selector",
                notes.series, self.limits.max_series
            )));
        }
        Ok(())
    }

    /// Counts samples held against the limit.
    pub(super) fn count_samples(&self, n: usize) -> Result<(), EvalError> {
        let mut notes = self.lock();
        notes.samples = notes.samples.saturating_add(n);
        if notes.samples > self.limits.max_samples {
            return Err(EvalError::exec(format!(
                "query processing would load too many samples into memory in query execution \
                 (more than serving.max_samples = {}); shorten the range, raise the step or \
                 narrow the selector",
                self.limits.max_samples
            )));
        }
        Ok(())
    }

    /// The most samples the query may hold.
    pub(super) fn max_samples(&self) -> usize {
        self.limits.max_samples
    }

    /// Refuses a selector that would read more than `serving.max_range`.
    pub(super) fn check_span(&self, from_ms: i64, to_ms: i64) -> Result<(), EvalError> {
        if to_ms.saturating_sub(from_ms) > self.limits.max_span_ms {
            return Err(EvalError::exec(format!(
                "a selector would read {} h of data, more than serving.max_range ({} h); \
                 shorten its range, offset or subquery",
                (to_ms.saturating_sub(from_ms)) / 3_600_000,
                self.limits.max_span_ms / 3_600_000
            )));
        }
        Ok(())
    }

    /// The times a selector or subquery with these modifiers reads at, one per grid time:
    /// `@` fixes it, `offset` moves it back (forward when negative).
    pub(super) fn shifted(
        &self,
        grid: &Grid,
        at: Option<&AtModifier>,
        offset: Option<&Offset>,
    ) -> Result<Vec<i64>, EvalError> {
        let off = match offset {
            None => 0,
            Some(Offset::Pos(d)) => duration_ms(d)?,
            Some(Offset::Neg(d)) => -duration_ms(d)?,
        };
        let fixed = match at {
            None => None,
            Some(AtModifier::Start) => Some(self.range.0),
            Some(AtModifier::End) => Some(self.range.1),
            Some(AtModifier::At(t)) => Some(system_ms(t)),
        };
        Ok(grid
            .times
            .iter()
            .map(|t| fixed.unwrap_or(*t).saturating_sub(off))
            .collect())
    }

    /// Evaluates `expr` on `grid`.
    pub(super) fn eval_at<'b>(
        &'b self,
        expr: &'b Expr,
        grid: &'b Grid,
    ) -> BoxFut<'b, Result<Value, EvalError>> {
        Box::pin(async move {
            let n = grid.len();
            match expr {
                Expr::NumberLiteral(l) => Ok(Value::Scalar(vec![l.val; n])),
                Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
                Expr::Paren(p) => self.eval_at(&p.expr, grid).await,
                Expr::Unary(u) => {
                    let v = self.eval_at(&u.expr, grid).await?;
                    super::binary::negate(v)
                }
                Expr::VectorSelector(vs) => self.plain(vs, grid, false).await,
                Expr::MatrixSelector(_) | Expr::Subquery(_) => Err(EvalError::bad(
                    "a range vector (name[5m] or a subquery expr[1h:1m]) can only be the \
                     argument of a function such as rate() or max_over_time()",
                )),
                Expr::Aggregate(a) => self.aggregate(a, grid).await,
                Expr::Binary(b) => self.binary(b, grid).await,
                Expr::Call(c) => self.call(c, grid).await,
                Expr::Extension(_) => Err(EvalError::bad("unsupported expression")),
            }
        })
    }

    /// Evaluates `expr`, which must give a scalar (a function's or aggregation's parameter).
    pub(super) async fn scalar_arg(
        &self,
        expr: &Expr,
        grid: &Grid,
        what: &str,
    ) -> Result<Vec<f64>, EvalError> {
        match self.eval_at(expr, grid).await? {
            Value::Scalar(s) => Ok(s),
            _ => Err(EvalError::bad(format!("{what} must be a scalar"))),
        }
    }

    /// Evaluates `expr`, which must give an instant vector.
    pub(super) async fn vector_arg(
        &self,
        expr: &Expr,
        grid: &Grid,
        what: &str,
    ) -> Result<Vec<super::Series>, EvalError> {
        match self.eval_at(expr, grid).await? {
            Value::Vector(v) => Ok(v),
            _ => Err(EvalError::bad(format!("{what} expects an instant vector"))),
        }
    }
}

/// The expression inside any parentheses.
pub(super) fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// A duration in ms.
pub(super) fn duration_ms(d: &std::time::Duration) -> Result<i64, EvalError> {
    i64::try_from(d.as_millis()).map_err(|_| EvalError::bad("duration out of range"))
}

fn system_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_millis().min(i64::MAX as u128) as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::{parse, MemorySource};
    use crate::series::Labels;

    const M: i64 = 60_000;

    /// `n` series `m{i}` with a sample every minute for an hour.
    fn source(n: usize) -> MemorySource {
        let mut s = MemorySource::new();
        for i in 0..n {
            let labels = Labels::from([
                ("__name__".to_owned(), "m".to_owned()),
                ("i".to_owned(), i.to_string()),
            ]);
            s.add(labels, None, (0..=60).map(|k| (k * M, k as f64)).collect());
        }
        s
    }

    fn limits(series: usize, samples: usize, span_ms: i64) -> Limits {
        Limits {
            max_series: series,
            max_samples: samples,
            max_span_ms: span_ms,
        }
    }

    async fn run(
        src: &MemorySource,
        l: Limits,
        q: &str,
        steps: Vec<i64>,
    ) -> Result<Value, EvalError> {
        let ev = Evaluator::new(src, l, steps, M);
        ev.eval(&parse(q).unwrap()).await
    }

    #[tokio::test]
    async fn the_series_limit_counts_every_selector_of_the_query() {
        let src = source(30);
        let ok = run(
            &src,
            limits(60, 1_000_000, 86_400_000),
            "m + m",
            vec![30 * M],
        )
        .await;
        assert!(ok.is_ok());
        let err = run(
            &src,
            limits(59, 1_000_000, 86_400_000),
            "m + m",
            vec![30 * M],
        )
        .await;
        assert!(matches!(err, Err(EvalError::Execution(m)) if m.contains("serving.max_series")));
        // A subquery's selector counts too.
        let err = run(
            &src,
            limits(29, 1_000_000, 86_400_000),
            "max_over_time(m[10m:1m])",
            vec![30 * M],
        )
        .await;
        assert!(matches!(err, Err(EvalError::Execution(_))));
    }

    #[tokio::test]
    async fn subqueries_and_ranges_stay_within_the_sample_limit() {
        let src = source(10);
        // 10 series × 11 minutes.
        let q = "sum_over_time(m[11m])";
        assert!(run(&src, limits(100, 110, 86_400_000), q, vec![60 * M])
            .await
            .is_ok());
        assert!(run(&src, limits(100, 109, 86_400_000), q, vec![60 * M])
            .await
            .is_err());
        // A subquery at a 1 s step over an hour would be 3,600 points per series.
        let err = run(
            &src,
            limits(100, 1_000, 86_400_000),
            "max_over_time(m[1h:1s])",
            vec![60 * M],
        )
        .await;
        assert!(matches!(err, Err(EvalError::Execution(m)) if m.contains("serving.max_samples")));
    }

    #[tokio::test]
    async fn offsets_and_ranges_cannot_read_past_the_span_limit() {
        let src = source(1);
        let day = 86_400_000;
        assert!(
            run(
                &src,
                limits(10, 1_000_000, day),
                "m offset 30d",
                vec![60 * M]
            )
            .await
            .is_ok(),
            "an offset moves the read, it does not widen it"
        );
        let err = run(
            &src,
            limits(10, 1_000_000, day),
            "max_over_time(m[2d])",
            vec![60 * M],
        )
        .await;
        assert!(matches!(err, Err(EvalError::Execution(m)) if m.contains("serving.max_range")));
        let err = run(
            &src,
            limits(10, 1_000_000, day),
            "max_over_time(max_over_time(m[1h])[2d:1h])",
            vec![60 * M],
        )
        .await;
        assert!(err.is_err(), "a subquery's inner reads count: {err:?}");
    }

    #[tokio::test]
    async fn at_start_and_end_are_the_querys_not_the_parts() {
        let src = source(1);
        // A part of a longer query (points 10m..12m of a 0..20m query): @ end() is 20m.
        let ev = Evaluator::new(
            &src,
            limits(10, 1_000, 86_400_000),
            vec![10 * M, 11 * M, 12 * M],
            M,
        )
        .with_query_range(0, 20 * M);
        let Value::Vector(v) = ev.eval(&parse("m @ end()").unwrap()).await.unwrap() else {
            panic!()
        };
        assert_eq!(v[0].values, vec![Some(20.0); 3]);
    }

    #[tokio::test]
    async fn a_range_vector_is_an_answer_only_at_one_point() {
        let src = source(1);
        let one = run(&src, limits(10, 1_000, 86_400_000), "m[3m]", vec![10 * M])
            .await
            .unwrap();
        let Value::Matrix(m) = one else {
            panic!("{one:?}")
        };
        assert_eq!(
            m[0].samples,
            vec![(8 * M, 8.0), (9 * M, 9.0), (10 * M, 10.0)]
        );
        let many = run(
            &src,
            limits(10, 1_000, 86_400_000),
            "m[3m]",
            vec![10 * M, 11 * M],
        )
        .await;
        assert!(matches!(many, Err(EvalError::BadData(m)) if m.contains("range vector")));
    }
}
