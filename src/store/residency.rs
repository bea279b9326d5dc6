//! Reads of the backlog. A consumer reading an old backlog touches pages the kernel evicted
//! (or never had, after a restart); a read of them in the event loop would stall every
//! connection for the length of the disk read, and even from the page cache a 1 MiB read costs
//! the loop a CRC of every record and a copy. [`Store::read_is_cold`] tells such a read from a
//! tailing one without faulting anything in: a read is cold when it starts below the *hot
//! tail*, the last [`HOT_TAIL_BYTES`] of the commitlog this process wrote (or when its first
//! index entry is not in the page cache). [`Fetcher::read`] runs a cold read on a thread that
//! may block: it first brings in what is not resident, readahead for all of it at once so the
//! disk serves it together, then it runs the read itself.
//!
//! The fetch walks the read exactly as [`Store::read_into`] will: from the offset, entries
//! skipped by the tag filter's hash cost an index read only, records are counted until
//! `max_bytes`. The records of one partition are interleaved with every other's in the
//! commitlog, so the walk merges record ranges that lie close together.

use super::commitlog::Segment;
use super::index::{PartIndex, ENTRY_BYTES};
use super::pages::PAGE_BYTES;
use super::{record, ReadOutcome, ReadSpec, Shared, Store, StoreError, SCAN_ENTRIES_MAX};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Record ranges closer than this are merged into one range (a page of another partition's
/// records between them is read in with them).
const MERGE_GAP_BYTES: u64 = 64 << 10;

/// The commitlog this process wrote last, up to this many bytes behind the write position, is
/// the hot tail: it was written through the page cache moments ago, and a read starting there
/// is a tailing consumer's, served in the event loop.
pub const HOT_TAIL_BYTES: u64 = 256 << 20;

/// Index entries per page.
const ENTRIES_PER_PAGE: u64 = PAGE_BYTES as u64 / ENTRY_BYTES;

/// A record range of one segment.
struct Range {
    seg: Arc<Segment>,
    start: u64,
    end: u64,
}

impl Store {
    /// Whether a read of `topic`/`partition` from `offset` is cold: it starts below the hot
    /// tail, or its first index entry is not in the page cache. Faults nothing in; offsets
    /// outside `[min, max)` and unknown partitions are never cold (the read reports them).
    pub fn read_is_cold(&self, topic: &str, partition: u32, offset: u64) -> bool {
        let Ok(idx) = self.index_of(topic, partition) else {
            return false;
        };
        let next = idx.next.load(Ordering::Acquire);
        if offset < idx.min.load(Ordering::Acquire) || offset >= next {
            return false;
        }
        // The last page's worth of entries was written moments ago: no syscall for a tailing
        // consumer.
        if offset < next.saturating_sub(ENTRIES_PER_PAGE) && !idx.entries_resident(offset, 1).0 {
            return true;
        }
        let Ok(e) = idx.entry(offset) else {
            return false;
        };
        let sh = &*self.shared;
        let write_pos = sh.log.write_pos.load(Ordering::Acquire);
        let hot_floor = sh
            .opened_pos
            .load(Ordering::Relaxed)
            .max(write_pos.saturating_sub(HOT_TAIL_BYTES));
        !e.is_hole() && e.pos < hot_floor
    }

    /// A handle that brings reads in from the disk, for a thread that may block.
    pub fn fetcher(&self) -> Fetcher {
        Fetcher {
            shared: self.shared.clone(),
        }
    }
}

/// Runs reads that may wait for the disk; see the module documentation.
#[derive(Clone)]
pub struct Fetcher {
    shared: Arc<Shared>,
}

impl Fetcher {
    /// Runs a read of `topic`/`partition` from `offset` ([`Store::read_into`]) on the calling
    /// thread, after reading in (and waiting for) every index page and record it will touch
    /// that is not in the page cache: readahead for all of them first, so the disk serves them
    /// together, then a touch of each page. The event loop receives the records ready to send.
    pub fn read(&self, r: &ReadSpec<'_>, out: &mut Vec<u8>) -> Result<ReadOutcome, StoreError> {
        let sh = &*self.shared;
        let idx = sh.index_of(r.topic, r.partition)?;
        let (offset, next) = (r.offset, idx.next.load(Ordering::Acquire));
        if offset < next {
            // The index pages first: the walk reads them, and they are advised random (no
            // readahead), so one at a time they would cost a disk round trip each.
            let guess =
                (r.max_bytes as u64 / record::HEADER_BYTES as u64 + 1).min(SCAN_ENTRIES_MAX);
            idx.fetch_entries(offset, guess.min(next - offset));
            let ranges = walk(sh, &idx, r);
            let cold: Vec<&Range> = ranges
                .iter()
                .filter(|r| !r.seg.resident(r.start, r.end - r.start))
                .collect();
            for r in &cold {
                r.seg.will_need(r.start, r.end - r.start);
            }
            for r in &cold {
                r.seg.touch(r.start, r.end - r.start);
            }
        }
        sh.read_into(r, out)
    }
}

/// Walks the entries a read from `offset` covers and merges their record ranges.
fn walk(sh: &Shared, idx: &PartIndex, r: &ReadSpec<'_>) -> Vec<Range> {
    let (offset, max_bytes, filter) = (r.offset, r.max_bytes, r.filter);
    let min = idx.min.load(Ordering::Acquire);
    let next = idx.next.load(Ordering::Acquire);
    let mut ranges: Vec<Range> = Vec::new();
    if offset < min || offset >= next {
        return ranges;
    }
    let limit = next.min(offset + SCAN_ENTRIES_MAX);
    let (mut n, mut bytes, mut records) = (offset, 0usize, 0u64);
    let mut entries = idx.cursor();
    while n < limit {
        let Ok(e) = entries.get(n) else { break };
        if e.is_hole() {
            break;
        }
        n += 1;
        if filter.is_some_and(|f| !f.may_match(e.tag_hash)) {
            continue;
        }
        if records > 0 && bytes + e.size as usize > max_bytes {
            break;
        }
        records += 1;
        bytes += e.size as usize;
        let (start, end) = (e.pos, e.pos + e.size as u64);
        if let Some(last) = ranges.last_mut() {
            if start >= last.end && start <= last.end + MERGE_GAP_BYTES && end <= last.seg.end() {
                last.end = end;
                continue;
            }
        }
        let Some(seg) = sh.log.segment_at(start).filter(|s| end <= s.end()) else {
            break;
        };
        ranges.push(Range { seg, start, end });
    }
    ranges
}

#[cfg(test)]
mod tests {
    use crate::store::{Message, ReadSpec, Store, StoreConfig, TagFilter};
    use std::path::Path;

    fn open(dir: &Path) -> Store {
        let mut cfg = StoreConfig::new(dir);
        cfg.segment_bytes = 64 << 20;
        cfg.disk_free_reserve_bytes = 0;
        cfg.disk_used_ratio_max = 1.0;
        Store::open(cfg).unwrap()
    }

    fn message(partition: u32, tag: &'static [u8], body: &'static [u8]) -> Message<'static> {
        Message {
            topic: "t",
            partition,
            flag: 0,
            tag,
            props: b"",
            body,
            born_ts_ms: 1,
        }
    }

    /// A store with 4,000 records of 1,000 bytes in each of `t`'s 2 partitions, interleaved
    /// (tags `even` in partition 0, `odd` in 1).
    fn filled(dir: &Path) -> Store {
        let store = open(dir);
        store.ensure_topic("t", 2).unwrap();
        for i in 0..8000u32 {
            let tag: &'static [u8] = if i % 2 == 0 { b"even" } else { b"odd" };
            store.append(&message(i % 2, tag, &[5u8; 1000])).unwrap();
        }
        store
    }

    #[test]
    fn reads_below_what_this_process_wrote_are_cold_and_out_of_range_offsets_never_are() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path());
        assert!(!store.read_is_cold("t", 0, 0), "just written: the hot tail");
        store.close().unwrap();

        let store = open(dir.path());
        assert!(store.read_is_cold("t", 0, 0), "written before this process");
        assert!(store.read_is_cold("t", 1, 3999), "the other partition too");
        // Offsets outside [min, max) read nothing: nothing to wait for.
        assert!(!store.read_is_cold("t", 0, 4000));
        assert!(!store.read_is_cold("t", 0, 9999));
        assert!(!store.read_is_cold("nope", 0, 0));
        store.append(&message(0, b"even", &[6u8; 100])).unwrap();
        assert!(
            !store.read_is_cold("t", 0, 4000),
            "appended by this process"
        );
        assert!(store.read_is_cold("t", 0, 3999), "one record earlier");
        store.close().unwrap();
    }

    #[test]
    fn the_fetcher_reads_an_evicted_backlog_in_and_reads_what_read_into_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path());
        store.close().unwrap();
        crate::store::pages::evict_dir(dir.path());

        let store = open(dir.path());
        let first = store.shared.log.segment_at(0).unwrap();
        assert!(!first.resident(0, 1 << 20), "evicted");
        let even = TagFilter::new(&[b"even"]);
        let mut fetched = Vec::new();
        let got = store
            .fetcher()
            .read(
                &ReadSpec {
                    topic: "t",
                    partition: 0,
                    offset: 0,
                    max_bytes: 1 << 20,
                    filter: Some(&even),
                },
                &mut fetched,
            )
            .unwrap();
        assert!(got.records > 500, "a 1 MiB read returned {got:?}");
        // Partition 0's records lie between partition 1's: the fetch brought the span in.
        let end = 2 * got.bytes as u64;
        assert!(
            first.resident(0, end - 4096),
            "fetched: [0, {end}) resident"
        );
        let mut read = Vec::new();
        let again = store
            .read_into("t", 0, 0, 1 << 20, Some(&even), &mut read)
            .unwrap();
        assert_eq!((got, &fetched), (again, &read));
        store.close().unwrap();
    }
}
