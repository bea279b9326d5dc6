//! The store: ONE commitlog for every topic and partition, plus a small fixed-size index per
//! topic-partition (MetaQ 2.0's shape). A library with no networking.
//!
//! # Layout of a data directory
//! ```text
//! <dir>/lock                       flock'd by the one process using the directory
//! <dir>/checkpoint                 clean flag, log end, position up to which indexes are durable
//! <dir>/durable                    durable mark: a log position below which all is on disk
//! <dir>/commitlog/<20-digit pos>   segments (default 1 GiB), preallocated, named by start position
//! <dir>/index/<topic>/topic.meta   partition count
//! <dir>/index/<topic>/<p>/<20-digit entry no>   index segments (see [`index`])
//! ```
//!
//! # Record format (version 1), big-endian, identical on disk and in `value` replies
//! | off | size | field |
//! |---|---|---|
//! | 0 | 4 | total_len: whole record, header included |
//! | 4 | 4 | magic 0x494D4701: "IMG" + format version 1 (0x494D4700 = end-of-segment marker) |
//! | 8 | 4 | CRC32 (IEEE) of bytes [0,8) and [12,total_len): header fields and body |
//! | 12 | 4 | partition |
//! | 16 | 8 | logical offset in the partition |
//! | 24 | 8 | message id: broker id (16 bits) << 48, commitlog position (48 bits) |
//! | 32 | 8 | store timestamp, ms since the epoch (never decreases along the log) |
//! | 40 | 8 | born timestamp, ms (the producer's clock, or the broker's at receipt) |
//! | 48 | 4 | flag (as the producer sent it) |
//! | 52 | 4 | body length |
//! | 56 | 2 | topic length |
//! | 58 | 2 | tag length |
//! | 60 | 2 | properties length |
//! | 62 | 2 | sysflag, reserved (0) |
//! | 64 | .. | topic, tag, properties (`key \x01 value \x02` ...), body |
//!
//! Reserved property keys ([`record::props`]; values UTF-8, numbers unsigned decimal):
//! | key | value |
//! |---|---|
//! | `KEYS` | business keys separated by single spaces |
//! | `DELAY` | delay level, 1..=255 |
//! | `DELIVER_AT` | delivery time, ms since the epoch |
//! | `TRAN_ID` | transaction id, opaque text of at most 128 bytes |
//! | `RETRY` | retry count |
//! | `REAL_TOPIC` | original topic (of a retried, delayed or transactional message) |
//! | `REAL_PART` | original partition |
//!
//! A record never spans two segments: when it does not fit, the writer puts an 8-byte end
//! marker (`total_len` = bytes left, magic 0x494D4700) and continues in the next segment;
//! fewer than 8 bytes left need no marker.
//!
//! **Changing the format**: (1) never reuse a magic: give the new layout the next version
//! byte (0x494D4702); (2) keep the version-1 decoder in [`record`] and dispatch on the magic in
//! `record::read_slot`; (3) readers must accept both until every supported store can have
//! been rewritten by retention; (4) bump the index layout separately (it is rebuilt from the
//! log, so an index change only needs `rm -r index` plus a crash-style restart); (5) document
//! the new table here and in `protocol.md` (value replies carry the record as stored).
//!
//! # Flush modes and what an acknowledgement means
//! - `async`: an append returns once its bytes are in the mapped page cache. A flush thread
//!   msyncs every `flush_interval_ms` or once `flush_dirty_bytes` are unflushed. A process
//!   crash (kill -9) loses nothing acknowledged; a power loss or kernel crash loses what was
//!   not yet flushed (up to one interval or threshold). Consumers see records as soon as they
//!   are written.
//! - `sync`: the caller acknowledges an append only when [`Store::durable_pos`] reaches its
//!   `end_pos`. The flush thread covers every append waiting at that moment with one msync
//!   (group commit). Neither a process crash nor a power loss loses an acknowledged record
//!   (given a disk that honours flushes). Consumers see only durable records (reads, offsets
//!   and [`Store::get_by_id`]), so nobody processes a message that a power loss could take back.
//!   To keep group commits short the allocator thread writes the log's blocks once ahead of
//!   the writer (`Segment::write_blocks`: fallocated blocks are *unwritten* extents, and an
//!   fdatasync into one also writes the metadata that converts it). So sync mode writes
//!   about twice the log's bytes to the disk; it runs 1.4-1.6x faster for it. That writing is
//!   paced by the writer's rate, in 256 KiB steps, so it never queues a long write in front
//!   of a group commit.
//!
//! A flush publishes `durable_pos` only after the msync and, when a segment was added since
//! the last flush, an fsync of the commitlog directory (so a new segment's name, created or
//! renamed from `.spare`; open also adopts a `.spare` that holds records, whose rename was
//! lost). The durable mark (`<dir>/durable`) is then persisted once the flush thread has had
//! no kick for 5 ms, and at least every 100 ms under continuous load (persisting it in every
//! round would add a second device flush to every group commit). So it can lag `durable_pos`
//! by up to 100 ms of acknowledgements; see Recovery for what it protects.
//!
//! # Recovery
//! A clean shutdown writes a checkpoint marked clean and starts without scanning. Otherwise
//! the log is scanned from the checkpoint's index-durable position: every record's CRC is
//! verified and its index entry re-made. At the first invalid or blank slot the log is searched
//! for a valid record (within 64 MiB, or at the start of a later segment):
//! - if there is one, the bad bytes are corruption in the middle: they are reported (log and
//!   the `corrupt_records` counter), the partitions' lost offsets become holes that reads
//!   answer with [`StoreError::Corrupt`], and the scan continues;
//! - if there is none and the slot is below the durable mark (the larger of `<dir>/durable`
//!   and the checkpoint's positions), the bytes were durable: it is corruption, reported the
//!   same way; the bytes are kept (index entries pointing at them answer `Corrupt`) and writing
//!   resumes at the mark, so no acknowledged offset or position is reused;
//! - otherwise it is a torn tail and it is cut (zeroed) from the slot, never below the mark.
//!
//! Indexes are then cut to the log's end. The lowest position ever cut is kept in the
//! checkpoint (`cut_from`): when an index loads later, trailing entries at or past it that do
//! not point at their own record are stale (their records were cut while the index was not
//! loaded) and are cut too. Residual risk: a durable record acknowledged in the last 100 ms
//! before a crash (the mark's lag), damaged, with nothing valid after it, is still cut.
//!
//! Damage found at read time (`read_into`, `get_by_id`) is answered with `Corrupt` and also
//! counted in `corrupt_records`, once per damaged byte range per process (recovery's reports
//! included; at most 4096 ranges are remembered).

