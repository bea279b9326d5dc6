//! Black-box harness for the `imago` binary, shared by `tests/broker_*.rs`.
//!
//! It starts the real broker on `127.0.0.1:0`, learns the port from the one start-up line the
//! broker prints on stdout, and talks the wire protocol (spec: `protocol.md`) over
//! `std::net::TcpStream`. Every read and write is bounded by [`IO_TIMEOUT`], so a broken
//! broker fails a test instead of hanging it.
//!
//! The decoders here are deliberately strict: reply header lines must be tokens separated by
//! exactly one space, numbers must be canonical decimal, records must be whole and their CRCs
//! must verify. Any deviation panics with the offending bytes.

#![allow(dead_code)] // Each test binary uses a different subset of the harness.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound on any single read, write or connect.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may take to print its start-up line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the broker may take to exit after SIGTERM / SIGINT.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// The opaque the broker uses when a request carries none (Metamorphosis' Integer.MAX_VALUE).
pub const OPAQUE_NONE: i32 = i32::MAX;
/// Group name the helpers use for `get` / `offset`.
pub const GROUP: &str = "test-group";
/// Fixed part of a record: see the record layout table in protocol.md.
pub const RECORD_HEADER_BYTES: usize = 64;
/// "IMG" + record format version 1.
pub const RECORD_MAGIC: u32 = 0x494D_4701;
/// Default `get_bytes_max`; also the maxSize the helpers ask for.
pub const GET_BYTES_MAX_DEFAULT: i32 = 1_048_576;

// ---------------------------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------------------------

/// A running (or stopped) broker process with its data directory.
pub struct Broker {
    child: Child,
    addr: SocketAddr,
    version: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    extra_stdout: Arc<Mutex<Vec<u8>>>,
    stdout_thread: Option<JoinHandle<()>>,
    exit_status: Option<ExitStatus>,
    // Dropped last: the directories must outlive the process.
    _log_tmp: tempfile::TempDir,
    _data_tmp: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker on a fresh temporary data directory (owned by the returned value).
    /// `args` come after `--listen 127.0.0.1:0 --data-dir <tmp>`.
    pub fn start(args: &[&str]) -> Broker {
        let data_tmp = tempfile::Builder::new()
            .prefix("imago-data-")
            .tempdir()
            .expect("create data tempdir");
        let mut broker = Broker::spawn(data_tmp.path(), args);
        broker._data_tmp = Some(data_tmp);
        broker
    }

    /// Starts a broker on an existing data directory (not owned: the caller keeps it alive).
    pub fn start_in(dir: &Path, args: &[&str]) -> Broker {
        Broker::spawn(dir, args)
    }

    fn spawn(data_dir: &Path, args: &[&str]) -> Broker {
        let log_tmp = tempfile::Builder::new()
            .prefix("imago-log-")
            .tempdir()
            .expect("create log tempdir");
        let log_path = log_tmp.path().join("stderr.log");
        let (child, addr, version, extra_stdout, stdout_thread) =
            spawn_process(data_dir, args, &log_path);
        Broker {
            child,
            addr,
            version,
            data_dir: data_dir.to_path_buf(),
            log_path,
            extra_stdout,
            stdout_thread: Some(stdout_thread),
            exit_status: None,
            _log_tmp: log_tmp,
            _data_tmp: None,
        }
    }

    /// Starts a new process on the same data directory after this one has exited
    /// (`terminate`, `interrupt` or `kill9`). Its stderr is appended to the same log.
    pub fn restart(&mut self, args: &[&str]) {
        assert!(
            self.exit_status.is_some(),
            "restart() needs the previous broker process to have exited"
        );
        self.join_stdout();
        let (child, addr, version, extra_stdout, stdout_thread) =
            spawn_process(&self.data_dir, args, &self.log_path);
        self.child = child;
        self.addr = addr;
        self.version = version;
        self.extra_stdout = extra_stdout;
        self.stdout_thread = Some(stdout_thread);
        self.exit_status = None;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The version string from the start-up line.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// Everything the broker wrote to stderr so far (lossy UTF-8).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Bytes the broker printed to stdout after its start-up line (the contract says none).
    pub fn extra_stdout(&self) -> Vec<u8> {
        self.extra_stdout.lock().unwrap().clone()
    }

    /// Resident set size of the broker process in KiB (`VmRSS` in /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Anonymous resident memory in KiB (`RssAnon`), 0 when the kernel does not report it.
    pub fn rss_anon_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "RssAnon:")
    }

    /// Sends a signal by name (`TERM`, `INT`, ...) through `kill(1)`; does not wait.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit_status {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit_status = Some(status);
                self.join_stdout();
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "broker pid {} did not exit within {timeout:?}\n--- broker stderr ---\n{}",
                    self.pid(),
                    tail(&self.log(), 8192)
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then asserts a clean exit (status 0) within [`EXIT_TIMEOUT`].
    pub fn terminate(&mut self) {
        self.stop_with("TERM");
    }

    /// SIGINT, then asserts a clean exit (status 0) within [`EXIT_TIMEOUT`].
    pub fn interrupt(&mut self) {
        self.stop_with("INT");
    }

    fn stop_with(&mut self, sig: &str) {
        self.signal(sig);
        let status = self.wait_exit(EXIT_TIMEOUT);
        assert!(
            status.success(),
            "broker exited with {status} after SIG{sig}\n--- broker stderr ---\n{}",
            tail(&self.log(), 8192)
        );
    }

    /// SIGKILL (`Child::kill` on unix) and reap.
    pub fn kill9(&mut self) {
        if self.exit_status.is_some() {
            return;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait after SIGKILL");
        self.exit_status = Some(status);
        self.join_stdout();
    }

    fn join_stdout(&mut self) {
        if let Some(handle) = self.stdout_thread.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.exit_status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- imago stderr (pid {}, last 8 KiB) ---\n{}\n--- end imago stderr ---",
                self.child.id(),
                tail(&self.log(), 8192)
            );
        }
    }
}

