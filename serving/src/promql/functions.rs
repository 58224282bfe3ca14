//! Function calls, point by point: the dispatch, and the functions of instant vectors and
//! scalars — math, `clamp*`, `round`, the date functions, `time`, `vector`, `scalar`, `sort*`,
//! `timestamp`, `absent`, `label_replace`, `label_join`, `histogram_quantile` (classic
//! buckets). Calls of functions of range vectors go on to `over_time`.

use std::sync::Once;

use chrono::{DateTime, Datelike, Timelike};
use promql_parser::parser::function::{register_extra_functions, Function};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Call, Expr};

use super::eval::{unparen, Evaluator, Grid};
use super::labels::{drop_name, merge_same, NAME};
use super::{EvalError, Series, Value};
use crate::series::Labels;

/// Functions Prometheus 3 renamed, still accepted by their old names (`holt_winters`, which
/// dashboards and rules written for Prometheus 2 use).
pub(super) fn register_aliases() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = register_extra_functions(vec![Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

/// Functions of one number, applied to every value (the name is dropped).
fn math(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        _ => return None,
    })
}

/// The date functions, of a time in Unix seconds (UTC).
fn date(name: &str) -> Option<fn(i64) -> f64> {
    fn at(secs: i64) -> Option<DateTime<chrono::Utc>> {
        DateTime::from_timestamp(secs, 0)
    }
    fn of(secs: i64, f: impl Fn(DateTime<chrono::Utc>) -> u32) -> f64 {
        at(secs).map_or(f64::NAN, |d| f64::from(f(d)))
    }
    Some(match name {
        "minute" => |s| of(s, |d| d.minute()),
        "hour" => |s| of(s, |d| d.hour()),
        "day_of_week" => |s| of(s, |d| d.weekday().num_days_from_sunday()),
        "day_of_month" => |s| of(s, |d| d.day()),
        "day_of_year" => |s| of(s, |d| d.ordinal()),
        "month" => |s| of(s, |d| d.month()),
        "year" => |s| at(s).map_or(f64::NAN, |d| f64::from(d.year())),
        "days_in_month" => |s| {
            of(s, |d| {
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                let next = chrono::NaiveDate::from_ymd_opt(y, m, 1).expect("a valid date");
                (next - chrono::Duration::days(1)).day()
            })
        },
        _ => return None,
    })
}

/// Functions that need what Strata does not store, or that Prometheus 3 marks experimental.
fn refused(name: &str) -> Option<String> {
    Some(match name {
        "histogram_count"
        | "histogram_sum"
        | "histogram_avg"
        | "histogram_fraction"
        | "histogram_stddev"
        | "histogram_stdvar"
        | "histogram_quantiles" => format!(
            "function {name}() reads native histograms, which Strata does not store; \
             histogram_quantile() over classic `le` buckets works"
        ),
        "info" | "sort_by_label" | "sort_by_label_desc" | "start_timestamp" | "step" | "range"
        | "min_of" | "max_of" | "integral" | "limitk" | "limit_ratio" => {
            format!("function {name}() (experimental in Prometheus 3) is not supported")
        }
        _ => return None,
    })
}

/// Keeps series that have a value somewhere.
fn nonempty(series: Vec<Series>) -> Vec<Series> {
    series
        .into_iter()
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect()
}

/// `f` on every value of every series, the name dropped.
fn map_values(
    series: Vec<Series>,
    f: impl Fn(usize, f64) -> Option<f64>,
) -> Result<Vec<Series>, EvalError> {
    merge_same(nonempty(
        series
            .into_iter()
            .map(|s| Series {
                labels: drop_name(s.labels),
                values: s
                    .values
                    .iter()
                    .enumerate()
                    .map(|(t, v)| v.and_then(|v| f(t, v)))
                    .collect(),
            })
            .collect(),
    ))
}