mod append;
pub mod cache_window;
mod commitlog;
mod error;
mod flush;
mod fs;
pub mod index;
pub mod inspect;
mod pages;
mod part_cache;
mod read;
pub mod record;
mod recovery;
mod residency;
mod retention;
mod stage;
mod topics;

pub use error::StoreError;
pub use read::ReadSpec;
pub use record::{Message, RecordView};
pub use residency::Fetcher;

use commitlog::CommitLog;
use index::tag_hash;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use topics::Topics;

/// How appends reach stable storage; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    Async,
    Sync,
}

impl FlushMode {
    pub fn name(self) -> &'static str {
        match self {
            FlushMode::Async => "async",
            FlushMode::Sync => "sync",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Commitlog segment size; at least 64 KiB.
    pub segment_bytes: u64,
    /// Durable commitlog bytes further than this behind the writer are dropped from the page
    /// cache (0: left to the kernel); see [`cache_window`].
    pub cache_window_bytes: u64,
    /// Entries per index segment file.
    pub index_segment_entries: u64,
    /// Most index segments mapped at once.
    pub index_maps_max: usize,
    pub flush: FlushMode,
    /// async: msync at least this often.
    pub flush_interval_ms: u64,
    /// async: msync early once this many bytes are unflushed.
    pub flush_dirty_bytes: u64,
    /// How often indexes are made durable and the checkpoint advanced.
    pub checkpoint_interval_ms: u64,
    /// How often free space is measured and retention runs.
    pub maintenance_interval_ms: u64,
    /// Identifies this broker in message ids.
    pub broker_id: u16,
    /// Segments whose newest record is older than this are deleted; `None` keeps everything.
    pub retention_ms: Option<u64>,
    /// Per-topic retention; a topic's records older than its value stop being readable
    /// (its min offset moves) even while the shared segment holding them is kept.
    pub topic_retention_ms: HashMap<String, u64>,
    /// Above this fraction of the disk used, the oldest segments are deleted whatever their age.
    pub disk_used_ratio_max: f64,
    /// Appends are refused while free space is under this many bytes.
    pub disk_free_reserve_bytes: u64,
}

impl StoreConfig {
    pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;

    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            segment_bytes: 1 << 30,
            cache_window_bytes: cache_window::default_bytes(),
            index_segment_entries: 1 << 20,
            index_maps_max: 49_152,
            flush: FlushMode::Async,
            flush_interval_ms: 500,
            flush_dirty_bytes: 16 << 20,
            checkpoint_interval_ms: 5_000,
            maintenance_interval_ms: 1_000,
            broker_id: 0,
            retention_ms: Some(72 * 3600 * 1000),
            topic_retention_ms: HashMap::new(),
            disk_used_ratio_max: 0.90,
            disk_free_reserve_bytes: 256 << 20,
        }
    }
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub msg_id: u64,
    pub partition: u32,
    pub offset: u64,
    /// Commitlog position just past the record: durable once `durable_pos() >= end_pos`.
    pub end_pos: u64,
    /// The tag's index hash ([`index::tag_hash`]), as its index entry holds it.
    pub tag_hash: u32,
}

