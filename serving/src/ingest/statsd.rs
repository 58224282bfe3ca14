//! StatsD over UDP and TCP (one metric per line; several lines to a datagram), DogStatsD tags
//! included: `name:value|type[|@rate][|#key:value,…]`. Lines are aggregated as StatsD does and
//! published every `ingest.statsd_flush_interval`:
//!
//! - `c` counters: the interval's total (each value ÷ its sample rate) as ONE event — so
//!   `increase(name_sum[5m])` counts, `rate(name_sum[5m])` is per second;
//! - `ms`, `h`, `d` timings, histograms, distributions: every value an event (a value sampled at
//!   rate r counts 1/r times, at most 100), so `name_count`, `name_sum` and the quantiles
//!   `name{quantile=…}` are StatsD's count, sum and percentiles;
//! - `g` gauges (absolute, or `+n`/`-n` changes): a sample series `name` holding the gauge's value,
//!   published at every flush while the receiver knows it;
//! - `s` sets: the number of distinct values of the interval, a sample series `name`.
//!
//! A line that cannot be read goes to the dead-letter topic as it came (`bad_statsd`). UDP has no
//! answer: if the broker is away, the aggregates wait and are published at a later flush (their
//! event ids stay the same, so a flush sent twice counts once); only past `ingest.max_in_flight`
//! waiting events are the oldest dropped, counted in `strata_serving_ingest_samples_total`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use strata_shared::{MetricEvent, Reject};
use tokio::io::AsyncBufReadExt;

use super::{plain_event, sample_event, Ingest};
use crate::series::Labels;

/// What a line says.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `c`.
    Counter,
    /// `g` (`delta`: `+n` / `-n`).
    Gauge {
        /// A change rather than a value.
        delta: bool,
    },
    /// `ms`, `h`, `d`.
    Timing,
    /// `s` (the member as given).
    Set(String),
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Metric name.
    pub name: String,
    /// Value (0 for a set).
    pub value: f64,
    /// Type.
    pub kind: Kind,
    /// Sample rate (1 when not given).
    pub rate: f64,
    /// DogStatsD tags (a tag without a value is `name:"true"`).
    pub tags: Labels,
}

/// Reads `name:value|type[|@rate][|#tags]`.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (name, rest) = line
        .split_once(':')
        .ok_or("no ':' between name and value")?;
    if name.is_empty() {
        return Err("empty name".into());
    }
    let mut parts = rest.split('|');
    let raw_value = parts.next().unwrap_or("");
    let ty = parts.next().ok_or("no '|type'")?;
    let mut rate = 1.0;
    let mut tags = Labels::new();
    for p in parts {
        if let Some(r) = p.strip_prefix('@') {
            rate = r
                .parse::<f64>()
                .map_err(|_| format!("bad sample rate {r:?}"))?;
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(format!("sample rate {r} is not in (0, 1]"));
            }
        } else if let Some(t) = p.strip_prefix('#') {
            for tag in t.split(',').filter(|t| !t.is_empty()) {
                let (k, v) = tag.split_once(':').unwrap_or((tag, "true"));
                tags.insert(k.to_owned(), v.to_owned());
            }
        }
        // Other DogStatsD fields (`c:` container, `T` timestamp) are ignored.
    }
    let number = |v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("bad value {v:?}"))
    };
    let (value, kind) = match ty {
        "c" => (number(raw_value)?, Kind::Counter),
        "g" => {
            let delta = raw_value.starts_with('+') || raw_value.starts_with('-');
            (number(raw_value)?, Kind::Gauge { delta })
        }
        "ms" | "h" | "d" => (number(raw_value)?, Kind::Timing),
        "s" => (0.0, Kind::Set(raw_value.to_owned())),
        other => return Err(format!("unknown type {other:?}")),
    };
    Ok(Line {
        name: name.to_owned(),
        value,
        kind,
        rate,
        tags,
    })
}

type Key = (String, Labels);

