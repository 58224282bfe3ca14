//! PromQL over the merged views: an expression parsed by `promql-parser` is evaluated at every
//! point of a query (one point for an instant query) into a scalar or an instant vector per
//! point.
//!
//! Supported (DESIGN.md §4): selectors with `=`, `!=`, `=~`, `!~`; `sum`, `avg`, `min`, `max`,
//! `count`, `topk`, `bottomk` with `by` / `without`; arithmetic and comparisons between vectors
//! and scalars, `and` / `or` / `unless`; `rate`, `increase` and `*_over_time` over per-minute
//! samples; a few math functions, `time()`, `vector()`, `scalar()`. Anything else is refused
//! with [`EvalError::BadData`] naming the construct.

mod functions;
mod ops;
mod select;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};
use strata_shared::config::ServingConfig;

use crate::merge::{Engine, Provenance};
use crate::series::Labels;
use crate::source::batch::View;

/// One series of an instant vector, at every point of the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels (with `__name__` while it is a selected series).
    pub labels: Labels,
    /// Its value at each point (`None`: no sample there).
    pub values: Vec<Option<f64>>,
}

/// What an expression evaluates to.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number per point.
    Scalar(Vec<f64>),
    /// Series per point.
    Vector(Vec<Series>),
    /// A string literal.
    String(String),
}

/// Why a query could not be answered.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EvalError {
    /// The query is wrong or uses what Strata does not evaluate (the client's fault).
    #[error("{0}")]
    BadData(String),
    /// The query is valid but too big to answer within the limits.
    #[error("{0}")]
    Execution(String),
}

/// The points of a query and what evaluation has learnt on the way.
pub struct Evaluator<'a> {
    engine: &'a Engine,
    /// The batch views every part of the evaluation reads (one refresh's picture).
    view: Arc<View>,
    limits: &'a ServingConfig,
    /// Evaluation times (Unix ms), sorted.
    pub steps: Vec<i64>,
    /// Distance between points (the window of a plain selector), ms.
    pub step_ms: i64,
    /// Problems that made the answer partial (a layer down).
    pub warnings: Vec<String>,
    /// Which layer answered which range.
    pub provenance: Vec<Provenance>,
    series_seen: usize,
}

type BoxFut<'b, T> = Pin<Box<dyn Future<Output = T> + Send + 'b>>;

impl<'a> Evaluator<'a> {
    /// An evaluator for points `steps` spaced `step_ms` apart (for an instant query: one point
    /// and a one-minute window), over the current batch views.
    pub fn new(
        engine: &'a Engine,
        limits: &'a ServingConfig,
        steps: Vec<i64>,
        step_ms: i64,
    ) -> Self {
        Self::with_view(engine, engine.view(), limits, steps, step_ms)
    }

    /// [`Evaluator::new`] over the batch views as of `view`.
    pub fn with_view(
        engine: &'a Engine,
        view: Arc<View>,
        limits: &'a ServingConfig,
        steps: Vec<i64>,
        step_ms: i64,
    ) -> Self {
        Self {
            engine,
            view,
            limits,
            steps,
            step_ms,
            warnings: Vec::new(),
            provenance: Vec::new(),
            series_seen: 0,
        }
    }

    /// Evaluates an expression at every point.
    pub fn eval<'b>(&'b mut self, expr: &'b Expr) -> BoxFut<'b, Result<Value, EvalError>> {
        Box::pin(async move {
            let n = self.steps.len();
            match expr {
                Expr::NumberLiteral(l) => Ok(Value::Scalar(vec![l.val; n])),
                Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
                Expr::Paren(p) => self.eval(&p.expr).await,
                Expr::Unary(u) => {
                    let v = self.eval(&u.expr).await?;
                    Ok(ops::negate(v))
                }
                Expr::VectorSelector(vs) => {
                    check_modifiers(vs)?;
                    self.select(vs, None).await
                }
                Expr::MatrixSelector(_) => Err(EvalError::BadData(
                    "a range vector selector (name[5m]) is supported only inside rate(), \
                     increase() and the *_over_time() functions"
                        .into(),
                )),
                Expr::Subquery(_) => Err(EvalError::BadData(
                    "subqueries (expr[range:step]) are not supported".into(),
                )),
                Expr::Aggregate(a) => self.aggregate(a).await,
                Expr::Binary(b) => self.binary(b).await,
                Expr::Call(c) => self.call(c).await,
                Expr::Extension(_) => Err(EvalError::BadData("unsupported expression".into())),
            }
        })
    }

    /// An evaluator for a part of this one's expression, run alongside another part.
    fn fork(&self) -> Evaluator<'a> {
        Evaluator {
            engine: self.engine,
            view: self.view.clone(),
            limits: self.limits,
            steps: self.steps.clone(),
            step_ms: self.step_ms,
            warnings: Vec::new(),
            provenance: Vec::new(),
            series_seen: self.series_seen,
        }
    }

    /// Takes back what a [`Evaluator::fork`] found: its warnings, provenance and series.
    /// `base` is this evaluator's series count when the part was forked.
    fn absorb(&mut self, part: Evaluator<'a>, base: usize) -> Result<(), EvalError> {
        self.warnings.extend(part.warnings);
        self.provenance.extend(part.provenance);
        self.count_series(part.series_seen.saturating_sub(base))
    }

    /// Counts selected series against the limit.
    fn count_series(&mut self, n: usize) -> Result<(), EvalError> {
        self.series_seen += n;
        if self.series_seen > self.limits.max_series {
            return Err(EvalError::Execution(format!(
                "the query selects {} series, more than the limit of {} (serving.max_series); \
                 narrow the selector",
                self.series_seen, self.limits.max_series
            )));
        }
        Ok(())
    }

    async fn select_range(&mut self, m: &MatrixSelector) -> Result<select::Minutes, EvalError> {
        check_modifiers(&m.vs)?;
        let range_ms = m.range.as_millis() as i64;
        if range_ms < 60_000 {
            return Err(EvalError::BadData(format!(
                "range [{}] is shorter than the one-minute resolution of the rollups",
                promql_parser::util::duration::display_duration(&m.range)
            )));
        }
        self.select_minutes(&m.vs, range_ms).await
    }
}

/// Refuses `offset` and `@`, naming them.
fn check_modifiers(vs: &VectorSelector) -> Result<(), EvalError> {
    if vs.offset.is_some() {
        return Err(EvalError::BadData(
            "the offset modifier is not supported".into(),
        ));
    }
    if vs.at.is_some() {
        return Err(EvalError::BadData("the @ modifier is not supported".into()));
    }
    Ok(())
}

/// Parses a query, mapping the parser's message to `bad_data`.
pub fn parse(query: &str) -> Result<Expr, EvalError> {
    if query.trim().is_empty() {
        return Err(EvalError::BadData("empty query".into()));
    }
    promql_parser::parser::parse(query).map_err(|e| EvalError::BadData(format!("parse error: {e}")))
}
