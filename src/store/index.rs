//! The per-partition index ("consume queue"): fixed-size entries, one per logical offset, in
//! segment files named by their first entry number. Entry `n` of a partition describes the
//! record at logical offset `n`, so min/max offsets and lag are arithmetic and a read is one
//! lookup. Index files are derived data: recovery rebuilds them from the commitlog.
//!
//! Entry layout (24 bytes, big-endian):
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 8 | commitlog position of the record; `u64::MAX` marks a hole (a record lost to corruption) |
//! | 8 | 4 | record bytes (0 with a zero position: never written) |
//! | 12 | 4 | tag hash ([`tag_hash`]) |
//! | 16 | 8 | store timestamp, ms (rewind by time is a binary search) |
//!
//! Mappings are opened lazily and bounded by [`MapBudget`]: at most `index_maps_max` segment
//! maps exist at once (clock eviction); file descriptors are closed right after mapping, so
//! open files do not grow with partitions. File blocks are allocated in chunks ahead of the
//! writer, so a full disk fails an allocation, never a mapped write.
//!
//! A partition's newest entries (up to [`STAGE_ENTRIES`]) are staged in anonymous memory
//! before the writer copies them into the file a batch at a time (see [`super::stage`]):
//! entries `[staged_from, next)` are in the stage, those below in the file. Readers look in
//! both; a checkpoint copies every stage out first ([`MapBudget::copy_out_stages`]), so the
//! files hold every entry a checkpoint counts as durable. A crash loses staged entries as it
//! loses anything not yet durable in the index: recovery re-makes them from the log.

use super::stage::{Arena, Slot, STAGE_ENTRIES};
use super::{fs, pages};
use memmap2::{MmapOptions, MmapRaw};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

pub const ENTRY_BYTES: u64 = 24;
/// Bytes allocated at a time as an index file grows (2,730 entries): with 10,000 partitions
/// at most 640 MiB reserved ahead of need, and an allocation every 2,730 appends of a
/// partition.
const ALLOC_CHUNK_BYTES: u64 = 64 * 1024;
pub const HOLE_POS: u64 = u64::MAX;
/// Entries the writer's tail of a partition maps at a time (48 KiB, whole pages; see
/// [`IndexSeg::tail_window`]).
const TAIL_WINDOW_ENTRIES: u64 = 2048;
const _: () = assert!(TAIL_WINDOW_ENTRIES * ENTRY_BYTES % 4096 == 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub pos: u64,
    pub size: u32,
    pub tag_hash: u32,
    pub store_ts_ms: i64,
}

