//! The commitlog's page-cache window: which durable bytes of the log to drop from the page
//! cache because they are more than `cache_window_bytes` behind the writer.
//!
//! Left alone, every byte of an accumulating log stays cached until memory runs out, and
//! then the kernel's reclaim must find clean pages to free while the writer keeps asking for
//! new ones (reclaim can stall the thread that faults). On a virtual machine with free page
//! reporting it is dearer still: a page the guest has never used, or has given back, costs a
//! fault in the host the first time it is touched. Dropping the log's pages once they are far
//! behind the writer keeps the broker's share of the page cache bounded and lets the pages
//! the writer faults in next come from pages it just freed. Measured here (accumulating 100 M
//! 128-byte messages, 23.9 GB of log; `tools/bench/README.md`): with a 256 MiB window the
//! allocator thread spent 10.5 CPU seconds faulting in the log against 36-38 without one, and
//! the put rate rose from 1.61-1.65 M/s to 1.77-1.79 M/s.
//!
//! Only durable bytes (below `durable_pos`) are dropped: their pages are clean, so dropping
//! them writes nothing and loses nothing; a later read faults them back in from the disk
//! (the fetch thread does that off the event loop, see `residency`). Consumers further behind
//! than the window read from the disk, as they would once the kernel had evicted the pages.
//! The partition indexes are not covered (they are 20 bytes per message, 1/6 of the log here).
//!
//! The writer plans (once per [`EVICT_STEP_BYTES`] it writes, under the allocator's lock); the
//! allocator thread does the dropping, off the writer's path.

use super::commitlog::Segment;
use std::sync::Arc;

/// Bytes are dropped in steps of this many (and only whole steps), so the planning and the
/// system calls happen once per 64 MiB written.
pub const EVICT_STEP_BYTES: u64 = 64 << 20;

/// A range `[from, to)` (absolute positions, inside the segment) to drop from the page cache.
pub type Eviction = (Arc<Segment>, u64, u64);

/// The default window: a quarter of physical memory, so a backlog of that size (a consumer
/// that stopped for a while, a drain of millions of messages) is still read from memory, and
/// the rest stays for the indexes and other processes. 0 if the size is unknown.
pub fn default_bytes() -> u64 {
    // SAFETY: sysconf only reads a system value.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return 0;
    }
    (pages as u64).saturating_mul(page as u64) / 4 / EVICT_STEP_BYTES * EVICT_STEP_BYTES
}

/// What has been dropped so far and how far behind the writer dropping starts.
#[derive(Debug, Default)]
pub struct CacheWindow {
    /// 0: the page cache is left to the kernel.
    bytes: u64,
    /// Everything below was planned for dropping already (a multiple of the step, or the
    /// log's start).
    dropped_to: u64,
}

impl CacheWindow {
    /// A window of `bytes` (rounded up to a whole step) over a log starting at `min_pos`.
    pub fn new(bytes: u64, min_pos: u64) -> CacheWindow {
        CacheWindow {
            bytes: bytes.next_multiple_of(EVICT_STEP_BYTES),
            dropped_to: min_pos,
        }
    }

