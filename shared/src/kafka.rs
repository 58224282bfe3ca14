//! Kafka clients built from `[kafka]`: consumer and producer settings, topic creation.
//!
//! Strata's consumers never auto-commit and never auto-store offsets: a layer stores an offset
//! only once the data up to it is safe in its sink. Producers are idempotent with `acks=all`.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::error::Result;

/// Partitions of the events and dead-letter topics when Strata creates them.
pub const DEFAULT_PARTITIONS: i32 = 12;

/// Settings every client shares: brokers, then `kafka.options`.
pub fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.options {
        c.set(k, v);
    }
    c
}

/// A consumer in `group_id` with manual offset storage; `kafka.consumer_options` apply last.
///
/// ```
/// let cfg = strata_shared::Config::default();
/// let c = strata_shared::kafka::consumer_config(&cfg.kafka, "strata-speed");
/// assert_eq!(c.get("enable.auto.commit"), Some("false"));
/// assert_eq!(c.get("group.id"), Some("strata-speed"));
/// ```
pub fn consumer_config(cfg: &KafkaConfig, group_id: &str) -> ClientConfig {
    let mut c = base_config(cfg);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // How long the broker may take to answer a fetch when it has nothing yet (librdkafka's
        // default; a broker with data answers at once). Not less: tansu (this build) also cuts
        // its listing of a partition's log objects in S3 at this deadline, oldest first, so a
        // consumer far into a partition whose listing takes longer gets nothing back. At 100 ms
        // a catch-up after faults read ≈ 740 msg/s; at 500 ms ≈ 6–9k (BENCHMARKS.md, "Chaos").
        .set("fetch.wait.max.ms", "500")
        .set(
            "session.timeout.ms",
            cfg.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (cfg.session_timeout.as_millis() / 3).max(100).to_string(),
        );
    for (k, v) in &cfg.consumer_options {
        c.set(k, v);
    }
    c
}

/// A durable producer: `acks=all`, idempotence, zstd, a short linger; `kafka.producer_options`
/// apply last.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(cfg);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("message.timeout.ms", "300000");
    for (k, v) in &cfg.producer_options {
        c.set(k, v);
    }
    c
}

/// Creates each `(topic, partitions)` that does not exist yet; existing topics are left alone.
pub async fn create_topics(cfg: &KafkaConfig, topics: &[(&str, i32)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(cfg).create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, parts)| NewTopic::new(name, *parts, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(new.iter(), &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::error!(topic = %name, error = %code, "could not create topic");
                return Err(rdkafka::error::KafkaError::AdminOp(code).into());
            }
        }
    }
    Ok(())
}

/// The number of partitions of `topic` (from the broker's metadata).
pub fn partition_count(cfg: &KafkaConfig, topic: &str) -> Result<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = base_config(cfg).create()?;
    let md = client.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len()))
}

/// Creates the events topic and the dead-letter topic if missing.
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<()> {
    create_topics(
        cfg,
        &[
            (&cfg.topic, DEFAULT_PARTITIONS),
            (&cfg.dlq_topic, DEFAULT_PARTITIONS),
        ],
    )
    .await
}

/// Applies a rebalance the way Strata's consumers need it: `on_assign` may set each partition's
/// start offset in the list before it is assigned; `on_revoke` runs (and must finish writing what
/// it holds for those partitions) before they are given up. Works with eager and cooperative
/// assignment. Call it from `ConsumerContext::rebalance`.
pub fn apply_rebalance<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    err: rdkafka::types::RDKafkaRespErr,
    tpl: &mut rdkafka::TopicPartitionList,
    on_assign: impl FnOnce(&mut rdkafka::TopicPartitionList),
    on_revoke: impl FnOnce(&rdkafka::TopicPartitionList),
) {
    use rdkafka::consumer::{Consumer, RebalanceProtocol};
    use rdkafka::types::RDKafkaRespErr as E;
    let cooperative = matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    );
    let result = match err {
        E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
            on_assign(tpl);
            if cooperative {
                consumer.incremental_assign(tpl)
            } else {
                consumer.assign(tpl)
            }
        }
        E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
            on_revoke(tpl);
            if cooperative {
                consumer.incremental_unassign(tpl)
            } else {
                consumer.unassign()
            }
        }
        other => {
            tracing::error!(error = ?other, "rebalance error");
            consumer.unassign()
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "applying the rebalance failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_options_apply_last_but_never_to_managed_keys() {
        let mut k = KafkaConfig::default();
        k.options.insert("client.id".into(), "mine".into());
        k.consumer_options
            .insert("auto.offset.reset".into(), "latest".into());
        k.producer_options.insert("linger.ms".into(), "50".into());
        let c = consumer_config(&k, "g");
        assert_eq!(c.get("client.id"), Some("mine"));
        assert_eq!(c.get("auto.offset.reset"), Some("latest"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("session.timeout.ms"), Some("6000"));
        let p = producer_config(&k);
        assert_eq!(p.get("linger.ms"), Some("50"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }
}
