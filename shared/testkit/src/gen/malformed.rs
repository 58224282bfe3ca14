//! A corpus of malformed messages, each with the reason code Strata must give it under the
//! default [`Limits`](strata_shared::validate::Limits). The generator emits them in turn; the speed
//! layer's dead-letter tests expect every one in the DLQ with exactly this code.

use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;

use strata_shared::codec::{encode, frame, Encoding};
use strata_shared::event::MetricEvent;

/// One kind of malformed message.
pub struct MalformedKind {
    /// Short name (also used as the message key).
    pub name: &'static str,
    /// The reason code a consumer must report.
    pub code: &'static str,
    /// Makes one message; the second argument is "now" (Unix ms) at validation time.
    pub make: fn(&mut ChaCha8Rng, i64) -> Vec<u8>,
}

const DAY_MS: i64 = 86_400_000;

fn ok_event(rng: &mut ChaCha8Rng, now: i64) -> MetricEvent {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    MetricEvent::new(
        &uuid::Builder::from_random_bytes(id).into_uuid().to_string(),
        "malformed_probe",
        1.0,
        now - 1000,
    )
    .with_tag("case", "x")
    .with_source("strata-gen")
}

fn json_with(
    rng: &mut ChaCha8Rng,
    now: i64,
    change: impl FnOnce(&mut serde_json::Value),
) -> Vec<u8> {
    let mut v = serde_json::to_value(ok_event(rng, now)).expect("serializable");
    change(&mut v);
    serde_json::to_vec(&v).expect("serializable")
}

fn pb(e: MetricEvent) -> Vec<u8> {
    encode(&e, Encoding::Protobuf)
}

