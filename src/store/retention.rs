//! Retention and the free-space watch, run by the flush thread's maintenance tick.
//!
//! - By age: the oldest segment is deleted once the newest record in it is older than the
//!   longest retention configured (the global one or any topic's); segments go oldest first,
//!   never from the middle, never the one being written. The newest record of a segment is
//!   bounded by the store time of the next segment's first valid record (a damaged first
//!   record is skipped), else by the segment file's modification time, so one corrupt record
//!   never stops retention for good.
//! - Per-topic min offsets are found by a binary search on store time in which a hole takes
//!   the time of the next real entry ([`super::index::PartIndex::search_by_time`]).
//! - By disk use: while the filesystem is fuller than `disk_used_ratio_max`, the oldest
//!   segments are deleted whatever their age (never the active one).
//! - A topic whose own retention is shorter has its min offset moved past older records.
//! - Appends are refused while free space is under `disk_free_reserve_bytes`; they succeed
//!   again at the next tick after space is freed.
//!
//! Indexes follow: each loaded partition's min offset moves to its first record still in
//! the log and wholly-passed index files are deleted; unloaded partitions catch up on load.

use super::record;
use super::{fs, now_ms, Shared, StoreError};
use std::sync::atomic::Ordering;

pub fn run(sh: &Shared) -> Result<(), StoreError> {
    let log = &sh.log;
    let mut deleted = 0u64;
    if let Some(keep_ms) = longest_retention(sh) {
        let horizon = now_ms() - keep_ms as i64;
        loop {
            let segs = log.segments();
            if segs.len() < 2 {
                break;
            }
            let newest = first_store_ts(sh, &segs[1]).or_else(|| modified_ms(&segs[0]));
            if newest.is_none_or(|ts| ts >= horizon) || log.remove_oldest().is_none() {
                break;
            }
            deleted += 1;
        }
    }
    loop {
        let (free, total) = fs::space(&sh.cfg.dir)?;
        sh.disk_free.store(free, Ordering::Relaxed);
        let used = 1.0 - free as f64 / total.max(1) as f64;
        if used <= sh.cfg.disk_used_ratio_max || log.remove_oldest().is_none() {
            break;
        }
        log::warn!("disk {:.0}% used: deleted the oldest segment", used * 100.0);
        deleted += 1;
    }
    if deleted > 0 {
        sh.counters
            .segments_deleted
            .fetch_add(deleted, Ordering::Relaxed);
        let min = log.min_pos.load(Ordering::Acquire);
        sh.topics.set_log_min(min);
        for idx in sh.topics.loaded() {
            idx.trim_below(min)?;
        }
    }
    for (topic, &keep_ms) in &sh.cfg.topic_retention_ms {
        let Some(t) = sh.topics.get(topic) else {
            continue;
        };
        let horizon = now_ms() - keep_ms as i64;
        for p in t.partitions() {
            let Some(idx) = p.loaded() else { continue };
            let (min, next) = (
                idx.min.load(Ordering::Acquire),
                idx.next.load(Ordering::Acquire),
            );
            let n = idx.search_by_time(min, next, horizon)?;
            idx.advance_min(n)?;
        }
    }
    let (free, _) = fs::space(&sh.cfg.dir)?;
    sh.disk_free.store(free, Ordering::Relaxed);
    sh.disk_full
        .store(free < sh.cfg.disk_free_reserve_bytes, Ordering::Relaxed);
    Ok(())
}

fn longest_retention(sh: &Shared) -> Option<u64> {
    let global = sh.cfg.retention_ms?;
    Some(
        sh.cfg
            .topic_retention_ms
            .values()
            .copied()
            .fold(global, u64::max),
    )
}

/// How far into a segment [`first_store_ts`] looks for a valid record when the first one is
/// damaged (the scan runs at every maintenance tick until the segment goes).
const FIRST_VALID_SCAN_BYTES: u64 = 4 << 20;

/// Store time of the first valid record of `seg`: an upper bound for every record before it
/// (store times never decrease along the log). When the first record is damaged, the next
/// valid one within [`FIRST_VALID_SCAN_BYTES`] gives a bound just as good.
fn first_store_ts(sh: &Shared, seg: &super::commitlog::Segment) -> Option<i64> {
    let written = sh.log.write_pos.load(Ordering::Acquire);
    let end = seg
        .end()
        .min(written)
        .min(seg.base + FIRST_VALID_SCAN_BYTES);
    if end <= seg.base {
        return None;
    }
    let magic = record::MAGIC_V1.to_be_bytes();
    sh.log
        .with_bytes(seg.base, (end - seg.base) as usize, |b| {
            let mut i = 0;
            while i + record::HEADER_BYTES <= b.len() {
                if b[i + 4..].starts_with(&magic) {
                    if let Ok(record::Slot::Record(r)) = record::read_slot(&b[i..]) {
                        return Some(r.store_ts_ms);
                    }
                }
                i += 1;
            }
            None
        })?
}

/// The segment file's modification time, ms: a fallback bound for its newest record when no
/// valid record is found at the start of the next segment (mapped writes update it).
fn modified_ms(seg: &super::commitlog::Segment) -> Option<i64> {
    let t = std::fs::metadata(&seg.path).ok()?.modified().ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    Some(ms as i64)
}
