//! Range queries in step-aligned windows, with the windows the batch views answer whole kept in
//! a results cache (as Thanos' and Mimir's query-frontend do).
//!
//! A range query's points `start + k·step` fall into windows of [`window_steps`] points aligned
//! on absolute time (so queries with other starts, as Grafana sends on every refresh, share
//! them). Evaluating a point reads rows from `t − before` to `t + after` (its reach: the widest range selector or
//! the step, plus the minute the bucket ends in); points that read only hours the batch views
//! cover cannot change until one of those hours is recomputed, so a window's run of such points
//! from its start — all of it, or the part before the time boundary — is evaluated whole, once,
//! and kept under a key holding the query, the step, the points and a fingerprint of the
//! recomputes of every hour they read: a recompute of an hour makes exactly the entries that read
//! it unreachable, and they age out of the byte-bounded cache. Nothing that reads an hour past the
//! time boundary (or a hole) is kept; those points are evaluated together, and identical
//! evaluations running at once (sixteen viewers of one dashboard) are done once.
//!
//! The parts are merged by label set; series come out sorted by labels, as Prometheus sorts a
//! matrix, whichever way the points were evaluated.

use std::collections::BTreeMap;
use std::sync::Arc;

use promql_parser::parser::Expr;
use strata_shared::config::ServingConfig;

use crate::cache::{Cache, Weigh};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};

use crate::merge::{Engine, Provenance};
use crate::promql::{EngineSource, EvalError, Evaluator, Limits, Series, Value};
use crate::series::Labels;
use crate::source::batch::View;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// Target span of one cached window.
const WINDOW_MS: i64 = 2 * HOUR_MS;
/// Most windows evaluated in one run: a run holds the buckets of all its points at once (with
/// quantiles, a sketch per series and minute), so its span bounds the memory of a cold query.
const RUN_WINDOWS: usize = 3;
/// Parts of one query evaluated at once (runs, windows, the live part).
const PARTS_AT_ONCE: usize = 4;

/// An evaluated set of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The value at each point.
    pub value: Value,
    /// Which layer answered which range.
    pub provenance: Vec<Provenance>,
    /// Problems that made the answer partial.
    pub warnings: Vec<String>,
}

impl Weigh for Answer {
    /// An answer with warnings is partial (a layer could not be read): it weighs more than any
    /// budget, so it is handed out but never kept.
    fn weight(&self) -> usize {
        if !self.warnings.is_empty() {
            return usize::MAX;
        }
        let labels = |l: &Labels| l.iter().map(|(k, v)| 64 + k.len() + v.len()).sum::<usize>();
        std::mem::size_of::<Answer>()
            + match &self.value {
                Value::Scalar(v) => v.len() * 8,
                Value::String(s) => s.len(),
                Value::Matrix(m) => m
                    .iter()
                    .map(|s| 48 + labels(&s.labels) + s.samples.len() * 16)
                    .sum(),
                Value::Vector(vs) => vs
                    .iter()
                    .map(|s| 48 + labels(&s.labels) + s.values.len() * 16)
                    .sum(),
            }
            + self.provenance.len() * 24
            + self.warnings.iter().map(String::len).sum::<usize>()
    }
}

/// What a cached window is: the query, its step and points, and what the batch views held for
/// every hour the points read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WindowKey {
    query: Arc<str>,
    step_ms: i64,
    first_ms: i64,
    points: usize,
    data: u64,
}

/// The results cache and the sharing of evaluations under way.
pub struct Results {
    engine: Arc<Engine>,
    limits: Arc<ServingConfig>,
    cache: Cache<WindowKey, Answer, EvalError>,
    /// Evaluations of points past the boundary, shared while they run, never kept.
    live: Cache<WindowKey, Answer, EvalError>,
    enabled: bool,
}

/// Points per cached window for a step: whole windows of about [`WINDOW_MS`].
pub fn window_steps(step_ms: i64) -> i64 {
    ((WINDOW_MS + step_ms - 1) / step_ms).max(1)
}

