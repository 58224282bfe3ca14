//! Recompute equals the generator's ground truth exactly — count, sum, min, max and the exact
//! quantiles, per (series, minute) and per (series, hour), with duplicates removed and late events
//! included — on a Delta archive in a local folder (no servers needed).

use crate::common;

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use strata_batch::recompute::{recompute, Tier};
use strata_shared::sketch::Sketch;
use strata_shared::stats::QUANTILES;
use strata_shared::Config;
use strata_testkit::gen::truth::{hour_start, Truth};
use strata_testkit::gen::{Format, Spec};

async fn read_tier(
    cfg: &Config,
    tier: Tier,
) -> HashMap<(u64, i64), (i64, f64, f64, f64, [f64; 4])> {
    let batches = common::query_tier(
        cfg,
        tier,
        "SELECT series_id, start_ms, count, sum, min, max, p50, p90, p95, p99 FROM r",
    )
    .await;
    let mut out = HashMap::new();
    for b in batches {
        let i64s = |i: usize| cast(b.column(i), &DataType::Int64).unwrap();
        let f64s = |i: usize| cast(b.column(i), &DataType::Float64).unwrap();
        let (sid, start, count) = (i64s(0), i64s(1), i64s(2));
        let f: Vec<_> = (3..10).map(f64s).collect();
        for r in 0..b.num_rows() {
            let v = |j: usize| f[j].as_primitive::<Float64Type>().value(r);
            let key = (
                sid.as_primitive::<Int64Type>().value(r) as u64,
                start.as_primitive::<Int64Type>().value(r),
            );
            assert!(!count.is_null(r));
            out.insert(
                key,
                (
                    count.as_primitive::<Int64Type>().value(r),
                    v(0),
                    v(1),
                    v(2),
                    [v(3), v(4), v(5), v(6)],
                ),
            );
        }
    }
    out
}

