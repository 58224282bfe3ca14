//! PromQL fuzzing of the Prometheus endpoints: thousands of random, mutated and hostile queries
//! and parameters, deterministic by seed. Every answer must be a Prometheus-shaped success or a
//! 4xx saying what is wrong — never a 5xx, a hang or a dead server.

use crate::common;

use std::time::{Duration, Instant};

use common::{Fixture, H};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NAMES: &[&str] = &[
    "http_request_duration_ms",
    "http_request_duration_ms_count",
    "http_request_duration_ms_sum",
    "db_query_duration_ms_max",
    "queue_depth_avg",
    "nope_count",
    "x",
];
const FUNCS: &[&str] = &[
    "rate",
    "increase",
    "sum_over_time",
    "avg_over_time",
    "max_over_time",
    "count_over_time",
    "abs",
    "round",
    "sqrt",
    "ln",
    "scalar",
    "vector",
    "time",
    "histogram_quantile",
    "label_replace",
    "absent",
    "sort",
    "deriv",
    "clamp_min",
];
const AGGS: &[&str] = &[
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "group",
];
const OPS: &[&str] = &[
    "+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless", "> bool",
];
const VALUES: &[&str] = &[
    "api-gateway",
    "",
    "a\\\"b",
    "\\\\",
    "' OR 1=1 --",
    "é∂ƒ",
    "(a+)+$",
    ".*",
    "[",
    "\\x00",
    "eu-west-1",
];

fn selector(rng: &mut ChaCha8Rng) -> String {
    let name = *NAMES.choose(rng).unwrap();
    let n = rng.random_range(0..3);
    let matchers: Vec<String> = (0..n)
        .map(|_| {
            let label = *[
                "source",
                "region",
                "quantile",
                "__name__",
                "instance",
                "weird_label",
            ]
            .choose(rng)
            .unwrap();
            let op = *["=", "!=", "=~", "!~"].choose(rng).unwrap();
            format!("{label}{op}\"{}\"", VALUES.choose(rng).unwrap())
        })
        .collect();
    if matchers.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", matchers.join(","))
    }
}

fn expr(rng: &mut ChaCha8Rng, depth: u32) -> String {
    if depth > 3 {
        return selector(rng);
    }
    match rng.random_range(0..9) {
        0 => selector(rng),
        1 => format!("{}", [0.0, -1.5, 1e308, f64::NAN, 3.0].choose(rng).unwrap()),
        2 => {
            let range = *["5m", "1m", "0s", "30s", "1y", "1h30m", "5m:1m"]
                .choose(rng)
                .unwrap();
            format!("{}({}[{range}])", FUNCS.choose(rng).unwrap(), selector(rng))
        }
        3 => format!("{}({})", FUNCS.choose(rng).unwrap(), expr(rng, depth + 1)),
        4 => {
            let agg = *AGGS.choose(rng).unwrap();
            let param = if matches!(agg, "topk" | "bottomk" | "quantile") {
                "2, "
            } else {
                ""
            };
            let grouping = *[
                "",
                " by (source)",
                " without (region)",
                " by ()",
                " by (__name__)",
            ]
            .choose(rng)
            .unwrap();
            format!("{agg}{grouping}({param}{})", expr(rng, depth + 1))
        }
        5 => format!(
            "{} {} {}",
            expr(rng, depth + 1),
            OPS.choose(rng).unwrap(),
            expr(rng, depth + 1)
        ),
        6 => format!("-({})", expr(rng, depth + 1)),
        7 => format!("{} offset 5m", selector(rng)),
        _ => format!("({})", expr(rng, depth + 1)),
    }
}

/// Cuts, duplicates or inserts characters.
fn mutate(rng: &mut ChaCha8Rng, s: String) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    match rng.random_range(0..4) {
        0 if !chars.is_empty() => {
            let at = rng.random_range(0..chars.len());
            chars.truncate(at);
        }
        1 if !chars.is_empty() => {
            let at = rng.random_range(0..chars.len());
            let c = *[
                '(', ')', '{', '}', '[', ']', '"', '\\', ',', '=', '~', '\0', '😀',
            ]
            .choose(rng)
            .unwrap();
            chars.insert(at, c);
        }
        _ => {}
    }
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn random_queries_never_get_a_5xx() {
    // Runs a whole pipeline or loads both cores: never beside another such test.
    let _heavy = strata_testkit::heavy().await;
    let fx = Fixture::new("fuzz", 2000, &[0]).await;
    let server = fx.serve(&[("STRATA__SERVING__QUERY_TIMEOUT", "10s")]).await;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let (s0, e0) = (fx.h0 / 1000, (fx.h0 + 4 * H) / 1000);
    let started = Instant::now();
    let mut outcomes = std::collections::BTreeMap::new();
    for i in 0..600 {
        let e = expr(&mut rng, 0);
        let q = if i % 3 == 0 { mutate(&mut rng, e) } else { e };
        let step = *["60", "0", "-5", "1h", "abc", "0.001", "3600", "NaN"]
            .choose(&mut rng)
            .unwrap();
        let start = if rng.random_bool(0.9) {
            s0.to_string()
        } else {
            "x".into()
        };
        let end = if rng.random_bool(0.9) {
            e0.to_string()
        } else {
            (s0 - 100).to_string()
        };
        let (path, params): (&str, Vec<(&str, &str)>) = if i % 4 == 0 {
            ("/api/v1/query", vec![("query", &q), ("time", &end)])
        } else {
            (
                "/api/v1/query_range",
                vec![
                    ("query", &q),
                    ("start", &start),
                    ("end", &end),
                    ("step", step),
                ],
            )
        };
        let t = Instant::now();
        let (status, body) = if i % 2 == 0 {
            server.get(path, &params).await
        } else {
            server.post_form(path, &params).await
        };
        assert!(
            status == 200 || (400..500).contains(&status),
            "{path} {params:?} → {status}: {body}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{q:?} took {:?}",
            t.elapsed()
        );
        if status != 200 {
            assert_eq!(body["status"], "error", "{q:?}: {body}");
            assert!(!body["error"].as_str().unwrap_or("").is_empty());
        } else {
            assert_eq!(body["status"], "success");
        }
        *outcomes.entry(status).or_insert(0) += 1;
    }
    eprintln!(
        "600 fuzzed queries in {:?}: {outcomes:?}",
        started.elapsed()
    );
    assert!(
        outcomes.get(&200).copied().unwrap_or(0) > 50,
        "some must succeed: {outcomes:?}"
    );
    let (status, _) = server.get("/api/v1/query", &[("query", "1")]).await;
    assert_eq!(status, 200, "still alive");
}
