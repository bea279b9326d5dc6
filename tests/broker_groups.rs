//! Consumer groups, black-box (spec-groups.md): membership and range assignment, generation
//! fencing of commits, expiry, broadcast groups, long-polling and tag-filtered gets, durable
//! committed offsets, reset (rewind), `stats groups` and the new error replies.
//!
//! Every test runs the real binary on 127.0.0.1:0; every read is bounded by the harness'
//! IO_TIMEOUT and every loop by an explicit deadline.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const MAX: i32 = GET_BYTES_MAX_DEFAULT;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Puts `n` messages `<prefix>-<i>` to `partition`; returns their offsets.
fn put_n(conn: &mut Conn, topic: &str, partition: i32, prefix: &str, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let body = format!("{prefix}-{i}");
            conn.put(topic, partition, body.as_bytes(), 500 + i as i32)
                .2
        })
        .collect()
}

/// Puts one message with tag `tag` (flag bit 0, attribute) to `partition`; returns its offset.
fn put_tagged(conn: &mut Conn, topic: &str, partition: i32, tag: &str, payload: &str) -> u64 {
    let body = attr_body(tag.as_bytes(), payload.as_bytes());
    conn.put_flag(topic, partition, 1, &body, 31).2
}

fn body_text(r: &Record) -> String {
    String::from_utf8(r.body.clone()).expect("test bodies are UTF-8")
}

/// Reads partition `p` from `from` until caught up (404), following next offsets.
fn read_from(conn: &mut Conn, topic: &str, group: &str, p: u32, from: u64) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut offset = from;
    for round in 0..10_000 {
        let reply = conn.get(topic, group, p as i32, offset, MAX, round);
        match reply {
            Reply::Value { .. } => {
                for r in reply.expect_value(round) {
                    assert_eq!(r.offset, offset, "non-contiguous offsets in {topic}/{p}");
                    offset += 1;
                    out.push(r);
                }
            }
            Reply::Result { code: 404, .. } => return out,
            _ => panic!("get {topic}/{p} at {offset}: {reply:?}"),
        }
    }
    panic!("read_from {topic}/{p}: too many rounds");
}

/// `stats <topic>` max offsets by partition.
fn max_offsets(conn: &mut Conn, topic: &str, partitions: u32) -> Vec<u64> {
    let stats = conn.stats(Some(topic));
    (0..partitions)
        .map(|p| {
            let name = format!("{topic}:{p}:max_offset");
            canonical(
                stat(&stats, &name).unwrap_or_else(|| panic!("no {name} in {stats:?}")),
                "max_offset",
            )
        })
        .collect()
}

