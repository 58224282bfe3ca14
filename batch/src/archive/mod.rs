//! The archive: every valid event of `metrics-events`, appended to the Delta table `events`
//! exactly once (consumer group `strata-archive`).
//!
//! [`consumer`] reads and validates (refusals are the speed layer's to dead-letter; the archive
//! skips them), batches events and hands them to [`writer`], whose commits carry the Kafka
//! offsets they cover. On assignment the consumer seeks right after the stored offsets.

pub mod compaction;
pub mod consumer;
pub mod progress;
pub mod schema;
pub mod writer;