impl Entry {
    pub fn hole() -> Entry {
        Entry {
            pos: HOLE_POS,
            size: 0,
            tag_hash: 0,
            store_ts_ms: 0,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.pos == 0 && self.size == 0
    }
    pub fn is_hole(&self) -> bool {
        self.pos == HOLE_POS
    }
    pub(super) fn encode(&self) -> [u8; ENTRY_BYTES as usize] {
        let mut b = [0u8; ENTRY_BYTES as usize];
        b[0..8].copy_from_slice(&self.pos.to_be_bytes());
        b[8..12].copy_from_slice(&self.size.to_be_bytes());
        b[12..16].copy_from_slice(&self.tag_hash.to_be_bytes());
        b[16..24].copy_from_slice(&self.store_ts_ms.to_be_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> Entry {
        Entry {
            pos: u64::from_be_bytes(b[0..8].try_into().expect("8")),
            size: u32::from_be_bytes(b[8..12].try_into().expect("4")),
            tag_hash: u32::from_be_bytes(b[12..16].try_into().expect("4")),
            store_ts_ms: i64::from_be_bytes(b[16..24].try_into().expect("8")),
        }
    }
}

/// FNV-1a of a tag; 0 for no tag. Stored in the index so filters skip without reading records.
pub fn tag_hash(tag: &[u8]) -> u32 {
    if tag.is_empty() {
        return 0;
    }
    let mut h: u32 = 0x811c_9dc5;
    for &b in tag {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// The global bound on open index maps: half of `index_maps_max` for segments being read
/// (clock eviction) and half for the writer's tails (the active segment of each partition
/// written lately, oldest dropped first). A tail comes with a stage slot (see
/// [`super::stage`]), so the arena of slots lives here too.
pub struct MapBudget {
    max: usize,
    open: AtomicUsize,
    ring: Mutex<VecDeque<Weak<IndexSeg>>>,
    tails_max: usize,
    tails: Mutex<VecDeque<Weak<PartIndex>>>,
    stage: Arena,
    /// Partition indexes loaded, and entries read by their loads to find their ends.
    loads: AtomicU64,
    load_probes: AtomicU64,
}

impl MapBudget {
    pub fn new(maps_max: usize) -> MapBudget {
        MapBudget {
            max: (maps_max / 2).max(2),
            open: AtomicUsize::new(0),
            ring: Mutex::new(VecDeque::new()),
            tails_max: (maps_max / 2).max(1),
            tails: Mutex::new(VecDeque::new()),
            stage: Arena::default(),
            loads: AtomicU64::new(0),
            load_probes: AtomicU64::new(0),
        }
    }

    /// Partition indexes loaded (with a segment to search) since the budget was made, and the
    /// entries their loads read to find their ends.
    pub fn loads(&self) -> (u64, u64) {
        (
            self.loads.load(Ordering::Relaxed),
            self.load_probes.load(Ordering::Relaxed),
        )
    }

    fn loaded(&self, probes: u64) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.load_probes.fetch_add(probes, Ordering::Relaxed);
    }

    /// Copies every partition's staged entries into its index file, so the files (and the
    /// page cache under them) hold every entry written so far. Writer only: the caller holds
    /// the store's writer lock. Costs one index page touch per partition with staged entries.
    pub fn copy_out_stages(&self) {
        let tails = self.tails.lock().expect("tails lock");
        for idx in tails.iter().filter_map(Weak::upgrade) {
            idx.copy_out();
        }
    }

    /// Maps open now: segment maps plus writer tails (each tail is a map of its own, a
    /// window: see `IndexSeg::tail_window`).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed) + self.tails.lock().expect("tails lock").len()
    }

    /// Registers `idx`'s new tail; drops the oldest other tails beyond the bound. Only the
    /// writer (or recovery) calls this, and only it uses tails, so dropping one is safe.
    fn tail_opened(&self, idx: &Arc<PartIndex>) {
        let mut tails = self.tails.lock().expect("tails lock");
        tails.push_back(Arc::downgrade(idx));
        while tails.len() > self.tails_max {
            let Some(oldest) = tails.pop_front() else {
                break;
            };
            match oldest.upgrade() {
                Some(o) if Arc::ptr_eq(&o, idx) => tails.push_back(oldest),
                Some(o) => o.drop_tail(),
                None => {}
            }
        }
    }

    fn admitted(&self, seg: &Arc<IndexSeg>) {
        let n = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let mut ring = self.ring.lock().expect("ring lock");
        ring.push_back(Arc::downgrade(seg));
        if n <= self.max {
            return;
        }
        let mut budget = ring.len() * 2;
        while self.open.load(Ordering::Relaxed) > self.max && budget > 0 {
            budget -= 1;
            let Some(weak) = ring.pop_front() else { break };
            let Some(victim) = weak.upgrade() else {
                continue;
            };
            if Arc::ptr_eq(&victim, seg) || victim.referenced.swap(false, Ordering::Relaxed) {
                ring.push_back(weak);
                continue;
            }
            let evicted = match victim.map.try_lock() {
                Ok(mut m) => m.take().is_some(),
                Err(_) => {
                    ring.push_back(weak);
                    false
                }
            };
            if evicted {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn released(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One index segment file.
pub struct IndexSeg {
    pub base: u64,
    pub entries_max: u64,
    path: PathBuf,
    map: Mutex<Option<Arc<MmapRaw>>>,
    referenced: AtomicBool,
    allocated_bytes: AtomicU64,
    budget: Arc<MapBudget>,
}

impl Drop for IndexSeg {
    fn drop(&mut self) {
        if self.map.get_mut().map(|m| m.is_some()).unwrap_or(false) {
            self.budget.released();
        }
    }
}

impl IndexSeg {
    fn new(path: PathBuf, base: u64, entries_max: u64, budget: Arc<MapBudget>) -> IndexSeg {
        IndexSeg {
            base,
            entries_max,
            path,
            map: Mutex::new(None),
            referenced: AtomicBool::new(false),
            allocated_bytes: AtomicU64::new(0),
            budget,
        }
    }

    fn end(&self) -> u64 {
        self.base + self.entries_max
    }

    fn mapping(self: &Arc<Self>) -> io::Result<Arc<MmapRaw>> {
        self.referenced.store(true, Ordering::Relaxed);
        {
            let guard = self.map.lock().expect("index map lock");
            if let Some(m) = guard.as_ref() {
                return Ok(m.clone());
            }
        }
        let map = Arc::new(self.map_entries(self.base, self.end())?);
        let mut guard = self.map.lock().expect("index map lock");
        if let Some(m) = guard.as_ref() {
            return Ok(m.clone());
        }
        *guard = Some(map.clone());
        drop(guard);
        self.budget.admitted(self);
        Ok(map)
    }

    /// Maps entries `[first, end)` of this segment (`first - base` a multiple of
    /// [`TAIL_WINDOW_ENTRIES`], so the offset is page-aligned).
    fn map_entries(&self, first: u64, end: u64) -> io::Result<MmapRaw> {
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        let map = MmapOptions::new()
            .offset((first - self.base) * ENTRY_BYTES)
            .len(((end - first) * ENTRY_BYTES) as usize)
            .map_raw(&file)?;
        // Each partition touches its index a page at a time: readahead on a fault would fill
        // (and zero) large folios of a sparse file for every partition.
        map.advise(memmap2::Advice::Random)?;
        Ok(map)
    }

    /// The window of [`TAIL_WINDOW_ENTRIES`] entries holding entry `n`, which the writer's
    /// tail maps: its first entry and its end.
    ///
    /// The tail does not use the segment's own map (24 MiB by default). With those, 10,240
    /// partitions written round-robin ran at 43-58% of one partition's rate (store-bench), and
    /// at 100-130% with 48 KiB index files; with these windows one append per call runs at
    /// 102-110%. The likely cause: with one big map per partition every append lands in a
    /// different page-table page, and on a virtual machine each TLB miss is a nested page walk.
    /// Small maps made one after another lie side by side (checked in /proc/PID/maps), so the
    /// tails share page-table pages. Readers keep the segment's map; both see the same page
    /// cache. A window is remapped every 2,048 entries of a partition.
    fn tail_window(&self, n: u64) -> (u64, u64) {
        let first = self.base + (n - self.base) / TAIL_WINDOW_ENTRIES * TAIL_WINDOW_ENTRIES;
        (first, (first + TAIL_WINDOW_ENTRIES).min(self.end()))
    }

    /// Entries to probe first when searching for the end of the written prefix: one just past
    /// the file's last written block and two at its start, by the filesystem's block map
    /// ([`fs::first_hole`]). None if the filesystem cannot tell. Only a hint: a probe that
    /// turns out otherwise still narrows the search.
    fn end_hint(&self) -> Vec<u64> {
        let Ok(file) = File::open(&self.path) else {
            return Vec::new();
        };
        let (Ok(hole), Ok(meta)) = (fs::first_hole(&file, 0), file.metadata()) else {
            return Vec::new();
        };
        if hole >= self.entries_max * ENTRY_BYTES {
            return Vec::new(); // no hole: not tracked, or the file is full
        }
        // The prefix ends inside the last written block, (hole - block, hole]. The entry
        // starting at or past `hole` lies wholly past the end (a hole: reading it reads
        // nothing from the disk). The first entry starting inside the block is written unless
        // the end is at most one entry into the block, when the entry before it (which starts
        // in the block before) is the last one. So the search reads one page of the disk,
        // rarely two.
        let block = meta.blksize().max(ENTRY_BYTES);
        let empty = self.base + hole.div_ceil(ENTRY_BYTES);
        let inside = self.base + hole.saturating_sub(block).div_ceil(ENTRY_BYTES);
        vec![empty, inside, inside.saturating_sub(1)]
    }

    /// Allocates file blocks so entries up to and including `n` can be written.
    fn ensure_allocated(&self, n: u64) -> io::Result<()> {
        let need = (n - self.base + 1) * ENTRY_BYTES;
        if need <= self.allocated_bytes.load(Ordering::Relaxed) {
            return Ok(());
        }
        let want = (need + ALLOC_CHUNK_BYTES).min(self.entries_max * ENTRY_BYTES);
        // Only the new range: an allocation from 0 walks every extent already there, which
        // took 1 ms per call on a 15 MB index and stalled the event loop for 17 ms when 16
        // partitions grew together. After a load, entries below `n` are written already.
        let from = match self.allocated_bytes.load(Ordering::Relaxed) {
            0 => (n - self.base) * ENTRY_BYTES / 4096 * 4096,
            done => done,
        };
        let file = OpenOptions::new().write(true).open(&self.path)?;
        fs::allocate_range(&file, from, want - from)?;
        self.allocated_bytes.store(want, Ordering::Relaxed);
        Ok(())
    }

    fn read(self: &Arc<Self>, n: u64) -> io::Result<Entry> {
        let map = self.mapping()?;
        let at = ((n - self.base) * ENTRY_BYTES) as usize;
        // SAFETY: `at + 24` is within the mapping (n < end, checked by callers); entries below
        // the published count are never written again except by recovery before readers
        // exist or by a trim that first unpublishes them.
        let b = unsafe { std::slice::from_raw_parts(map.as_ptr().add(at), ENTRY_BYTES as usize) };
        Ok(Entry::decode(b))
    }

    fn write(self: &Arc<Self>, n: u64, e: &Entry) -> io::Result<()> {
        let map = self.mapping()?;
        let at = ((n - self.base) * ENTRY_BYTES) as usize;
        let bytes = e.encode();
        // SAFETY: in bounds (n < end); only the writer writes, and only entries not yet
        // published (or, in recovery and trimming, entries no reader can be given).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.as_mut_ptr().add(at), bytes.len());
        }
        Ok(())
    }
}

/// Reads entries of one partition, mapping each index segment once instead of paying a lock
/// and a reference count per entry as [`PartIndex::entry`] does (a 1 MiB get reads about
/// 5,000 entries). The held map stays valid if the budget unmaps the segment meanwhile.
pub struct EntryCursor<'a> {
    idx: &'a PartIndex,
    /// The segment's first entry, its end, and its map.
    cur: Option<(u64, u64, Arc<MmapRaw>)>,
}

impl EntryCursor<'_> {
    /// Entry `n`, which must be below the partition's `next`.
    pub fn get(&mut self, n: u64) -> io::Result<Entry> {
        if let Some(e) = self.idx.staged(n) {
            return Ok(e);
        }
        let hit = self.cur.as_ref().is_some_and(|c| c.0 <= n && n < c.1);
        if !hit {
            let seg = self.idx.seg_for(n).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "index entry out of range")
            })?;
            self.cur = Some((seg.base, seg.end(), seg.mapping()?));
        }
        let (base, _, map) = self.cur.as_ref().expect("set above");
        let at = ((n - base) * ENTRY_BYTES) as usize;
        // SAFETY: as in `IndexSeg::read`: `n` lies in this segment, so `at + 24` is within its
        // mapping, and published entries are not written again while readers may see them.
        let b = unsafe { std::slice::from_raw_parts(map.as_ptr().add(at), ENTRY_BYTES as usize) };
        Ok(Entry::decode(b))
    }
}

/// The index of one partition. The fields an append touches (`next`, the stage and the
/// writer's tail) share the first cache line: with thousands of partitions written
/// round-robin, each append costs one miss here plus the entry's store into its stage slot.
#[repr(C, align(64))]
pub struct PartIndex {
    /// Entries written and published: the partition's max offset.
    pub next: AtomicU64,
    /// Entries below this are in the index file; `[staged_from, next)` (at most
    /// [`STAGE_ENTRIES`]) are in the stage slot, entry `n` at `n - staged_from`. Readers use
    /// it as the slot's seqlock (see [`PartIndex::staged`]). Writer only changes it.
    staged_from: AtomicU64,
    /// The stage slot, from the budget's arena: set while the partition has a tail (staged
    /// entries always lie in the tail's window), null otherwise.
    stage: AtomicPtr<Slot>,
    /// Writer tail: the mapped window of the active segment (see [`IndexSeg::tail_window`]),
    /// its first entry, and the end of the entries already allocated in it. Null when the
    /// partition has no tail. Only the writer (under the store's writer lock) or recovery
    /// reads or changes these.
    tail_ptr: AtomicPtr<u8>,
    tail_base: AtomicU64,
    tail_ready_end: AtomicU64,
    /// First offset whose record is still kept.
    pub min: AtomicU64,
    /// The map `tail_ptr` points into.
    tail_map: Mutex<Option<MmapRaw>>,
    dir: PathBuf,
    entries_per_segment: u64,
    budget: Arc<MapBudget>,
    segs: RwLock<Vec<Arc<IndexSeg>>>,
}

impl Drop for PartIndex {
    /// Gives the stage slot back. Entries still staged are not copied out: they are lost, as
    /// in a crash (a clean shutdown copies them out first, `MapBudget::copy_out_stages`), so a
    /// store abandoned in a test leaves the files a killed process would.
    fn drop(&mut self) {
        self.release_stage();
    }
}

impl PartIndex {
    /// Loads (or creates) the index in `dir`, finds its end, and drops trailing entries that
    /// point at or past `log_end` (torn commitlog tail after a crash).
    pub fn load(
        dir: &Path,
        entries_per_segment: u64,
        budget: Arc<MapBudget>,
        log_end: u64,
    ) -> io::Result<PartIndex> {
        std::fs::create_dir_all(dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(base) = entry.file_name().to_str().and_then(fs::parse_name) {
                let len = entry.metadata()?.len();
                bases.push((base, len / ENTRY_BYTES));
            }
        }
        bases.sort();
        let segs: Vec<Arc<IndexSeg>> = bases
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(base, n)| {
                Arc::new(IndexSeg::new(
                    dir.join(fs::name_of(base)),
                    base,
                    n,
                    budget.clone(),
                ))
            })
            .collect();
        let idx = PartIndex {
            next: AtomicU64::new(0),
            staged_from: AtomicU64::new(0),
            stage: AtomicPtr::new(std::ptr::null_mut()),
            tail_ptr: AtomicPtr::new(std::ptr::null_mut()),
            tail_base: AtomicU64::new(0),
            tail_ready_end: AtomicU64::new(0),
            min: AtomicU64::new(0),
            tail_map: Mutex::new(None),
            dir: dir.to_path_buf(),
            entries_per_segment,
            budget,
            segs: RwLock::new(segs),
        };
        // A crash can keep a new segment file but lose the entries written to it (and the
        // previous file's tail): an empty trailing file holds no entries, drop it.
        while idx.segment_count() > 1 {
            let last = idx.last_seg().expect("segments exist");
            if !last.read(last.base)?.is_empty() {
                break;
            }
            idx.drop_segments_past(last.base - 1)?;
        }
        let Some(last) = idx.last_seg() else {
            return Ok(idx);
        };
        // Entries are written in order, so the written ones are a prefix of the segment: search
        // for the first empty one. Entries below `lo` are written, those from `hi` on empty.
        // The first probes go where the filesystem says the written blocks end, so a restart
        // reads a page or two of a cold index instead of up to 20 (one per halving).
        let (mut lo, mut hi) = (last.base, last.end());
        let mut probes = 0u64;
        for n in last
            .end_hint()
            .into_iter()
            .chain(std::iter::repeat(u64::MAX))
        {
            if lo >= hi {
                break;
            }
            let mid = if (lo..hi).contains(&n) {
                n
            } else {
                lo + (hi - lo) / 2
            };
            probes += 1;
            if last.read(mid)?.is_empty() {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        idx.budget.loaded(probes);
        let first = idx.segs.read().expect("segs lock")[0].base;
        idx.next.store(lo, Ordering::Release);
        idx.staged_from.store(lo, Ordering::Release);
        idx.min.store(first, Ordering::Release);
        idx.trim_past(log_end)?;
        Ok(idx)
    }

    fn last_seg(&self) -> Option<Arc<IndexSeg>> {
        self.segs.read().expect("segs lock").last().cloned()
    }

    fn seg_for(&self, n: u64) -> Option<Arc<IndexSeg>> {
        let segs = self.segs.read().expect("segs lock");
        let i = segs.partition_point(|s| s.end() <= n);
        segs.get(i).filter(|s| s.base <= n).cloned()
    }

    /// A reader of entries in sequence (see [`EntryCursor`]).
    pub fn cursor(&self) -> EntryCursor<'_> {
        EntryCursor {
            idx: self,
            cur: None,
        }
    }

    /// Entry `n`, which must be below `next`.
    pub fn entry(&self, n: u64) -> io::Result<Entry> {
        if let Some(e) = self.staged(n) {
            return Ok(e);
        }
        match self.seg_for(n) {
            Some(seg) => seg.read(n),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "index entry out of range",
            )),
        }
    }

