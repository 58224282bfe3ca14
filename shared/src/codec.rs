//! Message bytes ⇄ [`MetricEvent`]: JSON and Protobuf, bare or in a Confluent wire-format frame.
//!
//! Decoding looks at the bytes, not at a configured format, so one topic may carry both:
//! - a leading `0x00` is a Confluent Schema Registry frame: magic byte, 4-byte schema id, then (for
//!   Protobuf) the message-index list, which must name the first message (`analytics.MetricEvent`);
//! - a body starting with `{` or `[` (after whitespace) is JSON;
//! - anything else is Protobuf.
//!
//! Unknown fields are ignored in both encodings, so producers can add optional fields. Every
//! failure is a typed [`Reject`]; decoding never panics on any input.

use std::borrow::Cow;
use std::collections::BTreeMap;

use prost::Message;
use serde::Deserialize;

use crate::event::{proto, MetricEvent};
use crate::reject::Reject;

/// How a message body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// A JSON object with the fields of `analytics.MetricEvent`.
    Json,
    /// The `analytics.MetricEvent` Protobuf message.
    Protobuf,
}

/// A decoded message: the event and how it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The event (not yet validated).
    pub event: MetricEvent,
    /// The body's encoding.
    pub encoding: Encoding,
    /// The Confluent schema id, if the message had a wire-format frame.
    pub schema_id: Option<u32>,
}

/// Decodes one message value.
///
/// ```
/// use strata_shared::codec::{decode, encode, Encoding};
/// use strata_shared::MetricEvent;
/// let e = MetricEvent::new("id-1", "cpu", 0.5, 1_700_000_000_000).with_tag("host", "a");
/// for enc in [Encoding::Json, Encoding::Protobuf] {
///     assert_eq!(decode(&encode(&e, enc)).unwrap().event, e);
/// }
/// ```
pub fn decode(payload: &[u8]) -> Result<Decoded, Reject> {
    if payload.is_empty() {
        return Err(Reject::EmptyPayload);
    }
    let (schema_id, body) = if payload[0] == 0 {
        let (id, rest) = strip_frame(payload)?;
        (Some(id), rest)
    } else {
        (None, payload)
    };
    if looks_like_json(body) {
        return decode_json(body).map(|event| Decoded {
            event,
            encoding: Encoding::Json,
            schema_id,
        });
    }
    let body = if schema_id.is_some() {
        strip_message_indexes(body)?
    } else {
        body
    };
    decode_protobuf(body).map(|event| Decoded {
        event,
        encoding: Encoding::Protobuf,
        schema_id,
    })
}

/// Encodes an event as a bare JSON or Protobuf body.
pub fn encode(event: &MetricEvent, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => serde_json::to_vec(event).expect("a MetricEvent always serializes"),
        Encoding::Protobuf => proto::MetricEvent::from(event.clone()).encode_to_vec(),
    }
}

/// Wraps an encoded body in a Confluent wire-format frame (magic byte, schema id and, for
/// Protobuf, the message-index list `[0]`).
pub fn frame(schema_id: u32, encoding: Encoding, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    if encoding == Encoding::Protobuf {
        out.push(0); // the common case: message index [0], written as a single zero
    }
    out.extend_from_slice(body);
    out
}

fn strip_frame(payload: &[u8]) -> Result<(u32, &[u8]), Reject> {
    if payload.len() < 5 {
        return Err(Reject::BadFrame(format!(
            "{} bytes; a frame needs the magic byte and a 4-byte schema id",
            payload.len()
        )));
    }
    let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    if payload.len() == 5 {
        return Err(Reject::BadFrame(format!(
            "schema id {id} is followed by no body"
        )));
    }
    Ok((id, &payload[5..]))
}

/// Skips the Protobuf message-index list of a Confluent frame: a zigzag varint count followed by
/// that many zigzag varint indexes, where a lone 0 means `[0]`. Only `[0]` names our message.
fn strip_message_indexes(body: &[u8]) -> Result<&[u8], Reject> {
    let (count, mut rest) = read_zigzag(body)?;
    if !(0..=16).contains(&count) {
        return Err(Reject::BadFrame(format!(
            "message-index count {count} is out of range"
        )));
    }
    let mut indexes = Vec::new();
    for _ in 0..count {
        let (index, r) = read_zigzag(rest)?;
        indexes.push(index);
        rest = r;
    }
    if count > 0 && indexes != [0] {
        return Err(Reject::BadFrame(format!(
            "message index {indexes:?} is not analytics.MetricEvent (expected [0])"
        )));
    }
    Ok(rest)
}

fn read_zigzag(bytes: &[u8]) -> Result<(i64, &[u8]), Reject> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Ok((decoded, &bytes[i + 1..]));
        }
    }
    Err(Reject::BadFrame(
        "truncated varint in the message-index list".into(),
    ))
}

