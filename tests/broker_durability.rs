//! Restart and crash behaviour: SIGTERM/SIGINT keep everything; kill -9 under `--flush sync`
//! keeps every acknowledged message; kill -9 under async flush recovers a consistent log.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const TOPICS: [&str; 3] = ["alpha", "beta.two", "gamma_3"];

/// Puts `n` varied messages (topics, partitions, flags, tags, sizes) and returns their acks.
fn put_mix(conn: &mut Conn, n: usize, salt: &str) -> Vec<(String, i32, u64, u64)> {
    let mut acks = Vec::new();
    for i in 0..n {
        let topic = TOPICS[i % TOPICS.len()];
        let partition = ((i / TOPICS.len()) % 4) as i32;
        let payload = format!("{salt} message {i} {}", "#".repeat((i * 7) % 300)).into_bytes();
        let (flag, body) = match i % 4 {
            0 => (0, payload),
            1 => (1, attr_body(format!("tag-{i}").as_bytes(), &payload)),
            2 => (
                3,
                attr_props_body(b"t", &props_block(&[("i", &i.to_string())]), &payload),
            ),
            _ => (8, payload),
        };
        let (id, p, offset) = conn.put_flag(topic, partition, flag, &body, i as i32);
        acks.push((topic.to_string(), p, offset, id));
    }
    acks
}

fn snapshot(conn: &mut Conn) -> Log {
    let topics: Vec<(&str, i32)> = TOPICS.iter().map(|t| (*t, 4)).collect();
    read_all(conn, &topics)
}

#[test]
fn restart_after_sigterm_keeps_everything() {
    let args = ["--segment-bytes", "65536"];
    let mut broker = Broker::start(&args);
    let mut conn = broker.connect();
    let acks = put_mix(&mut conn, 600, "first");
    let before = snapshot(&mut conn);
    assert_eq!(before.len(), 600);
    for (topic, p, offset, id) in &acks {
        let r = &before[&(topic.clone(), *p as u32, *offset)];
        assert_eq!(r.msg_id, *id);
    }
    let max_id = acks.iter().map(|a| a.3).max().unwrap();
    drop(conn);

    broker.terminate();
    assert!(
        broker.extra_stdout().is_empty(),
        "stdout after the start-up line"
    );
    broker.restart(&args);

    let mut conn = broker.connect();
    let after = snapshot(&mut conn);
    assert_eq!(after.len(), before.len());
    for (key, r) in &before {
        assert!(
            after.get(key) == Some(r),
            "record {key:?} changed across restart:\n before {r:?}\n after  {:?}",
            after.get(key)
        );
    }

    // Appends continue at the next offsets, with larger ids; the partition count persisted.
    let mut counts: HashMap<(String, u32), u64> = HashMap::new();
    for (topic, p, _) in before.keys() {
        *counts.entry((topic.clone(), *p)).or_default() += 1;
    }
    for ((topic, p), count) in &counts {
        let (id, _, offset) = conn.put(topic, *p as i32, b"after restart", 1);
        assert_eq!(offset, *count, "{topic}/{p}");
        assert!(
            id > max_id,
            "msg id {id} not above the pre-restart maximum {max_id}"
        );
    }
    conn.send(&put_cmd("alpha", 4, 0, b"x", 2));
    conn.read_reply().expect_result(400, 2);
    drop(conn);

    // SIGINT behaves like SIGTERM; a second restart still has everything.
    broker.interrupt();
    broker.restart(&args);
    let mut conn = broker.connect();
    let again = snapshot(&mut conn);
    assert_eq!(again.len(), before.len() + counts.len());
    for (key, r) in &before {
        assert!(
            again.get(key) == Some(r),
            "record {key:?} changed across a second restart"
        );
    }
}

