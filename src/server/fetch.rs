//! The fetch thread: it brings a cold read's pages in from the disk (see
//! `store::residency`) so that the event loop never waits for the disk. When a get would read
//! pages that are not in the page cache, the loop hands the read to this thread and stops
//! processing that connection's input, so its replies stay in request order. Every other
//! connection goes on. The thread reports each finished fetch through the loop's waker, and
//! the loop then runs the get from memory.
//!
//! A connection has at most one fetch at a time, so the queue holds at most one job per
//! connection (`connections_max`).

use crate::protocol::Get;
use crate::store::{Fetcher, TagFilter};
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

pub struct FetchQueue {
    tx: Option<mpsc::Sender<Job>>,
    /// `(connection, ticket)` of finished fetches, for the loop to take.
    done: Arc<Mutex<Vec<(usize, u64)>>>,
    thread: Option<JoinHandle<()>>,
    waker: Arc<Waker>,
    next_ticket: u64,
}

impl FetchQueue {
    pub fn start(fetcher: Fetcher, waker: Arc<Waker>) -> std::io::Result<FetchQueue> {
        let (tx, rx) = mpsc::channel::<Job>();
        let done = Arc::new(Mutex::new(Vec::new()));
        let finished = done.clone();
        let wake = waker.clone();
        let thread = std::thread::Builder::new()
            .name("imago-fetch".into())
            .spawn(move || {
                lower_priority();
                for job in rx {
                    fetcher.fetch(
                        &job.topic,
                        job.partition,
                        job.offset,
                        job.max_bytes,
                        job.filter.as_ref(),
                    );
                    finished
                        .lock()
                        .expect("fetch results lock")
                        .push((job.conn, job.ticket));
                    let _ = wake.wake();
                }
            })?;
        Ok(FetchQueue {
            tx: Some(tx),
            done,
            thread: Some(thread),
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
        if let Some(tx) = &self.tx {
            if tx.send(job).is_err() {
                // The thread is gone (it cannot panic short of a bug): report the fetch done,
                // so the get runs in the loop and only that read waits for the disk.
                self.done
                    .lock()
                    .expect("fetch results lock")
                    .push((conn, ticket));
                let _ = self.waker.wake();
            }
        }
        ticket
    }

    /// The fetches finished since the last call.
    pub fn take_done(&self) -> Vec<(usize, u64)> {
        std::mem::take(&mut *self.done.lock().expect("fetch results lock"))
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