impl Evaluator<'_> {
    /// Evaluates a function call.
    pub(super) async fn call(&self, c: &Call, grid: &Grid) -> Result<Value, EvalError> {
        let name = c.func.name;
        let args: Vec<&Expr> = c.args.args.iter().map(|a| unparen(a)).collect();
        let arg = |i: usize| {
            args.get(i)
                .copied()
                .ok_or_else(|| EvalError::bad(format!("{name}() needs more arguments")))
        };
        let n = grid.len();
        if let Some(message) = refused(name) {
            return Err(EvalError::bad(message));
        }
        if super::over_time::is_range_function(name) {
            return self.range_call(name, &args, grid).await;
        }
        if let Some(f) = math(name) {
            let v = self.vector_arg(arg(0)?, grid, &format!("{name}()")).await?;
            return Ok(Value::Vector(map_values(v, |_, x| Some(f(x)))?));
        }
        if let Some(f) = date(name) {
            if args.is_empty() {
                let secs = |t: &i64| t / 1000;
                return Ok(Value::Vector(vec![Series {
                    labels: Labels::new(),
                    values: grid.times.iter().map(|t| Some(f(secs(t)))).collect(),
                }]));
            }
            let v = self.vector_arg(arg(0)?, grid, &format!("{name}()")).await?;
            return Ok(Value::Vector(map_values(v, |_, x| Some(f(x as i64)))?));
        }
        match name {
            "time" => Ok(Value::Scalar(
                grid.times.iter().map(|t| *t as f64 / 1000.0).collect(),
            )),
            "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; n])),
            "vector" => {
                let s = self.scalar_arg(arg(0)?, grid, "vector()").await?;
                Ok(Value::Vector(vec![Series {
                    labels: Labels::new(),
                    values: s.into_iter().map(Some).collect(),
                }]))
            }
            "scalar" => {
                let v = self.vector_arg(arg(0)?, grid, "scalar()").await?;
                Ok(Value::Scalar(
                    (0..n)
                        .map(|t| {
                            let mut present = v.iter().filter_map(|s| s.values[t]);
                            match (present.next(), present.next()) {
                                (Some(x), None) => x,
                                _ => f64::NAN,
                            }
                        })
                        .collect(),
                ))
            }
            "clamp" | "clamp_min" | "clamp_max" => self.clamp(name, &args, grid).await,
            "round" => {
                let v = self.vector_arg(arg(0)?, grid, "round()").await?;
                let to = match args.get(1) {
                    Some(e) => self.scalar_arg(e, grid, "round(): to_nearest").await?,
                    None => vec![1.0; n],
                };
                // Halves round up, as Prometheus rounds them.
                Ok(Value::Vector(map_values(v, |t, x| {
                    let inv = 1.0 / to[t];
                    Some((x * inv + 0.5).floor() / inv)
                })?))
            }
            "timestamp" => {
                let v = match arg(0)? {
                    Expr::VectorSelector(vs) => match self.plain(vs, grid, true).await? {
                        Value::Vector(v) => v,
                        _ => Vec::new(),
                    },
                    e => {
                        let v = self.vector_arg(e, grid, "timestamp()").await?;
                        v.into_iter()
                            .map(|s| Series {
                                values: s
                                    .values
                                    .iter()
                                    .zip(grid.times.iter())
                                    .map(|(v, t)| v.map(|_| *t as f64 / 1000.0))
                                    .collect(),
                                labels: s.labels,
                            })
                            .collect()
                    }
                };
                Ok(Value::Vector(map_values(v, |_, x| Some(x))?))
            }
            "sort" | "sort_desc" => {
                let mut v = self.vector_arg(arg(0)?, grid, &format!("{name}()")).await?;
                if n == 1 {
                    let key = |s: &Series| s.values[0].unwrap_or(f64::NAN);
                    let desc = name == "sort_desc";
                    v.sort_by(|a, b| {
                        let (x, y) = (key(a), key(b));
                        match (x.is_nan(), y.is_nan()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ if desc => y.total_cmp(&x),
                            _ => x.total_cmp(&y),
                        }
                    });
                }
                Ok(Value::Vector(v))
            }
            "absent" => {
                let v = self.vector_arg(arg(0)?, grid, "absent()").await?;
                let labels = match arg(0)? {
                    Expr::VectorSelector(vs) => absent_labels(&vs.matchers.matchers),
                    _ => Labels::new(),
                };
                Ok(Value::Vector(nonempty(vec![Series {
                    labels,
                    values: (0..n)
                        .map(|t| (!v.iter().any(|s| s.values[t].is_some())).then_some(1.0))
                        .collect(),
                }])))
            }
            "label_replace" => self.label_replace(&args, grid).await,
            "label_join" => self.label_join(&args, grid).await,
            "histogram_quantile" => {
                let q = self
                    .scalar_arg(arg(0)?, grid, "histogram_quantile(): φ")
                    .await?;
                let v = self
                    .vector_arg(arg(1)?, grid, "histogram_quantile()")
                    .await?;
                Ok(Value::Vector(super::histogram::quantiles(&q, &v, n)?))
            }
            other => Err(EvalError::bad(format!(
                "function {other}() is not supported"
            ))),
        }
    }

    async fn clamp(&self, name: &str, args: &[&Expr], grid: &Grid) -> Result<Value, EvalError> {
        let n = grid.len();
        let need = if name == "clamp" { 3 } else { 2 };
        if args.len() != need {
            return Err(EvalError::bad(format!("{name}() takes {need} arguments")));
        }
        let v = self.vector_arg(args[0], grid, &format!("{name}()")).await?;
        let a = self.scalar_arg(args[1], grid, &format!("{name}()")).await?;
        let (lo, hi) = match name {
            "clamp" => (a, self.scalar_arg(args[2], grid, "clamp()").await?),
            "clamp_min" => (a, vec![f64::INFINITY; n]),
            _ => (vec![f64::NEG_INFINITY; n], a),
        };
        // Go's Max and Min: NaN wins.
        let max = |a: f64, b: f64| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        };
        let min = |a: f64, b: f64| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.min(b)
            }
        };
        Ok(Value::Vector(map_values(v, |t, x| {
            if name == "clamp" && hi[t] < lo[t] {
                return None;
            }
            Some(match name {
                "clamp_min" => max(lo[t], x),
                "clamp_max" => min(hi[t], x),
                _ => max(lo[t], min(hi[t], x)),
            })
        })?))
    }

    /// The string arguments of a label function.
    fn strings(args: &[&Expr], from: usize, name: &str) -> Result<Vec<String>, EvalError> {
        args[from..]
            .iter()
            .map(|a| match a {
                Expr::StringLiteral(s) => Ok(s.val.clone()),
                _ => Err(EvalError::bad(format!(
                    "{name}() expects strings after the vector"
                ))),
            })
            .collect()
    }

    async fn label_replace(&self, args: &[&Expr], grid: &Grid) -> Result<Value, EvalError> {
        if args.len() != 5 {
            return Err(EvalError::bad("label_replace() takes 5 arguments"));
        }
        let s = Self::strings(args, 1, "label_replace")?;
        let (dst, repl, src, re) = (&s[0], &s[1], &s[2], &s[3]);
        let regex = regex::Regex::new(&format!("^(?:{re})$")).map_err(|_| {
            EvalError::exec(format!(
                "invalid regular expression in label_replace(): {re}"
            ))
        })?;
        if !strata_shared::validate::is_label_name(dst) {
            return Err(EvalError::exec(format!(
                "invalid destination label name in label_replace(): {dst}"
            )));
        }
        let v = self.vector_arg(args[0], grid, "label_replace()").await?;
        let out = v
            .into_iter()
            .map(|mut series| {
                let value = series.labels.get(src).cloned().unwrap_or_default();
                if let Some(caps) = regex.captures(&value) {
                    let mut res = String::new();
                    caps.expand(repl, &mut res);
                    if res.is_empty() {
                        series.labels.remove(dst);
                    } else {
                        series.labels.insert(dst.clone(), res);
                    }
                }
                series
            })
            .collect();
        Ok(Value::Vector(merge_same(out)?))
    }

    async fn label_join(&self, args: &[&Expr], grid: &Grid) -> Result<Value, EvalError> {
        if args.len() < 3 {
            return Err(EvalError::bad("label_join() takes at least 3 arguments"));
        }
        let s = Self::strings(args, 1, "label_join")?;
        let (dst, sep, srcs) = (&s[0], &s[1], &s[2..]);
        if let Some(bad) = srcs
            .iter()
            .find(|l| !strata_shared::validate::is_label_name(l))
        {
            return Err(EvalError::exec(format!(
                "invalid source label name in label_join(): {bad}"
            )));
        }
        if !strata_shared::validate::is_label_name(dst) {
            return Err(EvalError::exec(format!(
                "invalid destination label name in label_join(): {dst}"
            )));
        }
        let v = self.vector_arg(args[0], grid, "label_join()").await?;
        let out = v
            .into_iter()
            .map(|mut series| {
                let joined: Vec<&str> = srcs
                    .iter()
                    .map(|l| series.labels.get(l).map_or("", String::as_str))
                    .collect();
                let joined = joined.join(sep);
                if joined.is_empty() {
                    series.labels.remove(dst);
                } else {
                    series.labels.insert(dst.clone(), joined);
                }
                series
            })
            .collect();
        Ok(Value::Vector(merge_same(out)?))
    }
}

