//! Staging of each partition's newest index entries in anonymous memory backed by huge pages.
//!
//! With thousands of partitions written round-robin, every put's index entry lands in a
//! different 4 KiB page of a different index file: more pages than the TLB maps, so every put
//! paid a TLB miss (on a virtual machine a nested page walk), and 10,240 partitions ran at
//! 51-68% of one partition's rate in the store alone (`store-bench --only async`), 95-101% with
//! the entry's store left out. The index files are shared file mappings, which get no huge
//! pages. So the writer stages up to [`STAGE_ENTRIES`] of a partition's newest entries in a
//! [`Slot`] of this arena, whose 2 MiB chunks are advised as huge pages (a chunk holds 5,461
//! slots: 10,240 partitions are two TLB entries), and copies them into the index file a slot
//! at a time: one miss per 16 puts of a partition instead of one per put.
//!
//! Concurrency: a slot is written only by the store's writer (under the writer lock). Readers
//! on any thread read it as a seqlock whose sequence is the partition's `staged_from` (see
//! `PartIndex::staged`): the words are atomics, so a reader racing a copy-out or the slot's
//! reuse by another partition reads stale words, never undefined bytes, and discards them
//! when `staged_from` moved. Chunks are never unmapped while the arena lives, and every
//! index holds the arena (through its `MapBudget`), so a reader's slot pointer stays mapped.

use super::index::Entry;
use memmap2::{Advice, MmapMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Entries a partition's slot holds before the writer copies them into the index file.
pub const STAGE_ENTRIES: u64 = 16;
const WORDS_PER_ENTRY: usize = 3;
const SLOT_WORDS: usize = STAGE_ENTRIES as usize * WORDS_PER_ENTRY;
/// Bytes of one arena chunk: one huge page on x86-64.
const CHUNK_BYTES: usize = 2 << 20;
const SLOTS_PER_CHUNK: usize = CHUNK_BYTES / std::mem::size_of::<Slot>();
const _: () = assert!(std::mem::size_of::<Slot>() == 384);

/// One partition's staged entries: entry `staged_from + i` in words `3i..3i + 3` (position,
/// size and tag hash, store time).
#[repr(C, align(64))]
pub struct Slot {
    words: [AtomicU64; SLOT_WORDS],
}

impl Slot {
    /// Stores entry `i` of the slot. Writer only; the caller orders it (see
    /// `PartIndex::write_prepared`).
    pub fn put(&self, i: u64, e: &Entry) {
        let w = &self.words[i as usize * WORDS_PER_ENTRY..][..WORDS_PER_ENTRY];
        w[0].store(e.pos, Ordering::Relaxed);
        w[1].store((e.size as u64) << 32 | e.tag_hash as u64, Ordering::Relaxed);
        w[2].store(e.store_ts_ms as u64, Ordering::Relaxed);
    }

    /// Entry `i` of the slot, as last stored (a reader checks that it is still current).
    pub fn get(&self, i: u64) -> Entry {
        let w = &self.words[i as usize * WORDS_PER_ENTRY..][..WORDS_PER_ENTRY];
        let size_tag = w[1].load(Ordering::Relaxed);
        Entry {
            pos: w[0].load(Ordering::Relaxed),
            size: (size_tag >> 32) as u32,
            tag_hash: size_tag as u32,
            store_ts_ms: w[2].load(Ordering::Relaxed) as i64,
        }
    }
}

/// The slots of one store's indexes, handed out to partitions while they have a writer tail
/// (at most `MapBudget`'s tail bound at once: 24,576 slots, 9 MiB, by default).
pub struct Arena {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Each chunk's map (kept for the arena's life) and the offset of its aligned 2 MiB.
    chunks: Vec<(MmapMut, usize)>,
    free: Vec<SlotPtr>,
}

/// A slot's address. The arena owns the memory; the pointer is only handed between threads
/// under its lock.
#[derive(Clone, Copy)]
struct SlotPtr(*const Slot);
// SAFETY: a `Slot` is made of atomics (it is `Sync`), and the memory it points into lives as
// long as the arena, which owns the chunk maps.
unsafe impl Send for SlotPtr {}

