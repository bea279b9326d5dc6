//! The writer's own map from (topic, partition) to that partition's index, so an append finds
//! its partition without the registry's read locks, its SipHash map or reference-count
//! traffic. Owned by the writer (inside the writer lock). An entry never goes stale: a
//! partition's index, once loaded, lives as long as the store, and topics only grow (a grown
//! topic misses here once and is filled from the registry).

use super::index::PartIndex;
use super::topics::Topics;
use super::StoreError;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

#[derive(Default)]
pub(super) struct PartCache {
    topics: HashMap<Box<str>, Vec<Option<Arc<PartIndex>>>, BuildHasherDefault<Fnv1a>>,
}

impl PartCache {
    /// The index of `topic`/`partition`, loading it through the registry on first use.
    pub fn get(
        &mut self,
        registry: &Topics,
        topic: &str,
        partition: u32,
    ) -> Result<&Arc<PartIndex>, StoreError> {
        let hit = self
            .topics
            .get(topic)
            .and_then(|parts| parts.get(partition as usize))
            .is_some_and(Option::is_some);
        if !hit {
            self.fill(registry, topic, partition)?;
        }
        let idx = self.topics[topic][partition as usize].as_ref();
        Ok(idx.expect("filled above"))
    }

    #[cold]
    fn fill(&mut self, registry: &Topics, topic: &str, partition: u32) -> Result<(), StoreError> {
        let t = registry.get(topic).ok_or(StoreError::UnknownTopic)?;
        let part = t
            .partition(partition)
            .ok_or(StoreError::PartitionOutOfRange {
                partitions: t.partition_count(),
            })?;
        let idx = registry.index(&part)?;
        let parts = self.topics.entry(topic.into()).or_default();
        let count = t.partition_count() as usize;
        if parts.len() < count {
            parts.resize(count, None);
        }
        parts[partition as usize] = Some(idx);
        Ok(())
    }
}

/// FNV-1a: topic names are short and chosen by operators, not attackers' keys into a
/// long-lived table the broker cannot bound (topics are capped by `topics_max`).
#[derive(Clone, Copy)]
pub(super) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        let h = |s: &str| BuildHasherDefault::<Fnv1a>::default().hash_one(s.as_bytes());
        // `hash_one` on a byte slice also writes its length prefix; check the raw hasher too.
        let mut raw = Fnv1a::default();
        raw.write(b"a");
        assert_eq!(raw.finish(), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(h("orders"), h("orderz"));
    }
}
