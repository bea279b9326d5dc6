//! The event loop: one thread, one mio `Poll`, a slab of connections. Reads are drained until
//! they would block (edge-triggered), requests are framed and handed to the [`Broker`], and
//! replies are written at once; writable interest is registered only while a write would
//! block. Timers ride on the poll timeout. Backpressure: a connection whose unsent output
//! exceeds `output_bytes_max` is not read until it drains, and its input buffer is capped, so
//! a client that does not read its replies cannot grow the broker's memory; the same limit
//! defers answering its woken long-poll gets (see `park.rs`) until the output drains.
//!
//! Shutdown (SIGINT, SIGTERM): stop accepting and reading; answer parked gets; answer every
//! complete request already received but not handled with 503 `shutting down` (output limit
//! permitting, in order); close each connection once its output is sent.
//!
//! Fairness: a connection's turn is bounded (`TURN_ROUNDS_MAX`, `TURN_BYTES_MAX`); one
//! with work left is driven again once every connection with an event in the same poll has
//! had its turn, and after each poll from then on, so a client that pipelines as fast as it
//! reads cannot hold the loop. Cold reads: a get of the backlog (below the hot tail, see
//! `store::residency`) is read by the fetch thread (`fetch.rs`) and its connection waits, in
//! order; the loop never waits for the disk on a read, nor checks a backlog's CRCs.
//!
//! Sync flush mode: a put's reply is held (see `conn::Conn::hold_until`) until the store's
//! flush thread reports its group commit through a [`mio::Waker`]; the loop never blocks on
//! the disk.

mod conn;
mod fetch;
mod park;
mod signal;

use crate::broker::{Broker, Outcome};
use crate::protocol::{self, Code, Request, StatsWriter};
use crate::store::FlushMode;
use conn::{Conn, Fill, InState};
use fetch::FetchQueue;
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use park::{Parked, Parking};
use slab::Slab;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const FIRST_CONN: usize = 3;
/// How often timeouts are checked.
const TICK: Duration = Duration::from_millis(100);
/// How long a shutdown waits for pending replies to be sent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// File descriptors kept back from connections (store files, logs, the listener).
const FDS_RESERVED: u64 = 64;

/// What became of one request line.
enum Step {
    /// Handled: the outcome, the body bytes consumed with the line, bytes to skip after, and the
    /// group whose parked gets must be answered (after a rebalance).
    Handled(Outcome, usize, usize, Option<String>),
    /// A put whose body has not all arrived: bytes needed, its opaque.
    WaitBody(usize, Option<i32>),
    /// A get of the backlog: handed to the fetch thread (its ticket).
    Fetch(u64),
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    signals: OwnedFd,
    broker: Broker,
    conns: Slab<Conn>,
    connections_max: usize,
    /// Connections with replies held for durability.
    held: Vec<usize>,
    /// A put was held since the last flush request.
    flush_wanted: bool,
    parking: Parking,
    /// The durable position the parked gets last heard of (sync mode).
    last_durable: u64,
    /// Connections given replies outside their own events (woken long polls): driven at the
    /// end of the loop iteration.
    to_drive: Vec<usize>,
    /// Connections whose turn ended with work left (see [`TURN_ROUNDS_MAX`]): driven again
    /// after the next poll, which does not wait while any are here.
    unfinished: Vec<usize>,
    /// Reads that would wait for the disk go here (see `fetch.rs`).
    fetch: FetchQueue,
    stopping: bool,
}

/// A connection's turn: the rounds of read-process-write, and the bytes moved, after which
/// [`Server::drive`] leaves it for the other connections and comes back once those with an
/// event in the same poll have had theirs.
/// Without a bound a client that pipelines as fast as replies come back (a consumer draining
/// a backlog) keeps one `drive` going for as long as it reads, and every other connection,
/// producers included, waits that long. A turn also ends once it wrote `TURN_BYTES_MAX` of
/// replies in one go: on loopback a write runs the receiver's TCP path too (about 0.3 ms per
/// MiB here), and a 1 MiB get reply written at once kept every other connection waiting.
const TURN_ROUNDS_MAX: usize = 4;
const TURN_BYTES_MAX: usize = 256 << 10;

