//! imago-bench: load generator and side-by-side benchmark of imago against Redis Streams and
//! beanstalkd. See tools/bench/README.md.
//!
//! Human output (progress lines, summaries, the comparison table) goes to stderr; one JSON
//! line per measurement goes to stdout (and is appended to `--json FILE`).

mod args;
mod compare;
mod crc;
mod engine;
mod json;
mod report;
mod restart;
mod runs;
mod servers;
mod sys;
mod wire;

use args::Args;
use json::Obj;
use runs::{Consumers, Drain, Latency, Load, Memory, Opts};
use servers::{ServerOpts, Target};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Longest phase of a cold read, seconds: a paused group holds its heartbeats, and the
/// broker's default session timeout is 10 s.
const COLD_PHASE_S_MAX: f64 = 4.0;

const USAGE: &str = "\
imago-bench: load generator and side-by-side benchmark of imago, Redis Streams and beanstalkd

usage: imago-bench <command> [flags]

commands:
  produce     puts as fast as acknowledgements allow (fixed --count or --seconds)
  drain       fill a backlog, then consume it (imago: one group, long-poll gets)
  latency     end-to-end latency: paced producers, long-poll consumers tailing
  mixed       producers at full speed and tailing consumers at once
  accumulate  a long produce run (default 10M messages): rate over time, disk, memory
  memory      broker RssAnon with many partitions, many connections and a backlog
  restart     a backlog over many partitions, a restart with the page cache dropped, then the
              first put to every partition (each loads its index) against a second sweep
  compare     the standard comparison set in one go, with ratios and target checks

common flags:
  --target imago|redis|beanstalkd   (default imago)
  --sync                 imago --flush sync / Redis appendfsync always / beanstalkd -f0
                         (default: imago async / Redis everysec / beanstalkd -f 50)
  --imago-bin PATH       (default target/release/imago, then $CARGO_TARGET_DIR/release/imago)
  --redis-bin PATH       (default redis-server)   --beanstalkd-bin PATH (default beanstalkd)
  --beanstalkd-fsync-ms N  beanstalkd's fsync interval in the lazy mode (default 50)
  --imago-arg \"--flag value\"  extra broker flags (repeatable)
  --imago-addr 127.0.0.1:PORT [--imago-pid PID]  use a running imago (loopback only)
  --data-root DIR        where brokers keep their data (default: the temp dir); --keep-data
  --timeout S            bound on any phase beyond its planned time (default 300)
  --quiet-busy F --quiet-wait S  before each measurement wait up to S seconds (30) until the
                         machine is at most F busy (0.15 = 15% of all cores); 0 disables
  --json FILE            also append the JSON lines to FILE
  --perf FILE            perf record the broker over each measured phase (FILE.<n>) and
                         print its top symbols

load flags (produce, accumulate; producers of latency/mixed/drain):
  --connections N (1)  --depth D (100)  --size S payload bytes (128)  --partitions P (1)
  --count C | --seconds T (produce default: --seconds 5)   --tags a,b,c (imago attribute)
  --broker-chooses (imago partition -1)   --warmup C (puts before measuring)
  numbers take k/M/G suffixes: --count 10M

drain:    --count BACKLOG (1M) --partitions (8) --consumers (2) --fill-connections (2)
          --fill-depth (100) --max-size (1048576) --wait-ms (1000) --batch (Redis COUNT, 1000)
          --reserve-depth (beanstalkd reserves in flight, 64) --plain (6-token gets, no group)
          --verify (check every record's CRC)
latency:  --rate (10000/s total) --seconds (10) --consumers (2) --partitions (4)
          --connections (1) --depth (100) --warmup-seconds (1) --filter 'a||b'
mixed:    as latency, without pacing
accumulate: --count (10M) --connections (2) --depth (100) --partitions (16); then (imago)
          restart the broker with its page cache dropped and pace --cold-connections (1)
          producers at --cold-rate (10000/s) for --cold-seconds (10; 0 skips), alone, then
          while --consumers (1) read the cold backlog as a group, the two alternated
          --cold-rounds (3) times each (the group paused in between): p99 put latency ratio;
          --cold-keep-cache: the control run, the backlog left in the page cache
memory:   --partitions (10000) --connections (1000) --depth (8) --count (10M)
          --consumers (1000) --consume-seconds (10); --preload N first writes N messages with
          --preload-connections (2) x --preload-depth (100) over the same partitions
restart:  --partitions (10000) --count (10M backlog) --connections (2) --depth (100);
          --keep-cache: the control, the backlog left in the page cache
compare:  --seconds (5 per produce run) --drain-count (10M, imago target run)
          --peer-drain-count (1M, side-by-side drains) --latency-seconds (10) --no-peers
          --pairs (3: targets (1)-(3) alternate imago and peer runs, verdict on the median)
";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    if cmd == "help" || cmd == "--help" || cmd == "-h" {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(&argv[1..]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("imago-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if args.has("help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let _ = engine::now_ns();
    match run(&cmd, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imago-bench {cmd}: {e}");
            ExitCode::from(1)
        }
    }
}