fn looks_like_json(body: &[u8]) -> bool {
    matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{') | Some(b'[')
    )
}

fn decode_protobuf(body: &[u8]) -> Result<MetricEvent, Reject> {
    match proto::MetricEvent::decode(body) {
        Ok(p) => Ok(p.into()),
        Err(e) => {
            // Plain JSON scalars ("abc", 42, true) are not Protobuf: say what they are.
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
                return Err(Reject::BadJson(format!(
                    "expected a JSON object, found {}",
                    json_kind(&v)
                )));
            }
            Err(Reject::BadProtobuf(e.to_string()))
        }
    }
}

/// The fast path: borrow strings straight from the buffer.
#[derive(Deserialize)]
struct JsonEvent<'a> {
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    metric_name: Option<Cow<'a, str>>,
    value: Option<f64>,
    timestamp_ms: Option<i64>,
    #[serde(borrow)]
    tags: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
}

fn decode_json(body: &[u8]) -> Result<MetricEvent, Reject> {
    match serde_json::from_slice::<JsonEvent>(body) {
        Ok(j) => Ok(MetricEvent {
            event_id: j
                .event_id
                .ok_or(Reject::MissingField("event_id"))?
                .into_owned(),
            metric_name: j
                .metric_name
                .ok_or(Reject::MissingField("metric_name"))?
                .into_owned(),
            value: j.value.ok_or(Reject::MissingField("value"))?,
            timestamp_ms: j.timestamp_ms.ok_or(Reject::MissingField("timestamp_ms"))?,
            tags: j
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            source: j.source.map(Cow::into_owned).unwrap_or_default(),
        }),
        Err(fast_err) => Err(explain_json(body, fast_err)),
    }
}

