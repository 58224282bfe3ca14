//! strata-speed's self-metrics, served on `/metrics` (prefix `strata_`, label `service="speed"`):
//! what the seed's runbook watches — throughput, dead letters, insert latency, lag, committed
//! offsets, and ClickHouse part and merge counts.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Per-outcome message counters.
pub struct Outcomes {
    /// Counted under its own series.
    pub accepted: IntCounter,
    /// Dropped as a duplicate event_id.
    pub duplicate: IntCounter,
    /// Sent to the dead-letter topic.
    pub rejected: IntCounter,
    /// Counted under the overflow series.
    pub overflow: IntCounter,
    /// Re-read after a restart to rebuild the duplicate filter.
    pub warmup: IntCounter,
}

/// Every metric of the speed layer.
pub struct Metrics {
    /// Kafka messages read (including warm-up re-reads).
    pub consumed: IntCounter,
    /// Messages by outcome: accepted, duplicate, rejected, overflow, warmup.
    pub outcomes: IntCounterVec,
    /// The children of `outcomes`, resolved once (the hot path must not hash label values).
    pub outcome: Outcomes,
    /// Dead letters by reason code.
    pub dead_letters: IntCounterVec,
    /// Rows written to ClickHouse (data rows and offset markers).
    pub rows_inserted: IntCounter,
    /// Events folded into the rollups written.
    pub events_inserted: IntCounter,
    /// Inserts by result: ok, retry, failed.
    pub inserts: IntCounterVec,
    /// Seconds per successful insert.
    pub insert_seconds: Histogram,
    /// Series folded into overflow, per metric.
    pub overflow_series: IntGaugeVec,
    /// Consumer lag per partition (high watermark − position; wrong on brokers with broken watermarks).
    pub lag: IntGaugeVec,
    /// Last offset committed (next offset to read) per partition.
    pub committed_offset: IntGaugeVec,
    /// Active ClickHouse parts per Strata table.
    pub active_parts: IntGaugeVec,
    /// Running ClickHouse merges per Strata table.
    pub merges: IntGaugeVec,
    /// Batches waiting for ClickHouse.
    pub pending_batches: IntGauge,
    /// 1 while consumption is paused because ClickHouse is behind or down.
    pub paused: IntGauge,
    /// Partitions dropped by retention.
    pub partitions_dropped: IntCounter,
    /// Offset gaps the broker served, each read again from the first missing offset.
    pub offset_gaps: IntCounter,
    /// Partition assignments by how consumption starts: `fresh` (no offsets in ClickHouse),
    /// `warm_up` (the duplicate filter is rebuilt by re-reading up to `dedup_window` offsets),
    /// `filter_kept` (the partition came back and its filter is still current).
    pub assignments: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let outcomes = IntCounterVec::new(
            Opts::new("speed_messages_total", "Messages by outcome"),
            &["outcome"],
        )?;
        let outcome = Outcomes {
            accepted: outcomes.with_label_values(&["accepted"]),
            duplicate: outcomes.with_label_values(&["duplicate"]),
            rejected: outcomes.with_label_values(&["rejected"]),
            overflow: outcomes.with_label_values(&["overflow"]),
            warmup: outcomes.with_label_values(&["warmup"]),
        };
        let m = Self {
            consumed: IntCounter::new("speed_consumed_total", "Kafka messages read")?,
            outcomes,
            outcome,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "speed_dead_letters_total",
                    "Messages sent to the dead-letter topic, by reason",
                ),
                &["reason"],
            )?,
            rows_inserted: IntCounter::new(
                "speed_rows_inserted_total",
                "Rows written to ClickHouse",
            )?,
            events_inserted: IntCounter::new(
                "speed_events_inserted_total",
                "Events folded into written rollups",
            )?,
            inserts: IntCounterVec::new(
                Opts::new("speed_inserts_total", "ClickHouse inserts by result"),
                &["result"],
            )?,
            insert_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "speed_insert_seconds",
                    "Latency of successful ClickHouse inserts",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )?,
            overflow_series: IntGaugeVec::new(
                Opts::new(
                    "speed_overflow_series",
                    "Series folded into the overflow series, per metric",
                ),
                &["metric"],
            )?,
            lag: IntGaugeVec::new(
                Opts::new("speed_consumer_lag", "Consumer lag per partition"),
                &["partition"],
            )?,
            committed_offset: IntGaugeVec::new(
                Opts::new(
                    "speed_committed_offset",
                    "Last committed offset per partition",
                ),
                &["partition"],
            )?,
            active_parts: IntGaugeVec::new(
                Opts::new(
                    "speed_clickhouse_active_parts",
                    "Active parts of Strata's ClickHouse tables",
                ),
                &["table"],
            )?,
            offset_gaps: IntCounter::new(
                "speed_offset_gaps_total",
                "Offset gaps the broker served, read again",
            )?,
            assignments: IntCounterVec::new(
                Opts::new(
                    "speed_partition_assignments_total",
                    "Partition assignments by how consumption starts",
                ),
                &["start"],
            )?,
            merges: IntGaugeVec::new(
                Opts::new(
                    "speed_clickhouse_merges",
                    "Running merges of Strata's tables",
                ),
                &["table"],
            )?,
            pending_batches: IntGauge::new(
                "speed_pending_batches",
                "Batches waiting for ClickHouse",
            )?,
            paused: IntGauge::new("speed_paused", "1 while consumption is paused")?,
            partitions_dropped: IntCounter::new(
                "speed_partitions_dropped_total",
                "Partitions dropped by retention",
            )?,
        };
        registry.register(Box::new(m.consumed.clone()))?;
        registry.register(Box::new(m.outcomes.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.rows_inserted.clone()))?;
        registry.register(Box::new(m.events_inserted.clone()))?;
        registry.register(Box::new(m.inserts.clone()))?;
        registry.register(Box::new(m.insert_seconds.clone()))?;
        registry.register(Box::new(m.overflow_series.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.committed_offset.clone()))?;
        registry.register(Box::new(m.active_parts.clone()))?;
        registry.register(Box::new(m.merges.clone()))?;
        registry.register(Box::new(m.pending_batches.clone()))?;
        registry.register(Box::new(m.paused.clone()))?;
        registry.register(Box::new(m.partitions_dropped.clone()))?;
        registry.register(Box::new(m.assignments.clone()))?;
        registry.register(Box::new(m.offset_gaps.clone()))?;
        for code in strata_shared::Reject::CODES {
            m.dead_letters.with_label_values(&[code]);
        }
        Ok(m)
    }
}
