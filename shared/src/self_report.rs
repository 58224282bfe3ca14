//! Strata watches itself through itself: every service publishes its own counters and gauges as
//! metric events to `kafka.topic`, so its health (dead letters, consumer lag, the time boundary's
//! age, …) is queryable through the same merged API and Grafana dashboard as any other metric.
//!
//! Every `telemetry.self_report_interval` the service's registry is read: a gauge becomes one
//! event with its value; a counter becomes one event with its *increase* since the previous
//! report (so `rate(strata_speed_dead_letters_total_sum[5m])` is dead letters per second); a
//! histogram's buckets (tag `le`), count and sum report as counters. The metric's labels become
//! tags (`source` is the service); a label that is not a valid tag key is renamed with a
//! `label_` prefix. Reporting is best effort: a broker that is down costs these samples (logged), never the service's own work.

use std::collections::{BTreeMap, HashMap};

use prometheus::proto::{MetricFamily, MetricType};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};

use crate::codec::{encode, Encoding};
use crate::config::Config;
use crate::telemetry::Telemetry;
use crate::MetricEvent;

/// The events of one report; `previous` holds each counter's last value (updated).
///
/// A histogram reports like counters named `<name>_bucket` (tag `le`), `<name>_count` and
/// `<name>_sum`, so `histogram_quantile(0.99, sum by (le) (rate(x_bucket_sum[5m])))` is its p99.
pub fn events_from(
    families: &[MetricFamily],
    previous: &mut HashMap<String, f64>,
    service: &str,
    now_ms: i64,
) -> Vec<MetricEvent> {
    let mut out = Vec::new();
    let mut push = |name: &str, tags: &BTreeMap<String, String>, value: f64| {
        if value.is_finite() {
            out.push(MetricEvent {
                event_id: uuid::Uuid::new_v4().to_string(),
                metric_name: name.to_owned(),
                value,
                timestamp_ms: now_ms,
                tags: tags.clone(),
                source: service.to_owned(),
            });
        }
    };
    for f in families {
        let kind = f.get_field_type();
        for m in f.get_metric() {
            let tags = tags_of(m);
            match kind {
                MetricType::GAUGE => push(f.name(), &tags, m.get_gauge().get_value()),
                MetricType::COUNTER => {
                    if let Some(d) =
                        increase(previous, f.name(), &tags, m.get_counter().get_value())
                    {
                        push(f.name(), &tags, d);
                    }
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let bucket = format!("{}_bucket", f.name());
                    for b in h
                        .get_bucket()
                        .iter()
                        .filter(|b| b.upper_bound().is_finite())
                    {
                        let mut t = tags.clone();
                        t.insert("le".into(), le_label(b.upper_bound()));
                        let now = b.cumulative_count() as f64;
                        if let Some(d) = increase(previous, &bucket, &t, now) {
                            push(&bucket, &t, d);
                        }
                    }
                    let mut t = tags.clone();
                    t.insert("le".into(), "+Inf".into());
                    let count = h.get_sample_count() as f64;
                    if let Some(d) = increase(previous, &bucket, &t, count) {
                        push(&bucket, &t, d);
                    }
                    for (suffix, now) in [("_count", count), ("_sum", h.get_sample_sum())] {
                        let name = format!("{}{suffix}", f.name());
                        if let Some(d) = increase(previous, &name, &tags, now) {
                            push(&name, &tags, d);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// A metric's labels as event tags: `service` left out (it is the event's source), a key that is
/// not a valid tag key renamed with a `label_` prefix.
fn tags_of(m: &prometheus::proto::Metric) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    for l in m.get_label() {
        let (k, v) = (l.name(), l.value());
        if k == "service" || v.is_empty() {
            continue;
        }
        let key = if crate::validate::is_label_name(k) && !crate::validate::is_reserved_tag_key(k) {
            k.to_owned()
        } else {
            format!("label_{}", k.trim_start_matches('_'))
        };
        tags.insert(key, v.to_owned());
    }
    tags
}

/// The increase of a cumulative value since the last report: `None` on the first report (it
/// only learns where the value stands); a value that went back (a restart) counts from zero.
fn increase(
    previous: &mut HashMap<String, f64>,
    name: &str,
    tags: &BTreeMap<String, String>,
    now: f64,
) -> Option<f64> {
    match previous.insert(format!("{name}{tags:?}"), now) {
        Some(b) if now >= b => Some(now - b),
        Some(_) => Some(now),
        None => None,
    }
}

/// A bucket's upper bound as Prometheus writes `le` (`0.005`, `1`, `+Inf`).
fn le_label(upper: f64) -> String {
    if upper == f64::INFINITY {
        "+Inf".into()
    } else {
        upper.to_string()
    }
}

/// Publishes the service's metrics every `telemetry.self_report_interval` until the process
/// ends (nothing when the interval is zero).
pub fn spawn(telemetry: &Telemetry, cfg: &Config, service: &str) {
    let every = cfg.telemetry.self_report_interval;
    if every.is_zero() {
        return;
    }
    // Not idempotent: a broker that restarts without its producer state fences an idempotent
    // producer for good (tansu does), and samples would stop. A retried sample keeps its
    // event_id, so the speed layer drops the copy.
    let producer: ThreadedProducer<DefaultProducerContext> =
        match crate::kafka::producer_config(&cfg.kafka)
            .set("enable.idempotence", "false")
            .create()
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "self-report disabled: cannot create a producer");
                return;
            }
        };
    let (registry, topic, service) = (
        telemetry.registry.clone(),
        cfg.kafka.topic.clone(),
        format!("strata-{service}"),
    );
    std::thread::Builder::new()
        .name("self-report".into())
        .spawn(move || {
            let mut previous = HashMap::new();
            loop {
                std::thread::sleep(every);
                let now = chrono::Utc::now().timestamp_millis();
                for e in events_from(&registry.gather(), &mut previous, &service, now) {
                    let payload = encode(&e, Encoding::Json);
                    let record = BaseRecord::to(&topic)
                        .key(e.metric_name.as_str())
                        .payload(&payload);
                    if let Err((err, _)) = producer.send(record) {
                        tracing::warn!(error = %err, "self-report sample dropped");
                    }
                }
            }
        })
        .expect("spawn the self-report thread");
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

    #[test]
    fn counters_report_increases_and_gauges_their_value() {
        let r = Registry::new_custom(Some("strata".into()), None).unwrap();
        let dlq = IntCounterVec::new(
            Opts::new("speed_dead_letters_total", "x").const_label("service", "speed"),
            &["reason", "source"],
        )
        .unwrap();
        let lag = IntGauge::new("speed_paused", "x").unwrap();
        r.register(Box::new(dlq.clone())).unwrap();
        r.register(Box::new(lag.clone())).unwrap();
        let mut prev = HashMap::new();
        dlq.with_label_values(&["bad_json", "x"]).inc_by(5);
        lag.set(1);
        let first = events_from(&r.gather(), &mut prev, "strata-speed", 1000);
        assert_eq!(
            first.len(),
            1,
            "a counter's first report only sets its baseline"
        );
        assert_eq!(first[0].metric_name, "strata_speed_paused");
        assert_eq!(first[0].value, 1.0);
        assert_eq!(first[0].source, "strata-speed");

        dlq.with_label_values(&["bad_json", "x"]).inc_by(3);
        let second = events_from(&r.gather(), &mut prev, "strata-speed", 2000);
        let d = second
            .iter()
            .find(|e| e.metric_name == "strata_speed_dead_letters_total")
            .unwrap();
        assert_eq!(d.value, 3.0, "the increase since the last report");
        assert_eq!(d.tags.get("reason").map(String::as_str), Some("bad_json"));
        assert_eq!(
            d.tags.get("label_source").map(String::as_str),
            Some("x"),
            "a reserved key is renamed"
        );
        assert!(!d.tags.contains_key("service"));
        // Every event is valid by the event contract.
        for e in second {
            let bytes = encode(&e, Encoding::Json);
            crate::validate::check_message(Some(&bytes), &crate::validate::Limits::default(), 2000)
                .unwrap();
        }
    }

    #[test]
    fn histograms_report_bucket_increases_with_le() {
        let r = Registry::new_custom(Some("strata".into()), None).unwrap();
        let h = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("serving_request_seconds", "x").buckets(vec![0.1, 1.0]),
            &["endpoint"],
        )
        .unwrap();
        r.register(Box::new(h.clone())).unwrap();
        let mut prev = HashMap::new();
        h.with_label_values(&["query"]).observe(0.05);
        assert!(
            events_from(&r.gather(), &mut prev, "strata-serving", 1000).is_empty(),
            "the first report only sets the baselines"
        );
        h.with_label_values(&["query"]).observe(0.5);
        h.with_label_values(&["query"]).observe(5.0);
        let events = events_from(&r.gather(), &mut prev, "strata-serving", 2000);
        let bucket = |le: &str| {
            events
                .iter()
                .find(|e| {
                    e.metric_name == "strata_serving_request_seconds_bucket"
                        && e.tags.get("le").map(String::as_str) == Some(le)
                })
                .map(|e| e.value)
        };
        assert_eq!(bucket("0.1"), Some(0.0));
        assert_eq!(bucket("1"), Some(1.0), "cumulative: 0.5 is under 1");
        assert_eq!(bucket("+Inf"), Some(2.0));
        let count = events
            .iter()
            .find(|e| e.metric_name == "strata_serving_request_seconds_count")
            .unwrap();
        assert_eq!(count.value, 2.0);
        assert_eq!(
            count.tags.get("endpoint").map(String::as_str),
            Some("query")
        );
        let sum = events
            .iter()
            .find(|e| e.metric_name == "strata_serving_request_seconds_sum")
            .unwrap();
        assert!((sum.value - 5.5).abs() < 1e-9);
    }
}