pub struct Out {
    json: Option<PathBuf>,
}

impl Out {
    pub fn emit(&self, j: &Obj) {
        let line = j.render();
        println!("{line}");
        let _ = std::io::stdout().flush();
        if let Some(p) = &self.json {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    }
}

fn default_imago_bin() -> PathBuf {
    let local = PathBuf::from("target/release/imago");
    if local.exists() {
        return local;
    }
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        let p = PathBuf::from(t).join("release/imago");
        if p.exists() {
            return p;
        }
    }
    // Beside this binary (both built into the same target directory).
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            let p = dir.join("imago");
            if p.exists() {
                return p;
            }
        }
    }
    local
}

fn opts(a: &Args) -> Result<(Opts, Out), String> {
    let imago_addr = match a.str_opt("imago-addr") {
        Some(s) => {
            let addr: std::net::SocketAddr = s
                .parse()
                .map_err(|_| format!("--imago-addr {s}: not an ip:port"))?;
            servers::check_loopback(&addr)?;
            Some(addr)
        }
        None => None,
    };
    let servers = ServerOpts {
        imago_bin: a
            .str_opt("imago-bin")
            .map(PathBuf::from)
            .unwrap_or_else(default_imago_bin),
        redis_bin: PathBuf::from(a.str_or("redis-bin", "redis-server")),
        beanstalkd_bin: PathBuf::from(a.str_or("beanstalkd-bin", "beanstalkd")),
        data_root: a
            .str_opt("data-root")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
        keep_data: a.has("keep-data"),
        sync: a.has("sync"),
        beanstalkd_lazy_fsync_ms: a.num("beanstalkd-fsync-ms", 50)?,
        imago_args: a.str_all("imago-arg"),
        imago_addr,
        imago_pid: a.num_opt("imago-pid")?,
    };
    let o = Opts {
        servers,
        timeout_s: a.num("timeout", 300.0)?,
        quiet_busy: a.num("quiet-busy", 0.15)?,
        quiet_wait_s: a.num("quiet-wait", 30.0)?,
        perf_out: a.str_opt("perf"),
    };
    Ok((
        o,
        Out {
            json: a.str_opt("json").map(PathBuf::from),
        },
    ))
}

