//! The dead-letter topic: every refused message, untouched (same key, same bytes), with headers
//! saying why and where it came from:
//!
//! | header | value |
//! |---|---|
//! | `strata.reason` | the reason code (`bad_json`, `timestamp_too_old`, … see `Reject::CODES`) |
//! | `strata.error` | the reason in words |
//! | `strata.topic`, `strata.partition`, `strata.offset` | the message's origin |
//! | `strata.rejected_at` | when it was refused (Unix ms) |
//! | `strata.service` | who refused it (`strata-speed`) |
//!
//! A batch's offsets are written only after its dead letters are acknowledged, so a refused
//! message is never lost; after a crash it may be dead-lettered twice (at-least-once).

use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::Message;
use strata_shared::config::KafkaConfig;
use strata_shared::{kafka, Reject};

/// Producer of dead letters.
pub struct DeadLetters {
    producer: std::sync::RwLock<FutureProducer>,
    cfg: KafkaConfig,
    topic: String,
}

/// Why and where a dead letter came from, as header pairs.
pub fn headers(
    reject: &Reject,
    topic: &str,
    partition: i32,
    offset: i64,
    now_ms: i64,
) -> OwnedHeaders {
    let fields = [
        ("strata.reason", reject.code().to_owned()),
        ("strata.error", reject.to_string()),
        ("strata.topic", topic.to_owned()),
        ("strata.partition", partition.to_string()),
        ("strata.offset", offset.to_string()),
        ("strata.rejected_at", now_ms.to_string()),
        ("strata.service", "strata-speed".to_owned()),
    ];
    fields.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    })
}

impl DeadLetters {
    /// A producer for `kafka.dlq_topic`.
    pub fn new(cfg: &KafkaConfig) -> rdkafka::error::KafkaResult<Self> {
        Ok(Self {
            producer: std::sync::RwLock::new(Self::producer(cfg)?),
            cfg: cfg.clone(),
            topic: cfg.dlq_topic.clone(),
        })
    }

    /// The dead-letter producer: acks from all replicas, but not idempotent — dead letters are
    /// at-least-once anyway (a batch's offsets are written after its dead letters are
    /// acknowledged), and an idempotent producer stalls or turns fatal when the broker restarts
    /// without its producer state, which would stop the consumer behind it.
    fn producer(cfg: &KafkaConfig) -> rdkafka::error::KafkaResult<FutureProducer> {
        kafka::producer_config(cfg)
            .set("enable.idempotence", "false")
            .create()
    }

    /// Queues the refused message `m`; the future resolves when the broker has it.
    pub fn send(&self, m: &BorrowedMessage<'_>, reject: &Reject, now_ms: i64) -> DeliveryFuture {
        let h = headers(reject, m.topic(), m.partition(), m.offset(), now_ms);
        self.send_raw(m.key(), m.payload(), h)
    }

    /// Sends a dead letter again after a failed delivery.
    pub fn resend(&self, failed: &OwnedMessage) -> DeliveryFuture {
        let h = failed.headers().cloned().unwrap_or_default();
        self.send_raw(failed.key(), failed.payload(), h)
    }

    fn send_raw(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> DeliveryFuture {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        loop {
            let producer = self.producer.read().expect("not poisoned").clone();
            match producer.send_result(record) {
                Ok(f) => return f,
                Err((e, r)) => {
                    record = r;
                    if producer.client().fatal_error().is_some() {
                        // An idempotent producer can turn fatal, e.g. when the broker restarts
                        // without its producer state: start a new one; the dead letters whose
                        // delivery fails with the old one are sent again by the caller.
                        tracing::warn!(error = %e, "dead-letter producer failed fatally; recreating it");
                        match Self::producer(&self.cfg) {
                            Ok(p) => *self.producer.write().expect("not poisoned") = p,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot recreate the dead-letter producer");
                                std::thread::sleep(Duration::from_secs(1));
                            }
                        }
                    } else {
                        // A full queue is backpressure: let deliveries drain, then try again.
                        tracing::debug!(error = %e, "dead-letter queue full; waiting");
                        producer.poll(Duration::from_millis(50));
                    }
                }
            }
        }
    }

    /// Waits for every queued dead letter (used at shutdown).
    pub fn flush(&self) {
        let producer = self.producer.read().expect("not poisoned").clone();
        let _ = producer.flush(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn headers_name_reason_and_origin() {
        let h = headers(
            &Reject::MissingField("value"),
            "metrics-events",
            3,
            42,
            1000,
        );
        let get = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get("strata.reason").as_deref(), Some("missing_field"));
        assert_eq!(
            get("strata.error").as_deref(),
            Some("missing field `value`")
        );
        assert_eq!(get("strata.topic").as_deref(), Some("metrics-events"));
        assert_eq!(get("strata.partition").as_deref(), Some("3"));
        assert_eq!(get("strata.offset").as_deref(), Some("42"));
    }
}
