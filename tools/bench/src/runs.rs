//! The measurements: produce, drain, latency/mixed, accumulate, memory (and restart, in
//! `restart.rs`). Each starts its own broker (fresh data directory), runs bounded by count or
//! time, and returns one JSON object.

use crate::engine::{
    now_ns, Bodies, ConsumerSet, ProduceResult, ProduceSpec, ProducerFactory, ProducerSet,
};
use crate::json::{Obj, J};
use crate::report::{lat_obj, lat_str, rate_str, thousands, Monitor};
use crate::servers::{Server, ServerOpts, StartOpts, Target};
use crate::sys;
use crate::wire::beanstalk::{BeanstalkConsumer, BeanstalkProducer};
use crate::wire::imago::{self as im, ConsumerOpts, ImagoConsumer, ImagoProducer};
use crate::wire::redis::{self as rd, RedisConsumer, RedisProducer};
use crate::wire::Consume;
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TOPIC: &str = "bench";
pub const GROUP: &str = "benchgroup";

/// Settings shared by every run.
#[derive(Clone)]
pub struct Opts {
    pub servers: ServerOpts,
    /// Hard bound on any one phase, seconds.
    pub timeout_s: f64,
    /// Before each measurement, wait (at most `quiet_wait_s`) until the machine's busy fraction
    /// is at most `quiet_busy`.
    pub quiet_busy: f64,
    pub quiet_wait_s: f64,
    /// Record a perf profile of the broker over each measured phase into `<perf_out>.<n>`.
    pub perf_out: Option<String>,
}

/// A producing load.
#[derive(Clone, Debug)]
pub struct Load {
    pub target: Target,
    pub connections: u32,
    pub depth: u32,
    pub size: usize,
    pub partitions: u32,
    pub count: Option<u64>,
    pub seconds: Option<f64>,
    pub tags: Vec<String>,
    pub broker_chooses: bool,
    /// Puts sent (and acknowledged) before the measurement starts.
    pub warmup: u64,
}

impl Load {
    pub fn describe(&self, o: &Opts) -> String {
        format!(
            "{} {} c={} d={} size={} p={}",
            self.target.name(),
            o.servers.mode_name(self.target),
            self.connections,
            self.depth,
            self.size,
            self.partitions
        )
    }
}

pub(crate) fn start_server(
    o: &Opts,
    target: Target,
    partitions: u32,
    size: usize,
) -> Result<Server, String> {
    Server::start(target, &o.servers, &start_opts(partitions, size))
}

pub(crate) fn start_opts(partitions: u32, size: usize) -> StartOpts {
    StartOpts {
        partitions,
        max_body: size + 64,
    }
}

pub fn connect_n(srv: &Server, n: u32) -> Result<Vec<TcpStream>, String> {
    (0..n).map(|_| srv.connect()).collect()
}

pub fn producer_factory(
    target: Target,
    partitions: u32,
    connections: u32,
    broker_chooses: bool,
) -> ProducerFactory {
    let p = partitions.max(1);
    let n = connections.max(1);
    match target {
        Target::Imago => Arc::new(move |i| {
            Box::new(ImagoProducer::new(
                TOPIC,
                p,
                (i as u64 * p as u64 / n as u64) as u32,
                broker_chooses,
            ))
        }),
        Target::Redis => Arc::new(move |i| {
            Box::new(RedisProducer::new(
                p,
                (i as u64 * p as u64 / n as u64) as u32,
            ))
        }),
        Target::Beanstalkd => Arc::new(|_| Box::new(BeanstalkProducer)),
    }
}

/// Runs producers until the count is acknowledged or the time is up.
pub(crate) fn produce_phase(
    o: &Opts,
    srv: &Server,
    l: &Load,
    rate: Option<f64>,
    stamped: bool,
    label: &str,
    mon: &mut Monitor,
) -> Result<ProduceResult, String> {
    let spec = ProduceSpec {
        depth: l.depth,
        count: l.count,
        rate,
        bodies: Bodies::new(l.size, &l.tags, stamped, l.target == Target::Imago),
    };
    let streams = connect_n(srv, l.connections)?;
    let set = ProducerSet::start(
        streams,
        &spec,
        producer_factory(l.target, l.partitions, l.connections, l.broker_chooses),
    )?;
    let t0 = Instant::now();
    let hard = Duration::from_secs_f64(o.timeout_s + l.seconds.unwrap_or(0.0));
    let _ = label;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        mon.tick(&[("acked", set.acked())], Some(srv));
        if set.done() {
            break;
        }
        if l.seconds.is_some_and(|s| t0.elapsed().as_secs_f64() >= s) {
            set.stop();
        }
        if t0.elapsed() > hard {
            set.stop();
            if t0.elapsed() > hard + Duration::from_secs(10) {
                return Err(format!(
                    "{label}: not finished after {:?} (--timeout)",
                    hard
                ));
            }
        }
    }
    mon.end();
    let r = set.finish()?;
    if r.errors > 0 {
        eprintln!(
            "  {label}: {} error replies, first: {}",
            r.errors,
            r.first_error.clone().unwrap_or_default()
        );
    }
    Ok(r)
}

