//! What the evaluator asks of the data: which exposed series a selector names, their values per
//! window, their per-minute samples. [`SeriesSource`] is the seam between the language and the
//! storage: the server answers it from the merged views ([`super::EngineSource`]), the tests
//! from series held in memory ([`super::MemorySource`]).

use std::sync::Arc;

use async_trait::async_trait;
use promql_parser::parser::VectorSelector;

use crate::merge::Provenance;
use crate::series::{Labels, SeriesInfo, Stat};

/// One exposed series a selector chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposed {
    /// Its labels, `__name__` included.
    pub labels: Labels,
    /// The statistic it shows (`None`: plain samples; a window shows its newest).
    pub stat: Option<Stat>,
    /// Which quantile, for [`Stat::Quantile`] (an index into the stored quantiles).
    pub quantile: usize,
    /// The stored series it is a view of.
    pub stored: Arc<SeriesInfo>,
}

/// An answer of the source and what the caller should know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found<T> {
    /// The answer.
    pub value: T,
    /// Problems that made it partial (a layer down).
    pub warnings: Vec<String>,
    /// Which layer answered which range.
    pub provenance: Vec<Provenance>,
}

impl<T> Found<T> {
    /// An answer with nothing to add.
    pub fn plain(value: T) -> Self {
        Self {
            value,
            warnings: Vec::new(),
            provenance: Vec::new(),
        }
    }
}

/// A value at a window: the end of the newest bucket in it and the statistic over the window.
pub type Point = (i64, f64);

/// The data behind the evaluator.
///
/// Times are Unix ms. A bucket is one minute `[m, m + 1 min)` of one stored series; its sample
/// is at its end `m + 1 min`. Windows `(t − w, t]` hold the buckets whose end lies in them.
#[async_trait]
pub trait SeriesSource: Send + Sync {
    /// The exposed series `selector` matches (name and label matchers; offset and `@` are the
    /// caller's) that have a bucket ending in `(from_ms, to_ms]`.
    async fn select(
        &self,
        selector: &VectorSelector,
        from_ms: i64,
        to_ms: i64,
    ) -> Found<Vec<Exposed>>;

    /// For each series and each time `t` of `times` (sorted, distinct): its statistic over the
    /// buckets ending in `(t − width_ms, t]` — counts and sums summed, min of mins, max of
    /// maxes, the window's mean, merged quantiles; plain samples show the newest — with the end
    /// of the newest of them; `None` where there is none.
    async fn windows(
        &self,
        series: &[Exposed],
        times: &[i64],
        width_ms: i64,
    ) -> Found<Vec<Vec<Option<Point>>>>;

    /// For each series, its per-minute samples (bucket end, value) with ends in
    /// `(from_ms, to_ms]`, in time order.
    async fn samples(
        &self,
        series: &[Exposed],
        from_ms: i64,
        to_ms: i64,
    ) -> Found<Vec<Vec<(i64, f64)>>>;
}
