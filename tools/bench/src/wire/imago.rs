//! imago's wire protocol (protocol.md and the consumer-group commands), client side.

use super::{find_nl, parse_i64, push_i64, push_u64, Acks, Consume, Msg, Produce};
use crate::crc;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const OPAQUE_HEARTBEAT: i64 = -2;
pub const OPAQUE_COMMIT: i64 = -3;
pub const OPAQUE_LEAVE: i64 = -4;
pub const OPAQUE_CONTROL: i64 = -5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Value,
    Result(u16),
}

#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub kind: Kind,
    pub opaque: i64,
    /// Body range within the parsed buffer.
    pub body: (usize, usize),
}

/// Parses one reply at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(nl) = find_nl(buf) else {
        if buf.len() > 4096 {
            return Err(format!(
                "reply header too long: {:?}",
                String::from_utf8_lossy(&buf[..80])
            ));
        }
        return Ok(None);
    };
    let line = if nl > 0 && buf[nl - 1] == b'\r' {
        &buf[..nl - 1]
    } else {
        &buf[..nl]
    };
    let mut toks = line.split(|&b| b == b' ');
    let bad = || format!("unexpected reply line {:?}", String::from_utf8_lossy(line));
    let verb = toks.next().ok_or_else(bad)?;
    let (kind, len) = match verb {
        b"result" => {
            let code = toks.next().and_then(parse_i64).ok_or_else(bad)?;
            let len = toks.next().and_then(parse_i64).ok_or_else(bad)?;
            (Kind::Result(code as u16), len)
        }
        b"value" => (
            Kind::Value,
            toks.next().and_then(parse_i64).ok_or_else(bad)?,
        ),
        _ => return Err(bad()),
    };
    let opaque = toks.next().and_then(parse_i64).ok_or_else(bad)?;
    if len < 0 {
        return Err(bad());
    }
    let start = nl + 1;
    let end = start + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((
        Reply {
            kind,
            opaque,
            body: (start, end),
        },
        end,
    )))
}

