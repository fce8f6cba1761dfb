//! A fast, non-keyed hasher for the client's own hot maps, whose keys are topic names and
//! partitions: short, and chosen by the application or its cluster (not by a remote peer), so
//! the protection of std's keyed SipHash against collision attacks is not needed and its cost
//! (a SipHash per record and map) is.
//!
//! It mixes eight bytes at a time (rotate, xor, multiply by an odd constant, as in the
//! rustc/Firefox "Fx" hash) and finishes with a multiply-xorshift so that the high bits the
//! table uses for its control bytes depend on every input byte.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The multiplier: an odd 64-bit constant with well-spread bits.
const K: u64 = 0xf135_7aea_2e62_a9c5;

/// See the [module docs](self).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_i32(&mut self, i: i32) {
        self.add(u64::from(i as u32));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(K);
        h ^ (h >> 32)
    }
}

/// The [`FastHasher`]'s builder.
pub(crate) type FastBuild = BuildHasherDefault<FastHasher>;

/// A `HashMap` with the [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, FastBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;
    use std::sync::Arc;

    fn hash<T: std::hash::Hash>(t: &T) -> u64 {
        FastBuild::default().hash_one(t)
    }

    #[test]
    fn equal_keys_hash_equal_and_near_keys_differ() {
        let tp = |t: &str, p: i32| (Arc::<str>::from(t), p);
        assert_eq!(hash(&tp("orders", 3)), hash(&tp("orders", 3)));
        let mut seen = HashSet::new();
        for topic in ["a", "a\0", "orders", "orders-dlt", "orders.DLT", "ordert"] {
            for p in 0..64 {
                assert!(seen.insert(hash(&tp(topic, p))), "{topic}-{p} collides");
            }
        }
        // The top 7 bits (hashbrown's control bytes) vary across partitions of one topic.
        let tops: HashSet<u64> = (0..64).map(|p| hash(&tp("orders", p)) >> 57).collect();
        assert!(tops.len() > 16, "{} distinct top bits", tops.len());
    }

    #[test]
    fn a_fast_map_works_as_a_map() {
        let mut m: FastMap<(Arc<str>, i32), i64> = FastMap::default();
        for p in 0..1000 {
            m.insert((Arc::from("t"), p), i64::from(p));
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get(&(Arc::from("t"), 999)), Some(&999));
    }
}
