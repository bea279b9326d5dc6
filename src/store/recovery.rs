//! Start-up recovery and the checkpoint file.
//!
//! The checkpoint (`<dir>/checkpoint`, replaced atomically) records whether the last shutdown
//! was clean, where the log ended, and the log position below which every index entry is
//! durable. After a crash the log is scanned from that position: each record's CRC is checked
//! and its index entry re-made (idempotently); the scan's end becomes the write position, a
//! torn tail is cut, corruption in the middle is reported and skipped (see [`crate::store`]).

use super::index::{tag_hash, Entry};
use super::record::{self, RecordView, Slot, MAGIC_V1};
use super::{fs, Shared, StoreError};
use std::path::Path;
use std::sync::atomic::Ordering;

const FILE: &str = "checkpoint";

#[derive(Debug, Clone, Copy)]
pub struct Checkpoint {
    pub clean: bool,
    pub log_end: u64,
    pub index_durable: u64,
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
        })
    }
}

/// What recovery found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub scanned_records: u64,
    pub corrupt_records: u64,
    pub end: u64,
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
            log::info!("recovering: scanning the commitlog from {start}");
            scan(sh, start, &mut report, &mut last_ts)?;
            log::info!(
                "recovered: {} records scanned, {} corrupt, log ends at {}",
                report.scanned_records,
                report.corrupt_records,
                report.end
            );
        }
    }
    let end = report.end;
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

fn scan(sh: &Shared, start: u64, report: &mut Report, last_ts: &mut i64) -> Result<(), StoreError> {
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
            Err(why) => match find_valid_after(sh, pos) {
                None => {
                    zero_tail(&seg, pos);
                    break;
                }
                Some(next) => {
                    report.corrupt_records += 1;
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

/// How far past an invalid slot recovery looks for a valid record before calling the rest a
/// torn tail. Writes are sequential, so valid records after a gap only exist when pages were
/// written back out of order in a power loss (bounded by the unflushed window) or when a
/// record was damaged in place; both are far closer than this.
const LOOKAHEAD_BYTES_MAX: u64 = 64 << 20;

/// The position of the first valid record after `pos`: within [`LOOKAHEAD_BYTES_MAX`], or at
/// the start of any later segment.
fn find_valid_after(sh: &Shared, pos: u64) -> Option<u64> {
    let magic = MAGIC_V1.to_be_bytes();
    let horizon = pos + LOOKAHEAD_BYTES_MAX;
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
/// whatever the number of partitions), then records that in the checkpoint.
pub fn write_checkpoint(sh: &Shared, clean: bool) -> Result<(), StoreError> {
    let target = sh.log.write_pos.load(Ordering::Acquire);
    fs::sync_filesystem(&sh.dir_file)?;
    let text = format!(
        "version=1\nclean={}\nlog_end={target}\nindex_durable={target}\n",
        clean as u8
    );
    fs::write_atomic(&sh.cfg.dir.join(FILE), text.as_bytes())?;
    Ok(())
}

/// Final flush at shutdown: everything durable, then a clean checkpoint.
pub fn write_clean_checkpoint(sh: &Shared) -> Result<(), StoreError> {
    let _w = sh.writer.lock().expect("writer lock");
    let target = sh.log.write_pos.load(Ordering::Acquire);
    let durable = sh.log.durable_pos.load(Ordering::Acquire);
    sh.log.sync_range(durable, target)?;
    sh.log.durable_pos.store(target, Ordering::Release);
    write_checkpoint(sh, true)
}