/// The slow path, taken only for bad input: find which field is wrong, to name it.
fn explain_json(body: &[u8], fast_err: serde_json::Error) -> Reject {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Reject::BadJson(e.to_string()),
    };
    let Some(obj) = value.as_object() else {
        return Reject::BadJson(format!(
            "expected a JSON object, found {}",
            json_kind(&value)
        ));
    };
    let wrong = |field: &str, expected| Reject::WrongType {
        field: field.to_owned(),
        expected,
    };
    for field in ["event_id", "metric_name", "source"] {
        if let Some(v) = obj.get(field) {
            if !(v.is_string() || (v.is_null() && field == "source")) {
                return wrong(field, "a string");
            }
        }
    }
    if let Some(v) = obj.get("value") {
        if !v.is_number() {
            return wrong("value", "a number");
        }
    }
    if let Some(v) = obj.get("timestamp_ms") {
        if v.as_i64().is_none() {
            return wrong("timestamp_ms", "an integer number of Unix milliseconds");
        }
    }
    match obj.get("tags") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(tags)) => {
            if let Some((k, _)) = tags.iter().find(|(_, v)| !v.is_string()) {
                return wrong(&format!("tags.{k}"), "a string");
            }
        }
        Some(_) => return wrong("tags", "an object of string values"),
    }
    // Types are fine, so the fast path failed for another reason (e.g. a duplicate key).
    Reject::BadJson(fast_err.to_string())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MetricEvent {
        MetricEvent::new(
            "0b8f6c1e-5f7e-4f43-9d55-3f7f1f0f2a11",
            "http_request_duration_ms",
            12.25,
            1_700_000_000_123,
        )
        .with_tag("route", "/api/v1")
        .with_tag("region", "eu-west-1")
        .with_source("gateway")
    }

    fn reject(bytes: &[u8]) -> Reject {
        decode(bytes).expect_err("must be rejected")
    }

    #[test]
    fn json_round_trip() {
        let e = sample();
        let d = decode(&encode(&e, Encoding::Json)).unwrap();
        assert_eq!(
            (d.event, d.encoding, d.schema_id),
            (e, Encoding::Json, None)
        );
    }

    #[test]
    fn protobuf_round_trip() {
        let e = sample();
        let d = decode(&encode(&e, Encoding::Protobuf)).unwrap();
        assert_eq!(
            (d.event, d.encoding, d.schema_id),
            (e, Encoding::Protobuf, None)
        );
    }

    #[test]
    fn framed_round_trips_strip_the_frame() {
        let e = sample();
        for enc in [Encoding::Json, Encoding::Protobuf] {
            let framed = frame(42, enc, &encode(&e, enc));
            let d = decode(&framed).unwrap();
            assert_eq!(
                (d.event, d.encoding, d.schema_id),
                (e.clone(), enc, Some(42))
            );
        }
    }

    #[test]
    fn framed_protobuf_with_explicit_index_list() {
        // count 1 (zigzag 2), index 0 (zigzag 0)
        let mut framed = vec![0, 0, 0, 0, 7, 2, 0];
        framed.extend(encode(&sample(), Encoding::Protobuf));
        assert_eq!(decode(&framed).unwrap().event, sample());
        // index [1] names another message of the schema
        let mut other = vec![0, 0, 0, 0, 7, 2, 2];
        other.extend(encode(&sample(), Encoding::Protobuf));
        assert_eq!(reject(&other).code(), "bad_frame");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let json = br#"{"event_id":"a","metric_name":"m","value":1,"timestamp_ms":5,"unit":"ms","extra":{"x":[1]}}"#;
        assert_eq!(
            decode(json).unwrap().event,
            MetricEvent::new("a", "m", 1.0, 5)
        );
        // Protobuf: append field 15 (string) that our schema does not know.
        let mut pb = encode(&MetricEvent::new("a", "m", 1.0, 5), Encoding::Protobuf);
        pb.extend_from_slice(&[0x7a, 3, b'x', b'y', b'z']);
        assert_eq!(
            decode(&pb).unwrap().event,
            MetricEvent::new("a", "m", 1.0, 5)
        );
    }

    #[test]
    fn json_defaults_for_optional_fields() {
        let json = br#"{"event_id":"a","metric_name":"m","value":-3.5,"timestamp_ms":5,"tags":null,"source":null}"#;
        let e = decode(json).unwrap().event;
        assert!(e.tags.is_empty() && e.source.is_empty());
        assert_eq!(e.value, -3.5);
    }

    #[test]
    fn json_escapes_are_decoded() {
        let json = br#"{"event_id":"a","metric_name":"m","value":1,"timestamp_ms":5,"tags":{"k":"a\"b\\c\u00e9"}}"#;
        assert_eq!(decode(json).unwrap().event.tags["k"], "a\"b\\c\u{e9}");
    }

    #[test]
    fn malformed_json_cases() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty_payload"),
            (b"{\"event_id\": \"a\", ", "bad_json"),
            (b"[1,2,3]", "bad_json"),
            (b"\"just a string\"", "bad_json"),
            (b"42", "bad_json"),
            (b"{\"event_id\":\"a\",\"metric_name\":\"m\",\"value\":1,\"timestamp_ms\":5,\"value\":2}", "bad_json"),
            (b"{\"metric_name\":\"m\",\"value\":1,\"timestamp_ms\":5}", "missing_field"),
            (b"{\"event_id\":\"a\",\"value\":1,\"timestamp_ms\":5}", "missing_field"),
            (b"{\"event_id\":\"a\",\"metric_name\":\"m\",\"timestamp_ms\":5}", "missing_field"),
            (b"{\"event_id\":\"a\",\"metric_name\":\"m\",\"value\":1}", "missing_field"),
            (b"{\"event_id\":\"a\",\"metric_name\":\"m\",\"value\":\"1.5\",\"timestamp_ms\":5}", "wrong_type"),
            (b"{\"event_id\":7,\"metric_name\":\"m\",\"value\":1,\"timestamp_ms\":5}", "wrong_type"),
            (b"{\"event_id\":\"a\",\"metric_name\":\"m\",\"value\":1,\"timestamp_ms\":5.5}", "wrong_type"),
            (b"{\"event_id\":\"a\",\"metric_name\":\"m\",\"value\":1,\"timestamp_ms\":\"now\"}", "wrong_type"),
            (b"{\"event_id\":\"a\",\"metric_name\":\"m\",\"value\":1,\"timestamp_ms\":5,\"tags\":{\"k\":1}}", "wrong_type"),
            (b"{\"event_id\":\"a\",\"metric_name\":\"m\",\"value\":1,\"timestamp_ms\":5,\"tags\":[\"k\"]}", "wrong_type"),
            (b"{\"event_id\":\"a\",\"metric_name\":\"m\",\"value\":1e999,\"timestamp_ms\":5}", "bad_json"),
            (b"{\"event_id\":\"a\",\"metric_name\":\"m\",\"value\":NaN,\"timestamp_ms\":5}", "bad_json"),
            (b"{\"event_id\":\"\xff\xfe\",\"metric_name\":\"m\",\"value\":1,\"timestamp_ms\":5}", "bad_json"),
        ];
        for (bytes, code) in cases {
            assert_eq!(
                reject(bytes).code(),
                *code,
                "input {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn wrong_type_names_the_field() {
        let r = reject(br#"{"event_id":"a","metric_name":"m","value":1,"timestamp_ms":5,"tags":{"region":false}}"#);
        assert_eq!(
            r,
            Reject::WrongType {
                field: "tags.region".into(),
                expected: "a string"
            }
        );
    }

    #[test]
    fn malformed_protobuf_and_frames() {
        let good = encode(&sample(), Encoding::Protobuf);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 3].to_vec(), "bad_protobuf"), // truncated inside `source`
            (vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], "bad_protobuf"), // length past the end
            (vec![0x0a, 2, 0xff, 0xfe], "bad_protobuf"),       // event_id not UTF-8
            (vec![0x1a, 1, 2], "bad_protobuf"),                // value (double) with wire type 2
            (vec![0], "bad_frame"),
            (vec![0, 0, 0], "bad_frame"),
            (vec![0, 0, 0, 0, 1], "bad_frame"),
            (vec![0, 0, 0, 0, 1, 0xff, 0xff], "bad_frame"), // truncated index varint
        ];
        for (bytes, code) in cases {
            assert_eq!(reject(&bytes).code(), code, "input {bytes:?}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep over short inputs; the real fuzzing lives with the e2e issue.
        let mut x: u32 = 12345;
        for len in 0..64 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                let _ = decode(&bytes);
            }
        }
    }
}
