//! The fetch thread: it reads cold gets, those of the backlog (see `store::residency`), so
//! that the event loop never waits for the disk and spends no CPU on a backlog's CRCs. The
//! loop hands such a read to this thread and stops processing that connection's input, so its
//! replies stay in request order. Every other connection goes on. The thread brings the
//! pages in, runs the read itself (CRC checks, tag filter) into a buffer, and reports it
//! through the loop's waker; the loop then only copies the records into the reply.
//!
//! A connection has at most one fetch at a time, so the queue holds at most one job per
//! connection (`connections_max`), and at most one finished read per connection waits for the
//! loop: it is taken at the next wake-up and moved into the connection's output, which the
//! loop let the get through only when it was under `output_bytes_max`.

use crate::protocol::Get;
use crate::store::{Fetcher, ReadOutcome, ReadSpec, StoreError, TagFilter};
use mio::Waker;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

struct Job {
    conn: usize,
    ticket: u64,
    topic: String,
    partition: u32,
    offset: u64,
    max_bytes: usize,
    filter: Option<TagFilter>,
}

impl Job {
    /// Reads the job's get into a spare buffer (or a new one).
    fn run(self, fetcher: &Fetcher, spare: &Mutex<Vec<Vec<u8>>>) -> Fetched {
        let mut records = spare
            .lock()
            .expect("fetch buffers lock")
            .pop()
            .unwrap_or_default();
        records.clear();
        let spec = ReadSpec {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            max_bytes: self.max_bytes,
            filter: self.filter.as_ref(),
        };
        let result = fetcher.read(&spec, &mut records);
        Fetched {
            conn: self.conn,
            ticket: self.ticket,
            read: ReadDone { result, records },
        }
    }
}

/// A get the fetch thread read: what the read returned and the records it appended.
pub struct ReadDone {
    pub result: Result<ReadOutcome, StoreError>,
    pub records: Vec<u8>,
}

/// A finished fetch, for the connection that waits for it.
pub struct Fetched {
    pub conn: usize,
    pub ticket: u64,
    pub read: ReadDone,
}

/// Record buffers kept for reuse (a fresh 1 MiB buffer costs 256 page faults to fill).
const SPARE_BUFFERS_MAX: usize = 2;

pub struct FetchQueue {
    tx: Option<mpsc::Sender<Job>>,
    /// Finished fetches, for the loop to take.
    done: Arc<Mutex<Vec<Fetched>>>,
    /// Emptied record buffers, for the thread to fill again.
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
    /// A buffer larger than this is dropped rather than kept.
    buffer_bytes_max: usize,
    thread: Option<JoinHandle<()>>,
    /// Reads a job in the loop should the thread be gone (it cannot panic short of a bug).
    fetcher: Fetcher,
    waker: Arc<Waker>,
    next_ticket: u64,
}

impl FetchQueue {
    /// Starts the thread; `get_bytes_max` is the largest byte budget a get may ask for.
    pub fn start(
        fetcher: Fetcher,
        waker: Arc<Waker>,
        get_bytes_max: usize,
    ) -> std::io::Result<FetchQueue> {
        let (tx, rx) = mpsc::channel::<Job>();
        let done = Arc::new(Mutex::new(Vec::new()));
        let spare: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
        let (finished, buffers) = (done.clone(), spare.clone());
        let (inline, wake) = (fetcher.clone(), waker.clone());
        let thread = std::thread::Builder::new()
            .name("imago-fetch".into())
            .spawn(move || {
                lower_priority();
                for job in rx {
                    let f = job.run(&fetcher, &buffers);
                    finished.lock().expect("fetch results lock").push(f);
                    let _ = wake.wake();
                }
            })?;
        Ok(FetchQueue {
            tx: Some(tx),
            done,
            spare,
            buffer_bytes_max: 4 * get_bytes_max,
            thread: Some(thread),
            fetcher: inline,
            waker,
            next_ticket: 1,
        })
    }

    /// Queues the read of `g` (its byte budget clamped to `max_bytes`) for connection `conn`;
    /// returns the ticket its completion will carry.
    pub fn submit(&mut self, conn: usize, g: &Get<'_>, max_bytes: usize) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let job = Job {
            conn,
            ticket,
            topic: g.topic.to_owned(),
            partition: g.partition,
            offset: g.offset,
            max_bytes,
            filter: g.tags.as_ref().map(|t| TagFilter::new(t)),
        };
        let unsent = match &self.tx {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = unsent {
            // The thread is gone: read here (only this read waits for the disk), and report
            // it done as the thread would.
            let f = job.run(&self.fetcher, &self.spare);
            self.done.lock().expect("fetch results lock").push(f);
            let _ = self.waker.wake();
        }
        ticket
    }

    /// The fetches finished since the last call.
    pub fn take_done(&self) -> Vec<Fetched> {
        std::mem::take(&mut *self.done.lock().expect("fetch results lock"))
    }

    /// Gives a read's emptied buffer back for the thread to fill again.
    pub fn recycle(&self, records: Vec<u8>) {
        if records.capacity() > self.buffer_bytes_max {
            return;
        }
        let mut spare = self.spare.lock().expect("fetch buffers lock");
        if spare.len() < SPARE_BUFFERS_MAX {
            spare.push(records);
        }
    }
}

/// Nice value of the fetch thread: its CPU (page-cache fills, readahead) yields to the event
/// loop's, so a consumer reading a cold backlog slows itself before it slows the producers.
const FETCH_NICE: i32 = 10;

fn lower_priority() {
    // SAFETY: plain syscalls; gettid names this thread, and a thread may lower its own
    // priority without privilege. Failure leaves the default priority (logged).
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, FETCH_NICE)
    };
    if rc != 0 {
        log::debug!("fetch thread nice: {}", std::io::Error::last_os_error());
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
