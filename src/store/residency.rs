//! Reads that would wait for the disk. A consumer reading an old backlog touches pages the
//! kernel evicted (or never had, after a restart); a read of them in the event loop would stall
//! every connection for the length of the disk read. [`Store::read_is_cold`] answers, without
//! faulting anything in, whether a read would touch such pages (mincore(2) over the index pages
//! and record ranges the read covers); [`Fetcher::fetch`] brings them in, on a thread that may
//! block, so the read that follows runs from memory.
//!
//! Both walk the read exactly as [`Store::read_into`] will: from the offset, entries skipped by
//! the tag filter's hash cost an index read only, records are counted until `max_bytes`. The
//! records of one partition are interleaved with every other's in the commitlog, so the walk
//! merges record ranges that lie close together and checks each merged range.
//!
//! The check is bounded and errs towards "resident": it looks at no more than
//! [`RANGES_MAX`] merged ranges (a prefix of a read of a sparse partition), skips the region
//! this process wrote last ([`HOT_TAIL_BYTES`]: a tailing consumer pays no syscall), and
//! answers resident when it cannot tell (an error is the read's to report).

use super::commitlog::Segment;
use super::index::{PartIndex, ENTRY_BYTES};
use super::pages::PAGE_BYTES;
use super::{record, Shared, Store, TagFilter, SCAN_ENTRIES_MAX};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Record ranges closer than this are merged into one range (a page of another partition's
/// records between them is read in with them).
const MERGE_GAP_BYTES: u64 = 64 << 10;

/// Most merged ranges one check looks at.
pub const RANGES_MAX: usize = 16;

/// The commitlog this process wrote last, up to this many bytes behind the write position, is
/// taken to be resident without asking: it was written through the page cache moments ago.
pub const HOT_TAIL_BYTES: u64 = 256 << 20;

/// Index entries per page.
const ENTRIES_PER_PAGE: u64 = PAGE_BYTES as u64 / ENTRY_BYTES;

/// Index entries asked about at a time (one mincore call: 8 pages).
const INDEX_CHECK_ENTRIES: u64 = 8 * ENTRIES_PER_PAGE;

/// A record range of one segment.
struct Range {
    seg: Arc<Segment>,
    start: u64,
    end: u64,
}

/// What one walk of a read found.
enum Walk {
    /// The merged record ranges (at most `ranges_max`).
    Ranges(Vec<Range>),
    /// An index page the read needs is not resident (only when asked to stop there).
    ColdIndex,
}

impl Store {
    /// Whether a read of `topic`/`partition` from `offset` (up to `max_bytes`, keeping only
    /// `filter`'s tags) would wait for the disk. Faults nothing in.
    pub fn read_is_cold(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        filter: Option<&TagFilter>,
    ) -> bool {
        let Ok(idx) = self.index_of(topic, partition) else {
            return false;
        };
        let sh = &*self.shared;
        let ranges = match walk(sh, &idx, offset, max_bytes, filter, RANGES_MAX, true) {
            Walk::ColdIndex => return true,
            Walk::Ranges(r) => r,
        };
        let write_pos = sh.log.write_pos.load(Ordering::Acquire);
        let hot_floor = sh
            .opened_pos
            .load(Ordering::Relaxed)
            .max(write_pos.saturating_sub(HOT_TAIL_BYTES));
        ranges
            .iter()
            .any(|r| r.start < hot_floor && !r.seg.resident(r.start, r.end - r.start))
    }

    /// A handle that brings reads in from the disk, for a thread that may block.
    pub fn fetcher(&self) -> Fetcher {
        Fetcher {
            shared: self.shared.clone(),
        }
    }
}

/// Brings the pages of a read into the page cache; see the module documentation.
pub struct Fetcher {
    shared: Arc<Shared>,
}

impl Fetcher {
    /// Reads in (and waits for) every index page and record the read would touch: readahead
    /// for all of them first, so the disk serves them together, then a touch of each page.
    pub fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        filter: Option<&TagFilter>,
    ) {
        let sh = &*self.shared;
        let Ok(idx) = sh.index_of(topic, partition) else {
            return;
        };
        let next = idx.next.load(Ordering::Acquire);
        if offset >= next {
            return;
        }
        // The index pages first: the walk reads them, and they are advised random (no
        // readahead), so one at a time they would cost a disk round trip each.
        let guess = (max_bytes as u64 / record::HEADER_BYTES as u64 + 1).min(SCAN_ENTRIES_MAX);
        idx.fetch_entries(offset, guess.min(next - offset));
        let Walk::Ranges(ranges) = walk(sh, &idx, offset, max_bytes, filter, usize::MAX, false)
        else {
            return;
        };
        for r in &ranges {
            r.seg.will_need(r.start, r.end - r.start);
        }
        for r in &ranges {
            r.seg.touch(r.start, r.end - r.start);
        }
    }
}