/// Asserts that `assignments` (member -> assignment, all live members of one generation) cover
/// each of `partitions` exactly once and follow the range rule.
#[track_caller]
fn assert_range_rule(assignments: &BTreeMap<String, Assignment>, partitions: u32) {
    let members: Vec<&str> = assignments.keys().map(|s| s.as_str()).collect();
    let expected = range_assignment(&members, partitions);
    let mut seen = BTreeMap::new();
    for (member, a) in assignments {
        for p in a.partitions.keys() {
            if let Some(other) = seen.insert(*p, member.clone()) {
                panic!("partition {p} assigned to both {other} and {member}: {assignments:?}");
            }
        }
        assert_eq!(
            a.partition_list(),
            expected[member],
            "member {member} does not hold its range (members {members:?}, {partitions} \
             partitions): {assignments:?}"
        );
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..partitions).collect::<Vec<_>>(),
        "partitions not covered exactly once: {assignments:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Membership, range assignment, exactly-once consumption across rebalances
// ---------------------------------------------------------------------------------------------

#[test]
fn range_helper_matches_the_spec_example() {
    // Guards the helper the other tests compare against: byte order puts "B" < "_x" < "a10" <
    // "a9" < "b"; 12 partitions over 5 members: 2 each, the first 12 % 5 = 2 members one more.
    let got = range_assignment(&["b", "a9", "a10", "B", "_x"], 12);
    let want: BTreeMap<String, Vec<u32>> = [
        ("B", vec![0, 1, 2]),
        ("_x", vec![3, 4, 5]),
        ("a10", vec![6, 7]),
        ("a9", vec![8, 9]),
        ("b", vec![10, 11]),
    ]
    .into_iter()
    .map(|(m, v)| (m.to_string(), v))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn cluster_assignment_is_contiguous_ranges_over_members_sorted_by_byte_order() {
    let broker = Broker::start(&["--default-partitions", "12"]);
    let mut admin = broker.connect();
    admin.put("orders", 0, b"seed", 1);

    let ids = ["b", "a9", "a10", "B", "_x"];
    let mut conns: Vec<(String, Conn)> = Vec::new();
    let mut last_generation = 0;
    for (i, id) in ids.iter().enumerate() {
        let mut conn = broker.connect();
        let a = conn.join_ok("g", "orders", id, "cluster", "earliest", 10 + i as i32);
        assert!(
            a.generation > last_generation,
            "join of a new member {id} must raise the generation ({last_generation} -> {a:?})"
        );
        assert_eq!(a.session_timeout_ms, 10_000, "default session_timeout_ms");
        last_generation = a.generation;
        conns.push((id.to_string(), conn));

        // Every live member's heartbeat shows the new generation and its range.
        let mut round = BTreeMap::new();
        for (member, conn) in conns.iter_mut() {
            let hb = conn.heartbeat_ok("g", "orders", member, 20);
            assert_eq!(hb.generation, last_generation, "{member}: {hb:?}");
            for (p, o) in &hb.partitions {
                assert_eq!(*o, 0, "{member}: start offset of partition {p}");
            }
            round.insert(member.clone(), hb);
        }
        assert_range_rule(&round, 12);
    }

    // 13 members over 12 partitions: the last one (byte order) gets `<generation> <timeout>`.
    let mut many: Vec<Conn> = Vec::new();
    for i in 0..13 {
        let mut conn = broker.connect();
        conn.join_ok("h", "orders", &format!("n{i:02}"), "cluster", "earliest", 1);
        many.push(conn);
    }
    let reply = many[12].heartbeat("h", "orders", "n12", 2);
    let body = reply.expect_result(200, 2);
    let tokens: Vec<&str> = body.split(' ').collect();
    assert_eq!(
        tokens.len(),
        2,
        "a member with no partitions gets just `<generation> <sessionTimeoutMs>`: {body:?}"
    );
    let mut round = BTreeMap::new();
    for (i, conn) in many.iter_mut().enumerate() {
        let id = format!("n{i:02}");
        round.insert(id.clone(), conn.heartbeat_ok("h", "orders", &id, 3));
    }
    let generations: BTreeSet<i64> = round.values().map(|a| a.generation).collect();
    assert_eq!(generations.len(), 1, "one generation: {round:?}");
    assert_range_rule(&round, 12);
}

#[test]
fn rejoining_as_a_live_member_keeps_the_generation_and_leaving_raises_it() {
    let broker = Broker::start(&["--default-partitions", "12"]);
    let mut admin = broker.connect();
    admin.put("orders", 0, b"seed", 1);
    let mut c1 = broker.connect();
    let mut c2 = broker.connect();
    let a1 = c1.join_ok("g", "orders", "m1", "cluster", "earliest", 1);
    assert_eq!(a1.partition_list(), (0..12).collect::<Vec<_>>());
    let a2 = c2.join_ok("g", "orders", "m2", "cluster", "earliest", 2);
    assert!(a2.generation > a1.generation);

    let again = c1.join_ok("g", "orders", "m1", "cluster", "earliest", 3);
    assert_eq!(
        again.generation, a2.generation,
        "joining again as a live member must not change the generation"
    );
    assert_eq!(again.partition_list(), (0..6).collect::<Vec<_>>());

    c2.leave_ok("g", "orders", "m2", 4);
    let hb = c1.heartbeat_ok("g", "orders", "m1", 5);
    assert!(
        hb.generation > a2.generation,
        "a leave must raise the generation: {hb:?}"
    );
    assert_eq!(hb.partition_list(), (0..12).collect::<Vec<_>>());
    let gone = c2.heartbeat("g", "orders", "m2", 6);
    assert_eq!(gone.expect_result(409, 6), "unknown member m2");
}

const EO_GROUP: &str = "billing";
const EO_TOPIC: &str = "orders";
const EO_PARTS: u32 = 12;

struct Producer {
    conn: Conn,
    produced: Vec<String>,
    max: Vec<u64>,
    op: i32,
}

impl Producer {
    fn put_some(&mut self, k: usize) {
        for _ in 0..k {
            let body = format!("msg-{:06}", self.produced.len());
            self.op += 1;
            let (_, p, off) = self.conn.put(EO_TOPIC, -1, body.as_bytes(), self.op);
            assert_eq!(off, self.max[p as usize], "dense offsets in partition {p}");
            self.max[p as usize] = off + 1;
            self.produced.push(body);
        }
    }
}

struct Consumer {
    id: String,
    conn: Conn,
    generation: i64,
    positions: BTreeMap<u32, u64>,
    op: i32,
}

impl Consumer {
    fn next_op(&mut self) -> i32 {
        self.op += 1;
        self.op
    }

    /// One get per owned partition (small maxSize, so messages stay in flight across
    /// rebalances); counts deliveries; returns how many records arrived.
    fn poll(&mut self, deliveries: &mut HashMap<String, u32>, max: &[u64]) -> usize {
        let mut n = 0;
        let owned: Vec<u32> = self.positions.keys().copied().collect();
        for p in owned {
            let pos = self.positions[&p];
            let op = self.next_op();
            let reply = self.conn.get(EO_TOPIC, EO_GROUP, p as i32, pos, 300, op);
            match reply {
                Reply::Value { .. } => {
                    let mut next = pos;
                    for r in reply.expect_value(op) {
                        assert_eq!(
                            (r.partition, r.offset),
                            (p, next),
                            "{}: record {r:?}",
                            self.id
                        );
                        next += 1;
                        *deliveries.entry(body_text(&r)).or_insert(0) += 1;
                        n += 1;
                    }
                    self.positions.insert(p, next);
                }
                Reply::Result { code: 404, .. } => {
                    assert_eq!(
                        pos, max[p as usize],
                        "{}: 404 at {p}:{pos} but max is {}",
                        self.id, max[p as usize]
                    );
                }
                _ => panic!("{}: get {p} at {pos}: {reply:?}", self.id),
            }
        }
        n
    }

    /// Commits every owned position in the current generation (all must be accepted).
    fn commit_all(&mut self, committed: &mut [u64]) {
        let owned: Vec<(u32, u64)> = self.positions.iter().map(|(p, o)| (*p, *o)).collect();
        for (p, pos) in owned {
            let op = self.next_op();
            let (id, generation) = (self.id.clone(), self.generation);
            self.conn
                .commit_ok(EO_GROUP, EO_TOPIC, p as i64, pos, &id, generation, op);
            committed[p as usize] = pos;
        }
    }
}

#[test]
fn cluster_members_consume_each_message_exactly_once_across_joins_and_leaves() {
    let broker = Broker::start(&["--default-partitions", "12"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut producer = Producer {
        conn: broker.connect(),
        produced: Vec::new(),
        max: vec![0; EO_PARTS as usize],
        op: 0,
    };
    producer.put_some(24); // creates the topic with 12 partitions

    enum Event {
        Join(&'static str),
        Leave(&'static str),
    }
    let schedule: BTreeMap<usize, Event> = [
        (0, Event::Join("m1")),
        (3, Event::Join("m2")),
        (6, Event::Join("m3")),
        (9, Event::Leave("m2")),
        (12, Event::Join("m2")),
        (15, Event::Leave("m1")),
        (18, Event::Join("m1")),
        (21, Event::Leave("m3")),
        (24, Event::Leave("m2")),
        (27, Event::Join("m3")),
        (30, Event::Join("m2")),
    ]
    .into_iter()
    .collect();

    let mut consumers: Vec<Consumer> = Vec::new();
    let mut deliveries: HashMap<String, u32> = HashMap::new();
    let mut committed = vec![0u64; EO_PARTS as usize];
    let mut generation = 0i64;
    let mut generations = 0;
    let mut expect_bump = false; // a leave raised the generation to a value not seen yet

    let mut round = 0usize;
    let mut quiet_rounds = 0;
    loop {
        assert!(Instant::now() < deadline, "exactly-once test took > 120 s");
        let producing = round < 33;
        match schedule.get(&round) {
            Some(Event::Join(id)) => {
                let mut conn = broker.connect();
                let a = conn.join_ok(EO_GROUP, EO_TOPIC, id, "cluster", "earliest", 1);
                assert!(
                    a.generation > generation,
                    "join {id}: {a:?} after {generation}"
                );
                generation = a.generation;
                generations += 1;
                for (p, o) in &a.partitions {
                    assert_eq!(
                        *o, committed[*p as usize],
                        "join {id}: partition {p} must start at its committed offset"
                    );
                }
                consumers.push(Consumer {
                    id: id.to_string(),
                    conn,
                    generation: a.generation,
                    positions: a.partitions,
                    op: 1,
                });
            }
            Some(Event::Leave(id)) => {
                let at = consumers.iter().position(|c| c.id == *id).unwrap();
                let mut c = consumers.remove(at);
                // Its last step committed everything it consumed.
                c.conn.leave_ok(EO_GROUP, EO_TOPIC, id, 99);
                expect_bump = true;
            }
            None => {}
        }
        if producing {
            producer.put_some(5);
        }

        // Each member: heartbeat (switch on a new generation), poll, commit.
        let mut assignments = BTreeMap::new();
        let mut delivered = 0;
        for c in consumers.iter_mut() {
            let op = c.next_op();
            let id = c.id.clone();
            let hb = c.conn.heartbeat_ok(EO_GROUP, EO_TOPIC, &id, op);
            if expect_bump {
                assert!(
                    hb.generation > generation,
                    "{id}: a leave must raise the generation"
                );
                generation = hb.generation;
                expect_bump = false;
            }
            if hb.generation != c.generation {
                assert!(
                    hb.generation > c.generation,
                    "{id}: generation went back: {hb:?}"
                );
                // Everything consumed so far was committed at the end of the last step, so the
                // switch loses nothing: the offsets given are the committed ones.
                for (p, o) in &hb.partitions {
                    assert_eq!(
                        *o, committed[*p as usize],
                        "{id}: new generation {}: partition {p} offset",
                        hb.generation
                    );
                }
                c.generation = hb.generation;
                c.positions = hb.partitions.clone();
            } else {
                assert_eq!(
                    hb.partition_list(),
                    c.positions.keys().copied().collect::<Vec<_>>(),
                    "{id}: same generation {} but another assignment",
                    hb.generation
                );
            }
            assert_eq!(hb.generation, generation, "{id}: heartbeat generation");
            assignments.insert(id, hb);
            delivered += c.poll(&mut deliveries, &producer.max);
            c.commit_all(&mut committed);
            if producing {
                producer.put_some(3);
            }
        }
        assert_range_rule(&assignments, EO_PARTS);

        round += 1;
        if !producing {
            let caught_up = committed == producer.max;
            quiet_rounds = if delivered == 0 && caught_up {
                quiet_rounds + 1
            } else {
                0
            };
            if quiet_rounds >= 2 {
                break;
            }
        }
    }

    let mut missing = Vec::new();
    let mut duplicated = Vec::new();
    for body in &producer.produced {
        match deliveries.get(body) {
            None => missing.push(body.clone()),
            Some(1) => {}
            Some(n) => duplicated.push((body.clone(), *n)),
        }
    }
    assert!(
        missing.is_empty() && duplicated.is_empty() && deliveries.len() == producer.produced.len(),
        "{} produced, {} distinct delivered; missing {missing:?}; duplicated {duplicated:?}",
        producer.produced.len(),
        deliveries.len()
    );
    let mut admin = broker.connect();
    for p in 0..EO_PARTS {
        assert_eq!(
            admin.fetch_offset(EO_GROUP, EO_TOPIC, p as i64, "-", 7),
            Some(producer.max[p as usize]),
            "group-level committed offset of partition {p}"
        );
    }
    println!(
        "exactly-once (sequential): {} messages, {generations} joins, {} rounds",
        producer.produced.len(),
        round
    );
}

#[derive(Default)]
struct Shared {
    consumed: Mutex<HashMap<String, u32>>,
    refused_commits: AtomicU64,
    switches: AtomicU64,
}

/// A client loop: heartbeat-switch, long-poll each owned partition (waitMs 20), commit what it
/// read; records whose commit is refused (409) are discarded (they were not consumed) and the
/// next heartbeat must show a new generation.
fn member_loop(addr: std::net::SocketAddr, id: String, stop: Arc<AtomicBool>, shared: Arc<Shared>) {
    let mut conn = Conn::connect(addr);
    let mut op = 0i32;
    let mut next = || {
        op += 1;
        op
    };
    let a = conn.join_ok(EO_GROUP, EO_TOPIC, &id, "cluster", "earliest", next());
    let mut generation = a.generation;
    let mut positions = a.partitions;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "{id}: member loop ran > 120 s");
        let mut pending: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (&p, pos) in positions.iter_mut() {
            let o = next();
            conn.send(&get_wait_cmd(
                EO_TOPIC, EO_GROUP, p as i32, *pos, 400, 20, None, o,
            ));
            let reply = conn.read_reply();
            assert_eq!(reply.opaque(), o, "{id}: reply opaque {reply:?}");
            match reply {
                Reply::Value { .. } => {
                    for r in reply.expect_value(o) {
                        assert_eq!((r.partition, r.offset), (p, *pos), "{id}: record {r:?}");
                        *pos += 1;
                        pending.entry(p).or_default().push(body_text(&r));
                    }
                }
                Reply::Result { code: 404, .. } => {
                    assert_eq!(
                        reply.expect_result(404, o),
                        format!("no message at offset {pos}"),
                        "{id}: partition {p}"
                    );
                }
                _ => panic!("{id}: get {p} at {pos} (waitMs 20): {reply:?}"),
            }
        }
        let mut refused = false;
        for (p, bodies) in pending {
            let o = next();
            let reply = conn.commit(
                EO_GROUP,
                EO_TOPIC,
                p as i64,
                positions[&p],
                &id,
                generation,
                o,
            );
            match reply.code() {
                Some(200) => {
                    let mut consumed = shared.consumed.lock().unwrap();
                    for b in bodies {
                        *consumed.entry(b).or_insert(0) += 1;
                    }
                }
                Some(409) => {
                    refused = true;
                    shared.refused_commits.fetch_add(1, Ordering::SeqCst);
                }
                _ => panic!(
                    "{id}: commit {p} {} gen {generation}: {reply:?}",
                    positions[&p]
                ),
            }
        }
        let hb = conn.heartbeat_ok(EO_GROUP, EO_TOPIC, &id, next());
        if hb.generation != generation {
            assert!(hb.generation > generation, "{id}: generation went back");
            shared.switches.fetch_add(1, Ordering::SeqCst);
            generation = hb.generation;
            positions = hb.partitions;
        } else {
            assert!(
                !refused,
                "{id}: a commit was refused (409) but the heartbeat shows the same generation \
                 {generation}"
            );
        }
    }
    conn.leave_ok(EO_GROUP, EO_TOPIC, &id, next());
}

#[test]
fn concurrent_cluster_consumers_commit_each_message_exactly_once() {
    let broker = Broker::start(&["--default-partitions", "12"]);
    let addr = broker.addr();
    let mut seed = broker.connect();
    seed.put(EO_TOPIC, 0, b"msg-seed", 1);
    let shared = Arc::new(Shared::default());

    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let producing = Arc::clone(&producing);
        thread::spawn(move || {
            let mut conn = Conn::connect(addr);
            let mut produced = vec!["msg-seed".to_string()];
            let mut i = 0;
            while producing.load(Ordering::SeqCst) && i < 20_000 {
                let body = format!("msg-{i:06}");
                conn.put(EO_TOPIC, -1, body.as_bytes(), i);
                produced.push(body);
                i += 1;
                if i % 8 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            produced
        })
    };

    type Members = HashMap<String, (Arc<AtomicBool>, thread::JoinHandle<()>)>;
    let mut members: Members = HashMap::new();
    let spawn = |id: &str, members: &mut Members| {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, sh, id_owned) = (Arc::clone(&stop), Arc::clone(&shared), id.to_string());
        let handle = thread::spawn(move || member_loop(addr, id_owned, s, sh));
        members.insert(id.to_string(), (stop, handle));
    };
    let stop_member = |id: &str, members: &mut Members| {
        let (stop, handle) = members.remove(id).unwrap();
        stop.store(true, Ordering::SeqCst);
        if let Err(e) = handle.join() {
            std::panic::resume_unwind(e);
        }
    };

    let step = Duration::from_millis(250);
    spawn("m1", &mut members);
    thread::sleep(step);
    spawn("m2", &mut members);
    thread::sleep(step);
    spawn("m3", &mut members);
    thread::sleep(step);
    stop_member("m2", &mut members);
    thread::sleep(step);
    spawn("m4", &mut members);
    thread::sleep(step);
    stop_member("m1", &mut members);
    thread::sleep(step);
    spawn("m2", &mut members);
    spawn("m5", &mut members);
    thread::sleep(step);
    stop_member("m3", &mut members);
    thread::sleep(step);
    spawn("m1", &mut members);
    thread::sleep(step);
    stop_member("m5", &mut members);
    thread::sleep(step);

    producing.store(false, Ordering::SeqCst);
    let produced = producer.join().expect("producer thread");
    // Drain with the members left (m1 m2 m4).
    let drained = wait_for(Duration::from_secs(30), || {
        let total: u32 = shared.consumed.lock().unwrap().values().sum();
        (total as usize >= produced.len()).then_some(())
    });
    thread::sleep(Duration::from_millis(200));
    let ids: Vec<String> = members.keys().cloned().collect();
    for id in ids {
        stop_member(&id, &mut members);
    }
    assert!(
        drained.is_some(),
        "members did not consume every message within 30 s"
    );

    let consumed = shared.consumed.lock().unwrap();
    let mut missing = Vec::new();
    let mut duplicated = Vec::new();
    for body in &produced {
        match consumed.get(body) {
            None => missing.push(body.clone()),
            Some(1) => {}
            Some(n) => duplicated.push((body.clone(), *n)),
        }
    }
    assert!(
        missing.is_empty() && duplicated.is_empty() && consumed.len() == produced.len(),
        "{} produced, {} distinct consumed; missing ({}) {:?}; duplicated ({}) {:?}",
        produced.len(),
        consumed.len(),
        missing.len(),
        &missing[..missing.len().min(20)],
        duplicated.len(),
        &duplicated[..duplicated.len().min(20)]
    );
    let mut admin = broker.connect();
    let max = max_offsets(&mut admin, EO_TOPIC, EO_PARTS);
    for p in 0..EO_PARTS {
        assert_eq!(
            admin.fetch_offset(EO_GROUP, EO_TOPIC, p as i64, "-", 7),
            Some(max[p as usize]),
            "group-level committed offset of partition {p} after the drain"
        );
    }
    println!(
        "exactly-once (concurrent): {} messages, {} refused commits (discarded), {} switches",
        produced.len(),
        shared.refused_commits.load(Ordering::SeqCst),
        shared.switches.load(Ordering::SeqCst)
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Generation fencing
// ---------------------------------------------------------------------------------------------

#[test]
fn a_stale_members_commit_is_refused_and_the_new_owner_wins() {
    let broker = Broker::start(&["--default-partitions", "12"]);
    let mut admin = broker.connect();
    put_n(&mut admin, "orders", 11, "p11", 5);
    put_n(&mut admin, "orders", 0, "p0", 2);

    let mut c1 = broker.connect();
    let mut c2 = broker.connect();
    let a1 = c1.join_ok("g", "orders", "m1", "cluster", "earliest", 1);
    let g = a1.generation;
    assert_eq!(a1.partition_list(), (0..12).collect::<Vec<_>>());
    c1.commit_ok("g", "orders", 11, 2, "m1", g, 2);

    let a2 = c2.join_ok("g", "orders", "m2", "cluster", "earliest", 3);
    assert!(a2.generation > g, "m2's join must raise the generation");
    assert_eq!(a2.partition_list(), (6..12).collect::<Vec<_>>());
    assert_eq!(
        a2.partitions[&11], 2,
        "m2 starts partition 11 at m1's commit"
    );

    // m1 still believes it owns 11 in generation g.
    let stale = c1.commit("g", "orders", 11, 3, "m1", g, 4);
    let text = stale.expect_result(409, 4);
    assert!(
        text.starts_with("not the owner of orders/11 in generation "),
        "409 body: {text:?}"
    );
    // With the current generation it is still not the owner.
    let hb = c1.heartbeat_ok("g", "orders", "m1", 5);
    assert_eq!(hb.generation, a2.generation);
    assert_eq!(hb.partition_list(), (0..6).collect::<Vec<_>>());
    c1.commit("g", "orders", 11, 3, "m1", hb.generation, 6)
        .expect_result(409, 6);
    // A partition it keeps, but with the old generation: refused too.
    c1.commit("g", "orders", 0, 1, "m1", g, 7)
        .expect_result(409, 7);
    c1.commit_ok("g", "orders", 0, 1, "m1", hb.generation, 8);

    c2.commit_ok("g", "orders", 11, 4, "m2", a2.generation, 9);
    assert_eq!(c1.fetch_offset("g", "orders", 11, "-", 10), Some(4));
    assert_eq!(c1.fetch_offset("g", "orders", 0, "-", 11), Some(1));
}

#[test]
fn group_level_commit_without_a_member_needs_no_ownership() {
    let broker = Broker::start(&[]);
    let mut admin = broker.connect();
    put_n(&mut admin, "topic", 1, "x", 4);
    let mut c1 = broker.connect();
    c1.join_ok("g", "topic", "m1", "cluster", "earliest", 1);
    admin.commit_ok("g", "topic", 1, 3, "-", -1, 2);
    assert_eq!(admin.fetch_offset("g", "topic", 1, "-", 3), Some(3));
    // A group nobody joined: plain self-managed offsets.
    admin.commit_ok("solo", "topic", 1, 4, "-", -1, 4);
    assert_eq!(admin.fetch_offset("solo", "topic", 1, "-", 5), Some(4));
    assert_eq!(admin.fetch_offset("solo", "topic", 0, "-", 6), None);
}

// ---------------------------------------------------------------------------------------------
// 3. Expiry
// ---------------------------------------------------------------------------------------------

#[test]
fn a_member_that_stops_heartbeating_expires_and_the_survivor_takes_its_partitions() {
    let broker = Broker::start(&["--default-partitions", "12", "--session-timeout-ms", "500"]);
    let mut admin = broker.connect();
    admin.put("orders", 0, b"seed", 1);
    let mut c1 = broker.connect();
    let mut c2 = broker.connect();
    let a1 = c1.join_ok("g", "orders", "m1", "cluster", "earliest", 1);
    assert_eq!(
        a1.session_timeout_ms, 500,
        "the reply carries session_timeout_ms"
    );
    let a2 = c2.join_ok("g", "orders", "m2", "cluster", "earliest", 2);
    assert_eq!(a2.partition_list(), (6..12).collect::<Vec<_>>());
    let hb1 = c1.heartbeat_ok("g", "orders", "m1", 3);
    assert_eq!(hb1.generation, a2.generation);
    let m1_last = Instant::now(); // m1 sends nothing from here on

    let mut expired_after = None;
    let mut op = 10;
    while m1_last.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(100));
        op += 1;
        let hb = c2.heartbeat_ok("g", "orders", "m2", op);
        let elapsed = m1_last.elapsed();
        if hb.generation == a2.generation {
            assert_eq!(hb.partition_list(), (6..12).collect::<Vec<_>>());
            continue;
        }
        assert!(hb.generation > a2.generation, "{hb:?}");
        assert_eq!(
            hb.partition_list(),
            (0..12).collect::<Vec<_>>(),
            "after m1 expired, m2 holds every partition: {hb:?}"
        );
        expired_after = Some(elapsed);
        break;
    }
    let expired_after = expired_after.expect("m1 did not expire within 5 s (session 500 ms)");
    println!("expiry observed {expired_after:?} after m1's last heartbeat (session 500 ms)");
    assert!(
        expired_after >= Duration::from_millis(400),
        "m1 expired after {expired_after:?}, before its 500 ms session"
    );

    assert_eq!(
        c1.heartbeat("g", "orders", "m1", 50).expect_result(409, 50),
        "unknown member m1"
    );
    assert_eq!(
        c1.commit("g", "orders", 0, 0, "m1", hb1.generation, 51)
            .expect_result(409, 51),
        "unknown member m1"
    );
    // It joins again like a new member.
    let back = c1.join_ok("g", "orders", "m1", "cluster", "earliest", 52);
    assert_eq!(back.partition_list(), (0..6).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// 4. Broadcast
// ---------------------------------------------------------------------------------------------

#[test]
fn broadcast_members_each_get_every_partition_and_keep_their_own_offsets() {
    let broker = Broker::start(&[]); // 4 partitions per topic
    let mut admin = broker.connect();
    let mut all = BTreeSet::new();
    for p in 0..4 {
        for i in 0..3 {
            let body = format!("p{p}-{i}");
            admin.put("news", p, body.as_bytes(), 1);
            all.insert(body);
        }
    }
    let mut b1 = broker.connect();
    let mut b2 = broker.connect();
    let j1 = b1.join_ok("fan", "news", "b1", "broadcast", "earliest", 1);
    assert_eq!(j1.partition_list(), vec![0, 1, 2, 3]);
    let j2 = b2.join_ok("fan", "news", "b2", "broadcast", "earliest", 2);
    assert_eq!(j2.partition_list(), vec![0, 1, 2, 3]);
    assert!(j2.generation > j1.generation);
    let h1 = b1.heartbeat_ok("fan", "news", "b1", 3);
    assert_eq!(h1.generation, j2.generation);
    assert_eq!(h1.partition_list(), vec![0, 1, 2, 3]);

    for (conn, a, name) in [(&mut b1, &h1, "b1"), (&mut b2, &j2, "b2")] {
        let mut seen = BTreeSet::new();
        for (p, o) in &a.partitions {
            assert_eq!(*o, 0, "{name}: partition {p} starts at earliest");
            for r in read_from(conn, "news", "fan", *p, *o) {
                assert!(seen.insert(body_text(&r)), "{name} read {r:?} twice");
            }
        }
        assert_eq!(seen, all, "{name} reads every message");
    }

    let g = j2.generation;
    for p in 0..4 {
        b1.commit_ok("fan", "news", p, 3, "b1", g, 10 + p as i32);
        b2.commit_ok("fan", "news", p, 1, "b2", g, 20 + p as i32);
    }
    for p in 0..4 {
        assert_eq!(b1.fetch_offset("fan", "news", p, "b1", 30), Some(3));
        assert_eq!(b2.fetch_offset("fan", "news", p, "b2", 31), Some(1));
    }
    // b1's old generation is refused.
    b1.commit("fan", "news", 0, 2, "b1", j1.generation, 32)
        .expect_result(409, 32);
    assert_eq!(b1.fetch_offset("fan", "news", 0, "b1", 33), Some(3));

    // The other mode is refused while broadcast members live.
    let mut c = broker.connect();
    let clash = c.join("fan", "news", "c1", "cluster", "earliest", 40);
    assert_eq!(
        clash.expect_result(409, 40),
        "group fan on topic news is broadcast"
    );
    // ... and the other way round.
    c.join_ok("work", "news", "c1", "cluster", "earliest", 41);
    let clash = b1.join("work", "news", "b9", "broadcast", "earliest", 42);
    assert_eq!(
        clash.expect_result(409, 42),
        "group work on topic news is cluster"
    );
    // Once the broadcast members are gone the group may change mode.
    b1.leave_ok("fan", "news", "b1", 43);
    b2.leave_ok("fan", "news", "b2", 44);
    let a = c.join_ok("fan", "news", "c2", "cluster", "earliest", 45);
    assert_eq!(a.partition_list(), vec![0, 1, 2, 3]);
}

// ---------------------------------------------------------------------------------------------
// 5. Long polling
// ---------------------------------------------------------------------------------------------

#[test]
fn long_poll_get_parks_until_a_put_to_its_partition_and_wakes_promptly() {
    let broker = Broker::start(&[]);
    let mut producer = broker.connect();
    let mut consumer = broker.connect();
    producer.put("lp", 0, b"seed", 1);

    consumer.send(&get_wait_cmd("lp", "grp", 0, 1, MAX, 5000, None, 7));
    consumer.expect_silence(Duration::from_millis(200));
    let (_, _, off) = producer.put("lp", 0, b"wake", 2);
    assert_eq!(off, 1);
    let records = consumer.read_reply().expect_value(7);
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].offset, records[0].body.as_slice()),
        (1, &b"wake"[..])
    );

    // Latency: park (proved by the reply to a later `version` arriving first), put, deliver.
    let mut samples = Vec::new();
    for i in 0..200i32 {
        let offset = 2 + i as u64;
        let op = 1000 + i;
        let mut req = get_wait_cmd("lp", "grp", 0, offset, MAX, 5000, None, op);
        req.extend_from_slice(format!("version {}\r\n", 100_000 + i).as_bytes());
        consumer.send(&req);
        consumer.read_reply().expect_result(200, 100_000 + i);
        let body = format!("lat-{i}");
        let t0 = Instant::now();
        producer.send(&put_cmd("lp", 0, 0, body.as_bytes(), op));
        let reply = consumer.read_reply();
        let latency = t0.elapsed();
        let records = reply.expect_value(op);
        assert_eq!(records.len(), 1, "round {i}: {records:?}");
        assert_eq!((records[0].offset, body_text(&records[0])), (offset, body));
        let ack = producer.read_reply().expect_result(200, op);
        assert_eq!(parse_put_ack(&ack).2, offset);
        samples.push(latency);
    }
    let p50 = quantile(&mut samples, 0.50);
    let p99 = quantile(&mut samples, 0.99);
    let max = quantile(&mut samples, 1.0);
    println!(
        "long-poll put-to-delivery latency over {} rounds: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        p50,
        p99,
        max
    );
    assert!(p99 < Duration::from_millis(200), "p99 {p99:?}");
}

#[test]
fn long_poll_get_is_not_woken_by_a_put_to_another_partition() {
    let broker = Broker::start(&[]);
    let mut producer = broker.connect();
    let mut consumer = broker.connect();
    producer.put("lp", 0, b"seed", 1);
    consumer.send(&get_wait_cmd("lp", "grp", 0, 1, MAX, 5000, None, 3));
    consumer.expect_silence(Duration::from_millis(100));
    assert_eq!(producer.counter("parked_gets"), 1);
    let before = producer.counter("parked_wakeups");
    producer.put("lp", 1, b"other", 2);
    producer.put("lp", 2, b"other", 2);
    consumer.expect_silence(Duration::from_millis(300));
    assert_eq!(
        producer.counter("parked_wakeups") - before,
        0,
        "puts to partitions 1 and 2 woke the get parked on partition 0"
    );
    producer.put("lp", 0, b"mine", 4);
    let records = consumer.read_reply().expect_value(3);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!((records[0].partition, records[0].offset), (0, 1));
    assert_eq!(records[0].body, b"mine");
    assert_eq!(producer.counter("parked_wakeups") - before, 1);
}

#[test]
fn tag_filtered_long_poll_is_woken_only_by_a_put_its_filter_matches() {
    let broker = Broker::start(&[]);
    let mut producer = broker.connect();
    let mut consumer = broker.connect();
    put_tagged(&mut producer, "tagwake", 0, "a", "m0");
    consumer.send(&get_wait_cmd(
        "tagwake",
        "grp",
        0,
        1,
        MAX,
        5000,
        Some("a||c"),
        3,
    ));
    consumer.expect_silence(Duration::from_millis(100));
    assert_eq!(producer.counter("parked_gets"), 1);
    let before = producer.counter("parked_wakeups");
    // Same partition, tags the filter cannot match, and an untagged record.
    put_tagged(&mut producer, "tagwake", 0, "b", "m1");
    put_tagged(&mut producer, "tagwake", 0, "cc", "m2");
    producer.put("tagwake", 0, b"plain", 4);
    consumer.expect_silence(Duration::from_millis(300));
    assert_eq!(
        producer.counter("parked_wakeups") - before,
        0,
        "puts tagged b, cc and untagged woke a get filtered on a||c"
    );
    put_tagged(&mut producer, "tagwake", 0, "c", "m4");
    let records = consumer.read_reply().expect_value(3);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].offset, records[0].tag.as_slice()),
        (4, &b"c"[..])
    );
    assert_eq!(producer.counter("parked_wakeups") - before, 1);
    // An unfiltered get on the same partition is woken by any put, tagged or not.
    consumer.send(&get_wait_cmd("tagwake", "grp", 0, 5, MAX, 5000, None, 5));
    consumer.expect_silence(Duration::from_millis(100));
    producer.put("tagwake", 0, b"plain again", 6);
    assert_eq!(
        consumer.read_reply().expect_value(5)[0].body,
        b"plain again"
    );
    assert_eq!(producer.counter("parked_wakeups") - before, 2);
}