fn imago_stats(srv: &Server, item: &str) -> HashMap<String, String> {
    srv.connect()
        .and_then(|mut s| im::stats(&mut s, item))
        .unwrap_or_default()
}

fn stat_num(m: &HashMap<String, String>, k: &str) -> Option<f64> {
    m.get(k).and_then(|v| v.parse().ok())
}

pub(crate) fn base_obj(bench: &str, o: &Opts, target: Target) -> Obj {
    let mut j = Obj::new();
    j.s("bench", bench)
        .s("target", target.name())
        .s("mode", o.servers.mode_name(target));
    j
}

pub(crate) fn load_fields(j: &mut Obj, l: &Load) {
    j.i("connections", l.connections as i64)
        .i("depth", l.depth as i64)
        .i("size", l.size as i64)
        .i("partitions", l.partitions as i64);
    if !l.tags.is_empty() {
        j.s("tags", l.tags.join(","));
    }
    if l.broker_chooses {
        j.b("broker_chooses_partition", true);
    }
}

static PERF_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// CPU and memory of the broker over a phase (and a perf profile of it with `--perf FILE`).
struct Cpu {
    broker0: Option<f64>,
    threads0: Vec<(String, f64)>,
    client0: f64,
    load0: f64,
    busy0: f64,
    perf: Option<(std::process::Child, String)>,
}