/// Aggregates of one flush interval (gauges live on).
#[derive(Default)]
pub struct Aggregates {
    counters: HashMap<Key, f64>,
    timings: Vec<(Key, f64, u32)>,
    gauges: HashMap<Key, f64>,
    sets: HashMap<Key, BTreeSet<String>>,
    /// Events of earlier flushes the broker did not take yet.
    pending: Vec<MetricEvent>,
}

impl Aggregates {
    /// Adds a line.
    pub fn add(&mut self, l: Line) {
        let key = (l.name, l.tags);
        match l.kind {
            Kind::Counter => *self.counters.entry(key).or_default() += l.value / l.rate,
            Kind::Timing => {
                let times = (1.0 / l.rate).round().clamp(1.0, 100.0) as u32;
                self.timings.push((key, l.value, times));
            }
            Kind::Gauge { delta: true } => *self.gauges.entry(key).or_default() += l.value,
            Kind::Gauge { delta: false } => {
                self.gauges.insert(key, l.value);
            }
            Kind::Set(member) => {
                self.sets.entry(key).or_default().insert(member);
            }
        }
    }

    /// The interval's events at `now_ms` (with what earlier flushes left), the counters,
    /// timings and sets cleared.
    pub fn flush(&mut self, now_ms: i64) -> Vec<MetricEvent> {
        let mut out = std::mem::take(&mut self.pending);
        let labelled = |(name, tags): &Key| {
            let mut l = tags.clone();
            l.insert("__name__".into(), name.clone());
            l
        };
        for (key, total) in self.counters.drain() {
            out.push(plain_event(&key.0, &key.1, now_ms, 0, total));
        }
        let mut seq: HashMap<Key, u32> = HashMap::new();
        for (key, v, times) in self.timings.drain(..) {
            for _ in 0..times {
                let n = seq.entry(key.clone()).or_default();
                *n += 1;
                out.push(plain_event(&key.0, &key.1, now_ms, *n, v));
            }
        }
        for (key, v) in &self.gauges {
            out.push(sample_event(&labelled(key), now_ms, *v));
        }
        for (key, members) in self.sets.drain() {
            out.push(sample_event(&labelled(&key), now_ms, members.len() as f64));
        }
        out
    }

    /// Keeps events the broker did not take for the next flush, at most `max` (the oldest go
    /// first); returns how many were dropped.
    pub fn keep(&mut self, mut events: Vec<MetricEvent>, max: usize) -> usize {
        let drop = events.len().saturating_sub(max);
        events.drain(..drop);
        self.pending = events;
        drop
    }
}

/// The StatsD receiver: listeners feeding one set of aggregates, and the flush loop.
pub struct Statsd {
    aggregates: Arc<Mutex<Aggregates>>,
    ingest: Ingest,
}

impl Statsd {
    /// A receiver publishing through `ingest`.
    pub fn new(ingest: Ingest) -> Self {
        Self {
            aggregates: Arc::new(Mutex::new(Aggregates::default())),
            ingest,
        }
    }