#[test]
fn sync_flush_long_poll_pipelined_right_after_a_put_is_woken_by_its_group_commit() {
    let broker = Broker::start(&["--flush", "sync"]);
    let mut conn = broker.connect();
    let t0 = Instant::now();
    // One write: the get runs after the put is stored but before its group commit.
    let mut req = put_cmd("fresh1", 0, 0, b"world", 2);
    req.extend(get_wait_cmd("fresh1", "g", 0, 0, MAX, 5000, None, 3));
    conn.send(&req);
    let replies = conn.read_replies_by_opaque(2);
    let waited = t0.elapsed();
    assert_eq!(parse_put_ack(&replies[&2].expect_result(200, 2)).2, 0);
    let records = replies[&3].expect_value(3);
    assert_eq!(
        (records[0].offset, records[0].body.as_slice()),
        (0, &b"world"[..])
    );
    assert!(
        waited < Duration::from_secs(2),
        "the parked get waited {waited:?} (waitMs 5000) for a record made durable at once"
    );
    // Same with a tag filter, on a partition that already has durable records.
    let mut req = put_cmd("fresh1", 0, 1, &attr_body(b"t", b"tagged"), 4);
    req.extend(get_wait_cmd("fresh1", "g", 0, 1, MAX, 5000, Some("t"), 5));
    let t0 = Instant::now();
    conn.send(&req);
    let replies = conn.read_replies_by_opaque(2);
    replies[&4].expect_result(200, 4);
    assert_eq!(replies[&5].expect_value(5)[0].body, b"tagged");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[test]
fn long_poll_get_times_out_with_404_after_wait_ms() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("lp", 0, b"seed", 1);
    // waitMs 0 (7-token form) answers at once.
    let t0 = Instant::now();
    conn.send(&get_wait_cmd("lp", "grp", 0, 1, MAX, 0, None, 2));
    assert_eq!(
        conn.read_reply().expect_result(404, 2),
        "no message at offset 1"
    );
    assert!(t0.elapsed() < Duration::from_millis(2000));

    let t0 = Instant::now();
    conn.send(&get_wait_cmd("lp", "grp", 0, 1, MAX, 300, None, 3));
    let reply = conn.read_reply();
    let waited = t0.elapsed();
    assert_eq!(reply.expect_result(404, 3), "no message at offset 1");
    println!("waitMs 300 answered after {waited:?}");
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_millis(2000),
        "waitMs 300 answered after {waited:?}"
    );
    // Not caught up: answered at once despite waitMs.
    let t0 = Instant::now();
    conn.send(&get_wait_cmd("lp", "grp", 0, 0, MAX, 5000, None, 4));
    assert_eq!(conn.read_reply().expect_value(4).len(), 1);
    assert!(t0.elapsed() < Duration::from_millis(2000));
}

