//! Start-up recovery and the checkpoint file.
//!
//! The checkpoint (`<dir>/checkpoint`, replaced atomically) records whether the last shutdown
//! was clean, where the log ended, and the log position below which every index entry is
//! durable. After a crash the log is scanned from that position: each record's CRC is checked
//! and its index entry re-made (idempotently); the scan's end becomes the write position, a
//! torn tail is cut, corruption in the middle is reported and skipped (see [`crate::store`]).
//!
//! The durable mark (`<dir>/durable`, see [`DurableMark`]) is a commitlog position below which
//! every byte was on stable storage: the flush thread persists it after its flushes. Recovery
//! never cuts below it: a bad record there is corruption even with nothing valid after it.

use super::index::{tag_hash, Entry};
use super::record::{self, RecordView, Slot, MAGIC_V1};
use super::{fs, Shared, StoreError};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const FILE: &str = "checkpoint";
const MARK_FILE: &str = "durable";
/// Two slots a sector apart, written alternately: a torn write of one leaves the other.
const MARK_SLOT_BYTES: u64 = 512;
const MARK_MAGIC: u32 = 0x494D_4744; // "IMGD"

/// `<dir>/durable`: the last durable commitlog position the flush thread persisted. Each slot
/// is magic (4), version 1 (4), sequence (8), position (8), CRC32 of those 24 bytes (4),
/// big-endian; the valid slot with the higher sequence wins. Overwritten in place (one
/// `pwrite` + `fdatasync` of a preallocated file, no rename, no directory sync).
pub struct DurableMark {
    file: std::fs::File,
    seq: u64,
    pub pos: u64,
}

impl DurableMark {
    pub fn open(dir: &Path) -> std::io::Result<DurableMark> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(MARK_FILE))?;
        if file.metadata()?.len() < 2 * MARK_SLOT_BYTES {
            fs::allocate(&file, 2 * MARK_SLOT_BYTES)?;
            file.sync_all()?;
            fs::sync_dir(dir)?;
        }
        let (seq, pos) = read_mark_file(&file).unwrap_or((0, 0));
        Ok(DurableMark { file, seq, pos })
    }

    /// Persists `pos` (which must already be durable); durable on return.
    pub fn store(&mut self, pos: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let seq = self.seq + 1;
        let mut b = [0u8; 28];
        b[0..4].copy_from_slice(&MARK_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&1u32.to_be_bytes());
        b[8..16].copy_from_slice(&seq.to_be_bytes());
        b[16..24].copy_from_slice(&pos.to_be_bytes());
        let crc = crc32fast::hash(&b[..24]);
        b[24..28].copy_from_slice(&crc.to_be_bytes());
        self.file.write_at(&b, (seq % 2) * MARK_SLOT_BYTES)?;
        self.file.sync_data()?;
        (self.seq, self.pos) = (seq, pos);
        Ok(())
    }
}

fn read_mark_file(file: &std::fs::File) -> Option<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    (0..2)
        .filter_map(|slot| {
            let mut b = [0u8; 28];
            file.read_exact_at(&mut b, slot * MARK_SLOT_BYTES).ok()?;
            let valid = record::get_u32(&b, 0) == MARK_MAGIC
                && record::get_u32(&b, 4) == 1
                && crc32fast::hash(&b[..24]) == record::get_u32(&b, 24);
            valid.then(|| (record::get_u64(&b, 8), record::get_u64(&b, 16)))
        })
        .max()
}

/// The durable mark persisted in `dir`, if any (read-only; for recovery and the inspector).
pub fn read_durable_mark(dir: &Path) -> Option<u64> {
    let file = std::fs::File::open(dir.join(MARK_FILE)).ok()?;
    read_mark_file(&file).map(|(_, pos)| pos)
}

#[derive(Debug, Clone, Copy)]
pub struct Checkpoint {
    pub clean: bool,
    pub log_end: u64,
    pub index_durable: u64,
    /// Lowest position where a recovery cut a torn tail (optional field).
    pub cut_from: Option<u64>,
}

impl Checkpoint {
    pub fn read(dir: &Path) -> Option<Checkpoint> {
        let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
        let field = |k: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('=')?.trim().parse().ok())
        };
        if field("version")? != 1 {
            return None;
        }
        Some(Checkpoint {
            clean: field("clean")? == 1,
            log_end: field("log_end")?,
            index_durable: field("index_durable")?,
            cut_from: field("cut_from"),
        })
    }
}

/// What recovery found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub scanned_records: u64,
    pub corrupt_records: u64,
    pub end: u64,
    /// Where a torn tail was cut, if one was.
    pub cut_at: Option<u64>,
}

