//! The operator's view of a running broker, against the real binary: `stats reset`, `stats
//! help`, `stats settings` showing the limits in force, and committed offsets reaching the disk
//! even after a failed write.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The counters of the general `stats` table (type `counter` in protocol.md): `stats reset`
/// zeroes exactly these.
const COUNTERS: &[&str] = &[
    "total_connections",
    "rejected_connections",
    "cmd_put",
    "cmd_get",
    "cmd_offset",
    "cmd_stats",
    "cmd_version",
    "get_hits",
    "get_misses",
    "get_moved",
    "get_cold",
    "put_errors",
    "bad_requests",
    "bytes_read",
    "bytes_written",
    "messages_stored",
    "bytes_stored",
    "fsyncs",
    "corrupt_records",
    "cmd_commit",
    "cmd_join",
    "cmd_heartbeat",
    "parked_wakeups",
];

/// Current states of the general table that a reset must leave alone.
const GAUGES: &[&str] = &[
    "pid",
    "curr_connections",
    "connections_max",
    "topics",
    "partitions",
    "commitlog_segments",
    "commitlog_min_pos",
    "commitlog_max_pos",
    "commitlog_durable_pos",
    "flush_mode",
    "index_maps_open",
    "groups",
    "parked_gets",
];

#[track_caller]
fn value<'a>(stats: &'a [(String, String)], name: &str) -> &'a str {
    stat(stats, name).unwrap_or_else(|| panic!("no STAT {name} in {stats:?}"))
}

#[track_caller]
fn number(stats: &[(String, String)], name: &str) -> u64 {
    let v = value(stats, name);
    v.parse()
        .unwrap_or_else(|_| panic!("STAT {name} {v} is not a u64"))
}

#[test]
fn stats_reset_zeroes_every_counter_and_leaves_the_gauges() {
    let broker = Broker::start(&["--connections-max", "3", "--flush", "sync"]);
    let mut conn = broker.connect();
    let mut other = broker.connect();
    // One of each counted event: puts (stored, one error), get hit/miss/moved, offset,
    // version, a malformed line, group commands, a refused connection.
    conn.put("reset", 0, b"one", 1);
    conn.put("reset", 0, b"two", 2);
    conn.send(b"put reset 0 5 0 123 3\r\nhello");
    conn.read_reply().expect_result(400, 3);
    conn.get_records("reset", 0, 0, 1000);
    conn.get("reset", GROUP, 0, 2, 1000, 4)
        .expect_result(404, 4);
    conn.get("reset", GROUP, 0, 9, 1000, 5)
        .expect_result(301, 5);
    conn.offset("reset", 0, 0, 6).expect_result(200, 6);
    conn.version(7);
    conn.send(b"nonsense 8\r\n");
    conn.read_reply().expect_result(400, 8);
    other.join_ok("billing", "reset", "m1", "cluster", "earliest", 9);
    other.heartbeat_ok("billing", "reset", "m1", 10);
    other.commit_ok("billing", "reset", 0, 1, "m1", 1, 11);
    // A long-poll get woken by a put.
    conn.send(&get_wait_cmd("reset", GROUP, 0, 2, 1000, 5000, None, 12));
    let parked = wait_for(Duration::from_secs(10), || {
        (stat(&other.stats(None), "parked_gets") == Some("1")).then_some(())
    });
    assert!(parked.is_some(), "the get never parked");
    other.put("reset", 0, b"wake", 13);
    conn.read_reply().expect_value(12);
    let _third = broker.connect();
    let mut refused = broker.connect();
    refused.read_reply().expect_result(503, OPAQUE_NONE);
    refused.expect_eof();

    let before = conn.stats(None);
    // These two need a damaged or an evicted log; their own tests check that they count
    // (store_recovery, broker_cold_reads) and that a reset zeroes them.
    for name in COUNTERS
        .iter()
        .filter(|n| !["corrupt_records", "get_cold"].contains(n))
    {
        assert!(
            number(&before, name) > 0,
            "{name} must count before the reset: {before:?}"
        );
    }

    conn.send(b"stats reset\r\n");
    conn.expect_bytes(b"RESET\r\n");
    let after = conn.stats(None);
    for name in COUNTERS {
        let want = match *name {
            // The `stats` request that reads them has been counted and read by then.
            "cmd_stats" => 1,
            "bytes_read" => b"stats\r\n".len() as u64,
            _ => 0,
        };
        // bytes_written may or may not include the RESET reply, written after the reset.
        if *name == "bytes_written" {
            let written = number(&after, name);
            assert!(written <= 7, "bytes_written {written} after the reset");
            continue;
        }
        assert_eq!(
            number(&after, name),
            want,
            "{name} after stats reset: {after:?}"
        );
    }
    for name in GAUGES {
        assert_eq!(
            value(&after, name),
            value(&before, name),
            "gauge {name} must survive stats reset"
        );
    }
    assert_eq!(number(&after, "curr_connections"), 3);
    assert_eq!(number(&after, "groups"), 1);

    // Counting resumes from zero, store-derived counters included.
    conn.put("reset", 1, b"three", 14);
    let stats = conn.stats(None);
    assert_eq!(number(&stats, "cmd_put"), 1);
    assert_eq!(number(&stats, "messages_stored"), 1);
    assert_eq!(
        number(&stats, "bytes_stored"),
        record_size("reset", b"", b"", b"three") as u64
    );
    assert!(number(&stats, "fsyncs") >= 1, "{stats:?}");

    // The result form.
    conn.send(b"stats reset 15\r\n");
    conn.expect_bytes(b"result 200 7 15\r\nRESET\r\n");
    let stats = conn.stats_result("", 16);
    assert_eq!(number(&stats, "cmd_put"), 0);
    assert_eq!(number(&stats, "messages_stored"), 0);
}

