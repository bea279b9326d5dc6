//! One client connection: its reusable input and output buffers, the input framing state
//! (lines, bodies to read, bodies or overlong lines to discard), and output held back until
//! durable (sync mode). No broker logic here; [`super::Server`] drives it.

use super::fetch::ReadDone;
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// Input bytes read per `read` call at most.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The input buffer grows (by up to `READ_CHUNK_BYTES`) only when less room than this is left.
const READ_ROOM_MIN_BYTES: usize = 16 * 1024;
/// Idle buffers larger than this are given back to the allocator.
const IDLE_BUFFER_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InState {
    /// Expecting a header line.
    Lines,
    /// Discarding this many more body bytes (oversized or rejected put).
    SkipBody(usize),
    /// Discarding the rest of an overlong line up to its `\n`.
    DiscardLine,
}

/// What one [`Conn::flush`] did.
pub struct Flushed {
    pub bytes: usize,
    /// The socket would block with sendable bytes left.
    pub blocked: bool,
    /// `bytes_max` was reached with sendable bytes left.
    pub capped: bool,
}

pub struct Conn {
    pub sock: TcpStream,
    pub addr: SocketAddr,
    /// Bytes `[start, filled)` are unprocessed input; `inbuf.len()` is the zeroed capacity.
    inbuf: Vec<u8>,
    start: usize,
    filled: usize,
    pub state: InState,
    /// Unprocessed bytes needed before the next attempt (a put waiting for its body).
    pub need: usize,
    /// The opaque of the put waiting for its body, for a 408 reply.
    pub need_opaque: Option<i32>,
    /// Since when a partial line or body has received no new byte.
    pub partial_since: Option<Instant>,
    pub out: Vec<u8>,
    sent: usize,
    /// `(start offset in out, durable position)`: the reply starting at that offset, and
    /// everything after it (replies stay in order), waits until the store is durable up to
    /// that position.
    gates: VecDeque<(usize, u64)>,
    /// Close once the output is sent (quit, timeout, peer closed, shutdown).
    pub closing: bool,
    /// The broker is shutting down: complete requests still in the input are answered 503
    /// (output limit permitting) before the connection closes.
    pub shutdown: bool,
    /// Processing stopped because the output was over `output_bytes_max`: complete requests
    /// may be left in the input.
    pub input_left: bool,
    /// Registered for writable events.
    pub writable_interest: bool,
    /// The ticket of the fetch (see `fetch.rs`) the get at the head of the input waits for;
    /// no input is processed meanwhile.
    pub fetching: Option<u64>,
    /// The read of the get at the head of the input, run by the fetch thread: answer from it.
    pub fetched: Option<ReadDone>,
    /// The socket may have input: set by every readable event, cleared once a read found it
    /// drained (WouldBlock, or in sync mode a short read: see [`Conn::fill`]). Readiness is
    /// edge-triggered, and every arrival after a read raises a new event, so a drive that is
    /// not for a readable event (a group commit releasing replies, a drained output) makes
    /// no read that can only say WouldBlock: in sync mode that was about four reads per
    /// connection and group commit.
    pub maybe_readable: bool,
}

/// What a fill of the input buffer ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// The socket has no more bytes for now.
    Drained,
    /// The buffer reached its cap; more bytes may wait in the socket.
    Full,
    /// The peer closed its side.
    Eof,
}

impl Conn {
    pub fn new(sock: TcpStream, addr: SocketAddr) -> Conn {
        Conn {
            sock,
            addr,
            inbuf: Vec::new(),
            start: 0,
            filled: 0,
            state: InState::Lines,
            need: 0,
            need_opaque: None,
            partial_since: None,
            out: Vec::new(),
            sent: 0,
            gates: VecDeque::new(),
            closing: false,
            shutdown: false,
            input_left: false,
            writable_interest: false,
            fetching: None,
            fetched: None,
            maybe_readable: true,
        }
    }

    /// Unprocessed input.
    pub fn input(&self) -> &[u8] {
        &self.inbuf[self.start..self.filled]
    }

    /// Unprocessed input and the output buffer, borrowed together.
    pub fn split(&mut self) -> (&[u8], &mut Vec<u8>) {
        (&self.inbuf[self.start..self.filled], &mut self.out)
    }

    pub fn consume(&mut self, n: usize) {
        assert!(self.start + n <= self.filled);
        self.start += n;
    }

