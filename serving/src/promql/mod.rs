//! PromQL over Strata's series: an expression parsed by `promql-parser` is evaluated at every
//! point of a query (one point for an instant query) into a scalar or an instant vector per
//! point, asking a [`SeriesSource`] for data — the merged batch and speed views in the server
//! ([`EngineSource`]), series held in memory in the tests ([`MemorySource`]).
//!
//! What flows: [`eval`] walks the expression on a *grid* (the evaluation times and the width of
//! a plain selector's window); selectors (`select`) ask the source for windows or per-minute
//! samples; [`aggregate`], [`binary`], [`functions`] and the range functions (`over_time`, the
//! arithmetic in [`range_fns`]) combine them point by point.
//!
//! **The meaning** is Prometheus's, on these samples: every exposed series has one sample per
//! minute that had events, at the minute's end. Where Strata differs on purpose:
//! - a plain selector at `t` aggregates the buckets of its window `(t − w, t]`, `w` = the grid's
//!   width (the step of a range query or subquery, one minute for an instant query): sums of
//!   `_count`/`_sum`, min of `_min`, max of `_max`, the window's mean for `_avg`, merged
//!   quantiles — nothing sampled, nothing counted twice, whatever the step. At a one-minute
//!   width this is exactly the minute's sample;
//! - `rate`, `increase` and `irate` over a range selector of a `_count` or `_sum` series use
//!   the per-minute totals as what they are: `increase` = the sum of the minutes' totals in the
//!   range, `rate` = that / the range in seconds, `irate` = the newest minute's total / 60 s.
//!   Over anything else (other statistics, subqueries) they are Prometheus's counter functions;
//! - range selectors and subqueries select `(t − range, t]` (Prometheus 3's rule; 2.x also took
//!   a sample exactly at `t − range`).
//!
//! Native histograms are not stored, so the native-histogram functions are refused by name;
//! anything else not evaluated is refused with [`EvalError::BadData`] naming it.

pub mod aggregate;
pub mod binary;
mod engine_source;
pub mod eval;
pub mod functions;
mod histogram;
mod labels;
mod memory;
mod over_time;
pub mod range_fns;
mod select;
mod source;

#[cfg(test)]
mod script;

pub use engine_source::{EngineSource, LOOKBACK_MS};
pub use eval::{Evaluator, Limits};
pub use memory::MemorySource;
pub use source::{Exposed, Found, SeriesSource};

use promql_parser::parser::Expr;

use crate::series::Labels;

/// One series of an instant vector, at every point of the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels (with `__name__` while it is a selected series).
    pub labels: Labels,
    /// Its value at each point (`None`: no sample there).
    pub values: Vec<Option<f64>>,
}

/// One series of a range vector: its samples, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// Its labels (with `__name__`).
    pub labels: Labels,
    /// (time in Unix ms, value), increasing in time.
    pub samples: Vec<(i64, f64)>,
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
    /// A range vector: only as the answer of an instant query (`x[5m]`, `expr[1h:1m]`).
    Matrix(Vec<RangeSeries>),
}

/// Why a query could not be answered.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EvalError {
    /// The query is wrong or uses what Strata does not evaluate (the client's fault).
    #[error("{0}")]
    BadData(String),
    /// The query is valid but cannot be answered: too big for the limits, or the data makes it
    /// undefined (duplicate series in a match).
    #[error("{0}")]
    Execution(String),
}

impl EvalError {
    pub(crate) fn bad(m: impl Into<String>) -> Self {
        EvalError::BadData(m.into())
    }

    pub(crate) fn exec(m: impl Into<String>) -> Self {
        EvalError::Execution(m.into())
    }
}

/// Parses a query, mapping the parser's message to `bad_data`.
pub fn parse(query: &str) -> Result<Expr, EvalError> {
    if query.trim().is_empty() {
        return Err(EvalError::bad("empty query"));
    }
    functions::register_aliases();
    promql_parser::parser::parse(query).map_err(|e| EvalError::bad(format!("parse error: {e}")))
}