impl Default for Arena {
    fn default() -> Self {
        Arena {
            inner: Mutex::new(Inner {
                chunks: Vec::new(),
                free: Vec::new(),
            }),
        }
    }
}

impl Arena {
    /// A free slot (its words hold whatever its last user left there). The pointer stays valid
    /// for the arena's lifetime; give it back with [`Arena::release`].
    pub fn take(&self) -> std::io::Result<*const Slot> {
        let mut inner = self.inner.lock().expect("stage arena lock");
        if let Some(s) = inner.free.pop() {
            return Ok(s.0);
        }
        // One huge page's worth, aligned: map twice as much and use the aligned part, so the
        // kernel can back it with one 2 MiB page (an unaligned range never gets one).
        let map = MmapMut::map_anon(2 * CHUNK_BYTES)?;
        let at = map.as_ptr().align_offset(CHUNK_BYTES);
        assert!(at + CHUNK_BYTES <= map.len());
        // Best effort: without huge pages the slots still sit together, 96 to a 4 KiB page.
        let _ = map.advise_range(Advice::HugePage, at, CHUNK_BYTES);
        // SAFETY: `at + CHUNK_BYTES` is within the map (asserted); the map lives in `chunks`
        // for the arena's lifetime and is never moved out, so the addresses stay valid.
        let base = unsafe { map.as_ptr().add(at) } as *const Slot;
        for i in (1..SLOTS_PER_CHUNK).rev() {
            // SAFETY: slot `i` of the chunk lies inside its 2 MiB (i < SLOTS_PER_CHUNK), and
            // zeroed anonymous memory is a valid array of atomics.
            inner.free.push(SlotPtr(unsafe { base.add(i) }));
        }
        inner.chunks.push((map, at));
        Ok(base)
    }

    /// Gives back a slot from [`Arena::take`]. Readers may still read it for a while (see the
    /// module header); they discard what they read.
    pub fn release(&self, slot: *const Slot) {
        let mut inner = self.inner.lock().expect("stage arena lock");
        debug_assert!(inner.chunks.iter().any(|(m, at)| {
            let base = m.as_ptr() as usize + at;
            (base..base + CHUNK_BYTES).contains(&(slot as usize))
        }));
        inner.free.push(SlotPtr(slot));
    }

    /// Chunks mapped so far (each `CHUNK_BYTES`).
    #[cfg(test)]
    fn chunks(&self) -> usize {
        self.inner.lock().expect("stage arena lock").chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_gives_back_each_entry_as_stored() {
        let arena = Arena::default();
        // SAFETY: the arena outlives the reference.
        let slot = unsafe { &*arena.take().unwrap() };
        let e = |i: u64| Entry {
            pos: u64::MAX - i,
            size: u32::MAX - i as u32,
            tag_hash: 0x8000_0001 + i as u32,
            store_ts_ms: -(i as i64) - 1,
        };
        for i in 0..STAGE_ENTRIES {
            slot.put(i, &e(i));
        }
        for i in 0..STAGE_ENTRIES {
            assert_eq!(slot.get(i), e(i));
        }
    }

    #[test]
    fn slots_are_distinct_and_reused_after_release_within_one_chunk() {
        let arena = Arena::default();
        let taken: Vec<_> = (0..SLOTS_PER_CHUNK)
            .map(|_| arena.take().unwrap())
            .collect();
        assert_eq!(arena.chunks(), 1);
        let mut addrs: Vec<usize> = taken.iter().map(|p| *p as usize).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), SLOTS_PER_CHUNK);
        assert_eq!(
            addrs[0] % CHUNK_BYTES,
            0,
            "a chunk starts on a huge-page boundary"
        );
        arena.release(taken[7]);
        assert_eq!(arena.take().unwrap(), taken[7]);
        assert_eq!(arena.chunks(), 1);
        arena.take().unwrap();
        assert_eq!(arena.chunks(), 2, "a full chunk adds another");
    }
}
