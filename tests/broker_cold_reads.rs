//! Reads of a cold backlog and fairness between connections: a get of the backlog (records
//! this broker process did not write moments ago) is read by the fetch thread, off the event
//! loop, and answered in request order on its connection, and counted as `get_cold`; a get of
//! records just put is served by the loop; a connection pipelining large gets as fast as it
//! reads the replies does not keep the others waiting (bounded turns, protocol.md).

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Writes back and drops from the page cache every file under `dir` (no process may map
/// them: the broker must have exited).
fn evict(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            evict(&path);
        } else if let Ok(f) = std::fs::File::open(&path) {
            f.sync_all().unwrap();
            // SAFETY: an advice call on a descriptor we own.
            let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(rc, 0, "posix_fadvise {}", path.display());
        }
    }
}

/// Puts `n` records of `size` bytes into `topic`/0, pipelined; returns their bodies.
fn fill(c: &mut Conn, topic: &str, n: usize, size: usize) -> Vec<Vec<u8>> {
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut b = format!("record {i} ").into_bytes();
            b.resize(size, b'a' + (i % 26) as u8);
            b
        })
        .collect();
    for chunk in bodies.chunks(100) {
        let mut batch = Vec::new();
        for (i, b) in chunk.iter().enumerate() {
            batch.extend_from_slice(&put_cmd(topic, 0, 0, b, i as i32));
        }
        c.send(&batch);
        for i in 0..chunk.len() {
            c.read_reply().expect_result(200, i as i32);
        }
    }
    bodies
}

#[test]
fn a_get_of_evicted_records_is_fetched_then_answered_in_request_order() {
    let mut broker = Broker::start(&[]);
    let mut c = broker.connect();
    let bodies = fill(&mut c, "cold", 4000, 1000);
    drop(c);
    broker.terminate();
    evict(broker.data_dir());
    broker.restart(&[]);

    let mut c = broker.connect();
    assert_eq!(c.counter("get_cold"), 0, "nothing read yet");
    // A cold get and a version in one write: the version must not overtake the get.
    let mut two = get_cmd("cold", 0, 0, GET_BYTES_MAX_DEFAULT, 5);
    two.extend_from_slice(b"version 6\r\n");
    c.send(&two);
    let records = c.read_reply().expect_value(5);
    c.read_reply().expect_result(200, 6);
    assert!(
        records.len() > 500,
        "a 1 MiB get returned {}",
        records.len()
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.body, bodies[i], "body of offset {i}");
    }
    assert_eq!(c.counter("get_cold"), 1, "the evicted read was fetched");

    // The same read again (from the page cache now) is still the backlog's.
    let again = c.get_records("cold", 0, 0, GET_BYTES_MAX_DEFAULT);
    assert_eq!(again.len(), records.len());
    assert_eq!(c.counter("get_cold"), 2, "a backlog read, warm or not");
    c.send(b"stats reset\r\n");
    c.expect_bytes(b"RESET\r\n");
    assert_eq!(c.counter("get_cold"), 0, "stats reset zeroes it");
    let all = c.read_partition("cold", 0);
    assert_eq!(all.len(), bodies.len());
    for (r, b) in all.iter().zip(&bodies) {
        assert_eq!(&r.body, b, "body of offset {}", r.offset);
    }
    let cold = c.counter("get_cold");
    assert!(
        cold >= 4,
        "the whole backlog was read by the fetch thread ({cold} gets)"
    );
    // A record put now is the hot tail's: the loop reads it.
    let (_, _, offset) = c.put("cold", 0, b"new", 7);
    let new = c.get_records("cold", 0, offset, GET_BYTES_MAX_DEFAULT);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].body, b"new");
    assert_eq!(c.counter("get_cold"), cold, "a tailing read is not cold");
    broker.terminate();
}

