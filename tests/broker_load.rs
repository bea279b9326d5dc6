//! Load and back-pressure: deep pipelining, many connections, a reader that never reads.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn pipelined_10000_puts_reply_in_order_and_read_back() {
    const N: usize = 10_000;
    const OPAQUE_BASE: i32 = 500_000;
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();

    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| format!("pipelined message {i:05} {}", "x".repeat(i % 37)).into_bytes())
        .collect();
    let mut batch = Vec::with_capacity(N * 80);
    for (i, body) in bodies.iter().enumerate() {
        batch.extend_from_slice(&put_cmd("pipe", 0, 0, body, OPAQUE_BASE + i as i32));
    }
    // One write of everything, from another thread while this one reads the replies.
    let mut writer = conn.writer();
    let write = thread::spawn(move || writer.write_all(&batch));

    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        let text = conn.read_reply().expect_result(200, OPAQUE_BASE + i as i32);
        let (id, p, offset) = parse_put_ack(&text);
        assert_eq!((p, offset), (0, i as u64), "reply {i}: {text:?}");
        ids.push(id);
    }
    write.join().unwrap().expect("write the pipelined batch");

    // Read back following next offsets with small gets (many round trips).
    let records = conn.read_partition_with("pipe", 0, 64 * 1024);
    assert_eq!(records.len(), N);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.body, bodies[i], "record {i}");
        assert_eq!(r.msg_id, ids[i], "record {i}");
    }
}

#[test]
fn thousand_concurrent_connections_each_put_and_get() {
    const THREADS: usize = 10;
    const PER_THREAD: usize = 100;
    let broker = Broker::start(&[]);
    let addr = broker.addr();
    let release = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (release, done_tx) = (Arc::clone(&release), done_tx.clone());
            thread::spawn(move || worker(addr, t, PER_THREAD, &done_tx, &release))
        })
        .collect();
    drop(done_tx);

    // Wait (bounded) until every worker has its 100 connections open and has done its puts
    // and gets on them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = 0;
    while done < THREADS {
        let left = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => done += 1,
            Err(_) => break,
        }
    }
    let curr = if done == THREADS {
        let mut probe = broker.connect();
        let stats = probe.stats(None);
        let curr: usize = stat(&stats, "curr_connections")
            .expect("curr_connections")
            .parse()
            .unwrap();
        Some(curr)
    } else {
        None
    };
    release.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("worker thread panicked");
    }
    let curr = curr.unwrap_or_else(|| panic!("only {done} of {THREADS} workers finished in time"));
    assert!(
        curr >= THREADS * PER_THREAD,
        "curr_connections {curr} with {} client connections open",
        THREADS * PER_THREAD + 1
    );

    // Every message is in the log exactly once.
    let mut probe = broker.connect();
    let mut total = 0;
    for p in 0..4 {
        total += probe.read_partition("conc", p).len();
    }
    assert_eq!(total, THREADS * PER_THREAD);
}

fn worker(addr: SocketAddr, t: usize, n: usize, done: &mpsc::Sender<()>, release: &AtomicBool) {
    let mut conns: Vec<Conn> = (0..n).map(|_| Conn::connect(addr)).collect();
    let body = |i: usize| format!("conn t{t} i{i}").into_bytes();
    let partition = |i: usize| ((t * n + i) % 4) as i32;
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&put_cmd("conc", partition(i), 0, &body(i), i as i32));
    }
    let mut offsets = Vec::with_capacity(n);
    for (i, c) in conns.iter_mut().enumerate() {
        let (_, p, offset) = parse_put_ack(&c.read_reply().expect_result(200, i as i32));
        assert_eq!(p, partition(i));
        offsets.push(offset);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&get_cmd("conc", partition(i), offsets[i], 1, i as i32));
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let records = c.read_reply().expect_value(i as i32);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].body, body(i));
        assert_eq!(records[0].offset, offsets[i]);
    }
    let _ = done.send(());
    // Hold the connections open until released (bounded).
    let deadline = Instant::now() + Duration::from_secs(40);
    while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    drop(conns);
}

#[test]
fn slow_reader_does_not_grow_broker_memory() {
    const BACKLOG: usize = 1100; // ~1.1 MiB: every get from offset 0 returns ~1 MiB
    const GETS: i32 = 300; // ~300 MiB of replies if the broker buffered them all
    const BOUND_KIB: u64 = 64 * 1024;
    let broker = Broker::start(&["--output-bytes-max", "65536"]);

    let mut producer = broker.connect();
    let payload = vec![b'p'; 1024];
    let mut batch = Vec::new();
    for i in 0..BACKLOG {
        batch.extend_from_slice(&put_cmd("slow", 0, 0, &payload, i as i32));
    }
    producer.send(&batch);
    for i in 0..BACKLOG {
        producer.read_reply().expect_result(200, i as i32);
    }
    // Warm up the read path once so its one-time allocations are in the baseline.
    producer.get_records("slow", 0, 0, GET_BYTES_MAX_DEFAULT);
    // Anonymous memory: mapped store files (page cache, e.g. the prefaulted next segment)
    // are not the broker's to bound.
    let rss_before = broker.rss_anon_kib();

    // The slow reader: asks for ~300 MiB and reads nothing.
    let slow = broker.connect();
    let mut writer = slow.writer();
    writer
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let write = thread::spawn(move || {
        let mut gets = Vec::new();
        for i in 0..GETS {
            gets.extend_from_slice(&get_cmd("slow", 0, 0, GET_BYTES_MAX_DEFAULT, i));
        }
        // The broker may stop reading us: a timed-out write is fine.
        let _ = writer.write_all(&gets);
    });

    let mut rss_max = rss_before;
    let mut other = broker.connect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut round = 0;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        rss_max = rss_max.max(broker.rss_anon_kib());
        // Another connection is served promptly meanwhile.
        let t = Instant::now();
        other.version(round);
        let records = other.get_records("slow", 0, 1000, 4096);
        assert_eq!(records[0].offset, 1000);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "other connection waited {:?} while a slow reader was stalled",
            t.elapsed()
        );
        round += 1;
    }
    write.join().unwrap();
    let grown = rss_max.saturating_sub(rss_before);
    assert!(
        grown < BOUND_KIB,
        "broker RssAnon grew by {grown} KiB (from {rss_before} KiB) with a stalled reader \
         (VmRSS now {} KiB)",
        broker.rss_kib()
    );

    // The stalled connection is still correct once it reads: replies in order, whole records.
    let mut slow = slow;
    for i in 0..3 {
        let reply = match slow.try_read_reply() {
            Ok(Some(reply)) => reply,
            other => panic!(
                "stalled reader, after it started reading: reply {i} of {GETS} did not come \
                 ({}); the broker must resume reading a connection once its output drains",
                match other {
                    Err(e) => io_why(&e),
                    _ => "EOF".to_string(),
                }
            ),
        };
        let records = reply.expect_value(i);
        assert_eq!(records[0].offset, 0);
        assert!(
            records.len() > 900,
            "a ~1 MiB get returned {} records",
            records.len()
        );
    }
}
