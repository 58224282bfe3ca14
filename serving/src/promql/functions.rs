//! Function calls, point by point: range functions (`rate`, `increase`, `*_over_time`) over
//! per-minute samples, math functions, `time`, `vector`, `scalar`.

use promql_parser::parser::{Call, Expr};

use super::{EvalError, Evaluator, Series, Value};
use crate::series::{Labels, Stat};

impl Evaluator<'_> {
    pub(super) async fn call(&mut self, c: &Call) -> Result<Value, EvalError> {
        let name = c.func.name;
        let n = self.steps.len();
        let arg = |i: usize| c.args.args.get(i).map(|b| b.as_ref());
        match name {
            "rate" | "increase" | "sum_over_time" | "avg_over_time" | "min_over_time"
            | "max_over_time" | "count_over_time" => {
                if let Some(Expr::Subquery(_)) = arg(0) {
                    return Err(EvalError::BadData(format!(
                        "{name}(): subqueries (expr[range:step]) are not supported"
                    )));
                }
                let Some(Expr::MatrixSelector(m)) = arg(0) else {
                    return Err(EvalError::BadData(format!(
                        "{name}() expects a range vector selector such as name[5m]"
                    )));
                };
                let minutes = self.select_range(m).await?;
                let secs = minutes.range_ms as f64 / 1000.0;
                let mut out = Vec::new();
                for (mut labels, stat, samples) in minutes.series {
                    if matches!(name, "rate" | "increase") && !matches!(stat, Stat::Count | Stat::Sum)
                    {
                        return Err(EvalError::BadData(format!(
                            "{name}() applies to _count and _sum series (per-window totals); \
                             {} is a {stat:?} series",
                            labels.get("__name__").map_or("", String::as_str)
                        )));
                    }
                    labels.remove("__name__");
                    let mut values = Vec::with_capacity(n);
                    let mut lo = 0;
                    for &t in &self.steps {
                        while lo < samples.len() && samples[lo].0 <= t - minutes.range_ms {
                            lo += 1;
                        }
                        let window: Vec<f64> = samples[lo..]
                            .iter()
                            .take_while(|(e, _)| *e <= t)
                            .map(|(_, v)| *v)
                            .collect();
                        values.push(if window.is_empty() {
                            None
                        } else {
                            let total: f64 = window.iter().sum();
                            Some(match name {
                                "rate" => total / secs,
                                "increase" | "sum_over_time" => total,
                                "avg_over_time" => total / window.len() as f64,
                                "min_over_time" => window.iter().copied().fold(f64::INFINITY, f64::min),
                                "max_over_time" => {
                                    window.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                                }
                                _ => window.len() as f64,
                            })
                        });
                    }
                    out.push(Series { labels, values });
                }
                Ok(Value::Vector(out))
            }
            "abs" | "ceil" | "floor" | "sqrt" | "exp" | "ln" | "log2" | "log10" | "round" => {
                let f = |x: f64| match name {
                    "abs" => x.abs(),
                    "ceil" => x.ceil(),
                    "floor" => x.floor(),
                    "sqrt" => x.sqrt(),
                    "exp" => x.exp(),
                    "ln" => x.ln(),
                    "log2" => x.log2(),
                    "log10" => x.log10(),
                    _ => x.round(),
                };
                if c.args.args.len() > 1 {
                    return Err(EvalError::BadData(format!(
                        "{name}() with more than one argument is not supported"
                    )));
                }
                let Some(e) = arg(0) else {
                    return Err(EvalError::BadData(format!("{name}() needs an argument")));
                };
                match self.eval(e).await? {
                    Value::Vector(vs) => Ok(Value::Vector(
                        vs.into_iter()
                            .map(|mut s| {
                                s.labels.remove("__name__");
                                s.values = s.values.into_iter().map(|v| v.map(f)).collect();
                                s
                            })
                            .collect(),
                    )),
                    _ => Err(EvalError::BadData(format!(
                        "{name}() expects an instant vector"
                    ))),
                }
            }
            "time" => Ok(Value::Scalar(
                self.steps.iter().map(|t| *t as f64 / 1000.0).collect(),
            )),
            "vector" => match arg(0) {
                Some(e) => match self.eval(e).await? {
                    Value::Scalar(s) => Ok(Value::Vector(vec![Series {
                        labels: Labels::new(),
                        values: s.into_iter().map(Some).collect(),
                    }])),
                    _ => Err(EvalError::BadData("vector() expects a scalar".into())),
                },
                None => Err(EvalError::BadData("vector() needs an argument".into())),
            },
            "scalar" => match arg(0) {
                Some(e) => match self.eval(e).await? {
                    Value::Vector(vs) => Ok(Value::Scalar(
                        (0..n)
                            .map(|t| {
                                let present: Vec<f64> =
                                    vs.iter().filter_map(|s| s.values[t]).collect();
                                if present.len() == 1 {
                                    present[0]
                                } else {
                                    f64::NAN
                                }
                            })
                            .collect(),
                    )),
                    _ => Err(EvalError::BadData("scalar() expects an instant vector".into())),
                },
                None => Err(EvalError::BadData("scalar() needs an argument".into())),
            },
            other => Err(EvalError::BadData(format!(
                "function {other}() is not supported (supported: rate, increase, sum/avg/min/max/count_over_time, abs, ceil, floor, round, sqrt, exp, ln, log2, log10, time, vector, scalar)"
            ))),
        }
    }
}