/// Result of a read: records were appended to the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub records: usize,
    pub bytes: usize,
    /// The offset to ask for next (past any records the filter skipped).
    pub next_offset: u64,
}

/// Keeps only records whose tag is one of a set: skipped by hash in the index, then checked
/// exactly against the record.
#[derive(Debug, Clone)]
pub struct TagFilter {
    tags: Vec<Vec<u8>>,
    hashes: Vec<u32>,
}

impl TagFilter {
    pub fn new<T: AsRef<[u8]>>(tags: &[T]) -> TagFilter {
        let tags: Vec<Vec<u8>> = tags.iter().map(|t| t.as_ref().to_vec()).collect();
        let hashes = tags.iter().map(|t| tag_hash(t)).collect();
        TagFilter { tags, hashes }
    }
    fn may_match(&self, hash: u32) -> bool {
        self.hashes.contains(&hash)
    }
    fn matches(&self, tag: &[u8]) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Figures for `stats`.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub write_pos: u64,
    pub durable_pos: u64,
    pub min_pos: u64,
    pub segments: usize,
    pub topics: usize,
    pub partitions: u64,
    pub appended_records: u64,
    pub appended_bytes: u64,
    pub fsyncs: u64,
    pub fsync_last_us: u64,
    pub records_per_fsync_last: u64,
    pub records_fsynced: u64,
    pub disk_free_bytes: u64,
    pub disk_full: bool,
    pub corrupt_records: u64,
    pub index_maps_open: usize,
    /// Partition indexes loaded since start-up, and the entries read to find their ends.
    pub index_loads: u64,
    pub index_load_probes: u64,
    pub segments_deleted: u64,
    /// Commitlog bytes dropped from the page cache by the window.
    pub cache_evicted_bytes: u64,
}

#[derive(Default)]
struct Counters {
    appended_records: AtomicU64,
    appended_bytes: AtomicU64,
    fsyncs: AtomicU64,
    fsync_last_us: AtomicU64,
    records_per_fsync_last: AtomicU64,
    records_fsynced: AtomicU64,
    corrupt_records: AtomicU64,
    segments_deleted: AtomicU64,
}

struct Writer {
    seg: Arc<commitlog::Segment>,
    pos: u64,
    last_ts_ms: i64,
    parts: part_cache::PartCache,
    /// async: the write position at which a dirty log may kick the flush thread again.
    next_kick_pos: u64,
    /// The allocator has been asked to prefault the active segment up to here.
    warm_end: u64,
    /// The writer's claim on the active segment ([`commitlog::Segment::claim`]).
    claimed: u64,
    /// sync mode: records encoded but not yet written to the segment (see `append.rs`);
    /// empty outside an append.
    stage: Vec<u8>,
    /// The log position of `stage[0]`.
    stage_pos: u64,
    /// sync mode: the file of the segment the stage is written to, with that segment's base.
    seg_file: Option<(u64, std::fs::File)>,
}