#[test]
fn sigterm_mid_pipeline_answers_in_order_and_keeps_every_ack() {
    const N: usize = 3000;
    let mut broker = Broker::start(&[]);
    let mut conn = broker.connect();
    let bodies: Vec<Vec<u8>> = (0..N).map(|i| format!("term {i}").into_bytes()).collect();
    let mut batch = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        batch.extend_from_slice(&put_cmd("term", 0, 0, b, i as i32));
    }
    let mut writer = conn.writer();
    let write = thread::spawn(move || {
        let _ = writer.write_all(&batch);
    });
    // Once the first reply is in, stop the broker.
    let first = conn.read_reply();
    broker.signal("TERM");

    let mut acked = Vec::new();
    let mut next = Some(first);
    let mut i = 0i32;
    while let Some(reply) = next {
        assert_eq!(
            reply.opaque(),
            i,
            "replies stay in request order: {reply:?}"
        );
        match reply.code() {
            Some(200) => {
                let (_, _, offset) = parse_put_ack(&reply.expect_result(200, i));
                assert_eq!(offset, acked.len() as u64, "acks are contiguous");
                acked.push(offset);
            }
            Some(503) => {}
            _ => panic!("during shutdown a put gets 200 or 503, got {reply:?}"),
        }
        i += 1;
        next = conn.try_read_reply().unwrap_or(None);
    }
    let status = broker.wait_exit(EXIT_TIMEOUT);
    assert!(status.success(), "exit status {status} after SIGTERM");
    let _ = write.join();
    assert!(!acked.is_empty());

    broker.restart(&[]);
    let mut conn = broker.connect();
    let records = conn.read_partition("term", 0);
    assert!(
        records.len() >= acked.len(),
        "{} acked before SIGTERM, {} after restart",
        acked.len(),
        records.len()
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.body, bodies[i], "record {i}");
    }
}

#[test]
fn sigterm_with_idle_and_half_sent_connections_exits_promptly() {
    let mut broker = Broker::start(&[]);
    let mut idle: Vec<Conn> = (0..3).map(|_| broker.connect()).collect();
    for (i, c) in idle.iter_mut().enumerate() {
        c.version(i as i32);
    }
    let mut half = broker.connect();
    half.send(b"put t 0 10 0 1\r\nhel");
    let start = Instant::now();
    broker.terminate();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "SIGTERM with idle clients took {:?}",
        start.elapsed()
    );
    for c in &mut idle {
        c.expect_eof();
    }
    // The half-sent one may get a 503 (shutting down) before the close, or nothing.
    match half.try_read_reply() {
        Ok(None) | Err(_) => {}
        Ok(Some(r)) => assert_eq!(r.code(), Some(503), "{r:?}"),
    }
}

/// In sync mode a put is answered after the group commit that made it durable, and durable
/// records are visible: the acknowledged message is readable by the very next request.
#[test]
fn sync_flush_acknowledged_put_is_visible_to_the_next_get() {
    let broker = Broker::start(&["--flush", "sync"]);
    let mut conn = broker.connect();
    let mut other = broker.connect();
    for i in 0..5 {
        let body = format!("sync {i}");
        let (_, _, offset) = conn.put("syncvis", 0, body.as_bytes(), i);
        assert_eq!(offset, i as u64);
        for c in [&mut conn, &mut other] {
            let reply = c.get("syncvis", GROUP, 0, offset, 1024, 50 + i);
            assert!(
                matches!(reply, Reply::Value { .. }),
                "acknowledged put at offset {offset} not visible under --flush sync: {reply:?}"
            );
            assert_eq!(reply.expect_value(50 + i)[0].body, body.as_bytes());
        }
    }
}

/// What one producer saw acknowledged: (topic, partition, offset, body).
type Acked = Vec<(String, u32, u64, Vec<u8>)>;

fn dur_topic(seq: u64) -> &'static str {
    ["dur-a", "dur-b"][(seq % 2) as usize]
}

fn dur_partition(producer: usize, seq: u64) -> i32 {
    ((seq / 2 + producer as u64) % 4) as i32
}

/// Self-describing, unique body.
fn dur_body(producer: usize, seq: u64) -> Vec<u8> {
    let topic = dur_topic(seq);
    let p = dur_partition(producer, seq);
    format!(
        "imago-dur producer={producer} seq={seq} topic={topic} partition={p} pad={}",
        "z".repeat((seq % 61) as usize)
    )
    .into_bytes()
}

