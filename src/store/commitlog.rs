//! The one commitlog shared by every topic and partition: fixed-size, preallocated,
//! memory-mapped segment files named by their starting position, the published write and
//! durable positions, and the background allocator that creates the next segment ahead of need.
//!
//! Concurrency: one writer (holding the store's writer lock) copies records into the mapped
//! bytes at or past `write_pos` and then publishes `write_pos` with Release ordering; readers
//! only touch bytes below a position they loaded with Acquire ordering (directly or through an
//! index entry published after the record). No byte is ever read and written at the same time.

use super::cache_window::{CacheWindow, Eviction};
use super::{fs, pages};
use memmap2::{MmapOptions, MmapRaw};
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A base page: prefault, block writing and eviction work in whole ones.
const PAGE: u64 = pages::PAGE_BYTES as u64;

/// One segment file, mapped whole.
pub struct Segment {
    pub base: u64,
    pub len: u64,
    pub path: PathBuf,
    map: MmapRaw,
    /// The writer's claim (absolute position): it writes only below it, and
    /// [`Segment::write_blocks`] never touches a byte below it. Only grows.
    claim: Mutex<u64>,
}

/// How much the writer claims at a time (see [`Segment::claim`]): one uncontended lock per
/// MiB written, and a writer that catches up with [`Segment::write_blocks`] waits for at most
/// one step of it.
pub const CLAIM_STEP_BYTES: u64 = 1 << 20;

/// [`Segment::write_blocks`] dirties and starts writing back this much at a time.
pub const BLOCK_STEP_BYTES: u64 = 256 << 10;
/// The longest pause between two steps of [`Segment::write_blocks`].
const BLOCK_PACE_MAX: Duration = Duration::from_millis(20);
/// [`Segment::write_blocks`] stops pacing once the writer's claim is this close behind.
const BLOCK_LEAD_BYTES: u64 = 8 << 20;

/// Suffix of a segment made ahead of need and not yet adopted: it can never be mistaken for
/// (or removed as) a live segment. Leftovers are deleted at open, except one that starts where
/// the live segments end and holds a valid record: its rename was lost, and it is adopted.
const SPARE_SUFFIX: &str = ".spare";

impl Segment {
    /// Creates a segment file of `len` bytes at position `base`, with its blocks allocated so a
    /// full disk fails here and never in a mapped write.
    pub fn create(dir: &Path, base: u64, len: u64) -> io::Result<Segment> {
        Segment::create_at(dir.join(fs::name_of(base)), base, len)
    }

    fn create_spare(dir: &Path, base: u64, len: u64) -> io::Result<Segment> {
        Segment::create_at(dir.join(fs::name_of(base) + SPARE_SUFFIX), base, len)
    }