/// (series, start, count, sketch) of every rollup_1m row.
async fn read_sketches(cfg: &Config) -> Vec<(u64, i64, u64, Sketch)> {
    let batches = common::query_tier(
        cfg,
        Tier::Minute,
        "SELECT series_id, start_ms, count, sketch_keys, sketch_counts FROM r",
    )
    .await;
    let mut out = Vec::new();
    for b in batches {
        let i64s = |i: usize| cast(b.column(i), &DataType::Int64).unwrap();
        let (sid, start, count) = (i64s(0), i64s(1), i64s(2));
        let (sid, start, count) = (
            sid.as_primitive::<Int64Type>(),
            start.as_primitive::<Int64Type>(),
            count.as_primitive::<Int64Type>(),
        );
        let (keys, counts) = (b.column(3).as_list::<i32>(), b.column(4).as_list::<i32>());
        for r in 0..b.num_rows() {
            let k = cast(&keys.value(r), &DataType::Int32).unwrap();
            let c = cast(&counts.value(r), &DataType::Int64).unwrap();
            let mut sketch = Sketch::new();
            sketch.merge_buckets(
                k.as_primitive::<Int32Type>().values(),
                c.as_primitive::<Int64Type>().values(),
            );
            out.push((
                sid.value(r) as u64,
                start.value(r),
                count.value(r) as u64,
                sketch,
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn recompute_equals_the_ground_truth_exactly() {
    let (_dir, cfg) = common::local_lake();
    let base = 1_764_000_000_000;
    let spec = Spec {
        base_time_ms: base,
        spread_ms: 2 * 3_600_000,
        format: Format::Mixed,
        duplicate_ratio: 0.05,
        late_ratio: 0.03,
        malformed_ratio: 0.02,
        series: 200,
        seed: 77,
        ..Spec::default()
    };
    let mut truth = Truth::new(Some(spec.clone()));
    let events = common::archived(spec, 30_000, 3, |m| truth.record(m));
    common::archive_all(&cfg, &events, 10_000).await;

    let rows = truth.rows();
    let from = rows.iter().map(|r| hour_start(r.start_ms)).min().unwrap();
    let to = rows.iter().map(|r| hour_start(r.start_ms)).max().unwrap() + 3_600_000;
    let report = recompute(&cfg, from, to).await.unwrap();
    assert!(report.rows[0] > 1000 && report.rows[1] > 100, "{report:?}");

    for (tier, name) in [(Tier::Minute, "1m"), (Tier::Hour, "1h")] {
        let got = read_tier(&cfg, tier).await;
        let want: Vec<_> = rows.iter().filter(|r| r.tier == name).collect();
        assert_eq!(got.len(), want.len(), "{name}: number of buckets");
        for w in want {
            let (count, sum, min, max, q) = got
                .get(&(w.series_id, w.start_ms))
                .unwrap_or_else(|| panic!("{name}: missing {}", w.start_ms));
            let s = &w.stats;
            assert_eq!(*count as u64, s.count, "{name} count");
            assert_eq!(*sum, s.sum, "{name} sum (values are exactly summable)");
            assert_eq!((*min, *max), (s.min, s.max), "{name} min/max");
            for (g, e) in q.iter().zip(s.quantiles) {
                assert_eq!(
                    *g, e,
                    "{name}: quantiles are the exact linear interpolation, bit for bit"
                );
            }
        }
    }

    // The stored sketches: minute sketches merged per hour answer the hour's quantiles within
    // the sketch's accuracy, and each holds exactly its bucket's count.
    let hours = read_tier(&cfg, Tier::Hour).await;
    let mut merged: HashMap<(u64, i64), Sketch> = HashMap::new();
    for (series, start, count, sketch) in read_sketches(&cfg).await {
        assert_eq!(sketch.count(), count, "a sketch counts its bucket's values");
        merged
            .entry((series, hour_start(start)))
            .or_default()
            .merge(&sketch);
    }
    assert_eq!(merged.len(), hours.len());
    for (key, sketch) in &merged {
        let (count, _, min, max, exact) = &hours[key];
        assert_eq!(sketch.count(), *count as u64);
        for (q, e) in QUANTILES.iter().zip(exact) {
            let est = sketch.quantile(*q, Some(*min), Some(*max)).unwrap();
            assert!(
                (est - e).abs() <= 0.0101 * e.abs().max(*max - *min),
                "q{q} of {key:?}: sketch {est}, exact {e}"
            );
        }
    }

    // Recomputing the same range again replaces it: nothing doubles.
    recompute(&cfg, from, to).await.unwrap();
    let again = read_tier(&cfg, Tier::Hour).await;
    let total: i64 = again.values().map(|v| v.0).sum();
    assert_eq!(total as u64, truth.summary().valid_unique);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_overlapping_recomputes_at_once_end_consistent() {
    let (_dir, cfg) = common::local_lake();
    let base = 1_764_000_000_000;
    let spec = Spec {
        base_time_ms: base,
        spread_ms: 3 * 3_600_000,
        duplicate_ratio: 0.05,
        seed: 3,
        ..Spec::default()
    };
    let mut truth = Truth::new(Some(spec.clone()));
    let events = common::archived(spec, 20_000, 1, |m| truth.record(m));
    common::archive_all(&cfg, &events, events.len()).await;
    let from = hour_start(base - 3 * 3_600_000);
    let to = hour_start(base) + 3_600_000;
    // A first full recompute, then two overlapping ones at the same time (one range inside the other).
    recompute(&cfg, from, to).await.unwrap();
    let (a, b) = tokio::join!(
        recompute(&cfg, from, to),
        recompute(&cfg, from + 3_600_000, to - 3_600_000)
    );
    a.unwrap();
    b.unwrap();
    for (tier, name) in [(Tier::Minute, "1m"), (Tier::Hour, "1h")] {
        let got = read_tier(&cfg, tier).await;
        let rows = truth.rows();
        let want: Vec<_> = rows.iter().filter(|r| r.tier == name).collect();
        assert_eq!(got.len(), want.len(), "{name}: no bucket lost or doubled");
        for w in want {
            let g = &got[&(w.series_id, w.start_ms)];
            assert_eq!((g.0 as u64, g.1), (w.stats.count, w.stats.sum), "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_event_marks_its_hour_dirty_until_it_is_recomputed() {
    use strata_batch::coverage::status;
    let (_dir, cfg) = common::local_lake();
    let base = 1_764_000_000_000;
    let spec = Spec {
        base_time_ms: base,
        seed: 4,
        ..Spec::default()
    };
    let events = common::archived(spec, 2000, 1, |_| {});
    let mut archive = common::archive_all(&cfg, &events, events.len()).await;
    let (from, to) = (hour_start(base) - 3_600_000, hour_start(base) + 3_600_000);
    let (_, dirty, end) = status(&cfg).await.unwrap();
    assert!(
        !dirty.is_empty() && end.is_none(),
        "nothing recomputed yet: archived hours are dirty"
    );

    recompute(&cfg, from, to).await.unwrap();
    let (covered, dirty, end) = status(&cfg).await.unwrap();
    assert!(dirty.is_empty(), "{dirty:?}");
    assert_eq!(end, Some(to));
    assert_eq!(covered.len(), 2);

    // A late event for the earlier hour arrives.
    let before = read_tier(&cfg, Tier::Hour).await;
    let mut late = events[0].clone();
    late.event.event_id = "late-1".into();
    late.event.timestamp_ms = from + 1;
    late.offset = 2000;
    let late_series = late.event.series_id();
    archive
        .append(&[late], &BTreeMap::from([(0, 2000)]))
        .await
        .unwrap();
    let (_, dirty, _) = status(&cfg).await.unwrap();
    assert_eq!(dirty.into_iter().collect::<Vec<_>>(), vec![from]);

    recompute(&cfg, from, from + 3_600_000).await.unwrap();
    let (_, dirty, _) = status(&cfg).await.unwrap();
    assert!(dirty.is_empty());
    let after = read_tier(&cfg, Tier::Hour).await;
    let key = (late_series, from);
    assert_eq!(
        after[&key].0,
        before.get(&key).map_or(0, |v| v.0) + 1,
        "the late event is counted once"
    );
}
