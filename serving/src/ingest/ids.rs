//! Event ids of received samples, derived from what the sample is — its series and time — so a
//! client's retry of a request carries the same ids and is deduplicated like any duplicate.

use std::collections::BTreeMap;

use xxhash_rust::xxh64::Xxh64;

/// A UUID-shaped id (version 8, "custom") from the series (metric, source, tags) and the time.
pub fn event_id(
    metric: &str,
    source: &str,
    tags: &BTreeMap<String, String>,
    timestamp_ms: i64,
) -> String {
    let hash = |seed: u64| {
        let mut h = Xxh64::new(seed);
        for part in [metric, "\u{0}", source, "\u{0}"] {
            h.update(part.as_bytes());
        }
        for (k, v) in tags {
            h.update(k.as_bytes());
            h.update(b"\x01");
            h.update(v.as_bytes());
            h.update(b"\x00");
        }
        h.update(&timestamp_ms.to_le_bytes());
        h.digest()
    };
    let (a, b) = (hash(0x5354_5241_5441_0001), hash(0x5354_5241_5441_0002));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_sample_has_the_same_id_and_another_does_not() {
        let tags = BTreeMap::from([("job".to_owned(), "api".to_owned())]);
        let a = event_id("up", "", &tags, 1_000);
        assert_eq!(a, event_id("up", "", &tags, 1_000));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "a version 8 UUID: {a}");
        assert_ne!(a, event_id("up", "", &tags, 2_000));
        assert_ne!(a, event_id("up", "x", &tags, 1_000));
        let other = BTreeMap::from([("job".to_owned(), "db".to_owned())]);
        assert_ne!(a, event_id("up", "", &other, 1_000));
        // Boundaries between fields count: ("a", "bc") is not ("ab", "c").
        assert_ne!(
            event_id("a", "bc", &BTreeMap::new(), 0),
            event_id("ab", "c", &BTreeMap::new(), 0)
        );
    }
}