/// Every kind, in emission order.
pub const KINDS: &[MalformedKind] = &[
    MalformedKind {
        name: "empty_payload",
        code: "empty_payload",
        make: |_, _| Vec::new(),
    },
    MalformedKind {
        name: "truncated_json",
        code: "bad_json",
        make: |r, n| {
            let mut j = encode(&ok_event(r, n), Encoding::Json);
            j.truncate(j.len() / 2);
            j
        },
    },
    MalformedKind {
        name: "json_array",
        code: "bad_json",
        make: |_, _| b"[1,2,3]".to_vec(),
    },
    MalformedKind {
        name: "invalid_utf8_json",
        code: "bad_json",
        make: |_, n| {
            let mut v = b"{\"event_id\":\"".to_vec();
            v.extend([0xff, 0xfe]);
            v.extend(
                format!("\",\"metric_name\":\"m\",\"value\":1,\"timestamp_ms\":{n}}}").bytes(),
            );
            v
        },
    },
    MalformedKind {
        name: "value_is_string",
        code: "wrong_type",
        make: |r, n| json_with(r, n, |v| v["value"] = "12.5".into()),
    },
    MalformedKind {
        name: "timestamp_is_string",
        code: "wrong_type",
        make: |r, n| json_with(r, n, |v| v["timestamp_ms"] = "2024-01-01T00:00:00Z".into()),
    },
    MalformedKind {
        name: "tag_value_is_number",
        code: "wrong_type",
        make: |r, n| json_with(r, n, |v| v["tags"]["case"] = 42.into()),
    },
    MalformedKind {
        name: "missing_event_id",
        code: "missing_field",
        make: |r, n| {
            json_with(r, n, |v| {
                drop(v.as_object_mut().expect("object").remove("event_id"))
            })
        },
    },
    MalformedKind {
        name: "missing_value",
        code: "missing_field",
        make: |r, n| {
            json_with(r, n, |v| {
                drop(v.as_object_mut().expect("object").remove("value"))
            })
        },
    },
    MalformedKind {
        name: "missing_timestamp",
        code: "missing_field",
        make: |r, n| {
            json_with(r, n, |v| {
                drop(v.as_object_mut().expect("object").remove("timestamp_ms"))
            })
        },
    },
    MalformedKind {
        name: "nan_value",
        code: "non_finite_value",
        make: |r, n| {
            pb(MetricEvent {
                value: f64::NAN,
                ..ok_event(r, n)
            })
        },
    },
    MalformedKind {
        name: "infinite_value",
        code: "non_finite_value",
        make: |r, n| {
            pb(MetricEvent {
                value: f64::NEG_INFINITY,
                ..ok_event(r, n)
            })
        },
    },
    MalformedKind {
        name: "far_past_timestamp",
        code: "timestamp_too_old",
        make: |r, n| json_with(r, n, |v| v["timestamp_ms"] = (n - 30 * DAY_MS).into()),
    },
    MalformedKind {
        name: "far_future_timestamp",
        code: "timestamp_in_future",
        make: |r, n| json_with(r, n, |v| v["timestamp_ms"] = (n + 365 * DAY_MS).into()),
    },
    MalformedKind {
        name: "too_many_tags",
        code: "too_many_tags",
        make: |r, n| {
            let e = (0..40).fold(ok_event(r, n), |e, i| e.with_tag(&format!("t{i}"), "v"));
            encode(&e, Encoding::Json)
        },
    },
    MalformedKind {
        name: "bad_metric_name",
        code: "bad_metric_name",
        make: |r, n| json_with(r, n, |v| v["metric_name"] = "9 lives/sec".into()),
    },
    MalformedKind {
        name: "bad_tag_key",
        code: "bad_tag_key",
        make: |r, n| pb(ok_event(r, n).with_tag("bad key!", "v")),
    },
    MalformedKind {
        name: "reserved_tag_key",
        code: "reserved_tag_key",
        make: |r, n| pb(ok_event(r, n).with_tag("__name__", "evil")),
    },
    MalformedKind {
        name: "tag_value_too_long",
        code: "bad_tag_value",
        make: |r, n| {
            encode(
                &ok_event(r, n).with_tag("case", &"x".repeat(2000)),
                Encoding::Json,
            )
        },
    },
    MalformedKind {
        name: "huge_message",
        code: "too_large",
        make: |r, n| json_with(r, n, |v| v["padding"] = "p".repeat(100_000).into()),
    },
    MalformedKind {
        name: "truncated_frame",
        code: "bad_frame",
        make: |_, _| vec![0, 0, 0],
    },
    MalformedKind {
        name: "frame_other_message",
        code: "bad_frame",
        make: |r, n| {
            let mut f = vec![0, 0, 0, 0, 9, 2, 4]; // message index [2]
            f.extend(pb(ok_event(r, n)));
            f
        },
    },
    MalformedKind {
        name: "protobuf_garbage",
        code: "bad_protobuf",
        make: |r, _| {
            let mut g = vec![0x0a, 0x7f]; // event_id claiming 127 bytes
            g.extend((0..10).map(|_| r.random::<u8>()));
            g
        },
    },
    MalformedKind {
        name: "empty_event_id_protobuf",
        code: "missing_field",
        make: |r, n| {
            pb(MetricEvent {
                event_id: String::new(),
                ..ok_event(r, n)
            })
        },
    },
    MalformedKind {
        name: "framed_bad_json",
        code: "bad_json",
        make: |_, _| frame(3, Encoding::Json, b"{\"event_id\": }"),
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::SeedableRng;

    use super::*;
    use strata_shared::validate::{check_message, Limits};

    #[test]
    fn each_kind_gets_its_code_and_the_corpus_is_broad() {
        let now = 1_750_000_000_000;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for k in KINDS {
            let bytes = (k.make)(&mut rng, now);
            let r = check_message(Some(&bytes), &Limits::default(), now);
            assert_eq!(r.map(|_| ()).unwrap_err().code(), k.code, "kind {}", k.name);
        }
        assert!(KINDS.len() >= 20);
        let names: BTreeSet<_> = KINDS.iter().map(|k| k.name).collect();
        assert_eq!(names.len(), KINDS.len(), "names are unique");
    }
}
