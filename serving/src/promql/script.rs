//! The language's tests as scripts (`testdata/*.test`), in the format of Prometheus'
//! `promqltest`: load series, evaluate at times, expect samples. Run on a [`MemorySource`] with
//! Strata's window semantics (an instant query's window is one minute).
//!
//! ```text
//! load 1m                               # samples at 0, 1m, 2m, … (plain samples)
//!   http_requests{job="api"} 0+10x10    # 0 10 20 … 100; also `1 2 _ 4`, `3x4`, `NaN`, `Inf`
//! load_rollups 1m                       # names ending _count/_sum/_min/_max are those statistics
//!   lat_count{job="api"} 1 2 3
//! eval instant at 5m sum(http_requests)
//!   {} 50
//! eval_ordered instant at 5m sort(…)    # the order must match too
//! eval_fail instant at 5m …             # must be refused
//! eval range from 0 to 10m step 1m rate(http_requests[5m])
//!   {job="api"} _ 0.1666… …             # one value per point, `_` for none
//! clear
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;

use super::{parse, EvalError, Evaluator, Limits, MemorySource, Value};
use crate::series::{Labels, Stat};

const MINUTE_MS: i64 = 60_000;

/// A value of a series line: a number or a gap.
fn expand_values(words: &[&str]) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for w in words {
        if *w == "_" || *w == "stale" {
            out.push(None);
            continue;
        }
        if let Some((start, times)) = w.split_once('x') {
            let times: usize = times.parse().map_err(|_| format!("bad repeat in {w}"))?;
            if start == "_" {
                out.extend(std::iter::repeat_n(None, times));
                continue;
            }
            // `a+bxn`, `a-bxn` or `axn`: n + 1 values from a, stepping by ±b.
            let (a, step) = match start[1..].find(['+', '-']).map(|i| i + 1) {
                Some(i) => {
                    let step: f64 = start[i..].parse().map_err(|_| format!("bad step in {w}"))?;
                    (&start[..i], step)
                }
                None => (start, 0.0),
            };
            let a = number(a)?;
            for k in 0..=times {
                out.push(Some(a + step * k as f64));
            }
            continue;
        }
        out.push(Some(number(w)?));
    }
    Ok(out)
}

fn number(w: &str) -> Result<f64, String> {
    match w {
        "NaN" => Ok(f64::NAN),
        "Inf" | "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => w.parse().map_err(|_| format!("not a number: {w}")),
    }
}

fn duration(s: &str) -> Result<i64, String> {
    if s.trim_end_matches(char::is_alphabetic)
        .chars()
        .all(|c| c == '0')
    {
        return Ok(0);
    }
    promql_parser::util::duration::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| format!("bad duration {s}: {e}"))
}

/// `name{a="b"}` or `{a="b"}` as labels.
fn labels_of(desc: &str) -> Result<Labels, String> {
    if desc.trim() == "{}" {
        return Ok(Labels::new());
    }
    let expr = promql_parser::parser::parse(desc).map_err(|e| format!("bad series {desc}: {e}"))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("not a series: {desc}"));
    };
    let mut out = Labels::new();
    if let Some(n) = vs.name {
        out.insert("__name__".into(), n);
    }
    for m in vs.matchers.matchers {
        if !matches!(m.op, MatchOp::Equal) {
            return Err(format!("only = in series descriptions: {desc}"));
        }
        out.insert(m.name, m.value);
    }
    Ok(out)
}

/// Splits a series line into its description (which may hold spaces inside braces) and values.
fn split_series(line: &str) -> Result<(Labels, Vec<&str>), String> {
    let line = line.trim();
    let end = match line.find('}') {
        Some(i) => i + 1,
        None => line.find(char::is_whitespace).unwrap_or(line.len()),
    };
    let (desc, rest) = line.split_at(end);
    Ok((labels_of(desc)?, rest.split_whitespace().collect()))
}

fn stat_of(labels: &Labels) -> Option<Stat> {
    let name = labels.get("__name__")?;
    [Stat::Count, Stat::Sum, Stat::Min, Stat::Max]
        .into_iter()
        .find(|s| name.ends_with(s.suffix()))
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    // As promqltest compares: within one part in a million.
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1e-300)
}

enum Kind {
    Plain,
    Ordered,
    Fail,
}

