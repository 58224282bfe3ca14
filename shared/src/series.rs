//! Series identity: (metric_name, source, sorted tags) → a stable 64-bit `series_id`.
//!
//! The id is XXH64 (seed 0) over a canonical byte string: every component as a little-endian
//! `u32` length followed by its UTF-8 bytes, in the order metric name, source, tag count, then
//! each tag's key and value sorted by key. Length prefixes keep `("ab","c")` and `("a","bc")`
//! apart. The id is stored in ClickHouse and Delta tables, so this encoding must never change.

use std::collections::BTreeMap;

use xxhash_rust::xxh64::Xxh64;

/// The stable id of a series.
///
/// ```
/// use std::collections::BTreeMap;
/// use strata_shared::series::series_id;
/// let mut tags = BTreeMap::new();
/// tags.insert("region".to_string(), "eu".to_string());
/// tags.insert("host".to_string(), "a".to_string());
/// assert_eq!(series_id("cpu", "agent", &tags), series_id("cpu", "agent", &tags.clone()));
/// assert_ne!(series_id("cpu", "agent", &tags), series_id("cpu", "", &tags));
/// ```
pub fn series_id(metric_name: &str, source: &str, tags: &BTreeMap<String, String>) -> u64 {
    series_id_from_pairs(
        metric_name,
        source,
        tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// The same id from tag pairs in any order (they are sorted here).
pub fn series_id_from_pairs<'a>(
    metric_name: &str,
    source: &str,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> u64 {
    let mut pairs: Vec<(&str, &str)> = tags.into_iter().collect();
    pairs.sort_unstable();
    let mut h = Xxh64::new(0);
    let mut put = |s: &[u8]| {
        h.update(&(s.len() as u32).to_le_bytes());
        h.update(s);
    };
    put(metric_name.as_bytes());
    put(source.as_bytes());
    put(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        put(k.as_bytes());
        put(v.as_bytes());
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;

    #[test]
    fn tag_order_does_not_matter() {
        let a = series_id_from_pairs("m", "s", [("a", "1"), ("b", "2"), ("c", "3")]);
        let b = series_id_from_pairs("m", "s", [("c", "3"), ("a", "1"), ("b", "2")]);
        assert_eq!(a, b);
        // ... nor does the order in which a producer wrote them in JSON.
        let j1 = br#"{"event_id":"x","metric_name":"m","value":1,"timestamp_ms":1,"source":"s","tags":{"a":"1","b":"2","c":"3"}}"#;
        let j2 = br#"{"tags":{"c":"3","b":"2","a":"1"},"source":"s","timestamp_ms":1,"value":1,"metric_name":"m","event_id":"y"}"#;
        assert_eq!(decode(j1).unwrap().event.series_id(), a);
        assert_eq!(decode(j2).unwrap().event.series_id(), a);
    }

    #[test]
    fn every_component_counts() {
        let base = series_id_from_pairs("m", "s", [("k", "v")]);
        assert_ne!(base, series_id_from_pairs("m2", "s", [("k", "v")]));
        assert_ne!(base, series_id_from_pairs("m", "s2", [("k", "v")]));
        assert_ne!(base, series_id_from_pairs("m", "s", [("k", "v2")]));
        assert_ne!(base, series_id_from_pairs("m", "s", [("k2", "v")]));
        assert_ne!(base, series_id_from_pairs("m", "s", []));
        assert_ne!(
            base,
            series_id_from_pairs("m", "s", [("k", "v"), ("l", "w")])
        );
    }

    #[test]
    fn boundaries_between_components_are_kept() {
        assert_ne!(
            series_id_from_pairs("ab", "c", []),
            series_id_from_pairs("a", "bc", [])
        );
        assert_ne!(
            series_id_from_pairs("m", "", [("ab", "c")]),
            series_id_from_pairs("m", "", [("a", "bc")])
        );
        // A tag cannot masquerade as the source.
        assert_ne!(
            series_id_from_pairs("m", "", [("s", "")]),
            series_id_from_pairs("m", "s", [])
        );
    }

    /// Stored ids must survive upgrades: this pins the encoding and hash. If it fails, the
    /// change breaks every ClickHouse and Delta table written before it.
    #[test]
    fn ids_are_stable_across_releases() {
        let id = series_id_from_pairs(
            "http_request_duration_ms",
            "gateway",
            [("route", "/api"), ("region", "eu")],
        );
        // Computed independently from the documented encoding:
        let mut canonical = Vec::new();
        for part in [
            &b"http_request_duration_ms"[..],
            b"gateway",
            &2u32.to_le_bytes(),
            b"region",
            b"eu",
            b"route",
            b"/api",
        ] {
            canonical.extend_from_slice(&(part.len() as u32).to_le_bytes());
            canonical.extend_from_slice(part);
        }
        assert_eq!(id, xxhash_rust::xxh64::xxh64(&canonical, 0));
        assert_eq!(
            id, 0x3991_7528_ec22_2db7_u64,
            "series_id encoding changed: {id:#x}"
        );
    }
}
