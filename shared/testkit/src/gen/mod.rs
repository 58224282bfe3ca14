//! The load generator behind `strata-gen`: a deterministic stream of Kafka messages (valid
//! events, producer-retry duplicates, late events, malformed messages) and the exact aggregates
//! they must produce ([`truth`]).
//!
//! Given the same [`Spec`] (seed and base time included) the stream is byte-for-byte the same,
//! except in `live` mode, where timestamps are the wall clock. Values are multiples of 1/1024 below
//! 2^30 in magnitude, so their float sums are exact in any order: a layer's sum can be compared
//! with the truth for equality, not within a tolerance.

pub mod malformed;
pub mod produce;
pub mod truth;

use std::collections::{BTreeMap, VecDeque};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal, Normal};
use serde::{Deserialize, Serialize};

use strata_shared::codec::{encode, frame, Encoding};
use strata_shared::event::MetricEvent;

/// How values of a metric are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ValueDist {
    /// Latency-like: log-normal (median ≈ 20, long tail).
    Lognormal,
    /// Normal around 50 (σ 15); negative values happen.
    Normal,
    /// Uniform on [0, 1).
    Uniform,
    /// Exponential with mean 100.
    Exponential,
    /// Each metric gets one of the above in turn.
    Mixed,
}

/// Which encodings the stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON only.
    Json,
    /// Protobuf only.
    Protobuf,
    /// Half and half.
    Mixed,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Seed of the stream.
    pub seed: u64,
    /// Number of metric names.
    pub metrics: u32,
    /// Number of series in all (spread evenly over the metrics).
    pub series: u32,
    /// Value distribution.
    pub distribution: ValueDist,
    /// Event times are spread uniformly over `[base_time_ms - spread_ms, base_time_ms)`.
    pub base_time_ms: i64,
    /// Width of the event-time window (0: every event at `base_time_ms - 1`).
    pub spread_ms: i64,
    /// Use the wall clock for event times instead of the window (the demo does).
    pub live: bool,
    /// Share of messages that repeat an earlier event exactly (a producer retry).
    pub duplicate_ratio: f64,
    /// Share of valid events that are late: `late_min_ms..late_max_ms` older than their time.
    pub late_ratio: f64,
    /// Least age of a late event.
    pub late_min_ms: i64,
    /// Greatest age of a late event.
    pub late_max_ms: i64,
    /// Share of messages that are malformed (each kind of [`malformed::KINDS`] in turn).
    pub malformed_ratio: f64,
    /// Encodings used.
    pub format: Format,
    /// Share of valid messages wrapped in a Confluent wire-format frame.
    pub framed_ratio: f64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            seed: 1,
            metrics: 10,
            series: 1000,
            distribution: ValueDist::Mixed,
            base_time_ms: 0,
            spread_ms: 600_000,
            live: false,
            duplicate_ratio: 0.0,
            late_ratio: 0.0,
            late_min_ms: 3_600_000,
            late_max_ms: 6 * 3_600_000,
            malformed_ratio: 0.0,
            format: Format::Json,
            framed_ratio: 0.0,
        }
    }
}

/// What a generated message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A valid event, counted once.
    Valid,
    /// A valid event whose time lies hours before the window (it marks an old hour dirty).
    Late,
    /// An exact repeat of an earlier valid event; must not be counted again.
    Duplicate,
    /// A message every consumer must refuse with this reason code.
    Malformed(&'static str),
}

/// One generated Kafka message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Message key (the metric name, as DESIGN.md §1 requires; `None` for some malformed ones).
    pub key: Option<String>,
    /// Message value.
    pub payload: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// The event it carries (`None` for malformed messages).
    pub event: Option<MetricEvent>,
}

const METRIC_NAMES: [&str; 8] = [
    "http_request_duration_ms",
    "db_query_duration_ms",
    "queue_depth",
    "cpu_usage_ratio",
    "payment_amount",
    "cache_hit_ratio",
    "message_size_bytes",
    "gc_pause_ms",
];
const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1"];
const SOURCES: [&str; 3] = ["api-gateway", "checkout", "worker"];

/// The name of metric number `i`.
pub fn metric_name(i: u32) -> String {
    METRIC_NAMES
        .get(i as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("gen_metric_{i}"))
}

struct SeriesDef {
    metric: u32,
    metric_name: String,
    source: &'static str,
    tags: BTreeMap<String, String>,
}