/// Most puts handled in one store batch (see `Server::put_run`).
const PUT_RUN_MAX: usize = 64;

impl Server {
    /// Binds the listener and prepares the loop; the bound address is returned.
    pub fn bind(broker: Broker) -> io::Result<(Server, SocketAddr)> {
        let cfg = broker.config();
        let addr: SocketAddr = cfg.listen.parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--listen {}: {e}", cfg.listen),
            )
        })?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let signals = signal::install()?;
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let fetch = FetchQueue::start(
            broker.store().fetcher(),
            waker.clone(),
            broker.config().get_bytes_max,
        )?;
        broker.store().on_durable(Box::new(move |_| {
            let _ = waker.wake();
        }));
        let open_files = signal::raise_open_files();
        let connections_max = cfg
            .connections_max
            .min(open_files.saturating_sub(FDS_RESERVED).max(1) as usize);
        log::info!(
            "open-file limit {open_files}: can hold {connections_max} connections (connections_max {})",
            cfg.connections_max
        );
        let bound = listener.local_addr()?;
        let sync = cfg.flush == FlushMode::Sync;
        let mut broker = broker;
        broker.connections_max = connections_max;
        let server = Server {
            poll,
            listener: Some(listener),
            signals,
            broker,
            conns: Slab::new(),
            connections_max,
            held: Vec::new(),
            flush_wanted: false,
            parking: Parking::new(sync),
            last_durable: 0,
            to_drive: Vec::new(),
            unfinished: Vec::new(),
            fetch,
            stopping: false,
        };
        Ok((server, bound))
    }

    /// Runs until SIGINT or SIGTERM, then answers what is in flight, flushes, checkpoints.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_tick = Instant::now();
        let mut stop_deadline = None;
        loop {
            let timeout = if self.unfinished.is_empty() {
                self.parking.next_deadline().map_or(TICK, |d| {
                    d.saturating_duration_since(Instant::now()).min(TICK)
                })
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {
                        self.release_held();
                        self.resume_fetched();
                    }
                    SIGNALS => self.begin_stop(),
                    Token(t) => {
                        let id = t - FIRST_CONN;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(id);
                        }
                        if event.is_writable() {
                            self.on_writable(id);
                        }
                    }
                }
            }
            for id in std::mem::take(&mut self.unfinished) {
                self.drive(id);
            }
            if self.flush_wanted {
                self.flush_wanted = false;
                self.broker.store().request_flush();
            }
            self.service_parked();
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.expire_partial_commands(last_tick);
                for group in self.broker.expire_members() {
                    let parked = self.parking.take_group(&group);
                    self.answer_parked(parked, false);
                }
            }
            let mut to_drive = std::mem::take(&mut self.to_drive);
            to_drive.sort_unstable();
            to_drive.dedup();
            for id in to_drive {
                self.drive(id);
            }
            if self.stopping {
                let deadline =
                    *stop_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
                // A connection whose turn ended may have sent everything so far and still
                // have requests to answer (503): it is in `unfinished`.
                let pending =
                    !self.unfinished.is_empty() || self.conns.iter().any(|(_, c)| c.unsent() > 0);
                if !pending || Instant::now() >= deadline {
                    break;
                }
                self.broker.store().request_flush();
            }
        }
        log::info!("stopping: {} connections closed", self.conns.len());
        self.conns.clear();
        self.broker
            .close()
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn begin_stop(&mut self) {
        let mut buf = [0u8; 16];
        // SAFETY: reading into a valid local buffer from our own non-blocking pipe.
        while unsafe { libc::read(self.signals.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
            > 0
        {}
        if self.stopping {
            return;
        }
        log::info!(
            "signal received: stop accepting, answer what is in flight (503 to requests received \
             but not handled), flush"
        );
        self.stopping = true;
        let parked = self.parking.take_all();
        self.answer_parked(parked, false);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let ids: Vec<usize> = self.conns.iter().map(|(id, _)| id).collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(id) {
                c.shutdown = !c.closing;
                c.closing = true;
            }
            self.drive(id);
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let (mut sock, addr) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            };
            if self.conns.len() >= self.connections_max {
                self.broker.counters.rejected_connections += 1;
                let mut reply = Vec::new();
                protocol::write_result(
                    &mut reply,
                    Code::Unavailable,
                    b"too many connections",
                    protocol::OPAQUE_NONE,
                );
                let _ = io::Write::write(&mut sock, &reply);
                continue;
            }
            let _ = sock.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let token = Token(entry.key() + FIRST_CONN);
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut sock, token, Interest::READABLE)
            {
                log::warn!("register {addr}: {e}");
                continue;
            }
            entry.insert(Conn::new(sock, addr));
            self.broker.counters.total_connections += 1;
            self.broker.curr_connections = self.conns.len();
        }
    }

    fn input_cap(&self) -> usize {
        let l = &self.broker.config().limits;
        l.line_bytes_max + l.body_bytes_max
    }

    /// A readable event (input, the peer's close, an error): the socket may have input again.
    fn on_readable(&mut self, id: usize) {
        if let Some(c) = self.conns.get_mut(id) {
            c.maybe_readable = true;
        }
        self.drive(id);
    }

    fn on_writable(&mut self, id: usize) {
        self.drive(id);
    }

    /// Reads, processes and writes until nothing moves: the socket has no more input for now,
    /// the output is full (backpressure) or blocked, or the connection closed. Every event of
    /// a connection ends here, so input buffered while its output was full is processed as
    /// soon as the output drains, whichever event drained it. A turn is bounded (see
    /// [`TURN_ROUNDS_MAX`]): a connection with work left at its end is noted in `unfinished`.
    fn drive(&mut self, id: usize) {
        let cap = self.input_cap();
        let output_max = self.broker.config().output_bytes_max;
        let short_drains = self.broker.config().flush == crate::store::FlushMode::Sync;
        let (mut rounds, mut turn_bytes) = (0, 0);
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            let mut moved = 0;
            let mut received = false;
            let mut eof = false;
            if conn.unsent() < output_max && self.parking.has_deferred(id) {
                self.answer_deferred(id);
                moved += 1;
            }
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            if !conn.closing && conn.unsent() < output_max {
                match conn.fill(cap, short_drains) {
                    Ok((n, how)) => {
                        self.broker.counters.bytes_read += n as u64;
                        moved += n;
                        received = n > 0;
                        eof = how == Fill::Eof;
                    }
                    Err(_) => return self.close(id),
                }
            }
            let before = self.conns[id].input().len();
            let turn_over = self.process(id);
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            moved += before - conn.input().len();
            conn.settle(Instant::now(), received);
            if eof {
                conn.closing = true;
            }
            let (written, capped) = self.write_out(id);
            moved += written;
            if capped {
                return; // noted in `unfinished` by write_out
            }
            if moved == 0 {
                return;
            }
            rounds += 1;
            turn_bytes += moved;
            if turn_over || rounds >= TURN_ROUNDS_MAX || turn_bytes >= TURN_BYTES_MAX {
                self.unfinished.push(id); // a duplicate only drives it twice
                return;
            }
        }
    }

    /// Frames and handles every complete request in the connection's input.
    fn process(&mut self, id: usize) -> bool {
        let limits = self.broker.config().limits;
        let output_max = self.broker.config().output_bytes_max;
        let parked_max = self.broker.config().parked_per_connection_max;
        let sync = self.broker.config().flush == crate::store::FlushMode::Sync;
        // Replies made this call: those already sent early (put acks) plus those from
        // `out_start` on.
        let mut out_start = self.conns.get(id).map_or(0, |c| c.out.len());
        let mut replied = 0;
        let mut turn_over = false;
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                return false;
            };
            if conn.unsent() >= output_max {
                conn.input_left = true;
                break;
            }
            if replied + conn.out.len().saturating_sub(out_start) >= TURN_BYTES_MAX {
                turn_over = true; // a turn's worth of replies (large gets): others go first
                break;
            }
            conn.input_left = false;
            if conn.closing && !conn.shutdown {
                break;
            }
            if conn.fetching.is_some() && !conn.shutdown {
                break; // the get at the head waits for its fetch
            }
            let avail = conn.input().len();
            match conn.state {
                InState::SkipBody(left) => {
                    let k = left.min(avail);
                    conn.consume(k);
                    conn.state = if k == left {
                        InState::Lines
                    } else {
                        InState::SkipBody(left - k)
                    };
                    if k < left {
                        break;
                    }
                    continue;
                }
                InState::DiscardLine => match conn.input().iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        conn.consume(i + 1);
                        conn.state = InState::Lines;
                        continue;
                    }
                    None => {
                        conn.consume(avail);
                        break;
                    }
                },
                InState::Lines => {}
            }
            if avail == 0 || avail < conn.need {
                break;
            }
            if !conn.shutdown && self.put_run(id, &limits, sync) {
                if !sync {
                    // Send this run's acks now: the client can put more while the rest of
                    // its input is handled (a pipelined producer is bound by the round trip).
                    // Sending may shrink the output buffer, so count what was made first.
                    replied += self.conns[id].out.len().saturating_sub(out_start);
                    self.write_out(id);
                    out_start = self.conns.get(id).map_or(0, |c| c.out.len());
                }
                continue;
            }
            let Some(conn) = self.conns.get_mut(id) else {
                return false;
            };
            let Some((line_len, line_bytes)) = protocol::find_line(conn.input()) else {
                if avail >= limits.line_bytes_max {
                    self.broker
                        .reject(&protocol::line_too_long(&limits), &mut conn.out);
                    conn.consume(avail);
                    conn.state = InState::DiscardLine;
                    continue;
                }
                break;
            };
            if line_bytes > limits.line_bytes_max {
                self.broker
                    .reject(&protocol::line_too_long(&limits), &mut conn.out);
                conn.consume(line_bytes);
                continue;
            }
            if line_len == 0 {
                conn.consume(line_bytes); // empty lines are ignored (a stray \r\n after a body)
                continue;
            }
            let shutdown = conn.shutdown;
            let fetched = conn.fetched.take();
            let (input, out) = conn.split();
            let reply_start = out.len();
            let step = match protocol::parse_line(&input[..line_len], &limits) {
                Err(e) => {
                    self.broker.reject(&e, out);
                    Step::Handled(Outcome::Done, 0, e.body_to_skip.unwrap_or(0), None)
                }
                Ok(req) => {
                    let (body_bytes, skip, opaque) = match &req {
                        Request::Put(p) => (p.body_bytes, 0, Some(p.opaque)),
                        Request::Sync { body_bytes, .. } => (0, *body_bytes, None),
                        _ => (0, 0, None),
                    };
                    if input.len() < line_bytes + body_bytes {
                        Step::WaitBody(line_bytes + body_bytes, opaque)
                    } else if shutdown {
                        // Received complete but not handled when the shutdown began.
                        let outcome = match req {
                            Request::Quit => Outcome::Close,
                            _ => {
                                let opaque = request_opaque(&req);
                                protocol::write_result(
                                    out,
                                    Code::Unavailable,
                                    SHUTTING_DOWN,
                                    opaque,
                                );
                                Outcome::Done
                            }
                        };
                        Step::Handled(outcome, body_bytes, skip, None)
                    } else if let Some(ticket) = match &req {
                        // A get of the backlog (not the one just fetched).
                        Request::Get(g) if fetched.is_none() => self
                            .broker
                            .get_is_cold(g)
                            .map(|max_bytes| self.fetch.submit(id, g, max_bytes)),
                        _ => None,
                    } {
                        Step::Fetch(ticket)
                    } else {
                        let body = &input[line_bytes..line_bytes + body_bytes];
                        let durable = self.broker.store().durable_pos();
                        if matches!(req, Request::Stats { .. }) {
                            self.broker.parked_gets = self.parking.total();
                            self.broker.parked_wakeups = self.parking.wakeups();
                        }
                        let outcome = match (&req, fetched) {
                            (Request::Get(g), Some(done)) => {
                                let o = self.broker.answer_get(g, done.result, &done.records, out);
                                self.fetch.recycle(done.records);
                                o
                            }
                            _ => self.broker.handle(&req, body, out),
                        };
                        let mut woken_group = None;
                        let outcome = match (&req, outcome) {
                            (
                                Request::Put(p),
                                Outcome::Stored {
                                    partition,
                                    end_pos,
                                    tag_hash,
                                },
                            ) => {
                                self.parking
                                    .note_stored(p.topic, partition, end_pos, tag_hash);
                                outcome
                            }
                            (Request::Get(g), Outcome::Park(park)) => {
                                if self.parking.count(id) >= parked_max {
                                    self.broker.answer_empty(g, park.offset, park.skipped, out);
                                } else {
                                    let deadline = Instant::now() + park.wait;
                                    self.parking.park(
                                        Parked::new(g, id, park.offset, park.skipped, deadline),
                                        durable,
                                    );
                                }
                                Outcome::Done
                            }
                            (req, Outcome::Rebalanced) => {
                                woken_group = request_group(req).map(str::to_owned);
                                Outcome::Done
                            }
                            _ => outcome,
                        };
                        Step::Handled(outcome, body_bytes, skip, woken_group)
                    }
                }
            };
            let (outcome, body_bytes, skip, woken_group) = match step {
                Step::Handled(outcome, body_bytes, skip, group) => {
                    (outcome, body_bytes, skip, group)
                }
                Step::WaitBody(need, opaque) => {
                    conn.need = need;
                    conn.need_opaque = opaque;
                    break;
                }
                Step::Fetch(ticket) => {
                    conn.fetching = Some(ticket);
                    break;
                }
            };
            conn.need = 0;
            conn.need_opaque = None;
            conn.consume(line_bytes + body_bytes);
            if skip > 0 {
                conn.state = InState::SkipBody(skip);
            }
            match outcome {
                Outcome::Stored { end_pos, .. } if sync => {
                    if !conn.has_gates() {
                        self.held.push(id);
                    }
                    conn.hold_until(reply_start, end_pos);
                    self.flush_wanted = true;
                }
                Outcome::Close => {
                    conn.closing = true;
                    conn.shutdown = false;
                    break;
                }
                Outcome::StatsConns(opaque) => self.write_conns_stats(id, opaque),
                _ => {}
            }
            if let Some(group) = woken_group {
                let parked = self.parking.take_group(&group);
                self.answer_parked(parked, false);
            }
        }
        self.sync_parking_stats();
        turn_over
    }

    /// Handles the run of complete puts at the start of the connection's input: one store
    /// batch for two or more (a pipelining producer's usual read), the one-put path for one
    /// (parsed once either way). Stops at the first line that is not a complete, well-formed
    /// put: the one-request path answers it. True when it handled at least one put.
    fn put_run(&mut self, id: usize, limits: &crate::protocol::Limits, sync: bool) -> bool {
        let Some(conn) = self.conns.get_mut(id) else {
            return false;
        };
        let (input, out) = conn.split();
        let mut puts = Vec::new();
        let mut used = 0;
        while puts.len() < PUT_RUN_MAX {
            let rest = &input[used..];
            let Some((line_len, line_bytes)) = protocol::find_line(rest) else {
                break;
            };
            if line_len == 0 || line_bytes > limits.line_bytes_max {
                break;
            }
            let Ok(Request::Put(p)) = protocol::parse_line(&rest[..line_len], limits) else {
                break;
            };
            if rest.len() < line_bytes + p.body_bytes {
                break;
            }
            let body = &rest[line_bytes..line_bytes + p.body_bytes];
            used += line_bytes + p.body_bytes;
            puts.push((p, body));
        }
        let mut outcomes = Vec::with_capacity(puts.len());
        match puts[..] {
            [] => return false,
            [(ref p, body)] => {
                let start = out.len();
                outcomes.push((start, self.broker.put_one(p, body, out)));
            }
            _ => self.broker.put_batch(&puts, out, &mut outcomes),
        }
        let mut holds = Vec::new();
        for ((p, _), (reply_start, outcome)) in puts.iter().zip(outcomes) {
            let Outcome::Stored {
                partition,
                end_pos,
                tag_hash,
            } = outcome
            else {
                continue;
            };
            self.parking
                .note_stored(p.topic, partition, end_pos, tag_hash);
            if sync {
                holds.push((reply_start, end_pos));
            }
        }
        drop(puts);
        if !holds.is_empty() {
            if !conn.has_gates() {
                self.held.push(id);
            }
            for (reply_start, end_pos) in holds {
                conn.hold_until(reply_start, end_pos);
            }
            self.flush_wanted = true;
        }
        conn.need = 0;
        conn.need_opaque = None;
        conn.consume(used);
        true
    }

    /// Copies the parking gauges into the broker's stats.
    fn sync_parking_stats(&mut self) {
        self.broker.parked_gets = self.parking.total();
        self.broker.parked_wakeups = self.parking.wakeups();
    }

    /// Runs parked gets again and answers them: with records if any arrived, else (when
    /// `keep` is false, or their wait is over) with the empty reply. Those still waiting
    /// when `keep` is true are parked again. A get whose connection's output is over
    /// `output_bytes_max` (or that has gets deferred already, to keep their order) is deferred
    /// until that output drains.
    fn answer_parked(&mut self, parked: Vec<Parked>, keep: bool) {
        let output_max = self.broker.config().output_bytes_max;
        let mut touched = Vec::new();
        for p in parked {
            let Some(conn) = self.conns.get(p.conn) else {
                continue;
            };
            if conn.unsent() >= output_max || self.parking.has_deferred(p.conn) {
                self.parking.defer(p, keep);
                continue;
            }
            touched.push(p.conn);
            self.answer_one(p, keep);
        }
        self.to_drive.extend(touched);
        self.sync_parking_stats();
    }

    /// Runs one due get again: answers it, or parks it again when `keep`, its wait is not over
    /// and it still finds nothing.
    fn answer_one(&mut self, mut p: Parked, keep: bool) {
        let durable = self.broker.store().durable_pos();
        let Some(conn) = self.conns.get_mut(p.conn) else {
            return;
        };
        match self.broker.get(&p.retry(), &mut conn.out) {
            Outcome::Park(park) if keep && !self.stopping && p.deadline > Instant::now() => {
                p.offset = park.offset;
                p.skipped |= park.skipped;
                self.parking.park(p, durable);
            }
            Outcome::Park(park) => {
                let skipped = p.skipped || park.skipped;
                self.broker
                    .answer_empty(&p.asked(), park.offset, skipped, &mut conn.out);
            }
            _ => {}
        }
    }

    /// Answers a connection's deferred gets, oldest first, while its output is under
    /// `output_bytes_max`.
    fn answer_deferred(&mut self, id: usize) {
        let output_max = self.broker.config().output_bytes_max;
        while self.conns.get(id).is_some_and(|c| c.unsent() < output_max) {
            let Some((p, keep)) = self.parking.pop_deferred(id) else {
                break;
            };
            self.answer_one(p, keep);
        }
        self.sync_parking_stats();
    }

    /// Answers parked gets whose partitions got visible messages, whose wait is over, or whose
    /// group rebalanced because members expired.
    fn service_parked(&mut self) {
        let visible = match self.broker.config().flush {
            FlushMode::Sync => {
                let durable = self.broker.store().durable_pos();
                if durable != self.last_durable {
                    self.last_durable = durable;
                    self.parking.note_durable(durable);
                }
                durable
            }
            FlushMode::Async => u64::MAX,
        };
        if self.parking.has_stored() {
            let woken = self.parking.take_woken(visible);
            self.answer_parked(woken, true);
        }
        let expired = self.parking.take_expired(Instant::now());
        if !expired.is_empty() {
            self.answer_parked(expired, false);
        }
    }

    fn write_conns_stats(&mut self, id: usize, opaque: Option<i32>) {
        let mut w = StatsWriter::new();
        for (cid, c) in self.conns.iter() {
            w.stat(&format!("{cid}:addr"), c.addr);
            w.stat(&format!("{cid}:state"), c.state_name());
            w.stat(&format!("{cid}:output_bytes"), c.unsent());
        }
        if let Some(conn) = self.conns.get_mut(id) {
            w.finish(&mut conn.out, opaque);
        }
    }

    /// Sends what may be sent, up to [`TURN_BYTES_MAX`]; closes the connection when it is
    /// done and closing. Returns the bytes written and whether the cap left sendable bytes
    /// (then the connection is noted in `unfinished` and its turn is over).
    fn write_out(&mut self, id: usize) -> (usize, bool) {
        let durable = self.broker.store().durable_pos();
        let Some(conn) = self.conns.get_mut(id) else {
            return (0, false);
        };
        let f = match conn.flush(durable, TURN_BYTES_MAX) {
            Ok(f) => f,
            Err(_) => {
                self.close(id);
                return (0, false);
            }
        };
        let (n, blocked) = (f.bytes, f.blocked);
        if f.capped {
            self.unfinished.push(id);
        }
        self.broker.counters.bytes_written += n as u64;
        if blocked != conn.writable_interest {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(id + FIRST_CONN);
            if self
                .poll
                .registry()
                .reregister(&mut conn.sock, token, interest)
                .is_err()
            {
                self.close(id);
                return (n, false);
            }
            conn.writable_interest = blocked;
        }
        let input_left = conn.shutdown && conn.input_left;
        if conn.closing && conn.unsent() == 0 && !input_left && !self.parking.has_deferred(id) {
            self.close(id);
        }
        (n, f.capped)
    }

    /// The store reported a group commit: send the replies it made durable.
    fn release_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        for id in held {
            self.drive(id);
            if self.conns.get(id).is_some_and(|c| c.has_gates()) {
                self.held.push(id);
            }
        }
    }

    /// The fetch thread finished reads: answer each waiting get from its read.
    fn resume_fetched(&mut self) {
        for f in self.fetch.take_done() {
            let Some(conn) = self.conns.get_mut(f.conn) else {
                self.fetch.recycle(f.read.records);
                continue; // closed meanwhile (a later connection may have its slot)
            };
            if conn.fetching != Some(f.ticket) {
                self.fetch.recycle(f.read.records);
                continue;
            }
            conn.fetching = None;
            conn.fetched = Some(f.read);
            self.drive(f.conn);
        }
    }

    fn expire_partial_commands(&mut self, now: Instant) {
        let timeout = Duration::from_millis(self.broker.config().half_command_timeout_ms);
        let output_max = self.broker.config().output_bytes_max;
        // A connection paused by backpressure is waiting for us, not for its client.
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing && c.unsent() < output_max && c.fetching.is_none())
            .filter(|(_, c)| {
                c.partial_since
                    .is_some_and(|t| now.duration_since(t) >= timeout)
            })
            .map(|(id, _)| id)
            .collect();
        for id in expired {
            let conn = &mut self.conns[id];
            let text = format!(
                "command not completed within half_command_timeout_ms {}",
                timeout.as_millis()
            );
            let opaque = conn.need_opaque.unwrap_or(protocol::OPAQUE_NONE);
            protocol::write_result(&mut conn.out, Code::RequestTimeout, text.as_bytes(), opaque);
            conn.closing = true;
            self.write_out(id);
        }
    }

    fn close(&mut self, id: usize) {
        if let Some(mut conn) = self.conns.try_remove(id) {
            if self.stopping {
                conn.discard_input();
            }
            let _ = self.poll.registry().deregister(&mut conn.sock);
        }
        self.parking.take_conn(id);
        self.sync_parking_stats();
        self.held.retain(|&h| h != id);
        self.broker.curr_connections = self.conns.len();
    }
}

