//! Reads of a partition: the index lookup, the CRC check of every record, the tag filter and
//! the byte budget. They live on [`Shared`] so that any thread holding the store's shared
//! state (the event loop through [`super::Store::read_into`], the fetch thread through
//! [`super::Fetcher::read`]) reads the same way.

use super::{commitlog, SCAN_ENTRIES_MAX};
use super::{index, record, FlushMode, ReadOutcome, Shared, StoreError, TagFilter};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What one read asks for: a partition, the offset to start at, the byte budget (the first
/// matching record is returned whatever its size) and the tags to keep (`None`: all).
#[derive(Debug, Clone, Copy)]
pub struct ReadSpec<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: usize,
    pub filter: Option<&'a TagFilter>,
}

impl Shared {
    /// See [`super::Store::read_into`].
    pub(super) fn read_into(
        &self,
        r: &ReadSpec<'_>,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, StoreError> {
        let ReadSpec {
            topic,
            partition,
            offset,
            max_bytes,
            filter,
        } = *r;
        let idx = self.index_of(topic, partition)?;
        let min = idx.min.load(Ordering::Acquire);
        let max = self.visible_max(&idx, min, idx.next.load(Ordering::Acquire))?;
        if offset < min {
            return Err(StoreError::OffsetOutOfRange { valid: min });
        }
        if offset > max {
            return Err(StoreError::OffsetOutOfRange { valid: max });
        }
        let log = &self.log;
        let mut got = ReadOutcome {
            records: 0,
            bytes: 0,
            next_offset: offset,
        };
        let mut seg: Option<Arc<commitlog::Segment>> = None;
        let limit = max.min(offset + SCAN_ENTRIES_MAX);
        let mut entries = idx.cursor();
        while got.next_offset < limit {
            let n = got.next_offset;
            let e = entries.get(n)?;
            if e.is_hole() {
                if got.records > 0 {
                    break;
                }
                return Err(StoreError::Corrupt {
                    offset: n,
                    next: n + 1,
                });
            }
            if filter.is_some_and(|f| !f.may_match(e.tag_hash)) {
                got.next_offset += 1;
                continue;
            }
            if got.records > 0 && got.bytes + e.size as usize > max_bytes {
                break;
            }
            if !seg
                .as_ref()
                .is_some_and(|s| s.base <= e.pos && e.pos + e.size as u64 <= s.end())
            {
                seg = log.segment_at(e.pos);
            }
            let Some(s) = seg.as_ref().filter(|s| e.pos + e.size as u64 <= s.end()) else {
                // The segment was deleted by retention under us: the record is gone.
                let min = idx.min.load(Ordering::Acquire);
                return Err(StoreError::OffsetOutOfRange {
                    valid: min.max(n + 1),
                });
            };
            // SAFETY: the entry was published after its record bytes were written, so they
            // are below the write position and never written again; the Arc keeps the map.
            let bytes = unsafe { s.bytes(e.pos, e.size as usize) };
            let ok = record::decode(bytes).ok().filter(|r| {
                r.offset == n && r.partition == partition && r.topic == topic.as_bytes()
            });
            let Some(r) = ok else {
                if got.records > 0 {
                    break;
                }
                self.note_corrupt(e.pos, e.pos + e.size as u64);
                log::error!(
                    "{topic}/{partition}: corrupt record at offset {n} (position {})",
                    e.pos
                );
                return Err(StoreError::Corrupt {
                    offset: n,
                    next: n + 1,
                });
            };
            got.next_offset += 1;
            if filter.is_some_and(|f| !f.matches(r.tag)) {
                continue;
            }
            out.extend_from_slice(bytes);
            got.records += 1;
            got.bytes += bytes.len();
        }
        Ok(got)
    }

    /// One past the last offset consumers may see: in sync mode, the last durable record.
    pub(super) fn visible_max(
        &self,
        idx: &index::PartIndex,
        min: u64,
        next: u64,
    ) -> Result<u64, StoreError> {
        if self.cfg.flush == FlushMode::Async {
            return Ok(next);
        }
        let durable = self.log.durable_pos.load(Ordering::Acquire);
        let mut max = next;
        while max > min {
            let e = idx.entry(max - 1)?;
            if e.is_hole() || e.pos + e.size as u64 <= durable {
                break;
            }
            max -= 1;
        }
        Ok(max)
    }

    /// Counts damage found at read time, once per damaged range (recovery's count included).
    pub(super) fn note_corrupt(&self, from: u64, to: u64) {
        if self.log.first_sighting(from, to) {
            let c = &self.counters.corrupt_records;
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}