#[test]
fn a_connection_pipelining_gets_as_fast_as_it_reads_does_not_starve_a_producer() {
    let broker = Broker::start(&[]);
    let mut c = broker.connect();
    let bodies = fill(&mut c, "busy", 1, 100);
    let rec = record_size("busy", b"", b"", &bodies[0]);
    let gets = 200_000i32;
    let mut batch = Vec::new();
    let mut total = 0u64; // every reply's bytes: its header line and the one record
    for i in 0..gets {
        batch.extend_from_slice(&get_cmd("busy", 0, 0, rec as i32, i)); // one record each
        total += (format!("value {rec} {i}\r\n").len() + rec) as u64;
    }
    let reader = broker.connect();
    let mut sock = reader.writer();
    let mut send = reader.writer();
    // Replies are read (and thrown away) as fast as they come, so output never backs up and
    // the broker always has more of this connection's input to handle.
    let received = Arc::new(AtomicU64::new(0));
    let counted = received.clone();
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < total {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got += n as u64;
                    counted.store(got, Ordering::Relaxed);
                }
            }
        }
        got
    });
    let sender = thread::spawn(move || std::io::Write::write_all(&mut send, &batch));
    let started = wait_for(Duration::from_secs(10), || {
        (received.load(Ordering::Relaxed) > 1 << 20).then_some(())
    });
    assert!(started.is_some(), "the gets are not answered");
    let t0 = Instant::now();
    let (_, _, offset) = c.put("busy", 0, b"from the producer", 9);
    let waited = t0.elapsed();
    let answered = received.load(Ordering::Relaxed);
    sender.join().unwrap().unwrap();
    assert_eq!(drain.join().unwrap(), total, "every get answered");
    assert_eq!(offset, 1);
    assert!(
        answered < total / 2,
        "the put was answered after {answered} of {total} reply bytes (waited {waited:?})"
    );
}

#[test]
fn a_cold_get_with_a_tag_filter_answers_the_same_records_as_the_warm_one() {
    let mut broker = Broker::start(&[]);
    let mut c = broker.connect();
    let payload = vec![b'p'; 1000];
    for chunk in (0..3000i32).collect::<Vec<_>>().chunks(100) {
        let mut batch = Vec::new();
        for &i in chunk {
            let tag = if i % 3 == 0 { "keep" } else { "drop" };
            let body = attr_body(tag.as_bytes(), &payload);
            batch.extend_from_slice(&put_cmd("tagged", 0, 1, &body, i));
        }
        c.send(&batch);
        for &i in chunk {
            c.read_reply().expect_result(200, i);
        }
    }
    drop(c);
    broker.terminate();
    evict(broker.data_dir());
    broker.restart(&[]);

    let mut c = broker.connect();
    let get = format!("get tagged {GROUP} 0 0 {GET_BYTES_MAX_DEFAULT} 0 keep 3\r\n");
    c.send(get.as_bytes());
    let cold = c.read_reply().expect_value(3);
    assert_eq!(c.counter("get_cold"), 1, "the evicted read was fetched");
    assert!(
        cold.len() > 300,
        "a 1 MiB tagged get returned {}",
        cold.len()
    );
    for (i, r) in cold.iter().enumerate() {
        assert_eq!(
            r.offset,
            3 * i as u64,
            "only every third record is tagged keep"
        );
        assert_eq!(r.tag, b"keep");
    }
    // The same records, put again by this process, are read by the event loop.
    let mut c2 = broker.connect();
    for r in &cold {
        let body = attr_body(&r.tag, &r.body);
        c2.send(&put_cmd("taggee", 0, 1, &body, 1));
        c2.read_reply().expect_result(200, 1);
    }
    let get = format!("get taggee {GROUP} 0 0 {GET_BYTES_MAX_DEFAULT} 0 keep 4\r\n");
    c.send(get.as_bytes());
    let warm = c.read_reply().expect_value(4);
    assert_eq!(c.counter("get_cold"), 1, "the new topic is the hot tail's");
    assert_eq!(warm.len(), cold.len());
    for (w, c) in warm.iter().zip(&cold) {
        assert_eq!((&w.tag, &w.body), (&c.tag, &c.body));
    }
    broker.terminate();
}