    /// Reads from the socket until it is drained (WouldBlock, or with `short_drains` a read
    /// shorter than asked), the peer closes, or `cap` bytes are buffered. Returns the bytes
    /// read and how it ended. Makes no read when no readable event came since the socket was
    /// last found drained.
    ///
    /// `short_drains` suits a peer that waits for replies the read cannot have prompted (sync
    /// mode holds put acks until the group commit): the read after a short one would only
    /// say WouldBlock. Where acks go out while input is handled (async mode), the client
    /// answers them at once, and reading again finds its next puts without a trip through
    /// the poll (-9% puts/s at one connection, depth 100, when short reads stopped there).
    pub fn fill(&mut self, cap: usize, short_drains: bool) -> io::Result<(usize, Fill)> {
        if !self.maybe_readable {
            return Ok((0, Fill::Drained));
        }
        if self.start > 0
            && (self.start == self.filled || self.filled + READ_CHUNK_BYTES > self.inbuf.len())
        {
            self.inbuf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        let mut total = 0;
        loop {
            let room = cap.saturating_sub(self.filled);
            if room == 0 {
                return Ok((total, Fill::Full));
            }
            // Grow only when little room is left: growing past the idle bound for a few bytes
            // of partial command would free the buffer at the next idle moment, and the read
            // after it would zero a fresh one (5% of the broker's CPU at 10,000 puts/s).
            let want = self.filled + room.min(READ_CHUNK_BYTES);
            if self.inbuf.len() < want && self.inbuf.len() - self.filled < READ_ROOM_MIN_BYTES {
                self.inbuf.resize(want, 0);
            }
            let end = self.inbuf.len().min(self.filled + room);
            match self.sock.read(&mut self.inbuf[self.filled..end]) {
                Ok(0) => return Ok((total, Fill::Eof)),
                Ok(n) => {
                    self.filled += n;
                    total += n;
                    if short_drains && self.filled < end {
                        self.maybe_readable = false;
                        return Ok((total, Fill::Drained));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.maybe_readable = false;
                    return Ok((total, Fill::Drained));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and drops what the peer has sent and the broker will not process (at shutdown),
    /// so closing sends a FIN rather than a reset that could discard replies still in flight.
    /// Bounded: a peer that keeps writing gets the reset.
    pub fn discard_input(&mut self) {
        const DISCARD_READS_MAX: usize = 16;
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        for _ in 0..DISCARD_READS_MAX {
            match self.sock.read(&mut chunk) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// After processing: restarts the half-command clock when new bytes arrived (or stops it
    /// when nothing partial is left), and gives back idle memory.
    pub fn settle(&mut self, now: Instant, received: bool) {
        let partial = self.start < self.filled || self.state != InState::Lines;
        if !partial {
            self.partial_since = None;
        } else if received || self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
            if self.inbuf.len() > IDLE_BUFFER_BYTES_MAX {
                self.inbuf = Vec::new();
            }
        }
    }

    /// Holds the reply that starts at `start` in the output (and all output after it) until
    /// the store is durable up to `pos`.
    pub fn hold_until(&mut self, start: usize, pos: u64) {
        debug_assert!(start >= self.sent && start <= self.out.len());
        debug_assert!(self
            .gates
            .back()
            .is_none_or(|&(s, p)| s <= start && p <= pos));
        self.gates.push_back((start, pos));
    }

    pub fn has_gates(&self) -> bool {
        !self.gates.is_empty()
    }

    /// Reply bytes not yet sent.
    pub fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Writes what may be sent (everything not held behind a gate above `durable`), at most
    /// `bytes_max` of it.
    pub fn flush(&mut self, durable: u64, bytes_max: usize) -> io::Result<Flushed> {
        while self.gates.front().is_some_and(|&(_, pos)| pos <= durable) {
            self.gates.pop_front();
        }
        let sendable = self
            .gates
            .front()
            .map_or(self.out.len(), |&(start, _)| start);
        let mut total = 0;
        let mut blocked = false;
        while self.sent < sendable && total < bytes_max {
            let to = sendable.min(self.sent + bytes_max - total);
            match self.sock.write(&self.out[self.sent..to]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.len() && self.gates.is_empty() {
            self.out.clear();
            self.sent = 0;
            if self.out.capacity() > IDLE_BUFFER_BYTES_MAX {
                self.out = Vec::new();
            }
        } else if self.sent > self.out.len() / 2 {
            let sent = self.sent;
            self.out.drain(..sent);
            self.sent = 0;
            for g in self.gates.iter_mut() {
                g.0 -= sent;
            }
        }
        Ok(Flushed {
            bytes: total,
            blocked,
            capped: !blocked && self.sent < sendable,
        })
    }

    pub fn state_name(&self) -> &'static str {
        if self.closing {
            "closing"
        } else if self.unsent() > 0 {
            "writing"
        } else {
            "reading"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected pair over loopback: the broker's side as a `Conn`, the client's as std.
    fn pair() -> (Conn, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (sock, addr) = listener.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        (Conn::new(TcpStream::from_std(sock), addr), client)
    }

    /// Fills until `n` more bytes arrived (the client's writes may land in several reads).
    fn fill_exactly(conn: &mut Conn, n: usize) {
        let mut got = 0;
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while got < n {
            assert!(Instant::now() < deadline, "only {got} of {n} bytes arrived");
            conn.maybe_readable = true; // as the readable event would
            got += conn.fill(1 << 20, false).unwrap().0;
        }
    }

    /// Waits until the broker's side of `conn` has `n` bytes to read.
    fn wait_readable(conn: &Conn, n: usize) {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let mut peek = vec![0u8; n];
        while conn.sock.peek(&mut peek).unwrap_or(0) < n {
            assert!(Instant::now() < deadline, "{n} bytes did not arrive");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn no_read_is_made_after_the_socket_was_found_drained_until_a_readable_event() {
        let (mut conn, mut client) = pair();
        client.write_all(b"version\r\n").unwrap();
        fill_exactly(&mut conn, 9);
        // Drained: the read after the data said WouldBlock.
        assert_eq!(conn.fill(1 << 20, false).unwrap(), (0, Fill::Drained));
        assert!(!conn.maybe_readable);
        client.write_all(b"stats\r\n").unwrap();
        wait_readable(&conn, 7);
        assert_eq!(
            conn.fill(1 << 20, false).unwrap(),
            (0, Fill::Drained),
            "read without a readable event"
        );
        conn.maybe_readable = true;
        assert_eq!(conn.fill(1 << 20, false).unwrap(), (7, Fill::Drained));
        assert_eq!(conn.input(), b"version\r\nstats\r\n");
    }

    #[test]
    fn with_short_drains_a_short_read_ends_the_fill_as_drained() {
        let (mut conn, mut client) = pair();
        client.write_all(b"version\r\n").unwrap();
        wait_readable(&conn, 9);
        assert_eq!(conn.fill(1 << 20, true).unwrap(), (9, Fill::Drained));
        assert!(!conn.maybe_readable, "a short read drained the socket");
        // Without short_drains the same read is followed by one that says WouldBlock, and
        // both end drained: the difference is only the syscall.
        client.write_all(b"stats\r\n").unwrap();
        wait_readable(&conn, 7);
        conn.maybe_readable = true;
        assert_eq!(conn.fill(1 << 20, false).unwrap(), (7, Fill::Drained));
        assert!(!conn.maybe_readable);
    }

    #[test]
    fn a_small_partial_command_does_not_grow_the_input_buffer_past_the_idle_bound() {
        let (mut conn, mut client) = pair();
        // Less than a chunk minus READ_ROOM_MIN_BYTES: the read after it (which finds the
        // socket drained) must not grow the buffer either.
        let first = READ_CHUNK_BYTES - READ_ROOM_MIN_BYTES - 1024;
        client.write_all(&vec![b'x'; first]).unwrap();
        fill_exactly(&mut conn, first);
        assert_eq!(conn.inbuf.len(), READ_CHUNK_BYTES);
        // Everything but a 100-byte partial command was processed; more bytes arrive.
        conn.consume(first - 100);
        client.write_all(&[b'y'; 2000]).unwrap();
        fill_exactly(&mut conn, 2000);
        assert_eq!(conn.input().len(), 2100);
        assert_eq!(
            conn.inbuf.len(),
            READ_CHUNK_BYTES,
            "grew for a small partial"
        );
        conn.consume(2100);
        conn.settle(Instant::now(), true);
        // Still allocated: the next read reuses it instead of zeroing a fresh buffer.
        assert_eq!(conn.inbuf.len(), READ_CHUNK_BYTES);
    }

    #[test]
    fn a_large_body_still_grows_the_buffer_beyond_one_chunk() {
        let (mut conn, mut client) = pair();
        let body = 3 * READ_CHUNK_BYTES + 5;
        client.write_all(&vec![b'z'; body]).unwrap();
        fill_exactly(&mut conn, body);
        assert_eq!(conn.input().len(), body);
        assert!(conn.input().iter().all(|&b| b == b'z'));
    }
}
