//! The three wire protocols, client side: imago (protocol.md), Redis RESP and beanstalkd.
//!
//! Producers implement [`Produce`] (encode one put; count acknowledgements in a byte stream),
//! consumers implement [`Consume`] (issue reads; hand each delivered message body to a sink).

pub mod beanstalk;
pub mod imago;
pub mod redis;

use std::net::TcpStream;

/// One message to put: its payload and, for imago, the put flag and checksum of the whole
/// put body (the attribute included).
pub struct Msg<'a> {
    pub body: &'a [u8],
    pub flag: u32,
    pub checksum: i32,
}

pub trait Produce: Send {
    /// Blocking set-up on a fresh connection (e.g. beanstalkd `use`).
    fn setup(&mut self, _s: &mut TcpStream) -> Result<(), String> {
        Ok(())
    }
    /// Appends one put request to `out`; `seq` is the connection's message number.
    fn encode(&mut self, seq: u64, m: &Msg, out: &mut Vec<u8>);
    /// Parses complete replies at the start of `buf`: (bytes consumed, acks, errors). An error
    /// reply counts as an ack (the request is answered) and as an error.
    fn acks(&mut self, buf: &[u8]) -> Result<Acks, String>;
}

#[derive(Default, Debug)]
pub struct Acks {
    pub consumed: usize,
    pub acks: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

pub trait Consume: Send {
    /// Requests to send first.
    fn initial(&mut self, out: &mut Vec<u8>);
    /// Consumes complete replies at the start of `buf`, appending follow-up requests to `out`
    /// and calling `sink` with each delivered message's payload. Returns the bytes consumed.
    fn on_data(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, String>;
    /// Called every ~100 ms (heartbeats, commits, retries).
    fn tick(&mut self, _out: &mut Vec<u8>) {}
    /// Last words before closing (final commit, leave); best effort.
    fn finish(&mut self, _s: &mut TcpStream) {}
}

/// Appends the decimal form of `v`.
#[inline]
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

#[inline]
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
        push_u64(out, v.unsigned_abs());
    } else {
        push_u64(out, v as u64);
    }
}

/// Parses an ASCII decimal (optional leading '-').
#[inline]
pub fn parse_i64(t: &[u8]) -> Option<i64> {
    let (neg, digits) = match t.first()? {
        b'-' => (true, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(if neg { -v } else { v })
}

#[inline]
pub fn find_nl(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// A body with a send timestamp: the first 8 bytes (little endian) are nanoseconds since the
/// run's start instant.
pub fn stamp_of(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(..8)?.try_into().ok()?))
}
