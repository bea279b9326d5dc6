//! store-bench: the store alone, without networking. Measures, in one run so the figures are
//! comparable as ratios:
//! - async appends of `--body-bytes` records from one thread into 1 partition, then
//!   round-robin into `--partitions` partitions (MetaQ 2.0's headline: the second rate should
//!   stay within 10% of the first);
//! - sync-mode appends from `--writers` threads each waiting for durability per batch: the
//!   records covered by one fsync (group commit).
//!
//! ```text
//! cargo run --release -p imago-tools --bin store-bench -- [--dir /tmp] [--records 5000000]
//!     [--body-bytes 128] [--partitions 10240] [--writers 8] [--batch 16] [--sync-seconds 3]
//!     [--segment-bytes 1073741824] [--rounds 3] [--append-batch 64] [--only all|async|sync]
//! ```
//! Prints a human summary and one JSON line per measurement.

use imago::store::{FlushMode, Message, Store, StoreConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    dir: std::path::PathBuf,
    records: u64,
    body_bytes: usize,
    partitions: u32,
    writers: u32,
    batch: u32,
    sync_seconds: u64,
    segment_bytes: u64,
    rounds: u32,
    append_batch: usize,
    /// `all`, `async` (the append rates only) or `sync` (group commit only).
    only: String,
}

const USAGE: &str = "usage: store-bench [--dir DIR] [--records N] [--body-bytes N] \
[--partitions N] [--writers N] [--batch N] [--sync-seconds N] [--segment-bytes N] [--rounds N] \
[--append-batch N] [--only all|async|sync]";

