//! Which partition a record goes to, as Kafka's default partitioner decides: murmur2 of the key
//! bytes, made positive and taken modulo the partition count, and sticky partitioning for
//! records without a key. Matching Java's numbers exactly matters: a topic written by our
//! tools and read by a Java consumer (or the reverse) must agree on where each key lives, or
//! per-key ordering is lost.

use std::collections::HashMap;
use std::sync::Mutex;

/// Kafka's default partitioning: keyed records by [`partition_for_key`]; keyless records stick
/// to one partition per topic until a batch for it fills, then move to another one chosen at
/// random (KIP-480), so keyless traffic forms full batches instead of one tiny batch per
/// partition.
#[derive(Debug)]
pub struct StickyPartitioner {
    current: Mutex<HashMap<String, i32>>,
    random: Mutex<u64>,
}

impl Default for StickyPartitioner {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
        Self::with_seed(seed)
    }
}

impl StickyPartitioner {
    /// A partitioner whose random choices follow `seed` (tests replay them).
    pub fn with_seed(seed: u64) -> Self {
        StickyPartitioner {
            current: Mutex::new(HashMap::new()),
            random: Mutex::new(seed.max(1)),
        }
    }

    fn next_random(&self) -> u64 {
        let mut x = self.random.lock().unwrap_or_else(|p| p.into_inner());
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// The partition for a record of `topic` (with `partitions` partitions).
    pub fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: i32) -> i32 {
        if let Some(key) = key {
            return partition_for_key(key, partitions);
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&p) = current.get(topic)
            && p < partitions
        {
            return p;
        }
        let p = (self.next_random() % partitions as u64) as i32;
        current.insert(topic.to_string(), p);
        p
    }

    /// A batch for `previous` filled (or a new one would be needed): keyless records of `topic`
    /// move to another partition, unless another thread moved them already.
    pub fn on_new_batch(&self, topic: &str, partitions: i32, previous: i32) -> i32 {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match current.get(topic) {
            Some(&p) if p != previous && p < partitions => p,
            _ => {
                let mut p = (self.next_random() % partitions as u64) as i32;
                if partitions > 1 && p == previous {
                    p = (p + 1 + (self.next_random() % (partitions as u64 - 1)) as i32)
                        % partitions;
                }
                current.insert(topic.to_string(), p);
                p
            }
        }
    }
}

/// Kafka's 32-bit murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
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

/// The partition of a keyed record among `partitions` (which must be positive).
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_implementation() {
        // The vectors of Kafka's own UtilsTest.testMurmur2.
        let cases: &[(&str, i32)] = &[
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()), *expected, "{key}");
        }
    }

    #[test]
    fn keyless_records_stick_to_a_partition_until_a_new_batch_moves_them() {
        let p = StickyPartitioner::with_seed(42);
        let first = p.partition("t", None, 4);
        for _ in 0..10 {
            assert_eq!(p.partition("t", None, 4), first);
        }
        let next = p.on_new_batch("t", 4, first);
        assert_ne!(next, first);
        assert_eq!(p.partition("t", None, 4), next);
        // A second thread reporting the same full batch does not move it again.
        assert_eq!(p.on_new_batch("t", 4, first), next);
        assert_eq!(
            p.partition("t", Some(b"21"), 4),
            partition_for_key(b"21", 4)
        );
        assert_eq!(p.on_new_batch("single", 1, 0), 0);
    }

    #[test]
    fn partitions_are_in_range() {
        for i in 0..1000 {
            let p = partition_for_key(format!("key-{i}").as_bytes(), 3);
            assert!((0..3).contains(&p));
        }
    }
}