/// Load flags with per-command defaults.
fn load(a: &Args, d: &Load) -> Result<Load, String> {
    let count = a.num_opt::<u64>("count")?;
    let seconds = a.num_opt::<f64>("seconds")?;
    let (count, seconds) = match (count, seconds) {
        (Some(_), Some(_)) => return Err("give --count or --seconds, not both".into()),
        (None, None) => (d.count, d.seconds),
        x => x,
    };
    let tags = a
        .str_opt("tags")
        .map(|t| {
            t.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(Load {
        target: Target::parse(&a.str_or("target", d.target.name()))?,
        connections: a.num("connections", d.connections)?.max(1),
        depth: a.num("depth", d.depth)?.max(1),
        size: a.num("size", d.size)?,
        partitions: a.num("partitions", d.partitions)?.max(1),
        count,
        seconds,
        tags,
        broker_chooses: a.has("broker-chooses"),
        warmup: a.num("warmup", d.warmup)?,
    })
}

fn consumers(a: &Args, n: u32) -> Result<Consumers, String> {
    Ok(Consumers {
        connections: a.num("consumers", n)?.max(1),
        max_size: a.num("max-size", 1_048_576)?,
        wait_ms: a.num("wait-ms", 1000)?,
        batch: a.num("batch", 1000)?,
        depth: a.num("reserve-depth", 64)?,
        filter: a.str_opt("filter"),
        plain: a.has("plain"),
        verify: a.has("verify"),
    })
}

pub fn default_load() -> Load {
    Load {
        target: Target::Imago,
        connections: 1,
        depth: 100,
        size: 128,
        partitions: 1,
        count: None,
        seconds: Some(5.0),
        tags: Vec::new(),
        broker_chooses: false,
        warmup: 0,
    }
}

fn run(cmd: &str, a: &Args) -> Result<(), String> {
    let (o, out) = opts(a)?;
    let d = default_load();
    match cmd {
        "produce" => {
            let l = load(a, &d)?;
            a.finish()?;
            out.emit(&runs::produce(&o, &l)?);
        }
        "drain" => {
            let l = load(
                a,
                &Load {
                    partitions: 8,
                    connections: 2,
                    count: Some(1_000_000),
                    seconds: None,
                    ..d.clone()
                },
            )?;
            let mut fill = l.clone();
            fill.connections = a.num("fill-connections", 2)?;
            fill.depth = a.num("fill-depth", 100)?;
            if fill.count.is_none() {
                return Err("drain needs --count (the backlog)".into());
            }
            let c = consumers(a, 2)?;
            a.finish()?;
            out.emit(&runs::drain(&o, &Drain { fill, consumers: c })?);
        }
        "latency" | "mixed" => {
            let l = load(
                a,
                &Load {
                    partitions: 4,
                    seconds: Some(10.0),
                    ..d.clone()
                },
            )?;
            let rate = if cmd == "latency" {
                Some(a.num("rate", 10_000.0)?)
            } else {
                a.num_opt("rate")?
            };
            let c = consumers(a, 2)?;
            let warmup_s = a.num("warmup-seconds", 1.0)?;
            a.finish()?;
            out.emit(&runs::latency(
                &o,
                &Latency {
                    produce: l,
                    rate,
                    consumers: c,
                    warmup_s,
                },
            )?);
        }
        "accumulate" => {
            let l = load(
                a,
                &Load {
                    connections: 2,
                    partitions: 16,
                    count: Some(10_000_000),
                    seconds: None,
                    ..d.clone()
                },
            )?;
            let cold_s = a.num("cold-seconds", 10.0)?;
            let cold = runs::ColdRead {
                seconds: cold_s,
                rate: a.num("cold-rate", 10_000.0)?,
                connections: a.num("cold-connections", 1)?,
                consumers: consumers(a, 1)?,
                keep_cache: a.has("cold-keep-cache"),
                rounds: a.num("cold-rounds", 3)?,
            };
            a.finish()?;
            let phase_s = cold_s / cold.rounds.max(1) as f64;
            if phase_s > COLD_PHASE_S_MAX {
                return Err(format!(
                    "--cold-seconds / --cold-rounds: phases of {phase_s:.1} s; at most \
                     {COLD_PHASE_S_MAX} s each (a paused group holds its heartbeats)"
                ));
            }
            let cold = (cold_s > 0.0).then_some(&cold);
            out.emit(&runs::accumulate(&o, &l, cold)?);
        }
        "memory" => {
            let l = load(
                a,
                &Load {
                    connections: 1000,
                    depth: 8,
                    partitions: 10_000,
                    count: Some(10_000_000),
                    seconds: None,
                    ..d.clone()
                },
            )?;
            let preload_count: u64 = a.num("preload", 0)?;
            let preload = Load {
                connections: a.num("preload-connections", 2)?,
                depth: a.num("preload-depth", 100)?,
                count: Some(preload_count),
                ..l.clone()
            };
            let c = consumers(a, 1000)?;
            let consume_s = a.num("consume-seconds", 10.0)?;
            a.finish()?;
            out.emit(&runs::memory(
                &o,
                &Memory {
                    preload: (preload_count > 0).then_some(preload),
                    fill: l,
                    consumers: c,
                    consume_s,
                },
            )?);
        }
        "restart" => {
            let l = load(
                a,
                &Load {
                    connections: 2,
                    partitions: 10_000,
                    count: Some(10_000_000),
                    seconds: None,
                    ..d.clone()
                },
            )?;
            if l.target != Target::Imago {
                return Err("restart: imago only (it restarts the broker)".into());
            }
            let keep_cache = a.has("keep-cache");
            a.finish()?;
            out.emit(&restart::restart(
                &o,
                &restart::Restart {
                    fill: l,
                    keep_cache,
                },
            )?);
        }
        "compare" => {
            let c = compare::Settings {
                seconds: a.num("seconds", 5.0)?,
                drain_count: a.num("drain-count", 10_000_000)?,
                peer_drain_count: a.num("peer-drain-count", 1_000_000)?,
                latency_seconds: a.num("latency-seconds", 10.0)?,
                peers: !a.has("no-peers"),
                pairs: a.num("pairs", 3)?,
            };
            if c.pairs == 0 {
                return Err("--pairs: at least 1".into());
            }
            a.finish()?;
            compare::run(&o, &c, &out)?;
        }
        _ => return Err(format!("unknown command '{cmd}' (see imago-bench help)")),
    }
    Ok(())
}