    /// Whether entries `[n, n + count)` are in the page cache (reading them will not wait for
    /// the disk), as far as `n`'s segment reaches; returns the answer and the entry the check
    /// covered up to. Entries out of range have nothing to wait for.
    pub fn entries_resident(&self, n: u64, count: u64) -> (bool, u64) {
        match self.entry_span(n, count) {
            Some((map, at, len, to)) => (pages::resident(&map, at, len), to),
            None => (true, n + count),
        }
    }

    /// Reads entries `[n, n + count)` (clamped to `n`'s segment) into the page cache, waiting
    /// for them: readahead for the whole range (the maps are advised random), then a touch.
    pub fn fetch_entries(&self, n: u64, count: u64) {
        if let Some((map, at, len, _)) = self.entry_span(n, count) {
            pages::will_need(&map, at, len);
            pages::touch(&map, at, len);
        }
    }

    /// The map holding entries `[n, n + count)` clamped to `n`'s segment, their byte offset
    /// and length in it, and the entry the clamped range ends at.
    fn entry_span(&self, n: u64, count: u64) -> Option<(Arc<MmapRaw>, usize, usize, u64)> {
        let seg = self.seg_for(n)?;
        let map = seg.mapping().ok()?;
        let to = (n + count).min(seg.end());
        let at = ((n - seg.base) * ENTRY_BYTES) as usize;
        Some((map, at, ((to - n) * ENTRY_BYTES) as usize, to))
    }