#[test]
fn wait_ms_above_wait_ms_max_is_clamped() {
    let broker = Broker::start(&["--wait-ms-max", "300"]);
    let mut conn = broker.connect();
    conn.put("lp", 0, b"seed", 1);
    let t0 = Instant::now();
    conn.send(&get_wait_cmd(
        "lp",
        "grp",
        0,
        1,
        MAX,
        2_147_483_647,
        None,
        2,
    ));
    let reply = conn.read_reply();
    let waited = t0.elapsed();
    assert_eq!(reply.expect_result(404, 2), "no message at offset 1");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(3000),
        "waitMs 2147483647 with wait_ms_max 300 answered after {waited:?}"
    );
}

#[test]
fn a_parked_get_does_not_block_later_requests_on_its_connection() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("lp", 0, b"seed", 1);
    conn.send(&get_wait_cmd("lp", "grp", 0, 1, MAX, 5000, None, 5));
    conn.send(b"version 9\r\n");
    let first = conn.read_reply();
    assert_eq!(
        first.opaque(),
        9,
        "the version reply must not wait behind the parked get: {first:?}"
    );
    first.expect_result(200, 9);
    // Another get on another partition, and a put on the same connection that wakes the
    // parked get: both replies arrive, matched by opaque.
    conn.put("lp", 1, b"p1", 10);
    conn.send(&get_wait_cmd("lp", "grp", 1, 0, MAX, 5000, None, 11));
    assert_eq!(conn.read_reply().expect_value(11).len(), 1);
    conn.send(&put_cmd("lp", 0, 0, b"wake", 12));
    let replies = conn.read_replies_by_opaque(2);
    let records = replies[&5].expect_value(5);
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].offset, records[0].body.as_slice()),
        (1, &b"wake"[..])
    );
    let ack = replies[&12].expect_result(200, 12);
    assert_eq!(parse_put_ack(&ack).2, 1);
    conn.expect_silence(Duration::from_millis(100));
}

#[test]
fn disconnecting_while_parked_is_clean_and_the_broker_keeps_serving() {
    let mut broker = Broker::start(&[]);
    let mut producer = broker.connect();
    for p in 0..4 {
        producer.put("lp", p, b"seed", 1);
    }
    for round in 0..3 {
        let mut gone = broker.connect();
        let mut req = Vec::new();
        for i in 0..40 {
            req.extend(get_wait_cmd(
                "lp",
                "grp",
                i % 4,
                1 + round,
                MAX,
                5000,
                None,
                i,
            ));
        }
        gone.send(&req);
        gone.send(b"version 77\r\n");
        gone.read_reply().expect_result(200, 77);
        drop(gone);
        thread::sleep(Duration::from_millis(50));
        for p in 0..4 {
            producer.put("lp", p, format!("after-{round}").as_bytes(), 2);
        }
    }
    let mut conn = broker.connect();
    assert_eq!(conn.version(3), broker.version());
    let records = read_from(&mut conn, "lp", "grp", 0, 0);
    assert_eq!(records.len(), 4);
    // A long poll on a fresh connection still works.
    conn.send(&get_wait_cmd("lp", "grp", 0, 4, MAX, 5000, None, 4));
    producer.put("lp", 0, b"last", 5);
    assert_eq!(conn.read_reply().expect_value(4).len(), 1);
    drop(conn);
    drop(producer);
    broker.terminate();
}