/// The flags, or what is wrong with them (`Ok(None)`: `--help` was asked for).
fn parse(argv: &[String]) -> Result<Option<Args>, String> {
    let mut a = Args {
        dir: std::env::temp_dir(),
        records: 5_000_000,
        body_bytes: 128,
        partitions: 10_240,
        writers: 8,
        batch: 16,
        sync_seconds: 3,
        segment_bytes: 1 << 30,
        rounds: 3,
        append_batch: 64,
        only: "all".into(),
    };
    if argv.iter().any(|f| f == "--help" || f == "-h") {
        return Ok(None);
    }
    for pair in argv.chunks(2) {
        let flag = pair[0].as_str();
        let v = pair.get(1).ok_or_else(|| format!("{flag} needs a value"))?;
        let n = || {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: '{v}' is not a number"))
        };
        // A count the runs divide by or loop over: 1 to u32::MAX.
        let count = || match v.parse::<u32>() {
            Ok(c) if c > 0 => Ok(c),
            _ => Err(format!(
                "{flag}: '{v}' is not a count from 1 to {}",
                u32::MAX
            )),
        };
        match flag {
            "--dir" => a.dir = v.into(),
            "--records" => a.records = n()?,
            "--body-bytes" => a.body_bytes = n()? as usize,
            "--partitions" => a.partitions = count()?,
            "--writers" => a.writers = count()?,
            "--batch" => a.batch = count()?,
            "--sync-seconds" => a.sync_seconds = n()?,
            "--segment-bytes" => a.segment_bytes = n()?,
            "--rounds" => a.rounds = count()?,
            "--append-batch" => a.append_batch = count()? as usize,
            "--only" if ["all", "async", "sync"].contains(&v.as_str()) => a.only = v.clone(),
            "--only" => return Err(format!("--only: '{v}' is not all, async or sync")),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Some(a))
}

fn config(dir: &std::path::Path, flush: FlushMode, segment_bytes: u64) -> StoreConfig {
    let mut cfg = StoreConfig::new(dir);
    cfg.segment_bytes = segment_bytes;
    cfg.flush = flush;
    cfg.retention_ms = None;
    cfg.disk_used_ratio_max = 1.0;
    cfg.index_maps_max = 32_768;
    cfg
}

/// Appends `records` round-robin over `partitions`; returns records per second. Measures the
/// steady state: every partition's index exists and the writer is past the first segment, in
/// segments the allocator created and prefaulted ahead (as in a broker that has been running).
fn append_rate(a: &Args, name: &str, partitions: u32, batch: usize, body: &[u8]) -> f64 {
    let dir = a
        .dir
        .join(format!("imago-store-bench-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(config(&dir, FlushMode::Async, a.segment_bytes)).expect("open store");
    store.ensure_topic("bench", partitions).expect("topic");
    let mut i = 0u64;
    while store.stats().segments < 3 || i < partitions as u64 {
        store
            .append(&msg((i % partitions as u64) as u32, body))
            .expect("append");
        i += 1;
    }
    std::thread::sleep(Duration::from_millis(200)); // let the allocator prefault the spare
    let records = a.records;
    let mut msgs = Vec::with_capacity(batch);
    let mut results = Vec::with_capacity(batch);
    let began = Instant::now();
    let mut i = 0u64;
    while i < records {
        if batch == 1 {
            store
                .append(&msg((i % partitions as u64) as u32, body))
                .expect("append");
            i += 1;
            continue;
        }
        msgs.clear();
        results.clear();
        while msgs.len() < batch && i < records {
            msgs.push(msg((i % partitions as u64) as u32, body));
            i += 1;
        }
        store.append_batch(&msgs, &mut results);
        assert!(results.iter().all(|r| r.is_ok()), "append failed");
    }
    let rate = records as f64 / began.elapsed().as_secs_f64();
    store.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

/// Measures 1 partition against `a.partitions` in interleaved rounds, appending `batch`
/// messages per call (1: `Store::append`; more: `Store::append_batch`, as the broker does with
/// the puts of one read), and prints the medians and their ratio.
fn append_pair(a: &Args, batch: usize, body: &[u8]) {
    let (mut ones, mut wides) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        ones.push(append_rate(a, "one", 1, batch, body));
        wides.push(append_rate(a, "wide", a.partitions, batch, body));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    let (one, wide) = (median(&mut ones), median(&mut wides));
    let how = if batch == 1 {
        "one per call".to_string()
    } else {
        format!("batches of {batch}")
    };
    println!(
        "async append ({how}), 1 partition:     {:>10.0} records/s (rounds {:?})",
        one,
        ones.iter().map(|r| *r as u64).collect::<Vec<_>>()
    );
    println!(
        "async append ({how}), {:>5} partitions: {:>10.0} records/s ({:.1}% of 1 partition; rounds {:?})",
        a.partitions,
        wide,
        100.0 * wide / one,
        wides.iter().map(|r| *r as u64).collect::<Vec<_>>()
    );
    println!(
        "{{\"bench\":\"store-append\",\"batch\":{batch},\"body_bytes\":{},\"records\":{},\"one_partition_per_s\":{one:.0},\"partitions\":{},\"many_partitions_per_s\":{wide:.0},\"ratio\":{:.3}}}",
        a.body_bytes, a.records, a.partitions, wide / one
    );
}

fn msg(partition: u32, body: &[u8]) -> Message<'_> {
    Message {
        topic: "bench",
        partition,
        flag: 0,
        tag: b"",
        props: b"",
        body,
        born_ts_ms: 0,
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("store-bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let body = vec![b'x'; a.body_bytes];
    let base = a
        .dir
        .join(format!("imago-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("bench dir");

    if a.only != "sync" {
        for batch in [1, a.append_batch] {
            append_pair(&a, batch, &body);
        }
    }
    if a.only != "async" {
        sync_rate(&a, &base.join("sync"), &body);
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// `a.writers` threads each append `a.batch` records and wait for them to be durable, for
/// `a.sync_seconds`; prints durable records/s and records per fsync.
fn sync_rate(a: &Args, dir: &std::path::Path, body: &[u8]) {
    let cfg = config(dir, FlushMode::Sync, a.segment_bytes);
    let store = Arc::new(Store::open(cfg).expect("open store"));
    store.ensure_topic("bench", a.writers).expect("topic");
    let deadline = Instant::now() + Duration::from_secs(a.sync_seconds);
    let began = Instant::now();
    let (writers, batch) = (a.writers, a.batch);
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (store, body) = (store.clone(), body.to_vec());
            std::thread::spawn(move || {
                let mut acked = 0u64;
                while Instant::now() < deadline {
                    let mut last = 0;
                    for _ in 0..batch {
                        last = store.append(&msg(w, &body)).expect("append").end_pos;
                    }
                    assert!(
                        store.wait_durable(last, Duration::from_secs(10)),
                        "not durable in 10 s"
                    );
                    acked += batch as u64;
                }
                acked
            })
        })
        .collect();
    let acked: u64 = threads.into_iter().map(|t| t.join().expect("writer")).sum();
    let secs = began.elapsed().as_secs_f64();
    let s = store.stats();
    println!(
        "sync append, {} writers x batch {}: {:>9.0} durable records/s, {} fsyncs, {:.1} records per fsync, last fsync {} us",
        a.writers,
        a.batch,
        acked as f64 / secs,
        s.fsyncs,
        s.records_fsynced as f64 / s.fsyncs.max(1) as f64,
        s.fsync_last_us
    );
    println!(
        "{{\"bench\":\"store-sync\",\"writers\":{},\"batch\":{},\"durable_per_s\":{:.0},\"fsyncs\":{},\"records_per_fsync\":{:.2}}}",
        a.writers,
        a.batch,
        acked as f64 / secs,
        s.fsyncs,
        s.records_fsynced as f64 / s.fsyncs.max(1) as f64
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}
