//! OTLP/HTTP metrics: `POST /v1/metrics` (and `/otlp/v1/metrics`), an
//! `ExportMetricsServiceRequest` as protobuf or JSON, optionally gzip-compressed, mapped as the
//! OpenTelemetry ↔ Prometheus compatibility specification maps it:
//!
//! - names: characters outside `[a-zA-Z0-9_:]` become `_`, the unit is appended (`s` →
//!   `_seconds`, `By` → `_bytes`, `1` on a gauge → `_ratio`, …), a monotonic cumulative sum gets
//!   `_total`; attribute keys are sanitised the same way;
//! - resource: `service.namespace`/`service.name` → `job`, `service.instance.id` → `instance`,
//!   the attributes listed in `ingest.otlp_resource_attributes` as labels;
//! - gauges and cumulative sums (monotonic or not) → sample series; cumulative explicit-bucket
//!   histograms → `_bucket{le}`, `_count`, `_sum` sample series (a classic histogram); summaries
//!   → `{quantile}`, `_count`, `_sum`;
//! - delta sums and delta histograms → events of their increments (`name`, `name_bucket{le}`,
//!   `name_count`, `name_sum`): `increase(name_sum[5m])` is their total over five minutes;
//! - exponential histograms are refused (Strata stores no native histograms), counted in the
//!   answer's `partial_success` with the reason.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, AggregationTemporality};
use prost::Message;
use strata_shared::MetricEvent;

use super::{plain_event, sample_event, Ingest, IngestError};
use crate::series::Labels;

const NO_RECORDED_VALUE: u32 = 1;

/// A request mapped to events, and what was refused.
#[derive(Debug, Default)]
pub struct Mapped {
    /// The events.
    pub events: Vec<MetricEvent>,
    /// Data points refused, with why.
    pub rejected: usize,
    /// Why, in words (the first few).
    pub reasons: Vec<String>,
}

impl Mapped {
    fn reject(&mut self, n: usize, why: String) {
        self.rejected += n;
        if self.reasons.len() < 3 && !self.reasons.contains(&why) {
            self.reasons.push(why);
        }
    }
}

/// `[a-zA-Z0-9_:]`, other characters `_`, runs of `_` one, no leading digit.
pub fn sanitize(name: &str, colons: bool) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Prometheus word of a UCUM unit (`None`: no suffix).
fn unit_word(unit: &str) -> Option<String> {
    let word = |u: &str| -> Option<String> {
        Some(
            match u {
                "" => return None,
                "d" => "days",
                "h" => "hours",
                "min" => "minutes",
                "s" => "seconds",
                "ms" => "milliseconds",
                "us" => "microseconds",
                "ns" => "nanoseconds",
                "By" => "bytes",
                "KiBy" => "kibibytes",
                "MiBy" => "mebibytes",
                "GiBy" => "gibibytes",
                "KBy" => "kilobytes",
                "MBy" => "megabytes",
                "GBy" => "gigabytes",
                "m" => "meters",
                "V" => "volts",
                "A" => "amperes",
                "J" => "joules",
                "W" => "watts",
                "g" => "grams",
                "Cel" => "celsius",
                "Hz" => "hertz",
                "%" => "percent",
                other => return Some(sanitize(other, false).trim_matches('_').to_owned()),
            }
            .to_owned(),
        )
    };
    // Annotations in braces say nothing Prometheus names keep.
    let mut clean = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let clean = clean.trim();
    match clean.split_once('/') {
        Some((a, b)) => {
            // "per" units are singular: By/s is bytes_per_second.
            let singular = match b.trim() {
                "s" => Some("second".to_owned()),
                "m" => Some("minute".to_owned()),
                "h" => Some("hour".to_owned()),
                "d" => Some("day".to_owned()),
                "w" => Some("week".to_owned()),
                "mo" => Some("month".to_owned()),
                "y" => Some("year".to_owned()),
                other => word(other),
            };
            let per = singular.map(|b| format!("per_{b}"));
            match (word(a.trim()), per) {
                (Some(a), Some(p)) => Some(format!("{a}_{p}")),
                (None, p) => p,
                (a, None) => a,
            }
        }
        None => word(clean).filter(|w| !w.is_empty()),
    }
}