    fn create_at(path: PathBuf, base: u64, len: u64) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if let Err(e) = fs::allocate(&file, len) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let map = MmapOptions::new().len(len as usize).map_raw(&file)?;
        Ok(Segment {
            base,
            len,
            path,
            map,
            claim: Mutex::new(base),
        })
    }

    /// Maps an existing segment file; its length is the file's.
    pub fn open(path: &Path, base: u64) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "empty segment file",
            ));
        }
        let map = MmapOptions::new().len(len as usize).map_raw(&file)?;
        Ok(Segment {
            base,
            len,
            path: path.to_path_buf(),
            map,
            claim: Mutex::new(base),
        })
    }

    pub fn end(&self) -> u64 {
        self.base + self.len
    }

    /// The bytes `[pos, pos + n)` (absolute positions).
    ///
    /// # Safety
    /// The range must lie in this segment and must not be written while the slice lives: it is
    /// below a published position, or the caller is the writer and nobody else reads it.
    pub unsafe fn bytes(&self, pos: u64, n: usize) -> &[u8] {
        assert!(pos >= self.base && pos + n as u64 <= self.end());
        // SAFETY: in bounds of the mapping (asserted); aliasing is the caller's contract.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add((pos - self.base) as usize), n) }
    }

    /// Mutable bytes `[pos, pos + n)`.
    ///
    /// # Safety
    /// Only the writer (or recovery, before any reader or the allocator thread exists) may
    /// call this, and only for bytes no reader can reach: at or past the published write
    /// position. The writer must have claimed them ([`Segment::claim`]).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, pos: u64, n: usize) -> &mut [u8] {
        assert!(pos >= self.base && pos + n as u64 <= self.end());
        // SAFETY: in bounds of the mapping (asserted); exclusivity is the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add((pos - self.base) as usize), n)
        }
    }

    /// Opens the segment's file for writing. Segments keep no descriptor of their own (a
    /// store holds one per GiB of log, and descriptors are budgeted for connections): the
    /// sync-mode writer keeps one for the segment it writes, and [`Segment::write_blocks`]
    /// opens one per call.
    pub fn open_file(&self) -> io::Result<std::fs::File> {
        OpenOptions::new().read(true).write(true).open(&self.path)
    }

    /// Faults in the pages of `[from, from + bytes)` (clamped to the segment) read-only ahead
    /// of the writer, so its writes take only light write-protect faults instead of reading
    /// (zero-filling) fresh blocks itself. Nothing is dirtied. The kernel's readahead may fault
    /// in a few MiB more. Best effort: older kernels lack MADV_POPULATE_READ.
    pub fn prefault(&self, from: u64, bytes: u64) {
        let at = (from.max(self.base) - self.base) / PAGE * PAGE;
        if at >= self.len {
            return;
        }
        let len = (self.len - at).min(bytes.div_ceil(PAGE) * PAGE) as usize;
        if let Err(e) = self
            .map
            .advise_range(memmap2::Advice::PopulateRead, at as usize, len)
        {
            log::debug!("prefault {}: {e}", self.path.display());
        }
    }

    /// Claims `[.., to)` (clamped to the segment) for the writer, which must claim every byte
    /// before it writes it: from now on [`Segment::write_blocks`] leaves it alone. Returns the
    /// claim, which never shrinks.
    pub fn claim(&self, to: u64) -> u64 {
        let mut claim = self.claim.lock().expect("claim lock");
        *claim = (*claim).max(to.min(self.end()));
        *claim
    }

    /// Turns the blocks under `[from, to)` (clamped to the segment, and to what the writer has
    /// not claimed) into written ones: rewrites one byte of each page with its own value, so
    /// no content changes, and has the kernel write the pages back. The sync flush mode asks
    /// for this ahead of the writer. posix_fallocate leaves *unwritten* extents, and the first
    /// fdatasync covering one also writes its conversion (a journal commit, or on ext4 without
    /// a journal, as here, the extent metadata) in every group commit: 8 KiB write+fdatasync
    /// rounds took 184-198 us there against 123-133 us in written blocks, and a sync produce
    /// run was 1.5x faster with them. The price is one extra disk write of the log.
    ///
    /// Paced: [`BLOCK_STEP_BYTES`] at a time, each step's writeback started at once
    /// (sync_file_range, no device flush) and `pace` slept between steps, unless the writer
    /// has come within [`BLOCK_LEAD_BYTES`]. Written in one go (64 MiB) and msynced, the
    /// window's writeback sat in the device's queue in front of the group commits, and the
    /// commit that came next waited for all of it: stalls of 200-340 ms, one per window.
    /// Returns once the range's writeback is done (so the extents are converted); nothing here
    /// needs to be durable, the records' own group commits are.
    ///
    /// Works under the claim lock one step at a time, so it never writes a byte the writer may
    /// be writing, and a writer wanting a claim waits for at most one step.
    /// Once `stop` is set it returns at the next step, the rest of the range left as it was.
    pub fn write_blocks(
        &self,
        from: u64,
        to: u64,
        pace: Duration,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        let file = self.open_file()?;
        let to = to.min(self.end());
        let mut at = from.max(self.base);
        let mut dirtied: Option<u64> = None;
        while at < to {
            let step_end = (at + BLOCK_STEP_BYTES).min(to);
            let claim = self.claim.lock().expect("claim lock");
            let near = *claim + BLOCK_LEAD_BYTES >= step_end;
            // Page-aligned: the page holding the claim has bytes the writer may write.
            let start = (*claim).max(at).next_multiple_of(PAGE);
            for pos in (start..step_end).step_by(PAGE as usize) {
                let off = (pos - self.base) as usize;
                // SAFETY: in bounds (`pos < to <= end`); at or past the claim, which we hold
                // the lock of: the writer writes only below a claim it took under this lock,
                // and readers read only below the published write position, which is below
                // the claim. So nothing else touches this byte now.
                unsafe {
                    let p = self.map.as_mut_ptr().add(off);
                    p.write_volatile(p.read_volatile());
                }
            }
            drop(claim);
            if start < step_end {
                dirtied.get_or_insert(start);
                fs::write_back(&file, start - self.base, step_end - start, false)?;
            }
            at = step_end;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if at < to && !near && !pace.is_zero() {
                std::thread::sleep(pace);
            }
        }
        match dirtied {
            Some(first) => fs::write_back(&file, first - self.base, at - first, true),
            None => Ok(()),
        }
    }

    /// Drops `[from, to)` (absolute positions, clamped to this segment, whole pages inside it)
    /// from this mapping and from the page cache (see [`super::cache_window`]). The caller
    /// passes only durable bytes: their pages are clean, so nothing is written or lost, and a
    /// later read faults them back in from the file. Best effort: a page mapped by another
    /// process, or locked, stays.
    pub fn evict(&self, from: u64, to: u64) {
        use std::os::fd::AsRawFd;
        let at = (from.max(self.base) - self.base).next_multiple_of(PAGE);
        let end = to.min(self.end()).saturating_sub(self.base) / PAGE * PAGE;
        if end <= at {
            return;
        }
        let len = (end - at) as usize;
        // SAFETY: `[at, at + len)` is inside the mapping, page-aligned. MADV_DONTNEED on a
        // shared file mapping only unmaps the pages: the contents stay in the file, and the
        // next access maps them again, so a reader copying these bytes meanwhile faults them
        // back and reads the same contents. The writer never writes durable bytes.
        let unmapped = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, at as usize, len)
        };
        if let Err(e) = unmapped {
            log::debug!("madvise dontneed {}: {e}", self.path.display());
        }
        // Unmapped, the clean pages can be dropped from the cache; a segment retention
        // removed meanwhile has no path any more, and its pages go with its last mapping.
        if let Ok(file) = self.open_file() {
            // SAFETY: a plain syscall on an open descriptor; no memory is passed.
            unsafe {
                libc::posix_fadvise(
                    file.as_raw_fd(),
                    at as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
        }
    }

    /// Asks that the pages of this segment come into the page cache one base page at a time
    /// (MADV_RANDOM: no readahead on faults). Readahead fills the cache with large folios (up
    /// to 2 MiB here), and writeback writes a dirty folio whole: in the sync flush mode a group
    /// commit of 13 KB of records wrote about 800 KB, 1.1 GB/s of disk writes for 9 MB/s of
    /// records. With base pages a flush writes the pages it dirtied. Reads of old data are not
    /// affected: the fetch thread asks for readahead of what a read needs (MADV_WILLNEED).
    pub fn use_small_pages(&self) {
        if let Err(e) = self.map.advise(memmap2::Advice::Random) {
            log::debug!("madvise random {}: {e}", self.path.display());
        }
    }

    /// Whether `[pos, pos + n)` (absolute, clamped to this segment) is all in the page cache.
    pub fn resident(&self, pos: u64, n: u64) -> bool {
        pages::resident(&self.map, (pos - self.base) as usize, n as usize)
    }

    /// Starts reading `[pos, pos + n)` in (see [`pages::will_need`]).
    pub fn will_need(&self, pos: u64, n: u64) {
        pages::will_need(&self.map, (pos - self.base) as usize, n as usize)
    }

    /// Waits until `[pos, pos + n)` is in (see [`pages::touch`]).
    pub fn touch(&self, pos: u64, n: u64) {
        pages::touch(&self.map, (pos - self.base) as usize, n as usize)
    }

    /// msync of `[from, to)` (absolute positions, clamped to this segment): durable on return.
    pub fn sync_range(&self, from: u64, to: u64) -> io::Result<()> {
        let from = from.max(self.base);
        let to = to.min(self.end());
        if to <= from {
            return Ok(());
        }
        self.map
            .flush_range((from - self.base) as usize, (to - from) as usize)
    }
}