pub fn recover(sh: &Shared, checkpoint: Option<Checkpoint>) -> Result<Report, StoreError> {
    let log = &sh.log;
    let first = log.min_pos.load(Ordering::Acquire);
    let last_end = log.last_segment().map_or(first, |s| s.end());
    let in_log = |p: u64| p >= first && p <= last_end;
    let rebuild = sh.topics.count() == 0;
    let mut report = Report::default();
    let mut last_ts = 0;
    match checkpoint {
        Some(c) if c.clean && in_log(c.log_end) && !rebuild => {
            report.end = c.log_end;
            log::info!("clean shutdown: log ends at {}", c.log_end);
        }
        _ => {
            let start = match checkpoint {
                Some(c) if in_log(c.index_durable) && !rebuild => c.index_durable,
                _ => first,
            };
            // The checkpoint's positions were made durable (syncfs) before it was written.
            let mark = read_durable_mark(&sh.cfg.dir)
                .into_iter()
                .chain(checkpoint.map(|c| c.index_durable))
                .filter(|&m| in_log(m))
                .max()
                .unwrap_or(first);
            log::info!("recovering: scanning the commitlog from {start} (durable up to {mark})");
            scan(sh, start, mark, &mut report, &mut last_ts)?;
            log::info!(
                "recovered: {} records scanned, {} corrupt, log ends at {}",
                report.scanned_records,
                report.corrupt_records,
                report.end
            );
        }
    }
    let end = report.end;
    let cut_from = checkpoint
        .and_then(|c| c.cut_from)
        .into_iter()
        .chain(report.cut_at)
        .min();
    if let Some(c) = cut_from {
        log.cut_from.store(c, Ordering::Release);
    }
    sh.topics.set_log_end(end);
    for idx in sh.topics.loaded() {
        idx.trim_past(end)?;
    }
    let seg = log
        .segment_at(end)
        .or_else(|| log.segment_at(end.saturating_sub(1)))
        .ok_or_else(|| StoreError::BadDataDir(format!("no segment holds position {end}")))?;
    log.remove_from(seg.end());
    log.write_pos.store(end, Ordering::Release);
    log.durable_pos.store(end, Ordering::Release);
    let mut w = sh.writer.lock().expect("writer lock");
    (w.seg, w.pos, w.last_ts_ms) = (seg, end, last_ts);
    drop(w);
    write_checkpoint(sh, false)?;
    Ok(report)
}

/// Replays records from `start`. `mark`: every byte below it was durable, so no torn tail
/// can start below it.
fn scan(
    sh: &Shared,
    start: u64,
    mark: u64,
    report: &mut Report,
    last_ts: &mut i64,
) -> Result<(), StoreError> {
    let log = &sh.log;
    let mut pos = start;
    loop {
        let Some(seg) = log.segment_at(pos) else {
            break;
        };
        // SAFETY: recovery runs before any reader or writer exists.
        let rest = unsafe { seg.bytes(pos, (seg.end() - pos) as usize) };
        match record::read_slot(rest) {
            Ok(Slot::Record(r)) => {
                replay(sh, &r, pos)?;
                report.scanned_records += 1;
                *last_ts = r.store_ts_ms.max(*last_ts);
                pos += r.bytes.len() as u64;
            }
            Ok(Slot::End) => {
                if log.segment_at(seg.end()).is_none() {
                    break;
                }
                pos = seg.end();
            }
            Err(why) => match find_valid_after(sh, pos, mark) {
                None if pos < mark => {
                    // Durable bytes are damaged and nothing valid follows: corruption, not a
                    // torn tail. Keep them (their index entries answer Corrupt) and continue
                    // writing at the mark, so no acknowledged offset or position is reused;
                    // only what lies past the mark is a torn tail.
                    report.corrupt_records += 1;
                    index_damaged(sh, pos, rest)?;
                    log.first_sighting(pos, mark);
                    log::error!(
                        "corrupt commitlog bytes [{pos}, {mark}) below the durable mark ({why:?}); kept, writing resumes at {mark}"
                    );
                    if let Some(s) = log.segment_at(mark) {
                        zero_tail(&s, mark);
                    }
                    pos = mark;
                    report.cut_at = Some(mark);
                    break;
                }
                None => {
                    zero_tail(&seg, pos);
                    report.cut_at = Some(pos);
                    break;
                }
                Some(next) => {
                    report.corrupt_records += 1;
                    log.first_sighting(pos, next);
                    log::error!(
                        "corrupt commitlog bytes [{pos}, {next}) ({why:?}); records after them are kept"
                    );
                    pos = next;
                }
            },
        }
    }
    report.end = pos;
    Ok(())
}

