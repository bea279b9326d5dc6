//! Appending: one message ([`Store::append`]) or a batch under one writer lock
//! ([`Store::append_batch`]). Each record is encoded into the mapped commitlog segment and its
//! index entry written to its partition's index; the partition's `next` (its max offset) is
//! published only after the entry is written, so readers never see an offset without its entry.
//!
//! Sync mode: the records are encoded into a staging buffer instead and written with one
//! pwrite per batch (and before a roll or an index tail move), then the write position is
//! published, then the entries. Written through the map, each page a group commit cleaned was
//! write-protected (a TLB shootdown on every core running the broker) and the writer's next
//! record into it took a fault; a pwrite fills the same page cache, which the readers' map
//! shows, and leaves its page-table entries clean. Async mode has no group commits cleaning
//! the tail and keeps the map (no syscall per batch).
//!
//! A batch is pipelined for the many-partition case: with thousands of partitions every
//! append lands on a different index page and partition state, each a cache (and TLB) miss.
//! The batch prefetches every message's partition state first, then writes the records while
//! prefetching each entry's slot, and writes the entries last, when their lines have arrived.
//! The misses overlap instead of being paid one after another.

use super::commitlog::{CLAIM_STEP_BYTES, PREFAULT_AHEAD_BYTES};
use super::index::{tag_hash, Entry, PartIndex};
use super::{now_ms, record, Appended, FlushMode, Message, Shared, Store, StoreError, Writer};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// async: while the log is over `flush_dirty_bytes`, kick the flush thread once per this many
/// bytes appended (a kick takes the flush lock; a flush in progress keeps the log dirty).
const KICK_EVERY_BYTES: u64 = 1 << 20;

/// Index entries a batch holds back before writing them (the prefetch distance is the batch).
const BATCH_MAX: usize = 64;

/// sync mode: the staged records are written once they reach this size, so a batch of large
/// puts (up to 64 of `body_bytes_max`) does not stage hundreds of MiB.
const STAGE_BYTES_MAX: usize = 1 << 20;

/// An entry written to the commitlog whose index entry is not written yet.
struct Pending {
    /// The partition's index; kept alive by the writer's part cache (see `part_ptr`).
    idx: *const PartIndex,
    offset: u64,
    entry: Entry,
}

impl Store {
    /// Appends one message; assigns its offset, id and store time.
    pub fn append(&self, msg: &Message<'_>) -> Result<Appended, StoreError> {
        let mut out = Vec::with_capacity(1);
        self.append_batch(std::slice::from_ref(msg), &mut out);
        out.pop().expect("one result per message")
    }

