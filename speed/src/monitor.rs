//! Background watch, off the consumer's hot path: part and merge counts of Strata's ClickHouse
//! tables (what the seed's runbook checks in `system.parts` / `system.merges`), consumer lag
//! (high watermark − committed offset, per partition), and retention — rollup partitions (one
//! per ingest day) older than `speed.retention_days` are dropped.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use clickhouse::Client;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Deserialize;
use strata_shared::Config;

use crate::clickhouse::schema::ROLLUP_TABLE;
use crate::metrics::Metrics;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TableCount {
    table: String,
    n: u64,
}

/// Partitions (as `YYYY-MM-DD` ingest days) older than `retention_days` before `today`.
pub fn expired_partitions(
    partitions: &[String],
    today: NaiveDate,
    retention_days: u32,
) -> Vec<String> {
    let oldest_kept = today - chrono::Duration::days(i64::from(retention_days) - 1);
    partitions
        .iter()
        .filter(|p| NaiveDate::parse_from_str(p, "%Y-%m-%d").is_ok_and(|d| d < oldest_kept))
        .cloned()
        .collect()
}

/// Runs forever: gauges every 15 s, retention every hour (and at start).
pub async fn run(cfg: Config, metrics: Arc<Metrics>) {
    let client = strata_shared::clickhouse::client(&cfg.clickhouse);
    let watermarks: Option<Arc<BaseConsumer>> =
        match strata_shared::kafka::base_config(&cfg.kafka).create() {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!(error = %e, "no Kafka client for lag metrics");
                None
            }
        };
    let mut tick = 0u64;
    loop {
        if let Some(c) = &watermarks {
            let (c, m, topic) = (c.clone(), metrics.clone(), cfg.kafka.topic.clone());
            let _ = tokio::task::spawn_blocking(move || report_lag(&c, &topic, &m)).await;
        }
        if let Err(e) = gauges(&client, &cfg.clickhouse.database, &metrics).await {
            tracing::debug!(error = %e, "cannot read ClickHouse system tables");
        }
        if tick % 240 == 0 {
            match enforce_retention(&client, &cfg, &metrics).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(dropped = n, "retention dropped old rollup partitions"),
                Err(e) => tracing::warn!(error = %e, "retention check failed"),
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
}

/// Lag per partition: the broker's high watermark minus the offset committed after the last
/// write. (On tansu, whose high watermarks are wrong, this gauge is not meaningful.)
fn report_lag(c: &BaseConsumer, topic: &str, metrics: &Metrics) {
    let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return;
    };
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return;
    };
    for p in t.partitions() {
        let label = p.id().to_string();
        let committed = metrics.committed_offset.with_label_values(&[&label]).get();
        if let Ok((_, high)) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(5)) {
            if committed > 0 {
                metrics
                    .lag
                    .with_label_values(&[&label])
                    .set((high - committed).max(0));
            }
        }
    }
}

/// Reads the active parts and running merges of the database's tables into the gauges.
pub async fn gauges(
    client: &Client,
    db: &str,
    metrics: &Metrics,
) -> Result<(), clickhouse::error::Error> {
    let parts: Vec<TableCount> = client
        .query("SELECT table, count() AS n FROM system.parts WHERE database = ? AND active GROUP BY table")
        .bind(db)
        .fetch_all()
        .await?;
    for t in parts {
        metrics
            .active_parts
            .with_label_values(&[&t.table])
            .set(t.n as i64);
    }
    let merges: Vec<TableCount> = client
        .query("SELECT table, count() AS n FROM system.merges WHERE database = ? GROUP BY table")
        .bind(db)
        .fetch_all()
        .await?;
    metrics.merges.reset();
    for t in merges {
        metrics
            .merges
            .with_label_values(&[&t.table])
            .set(t.n as i64);
    }
    Ok(())
}

/// Drops expired partitions of the rollup table; returns how many.
pub async fn enforce_retention(
    client: &Client,
    cfg: &Config,
    metrics: &Metrics,
) -> Result<usize, clickhouse::error::Error> {
    let partitions: Vec<String> = client
        .query("SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active")
        .bind(&cfg.clickhouse.database)
        .bind(ROLLUP_TABLE)
        .fetch_all()
        .await?;
    let expired = expired_partitions(
        &partitions,
        chrono::Utc::now().date_naive(),
        cfg.speed.retention_days,
    );
    for p in &expired {
        // `p` parsed as a date above; bound as a quoted literal all the same.
        client
            .query(&format!("ALTER TABLE {ROLLUP_TABLE} DROP PARTITION ?"))
            .bind(p.as_str())
            .execute()
            .await?;
        metrics.partitions_dropped.inc();
    }
    Ok(expired.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_partitions_past_retention_expire() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let parts: Vec<String> = [
            "2026-08-26",
            "2026-08-27",
            "2026-11-25",
            "2025-01-01",
            "garbage",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // 90 days kept: 2026-08-28 ..= 2026-11-25.
        assert_eq!(
            expired_partitions(&parts, today, 90),
            vec!["2026-08-26", "2026-08-27", "2025-01-01"]
        );
        assert_eq!(
            expired_partitions(&parts, today, 1),
            vec!["2026-08-26", "2026-08-27", "2025-01-01"]
        );
        assert!(expired_partitions(&parts, today, 1000).is_empty());
    }
}