type Spawned = (
    Child,
    SocketAddr,
    String,
    Arc<Mutex<Vec<u8>>>,
    JoinHandle<()>,
);

fn spawn_process(data_dir: &Path, args: &[&str], log_path: &Path) -> Spawned {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open broker log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imago"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn imago (CARGO_BIN_EXE_imago)");

    let stdout = child.stdout.take().expect("piped stdout");
    let extra = Arc::new(Mutex::new(Vec::new()));
    let extra_in_thread = Arc::clone(&extra);
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let first = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(first);
        // Keep draining so the broker can never block on a full stdout pipe.
        let mut chunk = [0u8; 4096];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => extra_in_thread
                    .lock()
                    .unwrap()
                    .extend_from_slice(&chunk[..n]),
            }
        }
    });

    let log_text = || {
        let text = String::from_utf8_lossy(&fs::read(log_path).unwrap_or_default()).into_owned();
        tail(&text, 8192).to_string()
    };
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => {
            let _ = child.kill();
            panic!("reading the broker's start-up line: {e}\n{}", log_text());
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "broker printed no start-up line within {START_TIMEOUT:?}\n--- stderr ---\n{}",
                log_text()
            );
        }
    };
    if line.is_empty() {
        let status = child.wait().expect("wait");
        panic!(
            "broker exited ({status}) before printing its start-up line\n--- stderr ---\n{}",
            log_text()
        );
    }
    let (version, addr) = match parse_startup_line(&line) {
        Ok(parsed) => parsed,
        Err(why) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{why}\n--- stderr ---\n{}", log_text());
        }
    };
    (child, addr, version, extra, handle)
}

/// Parses `imago <version> listening on <ip:port>\n`.
pub fn parse_startup_line(line: &str) -> Result<(String, SocketAddr), String> {
    let Some(text) = line.strip_suffix('\n') else {
        return Err(format!("start-up line not ended by \\n: {line:?}"));
    };
    let tokens: Vec<&str> = text.split(' ').collect();
    match tokens.as_slice() {
        ["imago", version, "listening", "on", addr] if !version.is_empty() => {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| format!("bad address in start-up line {line:?}: {e}"))?;
            Ok((version.to_string(), addr))
        }
        _ => Err(format!(
            "start-up line is not `imago <version> listening on <ip:port>`: {line:?}"
        )),
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .expect("kB number")
        })
        .unwrap_or(0)
}

/// The last `max` bytes of `text` (at a char boundary).
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

/// One reply: `result <code> <len> <opaque>\r\n<body>` or `value <len> <opaque>\r\n<records>`.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    Result {
        code: u16,
        body: Vec<u8>,
        opaque: i32,
    },
    Value {
        body: Vec<u8>,
        opaque: i32,
    },
}

impl Reply {
    pub fn opaque(&self) -> i32 {
        match self {
            Reply::Result { opaque, .. } | Reply::Value { opaque, .. } => *opaque,
        }
    }

    /// The result code, or `None` for a `value` reply.
    pub fn code(&self) -> Option<u16> {
        match self {
            Reply::Result { code, .. } => Some(*code),
            Reply::Value { .. } => None,
        }
    }

    pub fn body(&self) -> &[u8] {
        match self {
            Reply::Result { body, .. } | Reply::Value { body, .. } => body,
        }
    }

    /// Asserts `result <code> .. <opaque>` and returns the body as UTF-8 text.
    #[track_caller]
    pub fn expect_result(&self, code: u16, opaque: i32) -> String {
        match self {
            Reply::Result {
                code: c,
                body,
                opaque: o,
            } if *c == code && *o == opaque => String::from_utf8(body.clone())
                .unwrap_or_else(|_| panic!("result body is not UTF-8: {self:?}")),
            _ => panic!("expected `result {code} _ {opaque}`, got {self:?}"),
        }
    }

    /// Asserts a `result` with `code` (any opaque) and returns the body text.
    #[track_caller]
    pub fn expect_code(&self, code: u16) -> String {
        let opaque = self.opaque();
        self.expect_result(code, opaque)
    }

