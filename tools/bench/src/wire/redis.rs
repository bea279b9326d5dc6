//! Redis Streams over RESP, spoken directly: XADD to produce, XREADGROUP + XACK to consume.

use super::{find_nl, parse_i64, push_u64, Acks, Consume, Msg, Produce};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A parsed RESP value; strings are byte ranges of the parsed buffer.
#[derive(Debug, Clone)]
pub enum Resp {
    Simple(usize, usize),
    Error(usize, usize),
    Int(i64),
    Bulk(Option<(usize, usize)>),
    Array(Option<Vec<Resp>>),
}

/// Parses one value starting at `pos`; `Ok(None)` while incomplete. Returns the value and the
/// position after it.
pub fn parse(buf: &[u8], pos: usize) -> Result<Option<(Resp, usize)>, String> {
    if pos >= buf.len() {
        return Ok(None);
    }
    let Some(nl) = find_nl(&buf[pos..]) else {
        return Ok(None);
    };
    let line_end = pos + nl; // at '\n'
    if nl < 2 || buf[line_end - 1] != b'\r' {
        return Err(format!(
            "bad RESP line {:?}",
            String::from_utf8_lossy(&buf[pos..line_end])
        ));
    }
    let content = (pos + 1, line_end - 1);
    let next = line_end + 1;
    let num = || parse_i64(&buf[content.0..content.1]).ok_or_else(|| "bad RESP number".to_string());
    match buf[pos] {
        b'+' => Ok(Some((Resp::Simple(content.0, content.1), next))),
        b'-' => Ok(Some((Resp::Error(content.0, content.1), next))),
        b':' => Ok(Some((Resp::Int(num()?), next))),
        b'$' => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), next)));
            }
            let end = next + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Resp::Bulk(Some((next, end))), end + 2)))
        }
        b'*' => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Resp::Array(None), next)));
            }
            let mut items = Vec::with_capacity((n as usize).min(4096));
            let mut p = next;
            for _ in 0..n {
                match parse(buf, p)? {
                    None => return Ok(None),
                    Some((v, q)) => {
                        items.push(v);
                        p = q;
                    }
                }
            }
            Ok(Some((Resp::Array(Some(items)), p)))
        }
        c => Err(format!("bad RESP type byte {c:#x}")),
    }
}

