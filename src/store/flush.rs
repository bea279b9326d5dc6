//! The flush thread: group commit (one msync covers every append written before it started),
//! the async-mode interval and dirty-byte threshold, the periodic checkpoint, and the
//! maintenance tick (free space, retention). Appenders never block on the disk; they only
//! kick this thread.

use super::{recovery, retention, FlushMode, Shared};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Listener = Box<dyn Fn(u64) + Send + Sync>;

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
    loop {
        let stop = {
            let mut s = sh.flush.state.lock().expect("flush lock");
            if !s.kicked && !s.stop {
                s = sh
                    .flush
                    .wake
                    .wait_timeout(s, interval)
                    .expect("flush lock")
                    .0;
            }
            s.kicked = false;
            s.stop
        };
        let records = sh.counters.appended_records.load(Ordering::Acquire);
        let target = sh.log.write_pos.load(Ordering::Acquire);
        let durable = sh.log.durable_pos.load(Ordering::Acquire);
        if target > durable {
            let began = Instant::now();
            match sh.log.sync_range(durable, target) {
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
            return;
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
