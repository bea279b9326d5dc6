//! Retention and the free-space watch, run by the flush thread's maintenance tick.
//!
//! - By age: the oldest segment is deleted once the newest record in it is older than the
//!   longest retention configured (the global one or any topic's); segments go oldest first,
//!   never from the middle, never the one being written.
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
            let newest = first_store_ts(sh, &segs[1]);
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
            let n = idx.search(min, next, |e| !e.is_hole() && e.store_ts_ms >= horizon)?;
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

/// Store time of the first record of `seg`: an upper bound for every record before it.
fn first_store_ts(sh: &Shared, seg: &super::commitlog::Segment) -> Option<i64> {
    let len = sh
        .log
        .with_bytes(seg.base, record::HEADER_BYTES, record::total_len)??;
    sh.log.with_bytes(seg.base, len, |b| {
        record::decode(b).ok().map(|r| r.store_ts_ms)
    })?
}