/// How far before and after a point its evaluation reads, ms: its selectors' windows and
/// ranges (at least the step), moved by their offsets and widened by the subqueries around
/// them, plus the minute a bucket ends in. `None` for an expression that reads no data, and for
/// one with `@`: it reads at fixed times, not near its points, and is evaluated whole, uncached.
pub fn reach_ms(expr: &Expr, step_ms: i64) -> Option<(i64, i64)> {
    use promql_parser::parser::Offset;
    fn offset_ms(o: Option<&Offset>) -> i64 {
        match o {
            None => 0,
            Some(Offset::Pos(d)) => d.as_millis() as i64,
            Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        }
    }
    /// `Err(())` when an `@` makes the reach meaningless.
    fn walk(e: &Expr, width: i64, reach: &mut Option<(i64, i64)>) -> Result<(), ()> {
        let mut see = |before: i64, after: i64| {
            *reach = Some(reach.map_or((before, after), |(b, a)| (b.max(before), a.max(after))));
        };
        match e {
            Expr::VectorSelector(v) => {
                if v.at.is_some() {
                    return Err(());
                }
                let o = offset_ms(v.offset.as_ref());
                // A sample series looks back further than the window for its newest sample.
                see(o + width.max(crate::promql::LOOKBACK_MS), -o);
            }
            Expr::MatrixSelector(m) => {
                if m.vs.at.is_some() {
                    return Err(());
                }
                let o = offset_ms(m.vs.offset.as_ref());
                see(o + (m.range.as_millis() as i64).max(width), -o);
            }
            Expr::Subquery(s) => {
                if s.at.is_some() {
                    return Err(());
                }
                let step = s.step.map_or(MINUTE_MS, |d| d.as_millis() as i64);
                let mut inner = None;
                walk(&s.expr, step, &mut inner)?;
                if let Some((b, a)) = inner {
                    let o = offset_ms(s.offset.as_ref());
                    see(o + s.range.as_millis() as i64 + b, a - o);
                }
            }
            Expr::Aggregate(a) => {
                walk(&a.expr, width, reach)?;
                if let Some(p) = &a.param {
                    walk(p, width, reach)?;
                }
            }
            Expr::Unary(u) => walk(&u.expr, width, reach)?,
            Expr::Binary(b) => {
                walk(&b.lhs, width, reach)?;
                walk(&b.rhs, width, reach)?;
            }
            Expr::Paren(p) => walk(&p.expr, width, reach)?,
            Expr::Call(c) => {
                for a in &c.args.args {
                    walk(a, width, reach)?;
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
        Ok(())
    }
    let mut reach = None;
    walk(expr, step_ms, &mut reach).ok()?;
    reach.map(|(before, after)| (before + MINUTE_MS, after.max(0)))
}

/// The hours that points `first..=last` read, given their reach `(before, after)`.
fn hours_read(first: i64, last: i64, (before, after): (i64, i64)) -> impl Iterator<Item = i64> {
    let from = (first - before).div_euclid(HOUR_MS) * HOUR_MS;
    let to = (last + after - 1).div_euclid(HOUR_MS) * HOUR_MS;
    (from..=to).step_by(HOUR_MS as usize)
}

impl Results {
    /// Range queries over `engine` within `limits`, with a results cache of
    /// `limits.results_cache_bytes` (0: evaluations are still shared, nothing is kept).
    pub fn new(engine: Arc<Engine>, limits: ServingConfig) -> Self {
        let bytes = limits.results_cache_bytes;
        Self {
            engine,
            limits: Arc::new(limits),
            cache: Cache::new(bytes as usize),
            live: Cache::new(0),
            enabled: bytes > 0,
        }
    }

    /// Bytes held by the results cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// The results cache's counters.
    pub fn cache_stats(&self) -> &crate::cache::Stats {
        self.cache.stats()
    }

    /// Evaluates `expr` (the text `query`) at `steps` (`start + k·step_ms`, sorted).
    pub async fn range(
        &self,
        (query, expr): (&str, &Expr),
        steps: &[i64],
        step_ms: i64,
    ) -> Result<Answer, EvalError> {
        let (engine, limits) = (&self.engine, &self.limits);
        let view = engine.view();
        let query: Arc<str> = Arc::from(query.trim());
        let (Some(&start), Some(&end)) = (steps.first(), steps.last()) else {
            return Ok(Answer {
                value: Value::Vector(Vec::new()),
                provenance: Vec::new(),
                warnings: Vec::new(),
            });
        };
        let Some(lookback) = reach_ms(expr, step_ms).filter(|_| self.enabled) else {
            let key = live_key(&query, step_ms, steps, &view);
            let ans = self
                .live
                .get_or_load(
                    key,
                    evaluation(
                        engine,
                        limits,
                        expr,
                        &view,
                        steps.to_vec(),
                        (step_ms, (start, end)),
                    ),
                )
                .await
                .map_err(|e| (*e).clone())?;
            return Ok(sorted((*ans).clone()));
        };
        // Windows: runs of `k` points aligned on absolute time.
        let k = window_steps(step_ms);
        let phase = start.rem_euclid(step_ms);
        let window_of = |t: i64| (t - phase).div_euclid(step_ms * k);
        let mut parts: Vec<(Vec<i64>, Option<WindowKey>)> = Vec::new();
        let mut w = window_of(start);
        while w <= window_of(end) {
            let first = w * step_ms * k + phase;
            let whole: Vec<i64> = (0..k).map(|i| first + i * step_ms).collect();
            // The window's points that read only covered hours, from its start: the whole
            // window, or (where the boundary falls inside it) the part before the boundary.
            let cacheable = whole
                .iter()
                .take_while(|&&t| view.covers(hours_read(t, t, lookback)))
                .count();
            if cacheable > 0 {
                let last = whole[cacheable - 1];
                let key = WindowKey {
                    query: query.clone(),
                    step_ms,
                    first_ms: first,
                    points: cacheable,
                    data: view.fingerprint(hours_read(first, last, lookback)),
                };
                parts.push((whole[..cacheable].to_vec(), Some(key)));
            }
            let live: Vec<i64> = whole[cacheable..]
                .iter()
                .copied()
                .filter(|t| (start..=end).contains(t))
                .collect();
            if !live.is_empty() {
                // Points that are not cacheable are evaluated together.
                match parts.last_mut() {
                    Some((pts, None)) => pts.extend(live),
                    _ => parts.push((live, None)),
                }
            }
            w += 1;
        }
        let runs = self.runs(&parts, |points| {
            evaluation(
                engine,
                limits,
                expr,
                &view,
                points.to_vec(),
                (step_ms, (start, end)),
            )()
        });
        let evaluations = parts.into_iter().zip(runs).map(|((points, key), run)| {
            let (query, view) = (&query, &view);
            async move {
                let ans = match (key, run) {
                    (Some(key), Some(run)) => {
                        let window = points.clone();
                        self.cache
                            .get_or_load(key, move || run.part(window, lookback))
                            .await
                    }
                    (Some(key), None) => {
                        let load = evaluation(
                            engine,
                            limits,
                            expr,
                            view,
                            points.clone(),
                            (step_ms, (start, end)),
                        );
                        self.cache.get_or_load(key, load).await
                    }
                    (None, _) => {
                        let key = live_key(query, step_ms, &points, view);
                        let load = evaluation(
                            engine,
                            limits,
                            expr,
                            view,
                            points.clone(),
                            (step_ms, (start, end)),
                        );
                        self.live.get_or_load(key, load).await
                    }
                }
                .map_err(|e| (*e).clone())?;
                Ok::<_, EvalError>((points, ans))
            }
        });
        let answers: Vec<(Vec<i64>, Arc<Answer>)> = futures::stream::iter(evaluations)
            .buffered(PARTS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(merge(steps, answers))
    }

    /// For each part, the run it is evaluated in, if any: up to [`RUN_WINDOWS`] consecutive
    /// cacheable windows that are neither held nor being loaded are evaluated together by one
    /// evaluation (`eval` of all their points), so a cold dashboard reads the blocks of a run
    /// in one go (a day's hours in one read) rather than window by window, and each window's
    /// share is then kept under its own key.
    fn runs<F>(&self, parts: &[(Vec<i64>, Option<WindowKey>)], eval: F) -> Vec<Option<Run>>
    where
        F: Fn(&[i64]) -> futures::future::BoxFuture<'static, Result<Answer, EvalError>>,
    {
        let missing =
            |p: &(Vec<i64>, Option<WindowKey>)| p.1.as_ref().is_some_and(|k| !self.cache.knows(k));
        let mut out: Vec<Option<Run>> = vec![None; parts.len()];
        let mut i = 0;
        while i < parts.len() {
            let mut j = i;
            while j < parts.len() && j - i < RUN_WINDOWS && missing(&parts[j]) {
                j += 1;
            }
            if j - i >= 2 {
                let points: Arc<Vec<i64>> = Arc::new(
                    parts[i..j]
                        .iter()
                        .flat_map(|(p, _)| p.iter().copied())
                        .collect(),
                );
                let whole = eval(&points)
                    .map(|r| r.map(Arc::new).map_err(Arc::new))
                    .boxed()
                    .shared();
                let run = Run { points, whole };
                out[i..j].fill(Some(run));
            }
            i = j.max(i + 1);
        }
        out
    }
}

/// One evaluation of the points of several consecutive windows, shared by their loads.
#[derive(Clone)]
struct Run {
    points: Arc<Vec<i64>>,
    whole: Shared<BoxFuture<'static, Result<Arc<Answer>, Arc<EvalError>>>>,
}

impl Run {
    /// The run's answer at `window` (a consecutive part of its points), the provenance cut to
    /// what those points read.
    async fn part(self, window: Vec<i64>, lookback: (i64, i64)) -> Result<Answer, EvalError> {
        let whole = self.whole.await.map_err(|e| (*e).clone())?;
        let at = self
            .points
            .iter()
            .position(|t| Some(t) == window.first())
            .unwrap_or(0);
        Ok(part_of(&whole, at..at + window.len(), &window, lookback))
    }
}

/// The points `range` of `whole` (evaluated at more points), which are `window`.
fn part_of(
    whole: &Answer,
    range: std::ops::Range<usize>,
    window: &[i64],
    (before, after): (i64, i64),
) -> Answer {
    fn cut<T: Clone>(v: &[T], range: &std::ops::Range<usize>) -> Vec<T> {
        v.get(range.clone()).map(<[T]>::to_vec).unwrap_or_default()
    }
    let value = match &whole.value {
        Value::Scalar(v) => Value::Scalar(cut(v, &range)),
        Value::String(s) => Value::String(s.clone()),
        Value::Matrix(m) => Value::Matrix(m.clone()),
        Value::Vector(vs) => Value::Vector(
            vs.iter()
                .map(|s| Series {
                    labels: s.labels.clone(),
                    values: cut(&s.values, &range),
                })
                .filter(|s| s.values.iter().any(Option::is_some))
                .collect(),
        ),
    };
    let (from, to) = match (window.first(), window.last()) {
        (Some(a), Some(b)) => (a - before, *b + after),
        _ => (0, 0),
    };
    let provenance = whole
        .provenance
        .iter()
        .filter(|p| p.from_ms < to && p.to_ms > from)
        .map(|p| Provenance {
            from_ms: p.from_ms.max(from),
            to_ms: p.to_ms.min(to),
            layer: p.layer,
        })
        .collect();
    Answer {
        value,
        provenance,
        warnings: whole.warnings.clone(),
    }
}

fn live_key(query: &Arc<str>, step_ms: i64, points: &[i64], view: &View) -> WindowKey {
    let mut h = xxhash_rust::xxh64::Xxh64::new(2);
    for v in view.versions() {
        h.update(&v.unwrap_or(-1).to_le_bytes());
    }
    WindowKey {
        query: query.clone(),
        step_ms,
        first_ms: points.first().copied().unwrap_or(0),
        points: points.len(),
        data: h.digest(),
    }
}

/// The evaluation of `points` (`step_ms` apart, of a query from `start` to `end`), as a future
/// the caches can share.
fn evaluation(
    engine: &Arc<Engine>,
    limits: &Arc<ServingConfig>,
    expr: &Expr,
    view: &Arc<View>,
    points: Vec<i64>,
    (step_ms, (start, end)): (i64, (i64, i64)),
) -> impl FnOnce() -> futures::future::BoxFuture<'static, Result<Answer, EvalError>> {
    let (engine, limits, expr, view) = (engine.clone(), limits.clone(), expr.clone(), view.clone());
    move || {
        Box::pin(async move {
            let source = EngineSource::with_view(&engine, view);
            let ev = Evaluator::new(&source, Limits::of(&limits), points, step_ms)
                .with_query_range(start, end);
            let value = ev.eval(&expr).await?;
            Ok(Answer {
                value,
                provenance: ev.provenance(),
                warnings: ev.warnings(),
            })
        })
    }
}

/// Series sorted by labels.
fn sorted(mut a: Answer) -> Answer {
    if let Value::Vector(vs) = &mut a.value {
        vs.sort_by(|x, y| x.labels.cmp(&y.labels));
    }
    a
}

/// The parts' values at `steps`, merged by label set.
fn merge(steps: &[i64], parts: Vec<(Vec<i64>, Arc<Answer>)>) -> Answer {
    let index: BTreeMap<i64, usize> = steps.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let n = steps.len();
    let mut provenance = Vec::new();
    let mut warnings = Vec::new();
    let mut scalar: Option<Vec<f64>> = None;
    let mut string = None;
    let mut vector: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
    for (points, ans) in &parts {
        provenance.extend(ans.provenance.iter().cloned());
        warnings.extend(ans.warnings.iter().cloned());
        let at: Vec<Option<usize>> = points.iter().map(|t| index.get(t).copied()).collect();
        match &ans.value {
            Value::Scalar(v) => {
                let out = scalar.get_or_insert_with(|| vec![f64::NAN; n]);
                for (i, x) in at.iter().zip(v) {
                    if let Some(i) = i {
                        out[*i] = *x;
                    }
                }
            }
            Value::String(s) => string = Some(s.clone()),
            // Range queries refuse range vectors before they are evaluated.
            Value::Matrix(_) => {}
            Value::Vector(vs) => {
                for s in vs {
                    let out = vector
                        .entry(s.labels.clone())
                        .or_insert_with(|| vec![None; n]);
                    for (i, x) in at.iter().zip(&s.values) {
                        if let Some(i) = i {
                            out[*i] = *x;
                        }
                    }
                }
            }
        }
    }
    provenance.sort_by_key(|p| (p.from_ms, p.to_ms));
    provenance.dedup();
    warnings.sort();
    warnings.dedup();
    let value = if let Some(s) = string {
        Value::String(s)
    } else if let Some(v) = scalar {
        Value::Scalar(v)
    } else {
        Value::Vector(
            vector
                .into_iter()
                .filter(|(_, v)| v.iter().any(Option::is_some))
                .map(|(labels, values)| Series { labels, values })
                .collect(),
        )
    };
    Answer {
        value,
        provenance,
        warnings,
    }
}

#[cfg(test)]
mod tests;
