//! Partitioners: Kafka's murmur2 for keyed records, sticky (KIP-480) for keyless ones.

/// Chooses the partition of a record that names none.
///
/// Set one with [`Partitioning::Custom`](super::Partitioning::Custom). Called once per
/// record on the `send` path, so it should be cheap and must not block.
pub trait Partitioner: Send + Sync + 'static {
    /// The partition (in `0..partition_count`) for a record of `topic` with the given key and
    /// value. A value outside the range fails the `send` with a typed error.
    fn partition(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partition_count: u32,
    ) -> u32;

    /// Told when a new batch was started on `partition` of `topic` (the moment a sticky
    /// partitioner moves on, KIP-480). Default: nothing.
    fn on_new_batch(&self, topic: &str, partition: u32, partition_count: u32) {
        let _ = (topic, partition, partition_count);
    }
}

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`, seed `0x9747b28c`),
/// identical to librdkafka's `murmur2` partitioners.
///
/// ```
/// assert_eq!(rekafka::producer::murmur2(b"21"), -973932308);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner (and librdkafka's `murmur2_random`) gives a key:
/// `(murmur2(key) & 0x7fffffff) % partition_count`.
///
/// ```
/// assert_eq!(rekafka::producer::murmur2_partition(b"21", 4), (-973932308i32 & 0x7fffffff) as u32 % 4);
/// ```
pub fn murmur2_partition(key: &[u8], partition_count: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partition_count.max(1)
}

/// A small, fast, thread-local random number generator for the sticky partitioner.
pub(crate) fn random_u32() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x1234_5678);
            let addr = &t as *const u64 as u64;
            (t ^ addr.rotate_left(32)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    })
}

/// A sticky partition different from `current` (when there is more than one), chosen at random.
pub(crate) fn next_sticky(current: u32, partition_count: u32) -> u32 {
    if partition_count <= 1 {
        return 0;
    }
    let r = random_u32() % (partition_count - 1);
    if r >= current { r + 1 } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), *want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn partition_is_positive_modulo() {
        for n in 1..20u32 {
            for key in [&b"21"[..], b"foobar", b"", b"x"] {
                let p = murmur2_partition(key, n);
                assert!(p < n);
                assert_eq!(p, (murmur2(key) & 0x7fffffff) as u32 % n);
            }
        }
    }

    #[test]
    fn sticky_moves_to_another_partition() {
        for cur in 0..5 {
            for _ in 0..100 {
                let n = next_sticky(cur, 5);
                assert!(n < 5 && n != cur);
            }
        }
        assert_eq!(next_sticky(0, 1), 0);
        let seen: std::collections::HashSet<u32> = (0..200).map(|_| next_sticky(0, 4)).collect();
        assert_eq!(seen.len(), 3, "{seen:?}");
    }
}
