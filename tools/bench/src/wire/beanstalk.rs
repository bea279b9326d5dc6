//! beanstalkd's text protocol: `put` to produce, `reserve-with-timeout` + `delete` to consume,
//! all in one tube (`bench`).

use super::{find_nl, push_u64, Acks, Consume, Msg, Produce};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

pub const TUBE: &str = "bench";

pub struct BeanstalkProducer;

impl Produce for BeanstalkProducer {
    fn setup(&mut self, s: &mut TcpStream) -> Result<(), String> {
        s.write_all(format!("use {TUBE}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(&*s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if !line.starts_with("USING") {
            return Err(format!("beanstalkd use: {line}"));
        }
        Ok(())
    }

    #[inline]
    fn encode(&mut self, _seq: u64, m: &Msg, out: &mut Vec<u8>) {
        out.extend_from_slice(b"put 1024 0 120 ");
        push_u64(out, m.body.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(m.body);
        out.extend_from_slice(b"\r\n");
    }

    fn acks(&mut self, buf: &[u8]) -> Result<Acks, String> {
        let mut a = Acks::default();
        while let Some(nl) = find_nl(&buf[a.consumed..]) {
            let line = &buf[a.consumed..a.consumed + nl];
            a.acks += 1;
            if !line.starts_with(b"INSERTED ") {
                a.errors += 1;
                if a.first_error.is_none() {
                    a.first_error = Some(String::from_utf8_lossy(line).trim_end().to_owned());
                }
            }
            a.consumed += nl + 1;
        }
        Ok(a)
    }
}

pub struct BeanstalkConsumer {
    depth: u32,
    timeout_s: u32,
}

impl BeanstalkConsumer {
    pub fn new(depth: u32, timeout_s: u32) -> BeanstalkConsumer {
        BeanstalkConsumer {
            depth: depth.max(1),
            timeout_s,
        }
    }
    fn reserve(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"reserve-with-timeout ");
        push_u64(out, self.timeout_s as u64);
        out.extend_from_slice(b"\r\n");
    }
}

impl Consume for BeanstalkConsumer {
    fn initial(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("watch {TUBE}\r\nignore default\r\n").as_bytes());
        for _ in 0..self.depth {
            self.reserve(out);
        }
    }

    fn on_data(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, String> {
        let mut pos = 0;
        while let Some(nl) = find_nl(&buf[pos..]) {
            let line = &buf[pos..pos + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(rest) = line.strip_prefix(b"RESERVED ") {
                let mut it = rest.split(|&b| b == b' ');
                let id = it.next().ok_or("bad RESERVED")?;
                let n: usize = std::str::from_utf8(it.next().ok_or("bad RESERVED")?)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or("bad RESERVED length")?;
                let start = pos + nl + 1;
                if buf.len() < start + n + 2 {
                    break;
                }
                sink(&buf[start..start + n]);
                out.extend_from_slice(b"delete ");
                out.extend_from_slice(id);
                out.extend_from_slice(b"\r\n");
                self.reserve(out);
                pos = start + n + 2;
                continue;
            }
            if line.starts_with(b"TIMED_OUT") || line.starts_with(b"DEADLINE_SOON") {
                self.reserve(out);
            } else if !(line.starts_with(b"DELETED") || line.starts_with(b"WATCHING")) {
                return Err(format!("beanstalkd: {}", String::from_utf8_lossy(line)));
            }
            pos += nl + 1;
        }
        Ok(pos)
    }
}