/// The labels `absent(x{…})` reports: those an equality matcher names once (not the name).
pub(super) fn absent_labels(matchers: &[promql_parser::label::Matcher]) -> Labels {
    use promql_parser::label::MatchOp;
    let mut out = Labels::new();
    let mut seen = std::collections::HashSet::new();
    for m in matchers {
        if m.name == NAME {
            continue;
        }
        let first = seen.insert(m.name.clone());
        if matches!(m.op, MatchOp::Equal) && first {
            out.insert(m.name.clone(), m.value.clone());
        } else {
            out.remove(&m.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_a_unix_time() {
        // 2024-02-29T13:45:00Z, a Thursday.
        let t = 1_709_214_300;
        assert_eq!(date("year").unwrap()(t), 2024.0);
        assert_eq!(date("month").unwrap()(t), 2.0);
        assert_eq!(date("day_of_month").unwrap()(t), 29.0);
        assert_eq!(date("days_in_month").unwrap()(t), 29.0);
        assert_eq!(date("day_of_week").unwrap()(t), 4.0);
        assert_eq!(date("day_of_year").unwrap()(t), 60.0);
        assert_eq!(date("hour").unwrap()(t), 13.0);
        assert_eq!(date("minute").unwrap()(t), 45.0);
        assert_eq!(
            date("days_in_month").unwrap()(1_703_980_800),
            31.0,
            "December"
        );
    }

    #[test]
    fn sgn_and_angles() {
        let sgn = math("sgn").unwrap();
        assert_eq!((sgn(-3.0), sgn(0.0), sgn(2.0)), (-1.0, 0.0, 1.0));
        assert!((math("deg").unwrap()(std::f64::consts::PI) - 180.0).abs() < 1e-12);
    }
}