    /// Asserts `value .. <opaque>` and decodes (and CRC-checks) its records.
    #[track_caller]
    pub fn expect_value(&self, opaque: i32) -> Vec<Record> {
        match self {
            Reply::Value { body, opaque: o } if *o == opaque => parse_records(body),
            _ => panic!("expected `value _ {opaque}`, got {self:?}"),
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Result { code, body, opaque } => write!(
                f,
                "`result {code} {} {opaque}` body {}",
                body.len(),
                show(body)
            ),
            Reply::Value { body, opaque } => write!(
                f,
                "`value {} {opaque}` body {}",
                body.len(),
                show(&body[..body.len().min(96)])
            ),
        }
    }
}

/// Printable rendering of bytes for assertion messages (escaped, truncated).
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 400;
    let cut = &bytes[..bytes.len().min(MAX)];
    let mut s = format!("\"{}\"", cut.escape_ascii());
    if bytes.len() > MAX {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}

/// Parses a canonical decimal number: it must print back identically (no `+`, no leading
/// zeros, no spaces).
#[track_caller]
pub fn canonical<T>(token: &str, what: &str) -> T
where
    T: FromStr + ToString,
{
    match token.parse::<T>() {
        Ok(n) if n.to_string() == token => n,
        _ => panic!("{what}: {token:?} is not a canonical decimal number"),
    }
}

fn parse_reply_header(line: &str) -> (Option<u16>, usize, i32) {
    let tokens: Vec<&str> = line.split(' ').collect();
    match tokens.as_slice() {
        ["result", code, len, opaque] => {
            assert_eq!(code.len(), 3, "result code must be 3 digits: {line:?}");
            (
                Some(canonical(code, "result code")),
                canonical(len, "result length"),
                canonical(opaque, "result opaque"),
            )
        }
        ["value", len, opaque] => (
            None,
            canonical(len, "value length"),
            canonical(opaque, "value opaque"),
        ),
        _ => panic!("not a reply header line (`result c n o` / `value n o`): {line:?}"),
    }
}

