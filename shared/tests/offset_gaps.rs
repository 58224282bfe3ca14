//! The offset-gap guard against the real broker (start it with `make up`): a consumer that is
//! served a later offset than it expects goes back to the first missing offset and receives every
//! message once, in order — nothing from before the seek (librdkafka has prefetched thousands of
//! them) slips through as if the gap had been accepted.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use strata_shared::offset_gaps::GapGuard;
use strata_shared::{kafka, Config};

const MESSAGES: i64 = 5_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_served_past_a_gap_reads_the_missing_messages_once_in_order() {
    let cfg = Config::load(None).expect("configuration").kafka;
    let topic = format!("strata-test-gaps-{}", uuid::Uuid::new_v4().simple());
    kafka::create_topics(&cfg, &[(&topic, 1)])
        .await
        .expect("create the topic (run `make up`)");

    // Several record batches, so the later part is a different batch from the first.
    let producer: BaseProducer = kafka::producer_config(&cfg).create().expect("producer");
    for chunk in 0..10 {
        for i in chunk * (MESSAGES / 10)..(chunk + 1) * (MESSAGES / 10) {
            let payload = i.to_string();
            producer
                .send(BaseRecord::<(), _>::to(&topic).payload(&payload))
                .expect("queue a message");
        }
        producer.flush(Duration::from_secs(30)).expect("delivered");
    }

    // The broker "skips" offsets 0..3000: the consumer starts at 3000 while 0 is expected.
    let consumer: BaseConsumer = kafka::consumer_config(&cfg, &format!("{topic}-g"))
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(3_000))
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut guard = GapGuard::default();
    guard.expect(0, 0);
    // Let librdkafka prefetch from 3000 on before the first message is looked at.
    std::thread::sleep(Duration::from_secs(2));

    let mut admitted: Vec<(i64, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (admitted.len() as i64) < MESSAGES && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("consume");
        if guard.admit(&consumer, &m) {
            let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            admitted.push((m.offset(), payload));
        }
    }
    assert_eq!(guard.found, 1, "one gap, read again once");
    let want: Vec<(i64, String)> = (0..MESSAGES).map(|i| (i, i.to_string())).collect();
    assert_eq!(admitted.len(), want.len(), "every message once");
    assert_eq!(
        admitted, want,
        "in offset order, nothing skipped or repeated"
    );
}
