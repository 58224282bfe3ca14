//! The validation rules of DESIGN.md §1: what a decoded [`MetricEvent`] must satisfy to be counted.
//!
//! [`check_message`] is the one entry point the consumers use: size limit, then [`decode`], then
//! [`validate`]. Whatever it refuses goes untouched to the dead-letter topic with the [`Reject`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::{decode, Decoded};
use crate::event::MetricEvent;
use crate::reject::Reject;

/// The bounds an event must respect. Built from the `[validation]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// How far in the past an event's timestamp may lie (default 7 days).
    #[serde(with = "humantime_serde")]
    pub max_past: Duration,
    /// How far in the future an event's timestamp may lie (default 10 minutes).
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Most tags on one event (default 32).
    pub max_tags: usize,
    /// Longest metric name, in bytes (default 200).
    pub max_metric_name_len: usize,
    /// Longest tag key, in bytes (default 100).
    pub max_tag_key_len: usize,
    /// Longest tag value, in bytes (default 256).
    pub max_tag_value_len: usize,
    /// Longest source, in bytes (default 200).
    pub max_source_len: usize,
    /// Longest event id, in bytes (default 128).
    pub max_event_id_len: usize,
    /// Largest message value, in bytes (default 64 KiB).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_past: Duration::from_secs(7 * 24 * 3600),
            max_future: Duration::from_secs(10 * 60),
            max_tags: 32,
            max_metric_name_len: 200,
            max_tag_key_len: 100,
            max_tag_value_len: 256,
            max_source_len: 200,
            max_event_id_len: 128,
            max_message_bytes: 64 * 1024,
        }
    }
}

/// Size check, decode and validate one Kafka message value, as of `now_ms`.
///
/// ```
/// use strata_shared::validate::{check_message, Limits};
/// let now = 1_700_000_000_000;
/// let ok = br#"{"event_id":"e1","metric_name":"cpu","value":0.5,"timestamp_ms":1700000000000}"#;
/// assert!(check_message(Some(ok), &Limits::default(), now).is_ok());
/// let bad = br#"{"event_id":"e1","metric_name":"9cpu","value":0.5,"timestamp_ms":1700000000000}"#;
/// assert_eq!(check_message(Some(bad), &Limits::default(), now).unwrap_err().code(), "bad_metric_name");
/// ```
pub fn check_message(
    payload: Option<&[u8]>,
    limits: &Limits,
    now_ms: i64,
) -> Result<Decoded, Reject> {
    let payload = payload.unwrap_or_default();
    if payload.len() > limits.max_message_bytes {
        return Err(Reject::TooLarge {
            size: payload.len(),
            max: limits.max_message_bytes,
        });
    }
    let decoded = decode(payload)?;
    validate(&decoded.event, limits, now_ms)?;
    Ok(decoded)
}

/// Checks one event against every rule; the first rule broken is the reason.
pub fn validate(e: &MetricEvent, limits: &Limits, now_ms: i64) -> Result<(), Reject> {
    // event_id
    if e.event_id.is_empty() {
        return Err(Reject::MissingField("event_id"));
    }
    if e.event_id.len() > limits.max_event_id_len {
        return Err(Reject::BadEventId(format!(
            "{} bytes exceed the limit of {}",
            e.event_id.len(),
            limits.max_event_id_len
        )));
    }
    if e.event_id.chars().any(char::is_control) {
        return Err(Reject::BadEventId("contains control characters".into()));
    }
    // metric_name
    if e.metric_name.is_empty() {
        return Err(Reject::MissingField("metric_name"));
    }
    if e.metric_name.len() > limits.max_metric_name_len || !is_metric_name(&e.metric_name) {
        return Err(Reject::BadMetricName(truncate(&e.metric_name)));
    }
    // value
    if !e.value.is_finite() {
        return Err(Reject::NonFiniteValue(e.value));
    }
    // timestamp
    let min_ms = now_ms.saturating_sub(limits.max_past.as_millis() as i64);
    let max_ms = now_ms.saturating_add(limits.max_future.as_millis() as i64);
    if e.timestamp_ms < min_ms {
        return Err(Reject::TimestampTooOld {
            timestamp_ms: e.timestamp_ms,
            min_ms,
        });
    }
    if e.timestamp_ms > max_ms {
        return Err(Reject::TimestampInFuture {
            timestamp_ms: e.timestamp_ms,
            max_ms,
        });
    }
    // tags
    if e.tags.len() > limits.max_tags {
        return Err(Reject::TooManyTags {
            count: e.tags.len(),
            max: limits.max_tags,
        });
    }
    let sample = match e.tags.get(KIND_TAG).map(String::as_str) {
        None => false,
        Some(SAMPLE_KIND) => true,
        Some(other) => {
            return Err(Reject::BadTagValue {
                key: KIND_TAG.into(),
                problem: format!("{other:?} is not a kind Strata knows (only {SAMPLE_KIND:?})"),
            })
        }
    };
    for (k, v) in &e.tags {
        if k == KIND_TAG {
            continue;
        }
        if k.len() > limits.max_tag_key_len || !is_label_name(k) {
            return Err(Reject::BadTagKey(truncate(k)));
        }
        // A sample series shows no Strata quantiles: its `quantile` label is its own (a
        // Prometheus summary's).
        if is_reserved_tag_key(k) && !(sample && k == "quantile") {
            return Err(Reject::ReservedTagKey(k.clone()));
        }
        if v.is_empty() {
            return Err(Reject::BadTagValue {
                key: k.clone(),
                problem: "empty".into(),
            });
        }
        if v.len() > limits.max_tag_value_len {
            return Err(Reject::BadTagValue {
                key: k.clone(),
                problem: format!(
                    "{} bytes exceed the limit of {}",
                    v.len(),
                    limits.max_tag_value_len
                ),
            });
        }
    }
    // source
    if e.source.len() > limits.max_source_len {
        return Err(Reject::BadSource(format!(
            "{} bytes exceed the limit of {}",
            e.source.len(),
            limits.max_source_len
        )));
    }
    if e.source.chars().any(char::is_control) {
        return Err(Reject::BadSource("contains control characters".into()));
    }
    Ok(())
}