/// One producer: a writer thread pipelining puts (at most `WINDOW` unanswered) and this
/// thread reading replies in order, until the connection dies or `stop` is set.
fn producer(addr: SocketAddr, id: usize, stop: Arc<AtomicBool>) -> Acked {
    const WINDOW: u64 = 256;
    const BATCH: u64 = 16;
    let mut conn = Conn::connect(addr);
    let mut writer = conn.writer();
    let acked_count = Arc::new(AtomicU64::new(0));
    let writer_acked = Arc::clone(&acked_count);
    let writer_stop = Arc::clone(&stop);
    let write = thread::spawn(move || {
        let mut seq = 0u64;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !writer_stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            if seq - writer_acked.load(Ordering::SeqCst) + BATCH > WINDOW {
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            let mut batch = Vec::new();
            for s in seq..seq + BATCH {
                let body = dur_body(id, s);
                batch.extend_from_slice(&put_cmd(
                    dur_topic(s),
                    dur_partition(id, s),
                    0,
                    &body,
                    s as i32,
                ));
            }
            if writer.write_all(&batch).is_err() {
                break;
            }
            seq += BATCH;
        }
    });

    let mut acked = Vec::new();
    let mut seq = 0u64;
    while let Ok(Some(reply)) = conn.try_read_reply() {
        let text = reply.expect_result(200, seq as i32);
        let (_, p, offset) = parse_put_ack(&text);
        assert_eq!(p, dur_partition(id, seq));
        acked.push((
            dur_topic(seq).to_string(),
            p as u32,
            offset,
            dur_body(id, seq),
        ));
        seq += 1;
        acked_count.store(seq, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    let _ = write.join();
    acked
}

/// Runs 4 producers for `load`, kills the broker with SIGKILL mid-run, restarts it with the
/// same `args`, and returns every ack, the recovered log and the restarted broker.
fn kill9_under_load(args: &[&str], load: Duration) -> (Vec<Acked>, Log, Broker) {
    let mut broker = Broker::start(args);
    let addr = broker.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4)
        .map(|id| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || producer(addr, id, stop))
        })
        .collect();
    thread::sleep(load);
    broker.kill9();
    stop.store(true, Ordering::SeqCst);
    let acks: Vec<Acked> = producers
        .into_iter()
        .map(|p| p.join().expect("producer thread"))
        .collect();

    broker.restart(args);
    let mut conn = broker.connect();
    let log = read_all(&mut conn, &[("dur-a", 4), ("dur-b", 4)]);
    (acks, log, broker)
}

/// The recovered partitions take appends at their recovered ends, readable at once.
fn check_appends_after_recovery(broker: &Broker, log: &Log) {
    let mut conn = broker.connect();
    for topic in ["dur-a", "dur-b"] {
        for p in 0..4u32 {
            let count = log.keys().filter(|(t, q, _)| t == topic && *q == p).count() as u64;
            let (_, _, offset) = conn.put(topic, p as i32, b"after recovery", 1);
            assert_eq!(offset, count, "first append after recovery on {topic}/{p}");
            let records = conn.get_records(topic, p as i32, offset, 1);
            assert_eq!(records[0].body, b"after recovery");
        }
    }
}

/// Every record in the recovered log is one we sent, exactly once.
fn check_log_is_ours_and_unique(log: &Log) {
    let mut seen = HashSet::new();
    for ((topic, p, offset), r) in log {
        let text = String::from_utf8(r.body.clone()).expect("body is ours (UTF-8)");
        assert!(text.starts_with("imago-dur "), "foreign record {r:?}");
        assert!(
            text.contains(&format!(" topic={topic} partition={p} ")),
            "record at {topic}/{p}@{offset} was sent elsewhere: {text}"
        );
        assert!(seen.insert(r.body.clone()), "duplicate record {text}");
    }
}

#[test]
fn kill9_under_sync_flush_keeps_every_acknowledged_message() {
    let (acks, log, broker) = kill9_under_load(&["--flush", "sync"], Duration::from_millis(2500));
    let total: usize = acks.iter().map(Vec::len).sum();
    assert!(
        total >= 20,
        "only {total} puts acknowledged in 2.5 s of sync-flush load"
    );
    for (producer, acked) in acks.iter().enumerate() {
        for (topic, p, offset, body) in acked {
            let key = (topic.clone(), *p, *offset);
            let r = log.get(&key).unwrap_or_else(|| {
                panic!(
                    "acknowledged message lost: producer {producer} {topic}/{p}@{offset} {}",
                    show(body)
                )
            });
            assert_eq!(
                &r.body, body,
                "acknowledged message changed at {topic}/{p}@{offset}"
            );
        }
    }
    check_log_is_ours_and_unique(&log);
    eprintln!("kill9 sync: {total} acked, {} recovered", log.len());
    check_appends_after_recovery(&broker, &log);
}

#[test]
fn kill9_under_async_flush_recovers_a_consistent_log() {
    // No durability promise for acks here; recovery must still yield whole, valid,
    // contiguous records (read_partition checks offsets and CRCs) that we sent, once each.
    let (acks, log, broker) = kill9_under_load(&[], Duration::from_millis(1500));
    let total: usize = acks.iter().map(Vec::len).sum();
    assert!(total > 0, "nothing acknowledged under async flush");
    check_log_is_ours_and_unique(&log);
    eprintln!("kill9 async: {total} acked, {} recovered", log.len());
    check_appends_after_recovery(&broker, &log);
}
