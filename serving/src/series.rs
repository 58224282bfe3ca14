//! Series as the query APIs expose them: which Prometheus names and labels a Strata metric has,
//! and back from a name to the metric and statistic it stands for.
//!
//! Metric `m` (dots become underscores: `http.latency` → `http_latency`) is exposed as
//! `m_count`, `m_sum`, `m_min`, `m_max`, `m_avg` and `m{quantile="0.5|0.9|0.95|0.99"}` (the
//! Prometheus summary convention). Labels: the event's tags and `source`.

use std::collections::BTreeMap;

use strata_shared::stats::QUANTILES;
use strata_shared::validate::{KIND_TAG, SAMPLE_KIND};

/// Labels of one exposed series (tags, `source`, and `__name__` / `quantile` once exposed).
pub type Labels = BTreeMap<String, String>;

/// One series of the rollups, as both layers store it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesInfo {
    /// The metric name as published.
    pub metric: String,
    /// The stable series id (shared::series).
    pub series_id: u64,
    /// The producing service.
    pub source: String,
    /// The event tags.
    pub tags: BTreeMap<String, String>,
}

impl SeriesInfo {
    /// Tags plus `source` (an empty source is no label, as Prometheus treats empty labels), the
    /// kind tag left out.
    pub fn labels(&self) -> Labels {
        let mut l = self.tags.clone();
        l.remove(KIND_TAG);
        if !self.source.is_empty() {
            l.insert("source".into(), self.source.clone());
        }
        l
    }

    /// Whether it is a series of samples (shown by its newest), not of events.
    pub fn is_sample(&self) -> bool {
        self.tags.get(KIND_TAG).is_some_and(|k| k == SAMPLE_KIND)
    }
}

/// A statistic of a metric, i.e. which exposed series.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    /// Events per window.
    Count,
    /// Sum of values per window.
    Sum,
    /// Smallest value per window.
    Min,
    /// Largest value per window.
    Max,
    /// Mean per window.
    Avg,
    /// The quantile family (`quantile` label).
    Quantile,
    /// The newest sample, under the metric's own name (sample series only; not in
    /// [`Stat::ALL`]).
    Last,
}

impl Stat {
    /// The suffix of the exposed name (empty for quantiles).
    pub fn suffix(self) -> &'static str {
        match self {
            Stat::Count => "_count",
            Stat::Sum => "_sum",
            Stat::Min => "_min",
            Stat::Max => "_max",
            Stat::Avg => "_avg",
            Stat::Quantile | Stat::Last => "",
        }
    }

    /// Every statistic.
    pub const ALL: [Stat; 6] = [
        Stat::Count,
        Stat::Sum,
        Stat::Min,
        Stat::Max,
        Stat::Avg,
        Stat::Quantile,
    ];
}

/// The exposed base name of a metric.
///
/// ```
/// use strata_serving::series::exposed_base;
/// assert_eq!(exposed_base("http.request.latency"), "http_request_latency");
/// ```
pub fn exposed_base(metric: &str) -> String {
    metric.replace('.', "_")
}

/// The exposed name of a metric's statistic.
pub fn exposed_name(metric: &str, stat: Stat) -> String {
    format!("{}{}", exposed_base(metric), stat.suffix())
}

/// The readings of an exposed name: (exposed base, statistic). A name with a statistic suffix
/// reads both ways (`a_count` may be metric `a`'s count or metric `a_count`'s quantiles); the
/// caller keeps the readings whose base exists.
///
/// ```
/// use strata_serving::series::{readings, Stat};
/// assert_eq!(
///     readings("lat_max"),
///     vec![("lat".to_owned(), Stat::Max), ("lat_max".to_owned(), Stat::Quantile)]
/// );
/// ```
pub fn readings(name: &str) -> Vec<(String, Stat)> {
    let mut out = Vec::new();
    for stat in Stat::ALL {
        if stat == Stat::Quantile {
            continue;
        }
        if let Some(base) = name.strip_suffix(stat.suffix()) {
            if !base.is_empty() {
                out.push((base.to_owned(), stat));
            }
        }
    }
    out.push((name.to_owned(), Stat::Quantile));
    out
}

/// The series id behind an exposed series of `metric`: its labels minus `__name__` and
/// `quantile`, `source` apart, as `strata_shared::series` identifies series.
pub fn series_id_of(metric: &str, labels: &Labels) -> u64 {
    let mut tags = labels.clone();
    let source = tags.remove("source").unwrap_or_default();
    tags.remove("__name__");
    tags.remove("quantile");
    strata_shared::series::series_id(metric, &source, &tags)
}

/// The label value of quantile `i` of [`QUANTILES`].
pub fn quantile_label(i: usize) -> String {
    format!("{}", QUANTILES[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exposed_name_reads_back_to_its_statistic() {
        for stat in Stat::ALL {
            let name = exposed_name("svc.latency", stat);
            assert!(
                readings(&name).contains(&("svc_latency".to_owned(), stat)),
                "{name}"
            );
        }
        assert_eq!(quantile_label(0), "0.5");
        assert_eq!(quantile_label(3), "0.99");
    }

    #[test]
    fn exposed_labels_lead_back_to_the_series() {
        let s = SeriesInfo {
            metric: "m".into(),
            series_id: strata_shared::series::series_id(
                "m",
                "api",
                &BTreeMap::from([("region".into(), "eu".into())]),
            ),
            source: "api".into(),
            tags: BTreeMap::from([("region".into(), "eu".into())]),
        };
        let mut exposed = s.labels();
        exposed.insert("__name__".into(), "m".into());
        exposed.insert("quantile".into(), "0.99".into());
        assert_eq!(series_id_of("m", &exposed), s.series_id);
    }

    #[test]
    fn labels_are_tags_and_source() {
        let s = SeriesInfo {
            metric: "m".into(),
            series_id: 1,
            source: "api".into(),
            tags: BTreeMap::from([("region".into(), "eu".into())]),
        };
        assert_eq!(
            s.labels(),
            BTreeMap::from([
                ("region".to_owned(), "eu".to_owned()),
                ("source".to_owned(), "api".to_owned())
            ])
        );
    }
}
