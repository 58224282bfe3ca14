//! From received samples to `kafka.topic`: each event validated as the consumers validate it,
//! the valid ones produced (Protobuf, key = metric name), the refused ones to the dead-letter
//! topic with the reason — and an answer only once the broker acknowledged every one of them
//! (`acks=all`), so a client told "stored" has lost nothing and a client told "retry" resends a
//! request whose event ids are the same (the layers deduplicate them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use strata_shared::codec::{encode, Encoding};
use strata_shared::validate::validate;
use strata_shared::{kafka, Config, MetricEvent, Reject};

/// Why a request's events are not (all) stored.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PublishError {
    /// Too much is waiting for the broker: the client should slow down (429).
    #[error("too many samples are waiting for the broker (ingest.max_in_flight); retry later")]
    Busy,
    /// The broker did not acknowledge in time, or refused (503).
    #[error("the broker did not store the samples: {0}; retry later")]
    Unavailable(String),
}

/// What a request's events became.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Published {
    /// Events stored on the topic.
    pub accepted: usize,
    /// Events refused by validation (stored on the dead-letter topic), by reason code.
    pub refused: BTreeMap<&'static str, usize>,
    /// The first refusals in words.
    pub examples: Vec<String>,
}

impl Published {
    /// Events refused.
    pub fn refused_total(&self) -> usize {
        self.refused.values().sum()
    }

    /// A line for the client about what was refused, if anything was.
    pub fn refusal_message(&self) -> Option<String> {
        if self.refused.is_empty() {
            return None;
        }
        let reasons: Vec<String> = self
            .refused
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        Some(format!(
            "{} of {} samples refused ({}), kept on the dead-letter topic; e.g. {}",
            self.refused_total(),
            self.refused_total() + self.accepted,
            reasons.join(", "),
            self.examples.join("; ")
        ))
    }
}

/// The producer behind every receiver.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    dlq_topic: String,
    limits: strata_shared::validate::Limits,
    timeout: Duration,
    max_in_flight: usize,
    in_flight: AtomicUsize,
}

/// Releases a request's share of `in_flight` however it ends.
struct Slots<'a>(&'a AtomicUsize, usize);

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::SeqCst);
    }
}

impl Publisher {
    /// A publisher to `kafka.topic` with `[ingest]`'s limits and `[validation]`'s rules.
    pub fn new(cfg: &Config) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: kafka::producer_config(&cfg.kafka).create()?,
            topic: cfg.kafka.topic.clone(),
            dlq_topic: cfg.kafka.dlq_topic.clone(),
            limits: cfg.validation.clone(),
            timeout: cfg.ingest.publish_timeout,
            max_in_flight: cfg.ingest.max_in_flight,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Validates and produces `events` (from receiver `origin`, e.g. `remote_write`); returns
    /// once the broker acknowledged all of them.
    pub async fn publish(
        &self,
        events: Vec<MetricEvent>,
        origin: &str,
    ) -> Result<Published, PublishError> {
        let n = events.len();
        if self.in_flight.fetch_add(n, Ordering::SeqCst) + n > self.max_in_flight && n > 0 {
            self.in_flight.fetch_sub(n, Ordering::SeqCst);
            return Err(PublishError::Busy);
        }
        let _slots = Slots(&self.in_flight, n);
        let now = chrono::Utc::now().timestamp_millis();
        let mut out = Published::default();
        let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(n);
        for e in events {
            match validate(&e, &self.limits, now) {
                Ok(()) => {
                    let payload = encode(&e, Encoding::Protobuf);
                    deliveries.push(self.send(&self.topic, &e.metric_name, &payload, None)?);
                    out.accepted += 1;
                }
                Err(reject) => {
                    *out.refused.entry(reject.code()).or_default() += 1;
                    if out.examples.len() < 3 {
                        out.examples.push(format!("{}: {reject}", e.metric_name));
                    }
                    let payload = encode(&e, Encoding::Json);
                    let headers = dead_letter_headers(&reject, origin, now);
                    deliveries.push(self.send(
                        &self.dlq_topic,
                        &e.metric_name,
                        &payload,
                        Some(headers),
                    )?);
                }
            }
        }
        let acked = tokio::time::timeout(self.timeout, futures::future::join_all(deliveries)).await;
        let results = acked.map_err(|_| {
            PublishError::Unavailable(format!("no acknowledgement within {:?}", self.timeout))
        })?;
        for r in results {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(PublishError::Unavailable(e.to_string())),
                Err(_) => return Err(PublishError::Unavailable("delivery cancelled".into())),
            }
        }
        Ok(out)
    }

    fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<DeliveryFuture, PublishError> {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        match self.producer.send_result(record) {
            Ok(f) => Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(PublishError::Busy)
            }
            Err((e, _)) => Err(PublishError::Unavailable(e.to_string())),
        }
    }

    /// Puts a message that is not even an event (a malformed StatsD line) on the dead-letter
    /// topic, untouched, and waits for the broker.
    pub async fn dead_letter(
        &self,
        payload: &[u8],
        reject: &Reject,
        origin: &str,
    ) -> Result<(), PublishError> {
        let now = chrono::Utc::now().timestamp_millis();
        let headers = dead_letter_headers(reject, origin, now);
        let f = self.send(&self.dlq_topic, origin, payload, Some(headers))?;
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) => Err(PublishError::Unavailable(e.to_string())),
            Ok(Err(_)) => Err(PublishError::Unavailable("delivery cancelled".into())),
            Err(_) => Err(PublishError::Unavailable(format!(
                "no acknowledgement within {:?}",
                self.timeout
            ))),
        }
    }

    /// Waits for everything queued (at shutdown).
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(30));
    }
}

/// The dead-letter headers of a received event: the consumers' headers, with the receiver as
/// its origin (`strata.topic` = `ingest:<receiver>`, no partition or offset).
pub fn dead_letter_headers(reject: &Reject, origin: &str, now_ms: i64) -> OwnedHeaders {
    let fields = [
        ("strata.reason", reject.code().to_owned()),
        ("strata.error", reject.to_string()),
        ("strata.topic", format!("ingest:{origin}")),
        ("strata.partition", "-1".to_owned()),
        ("strata.offset", "-1".to_owned()),
        ("strata.rejected_at", now_ms.to_string()),
        ("strata.service", "strata-serving".to_owned()),
    ];
    fields.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_summed_up_for_the_client() {
        let mut p = Published {
            accepted: 8,
            ..Published::default()
        };
        assert_eq!(p.refusal_message(), None);
        p.refused.insert("non_finite_value", 2);
        p.examples.push("x: value NaN".into());
        let m = p.refusal_message().unwrap();
        assert!(
            m.starts_with("2 of 10 samples refused (non_finite_value: 2)"),
            "{m}"
        );
    }
}
