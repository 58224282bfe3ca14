//! Prometheus remote write 1.0: `POST /api/v1/write`, a snappy-compressed (raw block format)
//! `prometheus.WriteRequest`. Every float sample becomes a sample-series event (its labels the
//! tags, a `source` label the source); staleness markers are left out (a series that stops is
//! gone after the five-minute look-back anyway); native histograms are refused with a reason.
//! Remote write 2.0 is answered 415, so a sender configured for it says why.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{refused_response, sample_event, Ingest, IngestError};
use crate::series::Labels;

/// The messages of `prompb/remote.proto` and `types.proto` a receiver reads (others skipped).
pub mod prompb {
    /// One request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// The series and their samples.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// One series' samples.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Its labels, `__name__` included.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Float samples.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        /// Native histograms, only counted (refused).
        #[prost(bytes = "vec", repeated, tag = "4")]
        pub histograms: Vec<Vec<u8>>,
    }

    /// A label.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// Name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// A float sample.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Unix ms.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

pub use prompb::WriteRequest;

/// Prometheus's staleness marker: a NaN with this bit pattern ends a series.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// What a request's samples are.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The events of its float samples.
    pub events: Vec<strata_shared::MetricEvent>,
    /// Staleness markers left out.
    pub stale: usize,
    /// Native histogram samples refused.
    pub histograms: usize,
}

/// Decompresses and decodes a body; `max_bytes` bounds the decompressed size.
pub fn decode(body: &[u8], max_bytes: usize) -> Result<WriteRequest, IngestError> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| IngestError::BadRequest(format!("not snappy (raw block format): {e}")))?;
    if len > max_bytes {
        return Err(IngestError::TooLarge(format!(
            "the request decompresses to {len} bytes, more than ingest.max_body_bytes ({max_bytes})"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| IngestError::BadRequest(format!("not snappy (raw block format): {e}")))?;
    <WriteRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| IngestError::BadRequest(format!("not a prometheus.WriteRequest: {e}")))
}

/// The request's float samples as events.
pub fn events(req: WriteRequest) -> Decoded {
    let mut out = Decoded::default();
    for ts in req.timeseries {
        out.histograms += ts.histograms.len();
        let labels: Labels = ts
            .labels
            .into_iter()
            .filter(|l| !l.value.is_empty())
            .map(|l| (l.name, l.value))
            .collect();
        for s in ts.samples {
            if s.value.to_bits() == STALE_NAN {
                out.stale += 1;
                continue;
            }
            out.events.push(sample_event(&labels, s.timestamp, s.value));
        }
    }
    out
}

/// `POST /api/v1/write`.
pub async fn write(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    match handle(&ingest, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, IngestError> {
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    if header("x-prometheus-remote-write-version").starts_with('2')
        || header("content-type").contains("io.prometheus.write.v2")
    {
        return Err(IngestError::Unsupported(
            "remote write 2.0 is not supported: send 1.0 (protobuf_message: prometheus.WriteRequest)".into(),
        ));
    }
    if !header("content-encoding").is_empty()
        && !header("content-encoding").eq_ignore_ascii_case("snappy")
    {
        return Err(IngestError::Unsupported(format!(
            "content-encoding {:?}: remote write bodies are snappy",
            header("content-encoding")
        )));
    }
    let req = decode(body, ingest.cfg.max_body_bytes)?;
    let samples: usize = req
        .timeseries
        .iter()
        .map(|t| t.samples.len() + t.histograms.len())
        .sum();
    ingest.check_size(samples)?;
    let decoded = events(req);
    let count = decoded.events.len();
    let published = ingest.publish(decoded.events, "remote_write").await?;
    ingest
        .metrics
        .received("remote_write", count, decoded.stale, &published);
    let mut refusals = published.refusal_message();
    if decoded.histograms > 0 {
        let h = format!(
            "{} native histogram samples refused: Strata stores no native histograms (send classic ones)",
            decoded.histograms
        );
        refusals = Some(refusals.map_or(h.clone(), |r| format!("{r}; {h}")));
    }
    Ok(match refusals {
        // Invalid samples are kept on the dead-letter topic: a 400 tells the sender not to send
        // them again, and the valid ones are stored.
        Some(m) => refused_response(m),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

#[cfg(test)]
mod tests {
    use super::prompb::*;
    use super::*;
    use prost::Message;

    fn request() -> WriteRequest {
        let l = |n: &str, v: &str| Label {
            name: n.into(),
            value: v.into(),
        };
        WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![
                        l("__name__", "http_requests_total"),
                        l("job", "api"),
                        l("source", "edge"),
                        l("empty", ""),
                    ],
                    samples: vec![
                        Sample {
                            value: 3.0,
                            timestamp: 1_000,
                        },
                        Sample {
                            value: f64::from_bits(STALE_NAN),
                            timestamp: 2_000,
                        },
                    ],
                    histograms: vec![],
                },
                TimeSeries {
                    labels: vec![l("__name__", "h")],
                    samples: vec![],
                    histograms: vec![vec![1, 2, 3]],
                },
            ],
        }
    }

    #[test]
    fn samples_become_sample_series_events() {
        let body = snap::raw::Encoder::new()
            .compress_vec(&request().encode_to_vec())
            .unwrap();
        let d = events(decode(&body, 1 << 20).unwrap());
        assert_eq!((d.events.len(), d.stale, d.histograms), (1, 1, 1));
        let e = &d.events[0];
        assert_eq!(
            (e.metric_name.as_str(), e.value, e.timestamp_ms),
            ("http_requests_total", 3.0, 1_000)
        );
        assert_eq!(e.source, "edge", "the source label is the source");
        assert_eq!(e.tags.get("job").map(String::as_str), Some("api"));
        assert_eq!(e.tags.get("__kind__").map(String::as_str), Some("sample"));
        assert!(!e.tags.contains_key("empty") && !e.tags.contains_key("__name__"));
        // The same sample sent again has the same id.
        let again = events(decode(&body, 1 << 20).unwrap());
        assert_eq!(again.events[0].event_id, e.event_id);
    }

    #[test]
    fn bad_bodies_are_the_clients_fault() {
        assert!(matches!(
            decode(b"not snappy at all", 1 << 20),
            Err(IngestError::BadRequest(_))
        ));
        let body = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
        assert!(matches!(
            decode(&body, 1 << 20),
            Err(IngestError::BadRequest(_))
        ));
        let big = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 4096])
            .unwrap();
        assert!(matches!(decode(&big, 1024), Err(IngestError::TooLarge(_))));
    }
}
