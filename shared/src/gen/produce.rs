//! Producing a generated stream to Kafka the way a careful producer does: acks=all, idempotence,
//! zstd, linger (from [`kafka::producer_config`]); a full local queue is waited out and the same
//! record sent again, never dropped; every message must be acknowledged or the run fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::truth::Truth;
use super::{Generator, Kind, Spec};
use crate::config::KafkaConfig;
use crate::kafka;

/// What a run produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Messages handed to the producer.
    pub produced: u64,
    /// Messages the broker acknowledged.
    pub delivered: u64,
    /// Messages that finally failed.
    pub failed: u64,
    /// Late events among them.
    pub late: u64,
    /// Duplicates among them.
    pub duplicates: u64,
    /// Malformed messages among them.
    pub malformed: u64,
    /// Wall time of the run, flush included.
    pub seconds: f64,
    /// The first delivery error, if any.
    pub first_error: Option<String>,
}

/// Options of one run.
pub struct Run<'a> {
    /// Broker settings; `topic` is the destination.
    pub kafka: &'a KafkaConfig,
    /// Messages to produce; 0 means until `stop` is set.
    pub events: u64,
    /// Target rate in messages per second; 0 means flat out.
    pub rate: f64,
    /// Set to end an endless run.
    pub stop: Arc<AtomicBool>,
    /// Called with the number produced so far, every 1024 messages.
    pub progress: &'a (dyn Fn(u64) + Sync),
}

#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct Ctx(Arc<Deliveries>);
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                self.0
                    .first_error
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert_with(|| e.to_string());
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Produces the stream of `spec`, recording each message in `truth` if given.
pub fn produce(
    run: &Run<'_>,
    spec: Spec,
    mut truth: Option<&mut Truth>,
) -> Result<Report, KafkaError> {
    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<Ctx> =
        kafka::producer_config(run.kafka).create_with_context(Ctx(deliveries.clone()))?;
    let started = Instant::now();
    let mut r = Report::default();
    for msg in Generator::new(spec) {
        if (run.events > 0 && r.produced >= run.events) || run.stop.load(Ordering::Relaxed) {
            break;
        }
        if run.rate > 0.0 && r.produced % 64 == 0 {
            let due = Duration::from_secs_f64(r.produced as f64 / run.rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        match msg.kind {
            Kind::Late => r.late += 1,
            Kind::Duplicate => r.duplicates += 1,
            Kind::Malformed(_) => r.malformed += 1,
            Kind::Valid => {}
        }
        let mut record = BaseRecord::to(&run.kafka.topic).payload(&msg.payload);
        if let Some(k) = &msg.key {
            record = record.key(k);
        }
        let mut pending = Some(record);
        while let Some(rec) = pending.take() {
            match producer.send(rec) {
                Ok(()) => {}
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                    std::thread::sleep(Duration::from_millis(2));
                    pending = Some(rec);
                }
                Err((e, _)) => return Err(e),
            }
        }
        if let Some(t) = truth.as_deref_mut() {
            t.record(&msg);
        }
        r.produced += 1;
        if r.produced % 1024 == 0 {
            (run.progress)(r.produced);
        }
    }
    (run.progress)(r.produced);
    producer.flush(Duration::from_secs(300))?;
    r.seconds = started.elapsed().as_secs_f64();
    r.delivered = deliveries.ok.load(Ordering::Relaxed);
    r.failed = deliveries.failed.load(Ordering::Relaxed);
    r.first_error = deliveries.first_error.lock().expect("not poisoned").clone();
    Ok(r)
}
