//! Load engines. Producers: per connection a writer thread keeping up to `depth` puts in flight
//! (optionally paced to a rate) and a reader thread counting acknowledgements and recording
//! the put-to-ack latency. Consumers: one thread per connection issuing reads and handing each
//! delivered body to a sink (counting; end-to-end latency from the body's send timestamp).

use crate::crc;
use crate::wire::{imago, stamp_of, Consume, Msg, Produce};
use hdrhistogram::Histogram;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The time base of send stamps and latencies: nanoseconds since the first call.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn new_hist() -> Histogram<u64> {
    // 100 ns to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(100, 3_600_000_000_000, 3).expect("histogram bounds")
}

const STACK: usize = 512 << 10;
const WRITE_BATCH: usize = 256 << 10;

/// Message bodies: fixed (checksums computed once) or stamped with the send time.
#[derive(Clone)]
pub struct Bodies {
    /// (put body, flag, checksum, stamp position) per tag variant.
    variants: Vec<(Vec<u8>, u32, i32, usize)>,
    stamped: bool,
    need_checksum: bool,
    scratch: Vec<u8>,
}

impl Bodies {
    /// `size` payload bytes; `tags` rotate per message (imago attribute, flag bit 0).
    pub fn new(size: usize, tags: &[String], stamped: bool, need_checksum: bool) -> Bodies {
        let payload: Vec<u8> = (0..size)
            .map(|i| b'a' + ((i * 7 + i / 26) % 26) as u8)
            .collect();
        let mk = |tag: Option<&str>| {
            let (b, flag) = imago::put_body(&payload, tag);
            let at = b.len() - payload.len();
            let ck = if need_checksum {
                crc::put_checksum(&b)
            } else {
                -1
            };
            (b, flag, ck, at)
        };
        let variants = if tags.is_empty() {
            vec![mk(None)]
        } else {
            tags.iter().map(|t| mk(Some(t))).collect()
        };
        Bodies {
            variants,
            stamped,
            need_checksum,
            scratch: Vec::new(),
        }
    }

    #[inline]
    fn with<R>(&mut self, seq: u64, stamp: u64, f: impl FnOnce(&Msg) -> R) -> R {
        let v = &self.variants[(seq % self.variants.len() as u64) as usize];
        if !self.stamped {
            return f(&Msg {
                body: &v.0,
                flag: v.1,
                checksum: v.2,
            });
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&v.0);
        let at = v.3;
        let n = (self.scratch.len() - at).min(8);
        self.scratch[at..at + n].copy_from_slice(&stamp.to_le_bytes()[..n]);
        let ck = if self.need_checksum {
            crc::put_checksum(&self.scratch)
        } else {
            -1
        };
        f(&Msg {
            body: &self.scratch,
            flag: v.1,
            checksum: ck,
        })
    }
}

pub type ProducerFactory = Arc<dyn Fn(u32) -> Box<dyn Produce> + Send + Sync>;

pub struct ProduceSpec {
    pub depth: u32,
    /// Total puts (split over connections); None: until stopped.
    pub count: Option<u64>,
    /// Total puts per second over all connections; None: as fast as acknowledgements allow.
    pub rate: Option<f64>,
    pub bodies: Bodies,
}

struct ConnShared {
    sent: AtomicU64,
    acked: AtomicU64,
    done_sending: AtomicBool,
    send_ns: Box<[AtomicU64]>,
}

#[derive(Default)]
struct Global {
    stop: AtomicBool,
    acked: AtomicU64,
    errors: AtomicU64,
    last_ack_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
    failure: Mutex<Option<String>>,
}

impl Global {
    fn fail(&self, e: String) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            *f = Some(e);
        }
        self.stop.store(true, SeqCst);
    }
}

pub struct ProducerSet {
    g: Arc<Global>,
    handles: Vec<JoinHandle<Option<Histogram<u64>>>>,
    pub start_ns: u64,
}

pub struct ProduceResult {
    pub acked: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub ack_latency: Histogram<u64>,
}