    /// Appends `msgs` in order under one writer lock, pushing one result per message onto
    /// `results` (a refused message does not stop the others). Offsets within a partition
    /// follow the order of `msgs`.
    pub fn append_batch(
        &self,
        msgs: &[Message<'_>],
        results: &mut Vec<Result<Appended, StoreError>>,
    ) {
        for chunk in msgs.chunks(BATCH_MAX) {
            self.append_chunk(chunk, results);
        }
    }

    fn append_chunk(&self, msgs: &[Message<'_>], results: &mut Vec<Result<Appended, StoreError>>) {
        let sh = &*self.shared;
        let mut guard = sh.writer.lock().expect("writer lock");
        let w = &mut *guard;
        // Pass 1: find every message's partition and start fetching its state.
        let mut parts: Vec<Result<*const PartIndex, StoreError>> = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let part = w
                .parts
                .get(&sh.topics, msg.topic, msg.partition)
                .map(part_ptr);
            if let Ok(p) = part {
                prefetch(p.cast());
            }
            parts.push(part);
        }
        // Pass 2: write the records, prefetching each entry's slot. The records of one chunk
        // arrived together and share one store time (a clock read per record cost 2-3% of a
        // put's CPU).
        let ts = now_ms().max(w.last_ts_ms);
        w.last_ts_ms = ts;
        let mut pending: Vec<Pending> = Vec::with_capacity(msgs.len());
        let (mut records, mut bytes) = (0u64, 0u64);
        for (msg, part) in msgs.iter().zip(parts) {
            let result = part.and_then(|p| self.write_record(sh, w, msg, p, ts, &mut pending));
            if let Some(p) = result.as_ref().ok().and(pending.last()) {
                records += 1;
                bytes += p.entry.size as u64;
            }
            results.push(result);
        }
        // Counted before the staged records' write position is published (a release store): a
        // flush that covers them (it reads the write position, then this count) counts them.
        sh.counters
            .appended_records
            .fetch_add(records, Ordering::Relaxed);
        sh.counters
            .appended_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        // Pass 3: write the entries, then publish each partition's new end.
        write_stage(sh, w);
        publish(&mut pending);
        let end = w.pos;
        if sh.cfg.flush == FlushMode::Async && records > 0 {
            let dirty = end - sh.log.durable_pos.load(Ordering::Relaxed);
            if dirty >= sh.cfg.flush_dirty_bytes && end >= w.next_kick_pos {
                w.next_kick_pos = end + KICK_EVERY_BYTES;
                sh.flush.kick();
            }
        }
    }

    /// Writes one record, stored at `ts` (ms), to the commitlog and queues its index entry in
    /// `pending`.
    fn write_record(
        &self,
        sh: &Shared,
        w: &mut Writer,
        msg: &Message<'_>,
        part: *const PartIndex,
        ts: i64,
        pending: &mut Vec<Pending>,
    ) -> Result<Appended, StoreError> {
        let bytes = msg
            .encoded_bytes()
            .ok_or(StoreError::RecordTooLarge { bytes: usize::MAX })?;
        if bytes as u64 > sh.cfg.segment_bytes - record::END_MARKER_BYTES as u64 {
            return Err(StoreError::RecordTooLarge { bytes });
        }
        if sh.disk_full.load(Ordering::Relaxed) {
            return Err(StoreError::DiskFull);
        }
        // SAFETY: `part` came from an `Arc<PartIndex>` in the writer's part cache, which keeps
        // every index it hands out for the store's lifetime; we hold the writer lock.
        let idx = unsafe { &*part };
        let mut offset = next_offset(idx, part, pending);
        if !idx.is_prepared(offset) {
            // Preparing may move the partition's tail to a new segment: write what is held
            // back first, so no pending entry refers to the old tail.
            write_stage(sh, w);
            publish(pending);
            offset = idx.next.load(Ordering::Relaxed);
            let idx = w.parts.get(&sh.topics, msg.topic, msg.partition)?;
            idx.prepare(offset).map_err(|e| self.note_io(e))?;
        }
        idx.prefetch_prepared(offset);
        if w.pos + bytes as u64 > w.seg.end() {
            let next = sh
                .log
                .create_segment(w.seg.end())
                .map_err(|e| self.note_io(e))?;
            write_stage(sh, w);
            let left = (w.seg.end() - w.pos) as usize;
            w.seg.claim(w.seg.end());
            if left >= record::END_MARKER_BYTES {
                // SAFETY: writer-only bytes at or past the published write position.
                record::encode_end(unsafe { w.seg.bytes_mut(w.pos, left) });
            }
            w.seg = next;
            w.pos = w.seg.base;
            w.warm_end = w.seg.base + PREFAULT_AHEAD_BYTES; // the allocator did the spare's start
            w.claimed = w.seg.base;
        }
        let pos = w.pos;
        if pos + bytes as u64 > w.claimed {
            w.claimed = w.seg.claim(pos + bytes as u64 + CLAIM_STEP_BYTES);
        }
        let stamp = record::Stamp {
            offset,
            msg_id: (sh.cfg.broker_id as u64) << 48 | (pos & ((1 << 48) - 1)),
            store_ts_ms: ts,
        };
        if sh.cfg.flush == FlushMode::Sync {
            if w.stage.is_empty() {
                w.stage_pos = pos;
            }
            debug_assert_eq!(w.stage_pos + w.stage.len() as u64, pos);
            let at = w.stage.len();
            w.stage.resize(at + bytes, 0);
            record::encode(&mut w.stage[at..], msg, stamp);
            if w.stage.len() >= STAGE_BYTES_MAX {
                write_stage(sh, w);
            }
        } else {
            // SAFETY: writer-only bytes at or past the published write position, inside the
            // segment (checked above).
            record::encode(unsafe { w.seg.bytes_mut(pos, bytes) }, msg, stamp);
        }
        let tag_hash = tag_hash(msg.tag);
        pending.push(Pending {
            idx: part,
            offset,
            entry: Entry {
                pos,
                size: bytes as u32,
                tag_hash,
                store_ts_ms: ts,
            },
        });
        w.pos = pos + bytes as u64;
        if w.stage.is_empty() {
            sh.log.write_pos.store(w.pos, Ordering::Release);
        }
        if w.pos + PREFAULT_AHEAD_BYTES / 2 >= w.warm_end && w.warm_end < w.seg.end() {
            sh.log.request_warm(w.seg.clone(), w.warm_end);
            w.warm_end += PREFAULT_AHEAD_BYTES;
        }
        Ok(Appended {
            msg_id: stamp.msg_id,
            partition: msg.partition,
            offset,
            end_pos: w.pos,
            tag_hash,
        })
    }
}

fn part_ptr(idx: &Arc<PartIndex>) -> *const PartIndex {
    Arc::as_ptr(idx)
}

/// The offset the next record of `idx` gets: one past its last pending entry, else its
/// published end.
fn next_offset(idx: &PartIndex, part: *const PartIndex, pending: &[Pending]) -> u64 {
    match pending.iter().rev().find(|p| std::ptr::eq(p.idx, part)) {
        Some(p) => p.offset + 1,
        None => idx.next.load(Ordering::Relaxed),
    }
}

/// sync mode: writes the staged records to the segment with one pwrite, then publishes the
/// write position. Should the pwrite fail (an I/O error), the records are written through the
/// mapping instead: they are already assigned offsets, and the next msync reports the error.
fn write_stage(sh: &Shared, w: &mut Writer) {
    if w.stage.is_empty() {
        return;
    }
    if let Err(e) = pwrite_stage(w) {
        log::error!(
            "commitlog pwrite at {}: {e}; writing through the map",
            w.stage_pos
        );
        // SAFETY: the writer's claimed bytes at the (unpublished) write position, inside the
        // segment: write_record staged them there.
        unsafe { w.seg.bytes_mut(w.stage_pos, w.stage.len()) }.copy_from_slice(&w.stage);
    }
    w.stage.clear();
    if w.stage.capacity() > 2 * STAGE_BYTES_MAX {
        w.stage = Vec::new(); // a large record's buffer is not kept
    }
    sh.log.write_pos.store(w.pos, Ordering::Release);
}

/// One pwrite of the stage at its position, through the writer's descriptor of its segment
/// (opened when the segment changed).
fn pwrite_stage(w: &mut Writer) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let (base, end) = (w.seg.base, w.seg.end());
    assert!(w.stage_pos >= base && w.stage_pos + w.stage.len() as u64 <= end);
    if w.seg_file.as_ref().is_none_or(|(b, _)| *b != base) {
        w.seg_file = Some((base, w.seg.open_file()?));
    }
    let (_, file) = w.seg_file.as_ref().expect("opened above");
    file.write_all_at(&w.stage, w.stage_pos - base)
}

/// Writes the held-back entries in order and publishes each partition's end after its entry.
fn publish(pending: &mut Vec<Pending>) {
    for p in pending.iter() {
        // SAFETY: as in `write_record`: the part cache keeps the index alive; writer lock held.
        let idx = unsafe { &*p.idx };
        idx.write_prepared(p.offset, &p.entry);
        idx.next.store(p.offset + 1, Ordering::Release);
    }
    pending.clear();
}

fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and has no architectural effect.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