/// Parses a put reply body `<msgId> <partition> <offset>`.
#[track_caller]
pub fn parse_put_ack(body: &str) -> (u64, i32, u64) {
    let tokens: Vec<&str> = body.split(' ').collect();
    match tokens.as_slice() {
        [id, partition, offset] => (
            canonical(id, "msgId"),
            canonical(partition, "partition"),
            canonical(offset, "offset"),
        ),
        _ => panic!("put reply body is not `<msgId> <partition> <offset>`: {body:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// One decoded record (layout table in protocol.md). `raw` is the record's exact bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub raw: Vec<u8>,
    pub partition: u32,
    pub offset: u64,
    pub msg_id: u64,
    pub store_ts_ms: i64,
    pub born_ts_ms: i64,
    pub flag: u32,
    pub sysflag: u16,
    pub topic: String,
    pub tag: Vec<u8>,
    pub props: Vec<u8>,
    pub body: Vec<u8>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Record {{ {}/{} @{} id {} flag {:#x} tag {} props {} body {} }}",
            self.topic,
            self.partition,
            self.offset,
            self.msg_id,
            self.flag,
            show(&self.tag),
            show(&self.props),
            show(&self.body)
        )
    }
}

/// Total encoded size of a record with these variable parts.
pub fn record_size(topic: &str, tag: &[u8], props: &[u8], body: &[u8]) -> usize {
    RECORD_HEADER_BYTES + topic.len() + tag.len() + props.len() + body.len()
}

/// CRC32 (IEEE) of a record over bytes [0,8) and [12,total_len).
pub fn record_crc(raw: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&raw[0..8]);
    hasher.update(&raw[12..]);
    hasher.finalize()
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Decodes a `value` body: whole records only, each with a valid magic, CRC and lengths.
#[track_caller]
pub fn parse_records(bytes: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        assert!(
            rest.len() >= RECORD_HEADER_BYTES,
            "value body ends with a partial record header ({} bytes) at byte {at}",
            rest.len()
        );
        let total = be_u32(rest, 0) as usize;
        assert!(
            total >= RECORD_HEADER_BYTES && total <= rest.len(),
            "record at byte {at}: total_len {total} outside [64, {}] (value bodies carry whole records)",
            rest.len()
        );
        let raw = &rest[..total];
        let magic = be_u32(raw, 4);
        assert_eq!(
            magic, RECORD_MAGIC,
            "record at byte {at}: bad magic {magic:#x}"
        );
        let crc = be_u32(raw, 8);
        assert_eq!(
            crc,
            record_crc(raw),
            "record at byte {at}: CRC mismatch (stored {crc:#x})"
        );
        let body_len = be_u32(raw, 52) as usize;
        let topic_len = be_u16(raw, 56) as usize;
        let tag_len = be_u16(raw, 58) as usize;
        let props_len = be_u16(raw, 60) as usize;
        assert_eq!(
            RECORD_HEADER_BYTES + topic_len + tag_len + props_len + body_len,
            total,
            "record at byte {at}: 64 + topic_len + tag_len + props_len + body_len != total_len"
        );
        let mut p = RECORD_HEADER_BYTES;
        let mut take = |n: usize| {
            let s = raw[p..p + n].to_vec();
            p += n;
            s
        };
        let topic = String::from_utf8(take(topic_len)).expect("topic is UTF-8");
        let tag = take(tag_len);
        let props = take(props_len);
        let body = take(body_len);
        records.push(Record {
            raw: raw.to_vec(),
            partition: be_u32(raw, 12),
            offset: be_u64(raw, 16),
            msg_id: be_u64(raw, 24),
            store_ts_ms: be_u64(raw, 32) as i64,
            born_ts_ms: be_u64(raw, 40) as i64,
            flag: be_u32(raw, 48),
            sysflag: be_u16(raw, 62),
            topic,
            tag,
            props,
            body,
        });
        at += total;
    }
    records
}

// ---------------------------------------------------------------------------------------------
// Request builders (pure; for pipelining)
// ---------------------------------------------------------------------------------------------

/// The put checksum: CRC32 (IEEE) of the whole body, masked with 0x7FFFFFFF.
pub fn checksum(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

/// 7-token put with a checksum: `put <topic> <partition> <len> <flag> <checksum> <opaque>`.
pub fn put_cmd(topic: &str, partition: i32, flag: i32, body: &[u8], opaque: i32) -> Vec<u8> {
    let mut cmd = format!(
        "put {topic} {partition} {} {flag} {} {opaque}\r\n",
        body.len(),
        checksum(body)
    )
    .into_bytes();
    cmd.extend_from_slice(body);
    cmd
}

/// 6-token put (old clients, no checksum): `put <topic> <partition> <len> <flag> <opaque>`.
pub fn put_cmd_old(topic: &str, partition: i32, flag: i32, body: &[u8], opaque: i32) -> Vec<u8> {
    let mut cmd =
        format!("put {topic} {partition} {} {flag} {opaque}\r\n", body.len()).into_bytes();
    cmd.extend_from_slice(body);
    cmd
}

/// `get <topic> test-group <partition> <offset> <maxSize> <opaque>`.
pub fn get_cmd(topic: &str, partition: i32, offset: u64, max_size: i32, opaque: i32) -> Vec<u8> {
    format!("get {topic} {GROUP} {partition} {offset} {max_size} {opaque}\r\n").into_bytes()
}

/// A put body with an attribute (flag bit 0): int32 BE length + tag + payload.
pub fn attr_body(tag: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = (tag.len() as i32).to_be_bytes().to_vec();
    body.extend_from_slice(tag);
    body.extend_from_slice(payload);
    body
}

/// A put body for flag bits 0 and 1: attribute block, properties block, payload.
pub fn attr_props_body(tag: &[u8], props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = attr_body(tag, &[]);
    body.extend_from_slice(&(props.len() as i32).to_be_bytes());
    body.extend_from_slice(props);
    body.extend_from_slice(payload);
    body
}

/// A properties block: `key \x01 value \x02` repeated.
pub fn props_block(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in pairs {
        block.extend_from_slice(k.as_bytes());
        block.push(1);
        block.extend_from_slice(v.as_bytes());
        block.push(2);
    }
    block
}

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

/// One client connection with its own read buffer. Every operation is bounded by
/// [`IO_TIMEOUT`]; the `try_` forms return I/O errors instead of panicking.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Conn {
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
        })
    }

    /// A clone of the socket for writing from another thread (pipelining while reading).
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("clone TcpStream")
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes all bytes (one `write_all`).
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Number of bytes received but not consumed yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads more bytes into the buffer before `deadline`. Ok(0) means EOF.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 1 << 20 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        self.stream.set_read_timeout(Some(deadline - now))?;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a line through its `\n`. Ok(None) on EOF before any byte of the line.
    pub fn try_read_raw_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut scanned = 0;
        loop {
            let pending = &self.buf[self.pos..];
            if let Some(i) = pending[scanned..].iter().position(|&b| b == b'\n') {
                let end = self.pos + scanned + i + 1;
                let line = self.buf[self.pos..end].to_vec();
                self.pos = end;
                return Ok(Some(line));
            }
            scanned = pending.len();
            if self.fill(deadline)? == 0 {
                if self.buffered() == 0 {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF inside a line: {}", show(&self.buf[self.pos..])),
                ));
            }
        }
    }

    /// Reads one `\r\n`-terminated line and returns it without the terminator.
    #[track_caller]
    pub fn read_line(&mut self) -> String {
        let raw = match self.try_read_raw_line() {
            Ok(Some(raw)) => raw,
            Ok(None) => panic!("connection closed while waiting for a line"),
            Err(e) => panic!("reading a line: {}", io_why(&e)),
        };
        let text = raw
            .strip_suffix(b"\r\n")
            .unwrap_or_else(|| panic!("line not terminated by \\r\\n: {}", show(&raw)));
        String::from_utf8(text.to_vec())
            .unwrap_or_else(|_| panic!("line is not UTF-8: {}", show(&raw)))
    }

    pub fn try_read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.buffered() < n {
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {} of {n} bytes", self.buffered()),
                ));
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    #[track_caller]
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        self.try_read_exact(n)
            .unwrap_or_else(|e| panic!("reading {n} bytes: {}", io_why(&e)))
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    #[track_caller]
    pub fn expect_bytes(&mut self, expected: &[u8]) {
        let got = self.read_exact(expected.len());
        assert!(
            got == expected,
            "byte-exact reply mismatch\nexpected {}\n     got {}",
            show(expected),
            show(&got)
        );
    }

    /// Reads one reply. Ok(None) on a clean EOF before the reply started.
    pub fn try_read_reply(&mut self) -> io::Result<Option<Reply>> {
        let Some(raw) = self.try_read_raw_line()? else {
            return Ok(None);
        };
        let line = raw
            .strip_suffix(b"\r\n")
            .and_then(|l| std::str::from_utf8(l).ok())
            .unwrap_or_else(|| panic!("reply header is not a UTF-8 \\r\\n line: {}", show(&raw)));
        let (code, len, opaque) = parse_reply_header(line);
        let body = self.try_read_exact(len)?;
        Ok(Some(match code {
            Some(code) => Reply::Result { code, body, opaque },
            None => Reply::Value { body, opaque },
        }))
    }

    #[track_caller]
    pub fn read_reply(&mut self) -> Reply {
        match self.try_read_reply() {
            Ok(Some(reply)) => reply,
            Ok(None) => panic!("connection closed while waiting for a reply"),
            Err(e) => panic!("reading a reply: {}", io_why(&e)),
        }
    }

    /// Asserts the broker closes the connection (EOF, or a reset) without sending anything.
    #[track_caller]
    pub fn expect_eof(&mut self) {
        if self.buffered() > 0 {
            panic!(
                "expected EOF, have unread bytes {}",
                show(&self.buf[self.pos..])
            );
        }
        match self.fill(Instant::now() + IO_TIMEOUT) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Ok(_) => panic!("expected EOF, got bytes {}", show(&self.buf[self.pos..])),
            Err(e) => panic!("expected EOF, got error {e}"),
        }
    }

    /// Asserts nothing arrives (and the connection stays open) for `quiet`.
    #[track_caller]
    pub fn expect_silence(&mut self, quiet: Duration) {
        if self.buffered() > 0 {
            panic!(
                "expected silence, have unread bytes {}",
                show(&self.buf[self.pos..])
            );
        }
        match self.fill(Instant::now() + quiet) {
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            }
            Ok(0) => panic!("expected silence, the connection was closed"),
            Ok(_) => panic!("expected silence, got {}", show(&self.buf[self.pos..])),
            Err(e) => panic!("expected silence, got error {e}"),
        }
    }

    /// Reads a memcached-form stats reply (`STAT <name> <value>\r\n`... `END\r\n`) and returns
    /// the (name, value) pairs. Panics on any other line.
    #[track_caller]
    pub fn read_stats(&mut self) -> Vec<(String, String)> {
        let mut stats = Vec::new();
        for _ in 0..100_000 {
            let line = self.read_line();
            if line == "END" {
                return stats;
            }
            stats.push(parse_stat_line(&line));
        }
        panic!("stats reply longer than 100000 lines");
    }

    // ---- command helpers ----

    /// `version <opaque>`; returns the version string.
    #[track_caller]
    pub fn version(&mut self, opaque: i32) -> String {
        self.send(format!("version {opaque}\r\n").as_bytes());
        self.read_reply().expect_result(200, opaque)
    }

    /// Put (7-token form with a checksum, flag 0); asserts 200 and returns
    /// (msg_id, partition, offset).
    #[track_caller]
    pub fn put(
        &mut self,
        topic: &str,
        partition: i32,
        body: &[u8],
        opaque: i32,
    ) -> (u64, i32, u64) {
        self.put_flag(topic, partition, 0, body, opaque)
    }

    #[track_caller]
    pub fn put_flag(
        &mut self,
        topic: &str,
        partition: i32,
        flag: i32,
        body: &[u8],
        opaque: i32,
    ) -> (u64, i32, u64) {
        self.send(&put_cmd(topic, partition, flag, body, opaque));
        let text = self.read_reply().expect_result(200, opaque);
        let ack = parse_put_ack(&text);
        if partition >= 0 {
            assert_eq!(
                ack.1, partition,
                "put reply names another partition: {text:?}"
            );
        }
        ack
    }

    /// `get <topic> <group> <partition> <offset> <maxSize> <opaque>`; returns the reply.
    #[track_caller]
    pub fn get(
        &mut self,
        topic: &str,
        group: &str,
        partition: i32,
        offset: u64,
        max_size: i32,
        opaque: i32,
    ) -> Reply {
        self.send(
            format!("get {topic} {group} {partition} {offset} {max_size} {opaque}\r\n").as_bytes(),
        );
        let reply = self.read_reply();
        assert_eq!(reply.opaque(), opaque, "get reply opaque: {reply:?}");
        reply
    }

    /// A get that must return records; returns them.
    #[track_caller]
    pub fn get_records(
        &mut self,
        topic: &str,
        partition: i32,
        offset: u64,
        max_size: i32,
    ) -> Vec<Record> {
        self.get(topic, GROUP, partition, offset, max_size, 77)
            .expect_value(77)
    }

    /// Reads a whole partition from offset 0 until caught up (404), following next offsets.
    /// Asserts contiguous offsets, the topic and the partition of every record.
    #[track_caller]
    pub fn read_partition(&mut self, topic: &str, partition: i32) -> Vec<Record> {
        self.read_partition_with(topic, partition, GET_BYTES_MAX_DEFAULT)
    }

    #[track_caller]
    pub fn read_partition_with(
        &mut self,
        topic: &str,
        partition: i32,
        max_size: i32,
    ) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for round in 0..1_000_000i32 {
            assert!(
                Instant::now() < deadline,
                "read_partition {topic}/{partition} took > 30 s"
            );
            let offset = out.len() as u64;
            let reply = self.get(topic, GROUP, partition, offset, max_size, round);
            match &reply {
                Reply::Value { .. } => {
                    let records = reply.expect_value(round);
                    assert!(!records.is_empty(), "empty value reply at offset {offset}");
                    for r in records {
                        assert_eq!(r.offset, out.len() as u64, "non-contiguous offsets: {r:?}");
                        assert_eq!(r.topic, topic, "record topic");
                        assert_eq!(r.partition, partition as u32, "record partition");
                        out.push(r);
                    }
                }
                Reply::Result { code: 404, .. } => {
                    let text = reply.expect_result(404, round);
                    assert_eq!(text, format!("no message at offset {offset}"));
                    return out;
                }
                _ => panic!("reading {topic}/{partition} at {offset}: {reply:?}"),
            }
        }
        unreachable!("read_partition: too many rounds");
    }

    /// `offset <topic> <group> <partition> <offset> <opaque>`; returns the reply.
    #[track_caller]
    pub fn offset(&mut self, topic: &str, partition: i32, offset: u64, opaque: i32) -> Reply {
        self.send(format!("offset {topic} {GROUP} {partition} {offset} {opaque}\r\n").as_bytes());
        self.read_reply()
    }

    /// The general `stats` counter `name`.
    #[track_caller]
    pub fn counter(&mut self, name: &str) -> u64 {
        let stats = self.stats(None);
        canonical(
            stat(&stats, name).unwrap_or_else(|| panic!("no STAT {name} in {stats:?}")),
            name,
        )
    }

    /// `stats [item]` in memcached form.
    #[track_caller]
    pub fn stats(&mut self, item: Option<&str>) -> Vec<(String, String)> {
        match item {
            None => self.send(b"stats\r\n"),
            Some(item) => self.send(format!("stats {item}\r\n").as_bytes()),
        }
        self.read_stats()
    }
}