impl ProducerSet {
    pub fn start(
        streams: Vec<TcpStream>,
        spec: &ProduceSpec,
        make: ProducerFactory,
    ) -> Result<ProducerSet, String> {
        let g = Arc::new(Global::default());
        let n = streams.len() as u64;
        let depth = spec.depth.max(1) as u64;
        let start_ns = now_ns();
        let mut handles = Vec::new();
        for (i, mut s) in streams.into_iter().enumerate() {
            let mut wire_w = make(i as u32);
            let mut wire_r = make(i as u32);
            wire_w.setup(&mut s)?;
            let quota = match spec.count {
                Some(c) => c / n + u64::from((i as u64) < c % n),
                None => u64::MAX,
            };
            let shared = Arc::new(ConnShared {
                sent: AtomicU64::new(0),
                acked: AtomicU64::new(0),
                done_sending: AtomicBool::new(false),
                send_ns: (0..depth).map(|_| AtomicU64::new(0)).collect(),
            });
            let rate = spec.rate.map(|r| r / n as f64);
            let mut bodies = spec.bodies.clone();
            let rs = s.try_clone().map_err(|e| e.to_string())?;
            let (c, gw) = (shared.clone(), g.clone());
            let writer = thread::Builder::new()
                .name(format!("put-w{i}"))
                .stack_size(STACK)
                .spawn(move || {
                    if rate.is_some() {
                        crate::sys::tight_timer_slack();
                    }
                    if let Err(e) =
                        write_loop(s, &mut *wire_w, &c, &gw, quota, depth, rate, &mut bodies)
                    {
                        gw.fail(format!("connection {i} write: {e}"));
                    }
                    c.done_sending.store(true, SeqCst);
                    None
                })
                .map_err(|e| e.to_string())?;
            let wt = writer.thread().clone();
            let (c, gr) = (shared, g.clone());
            let reader = thread::Builder::new()
                .name(format!("put-r{i}"))
                .stack_size(STACK)
                .spawn(move || {
                    let mut h = new_hist();
                    if let Err(e) = read_loop(rs, &mut *wire_r, &c, &gr, depth, &wt, &mut h) {
                        gr.fail(format!("connection {i} read: {e}"));
                    }
                    wt.unpark();
                    Some(h)
                })
                .map_err(|e| e.to_string())?;
            handles.push(writer);
            handles.push(reader);
        }
        Ok(ProducerSet {
            g,
            handles,
            start_ns,
        })
    }

    pub fn acked(&self) -> u64 {
        self.g.acked.load(Relaxed)
    }
    /// Asks writers to stop; readers then collect the acknowledgements still due.
    pub fn stop(&self) {
        self.g.stop.store(true, SeqCst);
    }
    pub fn done(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }
    pub fn failure(&self) -> Option<String> {
        self.g.failure.lock().unwrap().clone()
    }