/// Re-makes the index entry of a damaged record below the durable mark that nothing valid
/// follows, when a crash lost it (the writer keeps a partition's newest entries in memory,
/// see `super::stage`): reads of its offset then answer Corrupt and the offset is not reused,
/// as when the entry survived. Its header is not covered by a valid CRC, so it is trusted only
/// if the magic, the lengths and the message id (which holds its position) agree, it names an
/// existing partition, and its offset is exactly that partition's next. Otherwise the offset
/// may be reused, as after a power loss that lost the entry too.
fn index_damaged(sh: &Shared, pos: u64, rest: &[u8]) -> Result<(), StoreError> {
    let Some(total) = record::total_len(rest).filter(|&t| t <= rest.len()) else {
        return Ok(());
    };
    let Ok(r) = record::decode_unverified(&rest[..total]) else {
        return Ok(());
    };
    let mask = (1u64 << 48) - 1;
    if r.msg_id & mask != pos & mask {
        return Ok(());
    }
    let Ok(topic) = std::str::from_utf8(r.topic) else {
        return Ok(());
    };
    let Some(part) = sh.topics.get(topic).and_then(|t| t.partition(r.partition)) else {
        return Ok(());
    };
    let idx = sh.topics.index(&part)?;
    if idx.next.load(Ordering::Acquire) == r.offset {
        idx.push(&Entry {
            pos,
            size: total as u32,
            tag_hash: tag_hash(r.tag),
            store_ts_ms: r.store_ts_ms,
        })?;
    }
    Ok(())
}

/// How far past an invalid slot recovery looks for a valid record before calling the rest a
/// torn tail. Writes are sequential, so valid records after a gap only exist when pages were
/// written back out of order in a power loss (bounded by the unflushed window) or when a
/// record was damaged in place; both are far closer than this.
const LOOKAHEAD_BYTES_MAX: u64 = 64 << 20;

/// The position of the first valid record after `pos`: within [`LOOKAHEAD_BYTES_MAX`] (or up
/// to `mark`, if further), or at the start of any later segment.
fn find_valid_after(sh: &Shared, pos: u64, mark: u64) -> Option<u64> {
    let magic = MAGIC_V1.to_be_bytes();
    let horizon = (pos + LOOKAHEAD_BYTES_MAX).max(mark);
    for seg in sh.log.segments().into_iter().filter(|s| s.end() > pos) {
        let from = (pos + 1).max(seg.base);
        let to = seg
            .end()
            .min(horizon.max(seg.base + record::HEADER_BYTES as u64));
        // SAFETY: recovery runs before any reader or writer exists.
        let bytes = unsafe { seg.bytes(seg.base, seg.len as usize) };
        let (mut i, end) = ((from - seg.base) as usize, (to - seg.base) as usize);
        while i + 8 <= end {
            match bytes[i + 4..end].iter().position(|&b| b == magic[0]) {
                None => break,
                Some(k) => i += k,
            }
            if bytes[i + 4..].starts_with(&magic)
                && matches!(record::read_slot(&bytes[i..]), Ok(Slot::Record(_)))
            {
                return Some(seg.base + i as u64);
            }
            i += 1;
        }
    }
    None
}

/// Zeroes a torn tail from `pos` until a page that is already all zero.
fn zero_tail(seg: &super::commitlog::Segment, pos: u64) {
    const PAGE: u64 = 4096;
    let mut at = pos;
    while at < seg.end() {
        let page_end = ((at / PAGE) + 1) * PAGE;
        let to = page_end.min(seg.end());
        // SAFETY: recovery runs before any reader or writer exists.
        let bytes = unsafe { seg.bytes_mut(at, (to - at) as usize) };
        if bytes.iter().all(|&b| b == 0) {
            break;
        }
        bytes.fill(0);
        at = to;
    }
    if at > pos {
        log::warn!(
            "cut a torn commitlog tail of up to {} bytes at {pos}",
            at - pos
        );
    }
}

fn replay(sh: &Shared, r: &RecordView<'_>, pos: u64) -> Result<(), StoreError> {
    let topic = std::str::from_utf8(r.topic)
        .map_err(|_| StoreError::BadDataDir(format!("record at {pos} has a non-UTF-8 topic")))?;
    let t = sh.topics.ensure(topic, r.partition + 1)?;
    let part = t.partition(r.partition).expect("ensured");
    let idx = sh.topics.index(&part)?;
    let entry = Entry {
        pos,
        size: r.bytes.len() as u32,
        tag_hash: tag_hash(r.tag),
        store_ts_ms: r.store_ts_ms,
    };
    idx.start_empty_at(r.offset);
    if r.offset < idx.min.load(Ordering::Acquire) {
        return Ok(());
    }
    let next = idx.next.load(Ordering::Acquire);
    if r.offset < next {
        if idx.entry(r.offset)? == entry {
            return Ok(());
        }
        idx.truncate(r.offset)?;
    }
    while idx.next.load(Ordering::Acquire) < r.offset {
        idx.push(&Entry::hole())?;
    }
    idx.push(&entry)?;
    Ok(())
}

