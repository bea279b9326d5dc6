//! Load and back-pressure: deep pipelining, many connections, a reader that never reads.

mod common;

use std::collections::BTreeSet;
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

/// utime + stime of a process' main thread (the event loop), in clock ticks
/// (/proc/<pid>/task/<pid>/stat fields 14 and 15). The store's own threads (e.g. the segment
/// allocator prefaulting a new segment) are not the parked gets' cost.
fn loop_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))
        .expect("read /proc/pid/task/pid/stat");
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let rest = &stat[stat.rfind(')').expect("comm field") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

#[test]
fn slow_reader_with_parked_gets_does_not_grow_broker_memory() {
    const PARKED: i32 = 128;
    const BODY_BYTES: usize = 1_000_000; // each woken get answers with this one record
    const OUTPUT_MAX: usize = 65_536;
    const BOUND_KIB: u64 = 32 * 1024; // 128 replies buffered would be ~125 MiB
    let output_max = OUTPUT_MAX.to_string();
    let parked_max = PARKED.to_string();
    let broker = Broker::start(&[
        "--output-bytes-max",
        &output_max,
        "--parked-per-connection-max",
        &parked_max,
    ]);
    let mut producer = broker.connect();
    let big = vec![b'b'; BODY_BYTES];
    producer.put("slowpark", 0, b"seed", 1);
    // Warm up the read path with a record of the same size, on another partition.
    producer.put("slowpark", 1, &big, 2);
    assert_eq!(producer.get_records("slowpark", 1, 0, 1).len(), 1);
    let rss_before = broker.rss_anon_kib();

    // The slow reader parks PARKED gets at the end of partition 0 and never reads.
    let mut slow = broker.connect();
    let mut gets = Vec::new();
    for op in 0..PARKED {
        gets.extend(get_wait_cmd("slowpark", "g", 0, 1, 1, 30_000, None, op));
    }
    slow.send(&gets);
    wait_for(Duration::from_secs(5), || {
        (producer.counter("parked_gets") == PARKED as u64).then_some(())
    })
    .expect("the slow reader's gets never all parked");

    // One put wakes them all: each would answer with the ~1 MB record.
    producer.put("slowpark", 0, &big, 3);
    let mut rss_max = rss_before;
    let mut output_max_seen = 0u64;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        rss_max = rss_max.max(broker.rss_anon_kib());
        let conns = producer.stats(Some("conns"));
        for (name, value) in &conns {
            if name.ends_with(":output_bytes") {
                output_max_seen = output_max_seen.max(canonical(value, "output_bytes"));
            }
        }
    }
    let grown = rss_max.saturating_sub(rss_before);
    assert!(
        grown < BOUND_KIB,
        "broker RssAnon grew by {grown} KiB (from {rss_before} KiB) answering {PARKED} parked \
         gets of a reader that does not read"
    );
    // At most one reply past the limit: the output is checked before each answer.
    let one_reply = (BODY_BYTES + 1024) as u64;
    assert!(
        output_max_seen <= OUTPUT_MAX as u64 + one_reply,
        "a connection held {output_max_seen} unsent bytes (output_bytes_max {OUTPUT_MAX})"
    );

    // Once it reads, every parked get is answered, in order, with the record.
    for op in 0..PARKED {
        let records = slow.read_reply().expect_value(op);
        assert_eq!(records.len(), 1, "reply {op}");
        assert_eq!((records[0].offset, records[0].body.len()), (1, BODY_BYTES));
    }
    slow.expect_silence(Duration::from_millis(100));
    assert_eq!(producer.counter("parked_gets"), 0);
}

#[test]
fn five_thousand_parked_gets_idle_cheaply_and_a_put_wakes_only_its_partition() {
    const CONNS: usize = 5;
    const PER_CONN: usize = 1000;
    const PARTITIONS: usize = 100;
    const WOKEN_PARTITION: usize = 7;
    const IDLE_TICKS_MAX: u64 = 10; // 100 ms of CPU per second at the usual 100 Hz
    let partitions = PARTITIONS.to_string();
    let broker = Broker::start(&[
        "--default-partitions",
        &partitions,
        "--segment-bytes",
        "16777216",
    ]);
    let mut producer = broker.connect();
    producer.put("crowd", 0, b"seed", 1);
    let partition_of = |c: usize, j: usize| (c * PER_CONN + j) % PARTITIONS;

    let mut conns: Vec<Conn> = (0..CONNS).map(|_| broker.connect()).collect();
    for (c, conn) in conns.iter_mut().enumerate() {
        let mut gets = Vec::new();
        for j in 0..PER_CONN {
            let p = partition_of(c, j);
            let offset = u64::from(p == 0);
            gets.extend(get_wait_cmd(
                "crowd", "g", p as i32, offset, 4096, 30_000, None, j as i32,
            ));
        }
        conn.send(&gets);
    }
    let total = (CONNS * PER_CONN) as u64;
    wait_for(Duration::from_secs(10), || {
        (producer.counter("parked_gets") == total).then_some(())
    })
    .unwrap_or_else(|| panic!("{total} gets never all parked"));

    // Idle: thousands of waiters cost no CPU.
    let pid = broker.pid();
    let ticks_before = loop_cpu_ticks(pid);
    thread::sleep(Duration::from_secs(1));
    let idle_ticks = loop_cpu_ticks(pid) - ticks_before;
    println!("{total} parked gets: {idle_ticks} event-loop CPU ticks in 1 s idle");
    assert!(
        idle_ticks <= IDLE_TICKS_MAX,
        "the event loop used {idle_ticks} CPU ticks in 1 s with {total} idle parked gets"
    );

    // One put wakes exactly its partition's waiters.
    let before = producer.counter("parked_wakeups");
    producer.put("crowd", WOKEN_PARTITION as i32, b"wake", 2);
    for (c, conn) in conns.iter_mut().enumerate() {
        let expected: BTreeSet<i32> = (0..PER_CONN)
            .filter(|&j| partition_of(c, j) == WOKEN_PARTITION)
            .map(|j| j as i32)
            .collect();
        let replies = conn.read_replies_by_opaque(expected.len());
        assert_eq!(
            replies.keys().copied().collect::<BTreeSet<i32>>(),
            expected,
            "connection {c}"
        );
        for (op, reply) in &replies {
            assert_eq!(reply.expect_value(*op)[0].body, b"wake");
        }
    }
    for conn in &mut conns {
        conn.expect_silence(Duration::from_millis(100));
    }
    let woken = (total as usize / PARTITIONS) as u64;
    assert_eq!(producer.counter("parked_wakeups") - before, woken);
    assert_eq!(producer.counter("parked_gets"), total - woken);
}