#[test]
fn a_rebalance_answers_the_groups_parked_gets_at_once() {
    let broker = Broker::start(&[]);
    let mut admin = broker.connect();
    admin.put("lp", 0, b"seed", 1);
    let mut m1 = broker.connect();
    m1.join_ok("g", "lp", "m1", "cluster", "earliest", 1);
    let mut parked = broker.connect();
    parked.send(&get_wait_cmd("lp", "g", 0, 1, MAX, 10_000, None, 2));
    let mut other = broker.connect();
    other.send(&get_wait_cmd("lp", "h", 0, 1, MAX, 10_000, None, 3));
    parked.expect_silence(Duration::from_millis(150));

    let mut m2 = broker.connect();
    let t0 = Instant::now();
    m2.join_ok("g", "lp", "m2", "cluster", "earliest", 4);
    let reply = parked.read_reply();
    let after = t0.elapsed();
    println!("parked get of the group answered {after:?} after the join: {reply:?}");
    assert_eq!(reply.opaque(), 2);
    assert!(
        matches!(reply.code(), Some(404) | Some(301)),
        "a rebalance answers with 404 or 301: {reply:?}"
    );
    assert!(
        after < Duration::from_secs(2),
        "answered only after {after:?}"
    );
    // Another group's parked get is untouched.
    other.expect_silence(Duration::from_millis(200));
    admin.put("lp", 0, b"wake", 5);
    assert_eq!(other.read_reply().expect_value(3).len(), 1);
}

#[test]
fn shutdown_answers_parked_gets_at_once() {
    let mut broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("lp", 0, b"seed", 1);
    conn.send(&get_wait_cmd("lp", "grp", 0, 1, MAX, 30_000, None, 2));
    conn.expect_silence(Duration::from_millis(100));
    let t0 = Instant::now();
    broker.signal("TERM");
    let reply = conn.try_read_reply();
    let status = broker.wait_exit(Duration::from_secs(10));
    println!(
        "shutdown: parked get answered with {reply:?}, exit {status} after {:?}",
        t0.elapsed()
    );
    assert!(status.success(), "exit status {status}");
    match reply {
        Ok(Some(r)) => assert_eq!(r.opaque(), 2, "{r:?}"),
        other => panic!("the parked get got no reply before the connection closed: {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn parked_gets_beyond_the_per_connection_limit_are_answered_at_once() {
    let broker = Broker::start(&["--parked-per-connection-max", "4"]);
    let mut conn = broker.connect();
    let mut producer = broker.connect();
    conn.put("lp", 0, b"seed", 1);
    let mut req = Vec::new();
    for op in 10..15 {
        req.extend(get_wait_cmd("lp", "grp", 0, 1, MAX, 5000, None, op));
    }
    let t0 = Instant::now();
    conn.send(&req);
    let fifth = conn.read_reply();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(fifth.expect_result(404, 14), "no message at offset 1");
    conn.expect_silence(Duration::from_millis(200));
    producer.put("lp", 0, b"wake", 2);
    let replies = conn.read_replies_by_opaque(4);
    for op in 10..14 {
        assert_eq!(replies[&op].expect_value(op).len(), 1);
    }
    // Woken gets free their slots: four more park (at offset 2), time out, and free theirs.
    let mut req = Vec::new();
    for op in 20..24 {
        req.extend(get_wait_cmd("lp", "grp", 0, 2, MAX, 300, None, op));
    }
    let t0 = Instant::now();
    conn.send(&req);
    conn.expect_silence(Duration::from_millis(150));
    let replies = conn.read_replies_by_opaque(4);
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "answered before waitMs"
    );
    for op in 20..24 {
        assert_eq!(
            replies[&op].expect_result(404, op),
            "no message at offset 2"
        );
    }
    let mut req = Vec::new();
    for op in 30..34 {
        req.extend(get_wait_cmd("lp", "grp", 0, 2, MAX, 5000, None, op));
    }
    conn.send(&req);
    conn.expect_silence(Duration::from_millis(200));
    producer.put("lp", 0, b"again", 3);
    let replies = conn.read_replies_by_opaque(4);
    for op in 30..34 {
        assert_eq!(replies[&op].expect_value(op)[0].body, b"again");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Tag filters
// ---------------------------------------------------------------------------------------------

const TAGS: [&str; 10] = ["a", "b", "c", "b", "b", "a", "c", "b", "b", "b"];

/// Follows next offsets with a filtered get from 0 until 404; returns (offset, tag) of every
/// record delivered and the 301 next offsets seen.
fn follow_filter(
    conn: &mut Conn,
    topic: &str,
    filter: &str,
    max_size: i32,
    max: u64,
) -> (Vec<(u64, String)>, Vec<u64>) {
    let mut got = Vec::new();
    let mut moved = Vec::new();
    let mut offset = 0u64;
    for op in 0..1000 {
        conn.send(&get_wait_cmd(
            topic,
            "grp",
            0,
            offset,
            max_size,
            0,
            Some(filter),
            op,
        ));
        let reply = conn.read_reply();
        match reply.code() {
            None => {
                let records = reply.expect_value(op);
                assert!(!records.is_empty());
                for r in &records {
                    assert!(r.offset >= offset, "{filter}: record {r:?} before {offset}");
                    offset = r.offset + 1;
                    got.push((r.offset, String::from_utf8(r.tag.clone()).unwrap()));
                }
            }
            Some(301) => {
                let next: u64 = canonical(&reply.expect_result(301, op), "301 next offset");
                assert!(
                    next > offset && next <= max,
                    "{filter}: 301 from {offset} to {next} (max {max})"
                );
                moved.push(next);
                offset = next;
            }
            Some(404) => {
                assert_eq!(offset, max, "{filter}: 404 before the end");
                assert_eq!(
                    reply.expect_result(404, op),
                    format!("no message at offset {offset}")
                );
                return (got, moved);
            }
            _ => panic!("{filter} at {offset}: {reply:?}"),
        }
    }
    panic!("{filter}: too many rounds");
}

#[test]
fn tag_filter_get_delivers_exactly_the_matching_records_in_order() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    for (i, tag) in TAGS.iter().enumerate() {
        assert_eq!(
            put_tagged(&mut conn, "tagged", 0, tag, &format!("m{i}")),
            i as u64
        );
    }
    let max = TAGS.len() as u64;
    let expect = |wanted: &[&str]| -> Vec<(u64, String)> {
        TAGS.iter()
            .enumerate()
            .filter(|(_, t)| wanted.contains(t))
            .map(|(i, t)| (i as u64, t.to_string()))
            .collect()
    };
    for max_size in [1, MAX] {
        let (got, moved) = follow_filter(&mut conn, "tagged", "a||c", max_size, max);
        assert_eq!(got, expect(&["a", "c"]), "a||c, maxSize {max_size}");
        assert_eq!(
            moved.last(),
            Some(&max),
            "a||c, maxSize {max_size}: the trailing b records end in a 301 to {max}"
        );
        let (got, _) = follow_filter(&mut conn, "tagged", "c", max_size, max);
        assert_eq!(got, expect(&["c"]), "c, maxSize {max_size}");
        let (got, moved) = follow_filter(&mut conn, "tagged", "*", max_size, max);
        assert_eq!(got, expect(&["a", "b", "c"]), "*, maxSize {max_size}");
        assert!(moved.is_empty(), "* never skips: {moved:?}");
        let (got, moved) = follow_filter(&mut conn, "tagged", "zz||yy", max_size, max);
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(moved.last(), Some(&max));
    }

    // From the first trailing b (offset 7): 301 past all of them.
    conn.send(&get_wait_cmd(
        "tagged",
        "grp",
        0,
        7,
        MAX,
        0,
        Some("a||c"),
        50,
    ));
    assert_eq!(conn.read_reply().expect_result(301, 50), "10");
    // Untagged records match no filter but match `*`.
    conn.put("tagged", 0, b"plain", 51);
    conn.send(&get_wait_cmd("tagged", "grp", 0, 10, MAX, 0, Some("a"), 52));
    assert_eq!(conn.read_reply().expect_result(301, 52), "11");
    conn.send(&get_wait_cmd("tagged", "grp", 0, 10, MAX, 0, Some("*"), 53));
    assert_eq!(conn.read_reply().expect_value(53)[0].body, b"plain");
    // 32 tags are allowed.
    let tags32: Vec<String> = (0..32).map(|i| format!("t{i}")).collect();
    conn.send(&get_wait_cmd(
        "tagged",
        "grp",
        0,
        0,
        MAX,
        0,
        Some(&tags32.join("||")),
        54,
    ));
    let next: u64 = canonical(&conn.read_reply().expect_result(301, 54), "next");
    assert!(
        (1..=11).contains(&next),
        "32 tags, none matching: 301 {next}"
    );
}

#[test]
fn tag_filter_long_poll_waits_for_a_matching_record() {
    let broker = Broker::start(&[]);
    let mut producer = broker.connect();
    let mut conn = broker.connect();
    put_tagged(&mut producer, "tagged", 0, "a", "m0");

    // Parked with filter a: a b record does not answer it, the next a does.
    conn.send(&get_wait_cmd(
        "tagged",
        "grp",
        0,
        1,
        MAX,
        5000,
        Some("a"),
        1,
    ));
    conn.expect_silence(Duration::from_millis(100));
    put_tagged(&mut producer, "tagged", 0, "b", "m1");
    conn.expect_silence(Duration::from_millis(300));
    put_tagged(&mut producer, "tagged", 0, "a", "m2");
    let records = conn.read_reply().expect_value(1);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].offset, records[0].tag.as_slice()),
        (2, &b"a"[..])
    );

    // Only non-matching records arrive before the timeout: 301 past them at the timeout.
    let t0 = Instant::now();
    conn.send(&get_wait_cmd("tagged", "grp", 0, 3, MAX, 400, Some("a"), 2));
    thread::sleep(Duration::from_millis(50));
    put_tagged(&mut producer, "tagged", 0, "b", "m3");
    let reply = conn.read_reply();
    let waited = t0.elapsed();
    assert_eq!(reply.expect_result(301, 2), "4", "skipped b at 3");
    assert!(
        waited >= Duration::from_millis(350),
        "301 must come at the timeout, came after {waited:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Durability of committed offsets
// ---------------------------------------------------------------------------------------------

#[test]
fn committed_offsets_survive_a_clean_restart_but_members_do_not() {
    let mut broker = Broker::start(&[]);
    let mut conn = broker.connect();
    put_n(&mut conn, "dur", 2, "x", 6);
    let a = conn.join_ok("g", "dur", "m1", "cluster", "earliest", 1);
    conn.commit_ok("g", "dur", 2, 5, "m1", a.generation, 2);
    conn.commit_ok("self", "dur", 2, 3, "-", -1, 3);
    drop(conn);
    broker.terminate();
    assert!(
        broker.data_dir().join("offsets").exists(),
        "<data-dir>/offsets"
    );
    broker.restart(&[]);

    let mut conn = broker.connect();
    assert_eq!(conn.fetch_offset("g", "dur", 2, "-", 4), Some(5));
    assert_eq!(conn.fetch_offset("self", "dur", 2, "-", 5), Some(3));
    assert_eq!(
        conn.heartbeat("g", "dur", "m1", 6).expect_result(409, 6),
        "unknown member m1",
        "members are not persisted across restarts"
    );
    let again = conn.join_ok("g", "dur", "m1", "cluster", "earliest", 7);
    assert_eq!(
        again.partitions[&2], 5,
        "a new member starts at the committed offset"
    );
}

#[test]
fn committed_offsets_older_than_the_flush_interval_survive_kill_9() {
    let mut broker = Broker::start(&[]);
    let mut conn = broker.connect();
    put_n(&mut conn, "dur", 0, "x", 6);
    put_n(&mut conn, "dur", 3, "y", 2);
    conn.commit_ok("g", "dur", 0, 4, "-", -1, 1);
    conn.commit_ok("g", "dur", 3, 2, "-", -1, 2);
    thread::sleep(Duration::from_millis(1500)); // > offsets_flush_interval_ms (1000)
    broker.kill9();
    broker.restart(&[]);
    let mut conn = broker.connect();
    assert_eq!(conn.fetch_offset("g", "dur", 0, "-", 3), Some(4));
    assert_eq!(conn.fetch_offset("g", "dur", 3, "-", 4), Some(2));
    assert_eq!(conn.fetch_offset("g", "dur", 1, "-", 5), None);
}

// ---------------------------------------------------------------------------------------------
// 8. Rewind
// ---------------------------------------------------------------------------------------------

#[test]
fn reset_rewinds_to_earliest_latest_an_offset_or_a_time() {
    let broker = Broker::start(&[]); // 4 partitions
    let mut conn = broker.connect();
    put_n(&mut conn, "rw", 0, "first", 5); // p0: 0..5
    put_n(&mut conn, "rw", 1, "old", 3); // p1: 0..3, all before the time
    thread::sleep(Duration::from_millis(50));
    let t = now_ms();
    put_n(&mut conn, "rw", 0, "second", 5); // p0: 5..10
    put_n(&mut conn, "rw", 3, "new", 2); // p3: 0..2, all after; p2 stays empty
    let records = read_from(&mut conn, "rw", "grp", 0, 0);
    assert!(records[4].store_ts_ms < t && records[5].store_ts_ms >= t);

    let map = |pairs: &[(u32, u64)]| pairs.iter().copied().collect::<BTreeMap<u32, u64>>();
    let mut m = broker.connect();
    let a = m.join_ok("g", "rw", "m1", "cluster", "earliest", 1);
    m.commit_ok("g", "rw", 0, 10, "m1", a.generation, 2);
    let mut generation = a.generation;

    let steps: Vec<(i64, String, BTreeMap<u32, u64>)> = vec![
        (
            -1,
            "earliest".into(),
            map(&[(0, 0), (1, 0), (2, 0), (3, 0)]),
        ),
        (-1, "latest".into(), map(&[(0, 10), (1, 3), (2, 0), (3, 2)])),
        (0, "3".into(), map(&[(0, 3)])),
        (-1, "7".into(), map(&[(0, 7), (1, 3), (2, 0), (3, 2)])),
        (-1, format!("@{t}"), map(&[(0, 5), (1, 3), (2, 0), (3, 0)])),
        (0, "@0".into(), map(&[(0, 0)])),
        (
            -1,
            format!("@{}", t + 3_600_000),
            map(&[(0, 10), (1, 3), (2, 0), (3, 2)]),
        ),
        (0, format!("@{t}"), map(&[(0, 5)])),
    ];
    let mut committed: BTreeMap<u32, u64> = map(&[(0, 10), (1, 0), (2, 0), (3, 0)]);
    for (i, (partition, target, want)) in steps.iter().enumerate() {
        let op = 10 + i as i32;
        let got = conn.reset_ok("g", "rw", *partition, target, op);
        assert_eq!(&got, want, "reset g rw {partition} {target}");
        committed.extend(want);
        for p in 0..4u32 {
            assert_eq!(
                conn.fetch_offset("g", "rw", p as i64, "-", op),
                Some(committed[&p]),
                "after reset {partition} {target}: committed offset of {p}"
            );
        }
        // The member sees the new offsets at its next heartbeat, in a new generation.
        let hb = m.heartbeat_ok("g", "rw", "m1", op);
        assert!(
            hb.generation > generation,
            "reset {partition} {target} must raise the generation: {hb:?}"
        );
        generation = hb.generation;
        assert_eq!(
            hb.partitions, committed,
            "heartbeat after reset {partition} {target}"
        );
    }
}

#[test]
fn reset_of_a_broadcast_group_sets_every_members_own_offsets() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    put_n(&mut conn, "rw", 0, "x", 6);
    let mut b1 = broker.connect();
    let mut b2 = broker.connect();
    b1.join_ok("fan", "rw", "b1", "broadcast", "earliest", 1);
    let j2 = b2.join_ok("fan", "rw", "b2", "broadcast", "earliest", 2);
    b1.commit_ok("fan", "rw", 0, 6, "b1", j2.generation, 3);
    b2.commit_ok("fan", "rw", 0, 4, "b2", j2.generation, 4);
    let got = conn.reset_ok("fan", "rw", 0, "2", 5);
    assert_eq!(got, [(0u32, 2u64)].into_iter().collect());
    assert_eq!(b1.fetch_offset("fan", "rw", 0, "b1", 6), Some(2));
    assert_eq!(b2.fetch_offset("fan", "rw", 0, "b2", 7), Some(2));
    let hb = b1.heartbeat_ok("fan", "rw", "b1", 8);
    assert!(hb.generation > j2.generation);
    assert_eq!(hb.partitions[&0], 2);
}