/// Makes the log and every index durable up to the current write position (one syncfs,
/// whatever the number of partitions), then records that in the checkpoint. Takes the writer
/// lock for as long as it takes to copy the staged index entries into the files (one page
/// touch per partition written lately), so every entry below the position is in a file.
pub fn write_checkpoint(sh: &Shared, clean: bool) -> Result<(), StoreError> {
    let target = {
        let _w = sh.writer.lock().expect("writer lock");
        sh.topics.budget.copy_out_stages();
        sh.log.write_pos.load(Ordering::Acquire)
    };
    checkpoint_at(sh, target, clean)
}

/// [`write_checkpoint`] for a `target` whose index entries are all in the files already.
fn checkpoint_at(sh: &Shared, target: u64, clean: bool) -> Result<(), StoreError> {
    fs::sync_filesystem(&sh.dir_file)?;
    let mut text = format!(
        "version=1\nclean={}\nlog_end={target}\nindex_durable={target}\n",
        clean as u8
    );
    let cut_from = sh.log.cut_from.load(Ordering::Acquire);
    if cut_from != u64::MAX {
        text.push_str(&format!("cut_from={cut_from}\n"));
    }
    fs::write_atomic(&sh.cfg.dir.join(FILE), text.as_bytes())?;
    Ok(())
}

/// From now on, indexes that load cut their stale trailing entries ([`entry_is_stale`]).
pub fn install_stale_check(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    shared
        .topics
        .set_stale_check(Box::new(move |topic, p, n, e| {
            weak.upgrade()
                .is_some_and(|sh| entry_is_stale(&sh, topic, p, n, e))
        }));
}

/// Whether index entry `n` of `topic`/`partition` is a stale leftover: it lies at or past a
/// position where a recovery cut a torn tail (an index not loaded during that recovery kept
/// entries for the cut records, and the log has been written over them since) and it points
/// past the log, at another valid record, or at bytes that are not a record start. An entry
/// pointing at a damaged record start (its magic or its message-id field intact) is kept, as
/// is any entry below the cut: that is corruption, answered with [`StoreError::Corrupt`] on
/// read, and its offset must not be reused.
pub fn entry_is_stale(sh: &Shared, topic: &str, partition: u32, n: u64, e: &Entry) -> bool {
    let log = &sh.log;
    if e.is_hole() || e.pos < log.cut_from.load(Ordering::Acquire) {
        return false;
    }
    if e.pos < log.min_pos.load(Ordering::Acquire) {
        return false; // deleted by retention; `trim_below` handles it
    }
    let own = |r: &RecordView<'_>| {
        r.offset == n && r.partition == partition && r.topic == topic.as_bytes()
    };
    let verdict = log
        .with_bytes(e.pos, e.size as usize, |b| {
            record::decode(b).ok().map(|r| !own(&r))
        })
        .flatten();
    if let Some(stale) = verdict {
        return stale;
    }
    let Some(header) = log.with_bytes(e.pos, record::HEADER_BYTES, <[u8]>::to_vec) else {
        return true; // past the log's end
    };
    let mask = (1u64 << 48) - 1;
    let starts_here = record::get_u32(&header, 4) == MAGIC_V1
        || record::get_u64(&header, 24) & mask == e.pos & mask;
    if !starts_here {
        return true;
    }
    // A record starts here: stale if it is someone else's valid record, kept if damaged.
    let len = record::total_len(&header).unwrap_or(0);
    log.with_bytes(e.pos, len, |b| record::decode(b).is_ok_and(|r| !own(&r)))
        .unwrap_or(false)
}

/// Final flush at shutdown: everything durable, then a clean checkpoint.
pub fn write_clean_checkpoint(sh: &Shared) -> Result<(), StoreError> {
    let _w = sh.writer.lock().expect("writer lock");
    sh.topics.budget.copy_out_stages();
    let target = sh.log.write_pos.load(Ordering::Acquire);
    let durable = sh.log.durable_pos.load(Ordering::Acquire);
    sh.log.sync_range(durable, target)?;
    sh.log.durable_pos.store(target, Ordering::Release);
    checkpoint_at(sh, target, true)
}
