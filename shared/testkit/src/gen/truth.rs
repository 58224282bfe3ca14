//! Ground truth: the exact aggregates a generated stream must produce, per (series, minute) and
//! per (series, hour) — count, sum, min, max and exact quantiles — after dropping duplicate
//! event_ids and every malformed message.
//!
//! Written as JSON Lines: one [`TruthRow`] per bucket (`"tier":"1m"` or `"1h"`), then one
//! [`TruthSummary`] line (`"tier":"summary"`). Tests and benchmarks compare layers against it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::{Kind, Message, Spec};
use strata_shared::stats::Summary;

/// Labels of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesLabels {
    /// Metric name.
    pub metric_name: String,
    /// Source.
    pub source: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// The exact aggregate of one (series, bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthRow {
    /// `1m` or `1h`.
    pub tier: String,
    /// The series.
    pub series_id: u64,
    /// Its labels.
    #[serde(flatten)]
    pub labels: SeriesLabels,
    /// Bucket start, Unix ms (a whole minute or hour).
    pub start_ms: i64,
    /// Count, sum, min, max, quantiles.
    #[serde(flatten)]
    pub stats: Summary,
}

/// Totals of the stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TruthSummary {
    /// Always `summary`.
    pub tier: String,
    /// Messages produced.
    pub produced: u64,
    /// Distinct valid events (what every layer must count).
    pub valid_unique: u64,
    /// Repeated event_ids (not to be counted again).
    pub duplicates: u64,
    /// Valid events that were late.
    pub late: u64,
    /// Malformed messages by reason code.
    pub malformed: BTreeMap<String, u64>,
    /// Distinct series seen.
    pub series: u64,
    /// The generator spec, when known.
    pub spec: Option<Spec>,
}

/// Builds the truth from messages as they are produced.
#[derive(Default)]
pub struct Truth {
    seen: HashSet<String>,
    minute: HashMap<(u64, i64), Vec<f64>>,
    hour: HashMap<(u64, i64), Vec<f64>>,
    labels: HashMap<u64, SeriesLabels>,
    summary: TruthSummary,
}

/// Start of the minute holding `ms`.
pub fn minute_start(ms: i64) -> i64 {
    ms.div_euclid(60_000) * 60_000
}

/// Start of the hour holding `ms`.
pub fn hour_start(ms: i64) -> i64 {
    ms.div_euclid(3_600_000) * 3_600_000
}

impl Truth {
    /// An empty truth for a stream generated from `spec`.
    pub fn new(spec: Option<Spec>) -> Self {
        Self {
            summary: TruthSummary {
                spec,
                ..TruthSummary::default()
            },
            ..Self::default()
        }
    }

    /// Accounts for one produced message.
    pub fn record(&mut self, m: &Message) {
        self.summary.produced += 1;
        match (&m.kind, &m.event) {
            (Kind::Malformed(code), _) => {
                *self
                    .summary
                    .malformed
                    .entry((*code).to_owned())
                    .or_insert(0) += 1
            }
            (_, Some(e)) => {
                if !self.seen.insert(e.event_id.clone()) {
                    self.summary.duplicates += 1;
                    return;
                }
                self.summary.valid_unique += 1;
                if m.kind == Kind::Late {
                    self.summary.late += 1;
                }
                let id = e.series_id();
                self.labels.entry(id).or_insert_with(|| SeriesLabels {
                    metric_name: e.metric_name.clone(),
                    source: e.source.clone(),
                    tags: e.tags.clone(),
                });
                self.minute
                    .entry((id, minute_start(e.timestamp_ms)))
                    .or_default()
                    .push(e.value);
                self.hour
                    .entry((id, hour_start(e.timestamp_ms)))
                    .or_default()
                    .push(e.value);
            }
            (_, None) => unreachable!("valid messages carry their event"),
        }
    }

    /// The totals so far.
    pub fn summary(&self) -> TruthSummary {
        TruthSummary {
            tier: "summary".into(),
            series: self.labels.len() as u64,
            ..self.summary.clone()
        }
    }