    /// The ranges of `segments` (in log order) to drop now that the writer is at `front`
    /// and everything below `durable` is on stable storage: from where the last plan ended
    /// up to `min(front - window, durable)`, rounded down to a step. Never above `durable`.
    pub fn plan(&mut self, front: u64, durable: u64, segments: &[Arc<Segment>]) -> Vec<Eviction> {
        if self.bytes == 0 {
            return Vec::new();
        }
        let limit =
            front.saturating_sub(self.bytes).min(durable) / EVICT_STEP_BYTES * EVICT_STEP_BYTES;
        if limit <= self.dropped_to {
            return Vec::new();
        }
        let from = self.dropped_to;
        self.dropped_to = limit;
        segments
            .iter()
            .filter(|s| s.end() > from && s.base < limit)
            .map(|s| (s.clone(), from.max(s.base), limit.min(s.end())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn segments(dir: &std::path::Path, n: u64, len: u64) -> Vec<Arc<Segment>> {
        (0..n)
            .map(|i| Arc::new(Segment::create(dir, i * len, len).unwrap()))
            .collect()
    }

    #[test]
    fn a_zero_window_never_drops_anything() {
        let dir = tempfile::tempdir().unwrap();
        let segs = segments(dir.path(), 2, 64 * MIB);
        let mut w = CacheWindow::new(0, 0);
        assert!(w.plan(128 * MIB, 128 * MIB, &segs).is_empty());
    }

    #[test]
    fn drops_whole_steps_more_than_the_window_behind_the_writer_and_each_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let segs = segments(dir.path(), 4, 96 * MIB);
        let mut w = CacheWindow::new(100 * MIB, 0); // rounded up to 128 MiB
        assert!(
            w.plan(190 * MIB, 190 * MIB, &segs).is_empty(),
            "62 MiB behind: nothing"
        );
        // front 330 MiB: limit 202 MiB, rounded down to 192 MiB: segments 0 and 1 whole.
        let plan = w.plan(330 * MIB, 330 * MIB, &segs);
        let got: Vec<_> = plan.iter().map(|(s, f, t)| (s.base, *f, *t)).collect();
        assert_eq!(got, vec![(0, 0, 96 * MIB), (96 * MIB, 96 * MIB, 192 * MIB)]);
        assert!(
            w.plan(331 * MIB, 331 * MIB, &segs).is_empty(),
            "planned already"
        );
        let plan = w.plan(384 * MIB, 384 * MIB, &segs);
        let got: Vec<_> = plan.iter().map(|(s, f, t)| (s.base, *f, *t)).collect();
        assert_eq!(got, vec![(192 * MIB, 192 * MIB, 256 * MIB)]);
    }

    #[test]
    fn never_plans_past_the_durable_position() {
        let dir = tempfile::tempdir().unwrap();
        let segs = segments(dir.path(), 4, 128 * MIB);
        let mut w = CacheWindow::new(64 * MIB, 0);
        assert!(
            w.plan(500 * MIB, 60 * MIB, &segs).is_empty(),
            "nothing durable a step deep"
        );
        let plan = w.plan(500 * MIB, 200 * MIB, &segs);
        let got: Vec<_> = plan.iter().map(|(s, f, t)| (s.base, *f, *t)).collect();
        assert_eq!(
            got,
            vec![(0, 0, 128 * MIB), (128 * MIB, 128 * MIB, 192 * MIB)]
        );
    }

    fn body(i: u32) -> Vec<u8> {
        let mut b = vec![(i % 251) as u8; 64_000];
        b[..4].copy_from_slice(&i.to_le_bytes());
        b
    }

    fn put(store: &crate::store::Store, from: u32, n: u32) {
        for i in from..from + n {
            let body = body(i);
            store
                .append(&crate::store::Message {
                    topic: "t",
                    partition: 0,
                    flag: 0,
                    tag: b"",
                    props: b"",
                    body: &body,
                    born_ts_ms: 1,
                })
                .unwrap();
        }
    }

    /// Whether no page of the 4 KiB probes taken every MiB of `[from, to)` is resident.
    fn none_resident(seg: &Segment, from: u64, to: u64) -> bool {
        (from..to)
            .step_by(MIB as usize)
            .all(|p| !seg.resident(p, 4096))
    }

    #[test]
    fn a_store_drops_only_durable_pages_far_behind_the_writer_and_reads_them_back_intact() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::store::StoreConfig::new(dir.path());
        cfg.segment_bytes = 64 * MIB;
        cfg.cache_window_bytes = 64 * MIB;
        cfg.flush_interval_ms = 3_600_000; // no flush but the ones asked for below
        cfg.flush_dirty_bytes = u64::MAX;
        cfg.disk_free_reserve_bytes = 0;
        cfg.disk_used_ratio_max = 1.0;
        let store = crate::store::Store::open(cfg).unwrap();
        store.ensure_topic("t", 1).unwrap();
        // 3,000 x 64 KB: about 183 MiB, three segments, none of it durable.
        put(&store, 0, 3000);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let first = store.shared.log.segment_at(0).unwrap();
        assert_eq!(
            store.stats().cache_evicted_bytes,
            0,
            "nothing durable: nothing dropped"
        );
        assert!(first.resident(0, 64 * MIB), "dirty pages stay");

        // Durable now; the next plan (one per 64 MiB written) drops what is a window behind.
        let written = store.stats().write_pos;
        store.request_flush();
        assert!(store.wait_durable(written, std::time::Duration::from_secs(30)));
        put(&store, 3000, 2200); // to about 317 MiB: past the roll at 256 MiB
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while store.stats().cache_evicted_bytes < 128 * MIB {
            assert!(std::time::Instant::now() < deadline, "{:?}", store.stats());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let stats = store.stats();
        assert_eq!(stats.cache_evicted_bytes % EVICT_STEP_BYTES, 0);
        assert!(stats.cache_evicted_bytes <= written.min(stats.write_pos - 64 * MIB));
        assert!(none_resident(&first, 0, 64 * MIB), "segment 0 still cached");
        let second = store.shared.log.segment_at(64 * MIB).unwrap();
        assert!(
            none_resident(&second, 64 * MIB, 128 * MIB),
            "segment 1 still cached"
        );
        let last = store.shared.log.last_segment().unwrap();
        assert!(
            last.resident(stats.write_pos - MIB, MIB),
            "the writer's pages dropped"
        );

        // Every record reads back from the disk, CRC checked, in order.
        let mut offset = 0;
        let mut out = Vec::new();
        while offset < 5200 {
            out.clear();
            let got = store
                .read_into("t", 0, offset, 1 << 20, None, &mut out)
                .unwrap();
            assert!(got.records > 0, "stuck at {offset}");
            let mut at = 0;
            while at < out.len() {
                let len = crate::store::record::total_len(&out[at..]).unwrap();
                let rec = crate::store::record::decode(&out[at..at + len]).unwrap();
                assert_eq!((rec.offset, rec.body), (offset, &body(offset as u32)[..]));
                offset += 1;
                at += len;
            }
        }
        store.close().unwrap();
    }
}