pub(crate) struct Shared {
    cfg: StoreConfig,
    log: CommitLog,
    topics: Topics,
    writer: Mutex<Writer>,
    flush: flush::FlushCtl,
    counters: Counters,
    disk_full: AtomicBool,
    disk_free: AtomicU64,
    dir_file: std::fs::File,
    /// The write position when the store opened: below it the page cache may have nothing.
    opened_pos: AtomicU64,
}

/// Entries a filtered read may skip in one call, so one read stays short (the residency walk
/// covers the same entries).
const SCAN_ENTRIES_MAX: u64 = 65_536;

impl Shared {
    /// The index of `topic`/`partition`, loading it on first use.
    fn index_of(&self, topic: &str, partition: u32) -> Result<Arc<index::PartIndex>, StoreError> {
        let t = self.topics.get(topic).ok_or(StoreError::UnknownTopic)?;
        let p = t
            .partition(partition)
            .ok_or(StoreError::PartitionOutOfRange {
                partitions: t.partition_count(),
            })?;
        Ok(self.topics.index(&p)?)
    }
}

/// The store. Cheap to share (`Arc` inside); one thread appends at a time, any number read.
pub struct Store {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _lock: std::fs::File,
    closed: bool,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (creating if needed) the store in `cfg.dir`, recovering after a crash.
    pub fn open(cfg: StoreConfig) -> Result<Store, StoreError> {
        if cfg.segment_bytes < StoreConfig::SEGMENT_BYTES_MIN {
            return Err(StoreError::BadDataDir(format!(
                "segment_bytes {} is under the minimum {}",
                cfg.segment_bytes,
                StoreConfig::SEGMENT_BYTES_MIN
            )));
        }
        let log_dir = cfg.dir.join("commitlog");
        std::fs::create_dir_all(&log_dir)?;
        let lock = fs::lock_file(&cfg.dir.join("lock"))?.ok_or(StoreError::Locked)?;
        let dir_file = std::fs::File::open(&cfg.dir)?;
        let log = CommitLog::open(
            &log_dir,
            cfg.segment_bytes,
            cfg.flush == FlushMode::Sync,
            cfg.cache_window_bytes,
        )
        .map_err(StoreError::BadDataDir)?;
        let topics = Topics::open(
            &cfg.dir.join("index"),
            cfg.index_segment_entries,
            cfg.index_maps_max,
        )?;
        let checkpoint = recovery::Checkpoint::read(&cfg.dir);
        if log.last_segment().is_none() {
            let base = checkpoint.as_ref().map_or(0, |c| c.log_end);
            log.push_segment(commitlog::Segment::create(
                &log_dir,
                base,
                cfg.segment_bytes,
            )?);
        }
        topics.set_log_min(log.min_pos.load(Ordering::Acquire));
        let (free, _) = fs::space(&cfg.dir)?;
        let shared = Arc::new_cyclic(|_| Shared {
            writer: Mutex::new(Writer {
                seg: log.last_segment().expect("one segment exists"),
                pos: 0,
                last_ts_ms: 0,
                parts: part_cache::PartCache::default(),
                next_kick_pos: 0,
                warm_end: 0,
                claimed: 0,
                stage: Vec::new(),
                stage_pos: 0,
                seg_file: None,
            }),
            log,
            topics,
            flush: flush::FlushCtl::new(),
            counters: Counters::default(),
            disk_full: AtomicBool::new(free < cfg.disk_free_reserve_bytes),
            disk_free: AtomicU64::new(free),
            dir_file,
            opened_pos: AtomicU64::new(0),
            cfg,
        });
        let report = recovery::recover(&shared, checkpoint)?;
        recovery::install_stale_check(&shared);
        shared
            .counters
            .corrupt_records
            .store(report.corrupt_records, Ordering::Relaxed);
        let mut threads = vec![shared.log.start_allocator()];
        {
            let mut w = shared.writer.lock().expect("writer lock");
            shared.opened_pos.store(w.pos, Ordering::Relaxed);
            // Before the allocator may write blocks ahead: the records below stay untouched.
            w.claimed = w.seg.claim(w.pos);
            shared.log.request_warm(w.seg.clone(), w.pos);
            w.warm_end = w.pos + commitlog::PREFAULT_AHEAD_BYTES;
            shared.log.request_spare(w.seg.end());
        }
        threads.push(flush::start(shared.clone()));
        Ok(Store {
            shared,
            threads,
            _lock: lock,
            closed: false,
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.cfg
    }

    /// Creates a topic (or grows it to `partitions`); durable on return.
    pub fn ensure_topic(&self, name: &str, partitions: u32) -> Result<(), StoreError> {
        if !valid_topic(name) {
            return Err(StoreError::BadName);
        }
        self.shared.topics.ensure(name, partitions)?;
        Ok(())
    }

    /// The partition count of a topic, if it exists.
    pub fn partitions(&self, topic: &str) -> Option<u32> {
        self.shared.topics.get(topic).map(|t| t.partition_count())
    }

    /// Names of every topic, sorted.
    pub fn topic_names(&self) -> Vec<String> {
        self.shared
            .topics
            .all()
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }

    /// A partition for a put that lets the broker choose (round-robin per topic).
    pub fn choose_partition(&self, topic: &str) -> Result<u32, StoreError> {
        let t = self
            .shared
            .topics
            .get(topic)
            .ok_or(StoreError::UnknownTopic)?;
        Ok(t.next_round_robin())
    }

    pub(super) fn note_io(&self, e: std::io::Error) -> StoreError {
        let e = StoreError::from(e);
        if matches!(e, StoreError::DiskFull) {
            self.shared.disk_full.store(true, Ordering::Relaxed);
        }
        e
    }

    fn note_corrupt(&self, from: u64, to: u64) {
        self.shared.note_corrupt(from, to);
    }

    /// Asks the flush thread to make everything written so far durable (sync mode calls this
    /// once per batch of appends; it does not wait).
    pub fn request_flush(&self) {
        self.shared.flush.kick();
    }

    /// Everything below this commitlog position is on stable storage.
    pub fn durable_pos(&self) -> u64 {
        self.shared.log.durable_pos.load(Ordering::Acquire)
    }

    /// Blocks until `durable_pos() >= pos` or the timeout passes; true when durable.
    pub fn wait_durable(&self, pos: u64, timeout: Duration) -> bool {
        self.shared.flush.kick();
        self.shared
            .flush
            .wait_durable(&self.shared.log.durable_pos, pos, timeout)
    }

    /// Calls `f(durable_pos)` from the flush thread after every flush (e.g. to wake an event
    /// loop). It must be quick and must not call back into the store's writer.
    pub fn on_durable(&self, f: Box<dyn Fn(u64) + Send + Sync>) {
        self.shared.flush.listen(f);
    }

    /// `(min, max)` offsets of a partition as consumers see them: `max` is one past the last
    /// visible record (in sync mode, the last durable one).
    pub fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64), StoreError> {
        let idx = self.index_of(topic, partition)?;
        let min = idx.min.load(Ordering::Acquire);
        let next = idx.next.load(Ordering::Acquire);
        Ok((min, self.visible_max(&idx, min, next)?))
    }

    fn visible_max(&self, idx: &index::PartIndex, min: u64, next: u64) -> Result<u64, StoreError> {
        self.shared.visible_max(idx, min, next)
    }

    fn index_of(&self, topic: &str, partition: u32) -> Result<Arc<index::PartIndex>, StoreError> {
        self.shared.index_of(topic, partition)
    }

    /// Appends whole records of a partition, from `offset`, to `out`: the first matching record
    /// whatever its size, then more while the total stays within `max_bytes`. Caught up:
    /// `records == 0` and `next_offset == offset`. Outside `[min, max]`: `OffsetOutOfRange`.
    pub fn read_into(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        filter: Option<&TagFilter>,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, StoreError> {
        let r = ReadSpec {
            topic,
            partition,
            offset,
            max_bytes,
            filter,
        };
        self.shared.read_into(&r, out)
    }

    /// The first offset whose record was stored at or after `ts_ms` (max when none).
    pub fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        ts_ms: i64,
    ) -> Result<u64, StoreError> {
        let idx = self.index_of(topic, partition)?;
        let (min, max) = self.offsets(topic, partition)?;
        Ok(idx.search_by_time(min, max, ts_ms)?)
    }

    /// The record with message id `msg_id` (its bytes, verified).
    pub fn get_by_id(&self, msg_id: u64) -> Result<Vec<u8>, StoreError> {
        if msg_id >> 48 != self.shared.cfg.broker_id as u64 {
            return Err(StoreError::NoSuchMessage);
        }
        let pos = msg_id & ((1 << 48) - 1);
        let log = &self.shared.log;
        if pos < log.min_pos.load(Ordering::Acquire) {
            return Err(StoreError::NoSuchMessage);
        }
        // In sync mode consumers see only durable records (as `read_into` does).
        let visible = match self.shared.cfg.flush {
            FlushMode::Sync => self.durable_pos(),
            FlushMode::Async => u64::MAX,
        };
        let header = log
            .with_bytes(pos, record::HEADER_BYTES, <[u8]>::to_vec)
            .filter(|_| pos + record::HEADER_BYTES as u64 <= visible)
            .ok_or(StoreError::NoSuchMessage)?;
        let len = record::total_len(&header).unwrap_or(0);
        let found = log
            .with_bytes(pos, len, |b| record::decode(b).ok().map(|_| b.to_vec()))
            .flatten();
        match found {
            Some(_) if pos + len as u64 > visible => Err(StoreError::NoSuchMessage),
            Some(bytes) => Ok(bytes),
            None if record::looks_like_start(&header, msg_id) => {
                self.note_corrupt(pos, pos + len.max(record::HEADER_BYTES) as u64);
                log::error!("corrupt record for message id {msg_id} at position {pos}");
                let offset = record::get_u64(&header, 16);
                Err(StoreError::Corrupt {
                    offset,
                    next: offset.saturating_add(1),
                })
            }
            None => Err(StoreError::NoSuchMessage),
        }
    }

    pub fn stats(&self) -> StoreStats {
        let sh = &*self.shared;
        let c = &sh.counters;
        let topics = sh.topics.all();
        let (index_loads, index_load_probes) = sh.topics.budget.loads();
        StoreStats {
            write_pos: sh.log.write_pos.load(Ordering::Acquire),
            durable_pos: sh.log.durable_pos.load(Ordering::Acquire),
            min_pos: sh.log.min_pos.load(Ordering::Acquire),
            segments: sh.log.segment_count(),
            topics: topics.len(),
            partitions: topics.iter().map(|t| t.partition_count() as u64).sum(),
            appended_records: c.appended_records.load(Ordering::Relaxed),
            appended_bytes: c.appended_bytes.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            fsync_last_us: c.fsync_last_us.load(Ordering::Relaxed),
            records_per_fsync_last: c.records_per_fsync_last.load(Ordering::Relaxed),
            records_fsynced: c.records_fsynced.load(Ordering::Relaxed),
            disk_free_bytes: sh.disk_free.load(Ordering::Relaxed),
            disk_full: sh.disk_full.load(Ordering::Relaxed),
            corrupt_records: c.corrupt_records.load(Ordering::Relaxed),
            index_maps_open: sh.topics.budget.open(),
            index_loads,
            index_load_probes,
            segments_deleted: c.segments_deleted.load(Ordering::Relaxed),
            cache_evicted_bytes: sh.log.evicted_bytes.load(Ordering::Relaxed),
        }
    }

    /// Runs retention and the free-space check now (the flush thread also runs them on its
    /// own schedule).
    pub fn run_maintenance(&self) -> Result<(), StoreError> {
        retention::run(&self.shared)
    }

    /// Flushes everything, writes a clean checkpoint and stops the store's threads.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    /// Stops the store's threads WITHOUT flushing or checkpointing, leaving the files as a
    /// killed process would (the page cache keeps what was written). For crash tests.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        self.closed = true;
        self.shared.flush.stop();
        self.shared.log.stop_allocator();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.shared.flush.stop();
        self.shared.log.stop_allocator();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        recovery::write_clean_checkpoint(&self.shared)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!("store shutdown: {e}");
        }
    }
}

/// Topic names: 1..=255 bytes of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn valid_topic(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b[0] != b'.'
        && b[0] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}