/// Whether a segment file starts with a valid record.
fn holds_a_record(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = vec![0u8; super::record::HEADER_BYTES];
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    let file_len = f.metadata().map_or(0, |m| m.len());
    let Some(len) = super::record::total_len(&head)
        .filter(|&l| l >= super::record::HEADER_BYTES && l as u64 <= file_len)
    else {
        return false;
    };
    let mut rec = vec![0u8; len];
    rec[..head.len()].copy_from_slice(&head);
    f.read_exact(&mut rec[head.len()..]).is_ok() && super::record::decode(&rec).is_ok()
}

/// How far ahead of the writer the allocator keeps the commitlog's pages faulted in: enough
/// for tens of milliseconds of appends, without zero-filling a whole (1 GiB) segment at once,
/// which costs seconds of CPU at start-up and at every roll.
pub const PREFAULT_AHEAD_BYTES: u64 = 64 << 20;

/// The segment list and the positions every thread reads.
pub struct CommitLog {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// End of the last complete record; readers may read below it.
    pub write_pos: AtomicU64,
    /// Everything below is on stable storage.
    pub durable_pos: AtomicU64,
    /// Start of the oldest segment still kept.
    pub min_pos: AtomicU64,
    /// A segment file was created or renamed into place since the directory was last fsynced:
    /// its name is not durable yet (see [`CommitLog::sync_dir_if_changed`]).
    dir_changed: AtomicBool,
    /// Lowest position at which a recovery ever cut a torn tail (`u64::MAX`: never). Index
    /// entries at or past it may be stale leftovers of cut records (see `recovery`).
    pub cut_from: AtomicU64,
    /// Damaged byte ranges already reported (by recovery or a read), so `corrupt_records`
    /// counts each once per process.
    corrupt_seen: Mutex<Vec<(u64, u64)>>,
    /// Directory fsyncs done by [`CommitLog::sync_dir_if_changed`].
    pub dir_syncs: AtomicU64,
    spare: Arc<Spare>,
    /// The sync flush mode: segments written to get [`Segment::use_small_pages`], and the
    /// allocator runs [`Segment::write_blocks`] ahead of the writer instead of only faulting
    /// pages in. (In the async mode large folios make appends 20% faster, and a flush per
    /// interval writes them once and converts an extent once.)
    sync_flush: AtomicBool,
    /// Bytes dropped from the page cache by the window (see [`super::cache_window`]).
    pub evicted_bytes: Arc<AtomicU64>,
}