// ---------------------------------------------------------------------------------------------
// 9. stats groups
// ---------------------------------------------------------------------------------------------

#[test]
fn stats_groups_reports_committed_max_lag_and_owner() {
    let broker = Broker::start(&[]); // 4 partitions
    let mut conn = broker.connect();
    put_n(&mut conn, "st", 0, "a", 10);
    put_n(&mut conn, "st", 1, "b", 4);
    put_n(&mut conn, "st", 3, "d", 2);

    let mut m1 = broker.connect();
    let a = m1.join_ok("g", "st", "m1", "cluster", "earliest", 1);
    let before = now_ms();
    m1.commit_ok("g", "st", 0, 7, "m1", a.generation, 2);
    m1.commit_ok("g", "st", 1, 4, "m1", a.generation, 3);
    conn.commit_ok("g2", "st", 0, 5, "-", -1, 4);
    let mut b1 = broker.connect();
    let bj = b1.join_ok("gb", "st", "b1", "broadcast", "earliest", 5);
    b1.commit_ok("gb", "st", 0, 3, "b1", bj.generation, 6);
    let after = now_ms();

    let all = conn.stats(Some("groups"));
    let get = |stats: &[(String, String)], name: &str| -> String {
        stat(stats, name)
            .unwrap_or_else(|| panic!("no STAT {name}; got {stats:?}"))
            .to_string()
    };
    // group g, topic st: m1 owns every partition; the earliest start was committed at join.
    for (p, committed, max, lag) in [(0, 7, 10, 3), (1, 4, 4, 0), (2, 0, 0, 0), (3, 0, 2, 2)] {
        let k = |f: &str| format!("group:g:st:{p}:{f}");
        assert_eq!(
            get(&all, &k("committed")),
            committed.to_string(),
            "{}",
            k("committed")
        );
        assert_eq!(
            get(&all, &k("max_offset")),
            max.to_string(),
            "{}",
            k("max_offset")
        );
        assert_eq!(get(&all, &k("lag")), lag.to_string(), "{}", k("lag"));
        assert_eq!(get(&all, &k("owner")), "m1", "{}", k("owner"));
        let ct: i64 = canonical(&get(&all, &k("commit_time")), "commit_time");
        if p <= 1 {
            assert!(
                (before..=after).contains(&ct),
                "{}: {ct} outside [{before}, {after}]",
                k("commit_time")
            );
        }
    }
    assert_eq!(get(&all, "group:g:st:mode"), "cluster");
    assert_eq!(get(&all, "group:g:st:generation"), a.generation.to_string());
    assert_eq!(get(&all, "group:g:st:members"), "1");
    assert_eq!(get(&all, "group:g:st:lag"), "5");

    // g2: a group-level commit on partition 0 only, no members.
    assert_eq!(get(&all, "group:g2:st:0:committed"), "5");
    assert_eq!(get(&all, "group:g2:st:0:max_offset"), "10");
    assert_eq!(get(&all, "group:g2:st:0:lag"), "5");
    assert_eq!(get(&all, "group:g2:st:0:owner"), "-");
    assert_eq!(get(&all, "group:g2:st:mode"), "none");
    assert_eq!(get(&all, "group:g2:st:members"), "0");
    assert_eq!(get(&all, "group:g2:st:lag"), "5");
    let _: i64 = canonical(&get(&all, "group:g2:st:generation"), "generation");
    for p in 1..4 {
        assert!(
            !all.iter()
                .any(|(n, _)| n.starts_with(&format!("group:g2:st:{p}:"))),
            "partition {p} of g2 has neither a commit nor an owner: {all:?}"
        );
    }

    // gb: broadcast, b1's own offsets under gb@b1.
    assert_eq!(get(&all, "group:gb:st:mode"), "broadcast");
    assert_eq!(get(&all, "group:gb:st:members"), "1");
    assert_eq!(get(&all, "group:gb@b1:st:0:committed"), "3");
    assert_eq!(get(&all, "group:gb@b1:st:0:max_offset"), "10");
    assert_eq!(get(&all, "group:gb@b1:st:0:lag"), "7");

    // stats group:g (result form) holds g's lines, and only those.
    let g_only = conn.stats_result("group:g", 9);
    assert!(!g_only.is_empty());
    for (name, _) in &g_only {
        assert!(name.starts_with("group:g:"), "stats group:g shows {name}");
    }
    for (name, value) in &all {
        if name.starts_with("group:g:") && !name.ends_with(":commit_time") {
            assert_eq!(
                stat(&g_only, name),
                Some(value.as_str()),
                "stats group:g vs stats groups for {name}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Errors and limits
// ---------------------------------------------------------------------------------------------

#[test]
fn commit_beyond_the_max_offset_is_400() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    put_n(&mut conn, "e", 0, "x", 10);
    conn.commit_ok("g", "e", 0, 10, "-", -1, 1); // max itself is fine
    assert_eq!(
        conn.commit("g", "e", 0, 11, "-", -1, 2)
            .expect_result(400, 2),
        "offset 11 beyond max offset 10"
    );
    assert_eq!(conn.fetch_offset("g", "e", 0, "-", 3), Some(10));
    // Partition out of range.
    conn.commit("g", "e", 4, 0, "-", -1, 4)
        .expect_result(400, 4);
}

#[test]
fn group_commands_on_an_unknown_topic_are_404() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    assert_eq!(
        conn.join("g", "nosuch", "m1", "cluster", "earliest", 1)
            .expect_result(404, 1),
        "unknown topic nosuch"
    );
    conn.commit("g", "nosuch", 0, 0, "-", -1, 2)
        .expect_result(404, 2);
    conn.fetch("g", "nosuch", 0, "-", 3).expect_result(404, 3);
    conn.reset("g", "nosuch", -1, "earliest", 4)
        .expect_result(404, 4);
    conn.send(&get_wait_cmd("nosuch", "g", 0, 0, MAX, 1000, None, 5));
    assert_eq!(
        conn.read_reply().expect_result(404, 5),
        "unknown topic nosuch"
    );
    conn.send(&get_wait_cmd("nosuch", "g", 0, 0, MAX, 0, Some("a"), 6));
    conn.read_reply().expect_result(404, 6);
}

#[test]
fn join_with_a_bad_mode_start_or_name_is_400() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("e", 0, b"x", 1);
    for (line, op) in [
        ("join g e m1 shared earliest 2", 2),
        ("join g e m1 CLUSTER earliest 3", 3),
        ("join g e m1 cluster newest 4", 4),
        ("join g e m1 cluster 0 5", 5),
        ("join .g e m1 cluster earliest 6", 6),
        ("join g e -m cluster earliest 7", 7),
        ("join g e m1 cluster 8", 8),
        ("heartbeat g e 9", 9),
        ("reset g e -1 sideways 10", 10),
        ("reset g e -1 @x 11", 11),
        ("commit g e 0 0 m1 x 12", 12),
        ("fetch g e x - 13", 13),
    ] {
        let reply = conn.call(line, op);
        assert_eq!(reply.code(), Some(400), "{line:?}: {reply:?}");
    }
    // The connection is still usable.
    conn.join_ok("g", "e", "m1", "cluster", "earliest", 20);
}

#[test]
fn unknown_members_get_409_on_heartbeat_and_commit_and_200_on_leave() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("e", 0, b"x", 1);
    assert_eq!(
        conn.heartbeat("g", "e", "ghost", 2).expect_result(409, 2),
        "unknown member ghost"
    );
    conn.join_ok("g", "e", "m1", "cluster", "earliest", 3);
    assert_eq!(
        conn.heartbeat("g", "e", "ghost", 4).expect_result(409, 4),
        "unknown member ghost"
    );
    assert_eq!(
        conn.commit("g", "e", 0, 1, "ghost", 1, 5)
            .expect_result(409, 5),
        "unknown member ghost"
    );
    conn.leave_ok("g", "e", "ghost", 6);
    assert_eq!(
        conn.fetch_offset("g", "e", 1, "-", 7),
        Some(0),
        "earliest committed at join"
    );
    assert_eq!(conn.fetch_offset("other", "e", 0, "-", 8), None);
}