    /// Every bucket's exact aggregate, sorted by tier, series and time.
    pub fn rows(&mut self) -> Vec<TruthRow> {
        let mut rows = Vec::with_capacity(self.minute.len() + self.hour.len());
        for (tier, buckets) in [("1m", &mut self.minute), ("1h", &mut self.hour)] {
            for (&(series_id, start_ms), values) in buckets.iter_mut() {
                rows.push(TruthRow {
                    tier: tier.to_owned(),
                    series_id,
                    labels: self.labels[&series_id].clone(),
                    start_ms,
                    stats: Summary::of(values).expect("buckets are never empty"),
                });
            }
        }
        rows.sort_by(|a, b| {
            (&a.tier, a.series_id, a.start_ms).cmp(&(&b.tier, b.series_id, b.start_ms))
        });
        rows
    }

    /// Writes every row, then the summary, as JSON Lines.
    pub fn write_jsonl(&mut self, mut w: impl Write) -> std::io::Result<()> {
        for row in self.rows() {
            serde_json::to_writer(&mut w, &row)?;
            w.write_all(b"\n")?;
        }
        serde_json::to_writer(&mut w, &self.summary())?;
        w.write_all(b"\n")?;
        w.flush()
    }
}

/// Reads a truth file written by [`Truth::write_jsonl`].
pub fn read_jsonl(r: impl BufRead) -> std::io::Result<(Vec<TruthRow>, TruthSummary)> {
    let mut rows = Vec::new();
    let mut summary = None;
    for line in r.lines() {
        let line = line?;
        if line.contains("\"tier\":\"summary\"") {
            summary = Some(serde_json::from_str(&line)?);
        } else if !line.trim().is_empty() {
            rows.push(serde_json::from_str(&line)?);
        }
    }
    let summary = summary.ok_or_else(|| std::io::Error::other("truth file has no summary line"))?;
    Ok((rows, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shared::event::MetricEvent;

    fn msg(kind: Kind, e: MetricEvent) -> Message {
        Message {
            key: None,
            payload: Vec::new(),
            kind,
            event: Some(e),
        }
    }

    #[test]
    fn duplicates_and_malformed_are_not_counted() {
        let mut t = Truth::new(None);
        let e1 = MetricEvent::new("a", "m", 1.0, 60_000 + 5);
        let e2 = MetricEvent::new("b", "m", 3.0, 60_000 + 59_999);
        let e3 = MetricEvent::new("c", "m", 10.0, 120_000);
        t.record(&msg(Kind::Valid, e1.clone()));
        t.record(&msg(Kind::Duplicate, e1));
        t.record(&msg(Kind::Valid, e2));
        t.record(&msg(Kind::Late, e3));
        t.record(&Message {
            key: None,
            payload: vec![],
            kind: Kind::Malformed("bad_json"),
            event: None,
        });
        let s = t.summary();
        assert_eq!(
            (s.produced, s.valid_unique, s.duplicates, s.late, s.series),
            (5, 3, 1, 1, 1)
        );
        assert_eq!(s.malformed["bad_json"], 1);
        let rows = t.rows();
        let m: Vec<_> = rows.iter().filter(|r| r.tier == "1m").collect();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (
                m[0].start_ms,
                m[0].stats.count,
                m[0].stats.sum,
                m[0].stats.quantiles[0]
            ),
            (60_000, 2, 4.0, 2.0)
        );
        let h: Vec<_> = rows.iter().filter(|r| r.tier == "1h").collect();
        assert_eq!(
            (h.len(), h[0].start_ms, h[0].stats.count, h[0].stats.max),
            (1, 0, 3, 10.0)
        );
    }

    #[test]
    fn round_trips_through_jsonl() {
        let mut t = Truth::new(Some(Spec::default()));
        t.record(&msg(
            Kind::Valid,
            MetricEvent::new("a", "m", 2.5, 1_750_000_000_000).with_tag("k", "v"),
        ));
        let mut buf = Vec::new();
        t.write_jsonl(&mut buf).unwrap();
        let (rows, summary) = read_jsonl(&buf[..]).unwrap();
        assert_eq!(rows, t.rows());
        assert_eq!(summary, t.summary());
    }

    #[test]
    fn bucket_starts_handle_negative_times() {
        assert_eq!(minute_start(-1), -60_000);
        assert_eq!(hour_start(3_600_000 * 5 + 1), 3_600_000 * 5);
    }
}