/// Rounds to a multiple of 1/1024 within ±2^30, so sums are exact in any order.
pub fn quantize(v: f64) -> f64 {
    ((v.clamp(-1_073_741_824.0, 1_073_741_824.0)) * 1024.0).round() / 1024.0
}

/// An endless, deterministic iterator of messages following a [`Spec`].
pub struct Generator {
    spec: Spec,
    rng: ChaCha8Rng,
    series: Vec<SeriesDef>,
    recent: VecDeque<Message>,
    malformed_seen: usize,
    dists: Vec<ValueDist>,
}

impl Generator {
    /// A generator for `spec`.
    pub fn new(spec: Spec) -> Self {
        let metrics = spec.metrics.max(1);
        let series = (0..spec.series.max(1))
            .map(|s| {
                let metric = s % metrics;
                let n = s / metrics;
                let mut tags = BTreeMap::new();
                tags.insert("region".to_owned(), REGIONS[(n % 4) as usize].to_owned());
                tags.insert("instance".to_owned(), format!("i-{n:05}"));
                SeriesDef {
                    metric,
                    metric_name: metric_name(metric),
                    source: SOURCES[(n % 3) as usize],
                    tags,
                }
            })
            .collect();
        let all = [
            ValueDist::Lognormal,
            ValueDist::Normal,
            ValueDist::Uniform,
            ValueDist::Exponential,
        ];
        let dists = (0..metrics)
            .map(|m| {
                if spec.distribution == ValueDist::Mixed {
                    all[(m % 4) as usize]
                } else {
                    spec.distribution
                }
            })
            .collect();
        Self {
            rng: ChaCha8Rng::seed_from_u64(spec.seed),
            spec,
            series,
            recent: VecDeque::new(),
            malformed_seen: 0,
            dists,
        }
    }

    /// The spec this generator follows.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    fn value(&mut self, metric: u32) -> f64 {
        let v = match self.dists[metric as usize] {
            ValueDist::Lognormal => LogNormal::new(3.0, 1.0)
                .expect("valid")
                .sample(&mut self.rng),
            ValueDist::Normal => Normal::new(50.0, 15.0)
                .expect("valid")
                .sample(&mut self.rng),
            ValueDist::Uniform => self.rng.random::<f64>(),
            ValueDist::Exponential => Exp::new(0.01).expect("valid").sample(&mut self.rng),
            ValueDist::Mixed => unreachable!("resolved per metric in new()"),
        };
        quantize(v)
    }

    fn encoding(&mut self) -> Encoding {
        match self.spec.format {
            Format::Json => Encoding::Json,
            Format::Protobuf => Encoding::Protobuf,
            Format::Mixed if self.rng.random_bool(0.5) => Encoding::Json,
            Format::Mixed => Encoding::Protobuf,
        }
    }

    fn event_time(&mut self) -> i64 {
        if self.spec.live {
            chrono::Utc::now().timestamp_millis()
        } else if self.spec.spread_ms <= 0 {
            self.spec.base_time_ms - 1
        } else {
            self.spec.base_time_ms - 1 - self.rng.random_range(0..self.spec.spread_ms)
        }
    }

    fn valid(&mut self) -> Message {
        let s = self.rng.random_range(0..self.series.len());
        let metric = self.series[s].metric;
        let value = self.value(metric);
        let mut timestamp_ms = self.event_time();
        let late =
            self.spec.late_ratio > 0.0 && self.rng.random_bool(self.spec.late_ratio.min(1.0));
        if late {
            timestamp_ms -= self.rng.random_range(
                self.spec.late_min_ms..=self.spec.late_max_ms.max(self.spec.late_min_ms),
            );
        }
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        let def = &self.series[s];
        let event = MetricEvent {
            event_id: uuid::Builder::from_random_bytes(id).into_uuid().to_string(),
            metric_name: def.metric_name.clone(),
            value,
            timestamp_ms,
            tags: def.tags.clone(),
            source: def.source.to_owned(),
        };
        let encoding = self.encoding();
        let body = encode(&event, encoding);
        let payload = if self.spec.framed_ratio > 0.0
            && self.rng.random_bool(self.spec.framed_ratio.min(1.0))
        {
            frame(1, encoding, &body)
        } else {
            body
        };
        Message {
            key: Some(event.metric_name.clone()),
            payload,
            kind: if late { Kind::Late } else { Kind::Valid },
            event: Some(event),
        }
    }
}