#[test]
fn bad_wait_ms_and_tag_filters_are_400() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    conn.put("e", 0, b"x", 1);
    let tags33: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let tags33 = tags33.join("||");
    let bad: Vec<(String, i32)> = vec![
        ("get e g 0 0 100 -1 2".into(), 2),
        ("get e g 0 0 100 2147483648 3".into(), 3),
        ("get e g 0 0 100 x 4".into(), 4),
        ("get e g 0 0 100 0 a|| 5".into(), 5),
        ("get e g 0 0 100 0 ||a 6".into(), 6),
        ("get e g 0 0 100 0 a||||b 7".into(), 7),
        (format!("get e g 0 0 100 0 {tags33} 8"), 8),
    ];
    for (line, op) in bad {
        let reply = conn.call(&line, op);
        assert_eq!(reply.code(), Some(400), "{line:?}: {reply:?}");
    }
    conn.send(&get_wait_cmd("e", "g", 0, 0, 100, 0, Some("*"), 9));
    assert_eq!(conn.read_reply().expect_value(9).len(), 1);
}

#[test]
fn latest_start_is_resolved_once_and_committed_for_later_owners() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    put_n(&mut conn, "e", 0, "x", 5);
    let mut m1 = broker.connect();
    let a = m1.join_ok("g", "e", "m1", "cluster", "latest", 1);
    assert_eq!(a.partitions[&0], 5);
    assert_eq!(conn.fetch_offset("g", "e", 0, "-", 2), Some(5));
    put_n(&mut conn, "e", 0, "y", 3);
    m1.leave_ok("g", "e", "m1", 3);
    // A later member starting `earliest` begins at the committed offset, not at 0.
    let b = m1.join_ok("g", "e", "m2", "cluster", "earliest", 4);
    assert_eq!(b.partitions[&0], 5);
}

#[test]
fn a_join_beyond_members_per_group_max_is_403() {
    let broker = Broker::start(&["--members-per-group-max", "2"]);
    let mut conn = broker.connect();
    conn.put("e", 0, b"x", 1);
    let mut c1 = broker.connect();
    let mut c2 = broker.connect();
    c1.join_ok("g1", "e", "m1", "cluster", "earliest", 1);
    c2.join_ok("g1", "e", "m2", "cluster", "earliest", 2);
    conn.join("g1", "e", "m3", "cluster", "earliest", 3)
        .expect_result(403, 3);
    c1.join_ok("g1", "e", "m1", "cluster", "earliest", 4); // a live member may join again
    conn.join_ok("g2", "e", "m3", "cluster", "earliest", 5); // another group
}

#[test]
fn a_join_creating_a_group_beyond_groups_max_is_403() {
    let broker = Broker::start(&["--groups-max", "2"]);
    let mut conn = broker.connect();
    conn.put("e", 0, b"x", 1);
    conn.join_ok("g1", "e", "m1", "cluster", "earliest", 1);
    conn.join_ok("g2", "e", "m1", "cluster", "earliest", 2);
    conn.join("g3", "e", "m1", "cluster", "earliest", 3)
        .expect_result(403, 3);
    conn.join_ok("g1", "e", "m2", "cluster", "earliest", 4); // existing groups still work
    conn.commit_ok("g1", "e", 0, 1, "-", -1, 5);
}

#[test]
fn a_commit_creating_a_group_beyond_groups_max_is_403() {
    // spec-groups.md: "join or commit creating another group: 403".
    let broker = Broker::start(&["--groups-max", "2"]);
    let mut conn = broker.connect();
    conn.put("e", 0, b"x", 1);
    conn.join_ok("g1", "e", "m1", "cluster", "earliest", 1);
    conn.commit_ok("g2", "e", 0, 1, "-", -1, 2);
    conn.commit("g3", "e", 0, 1, "-", -1, 3)
        .expect_result(403, 3);
    conn.join("g3", "e", "m1", "cluster", "earliest", 4)
        .expect_result(403, 4);
    conn.commit_ok("g2", "e", 0, 1, "-", -1, 5);
}

#[test]
fn stats_settings_lists_the_group_limits() {
    let broker = Broker::start(&["--session-timeout-ms", "1234"]);
    let mut conn = broker.connect();
    let stats = conn.stats(Some("settings"));
    for (name, want) in [
        ("wait_ms_max", Some("30000")),
        ("parked_per_connection_max", Some("1024")),
        ("session_timeout_ms", Some("1234")),
        ("members_per_group_max", Some("1024")),
        ("groups_max", Some("10000")),
        ("offsets_flush_interval_ms", Some("1000")),
    ] {
        assert_eq!(stat(&stats, name), want, "stats settings {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// More edges
// ---------------------------------------------------------------------------------------------

#[test]
fn groups_on_different_topics_have_independent_generations() {
    let broker = Broker::start(&[]);
    let mut admin = broker.connect();
    admin.put("t1", 0, b"x", 1);
    admin.put("t2", 0, b"x", 2);
    let mut c1 = broker.connect();
    let mut c2 = broker.connect();
    let a = c1.join_ok("g", "t1", "m1", "cluster", "earliest", 1);
    c2.join_ok("g", "t2", "m2", "cluster", "earliest", 2);
    c2.join_ok("g", "t2", "m3", "cluster", "earliest", 3);
    let hb = c1.heartbeat_ok("g", "t1", "m1", 4);
    assert_eq!(hb.generation, a.generation, "t2's joins do not touch g/t1");
    assert_eq!(hb.partition_list(), vec![0, 1, 2, 3]);
    // m1 is a member of g/t1 only.
    assert_eq!(
        c1.heartbeat("g", "t2", "m1", 5).expect_result(409, 5),
        "unknown member m1"
    );
    // Offsets are per (group, topic).
    c1.commit_ok("g", "t1", 0, 1, "m1", a.generation, 6);
    assert_eq!(c1.fetch_offset("g", "t1", 0, "-", 7), Some(1));
    assert_eq!(c1.fetch_offset("g", "t2", 0, "-", 8), Some(0));
}

#[test]
fn commits_keep_a_member_alive_without_heartbeats() {
    let broker = Broker::start(&["--session-timeout-ms", "500"]);
    let mut admin = broker.connect();
    put_n(&mut admin, "t", 0, "x", 20);
    let mut c1 = broker.connect();
    let a = c1.join_ok("g", "t", "m1", "cluster", "earliest", 1);
    let t0 = Instant::now();
    let mut offset = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        thread::sleep(Duration::from_millis(100));
        offset += 1;
        c1.commit_ok("g", "t", 0, offset, "m1", a.generation, 2);
    }
    let hb = c1.heartbeat_ok("g", "t", "m1", 3);
    assert_eq!(
        hb.generation, a.generation,
        "commits count as activity: m1 must not have expired"
    );
}

#[test]
fn one_put_wakes_every_get_parked_on_its_partition() {
    let broker = Broker::start(&[]);
    let mut producer = broker.connect();
    producer.put("fan", 0, b"seed", 1);
    let mut conns: Vec<Conn> = (0..50).map(|_| broker.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&get_wait_cmd(
            "fan",
            &format!("g{i}"),
            0,
            1,
            MAX,
            5000,
            None,
            i as i32,
        ));
        c.send(format!("version {}\r\n", 1000 + i).as_bytes());
        c.read_reply().expect_result(200, 1000 + i as i32);
    }
    let t0 = Instant::now();
    producer.put("fan", 0, b"all", 2);
    for (i, c) in conns.iter_mut().enumerate() {
        let records = c.read_reply().expect_value(i as i32);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].body, b"all");
    }
    println!("one put woke 50 parked gets in {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn long_poll_beyond_the_max_offset_answers_301_at_once() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    put_n(&mut conn, "lp", 0, "x", 3);
    let t0 = Instant::now();
    conn.send(&get_wait_cmd("lp", "grp", 0, 9, MAX, 5000, None, 1));
    assert_eq!(conn.read_reply().expect_result(301, 1), "3");
    conn.send(&get_wait_cmd("lp", "grp", 0, 9, MAX, 5000, Some("a"), 2));
    assert_eq!(conn.read_reply().expect_result(301, 2), "3");
    assert!(t0.elapsed() < Duration::from_millis(2000));
    // Partition out of range: 400 at once.
    conn.send(&get_wait_cmd("lp", "grp", 7, 0, MAX, 5000, None, 3));
    conn.read_reply().expect_result(400, 3);
}