/// Walks the entries a read from `offset` covers and merges their record ranges. With
/// `stop_at_cold_index`, index entries not in the page cache end the walk before they are
/// read (the last page's worth, which the writer keeps warm, is not asked about).
fn walk(
    sh: &Shared,
    idx: &PartIndex,
    offset: u64,
    max_bytes: usize,
    filter: Option<&TagFilter>,
    ranges_max: usize,
    stop_at_cold_index: bool,
) -> Walk {
    let min = idx.min.load(Ordering::Acquire);
    let next = idx.next.load(Ordering::Acquire);
    let mut ranges: Vec<Range> = Vec::new();
    if offset < min || offset >= next {
        return Walk::Ranges(ranges);
    }
    let limit = next.min(offset + SCAN_ENTRIES_MAX);
    // The last page's worth of entries: the writer wrote them moments ago.
    let tail = next.saturating_sub(ENTRIES_PER_PAGE);
    let (mut n, mut bytes, mut records) = (offset, 0usize, 0u64);
    let mut checked_to = if stop_at_cold_index { offset } else { limit };
    let mut entries = idx.cursor();
    while n < limit {
        if n >= checked_to && n < tail {
            let (resident, to) = idx.entries_resident(n, INDEX_CHECK_ENTRIES.min(tail - n));
            if !resident {
                return Walk::ColdIndex;
            }
            checked_to = to;
        }
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
        if ranges.len() == ranges_max {
            break;
        }
        let Some(seg) = sh.log.segment_at(start).filter(|s| end <= s.end()) else {
            break;
        };
        ranges.push(Range { seg, start, end });
    }
    Walk::Ranges(ranges)
}

#[cfg(test)]
mod tests {
    use crate::store::{Message, Store, StoreConfig, TagFilter};
    use std::os::fd::AsRawFd;
    use std::path::Path;

    fn evict(dir: &Path) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                evict(&e.path());
            } else {
                let f = std::fs::File::open(e.path()).unwrap();
                f.sync_all().unwrap();
                // SAFETY: an advice call on a descriptor we own.
                unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            }
        }
    }

    fn open(dir: &Path) -> Store {
        let mut cfg = StoreConfig::new(dir);
        cfg.segment_bytes = 64 << 20;
        cfg.disk_free_reserve_bytes = 0;
        cfg.disk_used_ratio_max = 1.0;
        Store::open(cfg).unwrap()
    }

    #[test]
    fn an_evicted_read_is_cold_until_fetched_and_offsets_out_of_range_never_are() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.ensure_topic("t", 2).unwrap();
        let body = [5u8; 1000];
        for i in 0..8000u32 {
            let tag: &[u8] = if i % 2 == 0 { b"even" } else { b"odd" };
            let m = Message {
                topic: "t",
                partition: i % 2,
                flag: 0,
                tag,
                props: b"",
                body: &body,
                born_ts_ms: 1,
            };
            store.append(&m).unwrap();
        }
        assert!(
            !store.read_is_cold("t", 0, 0, 1 << 20, None),
            "just written"
        );
        store.close().unwrap();
        evict(dir.path());

        let store = open(dir.path());
        assert!(store.read_is_cold("t", 0, 0, 1 << 20, None), "evicted");
        assert!(
            store.read_is_cold("t", 1, 0, 1 << 20, None),
            "the other partition too"
        );
        let even = TagFilter::new(&[b"even"]);
        store.fetcher().fetch("t", 0, 0, 1 << 20, Some(&even));
        assert!(
            !store.read_is_cold("t", 0, 0, 1 << 20, Some(&even)),
            "fetched"
        );
        assert!(
            store.read_is_cold("t", 1, 0, 1 << 20, None),
            "fetching one partition's read leaves the other's index cold"
        );
        // Offsets outside [min, max) read nothing: nothing to wait for.
        assert!(!store.read_is_cold("t", 0, 4000, 1 << 20, None));
        assert!(!store.read_is_cold("t", 0, 9999, 1 << 20, None));
        assert!(!store.read_is_cold("nope", 0, 0, 1 << 20, None));
        store.close().unwrap();
    }
}
