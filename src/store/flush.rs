//! The flush thread: group commit (one msync covers every append written before it started),
//! the async-mode interval and dirty-byte threshold, the periodic checkpoint, and the
//! maintenance tick (free space, retention). Appenders never block on the disk; they only
//! kick this thread.
//!
//! Each round: msync the dirty log range, fsync the commitlog directory if a segment was added
//! since the last round (so the new file's name is durable), and only then publish
//! `durable_pos`. After publishing, the durable mark ([`recovery::DurableMark`]) is persisted
//! once no kick came for [`MARK_IDLE`] (nobody is waiting), or at least every [`MARK_EVERY`]
//! under continuous load: one 28-byte `pwrite` + `fdatasync` of a preallocated file. Doing it
//! in every round would add a second device flush to each group commit (on the development
//! VM a small file's fdatasync costs about what the log's msync does, ~220-280 us), and
//! producers waiting on durability would get proportionally fewer rounds. (Syncing it "when
//! no kick is pending" right after a round is no better: waiting producers only kick after
//! they wake, so that is every round.) This way it costs one small fdatasync per 100 ms under
//! load, and idle time otherwise.

use super::{recovery, retention, FlushMode, Shared};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Listener = Box<dyn Fn(u64) + Send + Sync>;

/// Under continuous load the durable mark is persisted at least this often.
pub const MARK_EVERY: Duration = Duration::from_millis(100);
/// Otherwise it is persisted once the thread has had no kick for this long.
const MARK_IDLE: Duration = Duration::from_millis(5);

pub struct FlushCtl {
    state: Mutex<State>,
    /// Wakes the flush thread.
    wake: Condvar,
    /// Wakes threads waiting for durability.
    durable: Condvar,
    listeners: Mutex<Vec<Listener>>,
}

#[derive(Default)]
struct State {
    kicked: bool,
    stop: bool,
}

impl FlushCtl {
    pub fn new() -> FlushCtl {
        FlushCtl {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            durable: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
        }
    }

    pub fn kick(&self) {
        let mut s = self.state.lock().expect("flush lock");
        if !s.kicked {
            s.kicked = true;
            self.wake.notify_one();
        }
    }

    pub fn stop(&self) {
        let mut s = self.state.lock().expect("flush lock");
        s.stop = true;
        self.wake.notify_one();
    }

    pub fn listen(&self, f: Listener) {
        self.listeners.lock().expect("listeners lock").push(f);
    }

    pub fn wait_durable(&self, durable: &AtomicU64, pos: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().expect("flush lock");
        while durable.load(Ordering::Acquire) < pos {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .durable
                .wait_timeout(s, deadline - now)
                .expect("flush lock")
                .0;
        }
        true
    }

    fn kicked(&self) -> bool {
        self.state.lock().expect("flush lock").kicked
    }

    fn published(&self, pos: u64) {
        {
            let _s = self.state.lock().expect("flush lock");
            self.durable.notify_all();
        }
        for f in self.listeners.lock().expect("listeners lock").iter() {
            f(pos);
        }
    }
}

pub fn start(shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("imago-flush".into())
        .spawn(move || run(&shared))
        .expect("spawn flush thread")
}