    /// Makes room for entry `n` (== `next`): a new segment when the last is full, file blocks
    /// allocated, and the writer's tail pointing at it. Called before the record is written, so
    /// a full disk refuses the append with nothing half-written. Writer or recovery only.
    pub fn prepare(self: &Arc<Self>, n: u64) -> io::Result<()> {
        if self.is_prepared(n) {
            return Ok(());
        }
        // The staged entries lie in the tail's window, which may move now.
        self.copy_out();
        let seg = match self.last_seg() {
            Some(s) if n < s.end() => s,
            _ => self.add_segment(n)?,
        };
        seg.ensure_allocated(n)?;
        let allocated_end = seg.base + seg.allocated_bytes.load(Ordering::Relaxed) / ENTRY_BYTES;
        let had_tail = !self.tail_ptr.load(Ordering::Relaxed).is_null();
        let (first, end) = seg.tail_window(n);
        // The window already mapped still holds `n` when only the allocation ran out.
        if !had_tail && self.stage.load(Ordering::Relaxed).is_null() {
            let slot = self.budget.stage.take()?;
            self.stage.store(slot as *mut Slot, Ordering::Release);
        }
        if !(had_tail && self.tail_base.load(Ordering::Relaxed) == first) {
            let map = seg.map_entries(first, end)?;
            self.tail_ptr.store(map.as_mut_ptr(), Ordering::Relaxed);
            *self.tail_map.lock().expect("tail lock") = Some(map);
        }
        self.tail_base.store(first, Ordering::Relaxed);
        self.tail_ready_end
            .store(end.min(allocated_end), Ordering::Relaxed);
        if !had_tail {
            self.budget.tail_opened(self);
        }
        Ok(())
    }

    /// Whether entry `n` can be written now, without [`PartIndex::prepare`] doing any work.
    pub fn is_prepared(&self, n: u64) -> bool {
        !self.tail_ptr.load(Ordering::Relaxed).is_null()
            && n >= self.tail_base.load(Ordering::Relaxed)
            && n < self.tail_ready_end.load(Ordering::Relaxed)
    }

    /// Forgets the writer's tail (its map is unmapped once no reader holds it), copying the
    /// staged entries out first and giving the stage slot back.
    fn drop_tail(&self) {
        self.copy_out();
        debug_assert!(
            self.staged_from.load(Ordering::Relaxed) >= self.next.load(Ordering::Relaxed)
        );
        self.release_stage();
        self.tail_ptr.store(std::ptr::null_mut(), Ordering::Relaxed);
        self.tail_ready_end.store(0, Ordering::Relaxed);
        *self.tail_map.lock().expect("tail lock") = None;
    }

