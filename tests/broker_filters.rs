//! Tag filters against the real binary where the index cannot tell tags apart: two different
//! tags with the same 32-bit hash. The index stores FNV-1a 32-bit of the tag (then max(1),
//! `src/store/index.rs` `tag_hash`), so the broker must compare the tags themselves.

mod common;

use std::time::Duration;

use common::*;

/// Two tags with the same index hash, found by a birthday search over random 8-character
/// alphanumeric tags:
///
///     fnv1a32("0Iz7RbM6") = 0xa2aab2a2
///     fnv1a32("oBKMQ6Zy") = 0xa2aab2a2
const TAG_A: &str = "0Iz7RbM6";
const TAG_B: &str = "oBKMQ6Zy";
const SHARED_HASH: u32 = 0xa2aa_b2a2;

fn put_tagged(conn: &mut Conn, partition: i32, tag: &str, payload: &str, opaque: i32) -> u64 {
    let (_, _, offset) = conn.put_flag(
        "clash",
        partition,
        1,
        &attr_body(tag.as_bytes(), payload.as_bytes()),
        opaque,
    );
    offset
}

/// (offset, tag, payload) of each record.
fn summary(records: &[Record]) -> Vec<(u64, String, String)> {
    records
        .iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8_lossy(&r.tag).into_owned(),
                String::from_utf8_lossy(&r.body).into_owned(),
            )
        })
        .collect()
}

/// The precondition of the other tests: the store's own index hash of the two tags is equal.
#[test]
fn the_colliding_pair_really_shares_one_index_hash() {
    assert_ne!(TAG_A, TAG_B);
    assert_eq!(imago::store::index::tag_hash(TAG_A.as_bytes()), SHARED_HASH);
    assert_eq!(imago::store::index::tag_hash(TAG_B.as_bytes()), SHARED_HASH);
}

#[test]
fn a_filtered_get_delivers_only_the_exact_tag_when_another_tag_has_the_same_hash() {
    let broker = Broker::start(&[]);
    let mut conn = broker.connect();
    assert_eq!(put_tagged(&mut conn, 0, TAG_A, "a0", 1), 0);
    assert_eq!(put_tagged(&mut conn, 0, TAG_B, "b1", 2), 1);
    assert_eq!(put_tagged(&mut conn, 0, TAG_B, "b2", 3), 2);
    assert_eq!(put_tagged(&mut conn, 0, TAG_A, "a3", 4), 3);
    assert_eq!(put_tagged(&mut conn, 0, TAG_B, "b4", 5), 4);

    // From 0: only the two A records, though every record's index hash matches.
    conn.send(&get_wait_cmd(
        "clash",
        GROUP,
        0,
        0,
        1 << 20,
        0,
        Some(TAG_A),
        6,
    ));
    let records = conn.read_reply().expect_value(6);
    assert_eq!(
        summary(&records),
        vec![
            (0, TAG_A.to_owned(), "a0".to_owned()),
            (3, TAG_A.to_owned(), "a3".to_owned()),
        ]
    );

    // And the other way round.
    conn.send(&get_wait_cmd(
        "clash",
        GROUP,
        0,
        0,
        1 << 20,
        0,
        Some(TAG_B),
        7,
    ));
    let records = conn.read_reply().expect_value(7);
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![1, 2, 4], "{:?}", summary(&records));
    assert!(records.iter().all(|r| r.tag == TAG_B.as_bytes()));

    // From 1 (right after the first A): the B records at 1 and 2 are skipped, not delivered,
    // and the next A is at 3.
    conn.send(&get_wait_cmd(
        "clash",
        GROUP,
        0,
        1,
        1 << 20,
        0,
        Some(TAG_A),
        8,
    ));
    let records = conn.read_reply().expect_value(8);
    assert_eq!(records[0].offset, 3, "{:?}", summary(&records));
    assert_eq!(records.len(), 1, "{:?}", summary(&records));

    // From 4 (after the last A): only B is left: 301 with the next offset past it.
    conn.send(&get_wait_cmd(
        "clash",
        GROUP,
        0,
        4,
        1 << 20,
        0,
        Some(TAG_A),
        9,
    ));
    assert_eq!(conn.read_reply().expect_result(301, 9), "5");

    // A filter naming both tags gets all of them.
    let both = format!("{TAG_A}||{TAG_B}");
    conn.send(&get_wait_cmd(
        "clash",
        GROUP,
        0,
        0,
        1 << 20,
        0,
        Some(&both),
        10,
    ));
    assert_eq!(conn.read_reply().expect_value(10).len(), 5);
}

#[test]
fn a_parked_filtered_get_is_not_answered_by_a_put_of_the_colliding_tag() {
    let broker = Broker::start(&[]);
    let mut consumer = broker.connect();
    let mut producer = broker.connect();
    put_tagged(&mut producer, 1, TAG_B, "b0", 1);

    // Parked at 1 for an A record.
    consumer.send(&get_wait_cmd(
        "clash",
        GROUP,
        1,
        1,
        1 << 20,
        10_000,
        Some(TAG_A),
        2,
    ));
    let parked = wait_for(Duration::from_secs(10), || {
        (stat(&producer.stats(None), "parked_gets") == Some("1")).then_some(())
    });
    assert!(parked.is_some(), "the get never parked");

    // A B record has A's hash: it may wake the get, but must not be delivered.
    assert_eq!(put_tagged(&mut producer, 1, TAG_B, "b1", 3), 1);
    consumer.expect_silence(Duration::from_millis(300));

    // The A record answers the get with exactly itself.
    assert_eq!(put_tagged(&mut producer, 1, TAG_A, "a2", 4), 2);
    let records = consumer.read_reply().expect_value(2);
    assert_eq!(
        summary(&records),
        vec![(2, TAG_A.to_owned(), "a2".to_owned())]
    );
}