#[test]
fn a_rebalance_answers_a_filtered_parked_get_that_skipped_records() {
    let broker = Broker::start(&[]);
    let mut admin = broker.connect();
    put_tagged(&mut admin, "tg", 0, "a", "m0");
    let mut m1 = broker.connect();
    m1.join_ok("g", "tg", "m1", "cluster", "earliest", 1);
    let mut parked = broker.connect();
    parked.send(&get_wait_cmd("tg", "g", 0, 1, MAX, 10_000, Some("a"), 2));
    parked.expect_silence(Duration::from_millis(100));
    put_tagged(&mut admin, "tg", 0, "b", "m1"); // skipped by the filter
    parked.expect_silence(Duration::from_millis(200));
    let t0 = Instant::now();
    m1.join_ok("g", "tg", "m2", "cluster", "earliest", 3);
    let reply = parked.read_reply();
    println!(
        "filtered parked get at rebalance: {reply:?} after {:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    match reply.code() {
        Some(301) => assert_eq!(reply.expect_result(301, 2), "2", "next past the skipped b"),
        Some(404) => {}
        _ => panic!("a rebalance answers with 404 or 301: {reply:?}"),
    }
}

#[test]
fn a_crash_loses_at_most_the_last_intervals_commits() {
    let mut broker = Broker::start(&[]);
    let mut conn = broker.connect();
    put_n(&mut conn, "dur", 0, "x", 10);
    conn.commit_ok("g", "dur", 0, 4, "-", -1, 1);
    thread::sleep(Duration::from_millis(1500));
    for (i, o) in (5..=10).enumerate() {
        conn.commit_ok("g", "dur", 0, o, "-", -1, 2 + i as i32);
    }
    broker.kill9();
    broker.restart(&[]);
    let mut conn = broker.connect();
    let got = conn.fetch_offset("g", "dur", 0, "-", 20);
    assert!(
        matches!(got, Some(4..=10)),
        "after kill -9: committed {got:?}, expected the flushed 4 or a later commit"
    );
    // Offsets keep working after the crash, and stats show them.
    conn.commit_ok("g", "dur", 0, 10, "-", -1, 21);
    let stats = conn.stats(Some("group:g"));
    assert_eq!(
        stat(&stats, "group:g:dur:0:committed"),
        Some("10"),
        "{stats:?}"
    );
}

#[test]
fn an_expiry_answers_the_survivors_parked_get_promptly() {
    let broker = Broker::start(&["--session-timeout-ms", "1000"]);
    let mut admin = broker.connect();
    admin.put("lp", 0, b"seed", 1);
    let mut c1 = broker.connect();
    let mut c2 = broker.connect();
    c1.join_ok("g", "lp", "m1", "cluster", "earliest", 1);
    // m1 falls silent now; m2 joins 600 ms later (a get is not activity, so m2 must still be
    // well inside its own session when m1 expires).
    thread::sleep(Duration::from_millis(600));
    let a2 = c2.join_ok("g", "lp", "m2", "cluster", "earliest", 2);
    // m2 long-polls (waitMs 10 s) a partition it owns until m1 expires.
    let p = *a2.partitions.keys().next().unwrap();
    let max = if p == 0 { 1 } else { 0 };
    let t0 = Instant::now();
    c2.send(&get_wait_cmd(
        "lp", "g", p as i32, max, MAX, 10_000, None, 3,
    ));
    let reply = c2.read_reply();
    let after = t0.elapsed();
    println!("expiry answered the survivor's parked get after {after:?}: {reply:?}");
    assert!(
        matches!(reply.code(), Some(404) | Some(301)),
        "expected 404 or 301: {reply:?}"
    );
    assert_eq!(reply.opaque(), 3);
    assert!(
        after < Duration::from_secs(3),
        "a rebalance by expiry must answer parked gets at once (took {after:?})"
    );
    let hb = c2.heartbeat_ok("g", "lp", "m2", 4);
    assert!(hb.generation > a2.generation);
    assert_eq!(hb.partition_list(), vec![0, 1, 2, 3]);
}

#[test]
fn reset_answers_the_groups_parked_gets() {
    let broker = Broker::start(&[]);
    let mut admin = broker.connect();
    put_n(&mut admin, "lp", 0, "x", 3);
    let mut m1 = broker.connect();
    let a = m1.join_ok("g", "lp", "m1", "cluster", "earliest", 1);
    m1.commit_ok("g", "lp", 0, 3, "m1", a.generation, 2);
    m1.send(&get_wait_cmd("lp", "g", 0, 3, MAX, 10_000, None, 3));
    m1.expect_silence(Duration::from_millis(100));
    let t0 = Instant::now();
    admin.reset_ok("g", "lp", 0, "earliest", 4);
    let reply = m1.read_reply();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(matches!(reply.code(), Some(404) | Some(301)), "{reply:?}");
    let hb = m1.heartbeat_ok("g", "lp", "m1", 5);
    assert!(hb.generation > a.generation);
    assert_eq!(hb.partitions[&0], 0);
}

#[test]
fn broadcast_members_own_offsets_survive_a_restart() {
    let mut broker = Broker::start(&[]);
    let mut conn = broker.connect();
    put_n(&mut conn, "bc", 0, "x", 5);
    let j1 = conn.join_ok("fan", "bc", "b1", "broadcast", "earliest", 1);
    let mut other = broker.connect();
    let j2 = other.join_ok("fan", "bc", "b2", "broadcast", "earliest", 2);
    assert!(j2.generation > j1.generation);
    conn.commit_ok("fan", "bc", 0, 3, "b1", j2.generation, 3);
    other.commit_ok("fan", "bc", 0, 1, "b2", j2.generation, 4);
    drop(conn);
    drop(other);
    broker.terminate();
    broker.restart(&[]);
    let mut conn = broker.connect();
    let a1 = conn.join_ok("fan", "bc", "b1", "broadcast", "earliest", 5);
    assert_eq!(
        a1.partitions[&0], 3,
        "b1 resumes at its own committed offset"
    );
    let mut other = broker.connect();
    let a2 = other.join_ok("fan", "bc", "b2", "broadcast", "earliest", 6);
    assert_eq!(
        a2.partitions[&0], 1,
        "b2 resumes at its own committed offset"
    );
    assert_eq!(conn.fetch_offset("fan", "bc", 0, "b1", 7), Some(3));
}

#[test]
fn long_poll_in_sync_flush_mode_wakes_when_the_record_is_durable() {
    let broker = Broker::start(&["--flush", "sync"]);
    let mut producer = broker.connect();
    let mut consumer = broker.connect();
    producer.put("lp", 0, b"seed", 1);
    let mut samples = Vec::new();
    for i in 0..20i32 {
        let op = 100 + i;
        consumer.send(&get_wait_cmd(
            "lp",
            "grp",
            0,
            1 + i as u64,
            MAX,
            5000,
            None,
            op,
        ));
        consumer.send(format!("version {}\r\n", 1000 + i).as_bytes());
        consumer.read_reply().expect_result(200, 1000 + i);
        let t0 = Instant::now();
        producer.put("lp", 0, format!("d{i}").as_bytes(), op);
        let records = consumer.read_reply().expect_value(op);
        samples.push(t0.elapsed());
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].offset, 1 + i as u64);
    }
    let p50 = quantile(&mut samples, 0.5);
    let max = quantile(&mut samples, 1.0);
    println!("sync mode: put-ack to delivery p50 {p50:?}, max {max:?}");
    assert!(
        max < Duration::from_secs(2),
        "a durable record must wake the parked get"
    );
}

#[test]
fn stats_count_parked_gets_and_group_commands() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    let mut admin = broker.connect();
    conn.put("lp", 0, b"seed", 1);
    let before = admin.stats(None);
    let n = |stats: &[(String, String)], name: &str| -> u64 {
        canonical(
            stat(stats, name).unwrap_or_else(|| panic!("no STAT {name}")),
            name,
        )
    };
    let a = admin.join_ok("g", "lp", "m1", "cluster", "earliest", 2);
    admin.heartbeat_ok("g", "lp", "m1", 3);
    admin.commit_ok("g", "lp", 0, 1, "m1", a.generation, 4);
    for op in 0..3 {
        conn.send(&get_wait_cmd(
            "lp",
            "other",
            op,
            1 - (op.min(1) as u64),
            MAX,
            5000,
            None,
            op,
        ));
    }
    let parked = wait_for(Duration::from_secs(2), || {
        let s = admin.stats(None);
        (n(&s, "parked_gets") == 3).then_some(s)
    });
    let after = parked.expect("stats parked_gets never reached 3");
    assert_eq!(n(&after, "cmd_join") - n(&before, "cmd_join"), 1);
    assert_eq!(n(&after, "cmd_heartbeat") - n(&before, "cmd_heartbeat"), 1);
    assert_eq!(n(&after, "cmd_commit") - n(&before, "cmd_commit"), 1);
    assert!(n(&after, "groups") >= 1);
    admin.put("lp", 0, b"a", 5);
    admin.put("lp", 1, b"b", 6);
    admin.put("lp", 2, b"c", 7);
    let replies = conn.read_replies_by_opaque(3);
    assert_eq!(replies.len(), 3);
    assert_eq!(n(&admin.stats(None), "parked_gets"), 0);
}
