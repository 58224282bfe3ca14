//! Reading and replaying dead letters: a selection (reason, time range) of `dead_letters`
//! listed, one shown, or replayed — each re-validated with the configured rules of today, the
//! valid ones produced to `kafka.topic` byte for byte as they were (so with their original
//! event id) and recorded in `dead_letter_replays`; those already replayed are skipped, those
//! still invalid reported with their new reason.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use datafusion::prelude::{col, lit, SessionContext};
use rdkafka::producer::{FutureProducer, FutureRecord};
use strata_shared::validate::check_message;
use strata_shared::{kafka, Config};

use super::table::{
    from_record_batch, load, record_replays, DeadLetter, Replayed, DEAD_LETTERS_TABLE,
    REPLAYS_TABLE,
};
use super::DeadLetterError;

/// Which dead letters.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this reason code.
    pub reason: Option<String>,
    /// Refused at or after (Unix ms).
    pub from_ms: Option<i64>,
    /// Refused before (Unix ms).
    pub to_ms: Option<i64>,
}

/// The selected dead letters, oldest first (empty if the table does not exist yet).
pub async fn select(cfg: &Config, sel: &Selection) -> Result<Vec<DeadLetter>, DeadLetterError> {
    read(cfg, sel, None).await
}

/// [`select`], narrowed to one `(partition, offset)` when `at` is given (pushed into the scan).
async fn read(
    cfg: &Config,
    sel: &Selection,
    at: Option<(i32, i64)>,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let Some(table) = load(cfg, DEAD_LETTERS_TABLE).await? else {
        return Ok(Vec::new());
    };
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let mut df = ctx.read_table(table.table_provider().await?)?;
    if let Some((p, o)) = at {
        df = df.filter(
            col("dlq_partition")
                .eq(lit(p))
                .and(col("dlq_offset").eq(lit(o))),
        )?;
    }
    if let Some(r) = &sel.reason {
        df = df.filter(col("reason").eq(lit(r.as_str())))?;
    }
    if let Some(f) = sel.from_ms {
        df = df.filter(col("rejected_at_ms").gt_eq(lit(f)))?;
    }
    if let Some(t) = sel.to_ms {
        df = df.filter(col("rejected_at_ms").lt(lit(t)))?;
    }
    let df = df.sort(vec![
        col("rejected_at_ms").sort(true, false),
        col("dlq_partition").sort(true, false),
        col("dlq_offset").sort(true, false),
    ])?;
    let mut out = Vec::new();
    for b in df.collect().await? {
        out.extend(from_record_batch(&b)?);
    }
    Ok(out)
}

/// The dead letter at `partition:offset` of the dead-letter topic.
pub async fn show(cfg: &Config, key: &str) -> Result<DeadLetter, DeadLetterError> {
    let (p, o) = key
        .split_once(':')
        .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)))
        .ok_or_else(|| DeadLetterError::Invalid(format!("{key:?} is not PARTITION:OFFSET")))?;
    read(cfg, &Selection::default(), Some((p, o)))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| DeadLetterError::Invalid(format!("no dead letter {key}")))
}

/// Count, first and last refusal time per reason.
pub fn by_reason(rows: &[DeadLetter]) -> BTreeMap<String, (u64, i64, i64)> {
    let mut out: BTreeMap<String, (u64, i64, i64)> = BTreeMap::new();
    for d in rows {
        let e = out
            .entry(d.reason.clone())
            .or_insert((0, d.rejected_at_ms, d.rejected_at_ms));
        e.0 += 1;
        e.1 = e.1.min(d.rejected_at_ms);
        e.2 = e.2.max(d.rejected_at_ms);
    }
    out
}

/// The dead letters already replayed, as (partition, offset).
async fn replayed(cfg: &Config) -> Result<BTreeSet<(i32, i64)>, DeadLetterError> {
    let Some(table) = load(cfg, REPLAYS_TABLE).await? else {
        return Ok(BTreeSet::new());
    };
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let df = ctx
        .read_table(table.table_provider().await?)?
        .select_columns(&["dlq_partition", "dlq_offset"])?;
    let mut out = BTreeSet::new();
    for b in df.collect().await? {
        let p = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int32Array>()
            .ok_or_else(|| DeadLetterError::Corrupt("dlq_partition is not Int32".into()))?;
        let o = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .ok_or_else(|| DeadLetterError::Corrupt("dlq_offset is not Int64".into()))?;
        for i in 0..b.num_rows() {
            out.insert((p.value(i), o.value(i)));
        }
    }
    Ok(out)
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayReport {
    /// Dead letters in the selection.
    pub selected: usize,
    /// Skipped: replayed by an earlier run.
    pub already_replayed: usize,
    /// Valid now, produced and acknowledged.
    pub replayed: usize,
    /// Still refused, by today's reason code.
    pub still_invalid: BTreeMap<String, u64>,
}

/// Replays the selection (or, with `dry_run`, only re-validates it); `progress(done, total)`
/// is called as dead letters are handled.
pub async fn replay(
    cfg: &Config,
    sel: &Selection,
    dry_run: bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<ReplayReport, DeadLetterError> {
    let rows = select(cfg, sel).await?;
    let done = replayed(cfg).await?;
    let mut report = ReplayReport {
        selected: rows.len(),
        ..ReplayReport::default()
    };
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create()?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut sent = Vec::new();
    let mut pending = Vec::new();
    for (i, d) in rows.iter().enumerate() {
        progress(i, rows.len());
        if done.contains(&(d.dlq_partition, d.dlq_offset)) {
            report.already_replayed += 1;
            continue;
        }
        match check_message(Some(&d.payload), &cfg.validation, now) {
            Err(reject) => {
                *report
                    .still_invalid
                    .entry(reject.code().to_owned())
                    .or_default() += 1;
            }
            Ok(decoded) if !dry_run => {
                let e = decoded.event;
                let record = FutureRecord::to(&cfg.kafka.topic)
                    .key(&e.metric_name)
                    .payload(&d.payload);
                let delivery = producer
                    .send_result(record)
                    .map_err(|(e, _)| DeadLetterError::Kafka(e))?;
                pending.push(delivery);
                sent.push(Replayed {
                    dlq_partition: d.dlq_partition,
                    dlq_offset: d.dlq_offset,
                    event_id: e.event_id,
                    replayed_at_ms: now,
                });
            }
            Ok(_) => report.replayed += 1,
        }
    }
    // Every one acknowledged (acks=all) before it counts as replayed.
    for f in pending {
        match tokio::time::timeout(Duration::from_secs(300), f).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err((e, _)))) => return Err(DeadLetterError::Kafka(e)),
            _ => return Err(DeadLetterError::Invalid(
                "the broker did not acknowledge the replay; run it again (nothing counts twice)"
                    .into(),
            )),
        }
    }
    progress(rows.len(), rows.len());
    if !dry_run {
        report.replayed = sent.len();
        record_replays(cfg, &sent).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_counted_with_their_first_and_last_time() {
        let d = |reason: &str, t: i64| DeadLetter {
            dlq_partition: 0,
            dlq_offset: t,
            payload: Vec::new(),
            reason: reason.into(),
            error: String::new(),
            origin_topic: String::new(),
            origin_partition: 0,
            origin_offset: 0,
            rejected_at_ms: t,
            service: String::new(),
        };
        let r = by_reason(&[d("a", 5), d("b", 1), d("a", 2)]);
        assert_eq!(r["a"], (2, 2, 5));
        assert_eq!(r["b"], (1, 1, 1));
    }
}