/// The items table of protocol.md's `stats` section: (item, shows), with `(none or empty)`
/// read as the empty item.
fn documented_stats_items() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/protocol.md"))
        .expect("read protocol.md");
    let start = doc
        .find("| item | shows |")
        .expect("protocol.md has the stats items table");
    doc[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let item = match cells[0] {
                "(none or empty)" => String::new(),
                quoted => quoted.trim_matches('`').to_owned(),
            };
            (item, cells[1].to_owned())
        })
        .collect()
}

#[test]
fn stats_help_lists_every_documented_item_with_its_documented_meaning() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    let documented = documented_stats_items();
    assert_eq!(documented.len(), 10, "{documented:?}");
    let expected: Vec<(String, String)> = documented
        .iter()
        .map(|(item, shows)| (format!("help:{item}"), shows.clone()))
        .collect();
    assert_eq!(conn.stats(Some("help")), expected);
    // The result form carries the same lines.
    assert_eq!(conn.stats_result("help", 3), expected);
    // Every item listed is answered (not an unknown item); a topic stands in for <topic>.
    conn.put("helped", 0, b"x", 4);
    for (item, _) in &documented {
        let item = match item.as_str() {
            "<topic>" => "helped".to_owned(),
            "group:<group>" => "group:nobody".to_owned(),
            other => other.to_owned(),
        };
        let reply = conn.call(&format!("stats {item} 5"), 5);
        reply.expect_result(200, 5);
    }
}