    /// Starts fetching the cache line entry `n` (prepared) will be written to, so the miss
    /// overlaps with the work before [`PartIndex::write_prepared`]: its stage slot, or the
    /// index file where a full stage will be copied. A hint only.
    #[inline]
    pub fn prefetch_prepared(&self, n: u64) {
        let from = self.staged_from.load(Ordering::Relaxed);
        let slot = self.stage.load(Ordering::Relaxed);
        let (ptr, base) = (
            self.tail_ptr.load(Ordering::Relaxed),
            self.tail_base.load(Ordering::Relaxed),
        );
        let at = if n >= from && n - from < STAGE_ENTRIES && !slot.is_null() {
            slot as *const u8 as usize + ((n - from) * ENTRY_BYTES) as usize
        } else if !ptr.is_null() && from >= base {
            ptr as usize + ((from - base) * ENTRY_BYTES) as usize
        } else {
            return;
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults and has no architectural effect.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
            _mm_prefetch::<_MM_HINT_ET0>(at as *const i8);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }

    /// Stages entry `n` (== `next`), which [`PartIndex::prepare`] made ready, copying the
    /// full stage into the file first. The caller publishes `next`.
    pub fn write_prepared(&self, n: u64, e: &Entry) {
        assert!(self.is_prepared(n) && n == self.next.load(Ordering::Relaxed));
        let mut from = self.staged_from.load(Ordering::Relaxed);
        if n - from == STAGE_ENTRIES {
            self.copy_out();
            from = n;
        }
        let slot = self.stage.load(Ordering::Relaxed);
        assert!(!slot.is_null() && n - from < STAGE_ENTRIES);
        // Orders any `staged_from` change before the slot's new words: a reader that sees
        // them sees the change too (its fence pairs with this one) and discards its read.
        fence(Ordering::Release);
        // SAFETY: the stage is set while the tail is (the slot memory lives as long as the
        // budget's arena, which `self.budget` keeps); only the writer stores into it.
        unsafe { &*slot }.put(n - from, e);
    }

    /// Entry `n` if it is staged, read as a seqlock on `staged_from`: the slot's words are
    /// trusted only if `staged_from` did not move while they were read (a copy-out, or the
    /// slot given back and reused, moves it first). `None`: read `n` from the file.
    fn staged(&self, n: u64) -> Option<Entry> {
        loop {
            let from = self.staged_from.load(Ordering::Acquire);
            if n < from {
                return None;
            }
            let slot = self.stage.load(Ordering::Acquire);
            if slot.is_null() || n - from >= STAGE_ENTRIES {
                // Not staged (n is at or past `next`), or the stage went away just now.
                if self.staged_from.load(Ordering::Acquire) == from {
                    return None;
                }
                continue;
            }
            #[cfg(test)]
            for _ in 0..tests::STAGED_READ_SPINS.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            // SAFETY: slot memory stays mapped while the arena lives (`self.budget` holds it);
            // its words are atomics, so a racing writer makes them stale, never invalid.
            let e = unsafe { &*slot }.get(n - from);
            fence(Ordering::Acquire);
            if self.staged_from.load(Ordering::Relaxed) == from {
                return Some(e);
            }
        }
    }

    /// Copies the staged entries `[staged_from, next)` into the index file through the tail
    /// and moves `staged_from` to `next`. Writer (or recovery, or the last owner) only.
    fn copy_out(&self) {
        let from = self.staged_from.load(Ordering::Relaxed);
        let next = self.next.load(Ordering::Relaxed);
        if from >= next {
            return;
        }
        let slot = self.stage.load(Ordering::Relaxed);
        let ptr = self.tail_ptr.load(Ordering::Relaxed);
        let base = self.tail_base.load(Ordering::Relaxed);
        assert!(!slot.is_null() && !ptr.is_null() && from >= base);
        assert!(
            next - from <= STAGE_ENTRIES && next <= self.tail_ready_end.load(Ordering::Relaxed)
        );
        // SAFETY: as in `write_prepared`.
        let slot = unsafe { &*slot };
        let mut bytes = [0u8; (STAGE_ENTRIES * ENTRY_BYTES) as usize];
        let len = ((next - from) * ENTRY_BYTES) as usize;
        for (i, b) in bytes[..len]
            .chunks_exact_mut(ENTRY_BYTES as usize)
            .enumerate()
        {
            b.copy_from_slice(&slot.get(i as u64).encode());
        }
        // SAFETY: `tail_map` keeps the mapping alive while `tail_ptr` is set; the entries lie in
        // the allocated part of the tail's window (asserted); they are not in the file yet, so
        // no reader reads these bytes (readers of `[from, next)` use the stage until the store
        // below), and only the writer writes entries.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                ptr.add(((from - base) * ENTRY_BYTES) as usize),
                len,
            );
        }
        self.staged_from.store(next, Ordering::Release);
    }

    /// Gives the stage slot back to the arena (what it still holds is dropped).
    fn release_stage(&self) {
        let slot = self.stage.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !slot.is_null() {
            self.budget.stage.release(slot);
        }
    }

    fn add_segment(&self, base: u64) -> io::Result<Arc<IndexSeg>> {
        let path = self.dir.join(fs::name_of(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.set_len(self.entries_per_segment * ENTRY_BYTES)?;
        let seg = Arc::new(IndexSeg::new(
            path,
            base,
            self.entries_per_segment,
            self.budget.clone(),
        ));
        let mut segs = self.segs.write().expect("segs lock");
        if segs.is_empty() {
            self.min.store(base, Ordering::Release);
        }
        segs.push(seg.clone());
        Ok(seg)
    }

    /// Writes entry `n` (prepared). The caller publishes `next` afterwards.
    pub fn write(&self, n: u64, e: &Entry) -> io::Result<()> {
        match self.seg_for(n) {
            Some(seg) => seg.write(n, e),
            None => Err(io::Error::other("index entry not prepared")),
        }
    }

    /// Appends entry `n == next` and publishes it (recovery and tests; the store's writer
    /// uses prepare/write_prepared and publishes itself).
    pub fn push(self: &Arc<Self>, e: &Entry) -> io::Result<u64> {
        let n = self.next.load(Ordering::Acquire);
        self.prepare(n)?;
        self.write_prepared(n, e);
        self.next.store(n + 1, Ordering::Release);
        Ok(n)
    }

    /// Starts an index that has no segment yet at offset `n` (a rebuild whose oldest records
    /// were already deleted by retention).
    pub fn start_empty_at(&self, n: u64) {
        if self.segs.read().expect("segs lock").is_empty() && self.next.load(Ordering::Acquire) == 0
        {
            self.next.store(n, Ordering::Release);
            self.staged_from.store(n, Ordering::Release);
            self.min.store(n, Ordering::Release);
        }
    }

    /// Cuts the index back to `n` entries (recovery only).
    pub fn truncate(&self, n: u64) -> io::Result<()> {
        self.copy_out();
        let mut next = self.next.load(Ordering::Acquire);
        while next > n {
            next -= 1;
            self.next.store(next, Ordering::Release);
            self.write(
                next,
                &Entry {
                    pos: 0,
                    size: 0,
                    tag_hash: 0,
                    store_ts_ms: 0,
                },
            )?;
        }
        // Entries at or past `n` were copied out and cut in the file; none is staged.
        self.staged_from.store(
            self.staged_from.load(Ordering::Relaxed).min(n),
            Ordering::Release,
        );
        self.drop_segments_past(n)
    }

    /// Removes (and deletes) segment files that start past entry `n`, so the last segment
    /// holds `next` again after a cut across a file boundary (recovery and load only).
    fn drop_segments_past(&self, n: u64) -> io::Result<()> {
        let mut segs = self.segs.write().expect("segs lock");
        let mut dropped = false;
        while segs.len() > 1 && segs.last().is_some_and(|s| s.base > n) {
            let seg = segs.pop().expect("checked");
            std::fs::remove_file(&seg.path)?;
            dropped = true;
        }
        drop(segs);
        if dropped {
            self.drop_tail();
        }
        Ok(())
    }

    /// Drops trailing entries (and holes) that point at or past `log_end`.
    pub fn trim_past(&self, log_end: u64) -> io::Result<()> {
        let min = self.min.load(Ordering::Acquire);
        let mut keep = self.next.load(Ordering::Acquire);
        while keep > min {
            let e = self.entry(keep - 1)?;
            if e.is_hole() || e.pos >= log_end {
                keep -= 1;
            } else {
                break;
            }
        }
        self.truncate(keep)
    }

    /// Moves `min` to the first entry whose record is at or after `log_min`, and deletes
    /// index segment files wholly below it (never the last one).
    pub fn trim_below(&self, log_min: u64) -> io::Result<()> {
        let next = self.next.load(Ordering::Acquire);
        let (mut lo, mut hi) = (self.min.load(Ordering::Acquire), next);
        // Every load calls this, and mostly nothing is below: decide that from the first entry
        // alone, or from nothing while the log has never lost a segment, instead of a search
        // that reads a page at every halving down to the head of a cold index.
        if lo == hi || log_min == 0 {
            return Ok(());
        }
        let first = self.entry(lo)?;
        if first.is_hole() || first.pos >= log_min {
            return Ok(());
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.entry(mid)?;
            if !e.is_hole() && e.pos < log_min {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.advance_min(lo)
    }

    /// Sets `min` to at least `n` and removes wholly-passed segment files.
    pub fn advance_min(&self, n: u64) -> io::Result<()> {
        if n <= self.min.load(Ordering::Acquire) {
            return Ok(());
        }
        self.min.store(n, Ordering::Release);
        let mut segs = self.segs.write().expect("segs lock");
        while segs.len() > 1 && segs[0].end() <= n {
            let seg = segs.remove(0);
            std::fs::remove_file(&seg.path)?;
        }
        Ok(())
    }

    /// The first offset in `[from, to)` for which `pred(entry)` holds, assuming `pred` is
    /// false then true along the range (binary search); `to` when none.
    pub fn search(&self, from: u64, to: u64, pred: impl Fn(&Entry) -> bool) -> io::Result<u64> {
        let (mut lo, mut hi) = (from, to);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.entry(mid)?) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    /// The first offset in `[from, to)` whose entry was stored at or after `ts_ms`; `to` when
    /// none. A hole takes the store time of the next real entry (store times never decrease,
    /// so the search stays monotonic); trailing holes count as after every time.
    pub fn search_by_time(&self, from: u64, to: u64, ts_ms: i64) -> io::Result<u64> {
        let (mut lo, mut hi) = (from, to);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let mut at = mid;
            let mut e = self.entry(at)?;
            while e.is_hole() && at + 1 < hi {
                at += 1;
                e = self.entry(at)?;
            }
            if e.is_hole() || e.store_ts_ms >= ts_ms {
                hi = mid;
            } else {
                lo = at + 1;
            }
        }
        Ok(lo)
    }

    /// Cuts trailing entries that `stale(n, entry)` rejects, newest first, stopping at the
    /// first one it accepts (entries are written in order, so stale ones are a suffix).
    pub fn cut_stale(&self, stale: impl Fn(u64, &Entry) -> bool) -> io::Result<u64> {
        let min = self.min.load(Ordering::Acquire);
        let next = self.next.load(Ordering::Acquire);
        let mut keep = next;
        while keep > min && stale(keep - 1, &self.entry(keep - 1)?) {
            keep -= 1;
        }
        self.truncate(keep)?;
        Ok(next - keep)
    }

    pub fn segment_count(&self) -> usize {
        self.segs.read().expect("segs lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spins a reader of a staged entry makes between finding the slot and reading it: widens
    /// the window in which a copy-out or the slot's reuse races it.
    pub(super) static STAGED_READ_SPINS: AtomicUsize = AtomicUsize::new(0);

    fn e(pos: u64) -> Entry {
        Entry {
            pos,
            size: 100,
            tag_hash: 7,
            store_ts_ms: pos as i64,
        }
    }

    #[test]
    fn entries_survive_reload_and_roll_segments() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(MapBudget::new(8));
        let idx = Arc::new(PartIndex::load(dir.path(), 10, budget.clone(), u64::MAX).unwrap());
        for i in 0..35 {
            assert_eq!(idx.push(&e(1000 + i * 100)).unwrap(), i);
        }
        assert_eq!(idx.segment_count(), 4);
        budget.copy_out_stages(); // as a clean shutdown does
        drop(idx);
        let idx = Arc::new(PartIndex::load(dir.path(), 10, budget, u64::MAX).unwrap());
        assert_eq!(idx.next.load(Ordering::Acquire), 35);
        for i in 0..35 {
            assert_eq!(idx.entry(i).unwrap(), e(1000 + i * 100));
        }
    }

    #[test]
    fn the_writer_maps_a_small_window_and_readers_see_every_entry_across_windows() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(MapBudget::new(8));
        let idx = Arc::new(PartIndex::load(dir.path(), 1 << 20, budget.clone(), u64::MAX).unwrap());
        let n = 3 * TAIL_WINDOW_ENTRIES + 5;
        let mut windows = Vec::new();
        for i in 0..n {
            assert_eq!(idx.push(&e(i * 100)).unwrap(), i);
            let map_bytes = idx.tail_map.lock().unwrap().as_ref().unwrap().len() as u64;
            assert_eq!(map_bytes, TAIL_WINDOW_ENTRIES * ENTRY_BYTES);
            let first = idx.tail_base.load(Ordering::Relaxed);
            assert!(first <= i && i < first + TAIL_WINDOW_ENTRIES);
            if windows.last() != Some(&first) {
                windows.push(first);
            }
        }
        let w = TAIL_WINDOW_ENTRIES;
        assert_eq!(
            windows,
            [0, w, 2 * w, 3 * w],
            "one map per window, in order"
        );
        // Readers use the segment's own map: every entry, also those of the current window.
        let mut cursor = idx.cursor();
        for i in 0..n {
            assert_eq!(cursor.get(i).unwrap(), e(i * 100));
        }
        budget.copy_out_stages();
        drop(idx);
        let idx = Arc::new(PartIndex::load(dir.path(), 1 << 20, budget, u64::MAX).unwrap());
        assert_eq!(idx.next.load(Ordering::Acquire), n);
        assert_eq!(idx.entry(n - 1).unwrap(), e((n - 1) * 100));
    }

    /// An index in `dir` holding entries `e(1)..=e(n)`, closed as a clean shutdown leaves it.
    fn write_entries(dir: &Path, per_segment: u64, n: u64) {
        let budget = Arc::new(MapBudget::new(8));
        let idx = Arc::new(PartIndex::load(dir, per_segment, budget.clone(), u64::MAX).unwrap());
        for k in 0..n {
            idx.push(&e(k + 1)).unwrap();
        }
        budget.copy_out_stages();
    }

    /// Bytes this thread has caused to be read from storage (its page faults included).
    fn thread_read_bytes() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        let v = s.lines().find_map(|l| l.strip_prefix("read_bytes:"));
        v.unwrap().trim().parse().unwrap()
    }

    #[test]
    fn a_load_finds_the_end_of_a_cold_index_in_a_few_reads_at_any_length() {
        let dir = tempfile::tempdir().unwrap();
        // The default segment's size: halving alone reads 20 entries, each on its own page.
        let per_segment = 1 << 20;
        let lengths = [1u64, 2, 170, 171, 172, 341, 342, 2730, 2731, 9000, 100_003];
        for (i, &n) in lengths.iter().enumerate() {
            let d = dir.path().join(i.to_string());
            write_entries(&d, per_segment, n);
            for cold in [true, false] {
                if cold {
                    pages::evict_dir(&d);
                }
                let budget = Arc::new(MapBudget::new(8));
                let idx = PartIndex::load(&d, per_segment, budget.clone(), u64::MAX).unwrap();
                assert_eq!(
                    idx.next.load(Ordering::Acquire),
                    n,
                    "{n} entries, cold {cold}"
                );
                assert_eq!(idx.entry(n - 1).unwrap(), e(n));
                let (loads, probes) = budget.loads();
                assert_eq!(loads, 1);
                // Cold: three probes around the last written block, then halving within one
                // block. Warm, cached zero pages past the end can mislead the hint, and then
                // its three probes at worst add to halving's 20.
                let most = if cold { 11 } else { 23 };
                assert!(probes <= most, "{n} entries, cold {cold}: {probes} probes");
            }
        }
    }

    #[test]
    fn a_load_with_its_trim_reads_one_page_of_a_cold_index_from_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let n = 100_000; // 586 pages of entries, at positions 1..=n
        write_entries(dir.path(), 1 << 20, n);
        let budget = Arc::new(MapBudget::new(8));
        // 1: the log has lost a segment, but none of this partition's records.
        for log_min in [0, 1] {
            pages::evict_dir(dir.path());
            let read0 = thread_read_bytes();
            // A topics registry's load: the end, then the trim below the log's first record.
            let idx = PartIndex::load(dir.path(), 1 << 20, budget.clone(), u64::MAX).unwrap();
            idx.trim_below(log_min).unwrap();
            assert_eq!(idx.next.load(Ordering::Acquire), n);
            assert_eq!(idx.min.load(Ordering::Acquire), 0);
            let read = thread_read_bytes() - read0;
            // The end's page, and with a log that has lost segments the head's.
            let most = if log_min == 0 { 4096 } else { 8192 };
            assert!(
                read <= most,
                "log_min {log_min}: {read} bytes read from the disk"
            );
        }
        let idx = PartIndex::load(dir.path(), 1 << 20, budget, u64::MAX).unwrap();
        idx.trim_below(501).unwrap();
        assert_eq!(
            idx.min.load(Ordering::Acquire),
            500,
            "a real trim still searches"
        );
    }

    #[test]
    fn a_load_finds_the_end_of_a_full_segment_and_of_one_with_a_misleading_block_map() {
        let dir = tempfile::tempdir().unwrap();
        write_entries(dir.path(), 1000, 1500);
        let budget = Arc::new(MapBudget::new(8));
        // Written blocks past the end (zeros written by hand), as a filesystem without
        // unwritten extents or a torn crash leaves them: the hint is wrong, the end is not.
        let second = dir.path().join(fs::name_of(1000));
        let f = OpenOptions::new().write(true).open(&second).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 8192], 600 * ENTRY_BYTES).unwrap();
        drop(f);
        pages::evict_dir(dir.path());
        let idx = PartIndex::load(dir.path(), 1000, budget, u64::MAX).unwrap();
        assert_eq!(idx.next.load(Ordering::Acquire), 1500);
        assert_eq!(idx.entry(999).unwrap(), e(1000), "the full first segment");
        assert_eq!(idx.entry(1499).unwrap(), e(1500));
    }

    /// `count` partition indexes in subdirectories of `dir`, sharing `budget`.
    fn load_parts(
        dir: &Path,
        count: u32,
        entries_per_segment: u64,
        budget: &Arc<MapBudget>,
    ) -> Vec<Arc<PartIndex>> {
        (0..count)
            .map(|p| {
                let d = dir.join(p.to_string());
                Arc::new(
                    PartIndex::load(&d, entries_per_segment, budget.clone(), u64::MAX).unwrap(),
                )
            })
            .collect()
    }

    /// The entries of `dir`'s segment file `base` as the file holds them (zeros: not there).
    fn file_entries(dir: &Path, base: u64, count: u64) -> Vec<Entry> {
        let b = std::fs::read(dir.join(fs::name_of(base))).unwrap();
        (0..count as usize)
            .map(|i| Entry::decode(&b[i * 24..i * 24 + 24]))
            .collect()
    }

    #[test]
    fn newest_entries_are_staged_readable_and_copied_into_the_file_sixteen_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(MapBudget::new(8));
        let idx = Arc::new(PartIndex::load(dir.path(), 1 << 20, budget.clone(), u64::MAX).unwrap());
        let n = 3 * STAGE_ENTRIES + 5;
        for i in 0..n {
            idx.push(&e(i * 100)).unwrap();
            let mut cursor = idx.cursor();
            for k in 0..=i {
                assert_eq!(idx.entry(k).unwrap(), e(k * 100), "entry {k} after {i}");
                assert_eq!(cursor.get(k).unwrap(), e(k * 100), "cursor {k} after {i}");
            }
        }
        // The file has the full stages; the newest 5 wait in the stage.
        let copied = 3 * STAGE_ENTRIES;
        let file = file_entries(dir.path(), 0, n);
        assert!(file[..copied as usize]
            .iter()
            .enumerate()
            .all(|(k, x)| *x == e(k as u64 * 100)));
        assert!(
            file[copied as usize..].iter().all(Entry::is_empty),
            "staged: not in the file yet"
        );
        budget.copy_out_stages();
        let file = file_entries(dir.path(), 0, n);
        assert!(file
            .iter()
            .enumerate()
            .all(|(k, x)| *x == e(k as u64 * 100)));
        // Copied out, they still read the same, and staging goes on after them.
        assert_eq!(idx.entry(n - 1).unwrap(), e((n - 1) * 100));
        idx.push(&e(n * 100)).unwrap();
        assert_eq!(idx.entry(n).unwrap(), e(n * 100));
        assert!(file_entries(dir.path(), 0, n + 1)[n as usize].is_empty());
        // Dropped without a copy-out (a crash), the staged entry is gone: recovery re-makes
        // such entries from the log.
        drop(idx);
        let idx = PartIndex::load(dir.path(), 1 << 20, budget, u64::MAX).unwrap();
        assert_eq!(idx.next.load(Ordering::Acquire), n);
    }

    #[test]
    fn a_reader_on_another_thread_sees_every_entry_while_stages_fill_and_slots_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        // Two tails for eight partitions: slots are given back and reused all the time.
        let budget = Arc::new(MapBudget::new(4));
        let parts = load_parts(dir.path(), 8, 1 << 16, &budget);
        let val = |p: u64, k: u64| e(p << 32 | k);
        STAGED_READ_SPINS.store(5000, Ordering::Relaxed);
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (parts, done) = (parts.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    for (p, idx) in parts.iter().enumerate() {
                        let next = idx.next.load(Ordering::Acquire);
                        for k in next.saturating_sub(STAGE_ENTRIES + 2)..next {
                            assert_eq!(idx.entry(k).unwrap(), val(p as u64, k), "p {p} k {k}");
                            reads += 1;
                        }
                    }
                }
                reads
            })
        };
        for k in 0..20_000u64 {
            // Runs of 1 to 20 puts per partition, so stages fill, copy out and move tails.
            for (p, idx) in parts.iter().enumerate() {
                for _ in 0..(k % 20 + 1) % (p as u64 + 2) {
                    let n = idx.next.load(Ordering::Acquire);
                    assert_eq!(idx.push(&val(p as u64, n)).unwrap(), n);
                }
            }
        }
        done.store(true, Ordering::Release);
        STAGED_READ_SPINS.store(0, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        for (p, idx) in parts.iter().enumerate() {
            let next = idx.next.load(Ordering::Acquire);
            assert!(next > STAGE_ENTRIES * 100);
            let mut cursor = idx.cursor();
            for k in 0..next {
                assert_eq!(cursor.get(k).unwrap(), val(p as u64, k));
            }
        }
    }

    #[test]
    fn a_cut_across_a_segment_boundary_leaves_an_index_that_appends_again() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(MapBudget::new(8));
        let idx = Arc::new(PartIndex::load(dir.path(), 10, budget.clone(), u64::MAX).unwrap());
        for i in 0..14 {
            idx.push(&e(i * 100)).unwrap();
        }
        idx.trim_past(750).unwrap();
        assert_eq!(idx.next.load(Ordering::Acquire), 8);
        assert_eq!(idx.push(&e(800)).unwrap(), 8);
        for i in 9..12 {
            idx.push(&e(i * 100)).unwrap();
        }
        assert_eq!(idx.segment_count(), 2);
        drop(idx);
        // A crash that kept the second file but lost every entry in it and the first's tail.
        let f1 = dir.path().join(fs::name_of(0));
        let mut b = std::fs::read(&f1).unwrap();
        b[6 * 24..].fill(0);
        std::fs::write(&f1, b).unwrap();
        let f2 = dir.path().join(fs::name_of(10));
        let len = std::fs::metadata(&f2).unwrap().len() as usize;
        std::fs::write(&f2, vec![0u8; len]).unwrap();
        let idx = Arc::new(PartIndex::load(dir.path(), 10, budget, u64::MAX).unwrap());
        assert_eq!(idx.next.load(Ordering::Acquire), 6);
        assert_eq!(idx.push(&e(600)).unwrap(), 6);
        assert_eq!(idx.entry(5).unwrap(), e(500));
    }

    #[test]
    fn search_by_time_gives_a_hole_the_time_of_the_next_entry() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(MapBudget::new(8));
        let idx = Arc::new(PartIndex::load(dir.path(), 10, budget, u64::MAX).unwrap());
        // store times 0, 100, hole, 300, 400, hole, hole
        for i in 0..7u64 {
            let entry = if [2, 5, 6].contains(&i) {
                Entry::hole()
            } else {
                e(i * 100)
            };
            idx.push(&entry).unwrap();
        }
        let at = |ts| idx.search_by_time(0, 7, ts).unwrap();
        assert_eq!(at(0), 0);
        assert_eq!(at(100), 1);
        assert_eq!(at(101), 2);
        assert_eq!(at(300), 2);
        assert_eq!(at(301), 4);
        assert_eq!(at(401), 5);
        for ts in [0, 50, 100, 150, 250, 300, 350, 400, 450] {
            let linear = (0..7u64)
                .find(|&n| {
                    (n..7)
                        .map(|k| idx.entry(k).unwrap())
                        .find(|x| !x.is_hole())
                        .is_none_or(|x| x.store_ts_ms >= ts)
                })
                .unwrap_or(7);
            assert_eq!(at(ts), linear, "ts {ts}");
        }
    }

    #[test]
    fn load_cuts_entries_past_the_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(MapBudget::new(8));
        let idx = Arc::new(PartIndex::load(dir.path(), 10, budget.clone(), u64::MAX).unwrap());
        for i in 0..12 {
            idx.push(&e(i * 100)).unwrap();
        }
        drop(idx);
        let idx = PartIndex::load(dir.path(), 10, budget, 750).unwrap();
        assert_eq!(idx.next.load(Ordering::Acquire), 8);
    }

    #[test]
    fn maps_stay_within_the_budget_across_many_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(MapBudget::new(32));
        let parts = load_parts(dir.path(), 100, 64, &budget);
        for round in 0..3u64 {
            for p in &parts {
                p.push(&e(round * 1000 + 1)).unwrap();
                assert!(budget.open() <= 33, "open maps {}", budget.open());
            }
        }
        for p in &parts {
            assert_eq!(p.entry(2).unwrap(), e(2001));
        }
    }

    #[test]
    fn trim_below_moves_min_and_deletes_passed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(MapBudget::new(8));
        let idx = Arc::new(PartIndex::load(dir.path(), 10, budget, u64::MAX).unwrap());
        for i in 0..30 {
            idx.push(&e(i * 100)).unwrap();
        }
        idx.trim_below(2250).unwrap();
        assert_eq!(idx.min.load(Ordering::Acquire), 23);
        assert_eq!(idx.segment_count(), 1);
    }
}
