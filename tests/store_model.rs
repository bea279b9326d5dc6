//! Property test: random appends, reads, clean restarts and crash restarts against a simple
//! model (a vector of bodies per partition). Tiny segments and index files make every run
//! roll both.

mod store_util;
use imago::store::{Store, StoreError};
use proptest::prelude::*;
use std::collections::HashMap;
use store_util::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        topic: usize,
        partition: u32,
        len: usize,
    },
    Read {
        topic: usize,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    },
    CleanRestart,
    CrashRestart,
}

const TOPICS: [&str; 2] = ["alpha", "beta"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..2usize, 0..3u32, 0..3000usize).prop_map(|(topic, partition, len)| Op::Append { topic, partition, len }),
        4 => (0..2usize, 0..3u32, 0..40u64, 1..6000usize)
            .prop_map(|(topic, partition, offset, max_bytes)| Op::Read { topic, partition, offset, max_bytes }),
        1 => Just(Op::CleanRestart),
        1 => Just(Op::CrashRestart),
    ]
}

fn body(topic: usize, partition: u32, n: usize, len: usize) -> Vec<u8> {
    let mut b = format!("{topic}/{partition}/{n}:").into_bytes();
    b.resize(len.max(b.len()), b'#');
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_a_model_through_appends_reads_and_restarts(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Some(Store::open(small_config(dir.path())).unwrap());
        for t in TOPICS {
            store.as_ref().unwrap().ensure_topic(t, 3).unwrap();
        }
        let mut model: HashMap<(usize, u32), Vec<Vec<u8>>> = HashMap::new();
        for op in ops {
            let s = store.as_ref().unwrap();
            match op {
                Op::Append { topic, partition, len } => {
                    let bodies = model.entry((topic, partition)).or_default();
                    let b = body(topic, partition, bodies.len(), len);
                    let a = s.append(&msg(TOPICS[topic], partition, &b)).unwrap();
                    prop_assert_eq!(a.offset, bodies.len() as u64);
                    bodies.push(b);
                }
                Op::Read { topic, partition, offset, max_bytes } => {
                    let bodies = model.get(&(topic, partition)).cloned().unwrap_or_default();
                    let mut buf = Vec::new();
                    let got = s.read_into(TOPICS[topic], partition, offset, max_bytes, None, &mut buf);
                    if offset > bodies.len() as u64 {
                        let moved_to_max = matches!(got, Err(StoreError::OffsetOutOfRange { valid }) if valid == bodies.len() as u64);
                        prop_assert!(moved_to_max, "expected a move to the max offset");
                        continue;
                    }
                    let got = got.unwrap();
                    let recs = records(&buf);
                    prop_assert_eq!(got.records, recs.len());
                    prop_assert_eq!(got.next_offset, offset + recs.len() as u64);
                    if offset < bodies.len() as u64 {
                        prop_assert!(!recs.is_empty(), "a record is always delivered");
                    }
                    prop_assert!(recs.len() <= 1 || buf.len() <= max_bytes);
                    for (i, (o, _, b)) in recs.iter().enumerate() {
                        prop_assert_eq!(*o, offset + i as u64);
                        prop_assert_eq!(b, &bodies[*o as usize]);
                    }
                }
                Op::CleanRestart => {
                    store.take().unwrap().close().unwrap();
                    store = Some(Store::open(small_config(dir.path())).unwrap());
                }
                Op::CrashRestart => {
                    store.take().unwrap().abandon();
                    store = Some(Store::open(small_config(dir.path())).unwrap());
                }
            }
        }
        let s = store.take().unwrap();
        for ((topic, partition), bodies) in &model {
            let all = read_all(&s, TOPICS[*topic], *partition, 0);
            prop_assert_eq!(all.len(), bodies.len());
        }
        s.abandon();
        let report = imago::store::inspect::verify(dir.path()).unwrap();
        prop_assert!(report.ok(), "{:?}", report);
    }
}