/// Describes a read error; a read timeout is named as such (Linux reports it as EAGAIN).
pub fn io_why(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("nothing arrived within {IO_TIMEOUT:?} (read timeout)")
        }
        _ => e.to_string(),
    }
}

/// Parses `STAT <name> <value>`: a non-empty name without spaces, then one space, then the
/// value (the rest of the line, which may itself contain spaces).
#[track_caller]
pub fn parse_stat_line(line: &str) -> (String, String) {
    let rest = line
        .strip_prefix("STAT ")
        .unwrap_or_else(|| panic!("not a `STAT <name> <value>` line: {line:?}"));
    let (name, value) = rest
        .split_once(' ')
        .unwrap_or_else(|| panic!("STAT line without a value: {line:?}"));
    assert!(!name.is_empty(), "STAT line with an empty name: {line:?}");
    (name.to_string(), value.to_string())
}

/// Parses a result-form stats body (`STAT ...\r\n`* `END\r\n`).
#[track_caller]
pub fn parse_stats_body(body: &str) -> Vec<(String, String)> {
    let inner = body
        .strip_suffix("END\r\n")
        .unwrap_or_else(|| panic!("stats body does not end with END\\r\\n: {body:?}"));
    if inner.is_empty() {
        return Vec::new();
    }
    let lines = inner
        .strip_suffix("\r\n")
        .unwrap_or_else(|| panic!("stats body lines not \\r\\n-terminated: {body:?}"));
    lines.split("\r\n").map(parse_stat_line).collect()
}