/// Builds the put body for a payload with an optional tag (flag bit 0): the flag and masked
/// checksum to send with it.
pub fn put_body(payload: &[u8], tag: Option<&str>) -> (Vec<u8>, u32) {
    match tag {
        None => (payload.to_vec(), 0),
        Some(t) => {
            let mut b = Vec::with_capacity(4 + t.len() + payload.len());
            b.extend_from_slice(&(t.len() as u32).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
            b.extend_from_slice(payload);
            (b, 1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Producer

pub struct ImagoProducer {
    topic: Vec<u8>,
    partitions: u32,
    next_partition: u32,
    broker_chooses: bool,
}

impl ImagoProducer {
    /// Round-robin over `partitions`, starting at `first`; `-1` when the broker chooses.
    pub fn new(topic: &str, partitions: u32, first: u32, broker_chooses: bool) -> ImagoProducer {
        ImagoProducer {
            topic: topic.as_bytes().to_vec(),
            partitions: partitions.max(1),
            next_partition: first % partitions.max(1),
            broker_chooses,
        }
    }
}

impl Produce for ImagoProducer {
    #[inline]
    fn encode(&mut self, seq: u64, m: &Msg, out: &mut Vec<u8>) {
        out.extend_from_slice(b"put ");
        out.extend_from_slice(&self.topic);
        out.push(b' ');
        if self.broker_chooses {
            out.extend_from_slice(b"-1");
        } else {
            push_u64(out, self.next_partition as u64);
            self.next_partition += 1;
            if self.next_partition == self.partitions {
                self.next_partition = 0;
            }
        }
        out.push(b' ');
        push_u64(out, m.body.len() as u64);
        out.push(b' ');
        push_u64(out, m.flag as u64);
        out.push(b' ');
        push_i64(out, m.checksum as i64);
        out.push(b' ');
        push_u64(out, seq & 0x7FFF_FFFF);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(m.body);
    }

    fn acks(&mut self, buf: &[u8]) -> Result<Acks, String> {
        let mut a = Acks::default();
        while let Some((r, used)) = parse_reply(&buf[a.consumed..])? {
            a.acks += 1;
            if r.kind != Kind::Result(200) {
                a.errors += 1;
                if a.first_error.is_none() {
                    let b = &buf[a.consumed..][r.body.0..r.body.1];
                    a.first_error = Some(format!("{:?}: {}", r.kind, String::from_utf8_lossy(b)));
                }
            }
            a.consumed += used;
        }
        Ok(a)
    }
}

// ---------------------------------------------------------------------------------------------
// Blocking request/response for set-up (join, heartbeat, stats).

/// Sends `line` (its last token is the opaque) and waits for the reply carrying that opaque,
/// skipping others. Returns (code, body); code 0 for `value`.
pub fn request(s: &mut TcpStream, line: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let want: i64 = line
        .trim_end()
        .rsplit(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(i32::MAX as i64);
    s.write_all(line.as_bytes())
        .map_err(|e| format!("send {}: {e}", line.trim_end()))?;
    let deadline = Instant::now() + timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        while let Some((r, used)) = parse_reply(&buf)? {
            let body = buf[r.body.0..r.body.1].to_vec();
            buf.drain(..used);
            if r.opaque == want {
                let code = match r.kind {
                    Kind::Value => 0,
                    Kind::Result(c) => c,
                };
                return Ok((code, body));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no reply to '{}' within {:?}",
                line.trim_end(),
                timeout
            ));
        }
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "connection closed waiting for '{}'",
                    line.trim_end()
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// `stats` in the result form, as name -> value.
pub fn stats(s: &mut TcpStream, item: &str) -> Result<HashMap<String, String>, String> {
    let (code, body) = request(
        s,
        &format!("stats {item} {}\r\n", OPAQUE_CONTROL),
        Duration::from_secs(30),
    )?;
    if code != 200 {
        return Err(format!(
            "stats {item}: {code} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let text = String::from_utf8_lossy(&body);
    let mut m = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("STAT ") {
            if let Some((k, v)) = rest.split_once(' ') {
                m.insert(k.to_owned(), v.trim_end().to_owned());
            }
        }
    }
    Ok(m)
}

/// A member's assignment: generation, session timeout, partitions with their start offsets.
#[derive(Debug, Clone, Default)]
pub struct Assignment {
    pub generation: i64,
    pub session_ms: u64,
    pub parts: Vec<(u32, u64)>,
}

pub fn parse_assignment(body: &[u8]) -> Result<Assignment, String> {
    let text = String::from_utf8_lossy(body);
    let mut it = text.split_whitespace();
    let bad = || format!("bad assignment '{text}'");
    let generation = it.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let session_ms = it.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let mut parts = Vec::new();
    for t in it {
        let (p, o) = t.split_once(':').ok_or_else(bad)?;
        parts.push((p.parse().map_err(|_| bad())?, o.parse().map_err(|_| bad())?));
    }
    Ok(Assignment {
        generation,
        session_ms,
        parts,
    })
}

pub fn join(
    s: &mut TcpStream,
    group: &str,
    topic: &str,
    member: &str,
    start: &str,
) -> Result<Assignment, String> {
    let (code, body) = request(
        s,
        &format!("join {group} {topic} {member} cluster {start} {OPAQUE_CONTROL}\r\n"),
        Duration::from_secs(30),
    )?;
    if code != 200 {
        return Err(format!(
            "join {group} {topic} {member}: {code} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    parse_assignment(&body)
}

pub fn heartbeat(
    s: &mut TcpStream,
    group: &str,
    topic: &str,
    member: &str,
) -> Result<Assignment, String> {
    let (code, body) = request(
        s,
        &format!("heartbeat {group} {topic} {member} {OPAQUE_CONTROL}\r\n"),
        Duration::from_secs(30),
    )?;
    if code != 200 {
        return Err(format!(
            "heartbeat {member}: {code} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    parse_assignment(&body)
}

// ---------------------------------------------------------------------------------------------
// Records

pub const RECORD_HEADER: usize = 64;
pub const MAGIC: u32 = 0x494D_4701;

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
#[inline]
fn be16(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap()) as usize
}

/// Walks a `value` body, calling `sink` with each record's payload; returns the last
/// record's offset and the count.
pub fn walk_records(
    body: &[u8],
    verify: bool,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(u64, u64), String> {
    let mut pos = 0;
    let mut last = 0;
    let mut n = 0;
    while pos < body.len() {
        if body.len() - pos < RECORD_HEADER {
            return Err(format!(
                "truncated record header at byte {pos} of a {}-byte value",
                body.len()
            ));
        }
        let total = be32(body, pos) as usize;
        if total < RECORD_HEADER || pos + total > body.len() {
            return Err(format!(
                "bad record length {total} at byte {pos} of a {}-byte value",
                body.len()
            ));
        }
        let rec = &body[pos..pos + total];
        let body_len = be32(rec, 52) as usize;
        let skip = RECORD_HEADER + be16(rec, 56) + be16(rec, 58) + be16(rec, 60);
        if verify {
            if be32(rec, 4) != MAGIC {
                return Err(format!("bad magic {:#x}", be32(rec, 4)));
            }
            if skip + body_len != total {
                return Err(format!(
                    "record lengths disagree: total {total}, parts {}",
                    skip + body_len
                ));
            }
            let c = crc::update(crc::crc32(&rec[0..8]), &rec[12..]);
            if c != be32(rec, 8) {
                return Err(format!(
                    "record CRC mismatch at offset {}",
                    u64::from_be_bytes(rec[16..24].try_into().unwrap())
                ));
            }
        }
        last = u64::from_be_bytes(rec[16..24].try_into().unwrap());
        sink(&rec[skip.min(total)..]);
        n += 1;
        pos += total;
    }
    Ok((last, n))
}

// ---------------------------------------------------------------------------------------------
// Consumer

struct Part {
    next: u64,
    committed: u64,
    inflight: bool,
    idle_since: Option<Instant>,
}

pub struct ImagoConsumer {
    topic: String,
    group: String,
    member: String,
    max_size: u32,
    wait_ms: u32,
    filter: Option<String>,
    /// 6-token gets, no group commands (a consumer managing its own offsets).
    plain: bool,
    verify: bool,
    generation: i64,
    session_ms: u64,
    parts: HashMap<u32, Part>,
    last_hb: Instant,
    hb_pending: bool,
    last_commit: Instant,
    pub commit_conflicts: u64,
}

pub struct ConsumerOpts {
    pub topic: String,
    pub group: String,
    pub max_size: u32,
    pub wait_ms: u32,
    pub filter: Option<String>,
    pub plain: bool,
    pub verify: bool,
}

impl ImagoConsumer {
    pub fn new(o: &ConsumerOpts, member: &str, a: &Assignment) -> ImagoConsumer {
        let parts = a
            .parts
            .iter()
            .map(|&(p, o)| {
                (
                    p,
                    Part {
                        next: o,
                        committed: o,
                        inflight: false,
                        idle_since: None,
                    },
                )
            })
            .collect();
        ImagoConsumer {
            topic: o.topic.clone(),
            group: o.group.clone(),
            member: member.to_owned(),
            max_size: o.max_size,
            wait_ms: o.wait_ms,
            filter: o.filter.clone(),
            plain: o.plain,
            verify: o.verify,
            generation: a.generation,
            session_ms: a.session_ms.max(300),
            parts,
            last_hb: Instant::now(),
            hb_pending: false,
            last_commit: Instant::now(),
            commit_conflicts: 0,
        }
    }

    fn get(&mut self, p: u32, out: &mut Vec<u8>) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        if st.inflight {
            return;
        }
        st.inflight = true;
        st.idle_since = None;
        out.extend_from_slice(b"get ");
        out.extend_from_slice(self.topic.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.group.as_bytes());
        out.push(b' ');
        push_u64(out, p as u64);
        out.push(b' ');
        push_u64(out, st.next);
        out.push(b' ');
        push_u64(out, self.max_size as u64);
        if !self.plain {
            out.push(b' ');
            push_u64(out, self.wait_ms as u64);
            if let Some(f) = &self.filter {
                out.push(b' ');
                out.extend_from_slice(f.as_bytes());
            }
        }
        out.push(b' ');
        push_u64(out, p as u64);
        out.extend_from_slice(b"\r\n");
    }

    fn commits(&mut self, out: &mut Vec<u8>) {
        if self.plain {
            return;
        }
        let mut ps: Vec<u32> = self
            .parts
            .iter()
            .filter(|(_, s)| s.next != s.committed)
            .map(|(p, _)| *p)
            .collect();
        ps.sort_unstable();
        for p in ps {
            let st = self.parts.get_mut(&p).unwrap();
            let line = format!(
                "commit {} {} {} {} {} {} {}\r\n",
                self.group, self.topic, p, st.next, self.member, self.generation, OPAQUE_COMMIT
            );
            out.extend_from_slice(line.as_bytes());
            st.committed = st.next;
        }
    }

    fn apply_assignment(&mut self, a: Assignment, out: &mut Vec<u8>) {
        self.session_ms = a.session_ms.max(300);
        if a.generation == self.generation {
            return;
        }
        self.generation = a.generation;
        let keep: HashMap<u32, u64> = a.parts.iter().cloned().collect();
        self.parts.retain(|p, _| keep.contains_key(p));
        for (p, o) in keep {
            self.parts.entry(p).or_insert(Part {
                next: o,
                committed: o,
                inflight: false,
                idle_since: None,
            });
            self.get(p, out);
        }
    }
}

impl Consume for ImagoConsumer {
    fn initial(&mut self, out: &mut Vec<u8>) {
        let mut ps: Vec<u32> = self.parts.keys().cloned().collect();
        ps.sort_unstable();
        for p in ps {
            self.get(p, out);
        }
    }

    fn on_data(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, String> {
        let mut pos = 0;
        while let Some((r, used)) = parse_reply(&buf[pos..])? {
            let body = &buf[pos + r.body.0..pos + r.body.1];
            pos += used;
            match r.opaque {
                OPAQUE_HEARTBEAT => {
                    self.hb_pending = false;
                    if r.kind != Kind::Result(200) {
                        return Err(format!(
                            "heartbeat of {}: {:?} {}",
                            self.member,
                            r.kind,
                            String::from_utf8_lossy(body)
                        ));
                    }
                    let a = parse_assignment(body)?;
                    self.apply_assignment(a, out);
                }
                OPAQUE_COMMIT => match r.kind {
                    Kind::Result(200) => {}
                    Kind::Result(409) => self.commit_conflicts += 1,
                    k => return Err(format!("commit: {k:?} {}", String::from_utf8_lossy(body))),
                },
                OPAQUE_LEAVE | OPAQUE_CONTROL => {}
                p if p >= 0 => {
                    let p = p as u32;
                    let owned = self.parts.contains_key(&p);
                    if let Some(st) = self.parts.get_mut(&p) {
                        st.inflight = false;
                    }
                    match r.kind {
                        Kind::Value => {
                            // Records of a partition we no longer own are still delivered
                            // (they were sent); the new owner starts from the committed offset.
                            let (last, _) = walk_records(body, self.verify, sink)?;
                            if let Some(st) = self.parts.get_mut(&p) {
                                st.next = last + 1;
                            }
                        }
                        Kind::Result(404) => {
                            if body.starts_with(b"unknown topic") {
                                return Err(format!("get: {}", String::from_utf8_lossy(body)));
                            }
                            if let Some(st) = self.parts.get_mut(&p) {
                                if self.plain {
                                    st.idle_since = Some(Instant::now());
                                    continue;
                                }
                            }
                        }
                        Kind::Result(301) => {
                            let next = parse_i64(body).ok_or("bad 301 body")? as u64;
                            if let Some(st) = self.parts.get_mut(&p) {
                                st.next = next;
                            }
                        }
                        k => {
                            return Err(format!(
                                "get partition {p}: {k:?} {}",
                                String::from_utf8_lossy(body)
                            ))
                        }
                    }
                    if owned {
                        self.get(p, out);
                    }
                }
                o => return Err(format!("reply with unexpected opaque {o}")),
            }
        }
        Ok(pos)
    }

    fn tick(&mut self, out: &mut Vec<u8>) {
        let now = Instant::now();
        if !self.plain {
            if !self.hb_pending
                && now.duration_since(self.last_hb) >= Duration::from_millis(self.session_ms / 3)
            {
                let line = format!(
                    "heartbeat {} {} {} {}\r\n",
                    self.group, self.topic, self.member, OPAQUE_HEARTBEAT
                );
                out.extend_from_slice(line.as_bytes());
                self.hb_pending = true;
                self.last_hb = now;
            }
            if now.duration_since(self.last_commit) >= Duration::from_secs(1) {
                self.commits(out);
                self.last_commit = now;
            }
        } else {
            let retry: Vec<u32> = self
                .parts
                .iter()
                .filter(|(_, s)| {
                    s.idle_since
                        .is_some_and(|t| now.duration_since(t) >= Duration::from_millis(50))
                })
                .map(|(p, _)| *p)
                .collect();
            for p in retry {
                self.get(p, out);
            }
        }
    }

    fn finish(&mut self, s: &mut TcpStream) {
        if self.plain {
            return;
        }
        let mut out = Vec::new();
        self.commits(&mut out);
        out.extend_from_slice(
            format!(
                "leave {} {} {} {}\r\n",
                self.group, self.topic, self.member, OPAQUE_LEAVE
            )
            .as_bytes(),
        );
        if s.write_all(&out).is_err() {
            return;
        }
        // Read until the leave reply (in-flight gets and the commits come before it).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 1 << 20];
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        while Instant::now() < deadline {
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => continue,
            }
            let mut pos = 0;
            while let Ok(Some((r, used))) = parse_reply(&buf[pos..]) {
                pos += used;
                if r.opaque == OPAQUE_LEAVE {
                    return;
                }
                if r.opaque == OPAQUE_COMMIT && r.kind == Kind::Result(409) {
                    self.commit_conflicts += 1;
                }
            }
            buf.drain(..pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_and_partial_input() {
        let b = b"result 200 19 1\r\n281474976710656 0 0value 3 7\r\nabc";
        let (r, used) = parse_reply(b).unwrap().unwrap();
        assert_eq!(r.kind, Kind::Result(200));
        assert_eq!(r.opaque, 1);
        assert_eq!(&b[r.body.0..r.body.1], b"281474976710656 0 0");
        let (r2, used2) = parse_reply(&b[used..]).unwrap().unwrap();
        assert_eq!(r2.kind, Kind::Value);
        assert_eq!(used + used2, b.len());
        assert!(parse_reply(&b[..used - 1]).unwrap().is_none());
        assert!(parse_reply(b"result 200").unwrap().is_none());
    }

    #[test]
    fn walks_the_protocol_md_record() {
        let hex = concat!(
            "0000004e494d4701c5b652aa00000000",
            "00000000000000000001000000000000",
            "0000018bcfe568000000018bcfe56800",
            "00000000000000050009000000000000",
            "6d6574612d7465737468656c6c6f"
        );
        let rec: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut got = Vec::new();
        let (last, n) = walk_records(&rec, true, &mut |b| got.push(b.to_vec())).unwrap();
        assert_eq!((last, n), (0, 1));
        assert_eq!(got, vec![b"hello".to_vec()]);
    }

    #[test]
    fn encodes_puts() {
        let mut p = ImagoProducer::new("t", 3, 2, false);
        let mut out = Vec::new();
        let m = Msg {
            body: b"hello",
            flag: 0,
            checksum: 907060870,
        };
        p.encode(5, &m, &mut out);
        p.encode(6, &m, &mut out);
        assert_eq!(
            out,
            b"put t 2 5 0 907060870 5\r\nhelloput t 0 5 0 907060870 6\r\nhello".to_vec()
        );
    }
}