impl Cpu {
    fn start(o: &Opts, srv: &Server) -> Cpu {
        let busy0 = sys::wait_quiet(o.quiet_busy, o.quiet_wait_s);
        let perf = match (&o.perf_out, srv.pid) {
            (Some(base), Some(pid)) => {
                let n = PERF_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let file = format!("{base}.{n}");
                std::process::Command::new("perf")
                    .args([
                        "record",
                        "-F",
                        "999",
                        "-g",
                        "-p",
                        &pid.to_string(),
                        "-o",
                        &file,
                    ])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| eprintln!("  perf: {e}"))
                    .ok()
                    .map(|c| (c, file))
            }
            _ => None,
        };
        Cpu {
            perf,
            busy0,
            broker0: srv.cpu_seconds(),
            threads0: srv.pid.map(sys::thread_cpu).unwrap_or_default(),
            client0: sys::self_cpu_seconds(),
            load0: sys::loadavg(),
        }
    }
    fn fill(&mut self, srv: &Server, j: &mut Obj, messages: u64) {
        if let Some((mut child, file)) = self.perf.take() {
            sys::signal(child.id(), 2);
            let _ = child.wait();
            j.s("perf_data", file.clone());
            let rep = std::process::Command::new("perf")
                .args([
                    "report",
                    "-i",
                    &file,
                    "--no-children",
                    "--sort",
                    "comm,sym",
                    "--stdio",
                ])
                .stderr(std::process::Stdio::null())
                .output();
            if let Ok(r) = rep {
                eprintln!("  perf ({file}), top symbols of the broker:");
                for line in String::from_utf8_lossy(&r.stdout)
                    .lines()
                    .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
                    .take(25)
                {
                    eprintln!("  {line}");
                }
            }
        }
        if let (Some(a), Some(b)) = (self.broker0, srv.cpu_seconds()) {
            j.f("broker_cpu_s", round3(b - a));
            if messages > 0 {
                j.f(
                    "broker_cpu_us_per_msg",
                    round3((b - a) * 1e6 / messages as f64),
                );
            }
        }
        if let Some(pid) = srv.pid {
            let mut t = Obj::new();
            for (name, c1) in sys::thread_cpu(pid) {
                let c0 = self
                    .threads0
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|x| x.1)
                    .unwrap_or(0.0);
                if c1 - c0 > 0.0 {
                    t.f(&name, round3(c1 - c0));
                }
            }
            j.o("broker_thread_cpu_s", t);
        }
        j.f("machine_busy_before", round3(self.busy0))
            .f("loadavg_before", self.load0)
            .f("loadavg_after", sys::loadavg());
        j.f(
            "client_cpu_s",
            round3(sys::self_cpu_seconds() - self.client0),
        );
        if let Some(m) = srv.mem() {
            j.i("broker_rss_anon_kib", m.rss_anon_kib as i64);
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn rate_fields(j: &mut Obj, messages: u64, size: usize, seconds: f64) {
    let r = messages as f64 / seconds.max(1e-9);
    j.i("messages", messages as i64)
        .f("seconds", round3(seconds))
        .f("msgs_per_s", r.round())
        .f("mb_per_s", round3(r * size as f64 / 1e6));
}

// ---------------------------------------------------------------------------------------------

pub fn produce(o: &Opts, l: &Load) -> Result<Obj, String> {
    let label = format!("produce {}", l.describe(o));
    eprintln!("== {label}");
    let srv = start_server(o, l.target, l.partitions, l.size)?;
    if l.warmup > 0 {
        let mut w = l.clone();
        w.count = Some(l.warmup);
        w.seconds = None;
        let mut mon = Monitor::new("warmup");
        produce_phase(o, &srv, &w, None, false, "warmup", &mut mon)?;
    }
    let st0 = if l.target == Target::Imago {
        imago_stats(&srv, "")
    } else {
        HashMap::new()
    };
    let mut cpu = Cpu::start(o, &srv);
    let mut mon = Monitor::new(&label);
    let r = produce_phase(o, &srv, l, None, false, &label, &mut mon)?;
    let mut j = base_obj("produce", o, l.target);
    load_fields(&mut j, l);
    rate_fields(&mut j, r.acked, l.size, r.seconds);
    j.i("errors", r.errors as i64);
    if let Some(e) = &r.first_error {
        j.s("first_error", e.clone());
    }
    j.o("ack_latency_us", lat_obj(&r.ack_latency));
    cpu.fill(&srv, &mut j, r.acked);
    j.i("broker_rss_anon_peak_kib", mon.mem_peak.rss_anon_kib as i64);
    if l.target == Target::Imago {
        let st1 = imago_stats(&srv, "");
        if let (Some(f0), Some(f1), Some(m0), Some(m1)) = (
            stat_num(&st0, "fsyncs"),
            stat_num(&st1, "fsyncs"),
            stat_num(&st0, "messages_stored"),
            stat_num(&st1, "messages_stored"),
        ) {
            j.i("fsyncs", (f1 - f0) as i64);
            if f1 > f0 {
                j.f("records_per_fsync", round3((m1 - m0) / (f1 - f0)));
            }
        }
        if let Some(v) = stat_num(&st1, "records_per_fsync_avg") {
            j.f("records_per_fsync_avg", v);
        }
    }
    eprintln!(
        "  {} puts in {:.2} s = {}msg/s, {:.1} MB/s; ack latency {}; broker CPU {} s{}",
        thousands(r.acked),
        r.seconds,
        rate_str(r.acked as f64 / r.seconds),
        j.num("mb_per_s").unwrap_or(0.0),
        lat_str(&r.ack_latency),
        j.num("broker_cpu_s")
            .map(|v| format!("{v:.2}"))
            .unwrap_or("?".into()),
        j.num("records_per_fsync")
            .map(|v| format!("; {v:.1} records per fsync"))
            .unwrap_or_default()
    );
    Ok(j)
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Consumers {
    pub connections: u32,
    /// imago get maxSize.
    pub max_size: u32,
    /// imago waitMs / Redis BLOCK ms.
    pub wait_ms: u32,
    /// Redis XREADGROUP COUNT.
    pub batch: u32,
    /// beanstalkd: reserves in flight per connection.
    pub depth: u32,
    /// imago: tag filter for gets (`a||b`).
    pub filter: Option<String>,
    /// imago: 6-token gets per partition instead of a group.
    pub plain: bool,
    pub verify: bool,
}

/// A consumer's socket and the protocol driving it.
type ConsumerConn = (TcpStream, Box<dyn Consume>);

/// Connects and sets up `c.connections` consumers; `start`: `earliest` (drain a backlog) or
/// `latest` (tail new messages).
fn make_consumers(
    srv: &Server,
    target: Target,
    partitions: u32,
    c: &Consumers,
    start: &str,
) -> Result<Vec<ConsumerConn>, String> {
    let n = c.connections.max(1);
    let mut conns = connect_n(srv, n)?;
    let mut out: Vec<(TcpStream, Box<dyn Consume>)> = Vec::new();
    match target {
        Target::Imago => {
            let co = ConsumerOpts {
                topic: TOPIC.into(),
                group: GROUP.into(),
                max_size: c.max_size,
                wait_ms: c.wait_ms,
                filter: c.filter.clone(),
                plain: c.plain,
                verify: c.verify,
            };
            let members: Vec<String> = (0..n).map(|i| format!("m{i:05}")).collect();
            let assignments: Vec<im::Assignment> = if c.plain {
                // Partition i goes to consumer i % n, from offset 0 (or the end when tailing).
                let mut ctl = srv.connect()?;
                let st = im::stats(&mut ctl, TOPIC).unwrap_or_default();
                (0..n)
                    .map(|i| im::Assignment {
                        generation: -1,
                        session_ms: 10_000,
                        parts: (0..partitions)
                            .filter(|p| p % n == i)
                            .map(|p| {
                                let off = if start == "latest" {
                                    st.get(&format!("{TOPIC}:{p}:max_offset"))
                                        .and_then(|v| v.parse().ok())
                                        .unwrap_or(0)
                                } else {
                                    0
                                };
                                (p, off)
                            })
                            .collect(),
                    })
                    .collect()
            } else {
                for (s, m) in conns.iter_mut().zip(&members) {
                    im::join(s, GROUP, TOPIC, m, start)?;
                }
                // Every join changed the generation: heartbeat for the final assignment.
                let mut v = Vec::new();
                for (s, m) in conns.iter_mut().zip(&members) {
                    v.push(im::heartbeat(s, GROUP, TOPIC, m)?);
                }
                let gens: std::collections::HashSet<i64> = v.iter().map(|a| a.generation).collect();
                if gens.len() != 1 {
                    return Err(format!("group generations differ after joining: {gens:?}"));
                }
                v
            };
            for ((s, m), a) in conns.into_iter().zip(&members).zip(&assignments) {
                out.push((s, Box::new(ImagoConsumer::new(&co, m, a))));
            }
        }
        Target::Redis => {
            let mut ctl = srv.connect()?;
            rd::create_group(
                &mut ctl,
                partitions,
                GROUP,
                if start == "latest" { "$" } else { "0" },
            )?;
            for (i, s) in conns.into_iter().enumerate() {
                out.push((
                    s,
                    Box::new(RedisConsumer::new(
                        partitions,
                        GROUP,
                        &format!("c{i}"),
                        c.batch,
                        c.wait_ms,
                    )),
                ));
            }
        }
        Target::Beanstalkd => {
            let timeout_s = (c.wait_ms / 1000).max(1);
            for s in conns {
                out.push((s, Box::new(BeanstalkConsumer::new(c.depth, timeout_s))));
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Debug)]
pub struct Drain {
    pub fill: Load,
    pub consumers: Consumers,
}

pub fn drain(o: &Opts, d: &Drain) -> Result<Obj, String> {
    let l = &d.fill;
    let backlog = l.count.unwrap_or(1_000_000);
    let label = format!(
        "drain {} {} backlog={} size={} p={} consumers={}",
        l.target.name(),
        o.servers.mode_name(l.target),
        thousands(backlog),
        l.size,
        l.partitions,
        d.consumers.connections
    );
    eprintln!("== {label}");
    let srv = start_server(o, l.target, l.partitions, l.size)?;
    let mut mon = Monitor::new("fill");
    let fill = produce_phase(o, &srv, l, None, false, "fill", &mut mon)?;
    if fill.acked != backlog {
        return Err(format!("fill: {} of {backlog} acknowledged", fill.acked));
    }
    // Wait for a quiet machine before joining: a long wait must not expire the members.
    let mut cpu = Cpu::start(o, &srv);
    let conns = make_consumers(&srv, l.target, l.partitions, &d.consumers, "earliest")?;
    let set = ConsumerSet::start(conns, backlog, None)?;
    let mut mon = Monitor::new(&label);
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        mon.tick(&[("delivered", set.delivered())], Some(&srv));
        if set.done() || set.delivered() >= backlog {
            break;
        }
        if t0.elapsed().as_secs_f64() > o.timeout_s {
            set.stop();
            let r = set.finish();
            return Err(format!(
                "drain: {} of {backlog} delivered after {} s (--timeout); {:?}",
                thousands(r.as_ref().map(|r| r.delivered).unwrap_or(0)),
                o.timeout_s,
                r.err()
            ));
        }
    }
    mon.end();
    let r = set.finish()?;
    let mut j = base_obj("drain", o, l.target);
    j.i("backlog", backlog as i64)
        .i("size", l.size as i64)
        .i("partitions", l.partitions as i64)
        .i("consumers", d.consumers.connections as i64);
    match l.target {
        Target::Imago => {
            j.s(
                "consume",
                if d.consumers.plain {
                    "plain gets"
                } else {
                    "group, long-poll gets"
                },
            );
            j.i("max_size", d.consumers.max_size as i64);
        }
        Target::Redis => {
            j.s("consume", "XREADGROUP + XACK");
            j.i("count", d.consumers.batch as i64);
        }
        Target::Beanstalkd => {
            j.s("consume", "reserve + delete");
            j.i("reserves_in_flight", d.consumers.depth as i64);
        }
    }
    j.i("delivered", r.delivered as i64);
    rate_fields(&mut j, r.delivered.min(backlog), l.size, r.seconds);
    j.set("messages", J::Int(r.delivered.min(backlog) as i64));
    j.f(
        "fill_msgs_per_s",
        (fill.acked as f64 / fill.seconds).round(),
    );
    cpu.fill(&srv, &mut j, backlog);
    eprintln!(
        "  delivered {} in {:.2} s = {}msg/s, {:.1} MB/s (fill {}msg/s); broker CPU {} s",
        thousands(r.delivered),
        r.seconds,
        rate_str(backlog as f64 / r.seconds),
        j.num("mb_per_s").unwrap_or(0.0),
        rate_str(fill.acked as f64 / fill.seconds),
        j.num("broker_cpu_s")
            .map(|v| format!("{v:.2}"))
            .unwrap_or("?".into()),
    );
    Ok(j)
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Latency {
    pub produce: Load,
    /// Total puts per second; None: as fast as possible (the mixed load).
    pub rate: Option<f64>,
    pub consumers: Consumers,
    /// Seconds of samples to ignore at the start.
    pub warmup_s: f64,
}

pub fn latency(o: &Opts, a: &Latency) -> Result<Obj, String> {
    let l = &a.produce;
    let bench = if a.rate.is_some() { "latency" } else { "mixed" };
    let seconds = l.seconds.unwrap_or(10.0);
    let label = format!(
        "{bench} {} rate={} consumers={}",
        l.describe(o),
        a.rate.map(|r| format!("{r}/s")).unwrap_or("max".into()),
        a.consumers.connections
    );
    eprintln!("== {label}");
    if l.size < 8 {
        return Err("--size must be at least 8 (the send timestamp)".into());
    }
    let srv = start_server(o, l.target, l.partitions, l.size)?;
    if l.target == Target::Imago {
        // Create the topic (consumers join an existing topic); its message is not stamped.
        let mut s = srv.connect()?;
        let body = [0u8; 8];
        let line = format!(
            "put {TOPIC} 0 8 0 {} {}\r\n",
            crate::crc::put_checksum(&body),
            im::OPAQUE_CONTROL
        );
        let mut req = line.into_bytes();
        req.extend_from_slice(&body);
        use std::io::Write;
        s.write_all(&req).map_err(|e| e.to_string())?;
        let (code, b) = im::request(
            &mut s,
            &format!("version {}\r\n", im::OPAQUE_CONTROL - 1),
            Duration::from_secs(10),
        )?;
        if code != 200 {
            return Err(format!("version: {code} {}", String::from_utf8_lossy(&b)));
        }
    }
    let mut cpu = Cpu::start(o, &srv);
    let conns = make_consumers(&srv, l.target, l.partitions, &a.consumers, "latest")?;
    let stamp_from = now_ns() + (a.warmup_s * 1e9) as u64;
    let cset = ConsumerSet::start(conns, u64::MAX, Some(stamp_from))?;
    let spec = ProduceSpec {
        depth: l.depth,
        count: l.count,
        rate: a.rate,
        bodies: Bodies::new(l.size, &l.tags, true, l.target == Target::Imago),
    };
    let pset = ProducerSet::start(
        connect_n(&srv, l.connections)?,
        &spec,
        producer_factory(l.target, l.partitions, l.connections, l.broker_chooses),
    )?;
    let mut mon = Monitor::new(&label);
    let t0 = Instant::now();
    let mut produced_final: Option<u64> = None;
    let mut drained_at: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        mon.tick(
            &[("acked", pset.acked()), ("delivered", cset.delivered())],
            Some(&srv),
        );
        if let Some(f) = pset.failure().or_else(|| cset.failure()) {
            pset.stop();
            cset.stop();
            return Err(f);
        }
        if t0.elapsed().as_secs_f64() >= seconds {
            pset.stop();
        }
        if produced_final.is_none() && pset.done() {
            produced_final = Some(pset.acked());
            cset.set_target(pset.acked());
            drained_at = Some(Instant::now());
        }
        if produced_final.is_some() && (cset.done() || cset.delivered() >= produced_final.unwrap())
        {
            break;
        }
        if drained_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            eprintln!("  consumers did not receive every message within 10 s of the end");
            break;
        }
        if t0.elapsed().as_secs_f64() > seconds + o.timeout_s {
            return Err(format!("{bench}: not finished within --timeout"));
        }
    }
    mon.end();
    let pr = pset.finish()?;
    let cr = cset.finish()?;
    let mut j = base_obj(bench, o, l.target);
    load_fields(&mut j, l);
    j.i("consumers", a.consumers.connections as i64);
    if let Some(r) = a.rate {
        j.f("rate_target", r);
    }
    rate_fields(&mut j, pr.acked, l.size, pr.seconds);
    j.i("delivered", cr.delivered as i64);
    j.f(
        "delivered_per_s",
        (cr.delivered as f64 / cr.seconds.max(1e-9)).round(),
    );
    j.i("errors", pr.errors as i64);
    j.o("e2e_latency_us", lat_obj(&cr.latency));
    j.o("ack_latency_us", lat_obj(&pr.ack_latency));
    j.f("warmup_s", a.warmup_s);
    // Deliveries without a latency sample: sent during the warm-up (or unstamped).
    j.i("e2e_unsampled", cr.unstamped as i64);
    cpu.fill(&srv, &mut j, pr.acked);
    eprintln!(
        "  produced {} ({}msg/s), delivered {}; end-to-end {}; ack {}; broker CPU {} s",
        thousands(pr.acked),
        rate_str(pr.acked as f64 / pr.seconds),
        thousands(cr.delivered),
        lat_str(&cr.latency),
        lat_str(&pr.ack_latency),
        j.num("broker_cpu_s")
            .map(|v| format!("{v:.2}"))
            .unwrap_or("?".into()),
    );
    Ok(j)
}

// ---------------------------------------------------------------------------------------------

/// The second half of an accumulation run: restart the broker with its page cache dropped,
/// then producers at a fixed rate, alone and then while a consumer reads the cold backlog.
#[derive(Clone, Debug)]
pub struct ColdRead {
    /// Length of each of the two phases, seconds.
    pub seconds: f64,
    /// Total put rate of the paced producers, messages/s, and their connections.
    pub rate: f64,
    pub connections: u32,
    pub consumers: Consumers,
    /// The control run: the broker restarts but the backlog stays in the page cache, so what
    /// the reading costs producers without any disk read shows apart from what the disk adds.
    pub keep_cache: bool,
    /// How many phases of each kind, alternated (alone, reading, alone, ...), sharing
    /// `seconds` between them.
    pub rounds: u32,
}

/// Pause after a reading phase for the replies still on their way to land.
const COLD_SETTLE_MS: u64 = 200;

fn p99_us(h: &hdrhistogram::Histogram<u64>) -> f64 {
    h.value_at_quantile(0.99) as f64 / 1000.0
}

pub fn accumulate(o: &Opts, l: &Load, cold: Option<&ColdRead>) -> Result<Obj, String> {
    let label = format!(
        "accumulate {} count={}",
        l.describe(o),
        thousands(l.count.unwrap_or(0))
    );
    eprintln!("== {label}");
    let mut srv = start_server(o, l.target, l.partitions, l.size)?;
    let mut cpu = Cpu::start(o, &srv);
    let mut mon = Monitor::new(&label);
    let r = produce_phase(o, &srv, l, None, false, &label, &mut mon)?;
    let mut j = base_obj("accumulate", o, l.target);
    load_fields(&mut j, l);
    rate_fields(&mut j, r.acked, l.size, r.seconds);
    j.i("errors", r.errors as i64);
    let series: Vec<u64> = mon.per_second.iter().map(|row| row[0]).collect();
    if series.len() >= 4 {
        // Whole seconds only: drop the last (partial) sample.
        let s = &series[..series.len() - 1];
        let tenth = (s.len() / 10).max(1);
        let avg = |xs: &[u64]| xs.iter().sum::<u64>() as f64 / xs.len() as f64;
        j.f("first_10pct_msgs_per_s", avg(&s[..tenth]).round());
        j.f("last_10pct_msgs_per_s", avg(&s[s.len() - tenth..]).round());
        j.i("min_1s_msgs_per_s", *s.iter().min().unwrap() as i64);
        j.i("max_1s_msgs_per_s", *s.iter().max().unwrap() as i64);
    }
    j.set(
        "per_second",
        J::Arr(series.iter().map(|v| J::Int(*v as i64)).collect()),
    );
    j.o("ack_latency_us", lat_obj(&r.ack_latency));
    cpu.fill(&srv, &mut j, r.acked);
    j.i("broker_rss_anon_peak_kib", mon.mem_peak.rss_anon_kib as i64);
    if !srv.dir.as_os_str().is_empty() {
        j.i("disk_bytes", sys::disk_usage(&srv.dir) as i64);
    }
    if l.target == Target::Imago {
        let st = imago_stats(&srv, "topics");
        if let Some(m) = stat_num(&st, &format!("topic:{TOPIC}:messages")) {
            j.i("messages_held", m as i64);
        }
    }
    eprintln!(
        "  {} puts in {:.1} s = {}msg/s; 1-s rate first 10% {} / last 10% {} / min {}; disk {:.2} GB; ack {}",
        thousands(r.acked),
        r.seconds,
        rate_str(r.acked as f64 / r.seconds),
        rate_str(j.num("first_10pct_msgs_per_s").unwrap_or(0.0)),
        rate_str(j.num("last_10pct_msgs_per_s").unwrap_or(0.0)),
        rate_str(j.num("min_1s_msgs_per_s").unwrap_or(0.0)),
        j.num("disk_bytes").unwrap_or(0.0) / 1e9,
        lat_str(&r.ack_latency)
    );
    if let Some(c) = cold {
        if l.target != Target::Imago {
            return Err("accumulate --cold-seconds: imago only (it restarts the broker)".into());
        }
        j.o("cold_read", cold_read(o, l, c, &mut srv, r.acked)?);
    }
    Ok(j)
}

/// Restarts the broker with the backlog out of the page cache, then measures the paced
/// producers' put latency alone and while one group reads the backlog from the start.
fn cold_read(
    o: &Opts,
    l: &Load,
    c: &ColdRead,
    srv: &mut Server,
    backlog: u64,
) -> Result<Obj, String> {
    let cached0 = sys::page_cache_kib();
    let mut files = 0;
    srv.restart_imago(&o.servers, &start_opts(l.partitions, l.size), |dir| {
        if !c.keep_cache {
            files = sys::evict_page_cache(dir);
        }
    })?;
    let cached1 = sys::page_cache_kib();
    eprintln!(
        "  restarted with the backlog {}: {files} files advised, page cache {:.2} -> {:.2} GB",
        if c.keep_cache {
            "left in the page cache"
        } else {
            "evicted"
        },
        cached0 as f64 / 1048576.0,
        cached1 as f64 / 1048576.0
    );
    let paced = Load {
        count: None,
        seconds: Some(c.seconds),
        connections: c.connections,
        ..l.clone()
    };
    // Unmeasured: the first puts after a restart fault the evicted index and log tails in.
    let warm = Load {
        seconds: Some(2.0),
        ..paced.clone()
    };
    let mut mon = Monitor::new("cold-read: warm-up");
    produce_phase(o, srv, &warm, Some(c.rate), false, "warm-up", &mut mon)?;
    // Alternate the two phases, `rounds` of each, so that drift over the run (the host's
    // load, the restarted broker settling) falls on both alike. The group is paused, not
    // stopped, between its reading phases, and each reading phase goes on where the last one
    // left off, so every one of them reads cold pages.
    let rounds = c.rounds.max(1);
    let phase = Load {
        seconds: Some(c.seconds / rounds as f64),
        ..paced.clone()
    };
    let no_wait = Opts {
        quiet_wait_s: 0.0,
        ..o.clone()
    };
    let mut alone = crate::engine::new_hist();
    let mut reading = crate::engine::new_hist();
    // `cpu_acked`: the puts since the broker's CPU started being counted (the first reading
    // phase on, alone phases between included).
    let (mut errors, mut cpu_acked, mut reading_s) = (0u64, 0u64, 0.0f64);
    let mut per_round = Vec::new();
    let mut cpu: Option<Cpu> = None;
    let mut cset: Option<ConsumerSet> = None;
    for round in 1..=rounds {
        let label = format!(
            "cold-read {round}/{rounds}: producers alone at {}msg/s",
            rate_str(c.rate)
        );
        let mut mon = Monitor::new(&label);
        let a = produce_phase(&no_wait, srv, &phase, Some(c.rate), false, &label, &mut mon)?;
        let set = match cset.take() {
            Some(set) => {
                set.pause(false);
                set
            }
            None => {
                cpu = Some(Cpu::start(&no_wait, srv));
                let conns =
                    make_consumers(srv, Target::Imago, l.partitions, &c.consumers, "earliest")?;
                ConsumerSet::start(conns, backlog, None)?
            }
        };
        let label =
            format!("cold-read {round}/{rounds}: producers while a group reads the backlog");
        let mut mon = Monitor::new(&label);
        let t0 = std::time::Instant::now();
        let r = produce_phase(&no_wait, srv, &phase, Some(c.rate), false, &label, &mut mon)?;
        set.pause(true);
        reading_s += t0.elapsed().as_secs_f64();
        if let Some(f) = set.failure() {
            return Err(f);
        }
        // Let the replies already on their way land before the next phase alone.
        std::thread::sleep(std::time::Duration::from_millis(COLD_SETTLE_MS));
        let mut pr = Obj::new();
        pr.f("alone_p99_us", round3(p99_us(&a.ack_latency)))
            .f("reading_p99_us", round3(p99_us(&r.ack_latency)));
        per_round.push(J::Obj(pr));
        alone.add(&a.ack_latency).map_err(|e| e.to_string())?;
        reading.add(&r.ack_latency).map_err(|e| e.to_string())?;
        errors += a.errors + r.errors;
        cpu_acked += r.acked + if round > 1 { a.acked } else { 0 };
        cset = Some(set);
    }
    let cset = cset.expect("at least one round");
    let read_done = cset.done();
    if let Some(f) = cset.failure() {
        return Err(f);
    }
    let cr = cset.finish()?;
    let ratio = p99_us(&reading) / p99_us(&alone).max(1e-9);
    let mut j = Obj::new();
    j.b("page_cache_kept", c.keep_cache)
        .i("evicted_files", files as i64)
        .i("page_cache_kib_before", cached0 as i64)
        .i("page_cache_kib_after", cached1 as i64)
        .f("rate_target", c.rate)
        .i("connections", c.connections as i64)
        .f("seconds", c.seconds)
        .i("rounds", rounds as i64)
        .o("ack_latency_alone_us", lat_obj(&alone))
        .o("ack_latency_reading_us", lat_obj(&reading))
        .f("p99_ratio_reading_over_alone", round3(ratio))
        .set("per_round", J::Arr(per_round))
        .i("consumers", c.consumers.connections as i64)
        .i("delivered", cr.delivered as i64)
        .f(
            "delivered_per_s",
            (cr.delivered as f64 / reading_s.max(1e-9)).round(),
        )
        .b("backlog_read_before_phase_end", read_done)
        .i("errors", errors as i64);
    if let Some(cpu) = cpu.as_mut() {
        cpu.fill(srv, &mut j, cpu_acked);
    }
    eprintln!(
        "  put ack alone {}; while reading the backlog {} (p99 x{ratio:.2}, {rounds} rounds of each); read {} msgs ({}msg/s while reading)",
        lat_str(&alone),
        lat_str(&reading),
        thousands(cr.delivered),
        rate_str(cr.delivered as f64 / reading_s.max(1e-9)),
    );
    Ok(j)
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Memory {
    /// Written first, by a few deep pipelines (`count` messages over the same partitions), so
    /// a 100 M backlog does not take the many-connection load half an hour. `None` skips it.
    pub preload: Option<Load>,
    /// Producers: connections x depth over `partitions`, `count` messages, added to the backlog.
    pub fill: Load,
    /// Consumers (group members) reading the backlog afterwards.
    pub consumers: Consumers,
    /// How long the consumers read, seconds.
    pub consume_s: f64,
}

pub fn memory(o: &Opts, m: &Memory) -> Result<Obj, String> {
    let l = &m.fill;
    let label = format!(
        "memory {} partitions={} producers={}x{} backlog={}+{} consumers={}",
        o.servers.mode_name(Target::Imago),
        l.partitions,
        l.connections,
        l.depth,
        thousands(m.preload.as_ref().and_then(|p| p.count).unwrap_or(0)),
        thousands(l.count.unwrap_or(0)),
        m.consumers.connections
    );
    eprintln!("== {label}");
    let nofile = sys::raise_nofile();
    let need = (l.connections.max(m.consumers.connections) as u64) * 2 + 64;
    if nofile < need {
        return Err(format!(
            "open-file limit {nofile} is below the {need} this run needs"
        ));
    }
    let srv = start_server(o, Target::Imago, l.partitions, l.size)?;
    let idle = srv.mem().unwrap_or_default();
    let mut preloaded = 0;
    if let Some(p) = &m.preload {
        let mut mon = Monitor::new("memory: preload");
        let r = produce_phase(o, &srv, p, None, false, "memory preload", &mut mon)?;
        eprintln!(
            "  preload: {} puts at {} /s over {} partitions, RssAnon peak {} MiB",
            thousands(r.acked),
            thousands((r.acked as f64 / r.seconds) as u64),
            p.partitions,
            mon.mem_peak.rss_anon_kib / 1024
        );
        preloaded = r.acked;
    }
    let mut mon = Monitor::new("memory: produce");
    let r = produce_phase(o, &srv, l, None, false, "memory produce", &mut mon)?;
    let backlog = preloaded + r.acked;
    let after_produce = srv.mem().unwrap_or_default();
    let peak_produce = mon.mem_peak;
    drop(mon);
    let conns = make_consumers(&srv, Target::Imago, l.partitions, &m.consumers, "earliest")?;
    let cset = ConsumerSet::start(conns, backlog, None)?;
    let mut mon = Monitor::new("memory: consume");
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < m.consume_s && !cset.done() {
        std::thread::sleep(Duration::from_millis(100));
        mon.tick(&[("delivered", cset.delivered())], Some(&srv));
        if let Some(f) = cset.failure() {
            return Err(f);
        }
    }
    mon.end();
    let during_consume = srv.mem().unwrap_or_default();
    let peak_consume = mon.mem_peak;
    let cr = cset.finish()?;
    let st = imago_stats(&srv, "");
    let mut j = base_obj("memory", o, Target::Imago);
    load_fields(&mut j, l);
    j.i("backlog", backlog as i64)
        .i("preloaded", preloaded as i64)
        .f("produce_msgs_per_s", (r.acked as f64 / r.seconds).round())
        .i("consumers", m.consumers.connections as i64)
        .i("delivered", cr.delivered as i64)
        .f("consume_s", m.consume_s)
        .i(
            "max_connections_open",
            l.connections.max(m.consumers.connections) as i64,
        )
        .i("rss_anon_idle_kib", idle.rss_anon_kib as i64)
        .i(
            "rss_anon_after_produce_kib",
            after_produce.rss_anon_kib as i64,
        )
        .i(
            "rss_anon_peak_produce_kib",
            peak_produce.rss_anon_kib as i64,
        )
        .i(
            "rss_anon_during_consume_kib",
            during_consume.rss_anon_kib as i64,
        )
        .i(
            "rss_anon_peak_consume_kib",
            peak_consume.rss_anon_kib as i64,
        )
        .i(
            "rss_anon_peak_kib",
            peak_produce.rss_anon_kib.max(peak_consume.rss_anon_kib) as i64,
        )
        .i(
            "rss_file_peak_kib",
            peak_produce.rss_file_kib.max(peak_consume.rss_file_kib) as i64,
        )
        .i(
            "broker_threads",
            peak_produce.threads.max(peak_consume.threads) as i64,
        );
    if let Some(v) = stat_num(&st, "index_maps_open") {
        j.i("index_maps_open", v as i64);
    }
    eprintln!(
        "  RssAnon: idle {} MiB, peak while producing {} MiB ({} conns), peak while consuming {} MiB ({} members); backlog {}",
        idle.rss_anon_kib / 1024,
        peak_produce.rss_anon_kib / 1024,
        l.connections,
        peak_consume.rss_anon_kib / 1024,
        m.consumers.connections,
        thousands(backlog)
    );
    Ok(j)
}