/// The value of stat `name`, if present.
pub fn stat<'a>(stats: &'a [(String, String)], name: &str) -> Option<&'a str> {
    stats
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Records keyed by (topic, partition, offset).
pub type Log = HashMap<(String, u32, u64), Record>;

/// Reads every partition of every topic given (topic, partition count) into a [`Log`].
pub fn read_all(conn: &mut Conn, topics: &[(&str, i32)]) -> Log {
    let mut map = HashMap::new();
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            for r in conn.read_partition(topic, p) {
                map.insert((topic.to_string(), p as u32, r.offset), r);
            }
        }
    }
    map
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs the broker binary with `args` in `cwd` (no `--listen`/`--data-dir` added) and waits
/// up to `timeout` for it to exit. Returns (status, stdout, stderr); kills it and panics on
/// timeout.
pub fn run_binary(args: &[&str], cwd: &Path, timeout: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imago"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imago");
    let collect = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`imago {}` did not exit within {timeout:?}; stderr: {}",
                args.join(" "),
                err.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Consumer groups (spec-groups.md): join / heartbeat / leave / commit / fetch / reset, long-poll
// and tag-filter gets
// ---------------------------------------------------------------------------------------------

use std::collections::BTreeMap;

/// A join / heartbeat reply body: `<generation> <sessionTimeoutMs>[ <partition>:<offset>]...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub generation: i64,
    pub session_timeout_ms: u64,
    /// partition -> offset to start from.
    pub partitions: BTreeMap<u32, u64>,
}

