//! Serving at scale, against the real servers: replicas that agree byte for byte and survive
//! `kill -9`, a results cache that a recompute invalidates exactly where it must, and the
//! query-path hazards — a refresh that fails keeps answering, the metrics of a query are fetched
//! at once, the list of metric names answers only the ranges it was read for.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Fixture, Series, Server, H};
use strata_batch::archive::schema::ArchivedEvent;
use strata_batch::archive::writer::Archive;
use strata_batch::recompute::recompute;
use strata_serving::results::{reach_ms, window_steps};
use strata_shared::event::MetricEvent;
use strata_testkit::{scrape, CuttableProxy};

const METRIC: &str = "http_request_duration_ms";

/// The raw body of a POST form.
async fn body(server: &Server, path: &str, params: &[(&str, &str)]) -> String {
    let r = server
        .http
        .post(server.url(path))
        .form(params)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path} {params:?}");
    r.text().await.unwrap()
}

/// Every kind of request a dashboard and a script send, over the fixture's four hours.
fn requests(fx: &Fixture) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let (s, e) = (
        (fx.h0 / 1000).to_string(),
        ((fx.h0 + 4 * H) / 1000).to_string(),
    );
    let mut out = Vec::new();
    for q in [
        format!("{METRIC}_count"),
        format!("sum by (source) (rate({METRIC}_count[5m]))"),
        format!("max by (source) ({METRIC}{{quantile=\"0.99\"}})"),
        format!("sum by (source) ({METRIC}_sum) / sum by (source) ({METRIC}_count)"),
        format!("topk(2, {METRIC}_max)"),
    ] {
        for step in ["60", "300", "3600"] {
            out.push((
                "/api/v1/query_range",
                vec![
                    ("query", q.clone()),
                    ("start", s.clone()),
                    ("end", e.clone()),
                    ("step", step.into()),
                ],
            ));
        }
        out.push((
            "/api/v1/query",
            vec![
                ("query", q.clone()),
                ("time", ((fx.h0 + 90 * 60_000) / 1000).to_string()),
            ],
        ));
    }
    let range = vec![("start", s.clone()), ("end", e.clone())];
    out.push(("/api/v1/labels", range.clone()));
    out.push(("/api/v1/label/__name__/values", range.clone()));
    out.push(("/api/v1/label/source/values", range.clone()));
    let mut series = range.clone();
    series.push(("match[]", format!("{{__name__=~\"{METRIC}_.*\"}}")));
    out.push(("/api/v1/series", series));
    out
}