/// `line` after its first `n` words.
fn rest(line: &str, n: usize) -> String {
    let mut s = line.trim_start();
    for _ in 0..n {
        s = s.trim_start();
        s = &s[s.find(char::is_whitespace).unwrap_or(s.len())..];
    }
    s.trim().to_owned()
}

/// One `eval` and what it expects.
struct Eval {
    line: usize,
    kind: Kind,
    query: String,
    points: Vec<i64>,
    step: i64,
    expected: Vec<(Labels, Vec<Option<f64>>)>,
    scalar: Option<f64>,
}

/// Runs one script: how many evaluations it checked, and each that failed (by line); an error
/// for a script that cannot be read.
pub fn run_script(text: &str) -> Result<(usize, Vec<String>), String> {
    let mut failures = Vec::new();
    let mut source = MemorySource::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let mut evals = 0;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    while i < lines.len() {
        let line = lines[i].split(" #").next().unwrap_or("").trim_end();
        i += 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let at = i;
        match words[0] {
            "clear" => source.clear(),
            "load" | "load_rollups" => {
                let interval = duration(words.get(1).ok_or("load needs an interval")?)
                    .map_err(|e| format!("line {at}: {e}"))?;
                let rollups = words[0] == "load_rollups";
                while i < lines.len()
                    && lines[i].starts_with(char::is_whitespace)
                    && !lines[i].trim().is_empty()
                {
                    if lines[i].trim_start().starts_with('#') {
                        i += 1;
                        continue;
                    }
                    let (labels, vals) =
                        split_series(lines[i]).map_err(|e| format!("line {}: {e}", i + 1))?;
                    let values =
                        expand_values(&vals).map_err(|e| format!("line {}: {e}", i + 1))?;
                    let samples = values
                        .into_iter()
                        .enumerate()
                        .filter_map(|(k, v)| v.map(|v| (k as i64 * interval, v)))
                        .collect();
                    let stat = if rollups { stat_of(&labels) } else { None };
                    source.add(labels, stat, samples);
                    i += 1;
                }
            }
            "eval" | "eval_ordered" | "eval_fail" => {
                let kind = match words[0] {
                    "eval" => Kind::Plain,
                    "eval_ordered" => Kind::Ordered,
                    _ => Kind::Fail,
                };
                let (points, step, query) = match words.get(1) {
                    Some(&"instant") if words.get(2) == Some(&"at") => {
                        let t = duration(words[3]).map_err(|e| format!("line {at}: {e}"))?;
                        (vec![t], MINUTE_MS, rest(trimmed, 4))
                    }
                    Some(&"range") if words.get(2) == Some(&"from") => {
                        let p =
                            |k: usize| duration(words[k]).map_err(|e| format!("line {at}: {e}"));
                        let (from, to, step) = (p(3)?, p(5)?, p(7)?);
                        let points = (0..)
                            .map(|k| from + k * step)
                            .take_while(|t| *t <= to)
                            .collect();
                        (points, step, rest(trimmed, 8))
                    }
                    _ => {
                        return Err(format!(
                            "line {at}: eval instant at T / eval range from A to B step S"
                        ))
                    }
                };
                let mut e = Eval {
                    line: at,
                    kind,
                    query,
                    points,
                    step,
                    expected: Vec::new(),
                    scalar: None,
                };
                let mut skip = false;
                while i < lines.len()
                    && lines[i].starts_with(char::is_whitespace)
                    && !lines[i].trim().is_empty()
                {
                    let l = lines[i].trim();
                    i += 1;
                    if l.starts_with('#') {
                        continue;
                    }
                    // Prometheus 3's expectations: `expect fail [msg: …]`, `expect ordered`;
                    // annotations (info, warn) are not checked; string and range-vector answers
                    // are not compared here.
                    if let Some(what) = l.strip_prefix("expect ") {
                        match what.split_whitespace().next() {
                            Some("fail") => e.kind = Kind::Fail,
                            Some("ordered") => e.kind = Kind::Ordered,
                            Some("string" | "range") => skip = true,
                            _ => {}
                        }
                        continue;
                    }
                    if let (1, Ok(v)) = (l.split_whitespace().count(), number(l)) {
                        e.scalar = Some(v);
                        continue;
                    }
                    let (labels, vals) = split_series(l).map_err(|m| format!("line {i}: {m}"))?;
                    let values = expand_values(&vals).map_err(|m| format!("line {i}: {m}"))?;
                    e.expected.push((labels, values));
                }
                if !skip {
                    if let Err(f) = rt.block_on(check(&source, &e)) {
                        failures.push(f);
                    }
                    evals += 1;
                }
            }
            other => return Err(format!("line {at}: unknown command {other}")),
        }
    }
    Ok((evals, failures))
}

