//! Hash maps keyed by a 64-bit digest (xxh64) that is already a good hash: hashing it again
//! (SipHash) costs a tenth of a lookup for nothing. Used by the speed layer's duplicate filter
//! and the batch layer's deduplication.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A [`Hasher`] that passes a `u64` key through unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are meant; fold anything else in for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map from a digest to `V`.
///
/// ```
/// let mut m = strata_shared::digest::DigestMap::default();
/// m.insert(xxhash_rust::xxh64::xxh64(b"event-1", 0), 7u32);
/// assert_eq!(m.get(&xxhash_rust::xxh64::xxh64(b"event-1", 0)), Some(&7));
/// ```
pub type DigestMap<V> = HashMap<u64, V, BuildHasherDefault<DigestHasher>>;
