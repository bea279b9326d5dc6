//! `restart`: what a restart over a backlog in many partitions costs the producers. A backlog
//! is written over the partitions, the broker stopped cleanly, its files dropped from the page
//! cache and the broker started again on them. Then one connection puts one message to every
//! partition in turn, waiting for each acknowledgement: each put is the first use of its
//! partition since the start, so it loads that partition's index from the cold files. The
//! same sweep again, every index loaded, is the control. The event loop serves every
//! connection, so a put that waits here is a wait every other producer shares.

use crate::crc;
use crate::engine::new_hist;
use crate::json::Obj;
use crate::report::{lat_obj, lat_str, thousands, Monitor};
use crate::runs::{
    base_obj, load_fields, produce_phase, start_opts, start_server, Load, Opts, TOPIC,
};
use crate::sys;
use crate::wire::imago::{self as im, Kind};
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Restart {
    /// The backlog: `count` messages round-robin over `partitions`.
    pub fill: Load,
    /// The control: restart with the backlog left in the page cache.
    pub keep_cache: bool,
}

pub fn restart(o: &Opts, r: &Restart) -> Result<Obj, String> {
    let l = &r.fill;
    let label = format!(
        "restart {} backlog={}",
        l.describe(o),
        thousands(l.count.unwrap_or(0))
    );
    eprintln!("== {label}");
    let mut srv = start_server(o, l.target, l.partitions, l.size)?;
    let mut mon = Monitor::new(&label);
    let fill = produce_phase(o, &srv, l, None, false, &label, &mut mon)?;
    if fill.errors > 0 {
        return Err(format!("{} puts of the backlog failed", fill.errors));
    }
    let mut files = 0;
    let t0 = Instant::now();
    srv.restart_imago(&o.servers, &start_opts(l.partitions, l.size), |dir| {
        if !r.keep_cache {
            files = sys::evict_page_cache(dir);
        }
    })?;
    let restart_s = t0.elapsed().as_secs_f64();
    let mut s = srv.connect()?;
    let body = vec![b'r'; l.size];
    let ck = crc::put_checksum(&body);
    let read0 = srv.pid.and_then(sys::read_bytes);
    let (cold, cold_s) = sweep(&mut s, l.partitions, &body, ck)?;
    let read = srv
        .pid
        .and_then(sys::read_bytes)
        .zip(read0)
        .map(|(b, a)| b - a);
    let st = im::stats(&mut s, "")?;
    let (warm, warm_s) = sweep(&mut s, l.partitions, &body, ck)?;
    let stat = |k: &str| st.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
    let (loads, probes) = (stat("index_loads"), stat("index_load_probes"));
    let mut j = base_obj("restart", o, l.target);
    load_fields(&mut j, l);
    j.i("backlog", fill.acked as i64)
        .b("page_cache_kept", r.keep_cache)
        .i("evicted_files", files as i64)
        .f("stop_and_start_s", (restart_s * 1000.0).round() / 1000.0)
        .f("first_sweep_s", (cold_s * 1000.0).round() / 1000.0)
        .f("second_sweep_s", (warm_s * 1000.0).round() / 1000.0)
        .o("first_put_latency_us", lat_obj(&cold))
        .o("second_put_latency_us", lat_obj(&warm))
        .i("first_sweep_read_bytes", read.map_or(-1, |b| b as i64))
        .i("index_loads", loads)
        .i("index_load_probes", probes);
    eprintln!(
        "  stop + start {restart_s:.2} s; first put to each of {} partitions: {cold_s:.2} s, {}, \
         {:.1} KiB read from the disk per partition; again: {warm_s:.2} s, {}; {loads} index \
         loads read {probes} entries ({:.1} each)",
        thousands(l.partitions as u64),
        lat_str(&cold),
        read.map_or(-1.0, |b| b as f64 / 1024.0 / l.partitions.max(1) as f64),
        lat_str(&warm),
        probes as f64 / loads.max(1) as f64
    );
    Ok(j)
}

/// One put to each partition in turn, each waiting for its acknowledgement: the histogram of
/// their latencies (ns) and the sweep's seconds.
fn sweep(
    s: &mut TcpStream,
    partitions: u32,
    body: &[u8],
    checksum: i32,
) -> Result<(Histogram<u64>, f64), String> {
    let mut h = new_hist();
    let mut req = Vec::with_capacity(body.len() + 64);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let t0 = Instant::now();
    for p in 0..partitions {
        req.clear();
        let line = format!("put {TOPIC} {p} {} 0 {checksum} {p}\r\n", body.len());
        req.extend_from_slice(line.as_bytes());
        req.extend_from_slice(body);
        let t = Instant::now();
        s.write_all(&req).map_err(|e| format!("put: {e}"))?;
        let reply = loop {
            if let Some((r, used)) = im::parse_reply(&buf)? {
                buf.drain(..used);
                break r;
            }
            match s.read(&mut chunk) {
                Ok(0) => return Err("connection closed during the sweep".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("waiting for the ack of a put to {p}: {e}")),
            }
        };
        h.record((t.elapsed().as_nanos() as u64).max(100))
            .map_err(|e| e.to_string())?;
        if reply.kind != Kind::Result(200) || reply.opaque != p as i64 {
            return Err(format!("put to partition {p}: {:?}", reply.kind));
        }
    }
    Ok((h, t0.elapsed().as_secs_f64()))
}