    pub fn finish(self) -> Result<ProduceResult, String> {
        let mut hist = new_hist();
        for h in self.handles {
            if let Some(x) = h
                .join()
                .map_err(|_| "producer thread panicked".to_string())?
            {
                let _ = hist.add(&x);
            }
        }
        if let Some(f) = self.g.failure.lock().unwrap().clone() {
            return Err(f);
        }
        let last = self.g.last_ack_ns.load(SeqCst).max(self.start_ns + 1);
        Ok(ProduceResult {
            acked: self.g.acked.load(SeqCst),
            errors: self.g.errors.load(SeqCst),
            first_error: self.g.first_error.lock().unwrap().clone(),
            seconds: (last - self.start_ns) as f64 / 1e9,
            ack_latency: hist,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn write_loop(
    mut s: TcpStream,
    wire: &mut dyn Produce,
    c: &ConnShared,
    g: &Global,
    quota: u64,
    depth: u64,
    rate: Option<f64>,
    bodies: &mut Bodies,
) -> std::io::Result<()> {
    let t0 = Instant::now();
    let mut seq = 0u64;
    let mut out: Vec<u8> = Vec::with_capacity(WRITE_BATCH + 64 * 1024);
    while seq < quota && !g.stop.load(Relaxed) {
        let acked = c.acked.load(Acquire);
        let free = depth - (seq - acked);
        if free == 0 {
            thread::park_timeout(Duration::from_millis(20));
            continue;
        }
        let mut n = free.min(quota - seq);
        if let Some(r) = rate {
            let due = (t0.elapsed().as_secs_f64() * r) as u64 + 1;
            if due <= seq {
                let at = t0 + Duration::from_secs_f64(seq as f64 / r);
                let now = Instant::now();
                if at > now {
                    thread::sleep((at - now).min(Duration::from_millis(50)));
                }
                continue;
            }
            n = n.min(due - seq);
        }
        out.clear();
        let now = now_ns();
        let mut k = 0;
        while k < n {
            let q = seq + k;
            bodies.with(q, now, |m| wire.encode(q, m, &mut out));
            c.send_ns[(q % depth) as usize].store(now, Relaxed);
            k += 1;
            if out.len() >= WRITE_BATCH {
                break;
            }
        }
        c.sent.store(seq + k, Release);
        s.write_all(&out)?;
        seq += k;
    }
    Ok(())
}

fn read_loop(
    mut s: TcpStream,
    wire: &mut dyn Produce,
    c: &ConnShared,
    g: &Global,
    depth: u64,
    writer: &thread::Thread,
    hist: &mut Histogram<u64>,
) -> Result<(), String> {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 1 << 20];
    let (mut lo, mut hi) = (0usize, 0usize);
    let mut acked = 0u64;
    loop {
        if c.done_sending.load(Acquire) && acked >= c.sent.load(Acquire) {
            return Ok(());
        }
        if g.failure.lock().unwrap().is_some() {
            return Ok(());
        }
        if hi == buf.len() {
            if lo > 0 {
                buf.copy_within(lo..hi, 0);
                hi -= lo;
                lo = 0;
            } else {
                buf.resize(buf.len() * 2, 0);
            }
        }
        match s.read(&mut buf[hi..]) {
            Ok(0) => return Err("the broker closed the connection".into()),
            Ok(n) => hi += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.to_string()),
        }
        let a = wire.acks(&buf[lo..hi])?;
        lo += a.consumed;
        if a.acks > 0 {
            let now = now_ns();
            for k in acked..acked + a.acks {
                hist.saturating_record(
                    now.saturating_sub(c.send_ns[(k % depth) as usize].load(Relaxed))
                        .max(100),
                );
            }
            acked += a.acks;
            c.acked.store(acked, Release);
            writer.unpark();
            g.acked.fetch_add(a.acks, Relaxed);
            g.last_ack_ns.fetch_max(now, Relaxed);
            if a.errors > 0 {
                g.errors.fetch_add(a.errors, Relaxed);
                let mut fe = g.first_error.lock().unwrap();
                if fe.is_none() {
                    *fe = a.first_error;
                }
            }
        }
        if lo == hi {
            lo = 0;
            hi = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Consumers

#[derive(Default)]
struct CGlobal {
    stop: AtomicBool,
    delivered: AtomicU64,
    /// Stop when delivered reaches this.
    target: AtomicU64,
    reached_ns: AtomicU64,
    last_delivery_ns: AtomicU64,
    /// While set, consumers send nothing (see [`ConsumerSet::pause`]).
    paused: AtomicBool,
    failure: Mutex<Option<String>>,
}

pub struct ConsumerSet {
    g: Arc<CGlobal>,
    handles: Vec<JoinHandle<(Histogram<u64>, u64)>>,
    pub start_ns: u64,
}

pub struct ConsumeResult {
    pub delivered: u64,
    /// Start to the moment the target was reached (or the last delivery).
    pub seconds: f64,
    pub latency: Histogram<u64>,
    pub unstamped: u64,
}

impl ConsumerSet {
    /// `stamp_from_ns`: record end-to-end latency of bodies stamped at or after this time
    /// (None: do not look at bodies).
    pub fn start(
        conns: Vec<(TcpStream, Box<dyn Consume>)>,
        target: u64,
        stamp_from_ns: Option<u64>,
    ) -> Result<ConsumerSet, String> {
        let g = Arc::new(CGlobal {
            target: AtomicU64::new(target),
            ..Default::default()
        });
        let start_ns = now_ns();
        let mut handles = Vec::new();
        for (i, (s, mut wire)) in conns.into_iter().enumerate() {
            let g = g.clone();
            let h = thread::Builder::new()
                .name(format!("get{i}"))
                .stack_size(STACK)
                .spawn(move || {
                    let mut hist = new_hist();
                    let mut unstamped = 0;
                    if let Err(e) =
                        consume_loop(s, &mut *wire, &g, stamp_from_ns, &mut hist, &mut unstamped)
                    {
                        let mut f = g.failure.lock().unwrap();
                        if f.is_none() {
                            *f = Some(format!("consumer {i}: {e}"));
                        }
                        g.stop.store(true, SeqCst);
                    }
                    (hist, unstamped)
                })
                .map_err(|e| e.to_string())?;
            handles.push(h);
        }
        Ok(ConsumerSet {
            g,
            handles,
            start_ns,
        })
    }

    pub fn delivered(&self) -> u64 {
        self.g.delivered.load(Relaxed)
    }
    pub fn set_target(&self, t: u64) {
        self.g.target.store(t, SeqCst);
        if self.g.delivered.load(SeqCst) >= t {
            let _ = self
                .g
                .reached_ns
                .compare_exchange(0, now_ns(), SeqCst, SeqCst);
        }
    }
    pub fn stop(&self) {
        self.g.stop.store(true, SeqCst);
    }
    /// Pauses (or resumes) reading: while paused, each consumer still takes in the replies
    /// already on their way but holds back every request it would send (its next gets,
    /// heartbeats, commits), so the broker soon serves it nothing. A pause must stay well
    /// inside the group's session timeout, since heartbeats are held too.
    pub fn pause(&self, on: bool) {
        self.g.paused.store(on, SeqCst);
    }
    pub fn done(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }
    pub fn failure(&self) -> Option<String> {
        self.g.failure.lock().unwrap().clone()
    }

    pub fn finish(self) -> Result<ConsumeResult, String> {
        self.stop();
        let mut hist = new_hist();
        let mut unstamped = 0;
        for h in self.handles {
            let (x, u) = h
                .join()
                .map_err(|_| "consumer thread panicked".to_string())?;
            let _ = hist.add(&x);
            unstamped += u;
        }
        if let Some(f) = self.g.failure.lock().unwrap().clone() {
            return Err(f);
        }
        let reached = self.g.reached_ns.load(SeqCst);
        let end = if reached > 0 {
            reached
        } else {
            self.g.last_delivery_ns.load(SeqCst)
        };
        Ok(ConsumeResult {
            delivered: self.g.delivered.load(SeqCst),
            seconds: end.saturating_sub(self.start_ns) as f64 / 1e9,
            latency: hist,
            unstamped,
        })
    }
}

fn consume_loop(
    mut s: TcpStream,
    wire: &mut dyn Consume,
    g: &CGlobal,
    stamp_from_ns: Option<u64>,
    hist: &mut Histogram<u64>,
    unstamped: &mut u64,
) -> Result<(), String> {
    let mut out = Vec::with_capacity(64 << 10);
    wire.initial(&mut out);
    s.write_all(&out).map_err(|e| e.to_string())?;
    out.clear();
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 4 << 20];
    let (mut lo, mut hi) = (0usize, 0usize);
    let mut last_tick = Instant::now();
    loop {
        if g.stop.load(Relaxed) || g.delivered.load(Relaxed) >= g.target.load(Relaxed) {
            break;
        }
        if hi == buf.len() {
            if lo > 0 {
                buf.copy_within(lo..hi, 0);
                hi -= lo;
                lo = 0;
            } else {
                buf.resize(buf.len() * 2, 0);
            }
        }
        match s.read(&mut buf[hi..]) {
            Ok(0) => return Err("the broker closed the connection".into()),
            Ok(n) => hi += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
        let now = now_ns();
        let mut count = 0u64;
        let used = {
            let mut sink = |body: &[u8]| {
                count += 1;
                if let Some(from) = stamp_from_ns {
                    match stamp_of(body) {
                        Some(t) if t >= from && t <= now => {
                            hist.saturating_record((now - t).max(100))
                        }
                        _ => *unstamped += 1,
                    }
                }
            };
            wire.on_data(&buf[lo..hi], &mut out, &mut sink)?
        };
        lo += used;
        if lo == hi {
            lo = 0;
            hi = 0;
        }
        if count > 0 {
            let total = g.delivered.fetch_add(count, SeqCst) + count;
            g.last_delivery_ns.fetch_max(now, Relaxed);
            let t = g.target.load(SeqCst);
            if total >= t && total - count < t {
                let _ = g.reached_ns.compare_exchange(0, now_ns(), SeqCst, SeqCst);
            }
        }
        if last_tick.elapsed() >= Duration::from_millis(100) {
            wire.tick(&mut out);
            last_tick = Instant::now();
        }
        if !out.is_empty() && !g.paused.load(Relaxed) {
            s.write_all(&out).map_err(|e| e.to_string())?;
            out.clear();
        }
    }
    wire.finish(&mut s);
    Ok(())
}