impl Assignment {
    pub fn partition_list(&self) -> Vec<u32> {
        self.partitions.keys().copied().collect()
    }
}

/// Parses a join / heartbeat body strictly (single spaces, canonical numbers, no partition
/// listed twice, a positive generation).
#[track_caller]
pub fn parse_assignment(body: &str) -> Assignment {
    let tokens: Vec<&str> = body.split(' ').collect();
    assert!(
        tokens.len() >= 2,
        "assignment is not `<generation> <sessionTimeoutMs>[ <p>:<o>]...`: {body:?}"
    );
    let generation: i64 = canonical(tokens[0], "generation");
    assert!(generation >= 1, "generation must be positive: {body:?}");
    let session_timeout_ms: u64 = canonical(tokens[1], "sessionTimeoutMs");
    let mut partitions = BTreeMap::new();
    for pair in parse_partition_offsets(&tokens[2..].join(" ")) {
        assert!(
            partitions.insert(pair.0, pair.1).is_none(),
            "partition {} listed twice in {body:?}",
            pair.0
        );
    }
    Assignment {
        generation,
        session_timeout_ms,
        partitions,
    }
}

/// Parses `<partition>:<offset>[ <partition>:<offset>]...` (empty text: no pairs), in the order
/// sent.
#[track_caller]
pub fn parse_partition_offsets(text: &str) -> Vec<(u32, u64)> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(' ')
        .map(|pair| {
            let (p, o) = pair
                .split_once(':')
                .unwrap_or_else(|| panic!("not `<partition>:<offset>`: {pair:?} in {text:?}"));
            (canonical(p, "partition"), canonical(o, "offset"))
        })
        .collect()
}

/// The cluster assignment the spec prescribes: members sorted by id (byte order), partitions
/// 0..n-1 in order, member i gets a contiguous range of P/M partitions, the first P%M one more.
pub fn range_assignment(members: &[&str], partitions: u32) -> BTreeMap<String, Vec<u32>> {
    let mut sorted: Vec<&str> = members.to_vec();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    sorted.dedup();
    let m = sorted.len() as u32;
    let mut out = BTreeMap::new();
    let mut next = 0u32;
    for (i, member) in sorted.iter().enumerate() {
        let count = partitions / m + u32::from((i as u32) < partitions % m);
        out.insert(member.to_string(), (next..next + count).collect());
        next += count;
    }
    out
}

/// `get` with the long-poll / tag-filter forms: 7 tokens when `tags` is None, 8 otherwise.
#[allow(clippy::too_many_arguments)]
pub fn get_wait_cmd(
    topic: &str,
    group: &str,
    partition: i32,
    offset: u64,
    max_size: i32,
    wait_ms: i64,
    tags: Option<&str>,
    opaque: i32,
) -> Vec<u8> {
    match tags {
        None => {
            format!("get {topic} {group} {partition} {offset} {max_size} {wait_ms} {opaque}\r\n")
        }
        Some(tags) => format!(
            "get {topic} {group} {partition} {offset} {max_size} {wait_ms} {tags} {opaque}\r\n"
        ),
    }
    .into_bytes()
}

/// Polls `f` every 10 ms until it returns Some or `timeout` passes (then None).
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The `q`-quantile (0.0..=1.0) of `samples` (sorted in place), nearest rank.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    assert!(!samples.is_empty(), "quantile of no samples");
    samples.sort();
    let rank = ((samples.len() as f64) * q).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