impl Iterator for Generator {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        let r: f64 = self.rng.random();
        if r < self.spec.malformed_ratio {
            let kind = &malformed::KINDS[self.malformed_seen % malformed::KINDS.len()];
            self.malformed_seen += 1;
            let base = if self.spec.live {
                chrono::Utc::now().timestamp_millis()
            } else {
                self.spec.base_time_ms
            };
            let payload = (kind.make)(&mut self.rng, base);
            return Some(Message {
                key: Some(kind.name.to_owned()),
                payload,
                kind: Kind::Malformed(kind.code),
                event: None,
            });
        }
        if r < self.spec.malformed_ratio + self.spec.duplicate_ratio && !self.recent.is_empty() {
            let i = self.rng.random_range(0..self.recent.len());
            let mut dup = self.recent[i].clone();
            dup.kind = Kind::Duplicate;
            return Some(dup);
        }
        let m = self.valid();
        if self.spec.duplicate_ratio > 0.0 {
            if self.recent.len() == 1024 {
                self.recent.pop_front();
            }
            self.recent.push_back(m.clone());
        }
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shared::validate::{check_message, Limits};

    fn spec() -> Spec {
        Spec {
            seed: 7,
            base_time_ms: 1_750_000_000_000,
            duplicate_ratio: 0.1,
            late_ratio: 0.1,
            malformed_ratio: 0.1,
            format: Format::Mixed,
            framed_ratio: 0.2,
            ..Spec::default()
        }
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a: Vec<Vec<u8>> = Generator::new(spec())
            .take(2000)
            .map(|m| m.payload)
            .collect();
        let b: Vec<Vec<u8>> = Generator::new(spec())
            .take(2000)
            .map(|m| m.payload)
            .collect();
        let c: Vec<Vec<u8>> = Generator::new(Spec { seed: 8, ..spec() })
            .take(2000)
            .map(|m| m.payload)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_message_is_what_it_claims() {
        let limits = Limits::default();
        let now = spec().base_time_ms;
        let mut kinds = BTreeMap::new();
        for m in Generator::new(spec()).take(20_000) {
            let checked = check_message(Some(&m.payload), &limits, now);
            match &m.kind {
                Kind::Malformed(code) => assert_eq!(checked.unwrap_err().code(), *code),
                _ => {
                    let d = checked.unwrap_or_else(|r| panic!("{:?} refused: {r}", m.kind));
                    assert_eq!(Some(d.event), m.event);
                    assert_eq!(
                        m.key.as_deref(),
                        Some(m.event.as_ref().unwrap().metric_name.as_str())
                    );
                }
            }
            *kinds
                .entry(
                    format!("{:?}", m.kind)
                        .split('(')
                        .next()
                        .unwrap()
                        .to_owned(),
                )
                .or_insert(0) += 1;
        }
        // Ratios hold roughly (0.1 each of 20k; late is 10% of valid).
        assert!((1700..2300).contains(&kinds["Malformed"]), "{kinds:?}");
        assert!((1700..2300).contains(&kinds["Duplicate"]), "{kinds:?}");
        assert!((1400..2000).contains(&kinds["Late"]), "{kinds:?}");
    }

    #[test]
    fn values_are_exactly_summable_and_times_in_the_window() {
        let s = Spec {
            late_ratio: 0.0,
            malformed_ratio: 0.0,
            duplicate_ratio: 0.0,
            ..spec()
        };
        for m in Generator::new(s.clone()).take(5000) {
            let e = m.event.unwrap();
            assert_eq!(e.value, quantize(e.value));
            assert!(
                e.timestamp_ms < s.base_time_ms && e.timestamp_ms >= s.base_time_ms - s.spread_ms
            );
        }
    }

    #[test]
    fn series_cardinality_is_as_asked() {
        let s = Spec {
            series: 37,
            metrics: 5,
            malformed_ratio: 0.0,
            duplicate_ratio: 0.0,
            ..spec()
        };
        let ids: std::collections::HashSet<u64> = Generator::new(s)
            .take(20_000)
            .map(|m| m.event.unwrap().series_id())
            .collect();
        assert_eq!(ids.len(), 37);
    }
}