async fn answers(server: &Server, reqs: &[(&str, Vec<(&str, String)>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, params) in reqs {
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Label values are GET only (as in Prometheus).
        let text = if path.contains("/label/") {
            let r = server
                .http
                .get(server.url(path))
                .query(&p)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            r.text().await.unwrap()
        } else {
            body(server, path, &p).await
        };
        out.push(text);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_started_apart_answer_byte_for_byte_alike_and_survive_kill_9() {
    // Hours 0 and 2 recomputed, 1 a hole, 3 after the boundary: every kind of merge.
    let fx = Fixture::new("replicas", 6000, &[0, 2]).await;
    let reqs = requests(&fx);
    let mut a = fx.serve(&[]).await;
    let first = answers(&a, &reqs).await;
    assert!(
        first.iter().any(|b| b.contains(METRIC)),
        "the answers hold data"
    );
    // A second replica, started later, cold, while the first answers from its caches.
    let b = fx.serve(&[]).await;
    let (from_b, again_a) = (answers(&b, &reqs).await, answers(&a, &reqs).await);
    for (i, (x, y)) in first.iter().zip(&from_b).enumerate() {
        assert_eq!(x, y, "replicas differ on {:?}", reqs[i]);
    }
    assert_eq!(first, again_a, "cached answers equal the first ones");

    // kill -9 the first one; a new one starts and agrees with the survivor.
    a.kill();
    let c = fx.serve(&[]).await;
    assert_eq!(answers(&c, &reqs).await, from_b);
    assert_eq!(answers(&b, &reqs).await, from_b);
}

fn cache_events(server: &Server, event: &str) -> f64 {
    scrape(
        server.port,
        &format!("strata_serving_cache_events{{cache=\"results\",event=\"{event}\""),
    )
    .unwrap_or(0.0)
}

/// The cached parts a range query is cut into: per window, its points from the start that read
/// only covered hours (first point, hours read).
fn cached_windows(
    query: &str,
    (start, end, step): (i64, i64, i64),
    covered: &BTreeSet<i64>,
) -> Vec<(i64, BTreeSet<i64>)> {
    let expr = promql_parser::parser::parse(query).unwrap();
    let (lookback, after) = reach_ms(&expr, step).unwrap();
    let k = window_steps(step);
    let reads = |first: i64, last: i64| -> BTreeSet<i64> {
        ((first - lookback).div_euclid(H)..=(last + after - 1).div_euclid(H))
            .map(|h| h * H)
            .collect()
    };
    let mut out = Vec::new();
    let mut w = start.div_euclid(step * k);
    while w <= end.div_euclid(step * k) {
        let first = w * step * k;
        let n = (0..k)
            .take_while(|i| reads(first + i * step, first + i * step).is_subset(covered))
            .count() as i64;
        if n > 0 {
            out.push((first, reads(first, first + (n - 1) * step)));
        }
        w += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recompute_invalidates_exactly_the_cached_windows_that_read_its_hour() {
    // Every hour with data (and the empty one before it) covered by the batch views.
    let fx = Fixture::new("resultcache", 6000, &[-1, 0, 1, 2, 3]).await;
    let server = fx.serve(&[]).await;
    let q = format!("sum({METRIC}_count)");
    let (start, end, step) = (fx.h0, fx.h0 + 4 * H, 60_000);
    let covered: BTreeSet<i64> = (-1..4).map(|i| fx.h0 + i * H).collect();
    let windows = cached_windows(&q, (start, end, step), &covered);
    assert!(windows.len() >= 2, "{windows:?}");
    let range = || server.range(&q, start, end, 60);

    let (m0, h0) = (cache_events(&server, "miss"), cache_events(&server, "hit"));
    let (cold, _) = range().await;
    let (m1, h1) = (cache_events(&server, "miss"), cache_events(&server, "hit"));
    assert_eq!(
        m1 - m0,
        windows.len() as f64,
        "each cacheable window computed once"
    );
    assert_eq!(h1, h0);
    let (warm, _) = range().await;
    assert_eq!(warm, cold);
    assert_eq!(cache_events(&server, "miss"), m1, "nothing computed again");
    assert_eq!(cache_events(&server, "hit") - h1, windows.len() as f64);
    let h2 = cache_events(&server, "hit");

    // The first answer computed its cold windows in one run and cut it into windows. A second
    // replica computes each window on its own (one query per window: no run to share); put
    // together from its cache they answer exactly the same.
    let other = fx.serve(&[]).await;
    let k = window_steps(step);
    for (first, _) in &windows {
        other.range(&q, *first, first + (k - 1) * step, 60).await;
    }
    let m = cache_events(&other, "miss");
    let (pieced, _) = other.range(&q, start, end, 60).await;
    assert_eq!(
        cache_events(&other, "miss"),
        m,
        "every window came from the cache"
    );
    assert_eq!(
        pieced, cold,
        "windows computed alone equal windows cut from one run"
    );
    drop(other);

    // A late event in the last hour, archived and recomputed.
    let hour = fx.h0 + 3 * H;
    let minute = hour + 17 * 60_000;
    let version = scrape(server.port, "strata_serving_batch_version{tier=\"hour\"").unwrap();
    let late = MetricEvent {
        source: "late-source".into(),
        ..MetricEvent::new("late-event-1", METRIC, 5.0, minute + 1)
    };
    Archive::open(&fx.cfg)
        .await
        .unwrap()
        .append(
            &[ArchivedEvent {
                event: late,
                partition: 0,
                offset: 1_000_000,
            }],
            &BTreeMap::from([(0, 1_000_000)]),
        )
        .await
        .unwrap();
    recompute(&fx.cfg, hour, hour + H).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrape(server.port, "strata_serving_batch_version{tier=\"hour\"").unwrap() <= version {
        assert!(Instant::now() < deadline, "serving never saw the recompute");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (m3, _) = (cache_events(&server, "miss"), ());
    let (after, _) = range().await;
    let reading: usize = windows.iter().filter(|(_, h)| h.contains(&hour)).count();
    assert!(reading >= 1 && reading < windows.len(), "{windows:?}");
    assert_eq!(
        cache_events(&server, "miss") - m3,
        reading as f64,
        "only the windows that read the recomputed hour are computed again"
    );
    assert_eq!(
        cache_events(&server, "hit") - h2,
        (windows.len() - reading) as f64,
        "the others still come from the cache"
    );
    // The answer changed by exactly the late event.
    let at = |s: &[Series], t: i64| {
        s[0].1
            .iter()
            .find(|(x, _)| *x == t)
            .map_or(0.0, |(_, v)| *v)
    };
    let t = minute + 60_000;
    assert_eq!(
        at(&after, t),
        at(&warm, t) + 1.0,
        "the late event is counted"
    );
    let others: Vec<_> = after[0].1.iter().filter(|(x, _)| *x != t).collect();
    let before: Vec<_> = warm[0].1.iter().filter(|(x, _)| *x != t).collect();
    assert_eq!(others, before, "every other point as before");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_refresh_keeps_answering_the_covered_hours() {
    let fx = Fixture::on_s3("refreshfail", 3000, &[0, 1]).await;
    let direct = fx.cfg.s3.endpoint.clone().unwrap();
    let proxy = CuttableProxy::start(direct.trim_start_matches("http://"))
        .await
        .unwrap();
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let server = fx.serve(&[("STRATA__S3__ENDPOINT", &via)]).await;
    let q = format!("sum({METRIC}_count)");
    let (start, end) = (fx.h0 + 60_000, fx.h0 + 2 * H);
    let (before, body) = server.range(&q, start, end, 60).await;
    assert!(body["warnings"].is_null(), "{body}");
    let want: u64 = fx
        .rows
        .iter()
        .filter(|r| r.tier == "1h" && r.labels.metric_name == METRIC && r.start_ms < fx.h0 + 2 * H)
        .map(|r| r.stats.count)
        .sum();
    let got = |s: &[Series]| -> f64 { s[0].1.iter().map(|(_, v)| v).sum() };
    assert_eq!(got(&before) as u64, want);

    // The lake becomes unreachable and a recompute lands meanwhile: refreshes fail.
    proxy.set_up(false);
    recompute(&fx.cfg, fx.h0, fx.h0 + H).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (during, body) = server.range(&q, start, end, 60).await;
        assert_eq!(
            got(&during) as u64,
            want,
            "covered hours still answered in full while the lake is away: {body}"
        );
        let warned = body["warnings"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w.as_str().unwrap().contains("batch views unreadable"))
        });
        if warned {
            assert_eq!(
                during, before,
                "from the batch views held, not the speed layer"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no refresh failure reported: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.set_up(true);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_of_one_query_are_fetched_from_clickhouse_at_once() {
    // Nothing recomputed: every metric is answered by ClickHouse, reached through a proxy that
    // counts the requests under way at once.
    let fx = Fixture::new("concurrent", 3000, &[]).await;
    let ch = fx
        .cfg
        .clickhouse
        .url
        .trim_start_matches("http://")
        .to_owned();
    let proxy = CuttableProxy::start(&ch).await.unwrap();
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let server = fx.serve(&[("STRATA__CLICKHOUSE__URL", &via)]).await;
    // A slow ClickHouse (300 ms before each answer): queries sent together overlap however
    // loaded the machine is; queries sent one after another never do.
    proxy.set_delay(Duration::from_millis(300));
    let (series, _) = server
        .range(
            "{__name__=~\".+_count\"}",
            fx.h0 + 60_000,
            fx.h0 + 2 * H,
            60,
        )
        .await;
    let names: BTreeSet<&String> = series.iter().map(|(l, _)| &l["__name__"]).collect();
    assert_eq!(names.len(), 3, "three metrics: {names:?}");
    assert!(
        proxy.max_in_flight() >= 2,
        "the metrics' queries overlapped (at most {} request at once)",
        proxy.max_in_flight()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metric_names_answer_only_the_range_they_were_read_for() {
    // Only ClickHouse holds data, from five to one hours ago.
    let fx = Fixture::new("names", 3000, &[]).await;
    let server = fx.serve(&[]).await;
    let metrics: BTreeSet<String> = fx
        .rows
        .iter()
        .map(|r| format!("{}_count", r.labels.metric_name.replace('.', "_")))
        .collect();
    let names = |from: i64, to: i64| {
        let server = &server;
        async move {
            let (f, t) = ((from / 1000).to_string(), (to / 1000).to_string());
            let (status, body) = server
                .get(
                    "/api/v1/label/__name__/values",
                    &[("start", &f), ("end", &t)],
                )
                .await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_value::<Vec<String>>(body["data"].clone()).unwrap()
        }
    };
    // The last ten minutes (no data) first, then the last five hours at once: the second list
    // must not be the first one's.
    let now = chrono::Utc::now().timestamp_millis();
    let recent = names(now - 10 * 60_000, now).await;
    assert!(recent.is_empty(), "{recent:?}");
    let wide: BTreeSet<String> = names(fx.h0, now).await.into_iter().collect();
    assert!(metrics.is_subset(&wide), "{metrics:?} in {wide:?}");
}

/// `SYSTEM FLUSH LOGS`, then what `system.query_log` says of the finished queries whose text
/// holds `marker`: (query, rows read, names of the settings it carried).
async fn logged(fx: &Fixture, marker: &str) -> Vec<(String, u64, Vec<String>)> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Logged {
        query: String,
        read_rows: u64,
        settings: Vec<String>,
    }
    let ch = strata_shared::clickhouse::server_client(&fx.cfg.clickhouse);
    ch.query("SYSTEM FLUSH LOGS").execute().await.unwrap();
    ch.query(
        "SELECT query, read_rows, Settings.Names AS settings FROM system.query_log \
         WHERE type = 2 AND position(query, ?) > 0 AND position(query, 'query_log') = 0",
    )
    .bind(marker)
    .fetch_all::<Logged>()
    .await
    .unwrap()
    .into_iter()
    .map(|l| (l.query, l.read_rows, l.settings))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_reads_only_the_partitions_of_the_range_and_enforces_the_time_limit() {
    use strata_serving::source::speed::SpeedSource;
    use strata_serving::window::Need;
    let fx = Fixture::new("partitions", 2000, &[]).await;
    // A big partition of a month ago: a query of the last hours must not read it.
    let old = (fx.h0 - 30 * 24 * H) / 1000;
    let ch = strata_shared::clickhouse::client(&fx.cfg.clickhouse);
    ch.query(&format!(
        "INSERT INTO speed_rollup_1m SELECT 'old_metric', number, toDateTime({old}), 's', \
         emptyArrayString(), emptyArrayString(), toDate(toDateTime({old})), \
         sumState(toUInt64(1)), sumState(toFloat64(1)), minState(toFloat64(1)), \
         maxState(toFloat64(1)), quantilesTDigestArrayState(0.5, 0.9, 0.95, 0.99)([toFloat64(1)]), \
         maxState(toInt64(0)), argMaxState(toFloat64(1), toInt64(0)), maxState(toInt64(0)) \
         FROM numbers(50000) GROUP BY number"
    ))
    .execute()
    .await
    .unwrap();
    let source = SpeedSource::new(&fx.cfg.clickhouse, Duration::from_secs(600));
    // A start no other run uses, so the log lines are this run's.
    let from =
        fx.h0 + 1000 * (1 + u128::from_le_bytes(*uuid::Uuid::new_v4().as_bytes()) % 3000) as i64;
    let ranges = [(from, fx.h0 + 4 * H)];
    let names = source.metric_names(&ranges).await.unwrap();
    assert!(
        !names.is_empty() && !names.contains(&"old_metric".to_owned()),
        "{names:?}"
    );
    let series = source.series(Some(&names), &ranges).await.unwrap();
    let ids: Vec<u64> = series
        .iter()
        .filter(|s| s.metric == names[0])
        .map(|s| s.series_id)
        .collect();
    source
        .buckets(&names[0], &ids, &ranges, (0, 60_000), Need::Quantiles)
        .await
        .unwrap();
    let marker = format!("toDateTime({})", from / 1000);
    let log = logged(&fx, &marker).await;
    assert_eq!(log.len(), 3, "names, series and buckets: {log:?}");
    for (query, read_rows, settings) in &log {
        assert!(
            *read_rows < 50_000,
            "read {read_rows} rows: the month-old partition was scanned by {query}"
        );
        assert!(
            settings.contains(&"max_execution_time".to_owned()),
            "{query} runs without ClickHouse's own time limit: {settings:?}"
        );
    }
}