/// Appends a command as a RESP array of bulk strings.
pub fn cmd(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_u64(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_u64(out, a.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Sends one command and waits for its reply; errors become `Err` unless `allow_error`.
pub fn call(s: &mut TcpStream, args: &[&[u8]], allow_error: bool) -> Result<String, String> {
    let mut out = Vec::new();
    cmd(&mut out, args);
    s.write_all(&out).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let deadline = Instant::now() + Duration::from_secs(60);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    loop {
        if let Some((v, _)) = parse(&buf, 0)? {
            return match v {
                Resp::Error(a, b) if !allow_error => {
                    Err(String::from_utf8_lossy(&buf[a..b]).into_owned())
                }
                Resp::Error(a, b) | Resp::Simple(a, b) | Resp::Bulk(Some((a, b))) => {
                    Ok(String::from_utf8_lossy(&buf[a..b]).into_owned())
                }
                Resp::Int(i) => Ok(i.to_string()),
                _ => Ok(String::new()),
            };
        }
        if Instant::now() > deadline {
            return Err("redis: no reply within 60 s".into());
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err("redis closed the connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Stream keys for `partitions` partitions.
pub fn keys(partitions: u32) -> Vec<Vec<u8>> {
    (0..partitions.max(1))
        .map(|p| format!("bench:{p}").into_bytes())
        .collect()
}

pub struct RedisProducer {
    keys: Vec<Vec<u8>>,
    next: usize,
}

impl RedisProducer {
    pub fn new(partitions: u32, first: u32) -> RedisProducer {
        let keys = keys(partitions);
        let next = first as usize % keys.len();
        RedisProducer { keys, next }
    }
}

impl Produce for RedisProducer {
    #[inline]
    fn encode(&mut self, _seq: u64, m: &Msg, out: &mut Vec<u8>) {
        let key = &self.keys[self.next];
        self.next += 1;
        if self.next == self.keys.len() {
            self.next = 0;
        }
        cmd(out, &[b"XADD", key, b"*", b"d", m.body]);
    }

    fn acks(&mut self, buf: &[u8]) -> Result<Acks, String> {
        let mut a = Acks::default();
        while let Some((v, end)) = parse(buf, a.consumed)? {
            a.acks += 1;
            if let Resp::Error(x, y) = v {
                a.errors += 1;
                if a.first_error.is_none() {
                    a.first_error = Some(String::from_utf8_lossy(&buf[x..y]).into_owned());
                }
            }
            a.consumed = end;
        }
        Ok(a)
    }
}

enum Pending {
    Read,
    Ack,
}

pub struct RedisConsumer {
    keys: Vec<Vec<u8>>,
    group: Vec<u8>,
    name: Vec<u8>,
    count: u32,
    block_ms: u32,
    pending: VecDeque<Pending>,
}

impl RedisConsumer {
    pub fn new(
        partitions: u32,
        group: &str,
        name: &str,
        count: u32,
        block_ms: u32,
    ) -> RedisConsumer {
        RedisConsumer {
            keys: keys(partitions),
            group: group.as_bytes().to_vec(),
            name: name.as_bytes().to_vec(),
            count,
            block_ms,
            pending: VecDeque::new(),
        }
    }

    fn read(&mut self, out: &mut Vec<u8>) {
        let count = self.count.to_string();
        let block = self.block_ms.to_string();
        let mut args: Vec<&[u8]> = vec![
            b"XREADGROUP",
            b"GROUP",
            &self.group,
            &self.name,
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            block.as_bytes(),
            b"STREAMS",
        ];
        for k in &self.keys {
            args.push(k);
        }
        args.extend(std::iter::repeat_n(b">".as_slice(), self.keys.len()));
        cmd(out, &args);
        self.pending.push_back(Pending::Read);
    }
}

/// Creates the consumer group on every stream (`start`: `0` for a backlog, `$` for new
/// messages only).
pub fn create_group(
    s: &mut TcpStream,
    partitions: u32,
    group: &str,
    start: &str,
) -> Result<(), String> {
    for k in keys(partitions) {
        let r = call(
            s,
            &[
                b"XGROUP",
                b"CREATE",
                &k,
                group.as_bytes(),
                start.as_bytes(),
                b"MKSTREAM",
            ],
            true,
        )?;
        if r != "OK" && !r.starts_with("BUSYGROUP") {
            return Err(format!("XGROUP CREATE: {r}"));
        }
    }
    Ok(())
}

impl Consume for RedisConsumer {
    fn initial(&mut self, out: &mut Vec<u8>) {
        self.read(out);
    }

    fn on_data(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, String> {
        let mut pos = 0;
        while let Some((v, end)) = parse(buf, pos)? {
            pos = end;
            let kind = self
                .pending
                .pop_front()
                .ok_or("redis reply without a request")?;
            if let Resp::Error(a, b) = v {
                return Err(format!("redis: {}", String::from_utf8_lossy(&buf[a..b])));
            }
            match kind {
                Pending::Ack => {}
                Pending::Read => {
                    if let Resp::Array(Some(streams)) = v {
                        for st in streams {
                            let Resp::Array(Some(kv)) = st else {
                                return Err("XREADGROUP: bad stream item".into());
                            };
                            let (Some(Resp::Bulk(Some(key))), Some(Resp::Array(Some(entries)))) =
                                (kv.first(), kv.get(1))
                            else {
                                return Err("XREADGROUP: bad stream item".into());
                            };
                            let mut ids: Vec<(usize, usize)> = Vec::with_capacity(entries.len());
                            for e in entries {
                                let Resp::Array(Some(pair)) = e else { continue };
                                if let Some(Resp::Bulk(Some(id))) = pair.first() {
                                    ids.push(*id);
                                }
                                if let Some(Resp::Array(Some(fields))) = pair.get(1) {
                                    if let Some(Resp::Bulk(Some((a, b)))) = fields.get(1) {
                                        sink(&buf[*a..*b]);
                                    }
                                }
                            }
                            if !ids.is_empty() {
                                let mut args: Vec<&[u8]> =
                                    vec![b"XACK", &buf[key.0..key.1], &self.group];
                                for (a, b) in &ids {
                                    args.push(&buf[*a..*b]);
                                }
                                cmd(out, &args);
                                self.pending.push_back(Pending::Ack);
                            }
                        }
                    }
                    self.read(out);
                }
            }
        }
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_and_partial() {
        let b = b"*1\r\n*2\r\n$3\r\nkey\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nd\r\n$2\r\nhi\r\n";
        let (v, end) = parse(b, 0).unwrap().unwrap();
        assert_eq!(end, b.len());
        assert!(matches!(v, Resp::Array(Some(_))));
        for cut in 0..b.len() {
            assert!(parse(&b[..cut], 0).unwrap().is_none(), "cut {cut}");
        }
        let mut c = RedisConsumer::new(1, "g", "c", 10, 0);
        c.pending.push_back(Pending::Read);
        let mut out = Vec::new();
        let mut got = Vec::new();
        assert_eq!(
            c.on_data(b, &mut out, &mut |m| got.push(m.to_vec()))
                .unwrap(),
            b.len()
        );
        assert_eq!(got, vec![b"hi".to_vec()]);
        assert!(String::from_utf8_lossy(&out).contains("XACK"));
    }
}