/// `[a-zA-Z_:][a-zA-Z0-9_:.]*`, the metric-name rule of DESIGN.md §1.
pub fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'.')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, Prometheus's label-name rule, for tag keys (they become labels).
pub fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The tag that marks a series of samples (a gauge's or a counter's values as a Prometheus
/// client reports them: remote write, OTLP, StatsD gauges) rather than a stream of events.
/// Such a series is exposed by its own name with the newest sample of a window (not as
/// `_count`, `_sum`, … and quantiles of events), and may carry a `quantile` label of its own.
pub const KIND_TAG: &str = "__kind__";
/// The value of [`KIND_TAG`] on a sample series.
pub const SAMPLE_KIND: &str = "sample";

/// Tag keys Strata uses itself: `source` and `quantile` are labels of the exposed series, and
/// `__`-prefixed names are Prometheus's and Strata's internal labels (e.g. `__overflow__`).
pub fn is_reserved_tag_key(k: &str) -> bool {
    k == "source" || k == "quantile" || k.starts_with("__")
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_series_carry_their_kind_and_may_have_a_quantile_label() {
        let now = 1_700_000_000_000;
        let mut e = MetricEvent::new("e1", "rpc_duration_seconds", 0.5, now);
        e.tags.insert("quantile".into(), "0.99".into());
        assert_eq!(
            validate(&e, &Limits::default(), now).unwrap_err().code(),
            "reserved_tag_key",
            "an event may not name a quantile: Strata computes them"
        );
        e.tags.insert(KIND_TAG.into(), SAMPLE_KIND.into());
        assert!(validate(&e, &Limits::default(), now).is_ok());
        e.tags.insert(KIND_TAG.into(), "histogram".into());
        assert_eq!(
            validate(&e, &Limits::default(), now).unwrap_err().code(),
            "bad_tag_value"
        );
        e.tags.remove(KIND_TAG);
        e.tags.remove("quantile");
        e.tags.insert("__other__".into(), "x".into());
        assert_eq!(
            validate(&e, &Limits::default(), now).unwrap_err().code(),
            "reserved_tag_key"
        );
    }

    const NOW: i64 = 1_750_000_000_000;

    fn ok_event() -> MetricEvent {
        MetricEvent::new("e-1", "http_request_duration_ms", 1.0, NOW - 1000)
            .with_tag("route", "/x")
            .with_source("api")
    }

    fn check(e: &MetricEvent) -> Result<(), Reject> {
        validate(e, &Limits::default(), NOW)
    }

    fn code(e: MetricEvent) -> &'static str {
        check(&e).expect_err("must be rejected").code()
    }

    #[test]
    fn a_good_event_passes() {
        assert_eq!(check(&ok_event()), Ok(()));
        let mut e = ok_event();
        e.metric_name = "ns:sub.metric_2".into();
        e.source = String::new();
        assert_eq!(check(&e), Ok(()));
    }

    #[test]
    fn value_must_be_finite() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                code(MetricEvent {
                    value: v,
                    ..ok_event()
                }),
                "non_finite_value"
            );
        }
        assert!(check(&MetricEvent {
            value: f64::MAX,
            ..ok_event()
        })
        .is_ok());
    }

    #[test]
    fn timestamp_bounds_are_inclusive() {
        let l = Limits::default();
        let oldest = NOW - l.max_past.as_millis() as i64;
        let newest = NOW + l.max_future.as_millis() as i64;
        assert!(check(&MetricEvent {
            timestamp_ms: oldest,
            ..ok_event()
        })
        .is_ok());
        assert!(check(&MetricEvent {
            timestamp_ms: newest,
            ..ok_event()
        })
        .is_ok());
        assert_eq!(
            code(MetricEvent {
                timestamp_ms: oldest - 1,
                ..ok_event()
            }),
            "timestamp_too_old"
        );
        assert_eq!(
            code(MetricEvent {
                timestamp_ms: newest + 1,
                ..ok_event()
            }),
            "timestamp_in_future"
        );
        assert_eq!(
            code(MetricEvent {
                timestamp_ms: 0,
                ..ok_event()
            }),
            "timestamp_too_old"
        );
        assert_eq!(
            code(MetricEvent {
                timestamp_ms: i64::MAX,
                ..ok_event()
            }),
            "timestamp_in_future"
        );
        assert_eq!(
            code(MetricEvent {
                timestamp_ms: i64::MIN,
                ..ok_event()
            }),
            "timestamp_too_old"
        );
    }

    #[test]
    fn configured_time_bounds_apply() {
        let l = Limits {
            max_past: Duration::from_secs(60),
            max_future: Duration::ZERO,
            ..Limits::default()
        };
        assert!(validate(
            &MetricEvent {
                timestamp_ms: NOW - 61_000,
                ..ok_event()
            },
            &l,
            NOW
        )
        .is_err());
        assert!(validate(
            &MetricEvent {
                timestamp_ms: NOW + 1,
                ..ok_event()
            },
            &l,
            NOW
        )
        .is_err());
        assert!(validate(
            &MetricEvent {
                timestamp_ms: NOW,
                ..ok_event()
            },
            &l,
            NOW
        )
        .is_ok());
    }

    #[test]
    fn metric_names() {
        for good in ["a", "_x", ":y", "a.b:c_9", "A"] {
            assert!(is_metric_name(good), "{good}");
        }
        for bad in ["", "9a", ".a", "a-b", "a b", "ä", "a/b"] {
            assert!(!is_metric_name(bad), "{bad}");
        }
        assert_eq!(
            code(MetricEvent {
                metric_name: "9lives".into(),
                ..ok_event()
            }),
            "bad_metric_name"
        );
        assert_eq!(
            code(MetricEvent {
                metric_name: String::new(),
                ..ok_event()
            }),
            "missing_field"
        );
        assert_eq!(
            code(MetricEvent {
                metric_name: "a".repeat(201),
                ..ok_event()
            }),
            "bad_metric_name"
        );
    }

    #[test]
    fn event_ids() {
        assert_eq!(
            code(MetricEvent {
                event_id: String::new(),
                ..ok_event()
            }),
            "missing_field"
        );
        assert_eq!(
            code(MetricEvent {
                event_id: "x".repeat(129),
                ..ok_event()
            }),
            "bad_event_id"
        );
        assert_eq!(
            code(MetricEvent {
                event_id: "a\nb".into(),
                ..ok_event()
            }),
            "bad_event_id"
        );
    }

    #[test]
    fn tags() {
        let many = (0..33).fold(ok_event(), |e, i| e.with_tag(&format!("k{i}"), "v"));
        assert_eq!(code(many), "too_many_tags");
        let exactly = (0..31).fold(ok_event(), |e, i| e.with_tag(&format!("k{i}"), "v"));
        assert_eq!(exactly.tags.len(), 32);
        assert!(check(&exactly).is_ok());
        assert_eq!(code(ok_event().with_tag("bad key", "v")), "bad_tag_key");
        assert_eq!(code(ok_event().with_tag("a.b", "v")), "bad_tag_key");
        assert_eq!(
            code(ok_event().with_tag(&"k".repeat(101), "v")),
            "bad_tag_key"
        );
        assert_eq!(
            code(ok_event().with_tag("__name__", "v")),
            "reserved_tag_key"
        );
        assert_eq!(
            code(ok_event().with_tag("__overflow__", "true")),
            "reserved_tag_key"
        );
        assert_eq!(code(ok_event().with_tag("source", "v")), "reserved_tag_key");
        assert_eq!(
            code(ok_event().with_tag("quantile", "0.5")),
            "reserved_tag_key"
        );
        assert_eq!(code(ok_event().with_tag("k", "")), "bad_tag_value");
        assert_eq!(
            code(ok_event().with_tag("k", &"v".repeat(257))),
            "bad_tag_value"
        );
        assert!(check(&ok_event().with_tag("k", "quote\" back\\slash ü")).is_ok());
    }

    #[test]
    fn sources() {
        assert_eq!(code(ok_event().with_source(&"s".repeat(201))), "bad_source");
        assert_eq!(code(ok_event().with_source("a\u{0}b")), "bad_source");
    }

    #[test]
    fn message_size_is_checked_before_decoding() {
        let l = Limits {
            max_message_bytes: 10,
            ..Limits::default()
        };
        let r = check_message(Some(&[b'{'; 11]), &l, NOW).unwrap_err();
        assert_eq!(r, Reject::TooLarge { size: 11, max: 10 });
        assert_eq!(
            check_message(None, &l, NOW).unwrap_err().code(),
            "empty_payload"
        );
    }

    #[test]
    fn long_names_are_truncated_in_reasons() {
        let r = check(&MetricEvent {
            metric_name: "-".repeat(500),
            ..ok_event()
        })
        .unwrap_err();
        assert!(r.to_string().len() < 250, "{r}");
    }
}