/// The segment created ahead of need by the allocator thread.
struct Spare {
    slot: Mutex<SpareSlot>,
    cv: Condvar,
    /// Set with `SpareSlot::stop`, read without the lock by a paced [`Segment::write_blocks`].
    stopping: AtomicBool,
}

#[derive(Default)]
struct SpareSlot {
    wanted: Option<u64>,
    /// A live segment to prefault: `[from, to)` of the active one, ahead of the writer.
    warm: Option<(Arc<Segment>, u64, u64)>,
    /// What the page-cache window has dropped, and the ranges it wants dropped next.
    window: CacheWindow,
    evict: Vec<Eviction>,
    ready: Option<io::Result<Segment>>,
    stop: bool,
}

impl CommitLog {
    /// Opens the segment files in `dir` (which must exist); checks they are contiguous. With
    /// `sync_flush` (the sync flush mode) the last segment and every one created later get
    /// [`Segment::use_small_pages`], and the allocator writes blocks ahead of the writer.
    /// Durable bytes more than `cache_window_bytes` behind the writer are dropped from the
    /// page cache as it writes (0: never; see [`super::cache_window`]).
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        sync_flush: bool,
        cache_window_bytes: u64,
    ) -> Result<CommitLog, String> {
        let mut found = Vec::new();
        let mut spares = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name();
            if let Some(base) = name.to_str().and_then(|n| n.strip_suffix(SPARE_SUFFIX)) {
                spares.push((fs::parse_name(base), entry.path()));
                continue;
            }
            let Some(base) = name.to_str().and_then(fs::parse_name) else {
                continue;
            };
            found.push((base, entry.path()));
        }
        found.sort();
        // A spare holding records was adopted (renamed) by the writer, but the rename did not
        // survive (a power loss before the directory was fsynced): adopt it again. Any other
        // spare is a leftover and goes.
        let live_end = found
            .last()
            .map(|(b, p)| b + std::fs::metadata(p).map_or(0, |m| m.len()));
        for (base, path) in spares {
            match base {
                Some(b) if Some(b) == live_end && holds_a_record(&path) => {
                    let live = dir.join(fs::name_of(b));
                    log::warn!(
                        "{} holds records: its rename to a live segment was lost; adopting it",
                        path.display()
                    );
                    std::fs::rename(&path, &live)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    fs::sync_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    found.push((b, live));
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(found.len());
        for (base, path) in found {
            let seg = Segment::open(&path, base).map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(prev) = segments.last() {
                if prev.end() != base {
                    return Err(format!(
                        "commitlog segments are not contiguous: {} ends at {} but the next starts at {}",
                        prev.path.display(),
                        prev.end(),
                        base
                    ));
                }
            }
            segments.push(Arc::new(seg));
        }
        if let Some(last) = segments.last().filter(|_| sync_flush) {
            last.use_small_pages();
        }
        let min = segments.first().map_or(0, |s| s.base);
        Ok(CommitLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: RwLock::new(segments),
            write_pos: AtomicU64::new(min),
            durable_pos: AtomicU64::new(min),
            min_pos: AtomicU64::new(min),
            dir_changed: AtomicBool::new(false),
            dir_syncs: AtomicU64::new(0),
            cut_from: AtomicU64::new(u64::MAX),
            corrupt_seen: Mutex::new(Vec::new()),
            spare: Arc::new(Spare {
                slot: Mutex::new(SpareSlot {
                    window: CacheWindow::new(cache_window_bytes, min),
                    ..SpareSlot::default()
                }),
                cv: Condvar::new(),
                stopping: AtomicBool::new(false),
            }),
            sync_flush: AtomicBool::new(sync_flush),
            evicted_bytes: Arc::new(AtomicU64::new(0)),
        })
    }

    fn prepare_for_writes(&self, seg: &Segment) {
        if self.sync_flush.load(Ordering::Relaxed) {
            seg.use_small_pages();
        }
    }

    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().expect("segments lock").clone()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.read().expect("segments lock").len()
    }

    /// The segment holding absolute position `pos`.
    pub fn segment_at(&self, pos: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read().expect("segments lock");
        let i = segs.partition_point(|s| s.end() <= pos);
        segs.get(i).filter(|s| s.base <= pos).cloned()
    }

    pub fn last_segment(&self) -> Option<Arc<Segment>> {
        self.segments.read().expect("segments lock").last().cloned()
    }

    /// Appends a newly created segment (it must start where the last one ends).
    pub fn push_segment(&self, seg: Segment) -> Arc<Segment> {
        self.prepare_for_writes(&seg);
        let seg = Arc::new(seg);
        let mut segs = self.segments.write().expect("segments lock");
        if let Some(last) = segs.last() {
            assert_eq!(last.end(), seg.base, "segments must stay contiguous");
        }
        segs.push(seg.clone());
        drop(segs);
        // Before the writer can publish a byte of the new segment (Release on `write_pos`
        // follows this), so a flush covering that byte sees the flag.
        self.dir_changed.store(true, Ordering::Release);
        seg
    }

    /// fsyncs the commitlog directory if a segment was added since the last call, so a new
    /// segment's name (created, or renamed from `.spare`) is durable: without it a power loss
    /// can leave the file named `.spare` (deleted at open) or missing. The flush thread calls
    /// this before it publishes a durable position. On error the flag stays set.
    pub fn sync_dir_if_changed(&self) -> io::Result<()> {
        if !self.dir_changed.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        if let Err(e) = fs::sync_dir(&self.dir) {
            self.dir_changed.store(true, Ordering::Release);
            return Err(e);
        }
        self.dir_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Creates the segment starting at `base`: the spare if it is ready, else synchronously.
    pub fn create_segment(&self, base: u64) -> io::Result<Arc<Segment>> {
        let taken = {
            let mut slot = self.spare.slot.lock().expect("spare lock");
            match slot.ready.take() {
                Some(Ok(seg)) if seg.base == base => Some(seg),
                Some(Ok(stale)) => {
                    let _ = std::fs::remove_file(&stale.path);
                    None
                }
                _ => None,
            }
        };
        let seg = match taken {
            Some(mut seg) => {
                let live = self.dir.join(fs::name_of(base));
                std::fs::rename(&seg.path, &live)?;
                seg.path = live;
                seg
            }
            None => Segment::create(&self.dir, base, self.segment_bytes)?,
        };
        let seg = self.push_segment(seg);
        self.request_spare(seg.end());
        self.plan_eviction();
        Ok(seg)
    }

    /// Asks the allocator thread to create the segment at `base` ahead of need.
    pub fn request_spare(&self, base: u64) {
        let mut slot = self.spare.slot.lock().expect("spare lock");
        slot.wanted = Some(base);
        self.spare.cv.notify_one();
    }

    /// Asks the allocator thread to prefault `[from, from + PREFAULT_AHEAD_BYTES)` of `seg`
    /// (see [`Segment::prefault`]); merged with a request for the same segment not yet served.
    /// Also plans what the page-cache window drops next (see [`CommitLog::plan_eviction`]).
    pub fn request_warm(&self, seg: Arc<Segment>, from: u64) {
        self.plan_eviction();
        let mut slot = self.spare.slot.lock().expect("spare lock");
        let to = from + PREFAULT_AHEAD_BYTES;
        let from = match &slot.warm {
            Some((s, f, _)) if s.base == seg.base => (*f).min(from),
            _ => from,
        };
        slot.warm = Some((seg, from, to));
        self.spare.cv.notify_one();
    }

    /// Hands the allocator thread what the page-cache window drops next. The writer calls
    /// this once per PREFAULT_AHEAD_BYTES it writes ([`CommitLog::request_warm`]) and at each
    /// segment roll ([`CommitLog::create_segment`]), so once per
    /// [`super::cache_window::EVICT_STEP_BYTES`] at most.
    fn plan_eviction(&self) {
        let segments = self.segments();
        let front = self.write_pos.load(Ordering::Acquire);
        let durable = self.durable_pos.load(Ordering::Acquire);
        let mut slot = self.spare.slot.lock().expect("spare lock");
        let evict = slot.window.plan(front, durable, &segments);
        if !evict.is_empty() {
            slot.evict.extend(evict);
            self.spare.cv.notify_one();
        }
    }

    /// Starts the allocator thread; it stops when [`CommitLog::stop_allocator`] is called.
    pub fn start_allocator(&self) -> std::thread::JoinHandle<()> {
        let spare = self.spare.clone();
        let dir = self.dir.clone();
        let len = self.segment_bytes;
        let sync_flush = self.sync_flush.load(Ordering::Relaxed);
        // sync mode paces `write_blocks` by the writer: a window is asked for once per
        // PREFAULT_AHEAD_BYTES written, and is spread over 90% of the time the last one took.
        let mut last_warm: Option<Instant> = None;
        let spare_w = spare.clone();
        let evicted = self.evicted_bytes.clone();
        let mut warm = move |seg: &Segment, from: u64, to: u64| {
            if !sync_flush {
                seg.prefault(from, to - from);
                return;
            }
            let now = Instant::now();
            let pace = last_warm.map_or(Duration::ZERO, |t| {
                let steps = (PREFAULT_AHEAD_BYTES / BLOCK_STEP_BYTES) as u32;
                ((now - t) * 9 / 10 / steps).min(BLOCK_PACE_MAX)
            });
            last_warm = Some(now);
            if let Err(e) = seg.write_blocks(from, to, pace, &spare_w.stopping) {
                log::warn!("writing blocks ahead in {}: {e}", seg.path.display());
            }
        };
        std::thread::Builder::new()
            .name("imago-alloc".into())
            .spawn(move || loop {
                let base = {
                    let mut slot = spare.slot.lock().expect("spare lock");
                    loop {
                        if slot.stop {
                            if let Some(Ok(seg)) = slot.ready.take() {
                                let _ = std::fs::remove_file(&seg.path);
                            }
                            return;
                        }
                        if let Some((seg, from, to)) = slot.warm.take() {
                            drop(slot);
                            warm(&seg, from, to);
                            slot = spare.slot.lock().expect("spare lock");
                            continue;
                        }
                        if let Some(b) = slot.wanted.take() {
                            break b;
                        }
                        if !slot.evict.is_empty() {
                            let evict = std::mem::take(&mut slot.evict);
                            drop(slot);
                            for (seg, from, to) in evict {
                                seg.evict(from, to);
                                evicted.fetch_add(to - from, Ordering::Relaxed);
                            }
                            slot = spare.slot.lock().expect("spare lock");
                            continue;
                        }
                        slot = spare.cv.wait(slot).expect("spare lock");
                    }
                };
                let made = Segment::create_spare(&dir, base, len);
                if let Ok(seg) = &made {
                    if sync_flush {
                        seg.use_small_pages();
                    }
                    warm(seg, seg.base, seg.base + PREFAULT_AHEAD_BYTES);
                }
                if let Err(e) = &made {
                    log::warn!("could not preallocate segment at {base}: {e}");
                }
                spare.slot.lock().expect("spare lock").ready = Some(made);
            })
            .expect("spawn allocator thread")
    }

    pub fn stop_allocator(&self) {
        let mut slot = self.spare.slot.lock().expect("spare lock");
        slot.stop = true;
        self.spare.stopping.store(true, Ordering::Relaxed);
        self.spare.cv.notify_all();
    }

    /// Removes the oldest segment if it is not the one being written; returns it.
    pub fn remove_oldest(&self) -> Option<Arc<Segment>> {
        let mut segs = self.segments.write().expect("segments lock");
        let write_pos = self.write_pos.load(Ordering::Acquire);
        if segs.len() < 2 || segs[0].end() > write_pos {
            return None;
        }
        let seg = segs.remove(0);
        self.min_pos.store(segs[0].base, Ordering::Release);
        drop(segs);
        if let Err(e) = std::fs::remove_file(&seg.path) {
            log::warn!("removing {}: {e}", seg.path.display());
        }
        Some(seg)
    }

    /// Drops every segment that starts at or after `pos` (recovery of a torn tail).
    pub fn remove_from(&self, pos: u64) {
        let mut segs = self.segments.write().expect("segments lock");
        while segs.last().is_some_and(|s| s.base >= pos && segs.len() > 1) {
            let seg = segs.pop().expect("checked");
            let _ = std::fs::remove_file(&seg.path);
        }
    }

    /// msync of every segment overlapping `[from, to)`.
    pub fn sync_range(&self, from: u64, to: u64) -> io::Result<()> {
        for seg in self
            .segments()
            .iter()
            .filter(|s| s.end() > from && s.base < to)
        {
            seg.sync_range(from, to)?;
        }
        Ok(())
    }

    /// Records damage at `[from, to)`; true when no range already reported overlaps it (the
    /// caller then counts it). Only the corruption paths call this.
    pub fn first_sighting(&self, from: u64, to: u64) -> bool {
        /// Bound on remembered ranges; past it every sighting counts.
        const RANGES_MAX: usize = 4096;
        let mut seen = self.corrupt_seen.lock().expect("corrupt ranges lock");
        if seen.iter().any(|&(a, b)| a < to.max(from + 1) && from < b) {
            return false;
        }
        if seen.len() < RANGES_MAX {
            seen.push((from, to.max(from + 1)));
        }
        true
    }

    /// Copies of the record bytes at `[pos, pos + n)`, which must be below the write position.
    pub fn with_bytes<R>(&self, pos: u64, n: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if pos + n as u64 > self.write_pos.load(Ordering::Acquire) {
            return None;
        }
        let seg = self.segment_at(pos)?;
        if pos + n as u64 > seg.end() {
            return None;
        }
        // SAFETY: the range is below the published write position, so the writer no longer
        // touches it, and the Arc keeps the mapping alive for the call.
        Some(f(unsafe { seg.bytes(pos, n) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of `seg` in the page cache, by mincore(2).
    fn resident_pages(seg: &Segment) -> Vec<bool> {
        let pages = (seg.len / 4096) as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: the mapping is `seg.len` bytes long and page-aligned; `vec` has one byte per
        // page, as mincore requires.
        let rc = unsafe {
            libc::mincore(
                seg.map.as_mut_ptr().cast(),
                seg.len as usize,
                vec.as_mut_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().map(|b| b & 1 == 1).collect()
    }

    /// Extents of `[0, len)` of the file at `path` that are allocated but unwritten, by
    /// FIEMAP (fallocated blocks read as zeros until written).
    fn unwritten_bytes(path: &Path, len: u64) -> u64 {
        const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
        const FIEMAP_FLAG_SYNC: u32 = 1;
        const FIEMAP_EXTENT_LAST: u32 = 0x1;
        const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
        const EXTENTS: usize = 64;
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Extent {
            logical: u64,
            physical: u64,
            length: u64,
            reserved64: [u64; 2],
            flags: u32,
            reserved: [u32; 3],
        }
        #[repr(C)]
        struct Fiemap {
            start: u64,
            length: u64,
            flags: u32,
            mapped_extents: u32,
            extent_count: u32,
            reserved: u32,
            extents: [Extent; EXTENTS],
        }
        use std::os::unix::io::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let (mut start, mut unwritten) = (0u64, 0u64);
        loop {
            let mut map = Fiemap {
                start,
                length: len - start,
                flags: FIEMAP_FLAG_SYNC,
                mapped_extents: 0,
                extent_count: EXTENTS as u32,
                reserved: 0,
                extents: [Extent::default(); EXTENTS],
            };
            // SAFETY: `map` is a fiemap header followed by room for `extent_count` extents, as
            // the ioctl requires; the descriptor is valid.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map) };
            assert_eq!(rc, 0, "FIEMAP: {}", io::Error::last_os_error());
            let got = &map.extents[..map.mapped_extents as usize];
            for e in got
                .iter()
                .filter(|e| e.flags & FIEMAP_EXTENT_UNWRITTEN != 0)
            {
                unwritten += e.length;
            }
            match got.last() {
                Some(e) if e.flags & FIEMAP_EXTENT_LAST == 0 => start = e.logical + e.length,
                _ => return unwritten,
            }
        }
    }

    #[test]
    fn write_blocks_turns_fallocated_blocks_into_written_ones_past_the_claim() {
        let dir = tempfile::tempdir().unwrap();
        let len = 8 << 20;
        let seg = Segment::create(dir.path(), 0, len).unwrap();
        assert_eq!(
            unwritten_bytes(&seg.path, len),
            len,
            "this test needs a filesystem with unwritten extents (ext4, xfs)"
        );
        assert_eq!(seg.claim(1 << 20), 1 << 20);
        seg.write_blocks(0, 6 << 20, Duration::ZERO, &AtomicBool::new(false))
            .unwrap();
        // The claimed first MiB and the last 2 MiB (not asked for) stay unwritten.
        assert_eq!(unwritten_bytes(&seg.path, len), 3 << 20);
        assert_eq!(seg.claim(0), 1 << 20, "a claim never shrinks");
    }

    #[test]
    fn write_blocks_never_writes_a_page_holding_claimed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 0, 4 << 20).unwrap();
        let claim = (1 << 20) + 100;
        seg.claim(claim);
        // The claimed bytes and the rest of the page holding the claim's end are made
        // read-only: a write there kills the test with SIGSEGV.
        let guarded = ((claim as usize).next_multiple_of(4096)) as libc::size_t;
        // SAFETY: the start of the mapping and a length inside it; protection is restored
        // below and nothing else uses the segment meanwhile.
        let rc = unsafe { libc::mprotect(seg.map.as_mut_ptr().cast(), guarded, libc::PROT_READ) };
        assert_eq!(rc, 0, "mprotect: {}", io::Error::last_os_error());
        seg.write_blocks(0, 4 << 20, Duration::ZERO, &AtomicBool::new(false))
            .unwrap();
        // SAFETY: as above.
        let rc = unsafe {
            libc::mprotect(
                seg.map.as_mut_ptr().cast(),
                guarded,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        assert_eq!(rc, 0, "mprotect: {}", io::Error::last_os_error());
        assert_eq!(
            unwritten_bytes(&seg.path, 4 << 20),
            guarded as u64,
            "every page past the claim's last page is written"
        );
    }

    #[test]
    fn write_blocks_paces_its_steps_where_the_writer_is_not_close_behind() {
        let dir = tempfile::tempdir().unwrap();
        let len = 16 << 20;
        let seg = Segment::create(dir.path(), 0, len).unwrap();
        let pace = Duration::from_millis(2);
        let t = Instant::now();
        seg.write_blocks(0, len, pace, &AtomicBool::new(false))
            .unwrap();
        // The claim is at 0: steps ending within BLOCK_LEAD_BYTES of it go unpaced, every
        // later one but the last sleeps.
        let paced = (len - BLOCK_LEAD_BYTES) / BLOCK_STEP_BYTES - 1;
        assert!(
            t.elapsed() >= pace * paced as u32,
            "{:?} for {paced} paced steps",
            t.elapsed()
        );
        assert_eq!(unwritten_bytes(&seg.path, len), 0);
    }

    #[test]
    fn write_blocks_stops_after_a_step_once_asked_to() {
        let dir = tempfile::tempdir().unwrap();
        let len = 4 << 20;
        let seg = Segment::create(dir.path(), 0, len).unwrap();
        seg.write_blocks(0, len, Duration::from_secs(1), &AtomicBool::new(true))
            .unwrap();
        assert_eq!(unwritten_bytes(&seg.path, len), len - BLOCK_STEP_BYTES);
    }

    #[test]
    fn prefault_faults_in_only_the_window_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 0, 64 << 20).unwrap();
        seg.prefault(1 << 20, 1 << 20);
        let resident = resident_pages(&seg);
        let window = 256..512; // [1 MiB, 2 MiB) in 4 KiB pages
        assert!(
            resident[window.clone()].iter().all(|&r| r),
            "window not faulted in"
        );
        // The kernel's readahead may fault in some megabytes past the window, not the segment.
        let far = resident[512 + 4096..].iter().filter(|&&r| r).count();
        assert_eq!(
            far, 0,
            "{far} pages more than 16 MiB past the window faulted in"
        );
    }
}
