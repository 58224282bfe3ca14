//! Producing a generated stream to Kafka the way a careful producer does: acks=all, idempotence,
//! zstd, linger (from [`kafka::producer_config`]); a full local queue is waited out and the same
//! record sent again, never dropped; every message must be acknowledged or the run fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use super::truth::Truth;
use super::{Generator, Kind, Spec};
use strata_shared::config::KafkaConfig;
use strata_shared::kafka;

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

/// A message to send again: (key, payload).
type Resend = (Option<Vec<u8>>, Vec<u8>);

#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Messages whose delivery failed, to be sent again.
    resend: Mutex<Vec<Resend>>,
}

struct Ctx(Arc<Deliveries>);
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, m)) => {
                self.0
                    .first_error
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert_with(|| e.to_string());
                self.0.resend.lock().expect("not poisoned").push((
                    m.key().map(<[u8]>::to_vec),
                    m.payload().unwrap_or_default().to_vec(),
                ));
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Sends one record, waiting on a full queue and replacing a producer that turned fatal (an
/// idempotent producer does when the broker restarts without its producer state).
fn send(
    producer: &mut ThreadedProducer<Ctx>,
    run: &Run<'_>,
    deliveries: &Arc<Deliveries>,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<(), KafkaError> {
    loop {
        let mut record = BaseRecord::to(&run.kafka.topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) if producer.client().fatal_error().is_some() => {
                tracing::warn!(error = %e, "the producer failed fatally; starting a new one");
                renew(producer, run, deliveries)?;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Replaces `producer` with a new one reporting to the same `deliveries`.
fn renew(
    producer: &mut ThreadedProducer<Ctx>,
    run: &Run<'_>,
    deliveries: &Arc<Deliveries>,
) -> Result<(), KafkaError> {
    *producer = kafka::producer_config(run.kafka).create_with_context(Ctx(deliveries.clone()))?;
    Ok(())
}

/// Sends again every message whose delivery failed so far.
fn resend_failed(
    producer: &mut ThreadedProducer<Ctx>,
    run: &Run<'_>,
    deliveries: &Arc<Deliveries>,
) -> Result<usize, KafkaError> {
    if producer.client().fatal_error().is_some() {
        tracing::warn!("the producer failed fatally; starting a new one");
        renew(producer, run, deliveries)?;
    }
    let again = std::mem::take(&mut *deliveries.resend.lock().expect("not poisoned"));
    for (k, p) in &again {
        send(producer, run, deliveries, k.as_deref(), p)?;
    }
    Ok(again.len())
}

/// Produces the stream of `spec`, recording each message in `truth` if given. A message whose
/// delivery fails (the broker down too long, a producer turned fatal) is sent again, up to five
/// rounds after the stream; `failed` counts what still did not arrive.
pub fn produce(
    run: &Run<'_>,
    spec: Spec,
    mut truth: Option<&mut Truth>,
) -> Result<Report, KafkaError> {
    let deliveries = Arc::new(Deliveries::default());
    let mut producer: ThreadedProducer<Ctx> =
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
        send(
            &mut producer,
            run,
            &deliveries,
            msg.key.as_deref().map(str::as_bytes),
            &msg.payload,
        )?;
        if let Some(t) = truth.as_deref_mut() {
            t.record(&msg);
        }
        r.produced += 1;
        if r.produced % 1024 == 0 {
            (run.progress)(r.produced);
            resend_failed(&mut producer, run, &deliveries)?;
        }
    }
    (run.progress)(r.produced);
    for _ in 0..5 {
        producer.flush(Duration::from_secs(300))?;
        if resend_failed(&mut producer, run, &deliveries)? == 0 {
            break;
        }
    }
    producer.flush(Duration::from_secs(300))?;
    r.seconds = started.elapsed().as_secs_f64();
    r.delivered = deliveries.ok.load(Ordering::Relaxed);
    r.failed = deliveries.resend.lock().expect("not poisoned").len() as u64;
    r.first_error = deliveries.first_error.lock().expect("not poisoned").clone();
    Ok(r)
}
