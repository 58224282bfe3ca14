//! Merged answers against the ground truth: hours 0 and 2 recomputed by the batch layer, hour 1
//! a hole (a failed recompute) and hour 3 after the boundary, both from ClickHouse. Counts, sums,
//! minima and maxima are exact everywhere; quantiles are exact where batch-covered at a stored
//! tier's step, and within the sketch or t-digest error elsewhere.

use crate::common;

use common::{series_id, Fixture, H};

const METRIC: &str = "http_request_duration_ms";

#[tokio::test(flavor = "multi_thread")]
async fn merged_answers_equal_the_ground_truth_across_the_boundary() {
    let fx = Fixture::new("merge", 8000, &[0, 2]).await;
    let server = fx.serve(&[]).await;
    let (h0, end) = (fx.h0, fx.h0 + 4 * H);
    let truth_1m = fx.truth("1m");
    let truth_1h = fx.truth("1h");
    let batch_hour = |t: i64| {
        let h = (t - 60_000 - h0).div_euclid(H);
        h == 0 || h == 2
    };

    // Every statistic per minute, across all four hours.
    let want_points = fx
        .rows
        .iter()
        .filter(|r| r.tier == "1m" && r.labels.metric_name == METRIC)
        .count();
    for stat in ["count", "sum", "min", "max", "avg"] {
        let (series, _) = server
            .range(&format!("{METRIC}_{stat}"), h0 + 60_000, end, 60)
            .await;
        let mut points = 0;
        for (labels, values) in &series {
            assert_eq!(labels["__name__"], format!("{METRIC}_{stat}"));
            let id = series_id(METRIC, labels);
            for (t, v) in values {
                let w = &truth_1m[&(id, t - 60_000)].stats;
                let exact = match stat {
                    "count" => w.count as f64,
                    "sum" => w.sum,
                    "min" => w.min,
                    "max" => w.max,
                    _ => w.sum / w.count as f64,
                };
                assert_eq!(*v, exact, "{stat} of {id} at {t}");
                points += 1;
            }
        }
        assert_eq!(points, want_points, "{stat}: every minute with data, once");
    }

    // Quantiles per minute: exact from the batch views, close from ClickHouse's t-digest.
    for (qi, q) in ["0.5", "0.9", "0.95", "0.99"].iter().enumerate() {
        let (series, _) = server
            .range(
                &format!("{METRIC}{{quantile=\"{q}\"}}"),
                h0 + 60_000,
                end,
                60,
            )
            .await;
        assert!(!series.is_empty());
        for (labels, values) in &series {
            assert_eq!(labels["quantile"], *q);
            let id = series_id(METRIC, labels);
            for (t, v) in values {
                let w = &truth_1m[&(id, t - 60_000)].stats;
                if batch_hour(*t) {
                    assert_eq!(*v, w.quantiles[qi], "exact p{q} of {id} at {t}");
                } else {
                    let qf: f64 = q.parse().unwrap();
                    assert!(
                        fx.near_rank(id, t - 60_000, qf, *v),
                        "speed p{q} of {id} at {t}: {v}, exact {} of {:?}",
                        w.quantiles[qi],
                        fx.values[&(id, t - 60_000)]
                    );
                }
            }
        }
    }

    // Hourly steps: the hour tier answers covered hours exactly; every hour has its count.
    let (series, _) = server
        .range(&format!("{METRIC}{{quantile=\"0.99\"}}"), h0 + H, end, 3600)
        .await;
    let mut checked = 0;
    for (labels, values) in &series {
        let id = series_id(METRIC, labels);
        for (t, v) in values {
            let hour = t - H;
            if hour == h0 || hour == h0 + 2 * H {
                assert_eq!(
                    *v,
                    truth_1h[&(id, hour)].stats.quantiles[3],
                    "hour tier p99"
                );
                checked += 1;
            }
        }
    }
    let want_checked = fx
        .rows
        .iter()
        .filter(|r| {
            r.tier == "1h"
                && r.labels.metric_name == METRIC
                && (r.start_ms == h0 || r.start_ms == h0 + 2 * H)
        })
        .count();
    assert!(want_checked > 0);
    assert_eq!(checked, want_checked, "every covered hour of every series");
    let (series, _) = server
        .range(&format!("sum({METRIC}_count)"), h0 + H, end, 3600)
        .await;
    let per_hour: Vec<(i64, f64)> = series[0].1.clone();
    assert_eq!(per_hour.len(), 4, "a point for each of the four hours");
    for (t, v) in per_hour {
        let want: u64 = fx
            .rows
            .iter()
            .filter(|r| r.tier == "1h" && r.labels.metric_name == METRIC && r.start_ms == t - H)
            .map(|r| r.stats.count)
            .sum();
        assert_eq!(
            v as u64, want,
            "events of hour {t} (the hole is filled from ClickHouse)"
        );
        assert!(v > 0.0);
    }

    // Five-minute steps re-aggregate minutes: sums summed, quantiles merged.
    let (series, _) = server
        .range(&format!("{METRIC}_count"), h0 + 300_000, end, 300)
        .await;
    let mut total = 0u64;
    for (labels, values) in &series {
        let id = series_id(METRIC, labels);
        for (t, v) in values {
            let want: u64 = (1..=5)
                .filter_map(|k| truth_1m.get(&(id, t - k * 60_000)))
                .map(|r| r.stats.count)
                .sum();
            assert_eq!(*v as u64, want);
            total += want;
        }
    }
    let every: u64 = fx
        .rows
        .iter()
        .filter(|r| r.tier == "1m" && r.labels.metric_name == METRIC)
        .map(|r| r.stats.count)
        .sum();
    assert_eq!(total, every, "five-minute points hold every event once");

    // The JSON API: provenance, boundary, grouped statistics.
    let (status, body) = server
        .get(
            "/api/v1/timeseries",
            &[
                ("metric", METRIC),
                ("stat", "count,p99"),
                ("start", &((h0 + H) / 1000).to_string()),
                ("end", &(end / 1000).to_string()),
                ("step", "3600"),
                ("group_by", "source"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["boundary_ms"], serde_json::json!(h0 + 3 * H));
    let prov: Vec<(i64, i64, String)> = data["provenance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["from_ms"].as_i64().unwrap(),
                p["to_ms"].as_i64().unwrap(),
                p["layer"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        prov,
        vec![
            (h0, h0 + H, "batch".into()),
            (h0 + H, h0 + 2 * H, "speed".into()),
            (h0 + 2 * H, h0 + 3 * H, "batch".into()),
            (h0 + 3 * H, h0 + 4 * H, "speed".into()),
        ]
    );
    let mut total = 0.0;
    for g in data["series"].as_array().unwrap() {
        for p in g["points"].as_array().unwrap() {
            total += p[1].as_f64().unwrap();
        }
    }
    let want: u64 = fx
        .rows
        .iter()
        .filter(|r| r.tier == "1h" && r.labels.metric_name == METRIC)
        .map(|r| r.stats.count)
        .sum();
    assert_eq!(total as u64, want, "grouped counts add up to every event");
}
