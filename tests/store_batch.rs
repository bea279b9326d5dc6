//! `Store::append_batch` against `Store::append`: the same offsets, ids and bytes, errors
//! confined to their own message, index and commitlog segments rolled in the middle of a
//! batch, and everything read back after a restart.

mod store_util;

use imago::store::{Message, Store, StoreError};
use proptest::prelude::*;
use std::collections::HashMap;
use store_util::{msg, read_all, small_config};

#[test]
fn a_batch_assigns_consecutive_offsets_per_partition_in_message_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.ensure_topic("t", 3).unwrap();
    let bodies: Vec<Vec<u8>> = (0..300).map(|i| format!("m{i}").into_bytes()).collect();
    let msgs: Vec<Message<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| msg("t", [0, 0, 1, 2, 1][i % 5], b))
        .collect();
    let mut results = Vec::new();
    store.append_batch(&msgs, &mut results);
    assert_eq!(results.len(), msgs.len());
    let mut next = [0u64; 3];
    for (m, r) in msgs.iter().zip(&results) {
        let a = r.as_ref().unwrap();
        assert_eq!(a.partition, m.partition);
        assert_eq!(a.offset, next[m.partition as usize]);
        next[m.partition as usize] += 1;
    }
    for p in 0..3u32 {
        let want: Vec<Vec<u8>> = msgs
            .iter()
            .filter(|m| m.partition == p)
            .map(|m| m.body.to_vec())
            .collect();
        let got: Vec<Vec<u8>> = read_all(&store, "t", p, 0)
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert_eq!(got, want, "partition {p}");
        assert_eq!(store.offsets("t", p).unwrap().1, next[p as usize]);
    }
}

#[test]
fn a_refused_message_in_a_batch_leaves_the_others_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.ensure_topic("t", 2).unwrap();
    let big = vec![0u8; 70 * 1024]; // larger than a 64 KiB segment
    let msgs = [
        msg("t", 0, b"a"),
        msg("nosuch", 0, b"x"),
        msg("t", 5, b"x"),
        msg("t", 1, &big),
        msg("t", 0, b"b"),
    ];
    let mut results = Vec::new();
    store.append_batch(&msgs, &mut results);
    assert_eq!(results[0].as_ref().unwrap().offset, 0);
    assert!(matches!(results[1], Err(StoreError::UnknownTopic)));
    assert!(matches!(
        results[2],
        Err(StoreError::PartitionOutOfRange { partitions: 2 })
    ));
    assert!(matches!(results[3], Err(StoreError::RecordTooLarge { .. })));
    assert_eq!(results[4].as_ref().unwrap().offset, 1);
    let got: Vec<_> = read_all(&store, "t", 0, 0)
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(store.offsets("t", 1).unwrap(), (0, 0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random batches over a few partitions, with tiny index segments (64 entries) and
    /// commitlog segments (64 KiB) so both roll inside batches, and a restart at the end:
    /// every message is read back at the offset its result named.
    #[test]
    fn batches_read_back_exactly_across_segment_rolls_and_a_restart(
        batches in prop::collection::vec(
            prop::collection::vec((0u32..4, 1usize..600), 1..150), 1..8)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut want: HashMap<u32, Vec<(u64, Vec<u8>)>> = HashMap::new();
        {
            let store = Store::open(small_config(dir.path())).unwrap();
            store.ensure_topic("t", 4).unwrap();
            for (n, batch) in batches.iter().enumerate() {
                let bodies: Vec<Vec<u8>> = batch
                    .iter()
                    .enumerate()
                    .map(|(i, &(_, len))| vec![(n * 31 + i) as u8; len])
                    .collect();
                let msgs: Vec<Message<'_>> = batch
                    .iter()
                    .zip(&bodies)
                    .map(|(&(p, _), b)| msg("t", p, b))
                    .collect();
                let mut results = Vec::new();
                store.append_batch(&msgs, &mut results);
                for (m, r) in msgs.iter().zip(results) {
                    let a = r.unwrap();
                    want.entry(m.partition).or_default().push((a.offset, m.body.to_vec()));
                }
            }
            store.close().unwrap();
        }
        let store = Store::open(small_config(dir.path())).unwrap();
        for p in 0..4u32 {
            let expected = want.remove(&p).unwrap_or_default();
            for (i, (offset, _)) in expected.iter().enumerate() {
                prop_assert_eq!(*offset, i as u64);
            }
            prop_assert_eq!(read_all(&store, "t", p, 0), expected);
        }
    }
}