/// The Prometheus name of an OTLP metric.
pub fn metric_name(name: &str, unit: &str, gauge_ratio: bool, total: bool) -> String {
    let mut n = sanitize(name, true);
    let unit = if unit.trim() == "1" && gauge_ratio {
        Some("ratio".to_owned())
    } else if unit.trim() == "1" {
        None
    } else {
        unit_word(unit)
    };
    if let Some(u) = unit {
        if !u.is_empty() && !n.split('_').any(|w| w == u) && !n.ends_with(&u) {
            n = format!("{n}_{u}");
        }
    }
    if total && !n.ends_with("_total") {
        n.push_str("_total");
    }
    n
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(any_value::Value::ArrayValue(a)) => {
            let parts: Vec<String> = a.values.iter().map(|v| text(&Some(v.clone()))).collect();
            format!("[{}]", parts.join(","))
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let parts: Vec<String> = kv
                .values
                .iter()
                .map(|p| format!("{}:{}", p.key, text(&p.value)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        None => String::new(),
    }
}

fn attributes(into: &mut Labels, kvs: &[KeyValue]) {
    for kv in kvs {
        let v = text(&kv.value);
        if !v.is_empty() {
            into.insert(sanitize(&kv.key, false), v);
        }
    }
}

/// The labels a resource gives every series of it.
fn resource_labels(kvs: &[KeyValue], promote: &[String]) -> Labels {
    let get = |k: &str| kvs.iter().find(|kv| kv.key == k).map(|kv| text(&kv.value));
    let mut out = Labels::new();
    let job = match (get("service.namespace"), get("service.name")) {
        (Some(ns), Some(n)) if !ns.is_empty() => Some(format!("{ns}/{n}")),
        (_, n) => n,
    };
    if let Some(j) = job.filter(|j| !j.is_empty()) {
        out.insert("job".into(), j);
    }
    if let Some(i) = get("service.instance.id").filter(|i| !i.is_empty()) {
        out.insert("instance".into(), i);
    }
    for p in promote {
        if let Some(v) = get(p).filter(|v| !v.is_empty()) {
            out.insert(sanitize(p, false), v);
        }
    }
    out
}

fn ms(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

/// `le` as Prometheus writes it.
fn bound(b: f64) -> String {
    if b == f64::INFINITY {
        "+Inf".into()
    } else {
        format!("{b}")
    }
}

/// Maps a request to events.
pub fn map(req: &ExportMetricsServiceRequest, promote: &[String]) -> Mapped {
    let mut out = Mapped::default();
    for rm in &req.resource_metrics {
        let base = resource_labels(
            rm.resource.as_ref().map_or(&[][..], |r| &r.attributes),
            promote,
        );
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                map_metric(m, &base, &mut out);
            }
        }
    }
    out
}

fn map_metric(
    m: &opentelemetry_proto::tonic::metrics::v1::Metric,
    base: &Labels,
    out: &mut Mapped,
) {
    let labelled = |attrs: &[KeyValue], name: &str| {
        let mut l = base.clone();
        attributes(&mut l, attrs);
        l.insert("__name__".into(), name.to_owned());
        l
    };
    let number = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsDouble(d)) => Some(*d),
        Some(number_data_point::Value::AsInt(i)) => Some(*i as f64),
        None => None,
    };
    match &m.data {
        Some(metric::Data::Gauge(g)) => {
            let name = metric_name(&m.name, &m.unit, true, false);
            for p in g
                .data_points
                .iter()
                .filter(|p| p.flags & NO_RECORDED_VALUE == 0)
            {
                if let Some(v) = number(&p.value) {
                    out.events.push(sample_event(
                        &labelled(&p.attributes, &name),
                        ms(p.time_unix_nano),
                        v,
                    ));
                }
            }
        }
        Some(metric::Data::Sum(s)) => {
            let cumulative = s.aggregation_temporality == AggregationTemporality::Cumulative as i32;
            let delta = s.aggregation_temporality == AggregationTemporality::Delta as i32;
            if !cumulative && !delta {
                out.reject(
                    s.data_points.len(),
                    format!("{}: a sum without temporality", m.name),
                );
                return;
            }
            let name = metric_name(&m.name, &m.unit, false, cumulative && s.is_monotonic);
            for (i, p) in s
                .data_points
                .iter()
                .enumerate()
                .filter(|(_, p)| p.flags & NO_RECORDED_VALUE == 0)
            {
                let Some(v) = number(&p.value) else { continue };
                let labels = labelled(&p.attributes, &name);
                let t = ms(p.time_unix_nano);
                out.events.push(if cumulative {
                    sample_event(&labels, t, v)
                } else {
                    plain_event(&name, &labels, t, i as u32, v)
                });
            }
        }
        Some(metric::Data::Histogram(h)) => {
            let cumulative = h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
            let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
            if !cumulative && !delta {
                out.reject(
                    h.data_points.len(),
                    format!("{}: a histogram without temporality", m.name),
                );
                return;
            }
            let name = metric_name(&m.name, &m.unit, false, false);
            for (i, p) in h
                .data_points
                .iter()
                .enumerate()
                .filter(|(_, p)| p.flags & NO_RECORDED_VALUE == 0)
            {
                if !p.bucket_counts.is_empty()
                    && p.bucket_counts.len() != p.explicit_bounds.len() + 1
                {
                    out.reject(
                        1,
                        format!(
                            "{}: {} bucket counts for {} bounds",
                            m.name,
                            p.bucket_counts.len(),
                            p.explicit_bounds.len()
                        ),
                    );
                    continue;
                }
                let t = ms(p.time_unix_nano);
                let mut series: Vec<(String, Labels, f64)> = Vec::new();
                let mut cum = 0u64;
                for (b, c) in p
                    .explicit_bounds
                    .iter()
                    .chain([f64::INFINITY].iter())
                    .zip(&p.bucket_counts)
                {
                    cum += c;
                    let mut l = labelled(&p.attributes, &format!("{name}_bucket"));
                    l.insert("le".into(), bound(*b));
                    series.push((format!("{name}_bucket"), l, cum as f64));
                }
                series.push((
                    format!("{name}_count"),
                    labelled(&p.attributes, &format!("{name}_count")),
                    p.count as f64,
                ));
                if let Some(sum) = p.sum {
                    series.push((
                        format!("{name}_sum"),
                        labelled(&p.attributes, &format!("{name}_sum")),
                        sum,
                    ));
                }
                for (n, l, v) in series {
                    out.events.push(if cumulative {
                        sample_event(&l, t, v)
                    } else {
                        plain_event(&n, &l, t, i as u32, v)
                    });
                }
            }
        }
        Some(metric::Data::Summary(s)) => {
            let name = metric_name(&m.name, &m.unit, false, false);
            for p in s
                .data_points
                .iter()
                .filter(|p| p.flags & NO_RECORDED_VALUE == 0)
            {
                let t = ms(p.time_unix_nano);
                for q in &p.quantile_values {
                    let mut l = labelled(&p.attributes, &name);
                    l.insert("quantile".into(), format!("{}", q.quantile));
                    out.events.push(sample_event(&l, t, q.value));
                }
                out.events.push(sample_event(
                    &labelled(&p.attributes, &format!("{name}_count")),
                    t,
                    p.count as f64,
                ));
                out.events.push(sample_event(
                    &labelled(&p.attributes, &format!("{name}_sum")),
                    t,
                    p.sum,
                ));
            }
        }
        Some(metric::Data::ExponentialHistogram(e)) => out.reject(
            e.data_points.len(),
            format!(
                "{}: exponential histograms are not stored (Strata keeps no native histograms); \
                 configure explicit buckets for it",
                m.name
            ),
        ),
        None => {}
    }
}

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