impl Conn {
    /// Sends `line` + `\r\n` and reads one reply, which must carry `opaque`.
    #[track_caller]
    pub fn call(&mut self, line: &str, opaque: i32) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        let reply = self.read_reply();
        assert_eq!(
            reply.opaque(),
            opaque,
            "reply to {line:?} carries another opaque: {reply:?}"
        );
        reply
    }

    /// `join <group> <topic> <member> <mode> <start> <opaque>`.
    #[track_caller]
    pub fn join(
        &mut self,
        group: &str,
        topic: &str,
        member: &str,
        mode: &str,
        start: &str,
        opaque: i32,
    ) -> Reply {
        self.call(
            &format!("join {group} {topic} {member} {mode} {start} {opaque}"),
            opaque,
        )
    }

    /// A join that must succeed (200); returns the parsed assignment.
    #[track_caller]
    pub fn join_ok(
        &mut self,
        group: &str,
        topic: &str,
        member: &str,
        mode: &str,
        start: &str,
        opaque: i32,
    ) -> Assignment {
        let reply = self.join(group, topic, member, mode, start, opaque);
        parse_assignment(&reply.expect_result(200, opaque))
    }

    /// `heartbeat <group> <topic> <member> <opaque>`.
    #[track_caller]
    pub fn heartbeat(&mut self, group: &str, topic: &str, member: &str, opaque: i32) -> Reply {
        self.call(
            &format!("heartbeat {group} {topic} {member} {opaque}"),
            opaque,
        )
    }

    /// A heartbeat that must succeed (200); returns the parsed assignment.
    #[track_caller]
    pub fn heartbeat_ok(
        &mut self,
        group: &str,
        topic: &str,
        member: &str,
        opaque: i32,
    ) -> Assignment {
        let reply = self.heartbeat(group, topic, member, opaque);
        parse_assignment(&reply.expect_result(200, opaque))
    }

    /// `leave <group> <topic> <member> <opaque>`; asserts `result 200 0 <opaque>`.
    #[track_caller]
    pub fn leave_ok(&mut self, group: &str, topic: &str, member: &str, opaque: i32) {
        let reply = self.call(&format!("leave {group} {topic} {member} {opaque}"), opaque);
        assert_eq!(
            reply.expect_result(200, opaque),
            "",
            "leave reply body must be empty"
        );
    }

    /// `commit <group> <topic> <partition> <offset> <member> <generation> <opaque>`.
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &mut self,
        group: &str,
        topic: &str,
        partition: i64,
        offset: u64,
        member: &str,
        generation: i64,
        opaque: i32,
    ) -> Reply {
        self.call(
            &format!("commit {group} {topic} {partition} {offset} {member} {generation} {opaque}"),
            opaque,
        )
    }

    /// A commit that must succeed: `result 200 0 <opaque>`.
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub fn commit_ok(
        &mut self,
        group: &str,
        topic: &str,
        partition: i64,
        offset: u64,
        member: &str,
        generation: i64,
        opaque: i32,
    ) {
        let reply = self.commit(group, topic, partition, offset, member, generation, opaque);
        assert_eq!(
            reply.expect_result(200, opaque),
            "",
            "commit {group} {topic} {partition} {offset} {member} {generation}: body must be empty"
        );
    }

    /// `fetch <group> <topic> <partition> <member> <opaque>`.
    #[track_caller]
    pub fn fetch(
        &mut self,
        group: &str,
        topic: &str,
        partition: i64,
        member: &str,
        opaque: i32,
    ) -> Reply {
        self.call(
            &format!("fetch {group} {topic} {partition} {member} {opaque}"),
            opaque,
        )
    }

    /// A fetch: Some(offset) on 200, None on `404 no committed offset`; anything else panics.
    #[track_caller]
    pub fn fetch_offset(
        &mut self,
        group: &str,
        topic: &str,
        partition: i64,
        member: &str,
        opaque: i32,
    ) -> Option<u64> {
        let reply = self.fetch(group, topic, partition, member, opaque);
        match reply.code() {
            Some(200) => Some(canonical(
                &reply.expect_result(200, opaque),
                "fetched offset",
            )),
            Some(404) => {
                assert_eq!(reply.expect_result(404, opaque), "no committed offset");
                None
            }
            _ => panic!("fetch {group} {topic} {partition} {member}: {reply:?}"),
        }
    }

    /// `reset <group> <topic> <partition> <target> <opaque>`.
    #[track_caller]
    pub fn reset(
        &mut self,
        group: &str,
        topic: &str,
        partition: i64,
        target: &str,
        opaque: i32,
    ) -> Reply {
        self.call(
            &format!("reset {group} {topic} {partition} {target} {opaque}"),
            opaque,
        )
    }

    /// A reset that must succeed; returns the `<partition>:<offset>` pairs as a map (each
    /// partition at most once).
    #[track_caller]
    pub fn reset_ok(
        &mut self,
        group: &str,
        topic: &str,
        partition: i64,
        target: &str,
        opaque: i32,
    ) -> BTreeMap<u32, u64> {
        let reply = self.reset(group, topic, partition, target, opaque);
        let body = reply.expect_result(200, opaque);
        let mut map = BTreeMap::new();
        for (p, o) in parse_partition_offsets(&body) {
            assert!(
                map.insert(p, o).is_none(),
                "reset reply lists partition {p} twice: {body:?}"
            );
        }
        map
    }

    /// `stats <item> <opaque>` (result form); returns the STAT pairs.
    #[track_caller]
    pub fn stats_result(&mut self, item: &str, opaque: i32) -> Vec<(String, String)> {
        let reply = self.call(&format!("stats {item} {opaque}"), opaque);
        parse_stats_body(&reply.expect_result(200, opaque))
    }

    /// Reads `n` replies and returns them by opaque (replies to long-poll gets may come out of
    /// order); an opaque seen twice panics.
    #[track_caller]
    pub fn read_replies_by_opaque(&mut self, n: usize) -> HashMap<i32, Reply> {
        let mut out = HashMap::new();
        for _ in 0..n {
            let reply = self.read_reply();
            let opaque = reply.opaque();
            if let Some(prev) = out.insert(opaque, reply) {
                panic!(
                    "two replies with opaque {opaque}: {prev:?} and {:?}",
                    out[&opaque]
                );
            }
        }
        out
    }
}