fn run(sh: &Shared) {
    let interval = match sh.cfg.flush {
        FlushMode::Sync => Duration::from_millis(100),
        FlushMode::Async => Duration::from_millis(sh.cfg.flush_interval_ms.max(1)),
    };
    let checkpoint_every = Duration::from_millis(sh.cfg.checkpoint_interval_ms.max(1));
    let maintain_every = Duration::from_millis(sh.cfg.maintenance_interval_ms.max(1));
    let mut last_checkpoint = Instant::now();
    let mut last_maintenance = Instant::now();
    let mut last_records = sh.counters.appended_records.load(Ordering::Relaxed);
    let mut mark = match recovery::DurableMark::open(&sh.cfg.dir) {
        Ok(m) => Some(m),
        Err(e) => {
            log::error!("durable mark: {e}; recovery will only trust the checkpoint");
            None
        }
    };
    let mut last_mark = Instant::now();
    let mut last_flush = Instant::now();
    let mark_behind = |mark: &Option<recovery::DurableMark>| {
        mark.as_ref()
            .is_some_and(|m| m.pos != sh.log.durable_pos.load(Ordering::Acquire))
    };
    loop {
        let mut wait = interval.saturating_sub(last_flush.elapsed());
        if mark_behind(&mark) {
            wait = wait.min(MARK_IDLE);
        }
        let (kicked, stop) = {
            let mut s = sh.flush.state.lock().expect("flush lock");
            if !s.kicked && !s.stop && !wait.is_zero() {
                s = sh.flush.wake.wait_timeout(s, wait).expect("flush lock").0;
            }
            let kicked = s.kicked;
            s.kicked = false;
            (kicked, s.stop)
        };
        // The write position first: a sync-mode batch is counted before its position is
        // published, so `records` includes every record `target` covers (it may run a batch
        // ahead). Async mode publishes per record, and sync mode writes a stage over 1 MiB
        // before the batch ends, so there the count may lag by a batch.
        let target = sh.log.write_pos.load(Ordering::Acquire);
        let records = sh.counters.appended_records.load(Ordering::Acquire);
        let durable = sh.log.durable_pos.load(Ordering::Acquire);
        let due = kicked || stop || last_flush.elapsed() >= interval;
        if due {
            last_flush = Instant::now();
        }
        if due && target > durable {
            let began = Instant::now();
            let synced = sh
                .log
                .sync_range(durable, target)
                .and_then(|()| sh.log.sync_dir_if_changed());
            match synced {
                Ok(()) => {
                    let c = &sh.counters;
                    c.fsyncs.fetch_add(1, Ordering::Relaxed);
                    c.fsync_last_us
                        .store(began.elapsed().as_micros() as u64, Ordering::Relaxed);
                    c.records_per_fsync_last
                        .store(records - last_records, Ordering::Relaxed);
                    c.records_fsynced
                        .fetch_add(records - last_records, Ordering::Relaxed);
                    last_records = records;
                    sh.log.durable_pos.store(target, Ordering::Release);
                    sh.flush.published(target);
                }
                Err(e) => log::error!("commitlog flush failed, will retry: {e}"),
            }
        }
        if stop {
            // No mark at stop: `abandon` must leave the files as a kill would; a clean
            // shutdown's checkpoint covers everything anyway.
            return;
        }
        if let Some(m) = mark.as_mut() {
            let durable = sh.log.durable_pos.load(Ordering::Acquire);
            // Idle: a whole MARK_IDLE passed with no kick, so nobody waits on this thread.
            // `!=`: a mark left above the recovered log (files removed by hand) comes down.
            let idle = !kicked && !sh.flush.kicked();
            if durable != m.pos && (idle || last_mark.elapsed() >= MARK_EVERY) {
                last_mark = Instant::now();
                if let Err(e) = m.store(durable) {
                    log::error!("durable mark: {e}");
                }
            }
        }
        if last_maintenance.elapsed() >= maintain_every {
            last_maintenance = Instant::now();
            if let Err(e) = retention::run(sh) {
                log::error!("maintenance: {e}");
            }
        }
        if last_checkpoint.elapsed() >= checkpoint_every {
            last_checkpoint = Instant::now();
            if let Err(e) = recovery::write_checkpoint(sh, false) {
                log::error!("checkpoint: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{FlushMode, Message, Store, StoreConfig};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn msg(body: &[u8]) -> Message<'_> {
        Message {
            topic: "t",
            partition: 0,
            flag: 0,
            tag: b"",
            props: b"",
            body,
            born_ts_ms: 1,
        }
    }

    #[test]
    fn a_record_in_a_new_segment_is_durable_only_after_the_directory_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.segment_bytes = StoreConfig::SEGMENT_BYTES_MIN;
        cfg.flush = FlushMode::Sync;
        cfg.disk_free_reserve_bytes = 0;
        cfg.disk_used_ratio_max = 1.0;
        let store = Store::open(cfg).unwrap();
        store.ensure_topic("t", 1).unwrap();
        let syncs = || store.shared.log.dir_syncs.load(Ordering::Relaxed);
        let body = [7u8; 1000];
        let a = store.append(&msg(&body)).unwrap();
        assert!(store.wait_durable(a.end_pos, Duration::from_secs(5)));
        let before = syncs();
        for _ in 0..5 {
            let a = store.append(&msg(&body)).unwrap();
            assert!(store.wait_durable(a.end_pos, Duration::from_secs(5)));
        }
        assert_eq!(syncs(), before, "no segment added: no directory fsync");
        let first_end = store.shared.log.segments()[0].end();
        let rolled = loop {
            let a = store.append(&msg(&body)).unwrap();
            if a.end_pos > first_end {
                break a;
            }
        };
        assert!(store.wait_durable(rolled.end_pos, Duration::from_secs(5)));
        // Published after the directory fsync, so it is counted by the time the wait returns.
        assert_eq!(
            syncs(),
            before + 1,
            "one directory fsync for the new segment"
        );
        let a = store.append(&msg(&body)).unwrap();
        assert!(store.wait_durable(a.end_pos, Duration::from_secs(5)));
        assert_eq!(syncs(), before + 1, "only once per added segment");
    }
}