async fn check(source: &MemorySource, e: &Eval) -> Result<(), String> {
    let at = e.line;
    let limits = Limits {
        max_series: 10_000,
        max_samples: 10_000_000,
        max_span_ms: 400 * 86_400_000,
    };
    let outcome: Result<Value, EvalError> = match parse(&e.query) {
        Err(err) => Err(err),
        Ok(expr) => {
            let ev = Evaluator::new(source, limits, e.points.clone(), e.step);
            ev.eval(&expr).await
        }
    };
    if let Kind::Fail = e.kind {
        return match outcome {
            Err(_) => Ok(()),
            Ok(v) => Err(format!("line {at}: {} should fail, gave {v:?}", e.query)),
        };
    }
    let value = outcome.map_err(|err| format!("line {at}: {}: {err}", e.query))?;
    let got: Vec<(Labels, Vec<Option<f64>>)> = match value {
        Value::Scalar(s) => {
            if let Some(want) = e.scalar {
                return if close(s[0], want) {
                    Ok(())
                } else {
                    Err(format!("line {at}: {}: scalar {} ≠ {want}", e.query, s[0]))
                };
            }
            vec![(Labels::new(), s.into_iter().map(Some).collect())]
        }
        Value::Vector(v) => v.into_iter().map(|s| (s.labels, s.values)).collect(),
        Value::Matrix(m) => {
            return Err(format!(
                "line {at}: a range vector answer ({} series) cannot be checked here",
                m.len()
            ))
        }
        Value::String(s) => return Err(format!("line {at}: string {s:?}")),
    };
    let got: Vec<(Labels, Vec<Option<f64>>)> = got
        .into_iter()
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .collect();
    if let Kind::Ordered = e.kind {
        let order: Vec<&Labels> = got.iter().map(|(l, _)| l).collect();
        let want: Vec<&Labels> = e.expected.iter().map(|(l, _)| l).collect();
        if order != want {
            return Err(format!(
                "line {at}: {}: order {order:?}, expected {want:?}",
                e.query
            ));
        }
    }
    let got: BTreeMap<Labels, Vec<Option<f64>>> = got.into_iter().collect();
    // Values not written at the end of a line are points without a sample.
    let want: BTreeMap<Labels, Vec<Option<f64>>> = e
        .expected
        .iter()
        .map(|(l, v)| {
            let mut v = v.clone();
            v.resize(v.len().max(e.points.len()), None);
            (l.clone(), v)
        })
        .collect();
    for (labels, values) in &want {
        let Some(actual) = got.get(labels) else {
            return Err(format!(
                "line {at}: {}: missing {labels:?}; got {:?}",
                e.query,
                got.keys().collect::<Vec<_>>()
            ));
        };
        let same = actual.len() == values.len()
            && actual.iter().zip(values).all(|(a, b)| match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => close(*a, *b),
                _ => false,
            });
        if !same {
            return Err(format!(
                "line {at}: {}: {labels:?} = {actual:?}, expected {values:?}",
                e.query
            ));
        }
    }
    if let Some(extra) = got.keys().find(|l| !want.contains_key(*l)) {
        return Err(format!(
            "line {at}: {}: unexpected series {extra:?}",
            e.query
        ));
    }
    Ok(())
}

#[test]
fn value_notation_expands_as_promqltest_does() {
    assert_eq!(
        expand_values(&["0+10x3", "_", "1x2", "5-1x2", "_x2"]).unwrap(),
        vec![
            Some(0.0),
            Some(10.0),
            Some(20.0),
            Some(30.0),
            None,
            Some(1.0),
            Some(1.0),
            Some(1.0),
            Some(5.0),
            Some(4.0),
            Some(3.0),
            None,
            None
        ]
    );
    assert_eq!(
        expand_values(&["-2+4x1"]).unwrap(),
        vec![Some(-2.0), Some(2.0)]
    );
}

#[test]
fn every_script_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/promql/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the scripts are there");
    let mut failures = Vec::new();
    let mut total = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable");
        match run_script(&text) {
            Ok((n, failed)) => {
                total += n;
                let name = f
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                failures.extend(failed.into_iter().map(|e| format!("{name}: {e}")));
            }
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total >= 200, "{total} evaluations");
}
