//! How fast the broker serves a topic's backlog to one plain consumer: every partition read from
//! its first offset for SECONDS, printing messages per second and librdkafka's statistics of the
//! broker round trips (`rtt`: a Fetch against tansu lists the partition's objects in S3 and reads
//! one object per record batch, so its round trip is what a catch-up waits on).
//!
//! `eval "$(infra/stack.sh env)"; cargo run --example fetch_probe -- TOPIC [SECONDS] [key=value ...]`
//! (extra librdkafka consumer options last). Prints `probe: msgs=N rate=N` at the end. Several
//! probes at once show how the broker's read rate is shared.
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientContext, Statistics, TopicPartitionList};

struct Stats;
impl ClientContext for Stats {
    fn stats(&self, s: Statistics) {
        for b in s.brokers.values() {
            if let Some(rtt) = &b.rtt {
                eprintln!(
                    "  broker {}: rtt avg {:.0} ms p99 {:.0} ms max {:.0} ms, rx {} B",
                    b.name,
                    rtt.avg as f64 / 1000.0,
                    rtt.p99 as f64 / 1000.0,
                    rtt.max as f64 / 1000.0,
                    b.rxbytes
                );
            }
        }
    }
}
impl rdkafka::consumer::ConsumerContext for Stats {}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let topic = args.first().expect("TOPIC").clone();
    let secs: u64 = args.get(1).map_or(Ok(30), |s| s.parse())?;
    let cfg = strata_shared::Config::load(None)?;
    let mut c = strata_shared::kafka::consumer_config(
        &cfg.kafka,
        &format!("probe-{}", uuid::Uuid::new_v4()),
    );
    c.set("statistics.interval.ms", "5000");
    for kv in args.iter().skip(2) {
        let (k, v) = kv.split_once('=').expect("key=value");
        c.set(k, v);
    }
    let consumer: BaseConsumer<Stats> = c.create_with_context(Stats)?;
    let meta = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let partitions = meta
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    anyhow::ensure!(partitions > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let (mut n, mut last_n, mut last) = (0u64, 0u64, Instant::now());
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            n += 1;
        }
        if last.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "[{:>5.1}s] {} msgs, {:.0} msg/s",
                start.elapsed().as_secs_f64(),
                n,
                (n - last_n) as f64 / last.elapsed().as_secs_f64()
            );
            (last_n, last) = (n, Instant::now());
        }
    }
    println!(
        "probe: msgs={n} rate={:.0}",
        n as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}