/// The body of the 503 answering a request received but not handled before a shutdown.
const SHUTTING_DOWN: &[u8] = b"shutting down";

/// The opaque a request's reply carries.
fn request_opaque(req: &Request<'_>) -> i32 {
    match req {
        Request::Put(p) => p.opaque,
        Request::Get(g) => g.opaque,
        Request::Offset(o) => o.opaque,
        Request::Stats { opaque, .. } | Request::Version { opaque } => {
            opaque.unwrap_or(protocol::OPAQUE_NONE)
        }
        Request::Quit => protocol::OPAQUE_NONE,
        Request::Transaction { opaque } | Request::Sync { opaque, .. } => *opaque,
        Request::Commit(c) => c.opaque,
        Request::Fetch(f) => f.opaque,
        Request::Join(j) => j.opaque,
        Request::Heartbeat(m) | Request::Leave(m) => m.opaque,
        Request::Reset(r) => r.opaque,
    }
}

/// The group a request names, for waking its parked gets after a rebalance.
fn request_group<'a>(req: &Request<'a>) -> Option<&'a str> {
    match req {
        Request::Join(j) => Some(j.group),
        Request::Leave(m) | Request::Heartbeat(m) => Some(m.group),
        Request::Reset(r) => Some(r.group),
        _ => None,
    }
}