fn body(headers: &HeaderMap, raw: &[u8], max: usize) -> Result<Vec<u8>, IngestError> {
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match enc {
        "" | "identity" => Ok(raw.to_vec()),
        "gzip" => {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw)
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| IngestError::BadRequest(format!("not gzip: {e}")))?;
            if out.len() > max {
                return Err(IngestError::TooLarge(format!(
                    "the request decompresses to more than ingest.max_body_bytes ({max})"
                )));
            }
            Ok(out)
        }
        other => Err(IngestError::Unsupported(format!(
            "content-encoding {other:?}: send gzip or none"
        ))),
    }
}

/// `POST /v1/metrics`.
pub async fn metrics(State(ingest): State<Ingest>, headers: HeaderMap, raw: Bytes) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = if ct.starts_with("application/json") {
        Format::Json
    } else {
        Format::Protobuf
    };
    match handle(&ingest, &headers, &raw, format).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    ingest: &Ingest,
    headers: &HeaderMap,
    raw: &[u8],
    format: Format,
) -> Result<Response, IngestError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.is_empty()
        && !ct.starts_with("application/json")
        && !ct.starts_with("application/x-protobuf")
        && !ct.starts_with("application/protobuf")
    {
        return Err(IngestError::Unsupported(format!(
            "content-type {ct:?}: send application/x-protobuf or application/json"
        )));
    }
    let bytes = body(headers, raw, ingest.cfg.max_body_bytes)?;
    let req = match format {
        Format::Protobuf => ExportMetricsServiceRequest::decode(bytes.as_slice()).map_err(|e| {
            IngestError::BadRequest(format!("not an ExportMetricsServiceRequest: {e}"))
        })?,
        Format::Json => serde_json::from_slice(&bytes).map_err(|e| {
            IngestError::BadRequest(format!("not an ExportMetricsServiceRequest (JSON): {e}"))
        })?,
    };
    let mapped = map(&req, &ingest.cfg.otlp_resource_attributes);
    ingest.check_size(mapped.events.len())?;
    let count = mapped.events.len();
    let published = ingest.publish(mapped.events, "otlp").await?;
    ingest.metrics.received("otlp", count, 0, &published);
    let rejected = mapped.rejected + published.refused_total();
    let mut reasons = mapped.reasons;
    reasons.extend(published.refusal_message());
    let response = ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected as i64,
            error_message: reasons.join("; "),
        }),
    };
    let (bytes, ct) = match format {
        Format::Protobuf => (response.encode_to_vec(), "application/x-protobuf"),
        Format::Json => (
            serde_json::to_vec(&response).unwrap_or_default(),
            "application/json",
        ),
    };
    let mut r = (StatusCode::OK, bytes).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_spec() {
        assert_eq!(
            metric_name("http.server.duration", "s", false, false),
            "http_server_duration_seconds"
        );
        assert_eq!(
            metric_name("http.server.requests", "{request}", false, true),
            "http_server_requests_total"
        );
        assert_eq!(
            metric_name("system.memory.usage", "By", true, false),
            "system_memory_usage_bytes"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", true, false),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            metric_name("requests_total", "1", false, true),
            "requests_total"
        );
        assert_eq!(
            metric_name("net.io", "By/s", true, false),
            "net_io_bytes_per_second"
        );
        assert_eq!(
            metric_name("latency_seconds", "s", false, false),
            "latency_seconds",
            "no unit twice"
        );
        assert_eq!(sanitize("9lives.and-more", false), "_9lives_and_more");
    }
}