    async fn take(&self, text: &str) {
        let mut bad = Vec::new();
        {
            let mut agg = self.aggregates.lock().unwrap_or_else(|p| p.into_inner());
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match parse_line(line) {
                    Ok(l) => agg.add(l),
                    Err(why) => bad.push((line.to_owned(), why)),
                }
            }
        }
        for (line, why) in bad {
            self.ingest.metrics.dropped("statsd", 1);
            let reject = Reject::BadStatsd(why);
            if let Err(e) = self
                .ingest
                .publisher
                .dead_letter(line.as_bytes(), &reject, "statsd")
                .await
            {
                tracing::warn!(error = %e, "a malformed StatsD line could not be dead-lettered");
            }
        }
    }

    /// Serves UDP datagrams on `socket` until the process ends.
    pub async fn serve_udp(self: Arc<Self>, socket: tokio::net::UdpSocket) {
        let mut buf = vec![0u8; 65_536];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, _)) => self.take(&String::from_utf8_lossy(&buf[..n])).await,
                Err(e) => tracing::warn!(error = %e, "StatsD UDP receive failed"),
            }
        }
    }

    /// Serves TCP connections (a line per metric) on `listener` until the process ends.
    pub async fn serve_tcp(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    me.take(&line).await;
                }
            });
        }
    }

    /// Publishes the aggregates every `ingest.statsd_flush_interval`.
    pub async fn flush_loop(self: Arc<Self>) {
        let every = self.ingest.cfg.statsd_flush_interval;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.flush_once().await;
        }
    }

    /// One flush: publish, or keep what the broker did not take.
    pub async fn flush_once(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        let events = self
            .aggregates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush(now);
        if events.is_empty() {
            return;
        }
        let count = events.len();
        match self
            .ingest
            .publisher
            .publish(events.clone(), "statsd")
            .await
        {
            Ok(p) => self.ingest.metrics.received("statsd", count, 0, &p),
            Err(e) => {
                tracing::warn!(error = %e, events = count, "StatsD flush not stored; kept for the next");
                let max = self.ingest.cfg.max_in_flight;
                let dropped = self
                    .aggregates
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .keep(events, max);
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "StatsD events dropped: the broker has been away too long"
                    );
                    self.ingest.metrics.dropped("statsd", dropped);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_statsd_and_dogstatsd_write_them() {
        let l = parse_line("api.hits:2|c|@0.5|#region:eu,canary").unwrap();
        assert_eq!((l.name.as_str(), l.value, l.rate), ("api.hits", 2.0, 0.5));
        assert_eq!(l.kind, Kind::Counter);
        assert_eq!(l.tags.get("region").map(String::as_str), Some("eu"));
        assert_eq!(l.tags.get("canary").map(String::as_str), Some("true"));
        assert_eq!(parse_line("t:12.5|ms").unwrap().kind, Kind::Timing);
        assert_eq!(
            parse_line("g:-3|g").unwrap().kind,
            Kind::Gauge { delta: true }
        );
        assert_eq!(
            parse_line("g:3|g").unwrap().kind,
            Kind::Gauge { delta: false }
        );
        assert_eq!(
            parse_line("u:alice|s").unwrap().kind,
            Kind::Set("alice".into())
        );
        for bad in [
            "nocolon", "x:1", "x:abc|c", "x:1|q", ":1|c", "x:1|c|@2", "x:NaN|ms",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_flush_is_what_statsd_would_report() {
        let mut a = Aggregates::default();
        for l in [
            "hits:1|c",
            "hits:1|c|@0.1",
            "lat:5|ms",
            "lat:7|ms|@0.5",
            "temp:20|g",
            "temp:+2|g",
            "u:a|s",
            "u:b|s",
            "u:a|s",
        ] {
            a.add(parse_line(l).unwrap());
        }
        let e = a.flush(60_000);
        let of = |n: &str| e.iter().filter(|x| x.metric_name == n).collect::<Vec<_>>();
        assert_eq!(of("hits").len(), 1);
        assert_eq!(of("hits")[0].value, 11.0, "1 + 1/0.1");
        assert_eq!(
            of("lat").iter().map(|x| x.value).collect::<Vec<_>>(),
            vec![5.0, 7.0, 7.0]
        );
        let ids: std::collections::HashSet<_> =
            of("lat").iter().map(|x| x.event_id.clone()).collect();
        assert_eq!(ids.len(), 3, "each value its own event");
        assert_eq!(of("temp")[0].value, 22.0);
        assert_eq!(
            of("temp")[0].tags.get("__kind__").map(String::as_str),
            Some("sample")
        );
        assert_eq!(of("u")[0].value, 2.0);
        // The next flush: gauges live on, the rest starts again.
        let next = a.flush(70_000);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].metric_name, "temp");
        // What the broker did not take waits, the oldest dropped past the cap.
        assert_eq!(a.keep(e, 3), 3);
        assert_eq!(a.flush(80_000).len(), 3 + 1);
    }
}