/// A broker started with open-file limits `soft` and `hard` (it raises the soft one to the
/// hard one, then fits `connections_max` under it).
struct LimitedBroker {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl LimitedBroker {
    fn start(soft: u64, hard: u64) -> LimitedBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imago"));
        cmd.args(["--listen", "127.0.0.1:0", "--connections-max", "10000"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let rl = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn imago");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("start-up line");
        let (_, addr) = parse_startup_line(&line).unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("{e}")
        });
        LimitedBroker {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for LimitedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit_at_start_up() {
    // Soft 100, hard 1000: raised to 1000, less the 64 kept back, is 936 connections.
    let broker = LimitedBroker::start(100, 1000);
    let mut conn = Conn::connect(broker.addr);
    let settings = conn.stats(Some("settings"));
    assert_eq!(value(&settings, "connections_max"), "936");
}

#[test]
fn stats_settings_shows_the_connections_max_in_force_after_the_open_file_limit_lowers_it() {
    // 100 descriptors, 64 kept back (protocol.md "Limits"): 36 connections, not 10000.
    let broker = LimitedBroker::start(100, 100);
    let in_force = 36;
    let mut conns = vec![Conn::connect(broker.addr)];
    let settings = conns[0].stats(Some("settings"));
    assert_eq!(value(&settings, "connections_max"), in_force.to_string());
    let general = conns[0].stats(None);
    assert_eq!(value(&general, "connections_max"), in_force.to_string());
    // It is the limit actually applied: 36 connections are served, the 37th is refused.
    for i in 1..in_force {
        let mut c = Conn::connect(broker.addr);
        c.version(i);
        conns.push(c);
    }
    let mut extra = Conn::connect(broker.addr);
    extra.read_reply().expect_result(503, OPAQUE_NONE);
    extra.expect_eof();
    conns[0].version(99);
}

#[test]
fn a_failed_offsets_write_is_retried_until_it_succeeds_and_the_commit_survives_a_crash() {
    let args = ["--offsets-flush-interval-ms", "50"];
    let mut broker = Broker::start(&args);
    // A directory where the broker writes its temporary offsets file: every write fails.
    let blocker = broker.data_dir().join("offsets.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let mut conn = broker.connect();
    conn.put("durable", 0, b"a", 1);
    conn.put("durable", 0, b"b", 2);
    conn.commit_ok("keeper", "durable", 0, 2, "-", -1, 3);
    let offsets = broker.data_dir().join("offsets");
    let failed = wait_for(Duration::from_secs(10), || {
        broker
            .log()
            .contains("writing committed offsets")
            .then_some(())
    });
    assert!(
        failed.is_some(),
        "no failed write logged:\n{}",
        broker.log()
    );
    assert!(!offsets.exists(), "the write cannot have succeeded");

    // Unblocked, with no further commit: the next interval writes the offset.
    std::fs::remove_dir(&blocker).unwrap();
    let started = Instant::now();
    let written = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&offsets).ok()?;
        text.lines()
            .any(|l| l.starts_with("keeper durable 0 2 "))
            .then_some(())
    });
    assert!(
        written.is_some(),
        "the failed write was not retried within {:?}",
        started.elapsed()
    );

    broker.kill9();
    broker.restart(&args);
    let mut conn = broker.connect();
    assert_eq!(conn.fetch_offset("keeper", "durable", 0, "-", 4), Some(2));
}

#[test]
fn stats_groups_shows_each_broadcast_members_own_lag_and_the_groups_total() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    for (p, n) in [(0, 3), (1, 2)] {
        for i in 0..n {
            conn.put("bcast", p, b"m", i);
        }
    }
    // Both members start at the earliest offsets (committed under their own keys).
    conn.join_ok("gb", "bcast", "b1", "broadcast", "earliest", 1);
    let a = conn.join_ok("gb", "bcast", "b2", "broadcast", "earliest", 2);
    conn.commit_ok("gb", "bcast", 0, 3, "b1", a.generation, 3);
    conn.commit_ok("gb", "bcast", 1, 1, "b2", a.generation, 4);

    let stats = conn.stats_result("group:gb", 5);
    // b1: partition 0 consumed, 2 left in partition 1. b2: 3 left in 0, 1 left in 1.
    assert_eq!(value(&stats, "group:gb@b1:bcast:lag"), "2", "{stats:?}");
    assert_eq!(value(&stats, "group:gb@b2:bcast:lag"), "4", "{stats:?}");
    assert_eq!(value(&stats, "group:gb@b1:bcast:0:lag"), "0");
    assert_eq!(value(&stats, "group:gb@b2:bcast:0:lag"), "3");
    assert_eq!(value(&stats, "group:gb@b2:bcast:1:owner"), "b2");
    // The group's total sums every member's own lag.
    assert_eq!(value(&stats, "group:gb:bcast:lag"), "6");
    assert_eq!(value(&stats, "group:gb:bcast:members"), "2");
    // A cluster group has no per-member lag lines.
    conn.join_ok("gc", "bcast", "c1", "cluster", "earliest", 6);
    let cluster = conn.stats_result("group:gc", 7);
    assert_eq!(value(&cluster, "group:gc:bcast:lag"), "5", "{cluster:?}");
    assert!(!cluster.iter().any(|(n, _)| n.contains('@')), "{cluster:?}");
}
